//! `--metrics-listen`: `GET /metrics` over HTTP/1.0 and 1.1 from the supervisor itself,
//! never blocking its loop. The listener and every connection are non-blocking and polled
//! by the loop, as the control socket's are (`control::ControlServer`): a request is read
//! up to `REQUEST_MAX` bytes, at most `CONNS_MAX` connections are open, each dropped at
//! `CONN_DEADLINE` to send its request and again to take its answer, and every answer ends
//! the connection (`Connection: close`). Other paths are 404, other methods 405, anything
//! that is not an HTTP/1.x request line 400.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::fd::{AsFd, BorrowedFd};
use std::time::{Duration, Instant};

use nix::poll::PollFlags;

/// A scrape's request line and headers fit far below this.
const REQUEST_MAX: usize = 8 * 1024;
/// Prometheus opens one connection per scrape; a few scrapers and a curl fit.
const CONNS_MAX: usize = 16;
/// To send a whole request, and again to take a whole answer.
const CONN_DEADLINE: Duration = Duration::from_secs(5);
/// At the open-file limit the listener stays readable with nothing acceptable: it is left
/// unpolled this long rather than spinning on EMFILE.
const ACCEPT_PAUSE: Duration = Duration::from_millis(100);
/// While the address is held by another drover (a live upgrade's predecessor, the child a
/// `--supervise` parent is replacing), the bind is retried this often.
pub const BIND_RETRY: Duration = Duration::from_secs(1);

/// The content type of the text exposition format.
const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

enum Stage {
    Reading(Vec<u8>),
    /// Asked for the metrics; waits for [`MetricsServer::answer`].
    Asked {
        head_only: bool,
        http10: bool,
    },
    Writing {
        out: Vec<u8>,
        sent: usize,
    },
}

struct Conn {
    stream: TcpStream,
    stage: Stage,
    deadline: Instant,
}

pub struct MetricsServer {
    /// The address asked for.
    pub addr: SocketAddr,
    /// `None` while not bound: before a successor's takeover, after a predecessor's
    /// handover, or while the address is still held by another drover.
    listener: Option<TcpListener>,
    /// When to try the bind again.
    retry_at: Option<Instant>,
    conns: Vec<Conn>,
    accept_paused_until: Option<Instant>,
    at_fd_limit: bool,
}

impl MetricsServer {
    /// Binds `addr` now; an error names the flag.
    pub fn bind(addr: SocketAddr) -> Result<MetricsServer, String> {
        let mut server = MetricsServer::unbound(addr);
        server.listener = Some(listen(addr)?);
        server.serving();
        Ok(server)
    }

    /// A server that binds later ([`MetricsServer::start_listening`]).
    pub fn unbound(addr: SocketAddr) -> MetricsServer {
        MetricsServer {
            addr,
            listener: None,
            retry_at: None,
            conns: Vec::new(),
            accept_paused_until: None,
            at_fd_limit: false,
        }
    }

    /// Logs the bound address (the real port when port 0 was asked for).
    fn serving(&self) {
        if let Some(addr) = self.listener.as_ref().and_then(|l| l.local_addr().ok()) {
            tracing::info!("metrics: serving http://{addr}/metrics");
        }
    }

    /// Binds now, or (the address still held by another drover) retries every
    /// `BIND_RETRY` from the loop until it can.
    pub fn start_listening(&mut self) {
        if self.listener.is_some() {
            return;
        }
        match listen(self.addr) {
            Ok(l) => {
                self.listener = Some(l);
                self.retry_at = None;
                self.serving();
            }
            Err(e) => {
                if self.retry_at.is_none() {
                    tracing::warn!("{e}; retrying every {} s", BIND_RETRY.as_secs());
                }
                self.retry_at = Some(Instant::now() + BIND_RETRY);
            }
        }
    }

    /// Closes the listener (a predecessor hands the address to its successor); the
    /// connections it has are still answered.
    pub fn stop_listening(&mut self) {
        self.listener = None;
        self.retry_at = None;
    }

    /// The fds to poll and for what: the listener (if bound and not paused), then each
    /// connection, in the order [`MetricsServer::service`] takes their readiness.
    pub fn poll_fds(&self, now: Instant) -> Vec<(BorrowedFd<'_>, PollFlags)> {
        let paused = self.accept_paused_until.is_some_and(|t| t > now);
        let listener = self.listener.as_ref().map(|l| {
            let flags = if paused {
                PollFlags::empty()
            } else {
                PollFlags::POLLIN
            };
            (l.as_fd(), flags)
        });
        let conns = self.conns.iter().map(|c| {
            let flags = match c.stage {
                Stage::Reading(_) => PollFlags::POLLIN,
                Stage::Asked { .. } => PollFlags::empty(),
                Stage::Writing { .. } => PollFlags::POLLOUT,
            };
            (c.stream.as_fd(), flags)
        });
        listener.into_iter().chain(conns).collect()
    }

    /// The earliest moment [`MetricsServer::service`] has something to do unasked: a
    /// connection's deadline, the end of an accept pause, a bind retry.
    pub fn deadline(&self) -> Option<Instant> {
        self.conns
            .iter()
            .map(|c| c.deadline)
            .chain(self.accept_paused_until)
            .chain(self.retry_at)
            .min()
    }

    /// One turn with the readiness of the last [`MetricsServer::poll_fds`]: writes, reads,
    /// drops expired connections, accepts new ones, retries a pending bind. Returns whether
    /// a connection waits for the metrics text ([`MetricsServer::answer`]).
    pub fn service(&mut self, ready: &[bool]) -> bool {
        let now = Instant::now();
        let (listener_ready, conns_ready) = if self.listener.is_some() {
            (
                ready.first().copied().unwrap_or(false),
                ready.get(1..).unwrap_or(&[]),
            )
        } else {
            (false, ready)
        };
        for (i, conn) in self.conns.iter_mut().enumerate() {
            if conns_ready.get(i).copied().unwrap_or(false) {
                conn.advance();
            }
        }
        self.conns.retain(|c| c.alive(now));
        if self.accept_paused_until.is_some_and(|t| t <= now) {
            self.accept_paused_until = None;
        }
        if listener_ready && self.accept_paused_until.is_none() {
            self.accept(now);
        }
        if self.retry_at.is_some_and(|t| t <= now) {
            self.start_listening();
        }
        self.conns
            .iter()
            .any(|c| matches!(c.stage, Stage::Asked { .. }))
    }

    /// Answers every connection waiting for the metrics with `text`.
    pub fn answer(&mut self, text: &str) {
        let now = Instant::now();
        for conn in &mut self.conns {
            if let Stage::Asked { head_only, http10 } = conn.stage {
                let body = if head_only { "" } else { text };
                let mut out = head(http10, "200 OK", CONTENT_TYPE, text.len(), "");
                out.extend_from_slice(body.as_bytes());
                conn.stage = Stage::Writing { out, sent: 0 };
                conn.deadline = now + CONN_DEADLINE;
                conn.advance();
            }
        }
        self.conns.retain(|c| c.alive(now));
    }

    fn accept(&mut self, now: Instant) {
        // Bounded: a connect storm is taken in slices, one per turn.
        for _ in 0..4 * CONNS_MAX {
            let Some(listener) = &self.listener else {
                return;
            };
            let stream = match listener.accept() {
                Ok((stream, _)) => stream,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) if matches!(e.raw_os_error(), Some(libc::EMFILE | libc::ENFILE)) => {
                    if !self.at_fd_limit {
                        self.at_fd_limit = true;
                        tracing::warn!(
                            "metrics: cannot accept a connection ({e}); drover is at its \
                             open-file limit (raise it with `ulimit -n` or LimitNOFILE=)"
                        );
                    }
                    self.accept_paused_until = Some(now + ACCEPT_PAUSE);
                    return;
                }
                Err(_) => return,
            };
            // Before anything is written to it: no answer may block the loop.
            if stream.set_nonblocking(true).is_err() {
                continue;
            }
            self.at_fd_limit = false;
            if self.conns.len() >= CONNS_MAX && !self.evict_oldest_reader() {
                // One write into an empty socket buffer: never blocks, always whole.
                let _ = (&stream).write(&error(
                    false,
                    "503 Service Unavailable",
                    "too many metrics connections\n",
                ));
                continue;
            }
            let mut conn = Conn {
                stream,
                stage: Stage::Reading(Vec::new()),
                deadline: now + CONN_DEADLINE,
            };
            // Most clients have sent their request before they are accepted.
            conn.advance();
            if conn.alive(now) {
                self.conns.push(conn);
            }
        }
    }
}

impl MetricsServer {
    /// Makes room for a new client at the cost of the longest-waiting one still sending its
    /// request: clients that connect and send nothing cannot lock scrapers out.
    fn evict_oldest_reader(&mut self) -> bool {
        let Some(i) = self
            .conns
            .iter()
            .position(|c| matches!(c.stage, Stage::Reading(_)))
        else {
            return false;
        };
        let conn = self.conns.remove(i);
        let _ = (&conn.stream).write(&error(
            false,
            "408 Request Timeout",
            "dropped for a newer client\n",
        ));
        true
    }
}

fn listen(addr: SocketAddr) -> Result<TcpListener, String> {
    let listener = TcpListener::bind(addr).map_err(|e| format!("--metrics-listen {addr}: {e}"))?;
    listener
        .set_nonblocking(true)
        .map_err(|e| format!("--metrics-listen {addr}: {e}"))?;
    Ok(listener)
}

impl Conn {
    /// Reads or writes what the socket allows now, without blocking.
    fn advance(&mut self) {
        match &mut self.stage {
            Stage::Reading(buf) => {
                let mut chunk = [0u8; 2048];
                let complete = loop {
                    match self.stream.read(&mut chunk) {
                        // The client stopped sending: judge what it sent.
                        Ok(0) => break true,
                        Ok(n) => {
                            buf.extend_from_slice(&chunk[..n]);
                            if head_end(buf).is_some() || buf.len() > REQUEST_MAX {
                                break true;
                            }
                        }
                        Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break false,
                        Err(_) => break true,
                    }
                };
                if complete {
                    self.stage = match parse(buf) {
                        Ok(asked) => asked,
                        Err(out) => Stage::Writing { out, sent: 0 },
                    };
                    self.advance();
                }
            }
            Stage::Asked { .. } => {}
            Stage::Writing { out, sent } => {
                crate::control::write_nonblocking(&mut self.stream, out, sent);
            }
        }
    }

    /// False once answered in full, or past its deadline.
    fn alive(&self, now: Instant) -> bool {
        if let Stage::Writing { out, sent } = &self.stage {
            if *sent >= out.len() {
                return false;
            }
        }
        self.deadline > now
    }
}

/// Where the request's head ends (after the blank line), if it has.
fn head_end(buf: &[u8]) -> Option<usize> {
    let crlf = buf.windows(4).position(|w| w == b"\r\n\r\n").map(|i| i + 4);
    let lf = buf.windows(2).position(|w| w == b"\n\n").map(|i| i + 2);
    crlf.into_iter().chain(lf).min()
}

/// The request's stage: asked for the metrics, or the error answer to write.
fn parse(buf: &[u8]) -> Result<Stage, Vec<u8>> {
    if buf.len() > REQUEST_MAX && head_end(buf).is_none() {
        return Err(error(
            false,
            "431 Request Header Fields Too Large",
            &format!("request head longer than {REQUEST_MAX} bytes\n"),
        ));
    }
    let line_end = buf.iter().position(|&b| b == b'\n');
    let line = line_end.map(|e| &buf[..e]).unwrap_or(buf);
    let line = std::str::from_utf8(line).unwrap_or("");
    let line = line.strip_suffix('\r').unwrap_or(line);
    let mut words = line.split(' ');
    let (Some(method), Some(target), Some(version), None) =
        (words.next(), words.next(), words.next(), words.next())
    else {
        return Err(error(
            false,
            "400 Bad Request",
            "expected an HTTP/1.x request line, e.g. GET /metrics HTTP/1.1\n",
        ));
    };
    let http10 = match version {
        "HTTP/1.1" => false,
        "HTTP/1.0" => true,
        _ => {
            return Err(error(
                false,
                "400 Bad Request",
                "expected an HTTP/1.x request line, e.g. GET /metrics HTTP/1.1\n",
            ))
        }
    };
    if line_end.is_none() || method.is_empty() || !target.starts_with('/') {
        return Err(error(
            http10,
            "400 Bad Request",
            "expected an HTTP/1.x request line, e.g. GET /metrics HTTP/1.1\n",
        ));
    }
    let head_only = match method {
        "GET" => false,
        "HEAD" => true,
        _ => {
            return Err(error_with(
                http10,
                "405 Method Not Allowed",
                "only GET and HEAD are served\n",
                "Allow: GET, HEAD\r\n",
            ));
        }
    };
    let path = target.split(['?', '#']).next().unwrap_or("");
    if path != "/metrics" {
        return Err(error(
            http10,
            "404 Not Found",
            "drover serves its metrics at /metrics\n",
        ));
    }
    Ok(Stage::Asked { head_only, http10 })
}

fn head(http10: bool, status: &str, content_type: &str, length: usize, extra: &str) -> Vec<u8> {
    let version = if http10 { "HTTP/1.0" } else { "HTTP/1.1" };
    format!(
        "{version} {status}\r\nContent-Type: {content_type}\r\nContent-Length: {length}\r\n{extra}Connection: close\r\n\r\n"
    )
    .into_bytes()
}

fn error(http10: bool, status: &str, body: &str) -> Vec<u8> {
    error_with(http10, status, body, "")
}

fn error_with(http10: bool, status: &str, body: &str, extra: &str) -> Vec<u8> {
    let mut out = head(
        http10,
        status,
        "text/plain; charset=utf-8",
        body.len(),
        extra,
    );
    out.extend_from_slice(body.as_bytes());
    out
}

/// `--metrics-listen ADDR`: a bare port is `127.0.0.1:PORT`; else `HOST:PORT` or
/// `[IPv6]:PORT`. An error names the fix.
pub fn parse_addr(text: &str) -> Result<SocketAddr, String> {
    use std::net::ToSocketAddrs;
    let text = text.trim();
    let bad = || {
        format!(
            "invalid --metrics-listen (config key `metrics_listen`) '{text}': expected PORT, \
             HOST:PORT or [IPv6]:PORT, e.g. 9100 (127.0.0.1:9100) or 127.0.0.1:9100"
        )
    };
    if !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit()) {
        let port: u16 = text.parse().map_err(|_| bad())?;
        return Ok(SocketAddr::from(([127, 0, 0, 1], port)));
    }
    if let Ok(addr) = text.parse::<SocketAddr>() {
        return Ok(addr);
    }
    text.to_socket_addrs()
        .ok()
        .and_then(|mut addrs| addrs.next())
        .ok_or_else(bad)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status_of(result: Result<Stage, Vec<u8>>) -> String {
        match result {
            Ok(Stage::Asked { head_only, http10 }) => {
                format!("asked head={head_only} 1.0={http10}")
            }
            Ok(_) => "other".into(),
            Err(out) => String::from_utf8_lossy(&out)
                .lines()
                .next()
                .unwrap_or("")
                .to_string(),
        }
    }

    #[test]
    fn requests_are_answered_by_path_and_method() {
        let cases: [(&[u8], &str); 9] = [
            (
                b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n",
                "asked head=false 1.0=false",
            ),
            (
                b"GET /metrics?x=1 HTTP/1.0\r\n\r\n",
                "asked head=false 1.0=true",
            ),
            (b"HEAD /metrics HTTP/1.1\n\n", "asked head=true 1.0=false"),
            (b"GET / HTTP/1.1\r\n\r\n", "HTTP/1.1 404 Not Found"),
            (
                b"POST /metrics HTTP/1.1\r\n\r\n",
                "HTTP/1.1 405 Method Not Allowed",
            ),
            (b"GET /metrics HTTP/2\r\n\r\n", "HTTP/1.1 400 Bad Request"),
            (b"\x16\x03\x01garbage", "HTTP/1.1 400 Bad Request"),
            (b"GET /metrics\r\n\r\n", "HTTP/1.1 400 Bad Request"),
            (b"", "HTTP/1.1 400 Bad Request"),
        ];
        for (request, want) in cases {
            assert_eq!(
                status_of(parse(request)),
                want,
                "{}",
                String::from_utf8_lossy(request)
            );
        }
        let huge = vec![b'a'; REQUEST_MAX + 1];
        assert_eq!(
            status_of(parse(&huge)),
            "HTTP/1.1 431 Request Header Fields Too Large"
        );
    }

    #[test]
    fn error_answers_carry_their_length() {
        let out = String::from_utf8(error(false, "404 Not Found", "abc\n")).unwrap();
        assert!(out.contains("Content-Length: 4\r\n"), "{out}");
        assert!(out.contains("Connection: close\r\n\r\nabc\n"), "{out}");
        let Err(out) = parse(b"PUT /metrics HTTP/1.1\r\n\r\n") else {
            panic!("PUT was served");
        };
        let out = String::from_utf8(out).unwrap();
        let body = out.split("\r\n\r\n").nth(1).unwrap();
        assert!(
            out.contains(&format!("Content-Length: {}\r\n", body.len())),
            "{out}"
        );
    }

    #[test]
    fn addresses() {
        assert_eq!(parse_addr("9100"), Ok("127.0.0.1:9100".parse().unwrap()));
        assert_eq!(
            parse_addr("0.0.0.0:9100"),
            Ok("0.0.0.0:9100".parse().unwrap())
        );
        assert_eq!(parse_addr("[::1]:9100"), Ok("[::1]:9100".parse().unwrap()));
        for bad in ["", "99999", "nope", "127.0.0.1", ":x"] {
            let e = parse_addr(bad).unwrap_err();
            assert!(e.contains("--metrics-listen"), "{e}");
        }
    }
}
