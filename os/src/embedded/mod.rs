//! The embedded runtime: a Rust handler served by forked worker processes with N threads
//! each, supervised by the same shell and machine as command workers (docs/ARCHITECTURE.md).
//!
//! ```no_run
//! use std::io::{Read, Write};
//! use drover_os::embedded::Server;
//!
//! fn main() {
//!     let code = Server::from_args() // the `drover run` flags, without `-- COMMAND`
//!         .on_worker_start(|w| eprintln!("worker {} (pid {}) starts", w.slot, w.pid))
//!         .run(|conn| {
//!             let mut buf = [0u8; 1024];
//!             while conn.read(&mut buf)? > 0 {
//!                 conn.begin_request();
//!                 conn.write_all(b"pong\n")?;
//!                 conn.end_request();
//!             }
//!             Ok(())
//!         });
//!     std::process::exit(code);
//! }
//! ```
//!
//! **Supervisor side**: `run` is `drover run` with this program as the worker: the same
//! flags, config file, signals and control socket. Instead of exec'ing a command, each spawn
//! forks this process (which must still be single-threaded: it is checked) and the child
//! runs the worker below. Readiness is `notify` unless `--readiness` says otherwise.
//!
//! **Worker side** (in the forked child): `after_fork`, then `on_worker_start`, then
//! `threads` threads wait on every listener (epoll with `EPOLLEXCLUSIVE`, so a connection
//! wakes one thread of one worker) and on the worker's parked connections, and call the
//! handler for a new connection or for a parked one that became readable. A connection
//! idle between requests (after a 10 ms linger, if its client keeps it busy) or new with
//! nothing sent yet is parked in
//! the worker's poller (`parked`), not held on a thread. The main thread reports to the
//! supervisor: `READY=1` over `NOTIFY_SOCKET` once the threads run; then, on the report
//! board (memory the supervisor mapped shared before its first fork, one slot per worker
//! slot), its heartbeat, stamped by the worker, but only while no thread stays outside both
//! its waits and a request (a thread stuck outside a request stops the heartbeat; a thread
//! inside a request is the request timeout's business), and its load: the busy threads, the
//! start of the oldest running request and the requests served. It looks every 100 ms while
//! anything moves, and otherwise only when a heartbeat is due (a quarter of the watchdog
//! timeout; never without one): idle threads sleep without a timeout, so an idle worker
//! wakes only for its heartbeat. The supervisor reads the board whenever it wakes up, so
//! heartbeats cost it no wake-up: with the watchdog on, an idle pool wakes it about once per
//! heartbeat timeout, when the earliest deadline comes and one read renews every worker. A
//! load change must be seen sooner (scaling, `--max-requests`, the request timeout): the
//! worker that publishes one while the supervisor sleeps rings it once (the report board's
//! doorbell, a `X_DROVER_REPORTS=1` datagram). Without a board (it could not be mapped) the
//! worker sends `WATCHDOG=1` at a quarter of the timeout and `X_DROVER_LOAD` on each change.
//! On a listener that serves TLS (`--tls-cert`, read by the supervisor into one rustls
//! config per listener, which workers inherit by the fork) the thread that accepts
//! advances the handshake with what the client has sent, lingers for its next flight, and
//! otherwise parks the connection with its handshake deadline as its idle deadline: no
//! thread waits on a slow handshake. The handler is called once the handshake is done.
//! TERM or INT: stop accepting, let each connection finish the request in hand, serve a
//! request that arrives within [`STOP_GRACE`] of the stop on an idle keep-alive connection,
//! parked or not (the handler answers it with `Connection: close`), then close; run `on_worker_exit`,
//! exit 0. QUIT: exit 0 at once. The worker dies with the supervisor (`PR_SET_PDEATHSIG`,
//! and the death pipe's EOF).
//!
//! **Bring your own server.** [`Server::serve`] runs the same supervisor, but each forked
//! worker calls the program's own function with its [`Listeners`] (std sockets) and a
//! [`WorkerHandle`] instead of starting drover's threads: axum, hyper, any tokio service or
//! plain threads. A drover thread in the worker reports for it (heartbeat, the load it
//! feeds through request guards or the `tower` feature's `LoadLayer`) and turns TERM/INT
//! into the stop it awaits ([`Stopped`], a blocking wait or a raw fd). docs/embedding.md
//! shows both ways.
//!
//! **Layout.** This file holds only these docs and the public re-exports; it must not grow
//! code of its own. `server` is the public API (the builder) and starts the pool; `parts`
//! what it hands every forked worker (`WorkerInfo`, hooks, tuning), below all the rest;
//! `worker` is the forked worker's main thread and its reports; `signals` its stop signals;
//! `threads` the serving threads, `thread_slot` each one's reports; `parked` the
//! connections waiting between requests; `conn` a connection as the handler sees it and the
//! `Handler` trait; `tls` a connection's TLS session (handshake, plaintext reads and
//! writes, [`TlsInfo`]). For `serve`: `byo` the program's
//! API (listeners, worker handle, load accounting), `byo_worker` the forked worker and its
//! report thread, `stop` the stop signal's three shapes, `load_layer` the tower layer.
//! The report board the workers publish on is `crate::board`, which the shell reads.

mod byo;
mod byo_worker;
mod conn;
#[cfg(feature = "tower")]
mod load_layer;
mod parked;
mod parts;
mod server;
mod signals;
mod stop;
mod thread_slot;
mod threads;
mod tls;
mod worker;

pub use byo::{Listener, Listeners, RequestGuard, WorkerHandle};
pub use conn::{Conn, Handler, STOP_GRACE};
#[cfg(feature = "tower")]
pub use load_layer::{CountedBody, LoadFuture, LoadLayer, LoadService};
pub use parts::WorkerInfo;
pub use server::{Server, MAX_PARKED_DEFAULT};
pub use stop::Stopped;
pub use tls::TlsInfo;
