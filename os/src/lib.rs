//! drover-os: the OS shell of drover (fork/exec, signals, sockets, the `drover` CLI).
//!
//! Not built yet (issue 4). This crate exists so the workspace has its final shape; it has
//! no API and runs nothing.
