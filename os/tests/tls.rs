//! End-to-end tests of TLS in the embedded runtime (`--tls-cert` and friends) through the
//! `hello` example, with real clients: curl and Python's ssl module. Certificates are made
//! at test time with rcgen. Everything listens on 127.0.0.1, every wait has a deadline,
//! every process is killed on drop.

pub mod common;

use common::*;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::Command;
use std::time::{Duration, Instant};

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, IsCa, Issuer, KeyPair,
};

// ------------------------------------------------------------------ certificates

/// A self-signed server certificate for `localhost` written to `{name}.pem` and
/// `{name}.key` in `dir`: the two paths.
fn server_pair(dir: &TempDir, name: &str) -> (String, String) {
    let made = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
    let (cert, key) = (
        dir.path(&format!("{name}.pem")),
        dir.path(&format!("{name}.key")),
    );
    std::fs::write(&cert, made.cert.pem()).unwrap();
    std::fs::write(&key, made.signing_key.serialize_pem()).unwrap();
    (cert, key)
}

/// A CA (`ca.pem`) and a client certificate it signed for `CN=alice,O=Example`
/// (`alice.pem`, `alice.key`): the three paths.
fn client_ca_and_alice(dir: &TempDir) -> (String, String, String) {
    let ca_key = KeyPair::generate().unwrap();
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, "drover test CA");
    ca_params.distinguished_name = dn;
    let ca_cert = ca_params.self_signed(&ca_key).unwrap();
    let issuer = Issuer::new(ca_params, ca_key);

    let alice_key = KeyPair::generate().unwrap();
    let mut params = CertificateParams::new(vec!["alice".into()]).unwrap();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::OrganizationName, "Example");
    dn.push(DnType::CommonName, "alice");
    params.distinguished_name = dn;
    let alice = params.signed_by(&alice_key, &issuer).unwrap();

    let paths = (
        dir.path("ca.pem"),
        dir.path("alice.pem"),
        dir.path("alice.key"),
    );
    std::fs::write(&paths.0, ca_cert.pem()).unwrap();
    std::fs::write(&paths.1, alice.pem()).unwrap();
    std::fs::write(&paths.2, alice_key.serialize_pem()).unwrap();
    paths
}

// ------------------------------------------------------------------ clients

/// curl, bounded: (exit code, body, stderr). `--resolve` lets the certificate's
/// `localhost` name match the 127.0.0.1 listener.
fn curl(port: u16, path: &str, extra: &[&str]) -> (i32, String, String) {
    let url = format!("https://localhost:{port}{path}");
    let resolve = format!("localhost:{port}:127.0.0.1");
    let mut args = vec!["-sS", "--max-time", "5", "--resolve", &resolve];
    args.extend_from_slice(extra);
    args.push(&url);
    let (status, out, err) = run_bounded("curl", &args, Duration::from_secs(15));
    (status.code().unwrap_or(-1), out, err)
}

/// Python's ssl module as the client. `fingerprint PORT`: the SHA-256 of the certificate
/// the server presents (no verification). `keepalive PORT CAFILE N PAUSE`: N requests for
/// `/tls` on one connection, PAUSE seconds apart, each answer's status line, worker and
/// body on a line, then the protocol version. `pem FILE`: the SHA-256 of a PEM
/// certificate's DER.
const CLIENT_PY: &str = r#"
import hashlib, socket, ssl, sys, time

def connect(port, cafile):
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    if cafile:
        ctx.load_verify_locations(cafile)
    else:
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    ctx.set_alpn_protocols(["http/1.1"])
    raw = socket.create_connection(("127.0.0.1", port), timeout=5)
    return ctx.wrap_socket(raw, server_hostname="localhost")

def answer(s, buf):
    while b"\r\n\r\n" not in buf:
        chunk = s.recv(4096)
        if not chunk:
            raise SystemExit("closed before an answer")
        buf += chunk
    head, rest = buf.split(b"\r\n\r\n", 1)
    lines = head.decode().split("\r\n")
    length = 0
    worker = ""
    for l in lines[1:]:
        k, v = l.split(":", 1)
        if k.lower() == "content-length":
            length = int(v)
        if k.lower() == "x-drover-worker":
            worker = v.strip()
    while len(rest) < length:
        chunk = s.recv(4096)
        if not chunk:
            raise SystemExit("closed in a body")
        rest += chunk
    return lines[0], worker, rest[:length].decode().strip(), rest[length:]

mode = sys.argv[1]
if mode == "pem":
    der = ssl.PEM_cert_to_DER_cert(open(sys.argv[2]).read())
    print(hashlib.sha256(der).hexdigest())
elif mode == "fingerprint":
    s = connect(int(sys.argv[2]), None)
    print(hashlib.sha256(s.getpeercert(binary_form=True)).hexdigest())
elif mode == "keepalive":
    s = connect(int(sys.argv[2]), sys.argv[3])
    buf = b""
    for i in range(int(sys.argv[4])):
        s.sendall(b"GET /tls HTTP/1.1\r\nHost: localhost\r\n\r\n")
        status, worker, body, buf = answer(s, buf)
        print(status + " | " + worker + " | " + body, flush=True)
        time.sleep(float(sys.argv[5]))
    print("version " + s.version() + " alpn " + str(s.selected_alpn_protocol()))
"#;

fn py(dir: &TempDir, args: &[&str]) -> (i32, String, String) {
    let script = dir.path("client.py");
    if !std::path::Path::new(&script).exists() {
        std::fs::write(&script, CLIENT_PY).unwrap();
    }
    let mut all = vec![script.as_str()];
    all.extend_from_slice(args);
    let (status, out, err) = run_bounded(python(), &all, Duration::from_secs(20));
    (status.code().unwrap_or(-1), out, err)
}

fn need_curl() {
    let found = Command::new("curl").arg("--version").output().is_ok();
    assert!(
        found,
        "curl is needed for the TLS tests (.ci/run installs it)"
    );
}

// ------------------------------------------------------------------ the server

/// `hello` with `args` after `--listen 127.0.0.1:0 --control {dir}/ctl --log-level debug`,
/// in `dir`; waits until its worker is ready. The server and its port.
fn hello(dir: TempDir, args: &[&str]) -> (Server, u16) {
    let control = dir.path("ctl");
    let mut all = vec![
        "--listen",
        "127.0.0.1:0",
        "--control",
        &control,
        "--log-level",
        "debug",
    ];
    all.extend_from_slice(args);
    let server = Server::start(dir, hello_bin(), &all);
    let port = server.port();
    server.ready_worker("0.1");
    (server, port)
}

// ------------------------------------------------------------------ tests

#[test]
fn https_is_served_and_a_keep_alive_connection_keeps_its_session_while_parked() {
    need_curl();
    let dir = TempDir::new("tls-serve");
    let (cert, key) = server_pair(&dir, "server");
    let (d, port) = hello(
        dir,
        &["--threads", "1", "--tls-cert", &cert, "--tls-key", &key],
    );

    let (code, body, err) = curl(port, "/tls", &["--cacert", &cert]);
    assert_eq!(code, 0, "{err}\n{}", d.log.dump());
    assert_eq!(body, "protocol=TLSv1.3 alpn=http/1.1 subject=-");
    let (code, body, err) = curl(port, "/tls", &["--cacert", &cert, "--tls-max", "1.2"]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(body, "protocol=TLSv1.2 alpn=http/1.1 subject=-");

    // Pauses of 200 ms, far above the 10 ms linger: the connection is parked between the
    // requests, and each one is read through the same session.
    let (code, out, err) = py(&d.dir, &["keepalive", &port.to_string(), &cert, "5", "0.2"]);
    assert_eq!(code, 0, "{err}\n{}", d.log.dump());
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 6, "{out}");
    let worker = lines[0].split(" | ").nth(1).unwrap();
    for line in &lines[..5] {
        assert!(line.starts_with("HTTP/1.1 200 OK | "), "{out}");
        assert!(
            line.ends_with("| protocol=TLSv1.3 alpn=http/1.1 subject=-"),
            "{out}"
        );
        assert_eq!(line.split(" | ").nth(1).unwrap(), worker, "{out}");
    }
    assert_eq!(lines[5], "version TLSv1.3 alpn http/1.1");

    // Plain HTTP on the TLS port: the handshake fails, logged at debug with the peer; the
    // worker goes on serving.
    let plain = request(port, "GET / HTTP/1.0\r\n", Duration::from_secs(5));
    assert!(!plain.is_ok_and(|a| a.contains("Hello")));
    d.log
        .wait_for(&["TLS handshake with 127.0.0.1:", "failed"], T);
    let (code, body, err) = curl(port, "/", &["--cacert", &cert]);
    assert_eq!((code, body.as_str()), (0, "Hello, world!"), "{err}");
    assert_eq!(d.log.count(&["in  exited"]), 0, "{}", d.log.dump());
}

#[test]
fn the_per_worker_ports_serve_tls_as_the_shared_listener_does() {
    // A bare --tls-cert covers every TCP listener, and each slot's own socket
    // (--listen-per-worker) is one: slot i answers over TLS on base+i.
    need_curl();
    let dir = TempDir::new("tls-pwp");
    let (cert, key) = server_pair(&dir, "server");
    let base = free_ports(2);
    let per_worker = format!("127.0.0.1:{base}");
    let (d, port) = hello(
        dir,
        &[
            "--workers",
            "2",
            "--listen-per-worker",
            &per_worker,
            "--tls-cert",
            &cert,
            "--tls-key",
            &key,
        ],
    );
    let (code, body, err) = curl(port, "/tls", &["--cacert", &cert]);
    assert_eq!(code, 0, "{err}\n{}", d.log.dump());
    assert_eq!(body, "protocol=TLSv1.3 alpn=http/1.1 subject=-");
    // Slot 1 may still be starting: its port is bound, so curl waits in its backlog.
    for slot in 0..2u16 {
        let (code, answer, err) = curl(base + slot, "/tls", &["--cacert", &cert, "-i"]);
        assert_eq!(code, 0, "slot {slot}: {err}\n{}", d.log.dump());
        assert!(
            answer.contains(&format!("X-Drover-Worker: slot={slot} ")),
            "port {}: {answer}",
            base + slot
        );
        assert!(
            answer.ends_with("protocol=TLSv1.3 alpn=http/1.1 subject=-"),
            "{answer}"
        );
    }
}

#[test]
fn client_certificates_are_verified_and_their_subject_reported() {
    need_curl();
    let dir = TempDir::new("tls-client");
    let (cert, key) = server_pair(&dir, "server");
    let (ca, alice, alice_key) = client_ca_and_alice(&dir);
    let (d, port) = hello(
        dir,
        &[
            "--tls-cert",
            &cert,
            "--tls-key",
            &key,
            "--tls-client-ca",
            &ca,
        ],
    );
    let (code, _, err) = curl(port, "/tls", &["--cacert", &cert]);
    assert_ne!(code, 0, "served without a client certificate: {err}");
    d.log
        .wait_for(&["TLS handshake with 127.0.0.1:", "failed"], T);
    let (code, body, err) = curl(
        port,
        "/tls",
        &["--cacert", &cert, "--cert", &alice, "--key", &alice_key],
    );
    assert_eq!(code, 0, "{err}\n{}", d.log.dump());
    assert_eq!(
        body,
        "protocol=TLSv1.3 alpn=http/1.1 subject=CN=alice,O=Example"
    );
    // A certificate from another CA is refused too.
    let (stranger, stranger_key) = server_pair(&d.dir, "stranger");
    let (code, _, _) = curl(
        port,
        "/tls",
        &[
            "--cacert",
            &cert,
            "--cert",
            &stranger,
            "--key",
            &stranger_key,
        ],
    );
    assert_ne!(code, 0);
    drop(d);

    // optional: a client without a certificate is served, one with it is named.
    let dir = TempDir::new("tls-client-optional");
    let (cert, key) = server_pair(&dir, "server");
    let (ca, alice, alice_key) = client_ca_and_alice(&dir);
    let (d, port) = hello(
        dir,
        &[
            "--tls-cert",
            &cert,
            "--tls-key",
            &key,
            "--tls-client-ca",
            &ca,
            "--tls-client-auth",
            "optional",
        ],
    );
    let (code, body, err) = curl(port, "/tls", &["--cacert", &cert]);
    assert_eq!(
        (code, body.as_str()),
        (0, "protocol=TLSv1.3 alpn=http/1.1 subject=-"),
        "{err}"
    );
    let (code, body, err) = curl(
        port,
        "/tls",
        &["--cacert", &cert, "--cert", &alice, "--key", &alice_key],
    );
    assert_eq!(code, 0, "{err}\n{}", d.log.dump());
    assert!(body.contains("subject=CN=alice,O=Example"), "{body}");
}

/// Reads until end-of-file or `limit`: whether the server closed the connection in time.
fn closed_within(s: &mut TcpStream, limit: Duration) -> bool {
    let deadline = Instant::now() + limit;
    let mut buf = [0u8; 4096];
    while Instant::now() < deadline {
        s.set_read_timeout(Some(Duration::from_millis(200)))
            .unwrap();
        match s.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => {}
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(_) => return true, // reset
        }
    }
    false
}

#[test]
fn a_stalled_handshake_neither_holds_a_one_thread_worker_nor_outlives_its_timeout() {
    need_curl();
    let dir = TempDir::new("tls-stall");
    let (cert, key) = server_pair(&dir, "server");
    let (d, port) = hello(
        dir,
        &[
            "--threads",
            "1",
            "--tls-cert",
            &cert,
            "--tls-key",
            &key,
            "--tls-handshake-timeout",
            "3",
        ],
    );
    let addr = ([127, 0, 0, 1], port).into();
    // Half a ClientHello: a record header announcing 512 bytes, and 10 of them.
    let mut half = TcpStream::connect_timeout(&addr, T).unwrap();
    half.write_all(&[
        0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00, 0x01, 0xfc, 0x03, 0x03, 0, 0, 0, 0,
    ])
    .unwrap();
    // And one that sends nothing at all.
    let mut silent = TcpStream::connect_timeout(&addr, T).unwrap();
    // The one thread serves others meanwhile, several times over.
    for _ in 0..3 {
        let (code, body, err) = curl(port, "/", &["--cacert", &cert]);
        assert_eq!(
            (code, body.as_str()),
            (0, "Hello, world!"),
            "{err}\n{}",
            d.log.dump()
        );
    }
    // ... while the half handshake is still pending: nothing waited for its timeout.
    half.set_nonblocking(true).unwrap();
    let pending = half.read(&mut [0u8; 16]);
    assert!(
        pending.is_err_and(|e| e.kind() == std::io::ErrorKind::WouldBlock),
        "the stalled handshake was closed before the others were served: {}",
        d.log.dump()
    );
    half.set_nonblocking(false).unwrap();
    // Then it is closed, after its 3 s; the silent one once the kernel hands it over
    // (listeners defer the accept of a silent client by a second or more) and its 3 s
    // have passed.
    assert!(
        closed_within(&mut half, Duration::from_secs(15)),
        "{}",
        d.log.dump()
    );
    d.log
        .wait_for(&["TLS handshake with 127.0.0.1:", "timed out"], T);
    assert!(
        closed_within(&mut silent, Duration::from_secs(15)),
        "{}",
        d.log.dump()
    );
    assert_eq!(d.log.count(&["in  exited"]), 0, "{}", d.log.dump());
}

#[test]
fn bad_files_and_misplaced_flags_exit_2_naming_the_flag() {
    let dir = TempDir::new("tls-bad");
    let (cert, key) = server_pair(&dir, "server");
    let (_, other_key) = server_pair(&dir, "other");
    let missing = dir.path("missing.pem");
    let garbage = dir.path("garbage.pem");
    std::fs::write(&garbage, "not a certificate\n").unwrap();
    let sock = format!("unix:{}", dir.path("s.sock"));
    let cases: Vec<(Vec<&str>, Vec<&str>)> = vec![
        (
            vec!["--tls-cert", &missing, "--tls-key", &key],
            vec!["--tls-cert", &missing, "cannot read"],
        ),
        (
            vec!["--tls-cert", &garbage, "--tls-key", &key],
            vec!["--tls-cert", &garbage, "no certificate"],
        ),
        (
            vec!["--tls-cert", &cert, "--tls-key", &garbage],
            vec!["--tls-key", &garbage],
        ),
        (
            vec!["--tls-cert", &cert, "--tls-key", &other_key],
            vec!["does not match", &other_key],
        ),
        (
            vec!["--tls-cert", &cert],
            vec!["--tls-cert", "without its --tls-key"],
        ),
        (
            vec![
                "--tls-cert",
                &cert,
                "--tls-key",
                &key,
                "--tls-client-ca",
                &garbage,
            ],
            vec!["--tls-client-ca", &garbage],
        ),
        (
            vec!["--listen", &sock, "--tls-cert", &cert, "--tls-key", &key],
            vec!["--tls-cert", "unix socket"],
        ),
        (
            vec!["--tls-cert", "nope=x.pem", "--tls-key", &key],
            vec!["--tls-cert", "no listener is named `nope`"],
        ),
    ];
    for (args, expect) in cases {
        let mut all = vec!["--listen", "127.0.0.1:0"];
        all.extend_from_slice(&args);
        let (status, _, err) = run_bounded(hello_bin(), &all, T);
        assert_eq!(status.code(), Some(2), "{args:?}: {err}");
        for e in expect {
            assert!(err.contains(e), "{args:?}: no `{e}` in: {err}");
        }
    }
    // A command's workers accept on their own: drover cannot serve TLS for them.
    let (status, _, err) = run_bounded(
        DROVER,
        &[
            "run",
            "--listen",
            "127.0.0.1:0",
            "--tls-cert",
            &cert,
            "--tls-key",
            &key,
            "--",
            "sleep",
            "60",
        ],
        T,
    );
    assert_eq!(status.code(), Some(2), "{err}");
    assert!(
        err.contains("--tls-cert") && err.contains("embedded runtime only"),
        "{err}"
    );
}

/// The SHA-256 of the certificate the server presents to a new connection.
fn presented(dir: &TempDir, port: u16) -> String {
    let (code, out, err) = py(dir, &["fingerprint", &port.to_string()]);
    assert_eq!(code, 0, "{err}");
    out.trim().to_string()
}

fn pem_fingerprint(dir: &TempDir, path: &str) -> String {
    let (code, out, err) = py(dir, &["pem", path]);
    assert_eq!(code, 0, "{err}");
    out.trim().to_string()
}

#[test]
fn reload_and_restart_read_the_certificates_again_and_a_bad_one_keeps_the_running_one() {
    let dir = TempDir::new("tls-reload");
    let control = dir.path("ctl");
    let (cert, key) = server_pair(&dir, "server");
    let (d, port) = hello(dir, &["--tls-cert", &cert, "--tls-key", &key]);
    let first = pem_fingerprint(&d.dir, &cert);
    assert_eq!(presented(&d.dir, port), first);

    // Renewed in place, then HUP: the workers are replaced and serve the new one.
    let (fresh, fresh_key) = server_pair(&d.dir, "fresh");
    std::fs::copy(&fresh, &cert).unwrap();
    std::fs::copy(&fresh_key, &key).unwrap();
    let second = pem_fingerprint(&d.dir, &cert);
    assert_ne!(first, second);
    d.signal(libc::SIGHUP);
    wait_until("the renewed certificate served", T, || {
        presented(&d.dir, port) == second
    });

    // A broken file: the reload is refused, saying why, and the running one stays.
    std::fs::write(&key, "truncated\n").unwrap();
    let (code, out, err) = client(&["reload", "--control", &control]);
    assert_ne!(code, 0, "{out}");
    assert!(format!("{out}{err}").contains("--tls-key"), "{out}{err}");
    assert_eq!(presented(&d.dir, port), second);

    // A rolling restart reads the files again too.
    let (third_cert, third_key) = server_pair(&d.dir, "third");
    std::fs::copy(&third_cert, &cert).unwrap();
    std::fs::copy(&third_key, &key).unwrap();
    let third = pem_fingerprint(&d.dir, &cert);
    let (code, out, err) = client(&["restart", "--control", &control]);
    assert_eq!(code, 0, "{out}{err}");
    wait_until("the restart's certificate served", T, || {
        presented(&d.dir, port) == third
    });
    assert_eq!(d.log.count(&["the handler panicked"]), 0);
}

#[test]
fn a_reload_that_names_other_files_is_what_a_later_restart_reads() {
    let dir = TempDir::new("tls-reload-paths");
    let control = dir.path("ctl");
    let config = dir.path("drover.toml");
    let (a_cert, a_key) = server_pair(&dir, "a");
    let (b_cert, b_key) = server_pair(&dir, "b");
    let keys = |cert: &str, key: &str| format!("tls_cert = \"{cert}\"\ntls_key = \"{key}\"\n");
    std::fs::write(&config, keys(&a_cert, &a_key)).unwrap();
    let (d, port) = hello(dir, &["--config", &config]);
    assert_eq!(presented(&d.dir, port), pem_fingerprint(&d.dir, &a_cert));

    std::fs::write(&config, keys(&b_cert, &b_key)).unwrap();
    let (code, out, err) = client(&["reload", "--control", &control]);
    assert_eq!(code, 0, "{out}{err}");
    let b = pem_fingerprint(&d.dir, &b_cert);
    wait_until("b.pem served", T, || presented(&d.dir, port) == b);

    // b.pem renewed in place: a restart reads it (not a.pem, the start's file).
    let (c_cert, c_key) = server_pair(&d.dir, "c");
    std::fs::copy(&c_cert, &b_cert).unwrap();
    std::fs::copy(&c_key, &b_key).unwrap();
    let c = pem_fingerprint(&d.dir, &b_cert);
    let (code, out, err) = client(&["restart", "--control", &control]);
    assert_eq!(code, 0, "{out}{err}");
    wait_until("the renewed b.pem served", T, || {
        presented(&d.dir, port) == c
    });
}

#[test]
fn a_live_upgrade_successor_reads_the_files_itself_and_a_bad_one_rolls_it_back() {
    let dir = TempDir::new("tls-upgrade");
    let (control, pid_file) = (dir.path("ctl"), dir.path("pid"));
    let (cert, key) = server_pair(&dir, "server");
    let (mut d, port) = hello(
        dir,
        &[
            "--pid-file",
            &pid_file,
            "--tls-cert",
            &cert,
            "--tls-key",
            &key,
        ],
    );
    let first = pem_fingerprint(&d.dir, &cert);
    assert_eq!(presented(&d.dir, port), first);

    // A key the successor cannot use: it exits 2, the upgrade rolls back, nothing changes.
    let good_key = std::fs::read(&key).unwrap();
    std::fs::write(&key, "truncated\n").unwrap();
    let (code, out, err) = client(&["upgrade", "--control", &control]);
    assert_ne!(code, 0, "{out}{err}");
    d.log.wait_for(&["--tls-key", "no private key"], T);
    assert!(d.running());
    assert_eq!(presented(&d.dir, port), first);
    std::fs::write(&key, good_key).unwrap();

    // Renewed files: the successor serves them once it has taken over.
    let (fresh, fresh_key) = server_pair(&d.dir, "fresh");
    std::fs::copy(&fresh, &cert).unwrap();
    std::fs::copy(&fresh_key, &key).unwrap();
    let second = pem_fingerprint(&d.dir, &cert);
    let (code, out, err) = client(&["upgrade", "--control", &control]);
    assert_eq!(code, 0, "{out}{err}\n{}", d.log.dump());
    assert_eq!(d.wait_exit(Duration::from_secs(30)).code(), Some(0));
    assert_eq!(presented(&d.dir, port), second);
    let successor: u32 = read(&pid_file).trim().parse().unwrap();
    let (code, out, err) = client(&["stop", "--control", &control]);
    assert_eq!(code, 0, "{out}{err}");
    wait_until("the successor exits", T, || !alive(successor));
}
