//! `--policy FILE.toml`: a machine config written as the same keys the `drover` shell reads
//! (see `drover_machine::SETTING_KEYS`); nested tables join with `.` (`[restart]` →
//! `restart.backoff_max`).

use drover_machine::{Config, Setting};

/// Parses a policy file's text. Errors name the key and the fix.
pub fn parse(text: &str) -> Result<Config, String> {
    let table: toml::Table = text.parse().map_err(|e| format!("not valid TOML: {e}"))?;
    let mut settings = Vec::new();
    flatten("", &table, &mut settings)?;
    Config::from_settings(settings.iter().map(|(k, v)| (k.as_str(), v))).map_err(|e| e.to_string())
}

fn flatten(
    prefix: &str,
    table: &toml::Table,
    out: &mut Vec<(String, Setting)>,
) -> Result<(), String> {
    for (key, value) in table {
        let key = format!("{prefix}{key}");
        let setting = match value {
            toml::Value::Integer(n) => Setting::Int(*n),
            toml::Value::Float(f) => Setting::Float(*f),
            toml::Value::String(s) => Setting::Str(s.clone()),
            toml::Value::Boolean(b) => Setting::Bool(*b),
            toml::Value::Array(items) => Setting::Ints(
                items
                    .iter()
                    .map(|v| {
                        v.as_integer()
                            .ok_or_else(|| format!("{key} must be a list of whole numbers"))
                    })
                    .collect::<Result<_, _>>()?,
            ),
            toml::Value::Table(t) => {
                flatten(&format!("{key}."), t, out)?;
                continue;
            }
            toml::Value::Datetime(_) => return Err(format!("{key} must not be a date")),
        };
        out.push((key, setting));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_tables_and_reports_unknown_keys() {
        let c = parse("policy = \"dynamic\"\nmin = 2\nmax = 8\nthreads = 2\nmax_spare = 5\n[restart]\nbackoff_max = 5\n").unwrap();
        assert_eq!(c.policy.max(), 8);
        assert_eq!(c.restart.backoff_max.as_secs(), 5);
        let e = parse("workers = 4\nwrokers = 2\n").unwrap_err();
        assert!(e.contains("wrokers"), "{e}");
        let e = parse("workers = 0\n").unwrap_err();
        assert!(e.contains("workers"), "{e}");
        assert!(parse("workers = [").is_err());
    }
}
