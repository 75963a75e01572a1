//! The runtime directory: a private directory per drover for its notify socket, removed
//! at exit, with a lock file that proves its drover alive across PID namespaces; stale ones
//! (their lock free) are removed at start.

use std::path::{Path, PathBuf};

/// A private directory for the notify socket, removed at exit. It holds a lock file,
/// locked (`flock`) for drover's whole life: the one proof that its drover is gone that
/// holds across PID namespaces sharing the directory (containers sharing a volume), where
/// `/proc/<pid>` says nothing.
pub(super) struct RuntimeDir {
    pub(super) path: PathBuf,
    _lock: nix::fcntl::Flock<std::fs::File>,
}

/// The lock file inside each runtime directory.
const RUNTIME_LOCK: &str = "lock";
/// The lock file's name while it is created and locked (`lock_new`).
const RUNTIME_LOCK_STAGING: &str = "lock.new";
/// More than a runtime directory ever holds (the lock file and the notify socket).
const RUNTIME_ENTRIES_MAX: usize = 16;

impl RuntimeDir {
    pub(super) fn create() -> Result<RuntimeDir, String> {
        use std::os::unix::fs::DirBuilderExt;
        let base = runtime_base();
        RuntimeDir::remove_stale(&base);
        let mut last = None;
        for attempt in 0..100u32 {
            let nanos = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.subsec_nanos());
            let dir = base.join(format!(
                "drover-{}-{:x}",
                std::process::id(),
                nanos ^ attempt
            ));
            match std::fs::DirBuilder::new().mode(0o700).create(&dir) {
                Ok(()) => {
                    let lock = lock_new(&dir).map_err(|e| {
                        let _ = std::fs::remove_dir_all(&dir);
                        format!("runtime directory {}: lock: {e}", dir.display())
                    })?;
                    return Ok(RuntimeDir {
                        path: dir,
                        _lock: lock,
                    });
                }
                Err(e) => last = Some(e),
            }
        }
        Err(format!(
            "cannot create a runtime directory in {}: {}",
            base.display(),
            last.map_or_else(String::new, |e| e.to_string())
        ))
    }
}

/// Where runtime directories go: systemd's `RuntimeDirectory=` (`$RUNTIME_DIRECTORY`), the
/// user's runtime directory (`$XDG_RUNTIME_DIR`), else the temporary directory.
fn runtime_base() -> PathBuf {
    ["RUNTIME_DIRECTORY", "XDG_RUNTIME_DIR"]
        .iter()
        .filter_map(std::env::var_os)
        // systemd may list several directories, separated by colons: the first.
        .filter_map(|v| {
            let first = v.to_str()?.split(':').next()?.to_string();
            Some(PathBuf::from(first))
        })
        .find(|p| p.is_absolute() && p.is_dir())
        .unwrap_or_else(std::env::temp_dir)
}

/// The lock file of the new directory `dir`, created and locked under a staging name and
/// only then renamed to its own: another drover removing stale directories
/// (`remove_stale`) finds either no lock file (and leaves the directory alone) or a held
/// one. Created under its own name, it could be taken by that drover between its creation
/// and its lock, and the new directory removed as stale (seen in CI: a drover starting
/// while the tests started others failed with "lock: Try again").
fn lock_new(dir: &Path) -> Result<nix::fcntl::Flock<std::fs::File>, String> {
    let staging = dir.join(RUNTIME_LOCK_STAGING);
    let lock = lock_file(&staging, true)?;
    std::fs::rename(&staging, dir.join(RUNTIME_LOCK)).map_err(|e| e.to_string())?;
    Ok(lock)
}

/// Opens `path` (creating it if `create`) and takes its exclusive lock without waiting;
/// `EWOULDBLOCK` means another process holds it.
fn lock_file(path: &Path, create: bool) -> Result<nix::fcntl::Flock<std::fs::File>, String> {
    use std::os::unix::fs::OpenOptionsExt;
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(create)
        .truncate(false)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(path)
        .map_err(|e| e.to_string())?;
    nix::fcntl::Flock::lock(file, nix::fcntl::FlockArg::LockExclusiveNonblock)
        .map_err(|(_, e)| e.desc().to_string())
}

impl RuntimeDir {
    /// Removes `drover-<pid>-<hex>` directories of ours whose drover provably is gone:
    /// their lock file exists and nobody holds its lock (a drover killed with -9 left it,
    /// and the kernel dropped the lock with the process). A directory whose lock is held,
    /// or that has no lock file to prove anything, is left alone, whatever `/proc` says.
    fn remove_stale(base: &Path) {
        use std::os::unix::fs::MetadataExt;
        let Ok(entries) = std::fs::read_dir(base) else {
            return;
        };
        let me = nix::unistd::geteuid().as_raw();
        for entry in entries.flatten().take(10_000) {
            let name = entry.file_name();
            let Some(rest) = name.to_str().and_then(|n| n.strip_prefix("drover-")) else {
                continue;
            };
            let Some((pid, tag)) = rest.split_once('-') else {
                continue;
            };
            let named = pid.parse::<u32>().is_ok()
                && !tag.is_empty()
                && tag.chars().all(|c| c.is_ascii_hexdigit());
            // Root's may have been handed to a --user (`hand_to`).
            let ours = entry.metadata().is_ok_and(|m| {
                m.is_dir() && (m.uid() == me || me == 0) && m.mode() & 0o777 == 0o700
            });
            if !(named && ours) {
                continue;
            }
            // Held while removing, so a drover cannot be looking at it meanwhile.
            if let Ok(_unheld) = lock_file(&entry.path().join(RUNTIME_LOCK), false) {
                let _ = std::fs::remove_dir_all(entry.path());
            }
        }
    }
}

impl RuntimeDir {
    /// Gives the directory and what is in it (the lock file, the notify socket) to `owner`
    /// (back to drover's own identity for `None`): the workers' user must reach the notify
    /// socket, and it alone besides root (the directory stays 0700). Once drover drops its
    /// privileges it is the owner, and can still remove the directory at exit.
    pub(super) fn hand_to(
        &self,
        owner: Option<&crate::identity::Credentials>,
    ) -> Result<(), String> {
        let (uid, gid) = match owner {
            Some(c) => (c.uid, c.gid),
            None => (
                nix::unistd::geteuid().as_raw(),
                nix::unistd::getegid().as_raw(),
            ),
        };
        let entries = std::fs::read_dir(&self.path)
            .map_err(|e| format!("runtime directory {}: {e}", self.path.display()))?;
        let inside = entries
            .flatten()
            .map(|e| e.path())
            .take(RUNTIME_ENTRIES_MAX);
        for path in inside.chain([self.path.clone()]) {
            std::os::unix::fs::lchown(&path, Some(uid), Some(gid)).map_err(|e| {
                format!(
                    "runtime directory: cannot hand {} to uid {uid} gid {gid}: {e}",
                    path.display()
                )
            })?;
        }
        Ok(())
    }
}

impl Drop for RuntimeDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.path);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::DirBuilderExt;

    /// A directory as another drover would leave it, under a pid this namespace does not
    /// have; with its lock file held (by `hold`) or not, or no lock file at all.
    fn leftover(base: &Path, tag: &str, lock: bool) -> PathBuf {
        let dir = base.join(format!("drover-4000000-{tag}"));
        std::fs::DirBuilder::new().mode(0o700).create(&dir).unwrap();
        // Set, not left to the umask: a control-socket test in this process may have the
        // umask at 0177 for its bind at this moment (the umask is the process's), which
        // made this directory 0600 and not a runtime directory of ours (seen in CI).
        std::fs::set_permissions(&dir, std::os::unix::fs::PermissionsExt::from_mode(0o700))
            .unwrap();
        if lock {
            std::fs::write(dir.join(RUNTIME_LOCK), "").unwrap();
        }
        dir
    }

    #[test]
    fn only_a_runtime_directory_whose_lock_nobody_holds_is_removed() {
        let base = std::env::temp_dir().join(format!("drover-rtbase-{}", std::process::id()));
        std::fs::create_dir_all(&base).unwrap();
        let dead = leftover(&base, "a1", true);
        // Held by a live drover in another PID namespace: /proc has no such pid.
        let live = leftover(&base, "b2", true);
        let _held = lock_file(&live.join(RUNTIME_LOCK), false).unwrap();
        let unknown = leftover(&base, "c3", false);
        RuntimeDir::remove_stale(&base);
        assert!(!dead.exists(), "a directory whose drover is gone stays");
        assert!(live.exists(), "a live drover's directory was removed");
        assert!(
            unknown.exists(),
            "a directory with nothing to prove it dead was removed"
        );
        let _ = std::fs::remove_dir_all(&base);
    }

    #[test]
    fn a_new_directory_s_lock_file_is_held_from_the_moment_it_has_its_name() {
        let base = std::env::temp_dir().join(format!("drover-rtnew-{}", std::process::id()));
        std::fs::create_dir_all(&base).unwrap();
        let dir = base.join("d");
        std::fs::create_dir_all(&dir).unwrap();
        let _held = lock_new(&dir).unwrap();
        let other = lock_file(&dir.join(RUNTIME_LOCK), false);
        assert!(other.is_err(), "a prober took the new directory's lock");
        assert!(!dir.join(RUNTIME_LOCK_STAGING).exists());
        let _ = std::fs::remove_dir_all(&base);
    }
}
