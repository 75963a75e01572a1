//! The supervisor's behaviour, one module per topic. Each topic holds two kinds of test:
//! scenarios, which drive the scripted `Harness` (a fake OS), snapshot the whole
//! fixed-column trace (insta) and assert the key facts by hand, so a blindly accepted
//! snapshot still cannot hide a wrong decision; and focused tests of one rule each, which
//! assert the decision itself (state, reason, timing), not a trace.

mod helpers;

mod counters;
mod inputs;
mod ladder;
mod reload;
mod restart;
mod retirement;
mod rolling;
mod scaling;
mod slot_addresses;
mod stop;
mod upgrade;
mod wakeups;
mod watchdog;
