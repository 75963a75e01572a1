//! axum: bring your own server. A small JSON API on axum and tokio, run by drover as a
//! supervised prefork pool: the same flags, config file, signals and control socket as
//! `drover run`, with graceful stops, rolling restarts and live upgrades.
//!
//! ```sh
//! cargo run --release -p drover-os --features tower --example axum -- \
//!     --listen 127.0.0.1:8080 --workers 4 --threads 2 --heartbeat-timeout 10
//! curl -s http://127.0.0.1:8080/
//! curl -s -X POST -H 'content-type: application/json' -d '{"n":1}' http://127.0.0.1:8080/echo
//! ```
//!
//! Each worker runs a tokio multi-thread runtime with `--threads` worker threads on the
//! listener drover opened. `LoadLayer` reports every request (load-aware scaling,
//! `--max-requests`, the request timeout); the worker's stop signal (TERM or INT, or the
//! supervisor retiring the worker) drives the graceful stop in two steps: stop accepting at
//! once (`UntilStopped`: the other workers take the listener's queue), then, when the stop
//! grace is over, axum's graceful shutdown of the connections (a connection accepted just
//! before the stop has its first request read and answered, not reset), finish the
//! requests in flight, exit 0. Paths: `GET /` names the worker; `GET /sleep/{ms}`
//! answers after ms milliseconds (at most 60 s), to watch drains and request timeouts;
//! `POST /echo` returns its JSON body.

use std::time::Duration;

use axum::extract::{Path, State};
use axum::routing::{get, post};
use axum::{Json, Router};
use drover_os::embedded::{LoadLayer, Server, Stopped, WorkerHandle};
use serde_json::{json, Value};

fn main() {
    let code = Server::from_args().serve(|mut listeners, worker| {
        let listener = match listeners.take_tcp() {
            Ok(l) => l,
            Err(e) => {
                eprintln!("axum: {e}");
                return 2;
            }
        };
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(worker.info().threads as usize)
            .enable_io()
            .enable_time()
            .build();
        let served = runtime.and_then(|rt| rt.block_on(serve(listener, worker)));
        match served {
            Ok(()) => 0,
            Err(e) => {
                eprintln!("axum: {e}");
                1
            }
        }
    });
    std::process::exit(code);
}

async fn serve(listener: std::net::TcpListener, worker: WorkerHandle) -> std::io::Result<()> {
    // drover hands its listeners non-blocking, as `from_std` needs.
    let listener = tokio::net::TcpListener::from_std(listener)?;
    let app = Router::new()
        .route("/", get(hello))
        .route("/sleep/{ms}", get(sleep))
        .route("/echo", post(echo))
        .layer(LoadLayer::new(worker.clone()))
        .with_state(worker.clone());
    worker.ready();
    let listener = UntilStopped {
        listener,
        stopped: worker.stopped(),
    };
    axum::serve(listener, app)
        .with_graceful_shutdown(worker.stop_grace_over())
        .await
}

/// The listener, until the worker is asked to stop; then it accepts no more.
struct UntilStopped {
    listener: tokio::net::TcpListener,
    stopped: Stopped,
}

impl axum::serve::Listener for UntilStopped {
    type Io = tokio::net::TcpStream;
    type Addr = std::net::SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        tokio::select! {
            biased;
            () = &mut self.stopped => std::future::pending().await,
            accepted = axum::serve::Listener::accept(&mut self.listener) => accepted,
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        self.listener.local_addr()
    }
}

fn whoami(worker: &WorkerHandle) -> Value {
    let w = worker.info();
    json!({ "slot": w.slot, "pid": w.pid, "generation": w.generation })
}

async fn hello(State(worker): State<WorkerHandle>) -> Json<Value> {
    Json(json!({ "message": "Hello, world!", "worker": whoami(&worker) }))
}

async fn sleep(State(worker): State<WorkerHandle>, Path(ms): Path<u64>) -> Json<Value> {
    tokio::time::sleep(Duration::from_millis(ms.min(60_000))).await;
    Json(json!({ "slept_ms": ms.min(60_000), "worker": whoami(&worker) }))
}

async fn echo(State(worker): State<WorkerHandle>, Json(body): Json<Value>) -> Json<Value> {
    Json(json!({ "echo": body, "worker": whoami(&worker) }))
}
