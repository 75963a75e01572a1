//! bytes → the control-socket request parser: no panic; malformed input is an error value.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| drover_fuzz::control::run(data));
