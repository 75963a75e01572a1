//! docs/operating.md must name every config key and every flag of every `drover`
//! subcommand: a key or flag added to the code without a line in the operator's reference
//! fails here.
//!
//! The lists come from the code as it runs, not from a copy: the machine's keys from
//! `drover_machine::SETTING_KEYS`, the shell's own keys from the message the built binary
//! prints for an unknown config key (it lists every key it knows), and the flags from each
//! subcommand's `--help`.

use std::path::PathBuf;
use std::process::Command;

const DROVER: &str = env!("CARGO_BIN_EXE_drover");

fn doc() -> String {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../docs/operating.md");
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()))
}

/// `drover ARGS`: exit code, stdout and stderr.
fn drover(args: &[&str]) -> (Option<i32>, String, String) {
    let out = Command::new(DROVER)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {DROVER}: {e}"));
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Whether `text` holds `word` as a whole: not as part of a longer flag or key
/// (`--min` inside `--min-spare`, `max` inside `max_spare`).
fn holds_word(text: &str, word: &str) -> bool {
    let part = |c: char| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.');
    text.match_indices(word).any(|(at, _)| {
        let before = text[..at].chars().next_back();
        let after = text[at + word.len()..].chars().next();
        !before.is_some_and(part) && !after.is_some_and(part)
    })
}

/// Every key a config file may hold, as the binary itself lists them for an unknown key.
fn keys_known_to_the_binary() -> Vec<String> {
    let path = std::env::temp_dir().join(format!("drover-doc-test-{}.toml", std::process::id()));
    std::fs::write(&path, "no_such_key_for_the_doc_test = 1\n").expect("write a temp config");
    let (code, _, stderr) = drover(&["run", "--config", path.to_str().expect("utf-8"), "--", "sh"]);
    let _ = std::fs::remove_file(&path);
    assert_eq!(code, Some(2), "an unknown key is a usage error: {stderr}");
    let (_, list) = stderr
        .split_once("known keys: ")
        .unwrap_or_else(|| panic!("no key list in the unknown-key message: {stderr}"));
    list.trim()
        .split(", ")
        .map(str::to_string)
        .filter(|k| !k.is_empty())
        .collect()
}

/// The subcommands `drover --help` lists (`help` aside).
fn subcommands() -> Vec<String> {
    let (code, stdout, stderr) = drover(&["--help"]);
    assert_eq!(code, Some(0), "drover --help: {stderr}");
    let (_, rest) = stdout
        .split_once("Commands:")
        .unwrap_or_else(|| panic!("no Commands: section in drover --help:\n{stdout}"));
    rest.lines()
        .skip(1)
        .take_while(|l| !l.trim().is_empty())
        .filter_map(|l| l.split_whitespace().next())
        .filter(|name| *name != "help")
        .map(str::to_string)
        .collect()
}

/// The long flags in `drover ARGS --help`, `--help` itself aside.
fn flags(args: &[&str]) -> Vec<String> {
    let mut argv = args.to_vec();
    argv.push("--help");
    let (code, stdout, stderr) = drover(&argv);
    assert_eq!(code, Some(0), "drover {}: {stderr}", argv.join(" "));
    let mut found: Vec<String> = stdout
        .lines()
        .map(str::trim_start)
        .filter(|l| l.starts_with('-'))
        // The flag column only: clap sets the description off by two spaces or more.
        .filter_map(|l| l.split("  ").next())
        .flat_map(|l| l.split([' ', ',']))
        .filter(|t| t.starts_with("--") && t.len() > 2)
        .filter(|t| *t != "--help")
        .map(str::to_string)
        .collect();
    found.dedup();
    found
}

#[test]
fn every_config_key_is_in_the_operating_doc() {
    let doc = doc();
    let known = keys_known_to_the_binary();
    for key in drover_machine::SETTING_KEYS {
        assert!(
            known.iter().any(|k| k == key),
            "the binary's key list {known:?} lacks the machine key `{key}`: the list is read wrong"
        );
    }
    assert!(
        known.len() > drover_machine::SETTING_KEYS.len(),
        "the binary lists no shell key besides the machine's: {known:?}"
    );
    let missing: Vec<&String> = known
        .iter()
        .filter(|key| !doc.contains(&format!("`{key}`")))
        .collect();
    assert!(
        missing.is_empty(),
        "docs/operating.md does not name these config keys (as `key`): {missing:?}"
    );
}

#[test]
fn every_flag_of_every_subcommand_is_in_the_operating_doc() {
    let doc = doc();
    let subcommands = subcommands();
    assert!(
        subcommands.iter().any(|s| s == "run") && subcommands.len() >= 7,
        "drover --help lists too few subcommands: {subcommands:?}"
    );
    let mut missing = Vec::new();
    for flag in flags(&[]) {
        if !holds_word(&doc, &flag) {
            missing.push(format!("drover {flag}"));
        }
    }
    for sub in &subcommands {
        if !holds_word(&doc, &format!("drover {sub}")) {
            missing.push(format!("the subcommand `drover {sub}`"));
        }
        let flags = flags(&[sub]);
        assert!(
            !flags.is_empty(),
            "drover {sub} --help lists no flag: the help is read wrong"
        );
        for flag in flags {
            if !holds_word(&doc, &flag) {
                missing.push(format!("drover {sub} {flag}"));
            }
        }
    }
    assert!(
        missing.is_empty(),
        "docs/operating.md does not name: {missing:?}"
    );
}
