//! Listening sockets, opened once by the supervisor and inherited by every worker at fd 3
//! onwards (systemd socket activation). This module owns the [`Listener`] type and says
//! which room does what; the rooms own the work, and none of them decides *when* sockets are
//! opened or closed (start-up and reload are the shell's).
//!
//! Rooms: `bind` (opening a fresh socket for one spec), `socket_file` (unix socket files on
//! disk: stale ones and removal at exit), `activation` (sockets inherited through
//! LISTEN_FDS, and what an inherited fd is), `matching` (which inherited socket serves which
//! spec), `adopt` (the whole set: adopt, open the rest, place every fd above the children's
//! range), `accept_queue` (sampling a TCP listener's accept queue).

use std::os::fd::OwnedFd;
use std::path::PathBuf;

use crate::settings::listen::ListenSpec;

mod accept_queue;
mod activation;
mod adopt;
pub(crate) mod bind;
mod matching;
mod socket_file;
#[cfg(test)]
mod test_support;

pub use activation::{activation_fds, describe_listener, inherited_from_env, Inherited};
pub use adopt::open_all_with;
pub use socket_file::{remove_stale_socket, remove_unix_files};

pub struct Listener {
    pub spec: ListenSpec,
    pub fd: OwnedFd,
    /// The bound address (the real port when the operator asked for port 0).
    pub local: String,
    /// A unix socket file to remove at exit.
    pub unix_path: Option<PathBuf>,
}
