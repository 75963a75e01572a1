//! The request loop shared by the whole-system benchmark's baseline and command worker: the
//! same minimal HTTP/1.1 keep-alive parser and the same response bytes as drover's embedded
//! `hello` example (`os/examples/hello.rs`), without its `/sleep` and `/stall` paths. Every
//! path answers `Hello, world!` with an `X-Drover-Worker` header naming the worker.

use std::io::{self, Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

const MAX_HEAD: usize = 16 * 1024;
const MAX_BODY: u64 = 1024 * 1024;
/// An idle keep-alive connection closes after this, as `hello`'s does.
pub const KEEP_ALIVE_IDLE: Duration = Duration::from_secs(5);
const HELLO: &[u8] = b"Hello, world!\n";

/// Who answers: the `X-Drover-Worker` header.
pub struct Ident {
    pub slot: u32,
    pub pid: u32,
    pub generation: u64,
}

/// One connection: requests until the client closes, asks to close, or the worker stops.
///
/// `stopping` is polled between requests: once it is true, the connection gets `grace` to
/// send its next request, which is answered with `Connection: close` (a client never loses a
/// request it already sent); an idle connection closes when the grace runs out. A read
/// interrupted by a signal (`EINTR`) just checks again.
pub fn serve(
    stream: &mut TcpStream,
    ident: &Ident,
    stopping: &dyn Fn() -> bool,
    grace: Duration,
) -> io::Result<()> {
    stream.set_read_timeout(Some(KEEP_ALIVE_IDLE))?;
    let _ = stream.set_nodelay(true);
    let mut buf = [0u8; MAX_HEAD];
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
                stream.set_read_timeout(Some(left))?;
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
            Ok(r) => r,
            Err(status) => return answer(stream, ident, &mut out, status, b"", 0, false, false),
        };
        if request.body > MAX_BODY {
            return answer(
                stream,
                ident,
                &mut out,
                "413 Content Too Large",
                b"",
                0,
                false,
                false,
            );
        }
        // Drop the body: part of it may be in the buffer already.
        let in_buf = (request.body as usize).min(len - head_len);
        let mut rest = request.body - in_buf as u64;
        let consumed = head_len + in_buf;
        buf.copy_within(consumed..len, 0);
        len -= consumed;
        while rest > 0 {
            let n = match stream.read(&mut buf[len..]) {
                Ok(0) => return Ok(()),
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            };
            let body = (n as u64).min(rest) as usize;
            buf.copy_within(len + body..len + n, len);
            len += n - body;
            rest -= body as u64;
        }

        let keep_alive = request.keep_alive && stop_deadline.is_none() && !stopping();
        let body = if request.head_only { &[][..] } else { HELLO };
        answer(
            stream,
            ident,
            &mut out,
            "200 OK",
            body,
            HELLO.len(),
            keep_alive,
            request.http10,
        )?;
        if !keep_alive {
            return Ok(());
        }
    }
}

struct Request {
    keep_alive: bool,
    http10: bool,
    head_only: bool,
    body: u64,
}

/// The end of the head (after the blank line), if it is all in.
fn head_end(buf: &[u8]) -> Option<usize> {
    buf.windows(4).position(|w| w == b"\r\n\r\n").map(|i| i + 4)
}

fn parse(head: &[u8]) -> Result<Request, &'static str> {
    let head = std::str::from_utf8(head).map_err(|_| "400 Bad Request")?;
    let mut lines = head.split("\r\n");
    let mut first = lines.next().unwrap_or("").split(' ');
    let (method, target, version) = match (first.next(), first.next(), first.next(), first.next()) {
        (Some(m), Some(t), Some(v), None) if !m.is_empty() && !t.is_empty() => (m, t, v),
        _ => return Err("400 Bad Request"),
    };
    let http10 = match version {
        "HTTP/1.1" => false,
        "HTTP/1.0" => true,
        _ => return Err("505 HTTP Version Not Supported"),
    };
    let head_only = match method {
        "GET" => false,
        "HEAD" => true,
        _ => return Err("405 Method Not Allowed"),
    };
    let mut keep_alive = !http10;
    let mut body = 0;
    for line in lines.filter(|l| !l.is_empty()) {
        let (name, value) = line.split_once(':').ok_or("400 Bad Request")?;
        let value = value.trim();
        if name.eq_ignore_ascii_case("connection") {
            for token in value.split(',').map(str::trim) {
                if token.eq_ignore_ascii_case("close") {
                    keep_alive = false;
                } else if token.eq_ignore_ascii_case("keep-alive") {
                    keep_alive = true;
                }
            }
        } else if name.eq_ignore_ascii_case("content-length") {
            body = value.parse().map_err(|_| "400 Bad Request")?;
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            return Err("501 Not Implemented");
        }
    }
    // hello parses its `/sleep?ms=` and `/stall?ms=` targets; keep that work per request.
    let _ = target.strip_prefix("/sleep?ms=").map(str::parse::<u64>);
    let _ = target.strip_prefix("/stall?ms=").map(str::parse::<u64>);
    Ok(Request {
        keep_alive,
        http10,
        head_only,
        body,
    })
}

/// Writes one response in one write, formatted per response as `hello` does.
#[allow(clippy::too_many_arguments)]
fn answer(
    stream: &mut TcpStream,
    ident: &Ident,
    out: &mut Vec<u8>,
    status: &str,
    body: &[u8],
    content_length: usize,
    keep_alive: bool,
    http10: bool,
) -> io::Result<()> {
    let Ident {
        slot,
        pid,
        generation,
    } = ident;
    out.clear();
    write!(
        out,
        "HTTP/1.1 {status}\r\nContent-Type: text/plain\r\nContent-Length: {content_length}\r\nX-Drover-Worker: slot={slot} pid={pid} generation={generation}\r\n"
    )?;
    if status.starts_with("405") {
        out.extend_from_slice(b"Allow: GET, HEAD\r\n");
    }
    match (keep_alive, http10) {
        (false, _) => out.extend_from_slice(b"Connection: close\r\n"),
        (true, true) => out.extend_from_slice(b"Connection: keep-alive\r\n"),
        (true, false) => {}
    }
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(body);
    stream.write_all(out)
}
