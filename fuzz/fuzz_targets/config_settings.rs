//! bytes → `(key, Setting)` lists → `Config::from_settings`: no panic; accepted ⇒ valid.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| drover_fuzz::settings::run(data));
