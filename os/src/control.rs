//! The control socket: unix stream, mode 0600, peer uid checked, one JSON request per
//! connection (`{"cmd":"status"}`), one JSON answer. Connections are non-blocking and
//! polled by the event loop, reading and writing alike: a client that is slow to ask or
//! never reads its answer holds one slot and bounded memory until its deadline, never the
//! loop.

use std::io::{Read, Write};
use std::os::fd::{AsFd, BorrowedFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use nix::poll::PollFlags;
use nix::sys::socket::{getsockopt, sockopt};
use serde::Deserialize;
use serde_json::{json, Value};

/// A request as clients send it.
#[derive(Debug, Deserialize, PartialEq, Eq)]
#[serde(tag = "cmd", rename_all = "kebab-case", deny_unknown_fields)]
pub enum Request {
    Status,
    Stop,
    StopNow,
    Restart,
    RestartNow,
    Reload,
    Upgrade,
    Scale { n: u32 },
    ScaleUp,
    ScaleDown,
    ReopenLogs,
    Metrics,
    Dump,
}

const REQUEST_MAX: usize = 64 * 1024;
/// A status of the largest pool the settings allow is far below this; the bound keeps a
/// slot's memory finite whatever the answer.
const ANSWER_MAX: usize = 16 * 1024 * 1024;
const CONNS_MAX: usize = 16;
/// To send a whole request, and again to take a whole answer.
const CONN_DEADLINE: Duration = Duration::from_secs(5);
/// At the open-file limit the listener stays readable with nothing acceptable: it is left
/// unpolled this long rather than spinning on EMFILE.
const ACCEPT_PAUSE: Duration = Duration::from_millis(100);

/// A connection's place in [`ControlServer`], valid until it is answered.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConnId(u64);

enum Stage {
    Reading(Vec<u8>),
    /// Asked; waits for [`ControlServer::answer`] (an upgrade, until it is decided).
    Asked,
    Writing {
        out: Vec<u8>,
        sent: usize,
    },
}

struct Conn {
    id: ConnId,
    stream: UnixStream,
    stage: Stage,
    /// None while the answer is ours to give.
    deadline: Option<Instant>,
}

pub struct ControlServer {
    listener: UnixListener,
    /// The control path operators use.
    pub path: PathBuf,
    /// Where the socket file is now (`path` once installed).
    bound_at: PathBuf,
    /// The socket file's identity, so only our own file is ever removed.
    file: Option<(u64, u64)>,
    conns: Vec<Conn>,
    next_id: u64,
    /// Set when accept failed for want of descriptors.
    accept_paused_until: Option<Instant>,
    at_fd_limit: bool,
}

fn file_id(path: &Path) -> Option<(u64, u64)> {
    use std::os::unix::fs::MetadataExt;
    std::fs::symlink_metadata(path)
        .ok()
        .map(|m| (m.dev(), m.ino()))
}

impl ControlServer {
    pub fn bind(path: &Path) -> Result<ControlServer, String> {
        crate::listen::remove_stale_socket(path).map_err(|e| format!("--control: {e}"))?;
        // Bound and listening before it appears at `path`: a client that waits for the file
        // never finds a socket that refuses connections.
        let mut server = ControlServer::bind_beside(path)?;
        server.install()?;
        Ok(server)
    }

    /// Binds next to `path` (`PATH.<pid>.new`) for a drover that takes `path` over from a
    /// live one later, with [`ControlServer::install`]: a live upgrade's successor, or a
    /// supervised drover replacing its predecessor.
    pub fn bind_beside(path: &Path) -> Result<ControlServer, String> {
        let mut name = path.file_name().unwrap_or_default().to_os_string();
        name.push(format!(".{}.new", std::process::id()));
        let temp = path.with_file_name(name);
        crate::listen::remove_stale_socket(&temp).map_err(|e| format!("--control: {e}"))?;
        ControlServer::bind_at(&temp, path)
    }

    fn bind_at(at: &Path, path: &Path) -> Result<ControlServer, String> {
        // Created with mode 0600 at once: no window in which others could connect.
        let old = nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(0o177));
        let bound = UnixListener::bind(at);
        nix::sys::stat::umask(old);
        let listener = bound.map_err(|e| format!("--control {}: {e}", at.display()))?;
        listener
            .set_nonblocking(true)
            .map_err(|e| format!("--control: {e}"))?;
        Ok(ControlServer {
            listener,
            file: file_id(at),
            bound_at: at.to_path_buf(),
            path: path.to_path_buf(),
            conns: Vec::new(),
            next_id: 0,
            accept_paused_until: None,
            at_fd_limit: false,
        })
    }

    /// Moves the socket from where `bind_beside` put it onto the control path, atomically:
    /// new clients reach this drover from now on, the previous one's socket file is gone.
    pub fn install(&mut self) -> Result<(), String> {
        if self.bound_at != self.path {
            std::fs::rename(&self.bound_at, &self.path)
                .map_err(|e| format!("--control {}: {e}", self.path.display()))?;
            self.bound_at = self.path.clone();
        }
        Ok(())
    }

    /// The fds to poll and for what: the listener first (for nothing while not `accepting`
    /// or paused at the open-file limit), then each connection, in the order
    /// [`ControlServer::service`] takes their readiness.
    pub fn poll_fds(&self, accepting: bool, now: Instant) -> Vec<(BorrowedFd<'_>, PollFlags)> {
        let paused = self.accept_paused_until.is_some_and(|t| t > now);
        let listen = if accepting && !paused {
            PollFlags::POLLIN
        } else {
            PollFlags::empty()
        };
        std::iter::once((self.listener.as_fd(), listen))
            .chain(self.conns.iter().map(|c| {
                let flags = match c.stage {
                    Stage::Reading(_) => PollFlags::POLLIN,
                    Stage::Asked => PollFlags::empty(),
                    Stage::Writing { .. } => PollFlags::POLLOUT,
                };
                (c.stream.as_fd(), flags)
            }))
            .collect()
    }

    /// The earliest moment [`ControlServer::service`] has something to do unasked: a
    /// connection's deadline, or the end of an accept pause.
    pub fn deadline(&self) -> Option<Instant> {
        self.conns
            .iter()
            .filter_map(|c| c.deadline)
            .chain(self.accept_paused_until)
            .min()
    }

    /// One turn: writes to writable connections and reads from readable ones (`ready[i]` for
    /// connection i of the last [`ControlServer::poll_fds`]), drops expired ones, accepts
    /// new ones while `accepting` (reading at once what they already sent). Returns the
    /// complete requests; each must get [`ControlServer::answer`]. A request ends at a
    /// newline or at the client's end of writing.
    pub fn service(
        &mut self,
        accepting: bool,
        listener_ready: bool,
        ready: &[bool],
    ) -> Vec<(ConnId, Result<Request, String>)> {
        let now = Instant::now();
        let mut asked = Vec::new();
        let count = self.conns.len();
        for i in 0..count {
            if ready.get(i).copied().unwrap_or(false) {
                self.conns[i].advance(&mut asked);
            }
        }
        self.conns.retain_mut(|c| c.alive(now));
        if self.accept_paused_until.is_some_and(|t| t <= now) {
            self.accept_paused_until = None;
        }
        if accepting && listener_ready && self.accept_paused_until.is_none() {
            self.accept(now, &mut asked);
        }
        asked
    }

    /// Accepts waiting connections (peer uid checked).
    fn accept(&mut self, now: Instant, asked: &mut Vec<(ConnId, Result<Request, String>)>) {
        // Bounded: a connect storm is taken in slices, one per turn.
        for _ in 0..4 * CONNS_MAX {
            let stream = match self.listener.accept() {
                Ok((stream, _)) => stream,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) if matches!(e.raw_os_error(), Some(libc::EMFILE | libc::ENFILE)) => {
                    // Once per stay at the limit, not at every retry.
                    if !self.at_fd_limit {
                        self.at_fd_limit = true;
                        tracing::warn!(
                        "control: cannot accept a connection ({e}); drover is at its open-file \
                         limit (raise it with `ulimit -n` or LimitNOFILE=)"
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
            if self.at_fd_limit {
                self.at_fd_limit = false;
                tracing::info!("control: accepting connections again");
            }
            let allowed = getsockopt(&stream, sockopt::PeerCredentials)
                .map(|c| c.uid() == nix::unistd::geteuid().as_raw() || c.uid() == 0)
                .unwrap_or(false);
            if !allowed {
                tracing::warn!("control: refused a connection from another user");
                answer_once(stream, &error("permission denied"));
                continue;
            }
            if self.conns.len() >= CONNS_MAX && !self.evict_oldest_reader() {
                answer_once(stream, &error("busy: too many control connections"));
                continue;
            }
            let id = ConnId(self.next_id);
            self.next_id += 1;
            let mut conn = Conn {
                id,
                stream,
                stage: Stage::Reading(Vec::new()),
                deadline: Some(now + CONN_DEADLINE),
            };
            // Most clients have written their request before they are accepted.
            conn.advance(asked);
            if conn.alive(now) {
                self.conns.push(conn);
            }
        }
    }

    /// Makes room for a new client at the cost of the longest-waiting one still sending its
    /// request: clients that connect and send nothing cannot lock operators out.
    fn evict_oldest_reader(&mut self) -> bool {
        let Some(i) = self
            .conns
            .iter()
            .position(|c| matches!(c.stage, Stage::Reading(_)))
        else {
            return false;
        };
        let conn = self.conns.remove(i);
        tracing::warn!("control: dropped the oldest connection still sending, for a new one");
        answer_once(
            conn.stream,
            &error("busy: dropped for a newer client; send one JSON request and a newline"),
        );
        true
    }

    /// Queues the answer to a request [`ControlServer::service`] returned, and sends what
    /// the socket takes now; the rest goes out as the client reads, until its deadline.
    pub fn answer(&mut self, id: ConnId, answer: &Value) {
        let Some(conn) = self.conns.iter_mut().find(|c| c.id == id) else {
            return;
        };
        let mut out = answer.to_string().into_bytes();
        if out.len() > ANSWER_MAX {
            tracing::warn!(bytes = out.len(), "control: answer too large, refused");
            out = error(&format!("answer longer than {ANSWER_MAX} bytes"))
                .to_string()
                .into_bytes();
        }
        out.push(b'\n');
        let now = Instant::now();
        conn.stage = Stage::Writing { out, sent: 0 };
        conn.deadline = Some(now + CONN_DEADLINE);
        conn.advance(&mut Vec::new());
        self.conns.retain_mut(|c| c.alive(now));
    }

    /// The control path is another drover's from now on (a live upgrade's successor took
    /// over, or is about to): this one never removes the file, even if the successor has
    /// not moved its own socket there yet when this one exits.
    pub fn disown(&mut self) {
        self.file = None;
    }

    /// Removes our socket file, unless a successor's has replaced it.
    pub fn remove_file(&self) {
        if self.file.is_some() && file_id(&self.bound_at) == self.file {
            let _ = std::fs::remove_file(&self.bound_at);
        }
    }
}

/// Writes what a non-blocking `stream` takes now of `out[*sent..]`; false when it would
/// block with some left. A failed write means the client is gone: the rest counts as sent.
/// Shared by the control socket and the metrics endpoint.
pub(crate) fn write_nonblocking(stream: &mut impl Write, out: &[u8], sent: &mut usize) -> bool {
    while *sent < out.len() {
        match stream.write(&out[*sent..]) {
            Ok(0) => break,
            Ok(n) => *sent += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return false,
            Err(_) => {
                *sent = out.len();
                break;
            }
        }
    }
    true
}

impl Conn {
    /// Reads or writes what the socket allows now, without blocking.
    fn advance(&mut self, asked: &mut Vec<(ConnId, Result<Request, String>)>) {
        match &mut self.stage {
            Stage::Reading(buf) => {
                let mut chunk = [0u8; 4096];
                let complete = loop {
                    match self.stream.read(&mut chunk) {
                        Ok(0) => break true,
                        Ok(n) => {
                            buf.extend_from_slice(&chunk[..n]);
                            if buf.contains(&b'\n') || buf.len() > REQUEST_MAX {
                                break true;
                            }
                        }
                        Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break false,
                        Err(_) => break true,
                    }
                };
                if complete {
                    asked.push((self.id, parse_request(buf)));
                    self.stage = Stage::Asked;
                    self.deadline = None;
                }
            }
            Stage::Asked => {}
            Stage::Writing { out, sent } => {
                write_nonblocking(&mut self.stream, out, sent);
            }
        }
    }

    /// False once the connection is done with (answered) or has outlived its deadline.
    fn alive(&self, now: Instant) -> bool {
        if let Stage::Writing { out, sent } = &self.stage {
            if *sent >= out.len() {
                return false;
            }
        }
        match self.deadline {
            Some(d) if d <= now => {
                match self.stage {
                    Stage::Reading(_) => {
                        tracing::warn!(
                            "control: dropped a connection that sent no complete request"
                        );
                        answer_once(
                            &self.stream,
                            &error("timeout: send one JSON request and a newline"),
                        );
                    }
                    _ => tracing::warn!("control: dropped a client that did not read its answer"),
                }
                false
            }
            _ => true,
        }
    }
}

/// One request from the bytes a client sent (up to the first newline). Every malformed
/// request is an `Err` with the message the client gets back.
pub fn parse_request(buf: &[u8]) -> Result<Request, String> {
    if buf.len() > REQUEST_MAX {
        return Err(format!("request longer than {REQUEST_MAX} bytes"));
    }
    let end = buf.iter().position(|&b| b == b'\n').unwrap_or(buf.len());
    let text = std::str::from_utf8(&buf[..end]).map_err(|_| "request is not UTF-8".to_string())?;
    let bad = |e: &dyn std::fmt::Display| {
        format!("bad request ({e}); expected e.g. {{\"cmd\":\"status\"}} or {{\"cmd\":\"scale\",\"n\":3}}")
    };
    let request: Request = serde_json::from_str(text).map_err(|e| bad(&e))?;
    // serde's `deny_unknown_fields` does not reach the unit variants of an internally
    // tagged enum, and such an enum also reads `["scale", 3]`: refuse both here, so that
    // `{"cmd":"stop","now":true}` is an error, not a graceful stop (found by fuzz/).
    let value: Value = serde_json::from_str(text).map_err(|e| bad(&e))?;
    let Some(object) = value.as_object() else {
        return Err(bad(&"not a JSON object"));
    };
    let fields: &[&str] = match request {
        Request::Scale { .. } => &["cmd", "n"],
        _ => &["cmd"],
    };
    if let Some(key) = object.keys().find(|k| !fields.contains(&k.as_str())) {
        return Err(bad(&format!("unknown field `{key}`")));
    }
    Ok(request)
}

pub fn error(msg: &str) -> Value {
    json!({ "ok": false, "error": msg })
}

/// Sends a short answer with one non-blocking write and closes the connection: for
/// clients refused before they get a slot. An empty socket buffer always takes it whole.
pub fn answer_once(stream: impl Write, answer: &Value) {
    let mut stream = stream;
    let mut text = answer.to_string();
    text.push('\n');
    let _ = stream.write(text.as_bytes());
}

/// `drover status|stop|... --control PATH`: sends one request, prints the answer as
/// pretty JSON. Returns the process exit code: 0 if the answer says ok, 1 otherwise.
pub fn client(path: &Path, request: Value) -> i32 {
    client_showing(path, request, |answer| {
        serde_json::to_string_pretty(answer).unwrap_or_default()
    })
}

/// [`client`], printing what `show` makes of a good answer.
pub fn client_showing(path: &Path, request: Value, show: impl Fn(&Value) -> String) -> i32 {
    let run = || -> Result<Value, String> {
        let mut stream = UnixStream::connect(path)
            .map_err(|e| format!("cannot connect to {}: {e}", path.display()))?;
        // An upgrade is answered when it is decided, within the server's upgrade_timeout.
        let wait = match request.get("cmd").and_then(Value::as_str) {
            Some("upgrade") => Duration::from_secs(3600),
            _ => Duration::from_secs(10),
        };
        stream
            .set_read_timeout(Some(wait))
            .map_err(|e| e.to_string())?;
        let mut text = request.to_string();
        text.push('\n');
        stream
            .write_all(text.as_bytes())
            .map_err(|e| format!("send: {e}"))?;
        let _ = stream.shutdown(std::net::Shutdown::Write);
        let mut answer = String::new();
        stream
            .read_to_string(&mut answer)
            .map_err(|e| format!("receive: {e}"))?;
        serde_json::from_str(&answer).map_err(|e| format!("bad answer ({e}): {answer:?}"))
    };
    match run() {
        Ok(answer) => {
            let ok = answer.get("ok").and_then(Value::as_bool).unwrap_or(false);
            if ok {
                let text = show(&answer);
                print!("{text}");
                if !text.ends_with('\n') {
                    println!();
                }
                0
            } else {
                let msg = answer
                    .get("error")
                    .and_then(Value::as_str)
                    .unwrap_or("request failed");
                eprintln!("drover: {msg}");
                1
            }
        }
        Err(e) => {
            eprintln!("drover: {e}");
            1
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_requests() {
        assert_eq!(
            parse_request(b"{\"cmd\":\"status\"}\n"),
            Ok(Request::Status)
        );
        assert_eq!(
            parse_request(b"{\"cmd\":\"scale\",\"n\":3}"),
            Ok(Request::Scale { n: 3 })
        );
        assert_eq!(
            parse_request(b"{\"cmd\":\"stop-now\"}"),
            Ok(Request::StopNow)
        );
        assert!(parse_request(b"{\"cmd\":\"explode\"}").is_err());
        assert!(parse_request(b"not json").is_err());
        assert!(parse_request(b"{\"cmd\":\"scale\"}").is_err());
    }

    use nix::poll::{PollFd, PollTimeout};

    fn server(name: &str) -> (ControlServer, PathBuf) {
        let dir =
            std::env::temp_dir().join(format!("drover-control-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("control.sock");
        (ControlServer::bind(&path).unwrap(), dir)
    }

    /// One turn of the event loop's use of the server: poll, then service.
    fn turn(server: &mut ControlServer) -> Vec<(ConnId, Result<Request, String>)> {
        let ready: Vec<bool> = {
            let mut polled: Vec<PollFd> = server
                .poll_fds(true, Instant::now())
                .into_iter()
                .map(|(fd, flags)| PollFd::new(fd, flags))
                .collect();
            let _ = nix::poll::poll(&mut polled, PollTimeout::from(100u16));
            polled
                .iter()
                .map(|p| p.revents().is_some_and(|r| !r.is_empty()))
                .collect()
        };
        server.service(true, ready[0], &ready[1..])
    }

    /// Turns until one request arrives (bounded).
    fn next_request(server: &mut ControlServer) -> (ConnId, Result<Request, String>) {
        for _ in 0..100 {
            if let Some(request) = turn(server).pop() {
                return request;
            }
        }
        panic!("no request within 100 turns");
    }

    fn ask(path: &Path) -> UnixStream {
        let mut client = UnixStream::connect(path).unwrap();
        client
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        client.write_all(b"{\"cmd\":\"status\"}\n").unwrap();
        client
    }

    /// The answer used to be written blocking with a 500 ms timeout: a client that asked and
    /// did not read stalled the loop, and its answer was cut off past the socket buffer.
    #[test]
    fn a_client_that_does_not_read_stalls_nobody_and_still_gets_its_whole_answer() {
        let (mut server, dir) = server("slow-reader");
        let mut slow = ask(&server.path);
        let (id, request) = next_request(&mut server);
        assert_eq!(request, Ok(Request::Status));
        // Far beyond any socket buffer (about 200 KiB on Linux).
        let big = "x".repeat(4 * 1024 * 1024);
        server.answer(id, &json!({ "ok": true, "big": big }));

        let mut quick = ask(&server.path);
        let (id, request) = next_request(&mut server);
        assert_eq!(request, Ok(Request::Status));
        server.answer(id, &json!({ "ok": true }));
        let mut text = String::new();
        quick.read_to_string(&mut text).unwrap();
        assert_eq!(
            text, "{\"ok\":true}\n",
            "the second client is answered first"
        );

        let reader = std::thread::spawn(move || {
            let mut text = String::new();
            slow.read_to_string(&mut text).map(|_| text)
        });
        for _ in 0..1000 {
            if reader.is_finished() {
                break;
            }
            turn(&mut server);
        }
        let text = reader
            .join()
            .unwrap()
            .expect("the slow client reads its answer");
        let answer: Value = serde_json::from_str(&text).expect("a whole JSON answer");
        assert_eq!(answer["big"].as_str().map(str::len), Some(big.len()));
        assert!(server.conns.is_empty(), "the answered connection is closed");
        let _ = std::fs::remove_dir_all(dir);
    }

    /// Connections that never send a request fill the slots; an operator's request still
    /// gets one, at the cost of the oldest silent client.
    #[test]
    fn silent_clients_cannot_lock_operators_out() {
        let (mut server, dir) = server("silent");
        let mut silent: Vec<UnixStream> = (0..CONNS_MAX)
            .map(|_| UnixStream::connect(&server.path).unwrap())
            .collect();
        for _ in 0..100 {
            if server.conns.len() == CONNS_MAX {
                break;
            }
            assert!(turn(&mut server).is_empty());
        }
        assert_eq!(server.conns.len(), CONNS_MAX);

        let mut operator = ask(&server.path);
        let (id, request) = next_request(&mut server);
        assert_eq!(request, Ok(Request::Status));
        server.answer(id, &json!({ "ok": true }));
        let mut text = String::new();
        operator.read_to_string(&mut text).unwrap();
        assert_eq!(text, "{\"ok\":true}\n");

        let oldest = &mut silent[0];
        oldest
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        let mut text = String::new();
        oldest.read_to_string(&mut text).unwrap();
        assert!(text.contains("busy: dropped for a newer client"), "{text}");
        assert_eq!(server.conns.len(), CONNS_MAX - 1);
        let _ = std::fs::remove_dir_all(dir);
    }

    /// An answer past ANSWER_MAX is replaced by an error: a slot's memory stays bounded.
    #[test]
    fn an_oversized_answer_is_refused() {
        let (mut server, dir) = server("oversized");
        let mut client = ask(&server.path);
        let (id, _) = next_request(&mut server);
        server.answer(id, &json!({ "big": "x".repeat(ANSWER_MAX) }));
        let reader = std::thread::spawn(move || {
            let mut text = String::new();
            client.read_to_string(&mut text).map(|_| text)
        });
        for _ in 0..100 {
            if reader.is_finished() {
                break;
            }
            turn(&mut server);
        }
        let text = reader.join().unwrap().unwrap();
        assert!(text.contains("answer longer than"), "{text}");
        let _ = std::fs::remove_dir_all(dir);
    }

    /// Found by the `control_request` fuzz target: serde accepted unknown fields on requests
    /// without arguments, and arrays in place of the object.
    #[test]
    fn refuses_unknown_fields_and_non_objects() {
        for text in [
            &b"{\"cmd\":\"status\",\"x_\":1}"[..],
            b"{\"cmd\":\"stop\",\"now\":true}",
            b"{\"cmd\":\"scale-up\",\"n\":5}",
            b"{\"x\":1,\"cmd\":\"restart\"}",
            b"{\"cmd\":\"scale\",\"n\":3,\"x\":1}",
            b"[\"status\"]",
            b"[\"scale\",3]",
        ] {
            let result = parse_request(text);
            let shown = String::from_utf8_lossy(text);
            assert!(result.is_err(), "{shown} was accepted as {result:?}");
        }
        assert_eq!(
            parse_request(b"{ \"n\" : 3 , \"cmd\" : \"scale\" }\njunk"),
            Ok(Request::Scale { n: 3 })
        );
    }
}
