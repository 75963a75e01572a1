//! hyper: bring your own server on hyper 1.x and hyper-util, without a framework: the
//! accept loop, the per-connection tasks and the graceful drain are the program's, drover
//! supervises the pool (the same flags, config file, signals and control socket as
//! `drover run`).
//!
//! ```sh
//! cargo run --release -p drover-os --features tower --example hyper -- \
//!     --listen 127.0.0.1:8080 --workers 4 --threads 2 --heartbeat-timeout 10
//! curl -s http://127.0.0.1:8080/
//! ```
//!
//! Load is reported by hand here (`WorkerHandle::request_started`, a guard per request);
//! the stop signal ends the accept loop (the other workers take the listener's queue), and
//! once the stop grace is over hyper-util's `GracefulShutdown` lets every connection finish
//! its request in flight before the worker exits 0. (Shutting the connections down at the
//! stop itself would reset one accepted just before it whose request hyper has not read.) Paths: any path
//! answers a JSON line naming the worker; `/sleep/MS` answers after MS milliseconds (at
//! most 60 s).

use std::convert::Infallible;
use std::time::Duration;

use drover_os::embedded::{Server, WorkerHandle};
use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use hyper_util::server::graceful::GracefulShutdown;

fn main() {
    let code = Server::from_args().serve(|mut listeners, worker| {
        let listener = match listeners.take_tcp() {
            Ok(l) => l,
            Err(e) => {
                eprintln!("hyper: {e}");
                return 2;
            }
        };
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(worker.info().threads as usize)
            .enable_io()
            .enable_time()
            .build();
        match runtime.and_then(|rt| rt.block_on(serve(listener, worker))) {
            Ok(()) => 0,
            Err(e) => {
                eprintln!("hyper: {e}");
                1
            }
        }
    });
    std::process::exit(code);
}

async fn serve(listener: std::net::TcpListener, worker: WorkerHandle) -> std::io::Result<()> {
    let listener = tokio::net::TcpListener::from_std(listener)?;
    let http = hyper::server::conn::http1::Builder::new();
    let graceful = GracefulShutdown::new();
    let mut stopped = std::pin::pin!(worker.stopped());
    worker.ready();
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let stream = match accepted {
                    Ok((stream, _)) => stream,
                    Err(e) => {
                        // Out of descriptors or memory: back off instead of spinning.
                        eprintln!("hyper: accept: {e}");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                let w = worker.clone();
                let service = service_fn(move |req| answer(w.clone(), req));
                let conn = graceful.watch(http.serve_connection(TokioIo::new(stream), service));
                tokio::spawn(async move {
                    let _ = conn.await;
                });
            }
            _ = &mut stopped => break,
        }
    }
    // Other workers accept from the shared listener from here on.
    drop(listener);
    worker.stop_grace_over().await;
    graceful.shutdown().await;
    Ok(())
}

async fn answer(
    worker: WorkerHandle,
    req: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let _request = worker.request_started();
    let slept = match req.uri().path().strip_prefix("/sleep/") {
        Some(ms) => {
            let ms = ms.parse::<u64>().unwrap_or(0).min(60_000);
            tokio::time::sleep(Duration::from_millis(ms)).await;
            ms
        }
        None => 0,
    };
    let w = worker.info();
    let body = format!(
        "{{\"message\":\"Hello, world!\",\"slept_ms\":{slept},\"worker\":{{\"slot\":{},\"pid\":{},\"generation\":{}}}}}\n",
        w.slot, w.pid, w.generation
    );
    let response = Response::builder()
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body)))
        .expect("a static response is valid");
    Ok(response)
}
