//! bytes → a config and a sequence of machine inputs; invariants after every `handle`.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| drover_fuzz::machine::run(data));
