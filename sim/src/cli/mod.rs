//! The `drover-sim` command line, one file per mode: the flags (`args`), one seed (`one`),
//! a batch (`batch`), the planted-bug batch (`canary_runs`), and what an outcome prints
//! (`outcome`).

mod args;
mod batch;
mod canary_runs;
mod one;
mod outcome;

pub(crate) use args::*;
pub(crate) use batch::*;
pub(crate) use canary_runs::*;
pub(crate) use one::*;
pub(crate) use outcome::*;
