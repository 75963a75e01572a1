//! The whole-system benchmark's baseline: the best a prefork design can do. One listening
//! socket, `--workers` forked processes with `--threads` threads each, every thread blocking
//! in `accept(2)` on the shared socket and serving its connection with the same HTTP/1.1
//! keep-alive loop and response bytes as drover's `hello` (`http.rs`). No supervisor: the
//! parent only waits; nothing restarts, nothing reports, nothing is watched.
//!
//! ```sh
//! cargo run --release -p drover-benches --example prefork_baseline -- \
//!     --listen 127.0.0.1:8080 --workers 4 --threads 4
//! ```
//!
//! With `--tls-cert FILE --tls-key FILE` it serves TLS with rustls configured as drover's
//! embedded runtime configures it (the *ring* provider, TLS 1.3 and 1.2, ALPN `http/1.1`,
//! `close_notify` before a close); the handshake blocks the accepting thread, as a plain
//! prefork server's does (`benches/system/tls_cost.sh`).
//!
//! The workers die with the parent (`PR_SET_PDEATHSIG`); stop it with TERM or INT.

#[path = "http.rs"]
mod http;

use std::io::Write;
use std::net::{SocketAddr, SocketAddrV4, TcpStream};
use std::os::fd::FromRawFd;
use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::{ServerConfig, ServerConnection, StreamOwned};

type Tls = Option<Arc<ServerConfig>>;

impl http::Stream for StreamOwned<ServerConnection, TcpStream> {
    fn tcp(&self) -> &TcpStream {
        &self.sock
    }
}

/// The listen backlog: `drover run`'s default.
const BACKLOG: i32 = 1024;

fn main() {
    let (addr, workers, threads, tls) = match args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("prefork_baseline: {e}\nusage: prefork_baseline --listen HOST:PORT [--workers N] [--threads T] [--tls-cert FILE --tls-key FILE]");
            std::process::exit(2);
        }
    };
    let fd = match listen(addr) {
        Ok(fd) => fd,
        Err(e) => {
            eprintln!("prefork_baseline: listen on {addr}: {e}");
            std::process::exit(2);
        }
    };
    let parent = std::process::id();
    for slot in 0..workers {
        // SAFETY: the parent is single-threaded here; the child only runs Rust code of its own.
        match unsafe { libc::fork() } {
            -1 => {
                eprintln!(
                    "prefork_baseline: fork: {}",
                    std::io::Error::last_os_error()
                );
                std::process::exit(1);
            }
            0 => worker(fd, slot, threads, parent, &tls),
            _ => {}
        }
    }
    eprintln!(
        "prefork_baseline: pid {parent} on {addr}: {workers} worker(s) x {threads} thread(s)"
    );
    loop {
        let mut status = 0;
        // SAFETY: waits for any child; no pointer but the local status.
        if unsafe { libc::wait(&mut status) } < 0
            && std::io::Error::last_os_error().raw_os_error() == Some(libc::ECHILD)
        {
            std::process::exit(1);
        }
    }
}

fn worker(fd: i32, slot: u32, threads: u32, parent: u32, tls: &Tls) -> ! {
    // SAFETY: prctl with integer arguments only.
    unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL, 0, 0, 0) };
    if std::os::unix::process::parent_id() != parent {
        std::process::exit(0);
    }
    let ident = http::Ident {
        slot,
        pid: std::process::id(),
        generation: 1,
    };
    let ident: &'static http::Ident = Box::leak(Box::new(ident));
    let handles: Vec<_> = (0..threads)
        .map(|_| {
            let tls = tls.clone();
            std::thread::spawn(move || accept_loop(fd, ident, tls))
        })
        .collect();
    for h in handles {
        let _ = h.join();
    }
    std::process::exit(0);
}

fn accept_loop(fd: i32, ident: &http::Ident, tls: Tls) {
    loop {
        // SAFETY: accept4 on the shared listener; null address pointers are allowed.
        let conn = unsafe {
            libc::accept4(
                fd,
                std::ptr::null_mut(),
                std::ptr::null_mut(),
                libc::SOCK_CLOEXEC,
            )
        };
        if conn < 0 {
            match std::io::Error::last_os_error().raw_os_error() {
                Some(libc::EINTR | libc::ECONNABORTED) => {}
                // EMFILE, ENOBUFS...: back off instead of spinning.
                _ => std::thread::sleep(Duration::from_millis(10)),
            }
            continue;
        }
        // SAFETY: accept4 returned a new descriptor that nothing else owns.
        let mut stream = unsafe { TcpStream::from_raw_fd(conn) };
        let Some(config) = &tls else {
            let _ = http::serve(&mut stream, ident, &|| false, Duration::ZERO);
            continue;
        };
        let Ok(session) = ServerConnection::new(Arc::clone(config)) else {
            continue;
        };
        // The handshake runs on the first read, on this thread.
        let mut stream = StreamOwned::new(session, stream);
        let _ = http::serve(&mut stream, ident, &|| false, Duration::ZERO);
        stream.conn.send_close_notify();
        let _ = stream.flush();
    }
}

/// A blocking IPv4 listener with SO_REUSEADDR and drover's backlog.
fn listen(addr: SocketAddrV4) -> std::io::Result<i32> {
    let err = std::io::Error::last_os_error;
    // SAFETY: plain socket calls on a descriptor this function owns; `sa` outlives bind.
    unsafe {
        let fd = libc::socket(libc::AF_INET, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0);
        if fd < 0 {
            return Err(err());
        }
        let one: libc::c_int = 1;
        if libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_REUSEADDR,
            (&one as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        ) < 0
        {
            return Err(err());
        }
        let sa = libc::sockaddr_in {
            sin_family: libc::AF_INET as libc::sa_family_t,
            sin_port: addr.port().to_be(),
            sin_addr: libc::in_addr {
                s_addr: u32::from(*addr.ip()).to_be(),
            },
            sin_zero: [0; 8],
        };
        if libc::bind(
            fd,
            (&sa as *const libc::sockaddr_in).cast(),
            std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t,
        ) < 0
        {
            return Err(err());
        }
        if libc::listen(fd, BACKLOG) < 0 {
            return Err(err());
        }
        Ok(fd)
    }
}

/// drover's embedded runtime's TLS config (`os/src/tls/mod.rs`), for the same work.
fn tls_config(cert: &str, key: &str) -> Result<Arc<ServerConfig>, String> {
    let chain = CertificateDer::pem_file_iter(cert)
        .and_then(|i| i.collect::<Result<Vec<_>, _>>())
        .map_err(|e| format!("--tls-cert {cert}: {e}"))?;
    let key = PrivateKeyDer::from_pem_file(key).map_err(|e| format!("--tls-key {key}: {e}"))?;
    #[allow(deprecated)] // as drover: ring for a light build
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|e| e.to_string())?
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .map_err(|e| e.to_string())?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

fn args() -> Result<(SocketAddrV4, u32, u32, Tls), String> {
    let (mut addr, mut workers, mut threads) = (None, 4, 1);
    let (mut cert, mut key) = (None, None);
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().ok_or(format!("{flag} needs a value"));
        match flag.as_str() {
            "--listen" => {
                let v = value()?;
                match v.parse::<SocketAddr>() {
                    Ok(SocketAddr::V4(a)) => addr = Some(a),
                    _ => return Err(format!("--listen {v}: want an IPv4 HOST:PORT")),
                }
            }
            "--workers" => workers = number(&flag, &value()?)?,
            "--threads" => threads = number(&flag, &value()?)?,
            "--tls-cert" => cert = Some(value()?),
            "--tls-key" => key = Some(value()?),
            _ => return Err(format!("unknown argument {flag}")),
        }
    }
    let tls = match (cert, key) {
        (None, None) => None,
        (Some(cert), Some(key)) => Some(tls_config(&cert, &key)?),
        _ => return Err("--tls-cert and --tls-key go together".into()),
    };
    Ok((addr.ok_or("--listen is required")?, workers, threads, tls))
}

fn number(flag: &str, v: &str) -> Result<u32, String> {
    match v.parse() {
        Ok(n) if n > 0 => Ok(n),
        _ => Err(format!("{flag} {v}: want a positive number")),
    }
}
