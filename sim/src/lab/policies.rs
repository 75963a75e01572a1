//! Naming the policies a comparison runs: a policy file, or a preset that models what a
//! peer server does (Apache's prefork MPM, php-fpm, parallel_server, unicorn,
//! serverengine), each optionally with keys set over it (`apache-prefork:max=16`). It owns
//! the presets (sim/policies/presets/, compiled in) and the spelling of a policy on the
//! command line; it must not run anything.

use drover_machine::{Config, Setting};

use crate::policy;

/// A peer server's pool rule written as a drover policy; its file says which rule it
/// models, with what defaults, and where it differs.
pub struct Preset {
    pub name: &'static str,
    pub toml: &'static str,
}

pub const PRESETS: &[Preset] = &[
    Preset {
        name: "apache-prefork",
        toml: include_str!("../../policies/presets/apache-prefork.toml"),
    },
    Preset {
        name: "php-fpm-dynamic",
        toml: include_str!("../../policies/presets/php-fpm-dynamic.toml"),
    },
    Preset {
        name: "php-fpm-ondemand",
        toml: include_str!("../../policies/presets/php-fpm-ondemand.toml"),
    },
    Preset {
        name: "parallel-server",
        toml: include_str!("../../policies/presets/parallel-server.toml"),
    },
    Preset {
        name: "unicorn",
        toml: include_str!("../../policies/presets/unicorn.toml"),
    },
    Preset {
        name: "serverengine",
        toml: include_str!("../../policies/presets/serverengine.toml"),
    },
];

/// A policy as the lab shows it: the name it was given and the config it stands for.
#[derive(Clone, Debug)]
pub struct NamedPolicy {
    pub name: String,
    pub config: Config,
}

/// `NAME` (a preset) or `PATH.toml` (a policy file), optionally followed by
/// `:key=value,...` set over it. Errors name the spec and the fix.
pub fn resolve(spec: &str) -> Result<NamedPolicy, String> {
    let (text, overrides) = source(spec)?;
    let config = policy::parse_with(&text, &overrides).map_err(|e| format!("{spec}: {e}"))?;
    Ok(NamedPolicy {
        name: display_name(spec),
        config,
    })
}

/// A spec's policy text (the preset's or the file's) and the keys set over it.
pub fn source(spec: &str) -> Result<(String, Vec<(String, Setting)>), String> {
    let (base, overrides) = match spec.rsplit_once(':') {
        Some((base, rest)) if rest.contains('=') => (base, rest),
        _ => (spec, ""),
    };
    let overrides = policy::parse_overrides(overrides).map_err(|e| format!("{spec}: {e}"))?;
    let text = match PRESETS.iter().find(|p| p.name == base) {
        Some(p) => p.toml.to_string(),
        None if base.ends_with(".toml") || std::path::Path::new(base).exists() => {
            std::fs::read_to_string(base).map_err(|e| format!("{spec}: {base}: {e}"))?
        }
        None => {
            let names: Vec<&str> = PRESETS.iter().map(|p| p.name).collect();
            return Err(format!(
                "{spec}: no such preset or policy file (presets: {}; a file ends in .toml)",
                names.join(", ")
            ));
        }
    };
    Ok((text, overrides))
}

/// A file's stem (`sim/policies/static-16.toml` → `static-16`), a preset's name, with the
/// overrides kept: short enough for a table column and a legend.
fn display_name(spec: &str) -> String {
    let (base, rest) = match spec.rsplit_once(':') {
        Some((base, rest)) if rest.contains('=') => (base, Some(rest)),
        _ => (spec, None),
    };
    let stem = std::path::Path::new(base)
        .file_stem()
        .map_or(base.to_string(), |s| s.to_string_lossy().into_owned());
    match rest {
        Some(r) => format!("{stem}:{r}"),
        None => stem,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_preset_is_a_valid_policy_that_says_what_it_models() {
        for p in PRESETS {
            let named = resolve(p.name).unwrap_or_else(|e| panic!("{}: {e}", p.name));
            assert_eq!(named.name, p.name);
            assert!(
                p.toml.lines().filter(|l| l.starts_with('#')).count() >= 3,
                "{}: the preset's comment cites the rule it models",
                p.name
            );
        }
        let apache = resolve("apache-prefork").unwrap().config;
        assert_eq!(apache.max_spawn_rate, 32);
        assert_eq!(apache.policy.max(), 256);
    }

    #[test]
    fn overrides_and_files_resolve_and_bad_specs_say_why() {
        let p = resolve("apache-prefork:max=16,max_spare=6").unwrap();
        assert_eq!(p.name, "apache-prefork:max=16,max_spare=6");
        assert_eq!(p.config.policy.max(), 16);
        let f = resolve("../sim/policies/static-16.toml")
            .or_else(|_| resolve("policies/static-16.toml"))
            .unwrap();
        assert_eq!(f.name, "static-16");
        let e = resolve("apache").unwrap_err();
        assert!(
            e.contains("no such preset") && e.contains("apache-prefork"),
            "{e}"
        );
        let e = resolve("unicorn:workers=0").unwrap_err();
        assert!(e.contains("workers"), "{e}");
        let e = resolve("nope.toml").unwrap_err();
        assert!(e.contains("nope.toml"), "{e}");
    }
}
