//! The request loop shared by the whole-system benchmark's baseline and command worker: a
//! blocking `TcpStream` loop around the very HTTP code of drover's embedded `hello` example
//! (`os/examples/http/mod.rs`, compiled in here), so every server measured does the same
//! work per request. Every path answers `Hello, world!`; `/sleep` and `/stall` are parsed
//! as `hello` parses them, not acted on.

use std::io::{self, Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

#[path = "../../os/examples/http/mod.rs"]
mod hello_http;

pub use hello_http::Worker as Ident;
use hello_http::{head_end, parse, response, BODY_MAX, HEAD_MAX, HELLO, KEEP_ALIVE_IDLE};

/// A connection the loop serves: plain TCP, or a TLS session over it (the TLS baseline).
pub trait Stream: Read + Write {
    /// The TCP socket under it, for its options.
    fn tcp(&self) -> &TcpStream;
}

impl Stream for TcpStream {
    fn tcp(&self) -> &TcpStream {
        self
    }
}

/// One connection: requests until the client closes, asks to close, or the worker stops.
///
/// `stopping` is polled between requests: once it is true, the connection gets `grace` to
/// send its next request, which is answered with `Connection: close` (a client never loses a
/// request it already sent); an idle connection closes when the grace runs out. A read
/// interrupted by a signal (`EINTR`) just checks again.
pub fn serve<S: Stream>(
    stream: &mut S,
    ident: &Ident,
    stopping: &dyn Fn() -> bool,
    grace: Duration,
) -> io::Result<()> {
    stream.tcp().set_read_timeout(Some(KEEP_ALIVE_IDLE))?;
    let _ = stream.tcp().set_nodelay(true);
    let mut buf = [0u8; HEAD_MAX];
    let mut len = 0;
    let mut out = Vec::with_capacity(256);
    let mut stop_deadline: Option<Instant> = None;
    loop {
        let head_len = loop {
            if let Some(end) = head_end(&buf[..len]) {
                break end;
            }
            if len == buf.len() {
                return answer(
                    stream,
                    ident,
                    &mut out,
                    "431 Request Header Fields Too Large",
                    b"",
                    0,
                    false,
                    false,
                );
            }
            if len == 0 && stop_deadline.is_none() && stopping() {
                stop_deadline = Some(Instant::now() + grace);
            }
            if let Some(deadline) = stop_deadline {
                let left = deadline.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    return Ok(());
                }
                stream.tcp().set_read_timeout(Some(left))?;
            }
            match stream.read(&mut buf[len..]) {
                Ok(0) => return Ok(()),
                Ok(n) => len += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                // WouldBlock / TimedOut: the idle timeout (or the stop's grace) ran out.
                Err(e) => return Err(e),
            }
        };
        let request = match parse(&buf[..head_len]) {
            // hello's per-request work: its two timed targets.
            Ok(r) => r
                .millis("/sleep?ms=")
                .and(r.millis("/stall?ms="))
                .map(|_| r),
            Err(status) => Err(status),
        };
        let (keep_alive, http10, head_only, body) = match request {
            Ok(r) => (r.keep_alive, r.http10, r.head_only, r.body),
            Err(status) => return answer(stream, ident, &mut out, status, b"", 0, false, false),
        };
        if body > BODY_MAX {
            let status = "413 Content Too Large";
            return answer(stream, ident, &mut out, status, b"", 0, false, false);
        }
        let read = |b: &mut [u8]| loop {
            match stream.read(b) {
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                r => return r,
            }
        };
        if !hello_http::drop_request(&mut buf, &mut len, head_len, body, read)? {
            return Ok(());
        }

        let keep_alive = keep_alive && stop_deadline.is_none() && !stopping();
        let body = if head_only { &[][..] } else { HELLO };
        answer(
            stream,
            ident,
            &mut out,
            "200 OK",
            body,
            HELLO.len(),
            keep_alive,
            http10,
        )?;
        if !keep_alive {
            return Ok(());
        }
    }
}

/// Writes one response in one write.
#[allow(clippy::too_many_arguments)]
fn answer<S: Stream>(
    stream: &mut S,
    ident: &Ident,
    out: &mut Vec<u8>,
    status: &str,
    body: &[u8],
    content_length: usize,
    keep_alive: bool,
    http10: bool,
) -> io::Result<()> {
    response(out, ident, status, body, content_length, keep_alive, http10)?;
    stream.write_all(out)
}
