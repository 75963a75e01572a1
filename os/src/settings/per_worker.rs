//! `--listen-per-worker [NAME=]HOST:PORT` (config key `listen_per_worker`): the worker in
//! slot i gets its own listening socket on PORT+i (thin-prefork's one port per worker
//! behind a load balancer), and what that asks of the machine's config: each slot is an
//! address (`Config::slot_addresses`), so a rollout replaces workers in place
//! (`max_surge = 0`, `max_unavailable >= 1`).

use std::net::SocketAddr;

use drover_machine::Setting;

use super::file::{usage, FileConfig, UsageError};
use super::listen::{parse_listen, ListenAddr};

/// The name of the per-worker socket in LISTEN_FDNAMES when the operator gives none.
pub const DEFAULT_NAME: &str = "worker";

/// One per-worker listener: slot i listens on `base` with port `base.port() + i`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PerWorker {
    /// For LISTEN_FDNAMES.
    pub name: String,
    pub base: SocketAddr,
    /// As the operator wrote it.
    pub text: String,
}

impl PerWorker {
    /// Slot `slot`'s address, or `None` past port 65535.
    pub fn addr_of(&self, slot: u32) -> Option<SocketAddr> {
        let port = u32::from(self.base.port()).checked_add(slot)?;
        let port = u16::try_from(port).ok()?;
        Some(SocketAddr::new(self.base.ip(), port))
    }
}

/// The flag, else the file's key.
pub(super) fn load(
    flag: Option<&String>,
    file: &FileConfig,
) -> Result<Option<PerWorker>, UsageError> {
    let text = match flag {
        Some(text) => text.clone(),
        None => match file.string("listen_per_worker")? {
            Some(text) => text,
            None => return Ok(None),
        },
    };
    parse(&text).map(Some)
}

fn parse(text: &str) -> Result<PerWorker, UsageError> {
    let bad = |why: &str| {
        usage(format!(
            "invalid --listen-per-worker '{text}' (config key `listen_per_worker`): {why}"
        ))
    };
    let named = text.split_once('=').is_some_and(|(name, _)| {
        !name.is_empty()
            && name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
    });
    let spec = parse_listen(0, text)
        .map_err(|e| bad(e.0.split_once(": ").map_or(e.0.as_str(), |(_, why)| why)))?;
    let base = match spec.addr {
        ListenAddr::Tcp(addr) => addr,
        ListenAddr::Unix(_) => return Err(bad(
            "per-worker ports are TCP ports (PORT+slot); a unix socket has no port: give HOST:PORT",
        )),
    };
    if base.port() == 0 {
        return Err(bad(
            "port 0 gives every worker a random port no load balancer knows: give the first worker's port, e.g. 127.0.0.1:3000",
        ));
    }
    Ok(PerWorker {
        name: if named {
            spec.name
        } else {
            DEFAULT_NAME.into()
        },
        base,
        text: text.to_string(),
    })
}

/// The machine settings per-worker ports ask for, added to `merged` (the file's settings
/// with the flags on top): a rollout replaces each worker in its own slot, so the surge is
/// 0 (an explicit other value is refused) and one worker at a time may be missing unless
/// the operator says how many.
pub(super) fn adjust_machine(merged: &mut Vec<(String, Setting)>) -> Result<(), UsageError> {
    let get = |key: &str| merged.iter().rev().find(|(k, _)| k == key).map(|(_, v)| v);
    match get("max_surge") {
        None | Some(Setting::Int(0)) => {}
        Some(v) => {
            let v = match v {
                Setting::Int(n) => n.to_string(),
                other => format!("{other:?}"),
            };
            return Err(usage(format!(
                "config key `max_surge` is {v}, but --listen-per-worker (config key `listen_per_worker`) gives each slot its own port, so a rolling restart replaces each worker in its own slot: set max_surge = 0 (the default with per-worker ports) or drop --listen-per-worker"
            )));
        }
    }
    if matches!(get("max_unavailable"), Some(Setting::Int(0))) {
        return Err(usage(
            "config key `max_unavailable` is 0, but with --listen-per-worker (config key `listen_per_worker`) a rolling restart stops each worker before its replacement takes the slot's port: set max_unavailable >= 1 (the default with per-worker ports is 1)",
        ));
    }
    let unavailable_given = get("max_unavailable").is_some();
    merged.push(("max_surge".into(), Setting::Int(0)));
    if !unavailable_given {
        merged.push(("max_unavailable".into(), Setting::Int(1)));
    }
    Ok(())
}

/// The ports of every slot the pool may fill must exist.
pub(super) fn check_ports(per_worker: &PerWorker, slots: u32) -> Result<(), UsageError> {
    let last = slots.saturating_sub(1);
    if per_worker.addr_of(last).is_none() {
        return Err(usage(format!(
            "invalid --listen-per-worker '{}' (config key `listen_per_worker`): {slots} workers need ports {} to {}, past 65535; give a lower first port or fewer workers",
            per_worker.text,
            per_worker.base.port(),
            u32::from(per_worker.base.port()) + last
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_names_and_ports() {
        let p = parse("127.0.0.1:3000").unwrap();
        assert_eq!(p.name, DEFAULT_NAME);
        assert_eq!(p.addr_of(2).unwrap().to_string(), "127.0.0.1:3002");
        let p = parse("lb=[::1]:65534").unwrap();
        assert_eq!(p.name, "lb");
        assert_eq!(p.addr_of(1).unwrap().to_string(), "[::1]:65535");
        assert_eq!(p.addr_of(2), None);
    }

    #[test]
    fn refuses_unix_port_zero_and_garbage_naming_the_flag() {
        for (text, part) in [
            ("unix:/tmp/x.sock", "unix socket has no port"),
            ("127.0.0.1:0", "port 0"),
            ("nonsense", "expected host:port"),
        ] {
            let e = parse(text).unwrap_err().0;
            assert!(e.contains("--listen-per-worker"), "{e}");
            assert!(e.contains("listen_per_worker"), "{e}");
            assert!(e.contains(part), "{text}: {e}");
        }
    }

    #[test]
    fn ports_past_65535_are_refused() {
        let p = parse("127.0.0.1:65530").unwrap();
        assert!(check_ports(&p, 6).is_ok());
        let e = check_ports(&p, 7).unwrap_err().0;
        assert!(e.contains("65530 to 65536"), "{e}");
    }

    #[test]
    fn surge_is_zero_and_one_may_be_missing() {
        let mut merged = Vec::new();
        adjust_machine(&mut merged).unwrap();
        assert_eq!(
            merged,
            [
                ("max_surge".to_string(), Setting::Int(0)),
                ("max_unavailable".to_string(), Setting::Int(1))
            ]
        );
        let mut merged = vec![("max_surge".to_string(), Setting::Int(2))];
        let e = adjust_machine(&mut merged).unwrap_err().0;
        assert!(
            e.contains("max_surge") && e.contains("--listen-per-worker"),
            "{e}"
        );
        let mut merged = vec![("max_unavailable".to_string(), Setting::Int(3))];
        adjust_machine(&mut merged).unwrap();
        assert_eq!(merged.len(), 2, "the operator's max_unavailable stays");
    }
}
