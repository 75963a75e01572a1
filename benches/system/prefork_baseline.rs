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
//! The workers die with the parent (`PR_SET_PDEATHSIG`); stop it with TERM or INT.

#[path = "http.rs"]
mod http;

use std::net::{SocketAddr, SocketAddrV4, TcpStream};
use std::os::fd::FromRawFd;
use std::time::Duration;

/// The listen backlog: `drover run`'s default.
const BACKLOG: i32 = 1024;

fn main() {
    let (addr, workers, threads) = match args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("prefork_baseline: {e}\nusage: prefork_baseline --listen HOST:PORT [--workers N] [--threads T]");
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
            0 => worker(fd, slot, threads, parent),
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

fn worker(fd: i32, slot: u32, threads: u32, parent: u32) -> ! {
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
        .map(|_| std::thread::spawn(move || accept_loop(fd, ident)))
        .collect();
    for h in handles {
        let _ = h.join();
    }
    std::process::exit(0);
}

fn accept_loop(fd: i32, ident: &http::Ident) {
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
        let _ = http::serve(&mut stream, ident, &|| false, Duration::ZERO);
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

fn args() -> Result<(SocketAddrV4, u32, u32), String> {
    let (mut addr, mut workers, mut threads) = (None, 4, 1);
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
            _ => return Err(format!("unknown argument {flag}")),
        }
    }
    Ok((addr.ok_or("--listen is required")?, workers, threads))
}

fn number(flag: &str, v: &str) -> Result<u32, String> {
    match v.parse() {
        Ok(n) if n > 0 => Ok(n),
        _ => Err(format!("{flag} {v}: want a positive number")),
    }
}
