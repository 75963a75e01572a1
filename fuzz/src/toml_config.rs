//! `config_toml`: bytes as UTF-8 → the config file parser of `drover run --config`
//! (`drover_os::parse::config_text`): never panics; a config it accepts validates and
//! starts a supervisor.

/// The `config_toml` target.
pub fn run(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let result = drover_os::parse::config_text(text);
    if crate::tracing() {
        eprintln!("{text}\n=> {result:?}");
    }
    crate::settings::check_accepted(&result, &text);
}
