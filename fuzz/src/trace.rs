//! `trace_parse`: the policy lab's trace reader (`drover_sim::lab::trace::parse`) never
//! panics on any text in any format; what it accepts is a trace the world can replay:
//! arrivals sorted and starting at zero, service times within the reader's bound, keys
//! without surrounding spaces, and a time-scaled copy with the same requests in the same
//! order. A refusal names a line within the text and a field.

use core::time::Duration;

use drover_sim::lab::trace::{parse, TraceFormat};

const FORMATS: [TraceFormat; 4] = [
    TraceFormat::Auto,
    TraceFormat::Csv,
    TraceFormat::Nginx,
    TraceFormat::Apache,
];

pub fn run(data: &[u8]) {
    let Some((&first, rest)) = data.split_first() else {
        return;
    };
    let format = FORMATS[usize::from(first) % FORMATS.len()];
    let text = String::from_utf8_lossy(rest);
    let lines = text.lines().count();
    match parse(&text, format) {
        Err(e) => {
            assert!(e.line <= lines.max(1), "line {} of {lines}: {e}", e.line);
            assert!(!e.field.is_empty() && !e.problem.is_empty(), "{e:?}");
            if crate::tracing() {
                println!("refused: {e}");
            }
        }
        Ok(t) => {
            assert!(!t.requests.is_empty(), "an empty trace was accepted");
            assert_eq!(t.requests[0].arrival, Duration::ZERO, "not shifted to zero");
            for pair in t.requests.windows(2) {
                assert!(pair[0].arrival <= pair[1].arrival, "arrivals out of order");
            }
            for r in &t.requests {
                assert!(r.service <= Duration::from_secs(86_400), "{r:?}");
                if let Some(k) = &r.key {
                    assert_eq!(k.trim(), k, "a key with surrounding spaces");
                }
            }
            let fast = t.scaled(2.0);
            assert_eq!(fast.requests.len(), t.requests.len());
            for (a, b) in t.requests.iter().zip(&fast.requests) {
                assert_eq!(a.service, b.service);
                assert!(b.arrival <= a.arrival);
            }
            if crate::tracing() {
                println!(
                    "{} requests ({}), span {:?}",
                    t.requests.len(),
                    t.format,
                    t.span()
                );
            }
        }
    }
}
