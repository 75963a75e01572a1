use super::*;
use std::net::UdpSocket;
use std::os::fd::AsFd;
use std::time::Duration;

fn cidr(text: &str) -> Cidr {
    Cidr::parse(text).unwrap()
}

#[test]
fn parses_networks_hosts_and_mapped_entries() {
    assert_eq!(cidr("10.0.0.0/8").to_string(), "10.0.0.0/8");
    assert_eq!(cidr("192.0.2.7").to_string(), "192.0.2.7/32");
    assert_eq!(cidr("0.0.0.0/0").to_string(), "0.0.0.0/0");
    assert_eq!(cidr("fd00::/8").to_string(), "fd00::/8");
    assert_eq!(cidr("::1").to_string(), "::1/128");
    assert_eq!(cidr("::/0").to_string(), "::/0");
    // An IPv4-mapped entry is the IPv4 network it names.
    assert_eq!(cidr("::ffff:10.0.0.0/104").to_string(), "10.0.0.0/8");
    assert_eq!(cidr("::ffff:127.0.0.2").to_string(), "127.0.0.2/32");
}

#[test]
fn refuses_malformed_entries_naming_the_value() {
    for (text, why) in [
        ("10.0.0.0/33", "0 to 32"),
        ("fd00::/129", "0 to 128"),
        ("10.0.0.0/", "0 to 32"),
        ("10.0.0.0/-1", "0 to 32"),
        ("10.0.0/8", "not an IPv4 or IPv6 address"),
        ("example.com", "not an IPv4 or IPv6 address"),
        ("", "not an IPv4 or IPv6 address"),
        (
            "10.0.0.1/8",
            "write 10.0.0.0/8 for the network or 10.0.0.1/32",
        ),
        ("fd00::1/64", "write fd00::/64"),
    ] {
        let e = Cidr::parse(text).unwrap_err();
        assert!(e.contains(&format!("'{text}'")), "{e}");
        assert!(e.contains(why), "{text}: {e}");
    }
    let many: Vec<String> = (0..=MAX_ENTRIES)
        .map(|i| format!("10.0.{}.0/24", i % 256))
        .collect();
    assert!(parse_list(&many).unwrap_err().contains("at most 128"));
    assert!(parse_list(&[]).unwrap().is_empty());
}

#[test]
fn the_program_dispatches_on_the_ip_version_and_tests_each_network() {
    let prog = program(&[cidr("127.0.0.2/32"), cidr("10.0.0.0/8"), cidr("fd00::/12")]);
    let net = |off: i32| (SKF_NET_OFF + off) as u32;
    let expected = vec![
        stmt(BPF_LD_B_ABS, net(0)),
        stmt(BPF_ALU_AND_K, 0xf0),
        jeq(0x40, 0, 1),
        stmt(BPF_JA, 3),
        jeq(0x60, 0, 1),
        stmt(BPF_JA, 9),
        stmt(BPF_RET_K, DROP),
        // IPv4: 127.0.0.2/32 (no mask needed), 10.0.0.0/8, then drop.
        stmt(BPF_LD_W_ABS, net(12)),
        jeq(0x7f00_0002, 0, 1),
        stmt(BPF_RET_K, ACCEPT),
        stmt(BPF_LD_W_ABS, net(12)),
        stmt(BPF_ALU_AND_K, 0xff00_0000),
        jeq(0x0a00_0000, 0, 1),
        stmt(BPF_RET_K, ACCEPT),
        stmt(BPF_RET_K, DROP),
        // IPv6: fd00::/12 compares the first word only.
        stmt(BPF_LD_W_ABS, net(8)),
        stmt(BPF_ALU_AND_K, 0xfff0_0000),
        jeq(0xfd00_0000, 0, 1),
        stmt(BPF_RET_K, ACCEPT),
        stmt(BPF_RET_K, DROP),
    ];
    assert_eq!(prog, expected);
}

#[test]
fn a_full_ipv6_address_compares_four_words_and_skips_to_the_next_network() {
    let prog = program(&[cidr("::1/128"), cidr("fe80::/10")]);
    // Prologue (7), no IPv4 networks (1: drop), then ::1/128: four load+compare pairs.
    let v6 = &prog[8..];
    let words: Vec<u32> = v6
        .iter()
        .filter(|i| i.code == BPF_JEQ_K)
        .map(|i| i.k)
        .collect();
    assert_eq!(words, [0, 0, 0, 1, 0xfe80_0000]);
    // Each compare of ::1 jumps past the rest of its test and its ACCEPT on a mismatch.
    let jumps: Vec<u8> = v6[..8]
        .iter()
        .filter(|i| i.code == BPF_JEQ_K)
        .map(|i| i.jf)
        .collect();
    assert_eq!(jumps, [7, 5, 3, 1]);
    assert_eq!(v6[8], stmt(BPF_RET_K, ACCEPT));
    assert_eq!(v6[9], stmt(BPF_LD_W_ABS, (SKF_NET_OFF + 8) as u32));
    assert_eq!(*v6.last().unwrap(), stmt(BPF_RET_K, DROP));
    // The longest list stays within the kernel's limit of 4096 instructions.
    let longest: Vec<Cidr> = (0..MAX_ENTRIES)
        .map(|_| cidr("fd00::1:2:3:4/127"))
        .collect();
    assert!(program(&longest).len() < 4096);
}

/// Datagrams from `senders` to a UDP socket carrying the filter, sent in order: the sources
/// that arrive. An allowed last sender marks the end (loopback delivers in order), so no
/// wait is needed to see that the others were dropped.
fn delivered(receiver: &UdpSocket, target: &str, senders: &[&str]) -> Vec<String> {
    for from in senders {
        let s = UdpSocket::bind(from).unwrap();
        s.send_to(b"x", target).unwrap();
    }
    receiver
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 16];
    let last: IpAddr = senders
        .last()
        .unwrap()
        .parse::<std::net::SocketAddr>()
        .unwrap()
        .ip();
    for _ in 0..senders.len() {
        let (_, from) = receiver.recv_from(&mut buf).unwrap();
        got.push(from.ip().to_string());
        if from.ip().to_canonical() == last {
            break;
        }
    }
    got
}

/// The program runs in the kernel: a UDP socket with the filter receives datagrams from the
/// listed sources only (the same filter code reads the network header for UDP as for TCP).
#[test]
fn the_kernel_drops_what_the_list_does_not_name() {
    let rx = UdpSocket::bind("127.0.0.1:0").unwrap();
    apply(rx.as_fd(), &[cidr("127.0.0.2/32"), cidr("::1/128")]).unwrap();
    let to = rx.local_addr().unwrap().to_string();
    let got = delivered(&rx, &to, &["127.0.0.3:0", "127.0.0.4:0", "127.0.0.2:0"]);
    assert_eq!(got, ["127.0.0.2"]);

    // Removing the filter lets everyone in again.
    apply(rx.as_fd(), &[]).unwrap();
    apply(rx.as_fd(), &[]).unwrap(); // no filter: not an error
    let got = delivered(&rx, &to, &["127.0.0.3:0", "127.0.0.2:0"]);
    assert_eq!(got, ["127.0.0.3", "127.0.0.2"]);
}

#[test]
fn the_kernel_filter_tests_ipv6_and_ipv4_mapped_sources() {
    let Ok(rx) = UdpSocket::bind("[::1]:0") else {
        eprintln!("no IPv6 loopback; skipped");
        return;
    };
    let to = rx.local_addr().unwrap().to_string();
    apply(rx.as_fd(), &[cidr("127.0.0.0/8")]).unwrap();
    // Only IPv4 listed: ::1 is dropped (a later allowed sender cannot exist here, so
    // swap the list and send again: the first datagram was dropped, not queued).
    UdpSocket::bind("[::1]:0")
        .unwrap()
        .send_to(b"x", &to)
        .unwrap();
    apply(rx.as_fd(), &[cidr("::1/128")]).unwrap();
    let got = delivered(&rx, &to, &["[::1]:0"]);
    assert_eq!(got, ["::1"]);

    // A dual-stack socket sees IPv4 clients as IPv4 packets: IPv4 entries apply.
    let dual = dual_stack_udp();
    let port = dual.local_addr().unwrap().port();
    apply(dual.as_fd(), &[cidr("::ffff:127.0.0.2/128")]).unwrap();
    let got = delivered(
        &dual,
        &format!("127.0.0.1:{port}"),
        &["127.0.0.3:0", "127.0.0.2:0"],
    );
    assert_eq!(got, ["::ffff:127.0.0.2"]);
}

/// A `[::]:0` UDP socket that also receives IPv4 (IPV6_V6ONLY off).
fn dual_stack_udp() -> UdpSocket {
    use nix::sys::socket::{
        bind, setsockopt, socket, sockopt, AddressFamily, SockFlag, SockType, SockaddrIn6,
    };
    let fd = socket(
        AddressFamily::Inet6,
        SockType::Datagram,
        SockFlag::SOCK_CLOEXEC,
        None,
    )
    .unwrap();
    setsockopt(&fd, sockopt::Ipv6V6Only, &false).unwrap();
    let any: std::net::SocketAddrV6 = "[::]:0".parse().unwrap();
    bind(fd.as_raw_fd(), &SockaddrIn6::from(any)).unwrap();
    UdpSocket::from(fd)
}
