//! The config file: read, split into the shell's keys and the machine's settings
//! (`[restart] backoff_max = 5` flattened to `restart.backoff_max`).

use std::path::Path;

use drover_machine::Setting;

/// A problem with the operator's input: printed on stderr, exit code 2.
#[derive(Debug)]
pub struct UsageError(pub String);

impl std::fmt::Display for UsageError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

pub(crate) fn usage(msg: impl Into<String>) -> UsageError {
    UsageError(msg.into())
}

/// Keys of the config file that belong to the shell; every other key is a machine setting
/// (`drover_machine::SETTING_KEYS`, read by `Config::from_settings`).
pub(super) const SHELL_KEYS: &[&str] = &[
    "listen",
    "allow",
    "listen_per_worker",
    "backlog",
    "unix_mode",
    "pid_file",
    "control",
    "log_level",
    "metrics_listen",
    "command",
    "upgrade_command",
    "user",
    "group",
    "drop_privileges",
    "umask",
    "chdir",
    "env",
    "log_file",
    "log_format",
    "worker_output",
    "daemonize",
    "signals",
    "tls_cert",
    "tls_key",
    "tls_client_ca",
    "tls_client_auth",
    "tls_handshake_timeout",
];

/// The config file, split into the shell's keys and the machine's settings.
#[derive(Debug, Default)]
pub(crate) struct FileConfig {
    pub(super) shell: toml::Table,
    pub(super) machine: Vec<(String, Setting)>,
}

impl FileConfig {
    pub(crate) fn parse(text: &str) -> Result<FileConfig, String> {
        let table: toml::Table = text.parse().map_err(|e: toml::de::Error| e.to_string())?;
        let mut file = FileConfig::default();
        for (key, value) in table {
            if SHELL_KEYS.contains(&key.as_str()) {
                file.shell.insert(key, value);
            } else {
                flatten(&key, value, &mut file.machine)?;
            }
        }
        Ok(file)
    }

    pub(crate) fn string(&self, key: &str) -> Result<Option<String>, UsageError> {
        match self.shell.get(key) {
            None => Ok(None),
            Some(toml::Value::String(s)) => Ok(Some(s.clone())),
            Some(_) => Err(usage(format!("config file: `{key}` must be a string"))),
        }
    }

    pub(crate) fn boolean(&self, key: &str) -> Result<Option<bool>, UsageError> {
        match self.shell.get(key) {
            None => Ok(None),
            Some(toml::Value::Boolean(b)) => Ok(Some(*b)),
            Some(_) => Err(usage(format!("config file: `{key}` must be true or false"))),
        }
    }

    pub(super) fn strings(&self, key: &str) -> Result<Option<Vec<String>>, UsageError> {
        let Some(value) = self.shell.get(key) else {
            return Ok(None);
        };
        let items = value.as_array().and_then(|items| {
            items
                .iter()
                .map(|v| v.as_str().map(str::to_string))
                .collect::<Option<Vec<_>>>()
        });
        items
            .map(Some)
            .ok_or_else(|| usage(format!("config file: `{key}` must be a list of strings")))
    }

    pub(super) fn int(&self, key: &str) -> Result<Option<i64>, UsageError> {
        match self.shell.get(key) {
            None => Ok(None),
            Some(toml::Value::Integer(n)) => Ok(Some(*n)),
            Some(_) => Err(usage(format!(
                "config file: `{key}` must be a whole number"
            ))),
        }
    }
}

/// `[restart] backoff_max = 5` becomes `restart.backoff_max`.
fn flatten(key: &str, value: toml::Value, out: &mut Vec<(String, Setting)>) -> Result<(), String> {
    let setting = match value {
        toml::Value::Integer(n) => Setting::Int(n),
        toml::Value::Float(f) => Setting::Float(f),
        toml::Value::String(s) => Setting::Str(s),
        toml::Value::Boolean(b) => Setting::Bool(b),
        toml::Value::Array(items) => Setting::Ints(
            items
                .iter()
                .map(|v| {
                    v.as_integer()
                        .ok_or(format!("`{key}` must be a list of whole numbers"))
                })
                .collect::<Result<_, _>>()?,
        ),
        toml::Value::Table(t) => {
            for (k, v) in t {
                flatten(&format!("{key}.{k}"), v, out)?;
            }
            return Ok(());
        }
        toml::Value::Datetime(_) => return Err(format!("`{key}` must not be a date")),
    };
    out.push((key.to_string(), setting));
    Ok(())
}

pub(super) fn read_file(path: &Path) -> Result<FileConfig, UsageError> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| usage(format!("config file {}: {e}", path.display())))?;
    FileConfig::parse(&text)
        .map_err(|e| usage(format!("config file {}: {}", path.display(), e.trim_end())))
}
