//! The pid file, held with an exclusive `flock` for drover's whole life: a second drover on
//! the same file refuses to start; a file left by a killed drover is simply reused.
//!
//! A live upgrade hands it over: the successor writes its own file next to it and renames
//! it into place (atomic: a reader sees the old pid or the new one, never an empty file).
//! Each drover removes the path at exit only while it still names its own file, and a
//! predecessor lets go of its file as it hands over: a successor that cannot create its own
//! (no room, a directory it may not write) takes the old file over in place, so a failed
//! takeover never leaves the path without a pid file.
//!
//! Neither open follows a symbolic link (`O_NOFOLLOW`), and the successor's temporary file is
//! created new (`O_EXCL`): drover often runs as root with its pid file in a directory others
//! can write, where a planted link would otherwise make it truncate any file it names.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use nix::fcntl::{Flock, FlockArg};

pub struct PidFile {
    path: PathBuf,
    _lock: Flock<File>,
    /// Left at the path at exit: released at a handover.
    leave: bool,
}

impl PidFile {
    pub fn create(path: &Path) -> Result<PidFile, String> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .custom_flags(libc::O_NOFOLLOW)
            .open(path)
            .map_err(|e| {
                if e.raw_os_error() == Some(libc::ELOOP) {
                    format!(
                        "--pid-file {}: is a symbolic link; drover does not follow one there (remove it, or name the real path)",
                        path.display()
                    )
                } else {
                    format!("--pid-file {}: {e}", path.display())
                }
            })?;
        let mut lock = match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
            Ok(lock) => lock,
            Err((mut file, _)) => {
                let mut holder = String::new();
                let _ = file.read_to_string(&mut holder);
                let holder = holder.trim();
                let who = if holder.is_empty() {
                    "another drover".to_string()
                } else {
                    format!("another drover (pid {holder})")
                };
                return Err(format!(
                    "--pid-file {}: {who} is running with this pid file; stop it first or choose another path",
                    path.display()
                ));
            }
        };
        let write = |f: &mut File| -> std::io::Result<()> {
            f.set_len(0)?;
            f.rewind()?;
            writeln!(f, "{}", std::process::id())?;
            f.flush()
        };
        write(&mut lock).map_err(|e| format!("--pid-file {}: {e}", path.display()))?;
        Ok(PidFile {
            path: path.to_path_buf(),
            _lock: lock,
            leave: false,
        })
    }

    /// Takes over `path` from a live predecessor, which still holds its lock: a new locked
    /// file with our pid, renamed over the old one.
    pub fn replace(path: &Path) -> Result<PidFile, String> {
        let fail = |e: &dyn std::fmt::Display| format!("--pid-file {}: {e}", path.display());
        let mut name = path.file_name().unwrap_or_default().to_os_string();
        name.push(format!(".{}.new", std::process::id()));
        let temp = path.with_file_name(name);
        let create = || {
            OpenOptions::new()
                .read(true)
                .write(true)
                .create_new(true)
                .custom_flags(libc::O_NOFOLLOW)
                .open(&temp)
        };
        // A leftover of an earlier drover with our pid (or a planted link) is removed, never
        // opened: removing a link removes the link, not what it names.
        let file = match create() {
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                std::fs::remove_file(&temp).map_err(|e| fail(&e))?;
                create()
            }
            other => other,
        }
        .map_err(|e| fail(&e))?;
        let mut lock = Flock::lock(file, FlockArg::LockExclusiveNonblock).map_err(|(_, e)| {
            let _ = std::fs::remove_file(&temp);
            fail(&e)
        })?;
        let written = writeln!(lock, "{}", std::process::id())
            .and_then(|()| lock.flush())
            .and_then(|()| std::fs::rename(&temp, path));
        if let Err(e) = written {
            let _ = std::fs::remove_file(&temp);
            return Err(fail(&e));
        }
        Ok(PidFile {
            path: path.to_path_buf(),
            _lock: lock,
            leave: false,
        })
    }

    /// The successor's side of a handover, and a rollback's: [`PidFile::replace`], or, when
    /// no new file can be made beside the path, the file at the path itself, once its holder
    /// has let go of it ([`PidFile::release`], or its death).
    pub fn take_over(path: &Path) -> Result<PidFile, String> {
        PidFile::replace(path).or_else(|replace_error| {
            PidFile::create(path).map_err(|e| format!("{replace_error}; in place: {e}"))
        })
    }

    /// Unlocks the file and leaves it at the path: a predecessor handing over, whose
    /// successor may take this very file over.
    pub fn release(mut self) {
        self.leave = true;
    }

    /// Whether the path still names this file (not a successor's).
    fn is_ours(&self) -> bool {
        use std::os::unix::fs::MetadataExt;
        let (Ok(on_disk), Ok(held)) = (std::fs::metadata(&self.path), self._lock.metadata()) else {
            return false;
        };
        on_disk.dev() == held.dev() && on_disk.ino() == held.ino()
    }
}

impl Drop for PidFile {
    fn drop(&mut self) {
        // Removed while still locked, so a new drover never finds our pid in a live file.
        if !self.leave && self.is_ours() {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_successor_replaces_the_file_and_the_predecessor_leaves_it() {
        let dir = std::env::temp_dir().join(format!("drover-pidfile-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("drover.pid");
        let old = PidFile::create(&path).unwrap();
        assert!(
            PidFile::create(&path).is_err(),
            "a second drover must be refused"
        );
        let new = PidFile::replace(&path).unwrap();
        assert_eq!(
            std::fs::read_to_string(&path).unwrap().trim(),
            std::process::id().to_string()
        );
        drop(old);
        assert!(
            path.exists(),
            "the predecessor removed its successor's pid file"
        );
        assert!(
            PidFile::create(&path).is_err(),
            "the successor's file must be locked"
        );
        drop(new);
        assert!(!path.exists());
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// A successor that cannot make its file beside the path (here a directory squats its
    /// temporary name) used to be left without one, and the predecessor then removed its
    /// own at exit: no pid file at all. It takes the released file over in place.
    #[test]
    fn a_takeover_that_cannot_replace_the_file_takes_it_over_in_place() {
        let dir = std::env::temp_dir().join(format!("drover-pidtake-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("drover.pid");
        std::fs::write(&path, "").unwrap();
        let old = PidFile::create(&path).unwrap();
        let squat = dir.join(format!("drover.pid.{}.new", std::process::id()));
        std::fs::create_dir_all(squat.join("x")).unwrap();
        assert!(PidFile::replace(&path).is_err());
        let held = PidFile::take_over(&path)
            .err()
            .expect("the predecessor still holds its lock");
        assert!(held.contains("in place"), "{held}");

        old.release();
        let new = PidFile::take_over(&path).unwrap();
        assert!(path.exists(), "the predecessor's exit left the pid file");
        assert_eq!(
            std::fs::read_to_string(&path).unwrap().trim(),
            std::process::id().to_string()
        );
        assert!(
            PidFile::create(&path).is_err(),
            "the successor holds the lock"
        );
        drop(new);
        assert!(!path.exists(), "the successor removes its file at exit");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_planted_link_is_neither_followed_nor_truncated() {
        let dir = std::env::temp_dir().join(format!("drover-pidlink-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let victim = dir.join("victim");
        std::fs::write(&victim, "precious\n").unwrap();
        let path = dir.join("drover.pid");
        std::os::unix::fs::symlink(&victim, &path).unwrap();
        let e = PidFile::create(&path)
            .err()
            .expect("a link must be refused");
        assert!(
            e.contains("--pid-file") && e.contains("symbolic link"),
            "{e}"
        );
        // The successor's temporary name, planted as a link too.
        std::fs::remove_file(&path).unwrap();
        let old = PidFile::create(&path).unwrap();
        let temp = dir.join(format!("drover.pid.{}.new", std::process::id()));
        std::os::unix::fs::symlink(&victim, &temp).unwrap();
        let new = PidFile::replace(&path).unwrap();
        assert_eq!(std::fs::read_to_string(&victim).unwrap(), "precious\n");
        assert!(!std::fs::symlink_metadata(&path)
            .unwrap()
            .file_type()
            .is_symlink());
        drop(old);
        drop(new);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
