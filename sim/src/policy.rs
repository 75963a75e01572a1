//! `--policy FILE.toml`: a machine config written as the same keys the `drover` shell reads
//! (see `drover_machine::SETTING_KEYS`); nested tables join with `.` (`[restart]` →
//! `restart.backoff_max`).

use drover_machine::{Config, Setting};

/// Parses a policy file's text. Errors name the key and the fix.
pub fn parse(text: &str) -> Result<Config, String> {
    parse_with(text, &[])
}

/// Parses a policy file's text with some keys set over it (`key=value` from a command
/// line: a preset's `:max=16`, a sweep's grid point).
pub fn parse_with(text: &str, overrides: &[(String, Setting)]) -> Result<Config, String> {
    let table: toml::Table = text.parse().map_err(|e| format!("not valid TOML: {e}"))?;
    let mut settings = Vec::new();
    flatten("", &table, &mut settings)?;
    for (key, value) in overrides {
        settings.retain(|(k, _)| k != key);
        settings.push((key.clone(), value.clone()));
    }
    Config::from_settings(settings.iter().map(|(k, v)| (k.as_str(), v))).map_err(|e| e.to_string())
}

/// A value as written on a command line: a whole number, a number, `true`/`false`, or else
/// text (`ladder=serverengine`; quotes optional).
pub fn setting_value(text: &str) -> Setting {
    let t = text.trim();
    if let Ok(n) = t.parse::<i64>() {
        Setting::Int(n)
    } else if let Ok(f) = t.parse::<f64>() {
        Setting::Float(f)
    } else if let Ok(b) = t.parse::<bool>() {
        Setting::Bool(b)
    } else {
        Setting::Str(t.trim_matches('"').to_string())
    }
}

/// `key=value,key=value` into settings; errors name the pair.
pub fn parse_overrides(text: &str) -> Result<Vec<(String, Setting)>, String> {
    text.split(',')
        .filter(|p| !p.trim().is_empty())
        .map(|pair| {
            let (k, v) = pair
                .split_once('=')
                .ok_or_else(|| format!("{pair:?} is not key=value (e.g. max=16)"))?;
            Ok((k.trim().to_string(), setting_value(v)))
        })
        .collect()
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

    #[test]
    fn overrides_replace_the_file_s_keys() {
        let o = parse_overrides("max=8, max_spare=3,restart.backoff_max=2.5").unwrap();
        let c = parse_with(
            "policy = \"dynamic\"\nmin = 2\nmax = 16\nmax_spare = 6\n",
            &o,
        )
        .unwrap();
        assert_eq!(c.policy.max(), 8);
        assert_eq!(c.restart.backoff_max.as_millis(), 2500);
        assert!(parse_overrides("max").unwrap_err().contains("key=value"));
        let e = parse_with("workers = 2\n", &parse_overrides("wrokers=3").unwrap()).unwrap_err();
        assert!(e.contains("wrokers"), "{e}");
        assert_eq!(
            setting_value("serverengine"),
            Setting::Str("serverengine".into())
        );
        assert_eq!(setting_value("true"), Setting::Bool(true));
        assert_eq!(setting_value("0.5"), Setting::Float(0.5));
    }
}
