//! The fuzz targets' logic: byte decoders and checks. Each `fuzz_targets/*.rs` is one call
//! into this library, so the targets stay one line and the decoders are shared (the machine
//! target decodes configs for reloads the same way as the starting one).
//!
//! Set `DROVER_FUZZ_TRACE=1` when running a target on one input
//! (`cargo fuzz run machine_inputs fuzz/artifacts/machine_inputs/crash-…`) to print the
//! decoded input as a readable list (the machine's trace lines).

pub mod control;
pub mod machine;
pub mod notify;
pub mod settings;
pub mod toml_config;
pub mod trace;

/// Whether to print decoded inputs (`DROVER_FUZZ_TRACE=1`).
pub fn tracing() -> bool {
    use std::sync::OnceLock;
    static ON: OnceLock<bool> = OnceLock::new();
    *ON.get_or_init(|| std::env::var_os("DROVER_FUZZ_TRACE").is_some_and(|v| v != "0"))
}
