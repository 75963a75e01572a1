//! `--listen` specs (`NAME=ADDR`, `host:port`, `[v6]:port`, `:port`, `unix:/path`) and the
//! command's program, resolved on PATH once.

use std::net::{SocketAddr, ToSocketAddrs};
use std::path::{Path, PathBuf};

use super::file::{usage, UsageError};

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ListenAddr {
    Tcp(SocketAddr),
    Unix(PathBuf),
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ListenSpec {
    /// For LISTEN_FDNAMES.
    pub name: String,
    pub addr: ListenAddr,
    /// As the operator wrote it.
    pub text: String,
}

/// `NAME=ADDR`, `host:port`, `[v6]:port`, `:port`, `unix:/path`.
pub(super) fn parse_listen(index: usize, text: &str) -> Result<ListenSpec, UsageError> {
    let bad = |why: &str| usage(format!("invalid --listen '{text}': {why}"));
    let (name, addr_text) = match text.split_once('=') {
        Some((name, rest))
            if !name.is_empty()
                && name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.')) =>
        {
            (name.to_string(), rest)
        }
        _ => (format!("listen{index}"), text),
    };
    let addr = if let Some(path) = addr_text.strip_prefix("unix:") {
        if path.is_empty() {
            return Err(bad("empty unix socket path"));
        }
        if path.len() >= 108 {
            return Err(bad("unix socket path longer than 107 bytes"));
        }
        ListenAddr::Unix(PathBuf::from(path))
    } else {
        let full = match addr_text.strip_prefix(':') {
            Some(port) => format!("0.0.0.0:{port}"),
            None => addr_text.to_string(),
        };
        let addr = match full.parse::<SocketAddr>() {
            Ok(a) => a,
            Err(_) => full
                .to_socket_addrs()
                .map_err(|e| {
                    bad(&format!(
                        "expected host:port, [v6]:port or unix:/path ({e})"
                    ))
                })?
                .next()
                .ok_or_else(|| bad("the host name resolves to no address"))?,
        };
        ListenAddr::Tcp(addr)
    };
    Ok(ListenSpec {
        name,
        addr,
        text: text.to_string(),
    })
}

/// Resolves the program like execvp would, once, so that a command that does not exist is a
/// usage error (exit 2) instead of a crash loop. The result is exec'd as a path.
pub(super) fn resolve_program(name: &str) -> Result<PathBuf, UsageError> {
    let executable = |p: &Path| {
        use std::os::unix::fs::PermissionsExt;
        std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
    };
    if name.contains('/') {
        let p = PathBuf::from(name);
        return if executable(&p) {
            Ok(p)
        } else {
            Err(usage(format!(
                "command not found or not executable: {name}"
            )))
        };
    }
    let path = std::env::var_os("PATH").unwrap_or_else(|| "/usr/local/bin:/usr/bin:/bin".into());
    std::env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(|p| executable(p))
        .ok_or_else(|| usage(format!("command not found: {name} (searched PATH)")))
}
