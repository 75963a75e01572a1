//! bytes → the sd_notify parser: no panic; known fields round-trip.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| drover_fuzz::notify::run(data));
