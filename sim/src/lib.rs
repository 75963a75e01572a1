//! drover-sim: the deterministic simulator of drover's supervisor.
//!
//! Not built yet (issue 3). This crate exists so the workspace has its final shape; it has
//! no API and runs nothing.
