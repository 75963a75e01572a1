//! bytes as UTF-8 → the config file parser of `drover run --config`: no panic; accepted ⇒
//! the config validates and starts a supervisor.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| drover_fuzz::toml_config::run(data));
