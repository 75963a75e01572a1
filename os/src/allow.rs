//! Address allow-lists (`--allow CIDR`): the CIDR list, the classic BPF socket filter built
//! from it, and attaching that filter to a listening TCP socket. The kernel runs the filter
//! on every packet that reaches the listener (the SYN, the handshake's last ACK) and drops
//! the packet when the filter returns 0, so a client from another address never completes a
//! handshake and never reaches any worker, whatever program the worker runs. What the kernel
//! guarantees is in docs/operating.md, "Allow-lists (`--allow`)".
//!
//! This module decides nothing about *which* sockets get a filter (`listen` does: every TCP
//! listener, fresh ones before listen(2)).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::os::fd::{AsRawFd, BorrowedFd};

/// More entries would make the filter long (every packet runs it) and could exceed the
/// kernel's per-socket option memory (`net.core.optmem_max`).
pub const MAX_ENTRIES: usize = 128;

/// One `--allow` entry: a network, its host bits zero. An IPv4-mapped IPv6 entry
/// (`::ffff:10.0.0.0/104`) is kept as the IPv4 network it names, since the packets it means
/// are IPv4 packets on the wire.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Cidr {
    pub addr: IpAddr,
    pub prefix: u8,
}

impl Cidr {
    /// `ADDR` (one host) or `ADDR/PREFIX`; host bits set is an error (`10.0.0.1/8` is
    /// most likely a typo for `10.0.0.0/8` or `10.0.0.1/32`, and a security list should not
    /// guess).
    pub fn parse(text: &str) -> Result<Cidr, String> {
        let bad = |why: String| format!("invalid --allow '{text}': {why}");
        let (addr_text, prefix_text) = match text.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (text, None),
        };
        let addr: IpAddr = addr_text.trim().parse().map_err(|_| {
            bad("not an IPv4 or IPv6 address (e.g. 10.0.0.0/8, 192.0.2.7, fd00::/8)".into())
        })?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix_text {
            None => max,
            Some(p) => p
                .trim()
                .parse::<u8>()
                .ok()
                .filter(|p| *p <= max)
                .ok_or_else(|| bad(format!("the prefix length must be 0 to {max}")))?,
        };
        let cidr = Cidr { addr, prefix }.normalized();
        let network = cidr.network();
        if network != cidr.addr {
            return Err(bad(format!(
                "host bits are set; write {network}/{} for the network or {}/{} for the one host",
                cidr.prefix,
                cidr.addr,
                if cidr.addr.is_ipv4() { 32 } else { 128 }
            )));
        }
        Ok(cidr)
    }

    fn normalized(self) -> Cidr {
        match self.addr {
            IpAddr::V6(a) if self.prefix >= 96 => match a.to_ipv4_mapped() {
                Some(v4) => Cidr {
                    addr: IpAddr::V4(v4),
                    prefix: self.prefix - 96,
                },
                None => self,
            },
            _ => self,
        }
    }

    fn network(&self) -> IpAddr {
        match self.addr {
            IpAddr::V4(a) => IpAddr::V4(Ipv4Addr::from(u32::from(a) & mask32(self.prefix))),
            IpAddr::V6(a) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.prefix))
                    .unwrap_or(0);
                IpAddr::V6(Ipv6Addr::from(u128::from(a) & mask))
            }
        }
    }
}

impl std::fmt::Display for Cidr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

fn mask32(prefix: u8) -> u32 {
    u32::MAX.checked_shl(32 - u32::from(prefix)).unwrap_or(0)
}

/// The whole list; empty means no filter at all.
pub fn parse_list(items: &[String]) -> Result<Vec<Cidr>, String> {
    if items.len() > MAX_ENTRIES {
        return Err(format!(
            "invalid --allow: {} entries, at most {MAX_ENTRIES} (merge them into wider networks)",
            items.len()
        ));
    }
    items.iter().map(|t| Cidr::parse(t)).collect()
}

// ------------------------------------------------------------------ the BPF program

/// Classic BPF opcodes (linux/filter.h, linux/bpf_common.h).
const BPF_LD_W_ABS: u16 = 0x20; // BPF_LD (0) | BPF_W (0) | BPF_ABS
const BPF_LD_B_ABS: u16 = 0x10 | 0x20; // BPF_LD (0) | BPF_B | BPF_ABS
const BPF_ALU_AND_K: u16 = 0x04 | 0x50; // BPF_ALU | BPF_AND | BPF_K
const BPF_JEQ_K: u16 = 0x05 | 0x10; // BPF_JMP | BPF_JEQ | BPF_K
const BPF_JA: u16 = 0x05; // BPF_JMP | BPF_JA
const BPF_RET_K: u16 = 0x06; // BPF_RET | BPF_K
/// Loads at this offset and above read from the network (IP) header, wherever the packet
/// data starts (for TCP it starts at the TCP header).
const SKF_NET_OFF: i32 = -0x10_0000;
/// Keep the whole packet; 0 drops it.
pub const ACCEPT: u32 = u32::MAX;
pub const DROP: u32 = 0;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Insn {
    pub code: u16,
    pub jt: u8,
    pub jf: u8,
    pub k: u32,
}

fn stmt(code: u16, k: u32) -> Insn {
    Insn {
        code,
        jt: 0,
        jf: 0,
        k,
    }
}

fn jeq(k: u32, jt: u8, jf: u8) -> Insn {
    Insn {
        code: BPF_JEQ_K,
        jt,
        jf,
        k,
    }
}

fn load_net(code: u16, offset: i32) -> Insn {
    stmt(code, (SKF_NET_OFF + offset) as u32)
}

/// The instructions of one network's test: fall through to the next test on a mismatch,
/// return ACCEPT on a match. All jumps are short (within one test), so the list's length
/// never overflows a jump's 8-bit offset.
fn entry_test(cidr: &Cidr) -> Vec<Insn> {
    // (offset in the IP header, mask, value) of each 32-bit word to compare.
    let words: Vec<(i32, u32, u32)> = match cidr.addr {
        IpAddr::V4(a) => vec![(12, mask32(cidr.prefix), u32::from(a))],
        IpAddr::V6(a) => {
            let octets = a.octets();
            (0..4)
                .map(|w| {
                    let bits = i32::from(cidr.prefix) - 32 * w as i32;
                    let mask = mask32(bits.clamp(0, 32) as u8);
                    let word = u32::from_be_bytes(octets[4 * w..4 * w + 4].try_into().unwrap());
                    (8 + 4 * w as i32, mask, word)
                })
                .filter(|(_, mask, _)| *mask != 0)
                .collect()
        }
    };
    let mut per_word: Vec<Vec<Insn>> = words
        .iter()
        .map(|&(offset, mask, value)| {
            let mut v = vec![load_net(BPF_LD_W_ABS, offset)];
            if mask != u32::MAX {
                v.push(stmt(BPF_ALU_AND_K, mask));
            }
            v.push(jeq(value & mask, 0, 0));
            v
        })
        .collect();
    // Each compare's false branch skips to the instruction after this test's ACCEPT.
    let total: usize = per_word.iter().map(Vec::len).sum();
    let mut seen = 0;
    for word in per_word.iter_mut() {
        seen += word.len();
        let last = word.last_mut().expect("a word test ends in a compare");
        last.jf = u8::try_from(total - seen + 1).expect("a test is at most 13 instructions");
    }
    let mut out: Vec<Insn> = per_word.into_iter().flatten().collect();
    out.push(stmt(BPF_RET_K, ACCEPT));
    out
}

/// The filter: read the IP version from the network header, then test the source address
/// against the list's networks of that family; drop what matches none. The version comes
/// from the packet, not the socket: an IPv4 client of a dual-stack `[::]` socket arrives as
/// an IPv4 packet (the program sees it as `::ffff:a.b.c.d`) and is tested against the IPv4
/// entries.
pub fn program(list: &[Cidr]) -> Vec<Insn> {
    let section = |v4: bool| -> Vec<Insn> {
        let mut out: Vec<Insn> = list
            .iter()
            .filter(|c| c.addr.is_ipv4() == v4)
            .flat_map(entry_test)
            .collect();
        out.push(stmt(BPF_RET_K, DROP));
        out
    };
    let v4 = section(true);
    let v6 = section(false);
    let mut prog = vec![
        load_net(BPF_LD_B_ABS, 0),
        stmt(BPF_ALU_AND_K, 0xf0),
        jeq(0x40, 0, 1),
        stmt(BPF_JA, 3), // to the IPv4 section
        jeq(0x60, 0, 1),
        stmt(BPF_JA, v4.len() as u32 + 1), // to the IPv6 section
        stmt(BPF_RET_K, DROP),             // neither: not from any listed network
    ];
    prog.extend(v4);
    prog.extend(v6);
    prog
}

// ------------------------------------------------------------------ attaching

/// Puts the list's filter on a socket (replacing any filter it had), or, for an empty list,
/// removes any filter (an inherited socket may carry a predecessor's).
pub fn apply(fd: BorrowedFd<'_>, list: &[Cidr]) -> std::io::Result<()> {
    if list.is_empty() {
        // The kernel wants an int-sized option value here, though it does not read it.
        let unused: libc::c_int = 0;
        // SAFETY: setsockopt on a descriptor we hold, with a pointer to a live int.
        let rc = unsafe {
            libc::setsockopt(
                fd.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_DETACH_FILTER,
                (&unused as *const libc::c_int).cast(),
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            )
        };
        let err = std::io::Error::last_os_error();
        return match rc {
            0 => Ok(()),
            _ if err.raw_os_error() == Some(libc::ENOENT) => Ok(()), // had none
            _ => Err(err),
        };
    }
    let mut insns: Vec<libc::sock_filter> = program(list)
        .into_iter()
        .map(|i| libc::sock_filter {
            code: i.code,
            jt: i.jt,
            jf: i.jf,
            k: i.k,
        })
        .collect();
    let fprog = libc::sock_fprog {
        len: u16::try_from(insns.len()).map_err(|_| std::io::Error::other("filter too long"))?,
        filter: insns.as_mut_ptr(),
    };
    // SAFETY: `fprog` points at `insns`, both alive for the call; the kernel copies the
    // program before setsockopt returns.
    let rc = unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_ATTACH_FILTER,
            (&fprog as *const libc::sock_fprog).cast(),
            std::mem::size_of::<libc::sock_fprog>() as libc::socklen_t,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

#[cfg(test)]
mod tests;
