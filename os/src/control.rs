//! The control socket: unix stream, mode 0600, peer uid checked, one JSON request per
//! connection (`{"cmd":"status"}`), one JSON answer. Connections are non-blocking and
//! polled by the event loop; a slow or silent client is dropped after a deadline.

use std::io::{Read, Write};
use std::os::fd::{AsFd, BorrowedFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

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
    Reload,
    Upgrade,
    Scale { n: u32 },
    ScaleUp,
    ScaleDown,
}

const REQUEST_MAX: usize = 64 * 1024;
const CONNS_MAX: usize = 16;
const CONN_DEADLINE: Duration = Duration::from_secs(5);

struct Conn {
    stream: UnixStream,
    buf: Vec<u8>,
    deadline: Instant,
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

    /// The fds to poll for reading: the listener first, then each connection.
    pub fn fds(&self) -> Vec<BorrowedFd<'_>> {
        std::iter::once(self.listener.as_fd())
            .chain(self.conns.iter().map(|c| c.stream.as_fd()))
            .collect()
    }

    /// The earliest connection deadline.
    pub fn deadline(&self) -> Option<Instant> {
        self.conns.iter().map(|c| c.deadline).min()
    }

    /// Accepts waiting connections (peer uid checked).
    pub fn accept(&mut self) {
        while let Ok((stream, _)) = self.listener.accept() {
            let allowed = getsockopt(&stream, sockopt::PeerCredentials)
                .map(|c| c.uid() == nix::unistd::geteuid().as_raw() || c.uid() == 0)
                .unwrap_or(false);
            if !allowed {
                tracing::warn!("control: refused a connection from another user");
                respond(stream, &error("permission denied"));
                continue;
            }
            if self.conns.len() >= CONNS_MAX {
                respond(stream, &error("busy: too many control connections"));
                continue;
            }
            if stream.set_nonblocking(true).is_ok() {
                self.conns.push(Conn {
                    stream,
                    buf: Vec::new(),
                    deadline: Instant::now() + CONN_DEADLINE,
                });
            }
        }
    }

    /// Reads from readable connections (`ready[i]` for connection i) and returns the complete
    /// requests with their connections; drops expired ones. A request ends at a newline or at
    /// the client's end of writing.
    pub fn read(&mut self, ready: &[bool]) -> Vec<(UnixStream, Result<Request, String>)> {
        let now = Instant::now();
        let mut done = Vec::new();
        let mut keep = Vec::new();
        for (i, mut conn) in std::mem::take(&mut self.conns).into_iter().enumerate() {
            let mut complete = false;
            if ready.get(i).copied().unwrap_or(false) {
                let mut chunk = [0u8; 4096];
                loop {
                    match conn.stream.read(&mut chunk) {
                        Ok(0) => {
                            complete = true;
                            break;
                        }
                        Ok(n) => {
                            conn.buf.extend_from_slice(&chunk[..n]);
                            if conn.buf.contains(&b'\n') || conn.buf.len() > REQUEST_MAX {
                                complete = true;
                                break;
                            }
                        }
                        Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                        Err(_) => {
                            complete = true;
                            break;
                        }
                    }
                }
            }
            if complete {
                let request = parse_request(&conn.buf);
                done.push((conn.stream, request));
            } else if conn.deadline <= now {
                tracing::warn!("control: dropped a connection that sent no complete request");
                respond(
                    conn.stream,
                    &error("timeout: send one JSON request and a newline"),
                );
            } else {
                keep.push(conn);
            }
        }
        self.conns = keep;
        done
    }

    /// Removes our socket file, unless a successor's has replaced it.
    pub fn remove_file(&self) {
        if self.file.is_some() && file_id(&self.bound_at) == self.file {
            let _ = std::fs::remove_file(&self.bound_at);
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

/// Writes the answer and closes the connection. Answers are small; a client that does not
/// read cannot stall the supervisor for longer than the write timeout.
pub fn respond(stream: UnixStream, answer: &Value) {
    let mut stream = stream;
    let _ = stream.set_nonblocking(false);
    let _ = stream.set_write_timeout(Some(Duration::from_millis(500)));
    let mut text = answer.to_string();
    text.push('\n');
    let _ = stream.write_all(text.as_bytes());
}

/// `drover status|stop|... --control PATH`: sends one request, prints the answer. Returns the
/// process exit code: 0 if the answer says ok, 1 otherwise.
pub fn client(path: &Path, request: Value) -> i32 {
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
                println!(
                    "{}",
                    serde_json::to_string_pretty(&answer).unwrap_or_default()
                );
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
