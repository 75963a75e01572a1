//! `control_request`: the control-socket request parser (`drover_os::parse::control_request`)
//! never panics and answers malformed input with an error value. First byte even: the rest
//! is what a client sent; an accepted request was a JSON object whose `cmd` names it, and a
//! refusal is a message that makes a one-line JSON answer. First byte odd: the rest decodes
//! to a request written as JSON in varied ways (spacing, key order, a trailing newline and
//! junk after it); it parses back to the same request, and the same text with an unknown
//! field or a bad `n` is refused.

use drover_os::parse::{control_request as parse, Request};
use libfuzzer_sys::arbitrary::Unstructured;
use serde_json::Value;

fn name(r: &Request) -> &'static str {
    match r {
        Request::Status => "status",
        Request::Stop => "stop",
        Request::StopNow => "stop-now",
        Request::Restart => "restart",
        Request::RestartNow => "restart-now",
        Request::Reload => "reload",
        Request::Upgrade => "upgrade",
        Request::Scale { .. } => "scale",
        Request::ScaleUp => "scale-up",
        Request::ScaleDown => "scale-down",
        Request::ReopenLogs => "reopen-logs",
        Request::Metrics => "metrics",
        Request::Dump => "dump",
    }
}

fn check_raw(bytes: &[u8]) {
    match parse(bytes) {
        Ok(request) => {
            let end = bytes
                .iter()
                .position(|&b| b == b'\n')
                .unwrap_or(bytes.len());
            let value: Value = serde_json::from_slice(&bytes[..end])
                .unwrap_or_else(|e| panic!("accepted {request:?} from invalid JSON ({e})"));
            assert_eq!(
                value.get("cmd").and_then(Value::as_str),
                Some(name(&request)),
                "accepted {request:?} from {value}"
            );
            let fields = value.as_object().map_or(0, |o| o.len());
            let want = if matches!(request, Request::Scale { .. }) {
                2
            } else {
                1
            };
            assert_eq!(fields, want, "accepted {request:?} from {value}");
        }
        Err(msg) => {
            assert!(!msg.is_empty(), "an empty error for {bytes:?}");
            // The answer the client gets: one line of JSON that carries the message.
            let answer = serde_json::json!({ "ok": false, "error": msg }).to_string();
            assert!(!answer.contains('\n'), "a multi-line answer: {answer:?}");
            let back: Value = serde_json::from_str(&answer).expect("answer parses");
            assert_eq!(back["error"].as_str(), Some(msg.as_str()));
        }
    }
}

const SPACES: &[&str] = &["", " ", "\t", "\r", " \r\t "];

fn check_round_trip(u: &mut Unstructured) {
    let b = |u: &mut Unstructured| -> u8 { u.arbitrary().unwrap_or(0) };
    let n: u32 = u.arbitrary().unwrap_or(0);
    let request = match b(u) % 13 {
        0 => Request::Status,
        1 => Request::Stop,
        2 => Request::StopNow,
        3 => Request::Restart,
        4 => Request::Reload,
        5 => Request::Upgrade,
        6 => Request::Scale { n },
        7 => Request::ScaleUp,
        8 => Request::ReopenLogs,
        9 => Request::Metrics,
        10 => Request::Dump,
        11 => Request::RestartNow,
        _ => Request::ScaleDown,
    };
    let sp = SPACES[usize::from(b(u)) % SPACES.len()];
    let mut fields = vec![format!("\"cmd\"{sp}:{sp}\"{}\"", name(&request))];
    if let Request::Scale { n } = request {
        fields.push(format!("\"n\"{sp}:{sp}{n}"));
    }
    if b(u) % 2 == 1 {
        fields.reverse();
    }
    let join = format!("{sp},{sp}");
    let object = |fields: &[String]| format!("{sp}{{{sp}{}{sp}}}{sp}", fields.join(&join));
    let mut text = object(&fields);
    let junk: &str = u.arbitrary().unwrap_or("");
    if b(u) % 2 == 1 {
        // The request ends at the first newline: whatever follows is not read.
        text.push('\n');
        text.push_str(junk);
    }
    assert_eq!(parse(text.as_bytes()), Ok(request), "{text:?}");

    // The same request with an unknown field, or with `n` out of range, is refused.
    let mut bad = fields.clone();
    match b(u) % 3 {
        0 => {
            let key: String = junk
                .chars()
                .filter(|c| c.is_alphanumeric() || *c == '_')
                .collect();
            bad.push(format!("\"x_{key}\"{sp}:{sp}1"));
        }
        1 => bad.push(format!("\"n\"{sp}:{sp}{}", i64::from(n) + (1 << 32))),
        _ => bad.push(format!("\"n\"{sp}:{sp}-{}", u64::from(n) + 1)),
    }
    let bad_text = object(&bad);
    let result = parse(bad_text.as_bytes());
    assert!(result.is_err(), "{bad_text:?} was accepted as {result:?}");
}

/// The `control_request` target.
pub fn run(data: &[u8]) {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    if mode % 2 == 0 {
        check_raw(rest);
    } else {
        check_round_trip(&mut Unstructured::new(rest));
    }
}
