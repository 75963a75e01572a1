//! Config from named settings: the one place where the option names of the TOML file (the
//! shell's `--config`, the simulator's `--policy`) map to `Config` fields, so both read the
//! same keys and report the same errors. Callers parse their file format into `Setting`s.

use core::time::Duration;
use std::sync::Arc;

use crate::config::{Config, ConfigError, Ladder, OnCrashLoop, Policy, Readiness};

/// A value as a config file holds it.
#[derive(Clone, Debug, PartialEq)]
pub enum Setting {
    /// An integer.
    Int(i64),
    /// A number with a fraction (seconds may be given so).
    Float(f64),
    /// A string.
    Str(String),
    /// A boolean.
    Bool(bool),
    /// A list of integers (exit codes).
    Ints(Vec<i64>),
}

/// Every key `Config::from_settings` accepts, for help texts and "did you mean" messages.
pub const SETTING_KEYS: &[&str] = &[
    "policy",
    "workers",
    "min",
    "max",
    "start",
    "min_spare",
    "max_spare",
    "threads",
    "max_spawn_rate",
    "maintenance_interval",
    "idle_timeout",
    "max_requests",
    "max_requests_jitter",
    "seed",
    "readiness",
    "boot_timeout",
    "heartbeat_timeout",
    "request_timeout",
    "stop_timeout",
    "ladder",
    "max_surge",
    "max_unavailable",
    "upgrade_timeout",
    "restart.backoff_min",
    "restart.backoff_max",
    "restart.healthy_uptime",
    "restart.intensity_deaths",
    "restart.intensity_window",
    "restart.on_crash_loop",
    "restart.crash_loop_exit_code",
    "restart.unrecoverable_exit_codes",
    "restart.stop_on_unrecoverable",
    "restart.quick_restart_rate",
];

fn bad(field: &'static str, problem: impl Into<String>) -> ConfigError {
    ConfigError {
        field,
        problem: problem.into(),
    }
}

fn field_name(key: &str) -> Option<&'static str> {
    SETTING_KEYS.iter().copied().find(|k| *k == key)
}

fn uint(field: &'static str, v: &Setting) -> Result<u64, ConfigError> {
    match v {
        Setting::Int(n) if *n >= 0 => Ok(*n as u64),
        Setting::Int(n) => Err(bad(field, format!("is {n}; it must not be negative"))),
        other => Err(bad(field, format!("must be a whole number, not {other:?}"))),
    }
}

fn u32_of(field: &'static str, v: &Setting) -> Result<u32, ConfigError> {
    let n = uint(field, v)?;
    u32::try_from(n).map_err(|_| bad(field, format!("is {n}, above {}", u32::MAX)))
}

/// Seconds, whole or fractional. A value of 0 stays 0 (validation decides if that is allowed).
fn secs(field: &'static str, v: &Setting) -> Result<Duration, ConfigError> {
    let s = match v {
        Setting::Int(n) => *n as f64,
        Setting::Float(f) => *f,
        other => {
            return Err(bad(
                field,
                format!("must be a number of seconds, not {other:?}"),
            ))
        }
    };
    if !s.is_finite() || !(0.0..=1e9).contains(&s) {
        return Err(bad(
            field,
            format!("is {s}; give seconds between 0 and 1e9"),
        ));
    }
    Ok(Duration::from_secs_f64(s))
}

/// An optional timeout: 0 or `false` turns it off.
fn opt_secs(field: &'static str, v: &Setting) -> Result<Option<Duration>, ConfigError> {
    match v {
        Setting::Bool(false) => Ok(None),
        _ => secs(field, v).map(|d| (!d.is_zero()).then_some(d)),
    }
}

fn text<'a>(field: &'static str, v: &'a Setting) -> Result<&'a str, ConfigError> {
    match v {
        Setting::Str(s) => Ok(s),
        other => Err(bad(field, format!("must be a string, not {other:?}"))),
    }
}

impl Config {
    /// Builds a config from `key = value` settings (keys as in `SETTING_KEYS`, nested tables
    /// joined with `.`). Unknown keys, wrong types and invalid combinations are errors naming
    /// the key. Unset keys keep `Config::new`'s defaults for the chosen policy.
    pub fn from_settings<'a>(
        settings: impl IntoIterator<Item = (&'a str, &'a Setting)>,
    ) -> Result<Config, ConfigError> {
        let settings: Vec<(&'static str, &Setting)> = settings
            .into_iter()
            .map(|(k, v)| {
                field_name(k).map(|f| (f, v)).ok_or_else(|| ConfigError {
                    field: "config",
                    problem: format!(
                        "has an unknown key `{k}`; known keys: {}",
                        SETTING_KEYS.join(", ")
                    ),
                })
            })
            .collect::<Result<_, _>>()?;
        let get = |key: &str| settings.iter().find(|(k, _)| *k == key).map(|(_, v)| *v);
        let u = |key: &'static str, default: u32| get(key).map_or(Ok(default), |v| u32_of(key, v));

        let policy_name = match get("policy") {
            Some(v) => text("policy", v)?.to_string(),
            None if get("min").is_some() || get("max").is_some() => "dynamic".into(),
            None => "static".into(),
        };
        let policy = match policy_name.as_str() {
            "static" => Policy::Static {
                workers: u("workers", 1)?,
            },
            "dynamic" => {
                let min = u("min", 1)?;
                let max = u("max", min.max(4))?;
                let min_spare = u("min_spare", 1)?;
                // Wide enough that one new worker's threads cannot jump the pool from below
                // min_spare to above max_spare (validation requires it).
                let threads = u("threads", 1)?;
                let max_spare = u("max_spare", min_spare.saturating_add(threads.max(3) - 1))?;
                let start = u(
                    "start",
                    min_spare.midpoint(max_spare).clamp(min, max.max(min)),
                )?;
                Policy::Dynamic {
                    min,
                    max,
                    start,
                    min_spare,
                    max_spare,
                }
            }
            "ondemand" => Policy::Ondemand {
                min: u("min", 0)?,
                max: u("max", 4)?,
            },
            other => {
                return Err(bad(
                    "policy",
                    format!("is `{other}`; use static, dynamic or ondemand"),
                ))
            }
        };
        for (key, only) in [
            ("workers", "static"),
            ("start", "dynamic"),
            ("min_spare", "dynamic"),
            ("max_spare", "dynamic"),
        ] {
            if get(key).is_some() && policy_name != only {
                return Err(bad(
                    field_name(key).expect("listed"),
                    format!("applies to a {only} pool, but policy is {policy_name}"),
                ));
            }
        }
        let mut c = Config::new(policy);
        for (key, v) in &settings {
            let key = *key;
            match key {
                "policy" | "workers" | "min" | "max" | "start" | "min_spare" | "max_spare" => {}
                "threads" => c.threads = u32_of(key, v)?,
                "max_spawn_rate" => c.max_spawn_rate = u32_of(key, v)?,
                "maintenance_interval" => c.maintenance_interval = secs(key, v)?,
                "idle_timeout" => c.idle_timeout = opt_secs(key, v)?,
                "max_requests" => c.max_requests = Some(uint(key, v)?).filter(|n| *n > 0),
                "max_requests_jitter" => c.max_requests_jitter = uint(key, v)?,
                "seed" => c.seed = uint(key, v)?,
                "readiness" => {
                    c.readiness = match text(key, v)? {
                        "spawn" => Readiness::AtSpawn,
                        "notify" => Readiness::Notify,
                        other => {
                            return Err(bad(key, format!("is `{other}`; use spawn or notify")))
                        }
                    }
                }
                "boot_timeout" => c.boot_timeout = secs(key, v)?,
                "heartbeat_timeout" => c.heartbeat_timeout = opt_secs(key, v)?,
                "request_timeout" => c.request_timeout = opt_secs(key, v)?,
                // Applied below, after `ladder` picks the preset.
                "stop_timeout" | "ladder" => {}
                "max_surge" => c.max_surge = u32_of(key, v)?,
                "max_unavailable" => c.max_unavailable = u32_of(key, v)?,
                "upgrade_timeout" => c.upgrade_timeout = secs(key, v)?,
                "restart.backoff_min" => c.restart.backoff_min = secs(key, v)?,
                "restart.backoff_max" => c.restart.backoff_max = secs(key, v)?,
                "restart.healthy_uptime" => c.restart.healthy_uptime = secs(key, v)?,
                "restart.intensity_deaths" => c.restart.intensity_deaths = u32_of(key, v)?,
                "restart.intensity_window" => c.restart.intensity_window = secs(key, v)?,
                "restart.quick_restart_rate" => c.restart.quick_restart_rate = u32_of(key, v)?,
                "restart.on_crash_loop" | "restart.crash_loop_exit_code" => {}
                "restart.unrecoverable_exit_codes" => {
                    c.restart.unrecoverable_exit_codes = match v {
                        Setting::Ints(codes) => codes
                            .iter()
                            .map(|&n| {
                                i32::try_from(n)
                                    .ok()
                                    .filter(|n| (1..=255).contains(n))
                                    .ok_or_else(|| {
                                        bad(key, format!("holds {n}; exit codes are 1..=255"))
                                    })
                            })
                            .collect::<Result<_, _>>()?,
                        other => {
                            return Err(bad(
                                key,
                                format!("must be a list of exit codes, not {other:?}"),
                            ))
                        }
                    }
                }
                "restart.stop_on_unrecoverable" => {
                    c.restart.stop_on_unrecoverable = match v {
                        Setting::Bool(b) => *b,
                        other => {
                            return Err(bad(key, format!("must be true or false, not {other:?}")))
                        }
                    }
                }
                _ => unreachable!("`{key}` is listed in SETTING_KEYS but not handled"),
            }
        }
        let stop_timeout = get("stop_timeout")
            .map(|v| secs("stop_timeout", v))
            .transpose()?;
        let ladder = match get("ladder").map(|v| text("ladder", v)).transpose()? {
            None | Some("default") => Ladder::for_any_program(stop_timeout.unwrap_or(Duration::from_secs(30))),
            Some("serverengine") if stop_timeout.is_some() => {
                return Err(bad("stop_timeout", "does not apply to the serverengine ladder (its timeouts are fixed at 600 s + 600 s); remove one"))
            }
            Some("serverengine") => Ladder::serverengine(),
            Some(other) => return Err(bad("ladder", format!("is `{other}`; use default or serverengine"))),
        };
        c.ladder = Arc::new(ladder);
        let crash_code = get("restart.crash_loop_exit_code")
            .map(|v| uint("restart.crash_loop_exit_code", v))
            .transpose()?;
        c.restart.on_crash_loop = match get("restart.on_crash_loop")
            .map(|v| text("restart.on_crash_loop", v))
            .transpose()?
        {
            None | Some("backoff") if crash_code.is_none() => OnCrashLoop::Backoff,
            None | Some("exit") => {
                let code = crash_code.unwrap_or(1);
                if !(1..=255).contains(&code) {
                    return Err(bad(
                        "restart.crash_loop_exit_code",
                        format!("is {code}; exit codes are 1..=255"),
                    ));
                }
                OnCrashLoop::Exit(code as i32)
            }
            Some("backoff") => {
                return Err(bad(
                    "restart.crash_loop_exit_code",
                    "is set but restart.on_crash_loop is backoff; remove one",
                ))
            }
            Some(other) => {
                return Err(bad(
                    "restart.on_crash_loop",
                    format!("is `{other}`; use backoff or exit"),
                ))
            }
        };
        c.validate()?;
        Ok(c)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(pairs: &[(&str, Setting)]) -> Result<Config, ConfigError> {
        Config::from_settings(pairs.iter().map(|(k, v)| (*k, v)))
    }

    #[test]
    fn defaults_and_presets() {
        let c = cfg(&[("workers", Setting::Int(4))]).unwrap();
        assert_eq!(c.policy, Policy::Static { workers: 4 });
        let c = cfg(&[
            ("min", Setting::Int(2)),
            ("max", Setting::Int(10)),
            ("ladder", Setting::Str("serverengine".into())),
            ("heartbeat_timeout", Setting::Float(2.5)),
            ("restart.on_crash_loop", Setting::Str("exit".into())),
            ("restart.crash_loop_exit_code", Setting::Int(75)),
        ])
        .unwrap();
        assert_eq!(c.policy.name(), "dynamic");
        assert_eq!(*c.ladder, Ladder::serverengine());
        assert_eq!(c.heartbeat_timeout, Some(Duration::from_millis(2500)));
        assert_eq!(c.restart.on_crash_loop, OnCrashLoop::Exit(75));
        let c = cfg(&[("stop_timeout", Setting::Int(5))]).unwrap();
        assert_eq!(c.ladder.time_to_kill(0), Duration::from_secs(5));
    }

    #[test]
    fn huge_spares_do_not_overflow_the_default_start() {
        // Found by the config fuzzer: the default start added the spares in u32.
        let r = cfg(&[
            ("min", Setting::Int(1)),
            ("max", Setting::Int(4)),
            ("min_spare", Setting::Int(4294967295)),
        ]);
        assert_eq!(r.map(|c| c.policy.start()), Ok(4));
        let c = Config::dynamic(1, 4, u32::MAX, u32::MAX);
        assert_eq!(c.policy.start(), 4);
    }

    #[test]
    fn errors_name_the_key() {
        let field = |pairs: &[(&str, Setting)]| cfg(pairs).unwrap_err().field;
        assert_eq!(field(&[("wrokers", Setting::Int(4))]), "config");
        assert_eq!(field(&[("workers", Setting::Int(0))]), "workers");
        assert_eq!(field(&[("workers", Setting::Str("abc".into()))]), "workers");
        assert_eq!(field(&[("workers", Setting::Int(-1))]), "workers");
        assert_eq!(
            field(&[("policy", Setting::Str("elastic".into()))]),
            "policy"
        );
        assert_eq!(
            field(&[
                ("policy", Setting::Str("static".into())),
                ("min_spare", Setting::Int(2))
            ]),
            "min_spare"
        );
        assert_eq!(
            field(&[("boot_timeout", Setting::Float(f64::NAN))]),
            "boot_timeout"
        );
        assert_eq!(
            field(&[("restart.unrecoverable_exit_codes", Setting::Ints(vec![0]))]),
            "restart.unrecoverable_exit_codes"
        );
        assert_eq!(
            field(&[
                ("ladder", Setting::Str("serverengine".into())),
                ("stop_timeout", Setting::Int(3))
            ]),
            "stop_timeout"
        );
        let msg = cfg(&[("wrokers", Setting::Int(4))])
            .unwrap_err()
            .to_string();
        assert!(msg.contains("wrokers"), "{msg}");
    }
}
