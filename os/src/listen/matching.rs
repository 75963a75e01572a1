//! The rules by which an inherited socket is matched to a `--listen` spec: by name (the
//! operator's, or the default `listenN`) when the socket serves the spec's address, or by
//! the exact address. Pure functions of names and addresses: they must not touch a socket.

use crate::settings::listen::{ListenAddr, ListenSpec};

/// The name a spec is matched by: the operator's (`NAME=ADDR`) or the default `listenN`,
/// which is what a drover passes on to its successor or supervised child, so that a port-0
/// listener is found again (its address names no particular socket).
pub(super) fn match_name(spec: &ListenSpec) -> Option<&str> {
    (!spec.name.is_empty()).then_some(spec.name.as_str())
}

/// The same socket address: TCP by IP, port (and IPv6 scope), unix by path. A spec with port
/// 0 names no particular socket and matches nothing.
pub(super) fn same_address(spec: &ListenAddr, got: Option<&ListenAddr>) -> bool {
    match (spec, got) {
        (ListenAddr::Tcp(a), Some(ListenAddr::Tcp(b))) => a.port() != 0 && same_tcp(a, b),
        (ListenAddr::Unix(a), Some(ListenAddr::Unix(b))) => a == b,
        _ => false,
    }
}

fn same_tcp(a: &std::net::SocketAddr, b: &std::net::SocketAddr) -> bool {
    use std::net::SocketAddr::{V4, V6};
    a.port() == b.port()
        && match (a, b) {
            (V4(a), V4(b)) => a.ip() == b.ip(),
            (V6(a), V6(b)) => a.ip() == b.ip() && a.scope_id() == b.scope_id(),
            _ => false,
        }
}

/// Whether a socket found by name serves the spec: the same address, or any port on the
/// same IP for a spec with port 0 (the predecessor's "any port" is still any port). With no
/// address to compare (an abstract unix socket), the name alone decides.
pub(super) fn name_serves(spec: &ListenAddr, got: Option<&ListenAddr>) -> bool {
    match (spec, got) {
        (_, None) => true,
        (ListenAddr::Tcp(a), Some(ListenAddr::Tcp(b))) if a.port() == 0 => {
            let mut a = *a;
            a.set_port(b.port());
            same_tcp(&a, b)
        }
        (spec, got) => same_address(spec, got),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::listen::test_support::spec;
    use std::path::PathBuf;

    #[test]
    fn matching_rules() {
        assert_eq!(match_name(&spec(0, "web=127.0.0.1:80")), Some("web"));
        assert_eq!(match_name(&spec(0, "127.0.0.1:80")), Some("listen0"));
        let tcp = |s: &str| ListenAddr::Tcp(s.parse().unwrap());
        let unix = |s: &str| ListenAddr::Unix(PathBuf::from(s));
        assert!(same_address(
            &tcp("127.0.0.1:80"),
            Some(&tcp("127.0.0.1:80"))
        ));
        assert!(!same_address(
            &tcp("127.0.0.1:80"),
            Some(&tcp("127.0.0.1:81"))
        ));
        assert!(!same_address(&tcp("0.0.0.0:80"), Some(&tcp("[::]:80"))));
        assert!(!same_address(
            &tcp("127.0.0.1:0"),
            Some(&tcp("127.0.0.1:0"))
        ));
        assert!(same_address(&unix("/a"), Some(&unix("/a"))));
        assert!(!same_address(&unix("/a"), Some(&unix("/b"))));
        assert!(!same_address(&unix("/a"), None));
        assert!(name_serves(
            &tcp("127.0.0.1:0"),
            Some(&tcp("127.0.0.1:5555"))
        ));
        assert!(!name_serves(
            &tcp("127.0.0.1:0"),
            Some(&tcp("127.0.0.2:5555"))
        ));
        assert!(!name_serves(
            &tcp("127.0.0.1:80"),
            Some(&tcp("127.0.0.1:81"))
        ));
        assert!(name_serves(&unix("/a"), None));
    }
}
