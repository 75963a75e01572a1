//! `--log-format json`: one JSON object per line, as log shippers (Vector, Fluent Bit,
//! Filebeat) read them: `{"timestamp":"2026-…Z","level":"INFO","pid":123,"message":"…",
//! "fields":{…}}`. `pid` is the drover that wrote the line (two drovers share a log during
//! a live upgrade or under `--supervise`).
//!
//! A worker's output line (`--worker-output log`) that is itself a JSON object (an embedded
//! worker logging in this format, or any program logging JSON) is not quoted into
//! `message`: the object goes whole under `worker`, its `message` (if a string) becomes the
//! record's, and its `level` (if one of tracing's five, any case) the record's level, so a
//! shipper reads one level of nesting, not a string to parse again.

use std::fmt;

use serde_json::{Map, Value};
use tracing::field::{Field, Visit};
use tracing::{Event, Subscriber};
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::time::{FormatTime, SystemTime};
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::registry::LookupSpan;

pub struct JsonLines;

/// The event's fields as JSON values; `message` apart.
#[derive(Default)]
struct Fields {
    message: Option<String>,
    fields: Map<String, Value>,
}

impl Fields {
    fn put(&mut self, field: &Field, value: Value) {
        if field.name() == "message" {
            self.message = Some(match value {
                Value::String(s) => s,
                other => other.to_string(),
            });
        } else {
            self.fields.insert(field.name().to_string(), value);
        }
    }
}

impl Visit for Fields {
    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.put(field, Value::String(format!("{value:?}")));
    }
    fn record_str(&mut self, field: &Field, value: &str) {
        self.put(field, Value::String(value.to_string()));
    }
    fn record_i64(&mut self, field: &Field, value: i64) {
        self.put(field, Value::from(value));
    }
    fn record_u64(&mut self, field: &Field, value: u64) {
        self.put(field, Value::from(value));
    }
    fn record_bool(&mut self, field: &Field, value: bool) {
        self.put(field, Value::from(value));
    }
    fn record_f64(&mut self, field: &Field, value: f64) {
        self.put(field, Value::from(value));
    }
}

/// One record as a JSON line, its keys in reading order (timestamp first) rather than
/// serde_json's alphabetical one.
fn record(timestamp: &str, level: &str, fields: Fields) -> String {
    format!(
        "{{\"timestamp\":{},\"level\":{},\"pid\":{},\"message\":{},\"fields\":{}}}",
        Value::from(timestamp),
        Value::from(level),
        std::process::id(),
        Value::from(fields.message.unwrap_or_default()),
        Value::Object(fields.fields)
    )
}

/// A worker's output line that is a JSON object: the record carries it under `worker`,
/// with its message and level. `None` for any other line (logged as text in `message`).
fn worker_record(timestamp: &str, fields: &Fields) -> Option<String> {
    let line = fields.message.as_deref()?.trim();
    if !line.starts_with('{') {
        return None;
    }
    let Ok(Value::Object(object)) = serde_json::from_str::<Value>(line) else {
        return None;
    };
    let level = match object.get("level").and_then(Value::as_str) {
        Some(l) if LEVELS.iter().any(|known| known.eq_ignore_ascii_case(l)) => {
            l.to_ascii_uppercase()
        }
        _ => "INFO".to_string(),
    };
    let message = object.get("message").and_then(Value::as_str).unwrap_or("");
    Some(format!(
        "{{\"timestamp\":{},\"level\":{},\"pid\":{},\"message\":{},\"fields\":{},\"worker\":{}}}",
        Value::from(timestamp),
        Value::from(level),
        std::process::id(),
        Value::from(message),
        Value::Object(fields.fields.clone()),
        Value::Object(object)
    ))
}

const LEVELS: [&str; 5] = ["TRACE", "DEBUG", "INFO", "WARN", "ERROR"];

impl<S, N> FormatEvent<S, N> for JsonLines
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        _ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        let mut timestamp = String::new();
        SystemTime.format_time(&mut Writer::new(&mut timestamp))?;
        let mut fields = Fields::default();
        event.record(&mut fields);
        let from_worker = event.metadata().target() == super::workers::TARGET;
        let line = match from_worker
            .then(|| worker_record(&timestamp, &fields))
            .flatten()
        {
            Some(line) => line,
            None => record(&timestamp, event.metadata().level().as_str(), fields),
        };
        writeln!(writer, "{line}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_record_has_every_field_a_shipper_reads() {
        let fields = Fields {
            message: Some("worker said \"hi\"\n".into()),
            fields: [("slot".to_string(), Value::from(3))].into_iter().collect(),
        };
        let line = record("2026-12-07T09:00:00.000000Z", "INFO", fields);
        assert!(line.starts_with("{\"timestamp\":"), "{line}");
        assert!(!line.contains('\n'), "one line: {line}");
        let v: Value = serde_json::from_str(&line).unwrap();
        assert_eq!(v["level"], "INFO");
        assert_eq!(v["message"], "worker said \"hi\"\n");
        assert_eq!(v["fields"]["slot"], 3);
        assert_eq!(v["pid"], std::process::id());
        assert_eq!(v["timestamp"], "2026-12-07T09:00:00.000000Z");
    }

    fn worker_line(line: &str) -> Fields {
        Fields {
            message: Some(line.into()),
            fields: [("slot".to_string(), Value::from(1))].into_iter().collect(),
        }
    }

    #[test]
    fn a_worker_json_line_is_nested_whole_with_its_message_and_level() {
        let line = r#"{"timestamp":"t0","level":"warn","message":"disk low","fields":{"free":3}}"#;
        let out = worker_record("T", &worker_line(line)).expect("a JSON object");
        let v: Value = serde_json::from_str(&out).unwrap();
        assert_eq!(v["level"], "WARN");
        assert_eq!(v["message"], "disk low");
        assert_eq!(v["fields"]["slot"], 1, "drover's own fields stay");
        assert_eq!(v["worker"]["fields"]["free"], 3);
        assert_eq!(v["worker"]["timestamp"], "t0");
        assert_eq!(v["timestamp"], "T");
    }

    #[test]
    fn other_worker_lines_stay_text() {
        for line in ["plain text", "[1, 2]", "{not json", "\"a string\""] {
            assert!(worker_record("T", &worker_line(line)).is_none(), "{line}");
        }
        let odd = worker_record("T", &worker_line(r#"{"level":"loud","message":7}"#)).unwrap();
        let v: Value = serde_json::from_str(&odd).unwrap();
        assert_eq!(v["level"], "INFO", "an unknown level is INFO");
        assert_eq!(
            v["message"], "",
            "a message that is no string is left in `worker`"
        );
        assert_eq!(v["worker"]["message"], 7);
    }
}
