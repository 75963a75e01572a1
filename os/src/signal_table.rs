//! Which operator action each signal to drover asks for: drover's own table, the presets of
//! the servers operators come from (`--signals serverengine|unicorn`), and a config file's
//! `[signals]` overrides. Pure parsing: the shell performs the actions
//! (`shell/signals.rs`).

use std::collections::BTreeMap;

use signal_hook::consts::signal::*;

/// What a signal asks drover to do.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum SignalAction {
    /// Graceful stop (a second one while draining: immediate).
    Stop,
    /// Immediate stop.
    StopNow,
    /// Rolling restart, one worker at a time.
    Restart,
    /// Every worker at once, through the ladder's immediate stage.
    RestartNow,
    /// Re-read the config file.
    Reload,
    /// Live upgrade.
    Upgrade,
    ScaleUp,
    ScaleDown,
    /// Reopen drover's log file (logrotate).
    ReopenLogs,
    /// Write the machine's state and recent trace lines to the log.
    Dump,
}

impl SignalAction {
    const ALL: [SignalAction; 10] = [
        SignalAction::Stop,
        SignalAction::StopNow,
        SignalAction::Restart,
        SignalAction::RestartNow,
        SignalAction::Reload,
        SignalAction::Upgrade,
        SignalAction::ScaleUp,
        SignalAction::ScaleDown,
        SignalAction::ReopenLogs,
        SignalAction::Dump,
    ];

    pub fn name(self) -> &'static str {
        match self {
            SignalAction::Stop => "stop",
            SignalAction::StopNow => "stop-now",
            SignalAction::Restart => "restart",
            SignalAction::RestartNow => "restart-now",
            SignalAction::Reload => "reload",
            SignalAction::Upgrade => "upgrade",
            SignalAction::ScaleUp => "scale-up",
            SignalAction::ScaleDown => "scale-down",
            SignalAction::ReopenLogs => "reopen-logs",
            SignalAction::Dump => "dump",
        }
    }

    fn from_name(name: &str) -> Option<SignalAction> {
        SignalAction::ALL.into_iter().find(|a| a.name() == name)
    }
}

/// The signals an operator may map. Drover catches every one of them whatever the table
/// says (one with no action is logged and ignored rather than killing drover, as USR1's
/// default would); KILL and STOP cannot be caught, and CHLD is drover's own.
pub const CONFIGURABLE: [(&str, i32); 10] = [
    ("HUP", SIGHUP),
    ("INT", SIGINT),
    ("QUIT", SIGQUIT),
    ("TERM", SIGTERM),
    ("USR1", SIGUSR1),
    ("USR2", SIGUSR2),
    ("TTIN", SIGTTIN),
    ("TTOU", SIGTTOU),
    ("CONT", SIGCONT),
    ("WINCH", SIGWINCH),
];

/// The presets `--signals` takes.
pub const PRESETS: [&str; 3] = ["drover", "serverengine", "unicorn"];

/// The name of a configurable signal (`TERM`), for logs.
pub fn signal_name(sig: i32) -> &'static str {
    CONFIGURABLE
        .iter()
        .find(|(_, n)| *n == sig)
        .map_or("?", |(name, _)| name)
}

/// Signal number → the actions it asks for, in order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SignalTable {
    map: BTreeMap<i32, Vec<SignalAction>>,
    pub preset: &'static str,
}

impl SignalTable {
    /// A preset's table. drover's own: TERM/INT graceful stop, QUIT immediate stop, USR1
    /// rolling restart, HUP reopen logs and reload, USR2 live upgrade, TTIN/TTOU scale.
    pub fn preset(name: &str) -> Result<SignalTable, String> {
        use SignalAction::*;
        let rows: &[(i32, &[SignalAction])] = match name {
            "drover" => &[
                (SIGTERM, &[Stop]),
                (SIGINT, &[Stop]),
                (SIGQUIT, &[StopNow]),
                (SIGUSR1, &[Restart]),
                (SIGHUP, &[ReopenLogs, Reload]),
                (SIGUSR2, &[Upgrade]),
                (SIGTTIN, &[ScaleUp]),
                (SIGTTOU, &[ScaleDown]),
            ],
            // serverengine's server (its supervisor forwards the same signals): USR1 is a
            // graceful and HUP an immediate restart, USR2 reloads the config and reopens the
            // log, CONT dumps (sigdump).
            "serverengine" => &[
                (SIGTERM, &[Stop]),
                (SIGINT, &[Stop]),
                (SIGQUIT, &[StopNow]),
                (SIGUSR1, &[Restart]),
                (SIGHUP, &[RestartNow]),
                (SIGUSR2, &[ReopenLogs, Reload]),
                (SIGCONT, &[Dump]),
                (SIGTTIN, &[ScaleUp]),
                (SIGTTOU, &[ScaleDown]),
            ],
            // unicorn's master: TERM/INT quick shutdown, QUIT graceful, HUP reload (new
            // workers), USR1 reopen logs, USR2 re-exec (live upgrade), TTIN/TTOU.
            "unicorn" => &[
                (SIGTERM, &[StopNow]),
                (SIGINT, &[StopNow]),
                (SIGQUIT, &[Stop]),
                (SIGUSR1, &[ReopenLogs]),
                (SIGHUP, &[Reload, Restart]),
                (SIGUSR2, &[Upgrade]),
                (SIGTTIN, &[ScaleUp]),
                (SIGTTOU, &[ScaleDown]),
            ],
            other => {
                return Err(format!(
                    "invalid --signals '{other}': one of {}",
                    PRESETS.join(", ")
                ))
            }
        };
        let preset = PRESETS.iter().find(|p| **p == name).expect("matched above");
        Ok(SignalTable {
            map: rows.iter().map(|(s, a)| (*s, a.to_vec())).collect(),
            preset,
        })
    }

    /// The actions `sig` asks for (none for a signal the table leaves out).
    pub fn actions(&self, sig: i32) -> &[SignalAction] {
        self.map.get(&sig).map_or(&[], Vec::as_slice)
    }

    /// Sets one signal from the config file's `[signals]` table: `"restart"`,
    /// `["reopen-logs", "reload"]`, or `"none"` / `[]` to ignore it.
    pub fn set(&mut self, signal: &str, value: &toml::Value) -> Result<(), String> {
        let bare = signal.trim_start_matches("SIG");
        let Some(&(_, sig)) = CONFIGURABLE.iter().find(|(n, _)| *n == bare) else {
            return Err(format!(
                "config file: `[signals]` has `{signal}`, which is not a signal drover lets you map; one of {} (or `preset`)",
                CONFIGURABLE.map(|(n, _)| n).join(", ")
            ));
        };
        let names: Vec<&str> = match value {
            toml::Value::String(s) if s == "none" => Vec::new(),
            toml::Value::String(s) => vec![s.as_str()],
            toml::Value::Array(items) => items
                .iter()
                .map(|v| v.as_str())
                .collect::<Option<_>>()
                .ok_or_else(|| {
                    format!(
                        "config file: `signals.{signal}` must be an action or a list of actions"
                    )
                })?,
            _ => {
                return Err(format!(
                    "config file: `signals.{signal}` must be an action or a list of actions"
                ))
            }
        };
        let mut actions = Vec::with_capacity(names.len());
        for name in names {
            let action = SignalAction::from_name(name).ok_or_else(|| {
                format!(
                    "config file: `signals.{signal}` = \"{name}\" is no action; one of {}, or \"none\"",
                    SignalAction::ALL.map(SignalAction::name).join(", ")
                )
            })?;
            if actions.contains(&action) {
                return Err(format!(
                    "config file: `signals.{signal}` lists \"{name}\" twice"
                ));
            }
            actions.push(action);
        }
        self.map.insert(sig, actions);
        Ok(())
    }

    /// The table from `--signals` (beats the file's preset) and the file's `signals`: a
    /// preset's name, or a table of signals (with an optional `preset` key as its base).
    pub fn from_settings(
        flag: Option<&str>,
        file: Option<&toml::Value>,
    ) -> Result<SignalTable, String> {
        let (file_preset, overrides) = match file {
            None => (None, None),
            Some(toml::Value::String(name)) => (Some(name.as_str()), None),
            Some(toml::Value::Table(t)) => {
                let preset = match t.get("preset") {
                    None => None,
                    Some(toml::Value::String(name)) => Some(name.as_str()),
                    Some(_) => {
                        return Err("config file: `signals.preset` must be a preset's name".into())
                    }
                };
                (preset, Some(t))
            }
            Some(_) => {
                return Err(
                    "config file: `signals` must be a preset's name or a `[signals]` table".into(),
                )
            }
        };
        let preset = flag.or(file_preset).unwrap_or("drover");
        let mut table = SignalTable::preset(preset).map_err(|e| match flag {
            Some(_) => e,
            None => e.replace("invalid --signals", "config file: invalid `signals` preset"),
        })?;
        for (signal, value) in overrides.into_iter().flatten() {
            if signal != "preset" {
                table.set(signal, value)?;
            }
        }
        Ok(table)
    }

    /// One line per mapped signal (`HUP=reopen-logs+reload`), for the start-up log.
    pub fn describe(&self) -> String {
        CONFIGURABLE
            .iter()
            .filter(|(_, sig)| !self.actions(*sig).is_empty())
            .map(|(name, sig)| {
                let actions: Vec<&str> = self.actions(*sig).iter().map(|a| a.name()).collect();
                format!("{name}={}", actions.join("+"))
            })
            .collect::<Vec<_>>()
            .join(" ")
    }

    /// Whether any signal stops drover: a service manager stops a service with TERM.
    pub fn stops(&self) -> bool {
        self.map
            .values()
            .flatten()
            .any(|a| matches!(a, SignalAction::Stop | SignalAction::StopNow))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(text: &str) -> toml::Value {
        let t: toml::Table = text.parse().unwrap();
        t["signals"].clone()
    }

    #[test]
    fn presets_differ_where_their_servers_do() {
        let d = SignalTable::preset("drover").unwrap();
        let se = SignalTable::preset("serverengine").unwrap();
        let u = SignalTable::preset("unicorn").unwrap();
        assert_eq!(
            d.actions(SIGHUP),
            [SignalAction::ReopenLogs, SignalAction::Reload]
        );
        assert_eq!(se.actions(SIGHUP), [SignalAction::RestartNow]);
        assert_eq!(se.actions(SIGCONT), [SignalAction::Dump]);
        assert_eq!(d.actions(SIGCONT), []);
        assert_eq!(u.actions(SIGQUIT), [SignalAction::Stop]);
        assert_eq!(u.actions(SIGTERM), [SignalAction::StopNow]);
        assert!(d.stops() && se.stops() && u.stops());
        let e = SignalTable::preset("nginx").unwrap_err();
        assert!(e.contains("--signals") && e.contains("serverengine"), "{e}");
    }

    #[test]
    fn the_file_overrides_a_preset_and_the_flag_beats_the_files_preset() {
        let v = file("[signals]\npreset = \"serverengine\"\nCONT = \"none\"\nSIGWINCH = [\"dump\"]\nUSR1 = \"restart-now\"\n");
        let t = SignalTable::from_settings(None, Some(&v)).unwrap();
        assert_eq!(t.preset, "serverengine");
        assert_eq!(t.actions(SIGCONT), []);
        assert_eq!(t.actions(SIGWINCH), [SignalAction::Dump]);
        assert_eq!(t.actions(SIGUSR1), [SignalAction::RestartNow]);
        let t = SignalTable::from_settings(Some("unicorn"), Some(&v)).unwrap();
        assert_eq!(t.preset, "unicorn");
        assert_eq!(t.actions(SIGQUIT), [SignalAction::Stop]);
        assert_eq!(
            t.actions(SIGUSR1),
            [SignalAction::RestartNow],
            "the file's rows still apply"
        );
        let t = SignalTable::from_settings(None, Some(&file("signals = \"unicorn\""))).unwrap();
        assert_eq!(t.preset, "unicorn");
        assert_eq!(
            SignalTable::from_settings(None, None).unwrap().preset,
            "drover"
        );
    }

    #[test]
    fn bad_rows_name_the_key_and_the_choices() {
        let bad = |text: &str| SignalTable::from_settings(None, Some(&file(text))).unwrap_err();
        let e = bad("[signals]\nKILL = \"stop\"\n");
        assert!(e.contains("`KILL`") && e.contains("TERM"), "{e}");
        let e = bad("[signals]\nUSR1 = \"rstart\"\n");
        assert!(
            e.contains("signals.USR1") && e.contains("restart-now"),
            "{e}"
        );
        let e = bad("[signals]\nUSR1 = 3\n");
        assert!(e.contains("signals.USR1"), "{e}");
        let e = bad("[signals]\nUSR1 = [\"dump\", \"dump\"]\n");
        assert!(e.contains("twice"), "{e}");
        let e = bad("signals = \"apache\"");
        assert!(e.contains("config file") && e.contains("preset"), "{e}");
        let e = bad("signals = 1");
        assert!(e.contains("`signals`"), "{e}");
    }

    #[test]
    fn described_for_the_log() {
        let t = SignalTable::preset("serverengine").unwrap();
        assert_eq!(
            t.describe(),
            "HUP=restart-now INT=stop QUIT=stop-now TERM=stop USR1=restart USR2=reopen-logs+reload TTIN=scale-up TTOU=scale-down CONT=dump"
        );
    }
}
