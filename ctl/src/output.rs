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
        .map(|item| columns.iter().map(|(_, f)| cell(&item[*f])).collect())
        .collect();
    table(&headers, &rows);
    Ok(())
}
