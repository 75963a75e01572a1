//! The `drover-sim` command line, one file per mode: the flags (`args`), one seed (`one`),
//! a batch (`batch`), the planted-bug batch (`canary_runs`), the policy lab's subcommands
//! (`lab`), and what an outcome prints (`outcome`).

mod args;
mod batch;
mod canary_runs;
mod lab;
mod one;
mod outcome;

pub(crate) use args::*;
pub(crate) use batch::*;
pub(crate) use canary_runs::*;
pub(crate) use lab::*;
pub(crate) use one::*;
pub(crate) use outcome::*;
