//! hello: an HTTP/1.1 keep-alive "hello world" on drover's embedded runtime.
//!
//! ```sh
//! cargo run --release -p drover-os --example hello -- --listen 127.0.0.1:8080 --workers 4 --threads 2
//! curl -i http://127.0.0.1:8080/
//! ```
//!
//! Takes every `drover run` flag (`--heartbeat-timeout`, `--control`, ...). Paths: any path
//! answers `Hello, world!`; `/sleep?ms=N` answers after N milliseconds (at most 60 s), to
//! watch drains and request timeouts; `/stall?ms=N` answers at once, then stalls its thread
//! N milliseconds outside any request (a bug the heartbeat watchdog catches). Each answer
//! names its worker in `X-Drover-Worker`.
//!
//! The parser is deliberately minimal: a request head of at most 16 KiB, a body only with
//! `Content-Length` (read and dropped, at most 1 MiB), no chunked request bodies.

use std::io::{self, Read, Write};
use std::time::Duration;

use drover_os::embedded::{Conn, Server};

const MAX_HEAD: usize = 16 * 1024;
const MAX_BODY: u64 = 1024 * 1024;
/// A thread serves one connection at a time, so an idle keep-alive connection holds a
/// thread: close it after a while, like Apache's KeepAliveTimeout.
const KEEP_ALIVE_IDLE: Duration = Duration::from_secs(5);
const HELLO: &[u8] = b"Hello, world!\n";

fn main() {
    let code = Server::from_args()
        .on_worker_start(|w| {
            log(format!(
                "hello: worker {} pid {} generation {} serves with {} thread(s)",
                w.slot, w.pid, w.generation, w.threads
            ))
        })
        .on_worker_exit(|w| log(format!("hello: worker {} pid {} exits", w.slot, w.pid)))
        .run(serve);
    std::process::exit(code);
}

/// One line in one write(2): workers share stderr, and `eprintln!` may split a line.
fn log(mut line: String) {
    line.push('\n');
    let _ = io::stderr().write_all(line.as_bytes());
}

/// One connection: requests until the client closes, asks to close, or the worker stops.
fn serve(conn: &mut Conn<'_>) -> io::Result<()> {
    conn.set_idle_timeout(Some(KEEP_ALIVE_IDLE));
    if let Some(tcp) = conn.tcp() {
        let _ = tcp.set_nodelay(true);
    }
    let mut buf = [0u8; MAX_HEAD];
    let mut len = 0;
    let mut out = Vec::with_capacity(256);
    loop {
        // Between requests: an end-of-file here is a client that is done, or a stopping
        // worker whose client sent nothing more within the runtime's stop grace.
        let head_len = loop {
            if let Some(end) = head_end(&buf[..len]) {
                break end;
            }
            if len == buf.len() {
                conn.begin_request();
                return answer(
                    conn,
                    &mut out,
                    "431 Request Header Fields Too Large",
                    b"",
                    false,
                );
            }
            let n = conn.read(&mut buf[len..])?;
            if n == 0 {
                return Ok(());
            }
            len += n;
        };
        conn.begin_request();
        let request = match parse(&buf[..head_len]) {
            Ok(r) => r,
            Err(status) => return answer(conn, &mut out, status, b"", false),
        };
        if request.body > MAX_BODY {
            return answer(conn, &mut out, "413 Content Too Large", b"", false);
        }
        // Drop the body: part of it may be in the buffer already.
        let in_buf = (request.body as usize).min(len - head_len);
        let mut rest = request.body - in_buf as u64;
        let consumed = head_len + in_buf;
        buf.copy_within(consumed..len, 0);
        len -= consumed;
        while rest > 0 {
            let n = conn.read(&mut buf[len..])?;
            if n == 0 {
                return Ok(());
            }
            let body = (n as u64).min(rest) as usize;
            buf.copy_within(len + body..len + n, len);
            len += n - body;
            rest -= body as u64;
        }

        if let Some(ms) = request.sleep_ms {
            std::thread::sleep(Duration::from_millis(ms.min(60_000)));
        }
        // Once the worker is stopping, every answer is the connection's last: it says
        // `Connection: close`, so the client sends its next request on a new connection
        // (to another worker) instead of racing the close on this one. This covers the
        // request in hand at the stop, and one the client sent just after an answer that
        // still said keep-alive: the runtime hands that one over too (`STOP_GRACE`).
        let keep_alive = request.keep_alive && !conn.stopping();
        let body = if request.head_only { &[][..] } else { HELLO };
        answer_with(
            conn,
            &mut out,
            "200 OK",
            body,
            HELLO.len(),
            keep_alive,
            request.http10,
        )?;
        if let Some(ms) = request.stall_ms {
            std::thread::sleep(Duration::from_millis(ms.min(60_000)));
        }
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
    sleep_ms: Option<u64>,
    stall_ms: Option<u64>,
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
    let millis = |prefix: &str| {
        target
            .strip_prefix(prefix)
            .map(|ms| ms.parse().map_err(|_| "400 Bad Request"))
            .transpose()
    };
    let (sleep_ms, stall_ms) = (millis("/sleep?ms=")?, millis("/stall?ms=")?);
    Ok(Request {
        keep_alive,
        http10,
        head_only,
        body,
        sleep_ms,
        stall_ms,
    })
}

/// An error answer; the connection closes after it.
fn answer(
    conn: &mut Conn<'_>,
    out: &mut Vec<u8>,
    status: &str,
    body: &[u8],
    keep_alive: bool,
) -> io::Result<()> {
    answer_with(conn, out, status, body, body.len(), keep_alive, false)
}

/// Writes one response in one write and ends the request.
fn answer_with(
    conn: &mut Conn<'_>,
    out: &mut Vec<u8>,
    status: &str,
    body: &[u8],
    content_length: usize,
    keep_alive: bool,
    http10: bool,
) -> io::Result<()> {
    let w = conn.worker();
    let (slot, pid, generation) = (w.slot, w.pid, w.generation);
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
    let written = conn.write_all(out);
    conn.end_request();
    written
}
