//! Who the workers run as (`--user`, `--group`): the names resolved once, at start and at
//! each reload, into numbers and supplementary groups; and the switch itself, which a
//! command worker makes between fork and exec (async-signal-safe, on arrays prepared
//! before the fork), an embedded worker in its forked child, and drover itself with
//! `--drop-privileges`.
//!
//! As systemd's `User=`/`Group=`: the supplementary groups are those /etc/group lists the
//! user in (`getgrouplist`), plus the primary group, which is `--group` if given, else the
//! user's own. A uid with no passwd entry needs `--group` (there is no entry to take a
//! primary group from) and gets no supplementary group.

use std::ffi::CString;

use nix::unistd::{Gid, Group, Uid, User};

use crate::settings::file::UsageError;

/// The identity a process is switched to.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Credentials {
    pub uid: libc::uid_t,
    pub gid: libc::gid_t,
    /// Supplementary groups, the primary group among them.
    pub groups: Vec<libc::gid_t>,
    /// The user's name, if it has a passwd entry (for messages).
    pub name: Option<String>,
}

fn bad(flag: &str, key: &str, text: &str, why: &str) -> UsageError {
    UsageError(format!(
        "invalid {flag} '{text}' (config key `{key}`): {why}"
    ))
}

/// Resolves `--user` and `--group` against the passwd and group databases. `None` when
/// neither is given. Fails for an unknown name, a uid with no entry and no `--group`, and
/// for an identity this process cannot switch to (it is not root and the identity is not
/// its own); a non-root drover may name its own identity (a live upgrade's successor of a
/// drover that dropped its privileges starts with the same flags).
pub fn resolve(user: Option<&str>, group: Option<&str>) -> Result<Option<Credentials>, UsageError> {
    let entry = match user {
        None => None,
        Some(text) => Some(find_user(text)?),
    };
    let gid = match (group, &entry) {
        (Some(text), _) => find_group(text)?,
        (None, Some((_, Some(u)))) => u.gid.as_raw(),
        (None, Some((uid, None))) => return Err(bad(
            "--user",
            "user",
            &uid.to_string(),
            "no passwd entry has this uid, so there is no primary group to take; give --group too",
        )),
        (None, None) => return Ok(None),
    };
    let uid = match &entry {
        Some((uid, _)) => *uid,
        None => nix::unistd::geteuid().as_raw(),
    };
    let mut groups = match &entry {
        Some((_, Some(u))) => {
            let name = CString::new(u.name.as_bytes())
                .map_err(|_| bad("--user", "user", &u.name, "the name contains a NUL byte"))?;
            nix::unistd::getgrouplist(&name, Gid::from_raw(gid))
                .map_err(|e| {
                    bad(
                        "--user",
                        "user",
                        &u.name,
                        &format!("cannot list its groups: {}", e.desc()),
                    )
                })?
                .into_iter()
                .map(Gid::as_raw)
                .collect()
        }
        _ => vec![gid],
    };
    if !groups.contains(&gid) {
        groups.push(gid);
    }
    groups.sort_unstable();
    groups.dedup();
    let creds = Credentials {
        uid,
        gid,
        groups,
        name: entry.and_then(|(_, u)| u.map(|u| u.name)),
    };
    check_possible(&creds, user, group)?;
    Ok(Some(creds))
}

/// A name, else a number; the number may have no passwd entry.
fn find_user(text: &str) -> Result<(libc::uid_t, Option<User>), UsageError> {
    let lookup = |e: nix::Error| bad("--user", "user", text, &format!("lookup: {}", e.desc()));
    if let Some(u) = User::from_name(text).map_err(lookup)? {
        return Ok((u.uid.as_raw(), Some(u)));
    }
    match text.parse::<libc::uid_t>() {
        Ok(uid) => Ok((uid, User::from_uid(Uid::from_raw(uid)).map_err(lookup)?)),
        Err(_) => Err(bad(
            "--user",
            "user",
            text,
            "no such user (see `getent passwd`); give a user name or a numeric uid",
        )),
    }
}

fn find_group(text: &str) -> Result<libc::gid_t, UsageError> {
    let lookup = |e: nix::Error| bad("--group", "group", text, &format!("lookup: {}", e.desc()));
    if let Some(g) = Group::from_name(text).map_err(lookup)? {
        return Ok(g.gid.as_raw());
    }
    text.parse::<libc::gid_t>().map_err(|_| {
        bad(
            "--group",
            "group",
            text,
            "no such group (see `getent group`); give a group name or a numeric gid",
        )
    })
}

/// Only root may switch to another identity; anyone may "switch" to its own.
fn check_possible(
    creds: &Credentials,
    user: Option<&str>,
    group: Option<&str>,
) -> Result<(), UsageError> {
    let (euid, egid) = (
        nix::unistd::geteuid().as_raw(),
        nix::unistd::getegid().as_raw(),
    );
    if euid == 0 || (creds.uid == euid && creds.gid == egid) {
        return Ok(());
    }
    let (flag, key, text) = match user {
        Some(u) => ("--user", "user", u),
        None => ("--group", "group", group.unwrap_or("")),
    };
    Err(bad(
        flag,
        key,
        text,
        &format!(
            "drover runs as uid {euid} gid {egid}, not as root, so it can run workers only as itself; start drover as root, or leave out --user and --group"
        ),
    ))
}

impl Credentials {
    /// Whether this process must change its identity to become `self`: as root always (if
    /// only to set the groups); otherwise `resolve` has checked that it already is `self`.
    pub fn needed(&self) -> bool {
        nix::unistd::geteuid().is_root()
    }

    /// `uid 101 (postgres) gid 104 groups 103,104`.
    pub fn describe(&self) -> String {
        let groups: Vec<String> = self.groups.iter().map(u32::to_string).collect();
        format!(
            "uid {}{} gid {} groups {}",
            self.uid,
            self.name
                .as_ref()
                .map_or(String::new(), |n| format!(" ({n})")),
            self.gid,
            groups.join(",")
        )
    }

    /// Switches this process: groups, then gid, then uid (once the uid is gone the others
    /// can no longer be changed), each for real, effective and saved ids. Returns the failed
    /// step and its errno.
    ///
    /// # Safety
    /// Async-signal-safe (raw system calls on memory prepared before any fork), so it may
    /// run between fork and exec. In a multi-threaded process it would change only the
    /// calling thread (raw calls, not glibc's all-threads wrappers): call it only while
    /// single-threaded.
    pub unsafe fn switch_raw(&self) -> Result<(), (Step, i32)> {
        // SAFETY: raw system calls with integers and a pointer to `groups`, which lives as
        // long as `self`; the caller guarantees the process is single-threaded.
        unsafe {
            let n = self.groups.len();
            if libc::syscall(libc::SYS_setgroups, n, self.groups.as_ptr()) != 0 {
                return Err((Step::Groups, errno()));
            }
            if libc::syscall(libc::SYS_setresgid, self.gid, self.gid, self.gid) != 0 {
                return Err((Step::Gid, errno()));
            }
            if libc::syscall(libc::SYS_setresuid, self.uid, self.uid, self.uid) != 0 {
                return Err((Step::Uid, errno()));
            }
            // A changed identity makes the process non-dumpable, which exec undoes for a
            // command worker; without exec its /proc/self/fd would stay root's, and it
            // could not dump core. It runs as the user, like an exec'd worker.
            libc::prctl(libc::PR_SET_DUMPABLE, 1, 0, 0, 0);
        }
        Ok(())
    }

    /// `switch_raw` for drover itself, with a message naming the step.
    pub fn switch(&self) -> Result<(), String> {
        crate::forking::single_threaded()
            .map_err(|why| format!("cannot drop privileges: {why}"))?;
        // SAFETY: single-threaded (checked above).
        unsafe { self.switch_raw() }.map_err(|(step, errno)| {
            format!(
                "cannot switch to {}: {}: {}",
                self.describe(),
                step.call(),
                nix::errno::Errno::from_raw(errno).desc()
            )
        })
    }
}

/// A step of a worker's setup between fork and exec that can fail.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum Step {
    Exec = 0,
    Groups = 1,
    Gid = 2,
    Uid = 3,
    Chdir = 4,
    Parent = 5,
}

impl Step {
    pub fn from_code(code: u8) -> Step {
        match code {
            1 => Step::Groups,
            2 => Step::Gid,
            3 => Step::Uid,
            4 => Step::Chdir,
            5 => Step::Parent,
            _ => Step::Exec,
        }
    }

    pub fn call(self) -> &'static str {
        match self {
            Step::Exec => "execve",
            Step::Groups => "setgroups (--user/--group)",
            Step::Gid => "setresgid (--group)",
            Step::Uid => "setresuid (--user)",
            Step::Chdir => "chdir (--chdir)",
            Step::Parent => "drover exited",
        }
    }
}

fn errno() -> i32 {
    // SAFETY: reads this thread's errno; async-signal-safe.
    unsafe { *libc::__errno_location() }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_names_name_the_flag() {
        let e = resolve(Some("no-such-user-xyz"), None).unwrap_err();
        assert!(
            e.0.contains("--user") && e.0.contains("no such user"),
            "{e}"
        );
        let e = resolve(None, Some("no-such-group-xyz")).unwrap_err();
        assert!(
            e.0.contains("--group") && e.0.contains("no such group"),
            "{e}"
        );
    }

    #[test]
    fn a_uid_without_an_entry_needs_a_group() {
        // No passwd entry has this uid on any sane system.
        let e = resolve(Some("3999999"), None).unwrap_err();
        assert!(e.0.contains("--user") && e.0.contains("--group"), "{e}");
        if nix::unistd::geteuid().is_root() {
            let c = resolve(Some("3999999"), Some("3999998")).unwrap().unwrap();
            assert_eq!(
                (c.uid, c.gid, c.groups.clone()),
                (3999999, 3999998, vec![3999998])
            );
            assert_eq!(c.name, None);
        }
    }

    #[test]
    fn root_resolves_to_itself_with_its_groups() {
        let c = resolve(Some("root"), None).unwrap().unwrap();
        assert_eq!((c.uid, c.gid), (0, 0));
        assert!(c.groups.contains(&0), "{c:?}");
        assert_eq!(
            c.describe().split(' ').take(3).collect::<Vec<_>>(),
            ["uid", "0", "(root)"]
        );
        // --group replaces the primary group, which joins the supplementary ones.
        let c = resolve(Some("0"), Some("12345")).unwrap().unwrap();
        assert_eq!(c.gid, 12345);
        assert!(c.groups.contains(&12345), "{c:?}");
    }

    #[test]
    fn its_own_identity_is_always_possible() {
        let me = nix::unistd::geteuid().as_raw().to_string();
        let gid = nix::unistd::getegid().as_raw().to_string();
        assert!(resolve(Some(&me), Some(&gid)).is_ok());
    }
}
