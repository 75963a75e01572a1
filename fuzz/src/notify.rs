//! `notify_message`: the sd_notify parser (`drover_os::parse::notify_message`) never panics.
//! First byte even: the rest is a datagram as a worker may send it; when it parses, every
//! non-empty line gives one notice that says what the line says. First byte odd: the rest
//! decodes to a list of notices, written as a worker would write them; parsing the text
//! gives the same list back (the round trip).

use drover_os::parse::{notify_message as parse, Notice};
use libfuzzer_sys::arbitrary::Unstructured;

/// The line a worker sends for `notice` (the parser's inverse).
pub fn line(notice: &Notice) -> String {
    match notice {
        Notice::Ready => "READY=1".into(),
        Notice::Watchdog => "WATCHDOG=1".into(),
        Notice::Stopping => "STOPPING=1".into(),
        Notice::Status(s) => format!("STATUS={s}"),
        Notice::Load {
            busy,
            requests,
            busy_since_usec,
        } => {
            let mut s = format!("X_DROVER_LOAD=busy={busy},requests={requests}");
            if let Some(t) = busy_since_usec {
                s.push_str(&format!(",busy_since_usec={t}"));
            }
            s
        }
        Notice::Other(s) => s.clone(),
    }
}

fn check_raw(text: &str) {
    let lines: Vec<&str> = text.split('\n').filter(|l| !l.is_empty()).collect();
    let notices = match parse(text) {
        Ok(n) => n,
        Err(e) => {
            assert!(!e.is_empty(), "an empty error message for {text:?}");
            return;
        }
    };
    assert_eq!(
        notices.len(),
        lines.len(),
        "one notice per line: {text:?} gave {notices:?}"
    );
    for (line_text, notice) in lines.iter().zip(&notices) {
        let ok = match notice {
            Notice::Other(s) => line_text.starts_with(s.as_str()) && s.chars().count() <= 200,
            // Known fields: the line says exactly that, or (load) parses to the same again.
            Notice::Load { .. } => parse(&line(notice)).as_deref() == Ok(&[clone(notice)][..]),
            _ => *line_text == line(notice),
        };
        assert!(ok, "line {line_text:?} gave {notice:?}");
    }
}

fn clone(n: &Notice) -> Notice {
    match n {
        Notice::Ready => Notice::Ready,
        Notice::Watchdog => Notice::Watchdog,
        Notice::Stopping => Notice::Stopping,
        Notice::Status(s) => Notice::Status(s.clone()),
        Notice::Load {
            busy,
            requests,
            busy_since_usec,
        } => Notice::Load {
            busy: *busy,
            requests: *requests,
            busy_since_usec: *busy_since_usec,
        },
        Notice::Other(s) => Notice::Other(s.clone()),
    }
}

/// Text with no newline, at most `max` characters.
fn text(u: &mut Unstructured, max: usize) -> String {
    let s: &str = u.arbitrary().unwrap_or("");
    s.chars().filter(|c| *c != '\n').take(max).collect()
}

fn notice(u: &mut Unstructured) -> Notice {
    let n: u8 = u.arbitrary().unwrap_or(0);
    match n % 7 {
        0 => Notice::Ready,
        1 => Notice::Watchdog,
        2 => Notice::Stopping,
        3 => Notice::Status(text(u, 300)),
        4 | 5 => {
            let busy: u32 = u.arbitrary().unwrap_or(0);
            Notice::Load {
                busy,
                requests: u.arbitrary().unwrap_or(0),
                // The parser drops the start of an idle worker's oldest request.
                busy_since_usec: if busy > 0 {
                    u.arbitrary().unwrap_or(None)
                } else {
                    None
                },
            }
        }
        _ => {
            // Fields drover only logs, and known keys with values it does not act on.
            let key = ["MAINPID", "ERRNO", "X_FOO", "READY", "WATCHDOG", "STOPPING"]
                [usize::from(n / 7) % 6];
            let mut value = text(u, 250);
            if value == "1" {
                value = "2".into();
            }
            let line = format!("{key}={value}");
            Notice::Other(line.chars().take(200).collect())
        }
    }
}

fn check_round_trip(u: &mut Unstructured) {
    let mut notices = Vec::new();
    let mut text = String::new();
    while notices.len() < 16 && !u.is_empty() {
        let n = notice(u);
        text.push_str(&line(&n));
        // Lines end in "\n", sometimes with blank lines between (skipped by the parser).
        let blank: u8 = u.arbitrary().unwrap_or(0);
        text.push_str(if blank & 3 == 0 { "\n\n" } else { "\n" });
        notices.push(n);
    }
    if notices.is_empty() {
        return;
    }
    assert_eq!(parse(&text), Ok(notices), "{text:?}");
}

/// The `notify_message` target.
pub fn run(data: &[u8]) {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    if mode % 2 == 0 {
        // The shell hands the parser UTF-8 only; lossy decoding keeps odd bytes in play.
        check_raw(&String::from_utf8_lossy(rest));
    } else {
        check_round_trip(&mut Unstructured::new(rest));
    }
}
