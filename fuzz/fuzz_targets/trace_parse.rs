//! bytes → the policy lab's trace reader: no panic; accepted traces are replayable.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| drover_fuzz::trace::run(data));
