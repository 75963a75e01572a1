//! End-to-end tests of `--listen-per-worker`: real drover processes on loopback, each slot
//! answering on its own port (base + slot) for a python command worker that accepts on
//! every LISTEN_FDS socket and for the embedded `hello` runtime; a killed worker's port
//! keeps queueing connections for its replacement; scaling opens and closes ports; a port
//! taken by someone else is exit 2 at start and an empty, logged slot when scaling.

pub mod common;

use common::*;
use serde_json::Value;
use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::time::{Duration, Instant};

/// A worker that accepts on every socket it is given and answers one line with who it is
/// and which socket (LISTEN_FDNAMES entry) took the connection.
const PORTS_PY: &str = r#"
import os, socket, signal, sys, select
path = os.environ["NOTIFY_SOCKET"]
def notify(msg):
    s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    try: s.sendto(msg.encode(), path)
    finally: s.close()
wid = os.environ["DROVER_WORKER_ID"]
port = os.environ.get("DROVER_WORKER_PORT", "-")
names = os.environ["LISTEN_FDNAMES"].split(":")
socks = {}
for i in range(int(os.environ["LISTEN_FDS"])):
    s = socket.socket(fileno=3 + i)
    s.setblocking(False)
    socks[s] = names[i]
stopping = False
def on_term(*_):
    global stopping
    stopping = True
signal.signal(signal.SIGTERM, on_term)
notify("READY=1")
while not stopping:
    r, _, _ = select.select(list(socks), [], [], 0.05)
    for s in r:
        try:
            conn, _ = s.accept()
        except (BlockingIOError, InterruptedError):
            continue
        conn.setblocking(True)
        conn.settimeout(5)
        try:
            conn.recv(1024)
            conn.sendall(f"pid={os.getpid()} id={wid} port={port} via={socks[s]}\n".encode())
        except OSError:
            pass
        conn.close()
sys.exit(0)
"#;

struct Pool {
    server: Server,
    control: String,
    base: u16,
}

impl Pool {
    /// A python pool of `workers` with per-worker ports from a free base.
    fn python(name: &str, workers: u16, extra: &[&str]) -> Pool {
        let dir = TempDir::new(name);
        std::fs::write(dir.path("ports.py"), PORTS_PY).unwrap();
        let base = free_ports(workers + 2);
        let control = dir.path("ctl");
        let script = dir.path("ports.py");
        let per_worker = format!("127.0.0.1:{base}");
        let workers = workers.to_string();
        let mut args = vec![
            "run",
            "--workers",
            &workers,
            "--listen-per-worker",
            &per_worker,
            "--readiness",
            "notify",
            "--control",
            &control,
        ];
        args.extend_from_slice(extra);
        args.extend(["--", python(), &script]);
        let server = Server::start(dir, DROVER, &args);
        Pool {
            server,
            control,
            base,
        }
    }

    fn try_status(&self) -> Result<Value, String> {
        let (code, out, err) =
            run_bounded(DROVER, &["status", "--json", "--control", &self.control], T);
        match code.success() {
            true => Ok(serde_json::from_str(&out).unwrap()),
            false => Err(err),
        }
    }

    fn status(&self) -> Value {
        self.try_status().unwrap_or_else(|e| panic!("{e}"))
    }

    /// `n` workers Ready (the control socket may not be up yet at first).
    fn ready(&self, n: u64) {
        wait_until(&format!("{n} workers ready"), T, || {
            self.try_status()
                .is_ok_and(|s| s["ready"].as_u64() == Some(n))
        });
    }

    fn scale(&self, n: u32) {
        let (code, _, err) = client(&["scale", &n.to_string(), "--control", &self.control]);
        assert_eq!(code, 0, "{err}");
    }
}

/// One line asked on `port`; the answer.
fn ask(port: u16) -> std::io::Result<String> {
    let addr: SocketAddr = ([127, 0, 0, 1], port).into();
    let mut s = TcpStream::connect_timeout(&addr, T)?;
    s.set_read_timeout(Some(T))?;
    s.set_write_timeout(Some(T))?;
    s.write_all(b"who\n")?;
    let mut answer = String::new();
    s.read_to_string(&mut answer)?;
    Ok(answer)
}

#[test]
fn each_slot_answers_on_its_own_port() {
    let pool = Pool::python("pwp-slots", 3, &[]);
    pool.ready(3);
    for slot in 0..3u16 {
        let port = pool.base + slot;
        let answer = ask(port).unwrap_or_else(|e| panic!("port {port}: {e}"));
        assert!(
            answer.contains(&format!("id={slot} port={port} via=worker")),
            "port {port}: {answer}"
        );
    }
    let status = pool.status();
    let ports: Vec<u64> = status["workers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|w| w["port"].as_u64().unwrap())
        .collect();
    let base = u64::from(pool.base);
    assert_eq!(ports, [base, base + 1, base + 2]);
    let (code, table, err) = client(&["status", "--control", &pool.control]);
    assert_eq!(code, 0, "{err}");
    assert!(table.contains("SLOT  PORT"), "{table}");
    let (code, metrics, err) = client(&["metrics", "--control", &pool.control]);
    assert_eq!(code, 0, "{err}");
    assert!(
        metrics.contains(&format!(
            "drover_worker_port{{slot=\"2\"}} {}",
            pool.base + 2
        )),
        "{metrics}"
    );
}

#[test]
fn a_killed_workers_port_queues_connections_for_its_replacement() {
    let pool = Pool::python("pwp-kill", 2, &[]);
    pool.ready(2);
    let port = pool.base + 1;
    let first = ask(port).unwrap();
    let old = field(&first, "pid=").to_string();
    signal(old.parse().unwrap(), libc::SIGKILL);
    // At once, before the replacement can exist: the connection waits in the slot's
    // backlog, it is not refused.
    let answer = ask(port).unwrap_or_else(|e| panic!("port {port} during the restart: {e}"));
    assert!(answer.contains("id=1 "), "{answer}");
    assert_ne!(
        field(&answer, "pid="),
        old,
        "answered by the killed worker?"
    );
    pool.server.log.wait_for(&["in  spawned", "w=1.2"], T);
}

#[test]
fn scaling_opens_the_next_port_and_closes_the_highest_after_the_drain() {
    let pool = Pool::python("pwp-scale", 2, &[]);
    pool.ready(2);
    let third = pool.base + 2;
    assert_eq!(
        ask(third).unwrap_err().kind(),
        ErrorKind::ConnectionRefused,
        "slot 2 has no port yet"
    );
    pool.scale(3);
    pool.ready(3);
    let answer = ask(third).unwrap();
    assert!(answer.contains("id=2 "), "{answer}");
    pool.scale(2);
    pool.server.log.wait_for(
        &["slot 2 left the pool", &format!("127.0.0.1:{third} closed")],
        T,
    );
    assert_eq!(
        ask(third).unwrap_err().kind(),
        ErrorKind::ConnectionRefused,
        "the port of a slot that left the pool"
    );
    // The others serve on.
    assert!(ask(pool.base + 1).unwrap().contains("id=1 "));
}

#[test]
fn a_taken_port_at_start_is_exit_2_naming_the_flag_and_address() {
    let dir = TempDir::new("pwp-taken-start");
    std::fs::write(dir.path("ports.py"), PORTS_PY).unwrap();
    let base = free_ports(2);
    let _holder = TcpListener::bind(("127.0.0.1", base + 1)).unwrap();
    let per_worker = format!("127.0.0.1:{base}");
    let script = dir.path("ports.py");
    let args = [
        "run",
        "--workers",
        "2",
        "--listen-per-worker",
        &per_worker,
        "--",
        python(),
        &script,
    ];
    let (status, _, err) = run_bounded(DROVER, &args, T);
    assert_eq!(status.code(), Some(2), "{err}");
    assert!(
        err.contains("--listen-per-worker")
            && err.contains(&format!("127.0.0.1:{}", base + 1))
            && err.contains("already in use"),
        "{err}"
    );
}

#[test]
fn bad_values_are_exit_2_naming_the_flag() {
    let dir = TempDir::new("pwp-bad");
    for (value, part) in [
        ("unix:/tmp/x.sock", "unix socket has no port"),
        ("127.0.0.1:0", "port 0"),
        ("127.0.0.1:65535", "past 65535"),
    ] {
        let args = [
            "run",
            "--workers",
            "2",
            "--listen-per-worker",
            value,
            "--pid-file",
            &dir.path("pid"),
            "--",
            "/bin/true",
        ];
        let (status, _, err) = run_bounded(DROVER, &args, T);
        assert_eq!(status.code(), Some(2), "{value}: {err}");
        assert!(
            err.contains("--listen-per-worker") && err.contains(part),
            "{value}: {err}"
        );
    }
    let config = dir.path("surge.toml");
    std::fs::write(&config, "max_surge = 1\n").unwrap();
    let args = [
        "run",
        "--config",
        &config,
        "--listen-per-worker",
        "127.0.0.1:3000",
        "--",
        "/bin/true",
    ];
    let (status, _, err) = run_bounded(DROVER, &args, T);
    assert_eq!(status.code(), Some(2), "{err}");
    assert!(
        err.contains("max_surge") && err.contains("--listen-per-worker"),
        "{err}"
    );
}

#[test]
fn a_taken_port_when_scaling_leaves_that_slot_empty_until_it_frees() {
    let pool = Pool::python("pwp-taken-scale", 1, &[]);
    pool.ready(1);
    let taken = pool.base + 1;
    let holder = TcpListener::bind(("127.0.0.1", taken)).unwrap();
    pool.scale(2);
    pool.server.log.wait_for(
        &[
            "--listen-per-worker",
            &format!("slot 1's address 127.0.0.1:{taken}"),
            "already in use",
        ],
        T,
    );
    pool.server
        .log
        .wait_for(&["address-failed", "slot=1", "errno=98"], T);
    let status = pool.status();
    let slot1 = &status["workers"][1];
    assert_eq!(slot1["state"], "backoff", "{status}");
    assert_eq!(slot1["port"].as_u64(), Some(u64::from(taken)), "{status}");
    assert!(
        slot1["port_error"]
            .as_str()
            .is_some_and(|e| e.contains("already in use")),
        "{status}"
    );
    assert_eq!(status["crash_looping"], false);
    assert!(
        ask(pool.base).unwrap().contains("id=0 "),
        "slot 0 serves on"
    );
    drop(holder);
    // Retried with a backoff (1 s, then doubling): the slot fills once the port is free.
    let deadline = Instant::now() + Duration::from_secs(20);
    let answer = loop {
        if let Ok(answer) = ask(taken) {
            break answer;
        }
        assert!(Instant::now() < deadline, "{}", pool.server.log.dump());
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(answer.contains("id=1 "), "{answer}");
}

#[test]
fn the_embedded_runtime_serves_each_slot_on_its_port() {
    let dir = TempDir::new("pwp-hello");
    let base = free_ports(2);
    let control = dir.path("ctl");
    let per_worker = format!("127.0.0.1:{base}");
    let args = [
        "--workers",
        "2",
        "--listen-per-worker",
        &per_worker,
        "--control",
        &control,
    ];
    let server = Server::start(dir, hello_bin(), &args);
    for slot in 0..2u16 {
        let addr: SocketAddr = ([127, 0, 0, 1], base + slot).into();
        let deadline = Instant::now() + T;
        let answer = loop {
            let got = TcpStream::connect_timeout(&addr, T).and_then(|mut s| {
                s.set_read_timeout(Some(T))?;
                s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")?;
                let mut answer = String::new();
                s.read_to_string(&mut answer)?;
                Ok(answer)
            });
            match got {
                Ok(answer) => break answer,
                Err(_) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(50))
                }
                Err(e) => panic!("port {}: {e}\n{}", base + slot, server.log.dump()),
            }
        };
        assert!(
            answer.contains(&format!("X-Drover-Worker: slot={slot} ")),
            "port {}: {answer}",
            base + slot
        );
    }
}

#[test]
fn a_rolling_restart_replaces_each_worker_on_its_port_refusing_nobody() {
    let pool = Pool::python("pwp-rolling", 2, &[]);
    pool.ready(2);
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let clients: Vec<_> = (0..2u16)
        .map(|slot| {
            let (stop, port) = (stop.clone(), pool.base + slot);
            std::thread::spawn(move || {
                let (mut served, mut failed) = (0u32, Vec::new());
                // Bounded by the test's deadline below, which sets `stop`.
                while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                    match ask(port) {
                        Ok(a) if a.contains(&format!("id={slot} ")) => served += 1,
                        Ok(a) => failed.push(a),
                        Err(e) => failed.push(e.to_string()),
                    }
                }
                (served, failed)
            })
        })
        .collect();
    let (code, _, err) = client(&["restart", "--control", &pool.control]);
    assert_eq!(code, 0, "{err}");
    wait_until("generation 2 ready on both slots", T, || {
        let s = pool.status();
        s["workers"].as_array().is_some_and(|w| {
            w.len() == 2
                && w.iter()
                    .all(|w| w["generation"] == 2 && w["state"] == "idle")
        })
    });
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    for (slot, c) in clients.into_iter().enumerate() {
        let (served, failed) = c.join().unwrap();
        assert!(served > 0, "slot {slot} never answered");
        assert!(failed.is_empty(), "slot {slot}: {failed:?}");
    }
    let log = &pool.server.log;
    assert_eq!(log.count(&["do  spawn", "gen=2"]), 2, "{}", log.dump());
    assert_eq!(
        log.count(&["do  spawn", "w=2."]),
        0,
        "a replacement took a slot above the target"
    );
}

#[test]
fn a_live_upgrade_hands_the_ports_over_refusing_nobody() {
    let mut pool = Pool::python("pwp-upgrade", 2, &[]);
    pool.ready(2);
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let clients: Vec<_> = (0..2u16)
        .map(|slot| {
            let (stop, port) = (stop.clone(), pool.base + slot);
            std::thread::spawn(move || {
                let (mut served, mut failed) = (0u32, Vec::new());
                // Bounded by the test's deadline below, which sets `stop`.
                while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                    match ask(port) {
                        Ok(a) if a.contains(&format!("id={slot} ")) => served += 1,
                        Ok(a) => failed.push(a),
                        Err(e) => failed.push(e.to_string()),
                    }
                }
                (served, failed)
            })
        })
        .collect();
    let first = pool.server.pid();
    let (code, _, err) = client(&["upgrade", "--control", &pool.control]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(
        pool.server.wait_exit(Duration::from_secs(30)).code(),
        Some(0),
        "{}",
        pool.server.log.dump()
    );
    let status = pool.status();
    let successor = status["pid"].as_u64().unwrap();
    assert_ne!(successor, u64::from(first));
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    for (slot, c) in clients.into_iter().enumerate() {
        let (served, failed) = c.join().unwrap();
        assert!(served > 0, "slot {slot} never answered");
        assert!(failed.is_empty(), "slot {slot}: {failed:?}");
    }
    let ports: Vec<u64> = status["workers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|w| w["port"].as_u64().unwrap())
        .collect();
    let base = u64::from(pool.base);
    assert_eq!(ports, [base, base + 1]);
    for slot in 0..2u16 {
        let answer = ask(pool.base + slot).unwrap();
        let pid: u32 = field(&answer, "pid=").parse().unwrap();
        assert!(
            status["workers"][usize::from(slot)]["pid"].as_u64() == Some(u64::from(pid)),
            "slot {slot} served by {pid}, not the successor's worker: {status}"
        );
    }
    let (code, _, err) = client(&["stop", "--control", &pool.control]);
    assert_eq!(code, 0, "{err}");
    wait_until("the successor exits", T, || !alive(successor as u32));
}

#[test]
fn supervise_with_per_worker_ports_is_refused() {
    let args = [
        "run",
        "--supervise",
        "--listen-per-worker",
        "127.0.0.1:3000",
        "--",
        "/bin/true",
    ];
    let (status, _, err) = run_bounded(DROVER, &args, T);
    assert_eq!(status.code(), Some(2), "{err}");
    assert!(
        err.contains("--listen-per-worker") && err.contains("--supervise"),
        "{err}"
    );
}

#[test]
fn a_reload_that_changes_the_ports_is_refused_and_the_pool_serves_on() {
    let dir = TempDir::new("pwp-reload");
    std::fs::write(dir.path("ports.py"), PORTS_PY).unwrap();
    let base = free_ports(4);
    let config = dir.path("drover.toml");
    let control = dir.path("ctl");
    let script = dir.path("ports.py");
    let write = |port: u16| {
        let text = format!(
            "workers = 2\nreadiness = \"notify\"\nlisten_per_worker = \"127.0.0.1:{port}\"\ncommand = [\"{}\", \"{script}\"]\n",
            python(),
        );
        std::fs::write(&config, text).unwrap();
    };
    write(base);
    let server = Server::start(
        dir,
        DROVER,
        &["run", "--config", &config, "--control", &control],
    );
    let pool = Pool {
        server,
        control,
        base,
    };
    pool.ready(2);
    write(base + 2);
    let (code, _, err) = client(&["reload", "--control", &pool.control]);
    assert_ne!(code, 0, "the reload was accepted");
    assert!(
        err.contains("listen_per_worker") && err.contains("restarts"),
        "{err}"
    );
    assert!(
        ask(base + 1).unwrap().contains("id=1 "),
        "the pool serves on"
    );
}

/// Whether a connection from `from` to 127.0.0.1:`port` is answered within `wait` (a
/// source outside `--allow` sees its SYN dropped: no answer at all).
fn answered_from(from: [u8; 4], port: u16, wait: Duration) -> bool {
    use nix::sys::socket::{
        bind, connect, getsockopt, socket, sockopt, AddressFamily, SockFlag, SockType, SockaddrIn,
    };
    use std::os::fd::{AsFd, AsRawFd};
    let fd = socket(
        AddressFamily::Inet,
        SockType::Stream,
        SockFlag::SOCK_CLOEXEC | SockFlag::SOCK_NONBLOCK,
        None,
    )
    .unwrap();
    let source = std::net::SocketAddrV4::new(from.into(), 0);
    bind(fd.as_raw_fd(), &SockaddrIn::from(source)).unwrap();
    let to = std::net::SocketAddrV4::new([127, 0, 0, 1].into(), port);
    match connect(fd.as_raw_fd(), &SockaddrIn::from(to)) {
        Ok(()) | Err(nix::errno::Errno::EINPROGRESS) => {}
        Err(e) => panic!("connect: {e}"),
    }
    let mut pfd = [nix::poll::PollFd::new(
        fd.as_fd(),
        nix::poll::PollFlags::POLLOUT,
    )];
    let timeout = nix::poll::PollTimeout::try_from(wait).unwrap();
    nix::poll::poll(&mut pfd, timeout).unwrap() > 0
        && getsockopt(&fd, sockopt::SocketError).unwrap() == 0
}

#[test]
fn the_allow_list_filters_the_per_worker_ports_too() {
    let pool = Pool::python("pwp-allow", 1, &["--allow", "127.0.0.2/32"]);
    pool.ready(1);
    assert!(
        answered_from([127, 0, 0, 2], pool.base, T),
        "a listed source"
    );
    assert!(
        !answered_from([127, 0, 0, 3], pool.base, Duration::from_millis(1500)),
        "a source outside --allow was answered"
    );
}
