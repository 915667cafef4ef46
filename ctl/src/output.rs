//! Human text by default, JSON with `--output json`.

use clap::ValueEnum;

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Output {
    Human,
    Json,
}

/// Print rows as an aligned table.
pub fn table(headers: &[&str], rows: &[Vec<String>]) {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.len()).collect();
    for r in rows {
        for (i, c) in r.iter().enumerate() {
            widths[i] = widths[i].max(c.len());
        }
    }
    let line = |cells: Vec<&str>| {
        let parts: Vec<String> = cells
            .iter()
            .enumerate()
            .map(|(i, c)| format!("{:<w$}", c, w = widths[i]))
            .collect();
        println!("{}", parts.join("  ").trim_end());
    };
    line(headers.to_vec());
    for r in rows {
        line(r.iter().map(String::as_str).collect());
    }
}

/// Seconds since the epoch as RFC 3339 (UTC), as kubectl prints times;
/// `--output json` keeps the number.
pub fn time(secs: u64) -> String {
    humantime::format_rfc3339_seconds(std::time::UNIX_EPOCH + std::time::Duration::from_secs(secs))
        .to_string()
}

/// One cell: strings as they are, null as `-`, lists comma-separated.
fn cell(v: &serde_json::Value) -> String {
    use serde_json::Value;
    match v {
        Value::Null => "-".into(),
        Value::String(s) => s.clone(),
        Value::Array(a) => a.iter().map(cell).collect::<Vec<_>>().join(","),
        Value::Object(o) => o
            .iter()
            .map(|(k, v)| format!("{k}={}", cell(v)))
            .collect::<Vec<_>>()
            .join(","),
        other => other.to_string(),
    }
}

/// Print an API answer: as JSON, or the objects under `list` (or the
/// answer itself) as a table of `columns` (header, field).
pub fn print(
    v: &serde_json::Value,
    out: Output,
    list: Option<&str>,
    columns: &[(&str, &str)],
) -> anyhow::Result<()> {
    if out == Output::Json {
        println!("{}", serde_json::to_string_pretty(v)?);
        return Ok(());
    }
    let items = match list.and_then(|k| v.get(k)).and_then(|l| l.as_array()) {
        Some(items) => items.clone(),
        None => vec![v.clone()],
    };
    let headers: Vec<&str> = columns.iter().map(|(h, _)| *h).collect();
    let rows: Vec<Vec<String>> = items
        .iter()
        .map(|item| {
            columns
                .iter()
                .map(|(_, f)| match (f.ends_with("At"), item[*f].as_u64()) {
                    (true, Some(secs)) => time(secs),
                    _ => cell(&item[*f]),
                })
                .collect()
        })
        .collect();
    table(&headers, &rows);
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn times_print_as_rfc3339() {
        assert_eq!(super::time(1_700_000_000), "2023-11-14T22:13:20Z");
        assert_eq!(super::time(0), "1970-01-01T00:00:00Z");
    }
}
