//! What shapes a worker's process besides its command (`--user`, `--group`, `--umask`,
//! `--chdir`, `--env`) and whether drover drops its own privileges (`--drop-privileges`):
//! read from flags and the config file, checked at start (exit 2 naming the flag), and
//! applied in each new worker before it runs any program code ([`ChildSetup`]).
//!
//! `--umask` and `--chdir` shape the workers only: drover keeps its own working directory
//! (relative paths in its flags stay valid across reloads) and sets the modes of the files
//! it creates itself (`--unix-mode`, a private runtime directory).

use std::ffi::CString;
use std::hash::{Hash, Hasher};
use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;

use crate::identity::{self, Credentials, Step};
use crate::settings::file::UsageError;

/// Variables drover sets for its children itself (a live upgrade's successor and a
/// supervised drover's variables included: they are never passed on).
pub(crate) const OURS: &[&str] = &[
    "LISTEN_FDS",
    "LISTEN_PID",
    "LISTEN_FDNAMES",
    "NOTIFY_SOCKET",
    "WATCHDOG_USEC",
    "WATCHDOG_PID",
    "DROVER_WORKER_ID",
    "DROVER_GENERATION",
    "DROVER_WORKER_PORT",
    crate::upgrade::UPGRADE_FD_VAR,
    crate::upgrade::SUPERVISED_VAR,
    crate::upgrade::GENERATION_VAR,
];

/// The flags of what shapes a worker's process (part of `drover run`'s flags).
#[derive(clap::Args, Clone, Debug, Default)]
pub struct ProcessArgs {
    /// Run the workers as this user (a name or a numeric uid), with its supplementary
    /// groups; needs root. Dropped after drover has bound its listeners.
    #[arg(long, value_name = "NAME|UID")]
    pub user: Option<String>,
    /// The workers' primary group (a name or a numeric gid; default the user's own).
    #[arg(long, value_name = "NAME|GID")]
    pub group: Option<String>,
    /// drover itself switches to --user/--group too, once its listeners, control socket,
    /// pid file and runtime directory exist.
    #[arg(long)]
    pub drop_privileges: bool,
    /// The workers' umask, octal (e.g. 027).
    #[arg(long, value_name = "OCTAL")]
    pub umask: Option<String>,
    /// The workers' working directory.
    #[arg(long, value_name = "DIR")]
    pub chdir: Option<PathBuf>,
    /// A variable for the workers' environment, repeatable.
    #[arg(long = "env", value_name = "KEY=VALUE")]
    pub env: Vec<String>,
}

#[derive(Clone, Debug, Default)]
pub struct ProcessSettings {
    /// Who the workers run as (`--user`, `--group`).
    pub credentials: Option<Credentials>,
    /// drover itself switches to `credentials` once its sockets and files exist.
    pub drop_privileges: bool,
    pub umask: Option<u32>,
    /// Absolute.
    pub chdir: Option<PathBuf>,
    /// `--env` and the file's `env`, the flags winning per key.
    pub env: Vec<(String, String)>,
    /// Who must reach drover's notify socket besides drover itself: the workers' user (a
    /// `--supervise` parent: its child drover's, once that drops its privileges).
    pub notify_owner: Option<Credentials>,
}

impl Hash for ProcessSettings {
    /// What shapes the workers (not `drop_privileges` and `notify_owner`: drover's own).
    fn hash<H: Hasher>(&self, h: &mut H) {
        self.credentials
            .as_ref()
            .map(|c| (c.uid, c.gid, &c.groups))
            .hash(h);
        self.umask.hash(h);
        self.chdir.hash(h);
        self.env.hash(h);
    }
}

fn usage(msg: String) -> UsageError {
    UsageError(msg)
}

fn file_string(file: &toml::Table, key: &str) -> Result<Option<String>, UsageError> {
    match file.get(key) {
        None => Ok(None),
        Some(toml::Value::String(s)) => Ok(Some(s.clone())),
        // `user = 101`; `umask = 0o027` (TOML's octal integer) is the mask itself.
        Some(toml::Value::Integer(n)) if key == "umask" => Ok(Some(format!("{n:o}"))),
        Some(toml::Value::Integer(n)) if key != "chdir" => Ok(Some(n.to_string())),
        Some(_) => Err(usage(format!("config file: `{key}` must be a string"))),
    }
}

impl ProcessSettings {
    /// From the flags over the config file's keys (`file`: the file's shell keys).
    pub fn load(args: &ProcessArgs, file: &toml::Table) -> Result<ProcessSettings, UsageError> {
        let user = args
            .user
            .clone()
            .map(Some)
            .unwrap_or(file_string(file, "user")?);
        let group = args
            .group
            .clone()
            .map(Some)
            .unwrap_or(file_string(file, "group")?);
        let credentials = identity::resolve(user.as_deref(), group.as_deref())?;
        let drop_privileges = args.drop_privileges
            || match file.get("drop_privileges") {
                None => false,
                Some(toml::Value::Boolean(b)) => *b,
                Some(_) => {
                    return Err(usage(
                        "config file: `drop_privileges` must be true or false".into(),
                    ))
                }
            };
        if drop_privileges && credentials.is_none() {
            return Err(usage(
                "invalid --drop-privileges (config key `drop_privileges`): it drops to the workers' identity; give --user (and --group) too".into(),
            ));
        }
        let umask = match args
            .umask
            .clone()
            .map(Some)
            .unwrap_or(file_string(file, "umask")?)
        {
            None => None,
            Some(text) => Some(parse_umask(&text)?),
        };
        let chdir = match args
            .chdir
            .clone()
            .or(file_string(file, "chdir")?.map(PathBuf::from))
        {
            None => None,
            Some(dir) => Some(check_dir(dir)?),
        };
        let mut env = file_env(file)?;
        for text in &args.env {
            let (k, v) = parse_var(text, "--env")?;
            env.retain(|(key, _)| *key != k);
            env.push((k, v));
        }
        Ok(ProcessSettings {
            notify_owner: credentials.clone(),
            credentials,
            drop_privileges,
            umask,
            chdir,
            env,
        })
    }
}

/// `022`, `0o027`, `0077`: at most 0777.
fn parse_umask(text: &str) -> Result<u32, UsageError> {
    let digits = text.trim().trim_start_matches("0o");
    u32::from_str_radix(digits, 8)
        .ok()
        .filter(|m| *m <= 0o777 && !digits.is_empty())
        .ok_or_else(|| {
            usage(format!(
                "invalid --umask '{text}' (config key `umask`): an octal mask like 022 or 027"
            ))
        })
}

fn check_dir(dir: PathBuf) -> Result<PathBuf, UsageError> {
    let bad = |why: String| {
        usage(format!(
            "invalid --chdir '{}' (config key `chdir`): {why}",
            dir.display()
        ))
    };
    if dir.as_os_str().as_bytes().contains(&0) {
        return Err(bad("contains a NUL byte".into()));
    }
    match std::fs::metadata(&dir) {
        Ok(m) if m.is_dir() => {}
        Ok(_) => return Err(bad("not a directory".into())),
        Err(e) => return Err(bad(format!("{e}"))),
    }
    std::path::absolute(&dir).map_err(|e| bad(e.to_string()))
}

/// `KEY=VALUE`, KEY not one of the variables drover sets itself.
fn parse_var(text: &str, flag: &str) -> Result<(String, String), UsageError> {
    let bad = |why: &str| usage(format!("invalid {flag} '{text}' (config key `env`): {why}"));
    let Some((key, value)) = text.split_once('=') else {
        return Err(bad("expected KEY=VALUE"));
    };
    check_key(key).map_err(|why| bad(&why))?;
    if value.contains('\0') {
        return Err(bad("the value contains a NUL byte"));
    }
    Ok((key.to_string(), value.to_string()))
}

fn check_key(key: &str) -> Result<(), String> {
    if key.is_empty() || key.contains('\0') || key.contains('=') {
        return Err("the name must be non-empty, without `=` or a NUL byte".into());
    }
    if OURS.contains(&key) {
        return Err(format!(
            "drover sets {key} for every worker itself; choose another name"
        ));
    }
    Ok(())
}

/// `env` as a table (`[env]` with `KEY = "value"`) or a list of `"KEY=VALUE"` strings.
fn file_env(file: &toml::Table) -> Result<Vec<(String, String)>, UsageError> {
    let shape = || {
        usage(
            "config file: `env` must be a table of strings (`[env]` then `KEY = \"value\"`) or a list of \"KEY=VALUE\" strings".into(),
        )
    };
    match file.get("env") {
        None => Ok(Vec::new()),
        Some(toml::Value::Table(t)) => t
            .iter()
            .map(|(k, v)| {
                let v = v.as_str().ok_or_else(shape)?;
                parse_var(&format!("{k}={v}"), "config key `env`")
            })
            .collect(),
        Some(toml::Value::Array(items)) => {
            let mut env: Vec<(String, String)> = Vec::new();
            for item in items {
                let (k, v) = parse_var(item.as_str().ok_or_else(shape)?, "config key `env`")?;
                env.retain(|(key, _)| *key != k);
                env.push((k, v));
            }
            Ok(env)
        }
        Some(_) => Err(shape()),
    }
}

/// What a new worker does to itself before it runs any program code, prepared in the
/// supervisor so that the child only makes async-signal-safe calls.
#[derive(Default)]
pub struct ChildSetup {
    /// Only when drover must change its identity to get there (see `Credentials::needed`).
    credentials: Option<Credentials>,
    umask: Option<libc::mode_t>,
    chdir: Option<CString>,
    /// `--env`, which an embedded worker sets in itself (a command worker gets it in
    /// execve's environment).
    env: Vec<(String, String)>,
}

/// Exit code of an embedded worker whose setup failed (EX_OSERR).
const EXIT_SETUP_FAILED: i32 = 71;

impl ChildSetup {
    pub fn new(settings: &ProcessSettings) -> ChildSetup {
        ChildSetup {
            credentials: settings.credentials.clone().filter(Credentials::needed),
            umask: settings.umask.map(|m| m as libc::mode_t),
            chdir: settings
                .chdir
                .as_ref()
                .and_then(|d| CString::new(d.as_os_str().as_bytes()).ok()),
            env: settings.env.clone(),
        }
    }

    /// `apply` and `--env` in an embedded worker; a failure ends it with
    /// [`EXIT_SETUP_FAILED`] (the supervisor restarts it with backoff).
    ///
    /// # Safety
    /// Call only in a freshly forked child of a single-threaded process.
    pub unsafe fn apply_forked(&self, parent: libc::pid_t, worker: drover_machine::WorkerId) {
        // SAFETY: the caller's guarantee.
        if let Err((step, errno)) = unsafe { self.apply(parent) } {
            eprintln!(
                "drover: worker {worker}: {}: {}",
                step.call(),
                nix::errno::Errno::from_raw(errno).desc()
            );
            // SAFETY: ends the child without unwinding into the supervisor's frames.
            unsafe { libc::_exit(EXIT_SETUP_FAILED) }
        }
        // Single-threaded: nothing reads the environment meanwhile.
        for (k, v) in &self.env {
            std::env::set_var(k, v);
        }
    }

    /// Applies the setup: umask, identity, then the directory (entered as the user, as
    /// systemd does: a directory the user may not enter fails here, not later). A changed
    /// identity clears the parent-death signal, so it is set again, and the supervisor
    /// checked again.
    ///
    /// # Safety
    /// Call only in a freshly forked child of a single-threaded process: async-signal-safe
    /// calls on memory prepared before the fork.
    pub unsafe fn apply(&self, parent: libc::pid_t) -> Result<(), (Step, i32)> {
        // SAFETY: async-signal-safe calls on integers and on `self`, prepared before fork.
        unsafe {
            if let Some(mask) = self.umask {
                libc::umask(mask);
            }
            if let Some(c) = &self.credentials {
                c.switch_raw()?;
                libc::prctl(
                    libc::PR_SET_PDEATHSIG,
                    libc::SIGKILL as libc::c_ulong,
                    0,
                    0,
                    0,
                );
                if libc::getppid() != parent {
                    return Err((Step::Parent, 0));
                }
            }
            if let Some(dir) = &self.chdir {
                if libc::chdir(dir.as_ptr()) != 0 {
                    return Err((Step::Chdir, *libc::__errno_location()));
                }
            }
        }
        Ok(())
    }
}

/// What a child that failed before exec writes on the error pipe: errno, then the step.
pub const FAILURE_LEN: usize = 5;

/// Async-signal-safe: no allocation.
pub fn encode_failure(step: Step, errno: i32) -> [u8; FAILURE_LEN] {
    let e = errno.to_ne_bytes();
    [e[0], e[1], e[2], e[3], step as u8]
}

/// The errno of a failure read from the error pipe, logged with its step when it happened
/// in the setup, or at exec under another identity or in another directory (where a
/// program drover could run may be out of reach: a home directory only root may enter).
pub fn failure(buf: &[u8; FAILURE_LEN], setup: Option<&ChildSetup>) -> i32 {
    let errno = i32::from_ne_bytes([buf[0], buf[1], buf[2], buf[3]]);
    let step = Step::from_code(buf[4]);
    let shaped = setup.is_some_and(|s| s.credentials.is_some() || s.chdir.is_some());
    if step != Step::Exec || shaped {
        let who = setup
            .and_then(|s| s.credentials.as_ref())
            .map_or(String::new(), |c| format!(" as {}", c.describe()));
        tracing::error!(
            "a new worker failed before its program ran{who}: {}: {}",
            step.call(),
            nix::errno::Errno::from_raw(errno).desc()
        );
    }
    errno
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::settings::RunArgs;

    fn args(flags: &[&str]) -> RunArgs {
        use clap::Parser;
        #[derive(Parser)]
        struct T {
            #[command(flatten)]
            run: RunArgs,
        }
        T::try_parse_from(std::iter::once("t").chain(flags.iter().copied()))
            .unwrap()
            .run
    }

    fn load(flags: &[&str], file: &str) -> Result<ProcessSettings, UsageError> {
        ProcessSettings::load(&args(flags).process, &file.parse().unwrap())
    }

    #[test]
    fn a_reload_rolls_the_workers_for_what_shapes_them_and_not_for_drop_privileges() {
        let settings = |flags: &[&str]| {
            let mut all = flags.to_vec();
            all.extend(["--", "sh"]);
            crate::settings::Settings::load(&args(&all)).unwrap()
        };
        let base = settings(&[]);
        for flags in [
            &["--umask", "027"][..],
            &["--chdir", "/"],
            &["--env", "A=1"],
        ] {
            let s = settings(flags);
            assert_ne!(
                s.machine.worker_fingerprint, base.machine.worker_fingerprint,
                "{flags:?}"
            );
            assert!(base.restart_only_changes(&s).is_empty(), "{flags:?}");
        }
        let me = nix::unistd::geteuid().as_raw().to_string();
        let user = settings(&["--user", &me]);
        let dropped = settings(&["--user", &me, "--drop-privileges"]);
        assert_eq!(
            user.machine.worker_fingerprint,
            dropped.machine.worker_fingerprint
        );
        let warned = user.restart_only_changes(&dropped);
        assert!(
            warned.len() == 1 && warned[0].contains("`drop_privileges`"),
            "{warned:?}"
        );
    }

    #[test]
    fn umask_is_octal() {
        assert_eq!(load(&["--umask", "027"], "").unwrap().umask, Some(0o27));
        assert_eq!(load(&[], "umask = \"0o077\"").unwrap().umask, Some(0o77));
        for bad in ["888", "1000", "", "u=rwx"] {
            let e = load(&["--umask", bad], "").unwrap_err();
            assert!(e.0.contains("--umask"), "{e}");
        }
    }

    #[test]
    fn chdir_must_be_a_directory_and_becomes_absolute() {
        let s = load(&["--chdir", "."], "").unwrap();
        assert!(s.chdir.unwrap().is_absolute());
        let e = load(&["--chdir", "/no/such/dir"], "").unwrap_err();
        assert!(
            e.0.contains("--chdir") && e.0.contains("/no/such/dir"),
            "{e}"
        );
        let e = load(&["--chdir", "/etc/passwd"], "").unwrap_err();
        assert!(e.0.contains("not a directory"), "{e}");
    }

    #[test]
    fn env_from_table_or_list_and_flags_win_per_key() {
        let s = load(
            &["--env", "B=flag", "--env", "C=x=y"],
            "[env]\nA = \"1\"\nB = \"file\"\n",
        )
        .unwrap();
        assert_eq!(
            s.env,
            vec![
                ("A".into(), "1".into()),
                ("B".into(), "flag".into()),
                ("C".into(), "x=y".into())
            ]
        );
        let s = load(&[], "env = [\"A=1\", \"A=2\"]").unwrap();
        assert_eq!(s.env, vec![("A".into(), "2".into())]);
        let e = load(&["--env", "NOEQUALS"], "").unwrap_err();
        assert!(e.0.contains("--env") && e.0.contains("KEY=VALUE"), "{e}");
        let e = load(&["--env", "NOTIFY_SOCKET=/x"], "").unwrap_err();
        assert!(e.0.contains("drover sets NOTIFY_SOCKET"), "{e}");
        let e = load(&[], "env = 3").unwrap_err();
        assert!(e.0.contains("`env`"), "{e}");
    }

    #[test]
    fn drop_privileges_needs_a_user() {
        let e = load(&["--drop-privileges"], "").unwrap_err();
        assert!(
            e.0.contains("--drop-privileges") && e.0.contains("--user"),
            "{e}"
        );
        let e = load(&[], "drop_privileges = \"yes\"").unwrap_err();
        assert!(e.0.contains("drop_privileges"), "{e}");
    }

    #[test]
    fn the_flags_beat_the_file_for_the_user() {
        let me = nix::unistd::geteuid().as_raw();
        let file = format!("user = {me}\numask = 0o027\n");
        let e = load(&["--user", "no-such-user-xyz"], &file).unwrap_err();
        assert!(e.0.contains("no-such-user-xyz"), "{e}");
        let s = load(&[], &file).unwrap();
        assert_eq!(s.credentials.unwrap().uid, me);
        assert_eq!(s.umask, Some(0o27));
    }
}
