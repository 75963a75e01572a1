//! `config_settings`: bytes → a list of `(key, Setting)` with keys drawn from
//! `drover_machine::SETTING_KEYS` (mostly), near misses and junk, and values of every kind
//! with edge cases (negative, above `u32::MAX`, NaN, infinities, huge seconds, empty
//! lists). `Config::from_settings` must never panic; when it accepts, the config validates
//! and `Supervisor::new` starts a pool with it.

use drover_machine::{Config, Instant, Setting, Supervisor, SETTING_KEYS};
use libfuzzer_sys::arbitrary::Unstructured;

const WORDS: &[&str] = &[
    "static",
    "dynamic",
    "ondemand",
    "spawn",
    "notify",
    "default",
    "serverengine",
    "backoff",
    "exit",
    "",
    "STATIC",
    "elastic",
];

const INTS: &[i64] = &[
    0,
    1,
    2,
    3,
    4,
    8,
    16,
    255,
    256,
    99_999,
    100_000,
    100_001,
    -1,
    u32::MAX as i64,
    u32::MAX as i64 + 1,
    i64::MAX,
    i64::MIN,
    1_000_000_000,
    1_000_000_001,
];

const FLOATS: &[f64] = &[
    0.0,
    -0.0,
    0.5,
    1e-9,
    1e-10,
    2.5,
    1e9,
    1e9 + 1.0,
    f64::NAN,
    f64::INFINITY,
    f64::NEG_INFINITY,
    -1.0,
    f64::MIN_POSITIVE,
    f64::MAX,
];

fn key(u: &mut Unstructured) -> String {
    let i: usize = u.int_in_range(0..=SETTING_KEYS.len() + 3).unwrap_or(0);
    match SETTING_KEYS.get(i) {
        Some(k) => (*k).to_string(),
        None => match i - SETTING_KEYS.len() {
            0 => format!(
                "{}x",
                SETTING_KEYS[usize::from(u8_of(u)) % SETTING_KEYS.len()]
            ),
            1 => "restart".to_string(),
            2 => "restart.".to_string(),
            _ => u.arbitrary::<&str>().unwrap_or("").to_string(),
        },
    }
}

fn u8_of(u: &mut Unstructured) -> u8 {
    u.arbitrary().unwrap_or(0)
}

fn value(u: &mut Unstructured) -> Setting {
    let pick = |u: &mut Unstructured, n: usize| -> usize { u.choose_index(n).unwrap_or(0) };
    match u8_of(u) % 9 {
        0 | 1 => Setting::Int(INTS[pick(u, INTS.len())]),
        2 => Setting::Int(u.arbitrary().unwrap_or(0)),
        3 => Setting::Float(FLOATS[pick(u, FLOATS.len())]),
        4 => Setting::Float(u.arbitrary().unwrap_or(0.0)),
        5 | 6 => Setting::Str(WORDS[pick(u, WORDS.len())].to_string()),
        7 => Setting::Bool(u.arbitrary().unwrap_or(false)),
        _ => {
            let n = pick(u, 4);
            Setting::Ints(
                (0..n)
                    .map(|_| match u8_of(u) % 3 {
                        0 => INTS[pick(u, INTS.len())],
                        1 => i64::from(u8_of(u)),
                        _ => u.arbitrary().unwrap_or(0),
                    })
                    .collect(),
            )
        }
    }
}

/// Decodes the settings list: pairs until the bytes run out (at most 64).
pub fn decode(data: &[u8]) -> Vec<(String, Setting)> {
    let mut u = Unstructured::new(data);
    let mut out = Vec::new();
    while !u.is_empty() && out.len() < 64 {
        let k = key(&mut u);
        let v = value(&mut u);
        out.push((k, v));
    }
    out
}

/// The `config_settings` target.
pub fn run(data: &[u8]) {
    let settings = decode(data);
    if crate::tracing() {
        for (k, v) in &settings {
            eprintln!("{k} = {v:?}");
        }
    }
    let result = Config::from_settings(settings.iter().map(|(k, v)| (k.as_str(), v)));
    if crate::tracing() {
        eprintln!("=> {result:?}");
    }
    check_accepted(&result.map_err(|e| e.to_string()), &settings);
}

/// A config that parsing accepted must validate and start a supervisor.
pub fn check_accepted(result: &Result<Config, String>, input: &dyn std::fmt::Debug) {
    let Ok(config) = result else { return };
    if let Err(e) = config.validate() {
        panic!("accepted a config that does not validate ({e}): {input:?}");
    }
    if let Err(e) = Supervisor::new(config.clone(), Instant::ZERO) {
        panic!("accepted a config that Supervisor::new refuses ({e}): {input:?}");
    }
}
