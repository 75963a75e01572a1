//! Per-worker ports (`--listen-per-worker`): slot i's own listening socket on PORT+i,
//! opened when the slot is first spawned (the initial target's at start, before any
//! worker), kept across the slot's restarts so that connections queue in its backlog while
//! its worker is replaced, and closed when the machine says the slot left the pool
//! (`Action::ReleaseSlot`). Decides nothing: which slots exist is the machine's; a port
//! that cannot be bound goes back to it as `SpawnError::Address`.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};

use drover_machine::{SpawnError, WorkerId};

use super::System;
use crate::listen::bind::{tcp, TcpError};
use crate::listen::Inherited;
use crate::settings::listen::ListenAddr;
use crate::settings::per_worker::PerWorker;
use crate::settings::Settings;

/// The open per-worker sockets, by slot.
#[derive(Default)]
pub(super) struct SlotPorts {
    open: BTreeMap<u32, OwnedFd>,
    /// Why a slot's port could not be bound, until it is (or the slot is released): for
    /// status. At most one entry per slot of the pool.
    failed: BTreeMap<u32, String>,
}

impl SlotPorts {
    /// The sockets of slots `0..target` at start: those a live upgrade's predecessor handed
    /// over (`adopted`, see `take_inherited`), bound anew for the rest. A port that cannot
    /// be bound is a start-up error naming the flag and the address (exit 2). Adopted
    /// sockets of slots at or above the target are closed (the predecessor's copies close
    /// when it exits).
    pub(super) fn bind_initial(
        settings: &Settings,
        target: u32,
        mut adopted: BTreeMap<u32, OwnedFd>,
    ) -> Result<SlotPorts, String> {
        let mut ports = SlotPorts::default();
        let Some(per_worker) = &settings.listen_per_worker else {
            return Ok(ports);
        };
        for slot in 0..target {
            let fd = match adopted.remove(&slot) {
                Some(fd) => {
                    // The successor's own list, as for every adopted listener.
                    crate::allow::apply(fd.as_fd(), &settings.allow).map_err(|e| {
                        format!(
                            "--listen-per-worker {} with --allow: SO_ATTACH_FILTER: {e}",
                            per_worker.text
                        )
                    })?;
                    fd
                }
                None => bind_slot(settings, per_worker, slot).map_err(|(addr, e)| {
                    format!(
                        "--listen-per-worker {}: slot {slot}'s address {addr}: {}",
                        per_worker.text,
                        describe(&e)
                    )
                })?,
            };
            ports.open.insert(slot, fd);
        }
        if target > 0 {
            tracing::info!(
                name = %per_worker.name,
                "per-worker ports: slot i listens on {}+i ({} to {})",
                per_worker.base,
                per_worker.base.port(),
                u32::from(per_worker.base.port()) + target - 1
            );
        }
        for slot in adopted.keys() {
            tracing::info!("per-worker port of slot {slot} handed over above the target; closed");
        }
        Ok(ports)
    }

    /// Takes the per-worker sockets a live upgrade's predecessor handed over out of
    /// `inherited`: named `NAME.SLOT` and bound to that slot's address under this config.
    /// Any other stays for the listeners (and is closed there as matching no `--listen`).
    pub(super) fn take_inherited(
        settings: &Settings,
        inherited: &mut Vec<Inherited>,
    ) -> BTreeMap<u32, OwnedFd> {
        let mut taken = BTreeMap::new();
        let Some(per_worker) = &settings.listen_per_worker else {
            return taken;
        };
        let slot_of = |inh: &Inherited| -> Option<u32> {
            let slot: u32 = inh
                .name
                .strip_prefix(&per_worker.name)?
                .strip_prefix('.')?
                .parse()
                .ok()?;
            let addr = per_worker.addr_of(slot)?;
            (inh.addr == Some(ListenAddr::Tcp(addr))).then_some(slot)
        };
        let mut rest = Vec::with_capacity(inherited.len());
        for inh in inherited.drain(..) {
            match slot_of(&inh) {
                Some(slot) => {
                    taken.insert(slot, inh.fd);
                }
                None => rest.push(inh),
            }
        }
        *inherited = rest;
        taken
    }

    /// The open sockets to hand a live upgrade's successor, named `NAME.SLOT`.
    pub(super) fn handed_over(&self, settings: &Settings) -> Vec<(i32, String)> {
        let Some(per_worker) = &settings.listen_per_worker else {
            return Vec::new();
        };
        self.open
            .iter()
            .map(|(slot, fd)| (fd.as_raw_fd(), format!("{}.{slot}", per_worker.name)))
            .collect()
    }

    /// Slot `slot`'s port, whether or not its socket is open, and why it could not be
    /// bound, if so (for status and metrics); `None` without `--listen-per-worker`.
    pub(super) fn port_of(
        &self,
        settings: &Settings,
        slot: u32,
    ) -> Option<(Option<u16>, Option<&str>)> {
        let per_worker = settings.listen_per_worker.as_ref()?;
        let port = per_worker.addr_of(slot).map(|a| a.port());
        Some((port, self.failed.get(&slot).map(String::as_str)))
    }

    /// A reload's new `--allow` list, on every open per-worker socket (the same sockets:
    /// nothing queued is lost).
    pub(super) fn apply_allow(&self, allow: &[crate::allow::Cidr]) {
        for (slot, fd) in &self.open {
            if let Err(e) = crate::allow::apply(fd.as_fd(), allow) {
                tracing::error!(
                    "reload: the --allow list could not be put on slot {slot}'s per-worker socket: {e}"
                );
            }
        }
    }

    /// Slots with an open socket, and its port.
    pub(super) fn open_ports<'a>(
        &'a self,
        settings: &'a Settings,
    ) -> impl Iterator<Item = (u32, u16)> + 'a {
        let per_worker = settings.listen_per_worker.as_ref();
        self.open
            .keys()
            .filter_map(move |&slot| Some((slot, per_worker?.addr_of(slot)?.port())))
    }
}

impl System {
    /// The socket `worker` gets as its own, opened now if its slot has none yet; `None`
    /// without `--listen-per-worker`.
    pub(super) fn own_socket(
        &mut self,
        worker: WorkerId,
    ) -> Result<Option<(i32, u16)>, SpawnError> {
        let Some(per_worker) = &self.settings.listen_per_worker else {
            return Ok(None);
        };
        let slot = worker.slot;
        if !self.slot_ports.open.contains_key(&slot) {
            match bind_slot(&self.settings, per_worker, slot) {
                Ok(fd) => {
                    tracing::info!(
                        "per-worker port: slot {slot} listens on {}",
                        per_worker
                            .addr_of(slot)
                            .map_or_else(String::new, |a| a.to_string())
                    );
                    self.slot_ports.open.insert(slot, fd);
                    self.slot_ports.failed.remove(&slot);
                }
                Err((addr, e)) => {
                    tracing::warn!(
                        "--listen-per-worker {}: slot {slot}'s address {addr}: {}; the slot stays empty and is tried again later",
                        per_worker.text,
                        describe(&e)
                    );
                    self.slot_ports.failed.insert(slot, describe(&e));
                    return Err(SpawnError::Address(e.errno()));
                }
            }
        }
        let fd = self.slot_ports.open[&slot].as_raw_fd();
        let port = per_worker.addr_of(slot).map_or(0, |a| a.port());
        Ok(Some((fd, port)))
    }

    /// The machine gave `slot` up: its port closes (a connection still queued there is
    /// reset; the machine releases a slot only once its worker drained and exited).
    pub(super) fn release_slot_port(&mut self, slot: u32) {
        self.slot_ports.failed.remove(&slot);
        if self.slot_ports.open.remove(&slot).is_some() {
            let addr = (self.settings.listen_per_worker.as_ref())
                .and_then(|p| p.addr_of(slot))
                .map_or_else(String::new, |a| a.to_string());
            tracing::info!("per-worker port: slot {slot} left the pool; {addr} closed");
        }
    }
}

/// Opens slot `slot`'s socket with the listeners' backlog and `--allow` filter; the
/// address and the failure otherwise.
fn bind_slot(
    settings: &Settings,
    per_worker: &PerWorker,
    slot: u32,
) -> Result<OwnedFd, (String, TcpError)> {
    let Some(addr) = per_worker.addr_of(slot) else {
        let port = u32::from(per_worker.base.port()) + slot;
        let addr = match per_worker.base {
            SocketAddr::V4(a) => format!("{}:{port}", a.ip()),
            SocketAddr::V6(a) => format!("[{}]:{port}", a.ip()),
        };
        return Err((
            addr,
            TcpError::Step("port past 65535", nix::errno::Errno::EADDRNOTAVAIL),
        ));
    };
    let backlog = settings.backlog.min(i32::MAX as u32) as i32;
    tcp(&addr, backlog, &settings.allow).map_err(|e| (addr.to_string(), e))
}

fn describe(e: &TcpError) -> String {
    match e {
        TcpError::Step(_, nix::errno::Errno::EADDRINUSE) => {
            "address already in use (another process listens there)".into()
        }
        TcpError::Step(what, e) => format!("{what}: {}", e.desc()),
        TcpError::Filter(e) => format!("--allow: SO_ATTACH_FILTER: {e}"),
    }
}
