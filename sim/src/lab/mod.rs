//! The policy lab: what an operator or a researcher uses to ask which pool policy serves a
//! load best, at what cost. It owns recorded traffic (`trace`), the pictures (`plot`), and
//! running several policies under the same load (compare, sweep). It must not decide
//! anything about the pool: every run drives the real machine through the world.

pub mod plot;
pub mod policies;
pub mod runs;
pub mod sweep;
pub mod trace;
