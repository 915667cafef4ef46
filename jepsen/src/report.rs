//! The report a person reads: one HTML page with latency over time and
//! throughput over time (operations coloured by outcome, nemesis
//! intervals shaded), the checker's verdicts and any anomaly windows.

use std::fmt::Write;

use crate::history::{pair, Op, Type, NEMESIS};

const W: f64 = 900.0;
const H: f64 = 260.0;
const PAD: f64 = 45.0;

fn colour(t: Type) -> &'static str {
    match t {
        Type::Ok => "#2a9d4b",
        Type::Fail => "#d33",
        _ => "#e89a18",
    }
}

/// Nemesis intervals (start, stop) in seconds.
fn intervals(ops: &[Op]) -> Vec<(f64, f64, String)> {
    let mut out = Vec::new();
    let mut open: Option<(f64, String)> = None;
    for op in ops.iter().filter(|o| o.process == NEMESIS) {
        let t = op.time as f64 / 1e9;
        if op.f.starts_with("start-") {
            open = Some((t, op.f.trim_start_matches("start-").to_string()));
        } else if op.f.starts_with("stop-") {
            if let Some((s, name)) = open.take() {
                out.push((s, t, name));
            }
        }
    }
    if let Some((s, name)) = open {
        out.push((s, f64::MAX, name));
    }
    out
}

fn frame(svg: &mut String, title: &str, span: f64, y_label: &str, shades: &[(f64, f64, String)]) {
    let _ = write!(
        svg,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" font-family="sans-serif" font-size="11">
<text x="{PAD}" y="14" font-size="13" font-weight="bold">{title}</text>
<text x="4" y="{}" transform="rotate(-90 10 {})">{y_label}</text>"#,
        H / 2.0,
        H / 2.0
    );
    for (s, e, name) in shades {
        let x0 = PAD + s / span * (W - 2.0 * PAD);
        let x1 = PAD + e.min(span) / span * (W - 2.0 * PAD);
        let _ = write!(
            svg,
            r##"<rect x="{x0:.1}" y="20" width="{:.1}" height="{}" fill="#888" fill-opacity="0.18"><title>{name}</title></rect><text x="{x0:.1}" y="30" fill="#555">{name}</text>"##,
            (x1 - x0).max(1.0),
            H - 20.0 - PAD
        );
    }
    let _ = write!(
        svg,
        r##"<line x1="{PAD}" y1="{}" x2="{}" y2="{}" stroke="#000"/><line x1="{PAD}" y1="20" x2="{PAD}" y2="{}" stroke="#000"/>"##,
        H - PAD,
        W - PAD,
        H - PAD,
        H - PAD
    );
    let ticks = 10;
    for i in 0..=ticks {
        let t = span * i as f64 / ticks as f64;
        let x = PAD + (W - 2.0 * PAD) * i as f64 / ticks as f64;
        let _ = write!(
            svg,
            r#"<text x="{x:.1}" y="{}" text-anchor="middle">{t:.0}s</text>"#,
            H - PAD + 14.0
        );
    }
}

/// Latency of every completed client operation against its invocation time
/// (log scale), and completions per second by outcome.
pub fn html(ops: &[Op], summary: &serde_json::Value) -> String {
    let calls = pair(ops);
    let span = (ops.last().map_or(1, |o| o.time) as f64 / 1e9).max(1.0);
    let shades = intervals(ops);
    let x = |t: f64| PAD + t / span * (W - 2.0 * PAD);

    let mut lat = String::new();
    frame(
        &mut lat,
        "Latency (ms, log scale)",
        span,
        "latency",
        &shades,
    );
    let (lo, hi) = (0.1f64.log10(), 10_000f64.log10());
    let y = |ms: f64| {
        let v = ms.clamp(0.1, 10_000.0).log10();
        (H - PAD) - (v - lo) / (hi - lo) * (H - 20.0 - PAD)
    };
    for ms in [1.0, 10.0, 100.0, 1000.0] {
        let _ = write!(
            lat,
            r#"<text x="{}" y="{:.1}" text-anchor="end">{ms}</text>"#,
            PAD - 3.0,
            y(ms) + 4.0
        );
    }
    for c in &calls {
        let Some(done) = &c.complete else { continue };
        let t = c.invoke.time as f64 / 1e9;
        let ms = (done.time - c.invoke.time) as f64 / 1e6;
        let _ = write!(
            lat,
            r#"<circle cx="{:.1}" cy="{:.1}" r="1.6" fill="{}" fill-opacity="0.6"/>"#,
            x(t),
            y(ms),
            colour(done.kind)
        );
    }
    lat.push_str("</svg>");

    let mut thr = String::new();
    frame(
        &mut thr,
        "Throughput (completions per second)",
        span,
        "ops/s",
        &shades,
    );
    let buckets = span.ceil() as usize + 1;
    let mut per: [Vec<u32>; 3] = [vec![0; buckets], vec![0; buckets], vec![0; buckets]];
    for c in &calls {
        let Some(done) = &c.complete else { continue };
        let b = (done.time / 1_000_000_000) as usize;
        let k = match done.kind {
            Type::Ok => 0,
            Type::Fail => 1,
            _ => 2,
        };
        if b < buckets {
            per[k][b] += 1;
        }
    }
    let max = per.iter().flatten().copied().max().unwrap_or(1).max(1) as f64;
    let yt = |v: u32| (H - PAD) - v as f64 / max * (H - 20.0 - PAD);
    let _ = write!(
        thr,
        r#"<text x="{}" y="{:.1}" text-anchor="end">{max:.0}</text>"#,
        PAD - 3.0,
        yt(max as u32) + 4.0
    );
    for (k, t) in [Type::Ok, Type::Fail, Type::Info].into_iter().enumerate() {
        let points: Vec<String> = per[k]
            .iter()
            .enumerate()
            .map(|(i, &v)| format!("{:.1},{:.1}", x(i as f64 + 0.5), yt(v)))
            .collect();
        let _ = write!(
            thr,
            r#"<polyline points="{}" fill="none" stroke="{}" stroke-width="1.5"/>"#,
            points.join(" "),
            colour(t)
        );
    }
    thr.push_str("</svg>");

    let verdict = if summary["valid"] == true {
        "valid"
    } else {
        "INVALID"
    };
    let mut anomalies = String::new();
    for w in ["tags", "namespaces"] {
        if let Some(list) = summary["workloads"][w]["anomalies"].as_array() {
            for a in list {
                let _ = write!(
                    anomalies,
                    "<h3>{w} key {}</h3><pre>",
                    html_escape(a["key"].as_str().unwrap_or(""))
                );
                for line in a["window"].as_array().into_iter().flatten() {
                    let _ = writeln!(anomalies, "{}", html_escape(line.as_str().unwrap_or("")));
                }
                anomalies.push_str("</pre>");
            }
        }
    }
    let mut avail = String::from(
        "<table border=1 cellpadding=4 style=\"border-collapse:collapse\"><tr><th>at (s)</th><th>fault</th><th>cut off</th>\
         <th>majority writes again (ms)</th><th>cut-off answers: median / max (ms)</th>\
         <th>all nodes write again after heal (ms)</th><th>election after heal</th></tr>",
    );
    let cell = |v: &serde_json::Value| match v {
        serde_json::Value::Null => "-".to_string(),
        v => html_escape(&v.to_string()),
    };
    for f in summary["availability"]["faults"]
        .as_array()
        .into_iter()
        .flatten()
    {
        let _ = write!(
            avail,
            "<tr><td>{:.1}</td><td>{} {}</td><td>{}</td><td>{}</td><td>{} / {}</td><td>{}</td><td>{}</td></tr>",
            f["startSecs"].as_f64().unwrap_or(0.0),
            html_escape(f["kind"].as_str().unwrap_or("")),
            html_escape(f["label"].as_str().unwrap_or("")),
            cell(&f["minority"]),
            cell(&f["majorityFirstWriteMs"]),
            cell(&f["minorityAnswerMedianMs"]),
            cell(&f["minorityAnswerMaxMs"]),
            cell(&f["healRecoveryMs"]),
            cell(&f["electionAfterHeal"]),
        );
    }
    avail.push_str("</table>");
    format!(
        r#"<!doctype html><html><head><meta charset="utf-8"><title>tcr-jepsen: {verdict}</title>
<style>body{{font-family:sans-serif;margin:2em;max-width:960px}} pre{{background:#f4f4f4;padding:.6em;overflow:auto}}</style></head>
<body><h1>tcr-jepsen run: {verdict}</h1>
<p>Green: ok, red: fail (did not happen), orange: info (indeterminate). Grey bands: faults.</p>
{lat}
{thr}
<h2>Unavailability per fault</h2>{avail}
<h2>Anomalies</h2>{}
<h2>Results</h2><pre>{}</pre>
</body></html>"#,
        if anomalies.is_empty() {
            "<p>none</p>".to_string()
        } else {
            anomalies
        },
        html_escape(&serde_json::to_string_pretty(summary).unwrap_or_default())
    )
}

fn html_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}
