//! The bring-your-own-server benchmark's baselines (benches/system/byo_cost.sh): the same
//! axum app as `os/examples/axum.rs` (its `GET /` handler and JSON answer) started without
//! drover, on a listener tuned as drover tunes its own (backlog 1024, `TCP_NODELAY`,
//! `TCP_DEFER_ACCEPT`). `--workers 1` is one process; more fork a prefork of that shape
//! with no supervisor: the parent only waits, nothing restarts, reports or is watched.
//! Each process runs a tokio multi-thread runtime with `--threads` worker threads.
//!
//! ```sh
//! cargo run --release -p drover-benches --example axum_baseline -- \
//!     --listen 127.0.0.1:8080 --workers 4 --threads 2
//! ```
//!
//! The workers die with the parent (`PR_SET_PDEATHSIG`); stop it with TERM or INT.

use std::net::{SocketAddr, TcpListener};
use std::os::fd::AsRawFd;

use axum::extract::State;
use axum::routing::get;
use axum::{Json, Router};
use serde_json::{json, Value};

/// drover's default listen backlog.
const BACKLOG: i32 = 1024;

#[derive(Clone, Copy)]
struct Ident {
    slot: u32,
    pid: u32,
}

fn main() {
    let (addr, workers, threads) = match args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("axum_baseline: {e}\nusage: axum_baseline --listen HOST:PORT [--workers N] [--threads T]");
            std::process::exit(2);
        }
    };
    let listener = match listen(addr) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("axum_baseline: listen on {addr}: {e}");
            std::process::exit(2);
        }
    };
    eprintln!("axum_baseline: {addr}: {workers} process(es) x {threads} thread(s)");
    if workers == 1 {
        std::process::exit(serve(listener, 0, threads));
    }
    let parent = std::process::id();
    for slot in 0..workers {
        // SAFETY: the parent is single-threaded here (no runtime yet); the child only runs
        // Rust code of its own.
        match unsafe { libc::fork() } {
            -1 => {
                eprintln!("axum_baseline: fork: {}", std::io::Error::last_os_error());
                std::process::exit(1);
            }
            0 => {
                // SAFETY: prctl with integer arguments only.
                unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL, 0, 0, 0) };
                if std::os::unix::process::parent_id() != parent {
                    std::process::exit(0);
                }
                std::process::exit(serve(listener, slot, threads));
            }
            _ => {}
        }
    }
    drop(listener);
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

fn serve(listener: TcpListener, slot: u32, threads: usize) -> i32 {
    let ident = Ident {
        slot,
        pid: std::process::id(),
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads)
        .enable_io()
        .enable_time()
        .build();
    let served = runtime.and_then(|rt| {
        rt.block_on(async move {
            let listener = tokio::net::TcpListener::from_std(listener)?;
            let app = Router::new().route("/", get(hello)).with_state(ident);
            // The example wires axum's graceful shutdown (a watch on every connection);
            // so does the baseline, to a signal that never comes (it is stopped by KILL
            // or TERM's default action), so that the ratio is drover's cost alone.
            axum::serve(listener, app)
                .with_graceful_shutdown(std::future::pending())
                .await
        })
    });
    match served {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("axum_baseline: {e}");
            1
        }
    }
}

/// As os/examples/axum.rs builds it, value for value.
fn whoami(w: &Ident) -> Value {
    json!({ "slot": w.slot, "pid": w.pid, "generation": 1 })
}

async fn hello(State(w): State<Ident>) -> Json<Value> {
    Json(json!({ "message": "Hello, world!", "worker": whoami(&w) }))
}

/// A non-blocking listener with drover's backlog and listener options.
fn listen(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let listener = TcpListener::bind(addr)?;
    listener.set_nonblocking(true)?;
    let fd = listener.as_raw_fd();
    let set = |level, name, value: libc::c_int| {
        // SAFETY: setsockopt on an open socket with a c_int of the right size.
        unsafe {
            libc::setsockopt(
                fd,
                level,
                name,
                (&value as *const libc::c_int).cast(),
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            )
        }
    };
    set(libc::IPPROTO_TCP, libc::TCP_NODELAY, 1);
    set(libc::IPPROTO_TCP, libc::TCP_DEFER_ACCEPT, 1);
    // SAFETY: listen(2) again on a listening socket only changes its backlog.
    if unsafe { libc::listen(fd, BACKLOG) } < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(listener)
}

fn args() -> Result<(SocketAddr, u32, usize), String> {
    let (mut addr, mut workers, mut threads) = (None, 1u32, 1usize);
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let value = it.next().ok_or_else(|| format!("{flag} needs a value"))?;
        match flag.as_str() {
            "--listen" => {
                addr = Some(
                    value
                        .parse()
                        .map_err(|e| format!("--listen {value}: {e}"))?,
                )
            }
            "--workers" => {
                workers = value
                    .parse()
                    .map_err(|e| format!("--workers {value}: {e}"))?
            }
            "--threads" => {
                threads = value
                    .parse()
                    .map_err(|e| format!("--threads {value}: {e}"))?
            }
            _ => return Err(format!("unknown flag {flag}")),
        }
    }
    if workers == 0 || threads == 0 {
        return Err("--workers and --threads must be at least 1".into());
    }
    Ok((addr.ok_or("--listen is required")?, workers, threads))
}
