//! The HTTP/1.1 of the `hello` example, as little as serves a keep-alive "hello world": a
//! request head of at most 16 KiB, a body only with `Content-Length` (read and dropped, at
//! most 1 MiB), no chunked bodies. The whole-system benchmark's own servers
//! (benches/system/http.rs) compile this same file, so every server it measures does the
//! same work per request.

use std::io::{self, Write};
use std::time::Duration;

pub const HEAD_MAX: usize = 16 * 1024;
pub const BODY_MAX: u64 = 1024 * 1024;
/// A thread serves one connection at a time, so an idle keep-alive connection holds a
/// thread: close it after a while, like Apache's KeepAliveTimeout.
pub const KEEP_ALIVE_IDLE: Duration = Duration::from_secs(5);
pub const HELLO: &[u8] = b"Hello, world!\n";

pub struct Request<'a> {
    pub target: &'a str,
    pub keep_alive: bool,
    pub http10: bool,
    pub head_only: bool,
    pub body: u64,
}

impl Request<'_> {
    /// The N of a `PREFIX N` target such as `/sleep?ms=N`, if the target has that prefix.
    pub fn millis(&self, prefix: &str) -> Result<Option<u64>, &'static str> {
        self.target
            .strip_prefix(prefix)
            .map(|ms| ms.parse().map_err(|_| "400 Bad Request"))
            .transpose()
    }
}

/// The end of the head (after the blank line), if it is all in.
pub fn head_end(buf: &[u8]) -> Option<usize> {
    buf.windows(4).position(|w| w == b"\r\n\r\n").map(|i| i + 4)
}

/// The request head; the error is the status line to answer with before closing.
pub fn parse(head: &[u8]) -> Result<Request<'_>, &'static str> {
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
    Ok(Request {
        target,
        keep_alive,
        http10,
        head_only,
        body,
    })
}

/// Drops the request in `buf[..*len]` whose head is `head_len` bytes and whose body is
/// `body` bytes, part of which may be in the buffer already; what follows (a pipelined
/// request) moves to the front. False if the client closed first.
pub fn drop_request(
    buf: &mut [u8],
    len: &mut usize,
    head_len: usize,
    body: u64,
    mut read: impl FnMut(&mut [u8]) -> io::Result<usize>,
) -> io::Result<bool> {
    let in_buf = (body as usize).min(*len - head_len);
    let mut rest = body - in_buf as u64;
    let consumed = head_len + in_buf;
    buf.copy_within(consumed..*len, 0);
    *len -= consumed;
    while rest > 0 {
        let n = read(&mut buf[*len..])?;
        if n == 0 {
            return Ok(false);
        }
        let dropped = (n as u64).min(rest) as usize;
        buf.copy_within(*len + dropped..*len + n, *len);
        *len += n - dropped;
        rest -= dropped as u64;
    }
    Ok(true)
}

/// Who answers, in the `X-Drover-Worker` header.
pub struct Worker {
    pub slot: u32,
    pub pid: u32,
    pub generation: u64,
}

/// One response into `out` (cleared first), for the caller to send in one write.
pub fn response(
    out: &mut Vec<u8>,
    worker: &Worker,
    status: &str,
    body: &[u8],
    content_length: usize,
    keep_alive: bool,
    http10: bool,
) -> io::Result<()> {
    let Worker {
        slot,
        pid,
        generation,
    } = worker;
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
    Ok(())
}
