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
//! N milliseconds outside any request (a bug the heartbeat watchdog catches); `/tls`
//! describes the connection's TLS session (`protocol=TLSv1.3 alpn=http/1.1
//! subject=CN=alice`, or `plain`). Each answer names its worker in `X-Drover-Worker`.
//!
//! HTTPS: give it a certificate and key (`--tls-cert cert.pem --tls-key key.pem`, and
//! `--tls-client-ca ca.pem` to ask for client certificates), then
//! `curl --cacert cert.pem https://localhost:8443/tls`.
//!
//! The HTTP is deliberately minimal (`http/mod.rs`, which the whole-system benchmark's own
//! servers share).

mod http;

use std::io::{self, Read, Write};
use std::time::Duration;

use drover_os::embedded::{Conn, Server};
use http::{head_end, Request, BODY_MAX, HEAD_MAX, HELLO, KEEP_ALIVE_IDLE};

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
    // (No TCP_NODELAY here: the runtime sets it once on the listener, and every
    // connection inherits it.)
    conn.set_idle_timeout(Some(KEEP_ALIVE_IDLE));
    let mut buf = [0u8; HEAD_MAX];
    let mut len = 0;
    let mut out = Vec::with_capacity(256);
    loop {
        // Between requests: an end-of-file here is a client that is done, a connection the
        // runtime parks until its client sends more (it calls `serve` again then), or a
        // stopping worker whose client sent nothing more within the runtime's stop grace.
        let mut begun = false;
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
            // Part of a request is here (pipelined after the last one): it has begun, and
            // the read for the rest must not hand the connection back to the runtime.
            if len > 0 && !begun {
                conn.begin_request();
                begun = true;
            }
            let n = conn.read(&mut buf[len..])?;
            if n == 0 {
                return Ok(());
            }
            len += n;
        };
        if !begun {
            conn.begin_request();
        }
        let (request, sleep_ms, stall_ms) = match parse(&buf[..head_len]) {
            Ok(r) => r,
            Err(status) => return answer(conn, &mut out, status, b"", false),
        };
        let tls_page = request.target == "/tls";
        let (keep_alive, http10, head_only, body) = (
            request.keep_alive,
            request.http10,
            request.head_only,
            request.body,
        );
        if body > BODY_MAX {
            return answer(conn, &mut out, "413 Content Too Large", b"", false);
        }
        if !http::drop_request(&mut buf, &mut len, head_len, body, |b| conn.read(b))? {
            return Ok(());
        }

        if let Some(ms) = sleep_ms {
            std::thread::sleep(Duration::from_millis(ms.min(60_000)));
        }
        // Once the worker is stopping, every answer is the connection's last: it says
        // `Connection: close`, so the client sends its next request on a new connection
        // (to another worker) instead of racing the close on this one. This covers the
        // request in hand at the stop, and one the client sent just after an answer that
        // still said keep-alive: the runtime hands that one over too (`STOP_GRACE`).
        let keep_alive = keep_alive && !conn.stopping();
        let page = if tls_page {
            tls_description(conn).into_bytes()
        } else {
            HELLO.to_vec()
        };
        let body = if head_only { &[][..] } else { &page[..] };
        answer_with(
            conn,
            &mut out,
            "200 OK",
            body,
            page.len(),
            keep_alive,
            http10,
        )?;
        if let Some(ms) = stall_ms {
            std::thread::sleep(Duration::from_millis(ms.min(60_000)));
        }
        if !keep_alive {
            return Ok(());
        }
    }
}

/// The `/tls` page: what the connection's TLS session negotiated, and who the client is.
fn tls_description(conn: &Conn<'_>) -> String {
    let Some(tls) = conn.tls() else {
        return "plain\n".into();
    };
    let alpn = tls
        .alpn()
        .map_or("-".into(), |p| String::from_utf8_lossy(p).into_owned());
    let subject = tls.client_subject().unwrap_or_else(|| "-".into());
    format!(
        "protocol={} alpn={alpn} subject={subject}\n",
        tls.protocol()
    )
}

/// The request head and its `/sleep?ms=` and `/stall?ms=` milliseconds.
fn parse(head: &[u8]) -> Result<(Request<'_>, Option<u64>, Option<u64>), &'static str> {
    let request = http::parse(head)?;
    let (sleep_ms, stall_ms) = (request.millis("/sleep?ms=")?, request.millis("/stall?ms=")?);
    Ok((request, sleep_ms, stall_ms))
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
    let worker = http::Worker {
        slot: w.slot,
        pid: w.pid,
        generation: u64::from(w.generation),
    };
    http::response(
        out,
        &worker,
        status,
        body,
        content_length,
        keep_alive,
        http10,
    )?;
    let written = conn.write_all(out);
    conn.end_request();
    written
}
