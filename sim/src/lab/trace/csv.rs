//! CSV traces: `arrival_s,service_s[,key]`, an optional header, comments and blank lines.

use super::*;

pub(super) fn read_csv(text: &str) -> Result<Vec<Row>, TraceError> {
    let mut rows = Vec::new();
    let mut first = true;
    for (no, line) in content_lines(text) {
        let fields: Vec<&str> = line.split(',').map(str::trim).collect();
        if std::mem::take(&mut first) && is_header(&fields) {
            continue;
        }
        if fields.len() > 3 {
            return Err(error(
                no,
                "columns",
                format!(
                    "{} columns, expected 2 or 3: arrival_s,service_s[,key] (a key cannot \
                     contain a comma)",
                    fields.len()
                ),
            ));
        }
        let looks_like_log = line.contains('[') && line.contains('"');
        let hint = if looks_like_log {
            "write e.g. 0.125; this line looks like an access log: use the format nginx or apache"
        } else {
            CSV_EXAMPLE
        };
        let at = read_seconds(no, "arrival_s", fields[0], hint)?;
        let Some(&service) = fields.get(1) else {
            return Err(error(
                no,
                "service_s",
                "missing: expected 2 or 3 columns arrival_s,service_s[,key], e.g. \
                 12.250,0.080,/api/items"
                    .to_string(),
            ));
        };
        let nanos = read_seconds(no, "service_s", service, hint)?;
        let service = check_service(no, "service_s", service, nanos, "seconds")?;
        let key = fields
            .get(2)
            .filter(|k| !k.is_empty())
            .map(|k| k.to_string());
        rows.push(Row { at, service, key });
    }
    Ok(rows)
}

/// A header names its columns: its first two fields start with a letter and are not numbers
/// (`inf` and `nan` start with a letter but are numbers, and then the line is data).
pub(super) fn is_header(fields: &[&str]) -> bool {
    fields.len() >= 2
        && fields[..2]
            .iter()
            .all(|f| f.starts_with(|c: char| c.is_ascii_alphabetic()) && f.parse::<f64>().is_err())
}
