//! End-to-end tests of `--allow`: real drover processes on loopback, clients bound to a
//! chosen source address (127.0.0.2 allowed, 127.0.0.3 not; the whole 127/8 is local on
//! Linux), for a python command worker that accepts on its own and for the embedded `hello`
//! runtime. A client outside the list sees its SYN dropped: its connect neither succeeds nor
//! is refused, it is still in progress when the test stops waiting.

pub mod common;

use common::*;
use nix::sys::socket::{
    bind, connect, getsockopt, socket, sockopt, AddressFamily, SockFlag, SockType, SockaddrIn,
    SockaddrIn6,
};
use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr, TcpStream};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::time::Duration;

/// How long a client outside the list waits for its SYN to be answered: far beyond a
/// loopback round trip, well below the kernel's first SYN retransmission's answer.
const DROPPED_WAIT: Duration = Duration::from_millis(1500);

#[derive(Debug, PartialEq)]
enum Outcome {
    /// Connected and answered; the answer.
    Served(String),
    /// No answer to the SYN within `DROPPED_WAIT` (what a filtered client sees).
    NoAnswer,
    /// Anything else (refused, reset, an error): a bug for these tests.
    Failed(String),
}

/// Connects from `from` to `to`, sends `request` and reads the answer to EOF.
fn attempt(from: IpAddr, to: SocketAddr, request: &str) -> Outcome {
    let family = if from.is_ipv4() {
        AddressFamily::Inet
    } else {
        AddressFamily::Inet6
    };
    let fd: OwnedFd = socket(
        family,
        SockType::Stream,
        SockFlag::SOCK_CLOEXEC | SockFlag::SOCK_NONBLOCK,
        None,
    )
    .unwrap();
    let bound = match SocketAddr::new(from, 0) {
        SocketAddr::V4(a) => bind(fd.as_raw_fd(), &SockaddrIn::from(a)),
        SocketAddr::V6(a) => bind(fd.as_raw_fd(), &SockaddrIn6::from(a)),
    };
    bound.unwrap_or_else(|e| panic!("bind the client to {from}: {e}"));
    let started = match to {
        SocketAddr::V4(a) => connect(fd.as_raw_fd(), &SockaddrIn::from(a)),
        SocketAddr::V6(a) => connect(fd.as_raw_fd(), &SockaddrIn6::from(a)),
    };
    match started {
        Ok(()) | Err(nix::errno::Errno::EINPROGRESS) => {}
        Err(e) => return Outcome::Failed(format!("connect: {e}")),
    }
    let mut pfd = [nix::poll::PollFd::new(
        fd.as_fd(),
        nix::poll::PollFlags::POLLOUT,
    )];
    let timeout = nix::poll::PollTimeout::try_from(DROPPED_WAIT).unwrap();
    match nix::poll::poll(&mut pfd, timeout) {
        Ok(0) => return Outcome::NoAnswer,
        Ok(_) => {}
        Err(e) => return Outcome::Failed(format!("poll: {e}")),
    }
    let err = getsockopt(&fd, sockopt::SocketError).unwrap();
    if err != 0 {
        return Outcome::Failed(std::io::Error::from_raw_os_error(err).to_string());
    }
    let mut stream = TcpStream::from(fd);
    stream.set_nonblocking(false).unwrap();
    stream.set_read_timeout(Some(T)).unwrap();
    stream.set_write_timeout(Some(T)).unwrap();
    if let Err(e) = stream.write_all(request.as_bytes()) {
        return Outcome::Failed(format!("write: {e}"));
    }
    let mut answer = String::new();
    match stream.read_to_string(&mut answer) {
        Ok(_) if !answer.is_empty() => Outcome::Served(answer),
        Ok(_) => Outcome::Failed("empty answer".into()),
        Err(e) => Outcome::Failed(format!("read: {e}")),
    }
}

fn ip(text: &str) -> IpAddr {
    text.parse().unwrap()
}

/// The address of the first listener, from the `listening on` line.
fn listening_on(server: &Server, prefix: &str) -> SocketAddr {
    let line = server.log.wait_for(&["listening on ", prefix], T);
    let at = line.find("listening on ").unwrap() + "listening on ".len();
    line[at..]
        .split_whitespace()
        .next()
        .unwrap()
        .parse()
        .unwrap()
}

fn python_pool(name: &str, flags: &[&str]) -> Server {
    let dir = test_dir(name);
    let worker = dir.path("worker.py");
    let mut args = vec!["run"];
    args.extend_from_slice(flags);
    args.extend(["--", python(), &worker]);
    Server::start(dir, DROVER, &args)
}

fn served_by_python(outcome: &Outcome) -> bool {
    matches!(outcome, Outcome::Served(a) if a.starts_with("pid="))
}

#[test]
fn a_command_worker_serves_listed_sources_only() {
    let d = python_pool(
        "allow-python",
        &["--listen", "127.0.0.1:0", "--allow", "127.0.0.2/32"],
    );
    let to = listening_on(&d, "127.0.0.1:");
    d.log
        .wait_for(&["--allow: TCP listeners drop", "outside 127.0.0.2/32"], T);
    let first = attempt(ip("127.0.0.2"), to, "hi\n");
    assert!(served_by_python(&first), "{first:?}\n{}", d.log.dump());
    assert_eq!(attempt(ip("127.0.0.3"), to, "hi\n"), Outcome::NoAnswer);
    assert_eq!(attempt(ip("127.0.0.1"), to, "hi\n"), Outcome::NoAnswer);
    // The worker is still there and serving the listed source.
    let again = attempt(ip("127.0.0.2"), to, "hi\n");
    assert!(served_by_python(&again), "{again:?}");
}

#[test]
fn the_embedded_runtime_serves_listed_sources_only() {
    let dir = TempDir::new("allow-hello");
    let control = dir.path("ctl");
    let d = Server::start(
        dir,
        hello_bin(),
        &[
            "--listen",
            "127.0.0.1:0",
            "--control",
            &control,
            "--allow",
            "10.0.0.0/8",
            "--allow",
            "127.0.0.2",
        ],
    );
    let to = listening_on(&d, "127.0.0.1:");
    let get = "GET / HTTP/1.0\r\n\r\n";
    let ok = attempt(ip("127.0.0.2"), to, get);
    assert!(
        matches!(&ok, Outcome::Served(a) if a.starts_with("HTTP/1.") && a.ends_with("Hello, world!\n")),
        "{ok:?}\n{}",
        d.log.dump()
    );
    assert_eq!(attempt(ip("127.0.0.3"), to, get), Outcome::NoAnswer);
}

#[test]
fn ipv6_clients_are_served_per_the_list() {
    if std::net::TcpListener::bind("[::1]:0").is_err() {
        eprintln!("no IPv6 loopback here; skipped");
        return;
    }
    let listed = python_pool(
        "allow-v6-listed",
        &["--listen", "[::1]:0", "--allow", "::1/128"],
    );
    let to = listening_on(&listed, "[::1]:");
    let served = attempt(ip("::1"), to, "hi\n");
    assert!(
        served_by_python(&served),
        "{served:?}\n{}",
        listed.log.dump()
    );

    let v4_only = python_pool(
        "allow-v6-unlisted",
        &["--listen", "[::1]:0", "--allow", "127.0.0.0/8"],
    );
    let to = listening_on(&v4_only, "[::1]:");
    assert_eq!(attempt(ip("::1"), to, "hi\n"), Outcome::NoAnswer);
}

#[test]
fn a_reload_puts_the_new_list_on_the_running_socket() {
    let dir = test_dir("allow-reload");
    let config = dir.path("drover.toml");
    std::fs::write(&config, "allow = [\"127.0.0.2/32\"]\n").unwrap();
    let worker = dir.path("worker.py");
    let d = Server::start(
        dir,
        DROVER,
        &[
            "run",
            "--listen",
            "127.0.0.1:0",
            "--config",
            &config,
            "--",
            python(),
            &worker,
        ],
    );
    let to = listening_on(&d, "127.0.0.1:");
    assert!(served_by_python(&attempt(ip("127.0.0.2"), to, "hi\n")));
    assert_eq!(attempt(ip("127.0.0.3"), to, "hi\n"), Outcome::NoAnswer);

    std::fs::write(&config, "allow = [\"127.0.0.3/32\"]\n").unwrap();
    d.signal(libc::SIGHUP);
    d.log.wait_for(&["ev  reloaded"], T);
    // Same socket (the same port), new filter.
    assert!(served_by_python(&attempt(ip("127.0.0.3"), to, "hi\n")));
    assert_eq!(attempt(ip("127.0.0.2"), to, "hi\n"), Outcome::NoAnswer);

    // No list at all: everyone is served again.
    std::fs::write(&config, "").unwrap();
    d.signal(libc::SIGHUP);
    d.log.wait_for_n(&["ev  reloaded"], 2, T);
    d.log.wait_for(&["--allow: no list any more"], T);
    assert!(served_by_python(&attempt(ip("127.0.0.2"), to, "hi\n")));
    assert!(served_by_python(&attempt(ip("127.0.0.4"), to, "hi\n")));
}

#[test]
fn bad_lists_exit_2_naming_the_value_or_the_flag() {
    let dir = test_dir("allow-errors");
    let worker = dir.path("worker.py");
    let sock = format!("unix:{}", dir.path("s.sock"));
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (vec!["--allow", "10.0.0.0/33"], "'10.0.0.0/33'"),
        (vec!["--allow", "10.0.0.1/8"], "'10.0.0.1/8'"),
        (vec!["--allow", "not-an-address"], "'not-an-address'"),
        (vec!["--allow", "fd00::/129"], "'fd00::/129'"),
        (
            vec!["--allow", "10.0.0.0/8", "--listen", &sock],
            "--allow (config key `allow`)",
        ),
    ];
    for (flags, needle) in cases {
        let mut args = vec!["run", "--listen", "127.0.0.1:0"];
        args.extend(flags);
        args.extend(["--", python(), &worker]);
        let (status, _, stderr) = run_bounded(DROVER, &args, T);
        assert_eq!(status.code(), Some(2), "{args:?}: {stderr}");
        assert!(
            stderr.contains(needle),
            "{args:?}: expected {needle:?} in: {stderr}"
        );
    }
    assert_no_survivors(dir.root(), "");
}

/// A live upgrade's successor adopts the sockets and puts its own list on them: the config
/// file changed before USR2, so the successor's list is the new one.
#[test]
fn a_live_upgrade_successor_puts_its_list_on_the_adopted_socket() {
    let dir = test_dir("allow-upgrade");
    // The binary in the test directory names the successor as a process of the test.
    let binary = dir.path("drover");
    std::fs::copy(DROVER, &binary).unwrap();
    let (config, pid_file, ctl) = (dir.path("drover.toml"), dir.path("pid"), dir.path("ctl"));
    std::fs::write(&config, "allow = [\"127.0.0.2/32\"]\n").unwrap();
    let worker = dir.path("worker.py");
    let mut d = Server::start(
        dir,
        &binary,
        &[
            "run",
            "--listen",
            "127.0.0.1:0",
            "--config",
            &config,
            "--readiness",
            "notify",
            "--pid-file",
            &pid_file,
            "--control",
            &ctl,
            "--",
            python(),
            &worker,
        ],
    );
    let to = listening_on(&d, "127.0.0.1:");
    let first = attempt(ip("127.0.0.2"), to, "hi\n");
    assert!(served_by_python(&first), "{first:?}\n{}", d.log.dump());

    std::fs::write(&config, "allow = [\"127.0.0.3/32\"]\n").unwrap();
    d.signal(libc::SIGUSR2);
    // The predecessor exits once its successor's pool is ready on the same socket.
    assert_eq!(d.wait_exit(T).code(), Some(0), "{}", d.log.dump());
    let successor: u32 = std::fs::read_to_string(&pid_file)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert_ne!(successor, d.pid());
    let served = attempt(ip("127.0.0.3"), to, "hi\n");
    assert!(served_by_python(&served), "{served:?}\n{}", d.log.dump());
    assert_eq!(attempt(ip("127.0.0.2"), to, "hi\n"), Outcome::NoAnswer);

    let (code, _, err) = run_bounded(DROVER, &["stop", "--control", &ctl], T);
    assert!(code.success(), "{err}");
    wait_until("the successor exits", T, || !alive(successor));
    assert_no_survivors(d.dir.root(), &d.log.dump());
}
