//! The pid file, held with an exclusive `flock` for drover's whole life: a second drover on
//! the same file refuses to start; a file left by a killed drover is simply reused.
//!
//! A live upgrade hands it over: the successor writes its own file next to it and renames
//! it into place (atomic: a reader sees the old pid or the new one, never an empty file).
//! Each drover removes the path at exit only while it still names its own file.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, Write};
use std::path::{Path, PathBuf};

use nix::fcntl::{Flock, FlockArg};

pub struct PidFile {
    path: PathBuf,
    _lock: Flock<File>,
}

impl PidFile {
    pub fn create(path: &Path) -> Result<PidFile, String> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)
            .map_err(|e| format!("--pid-file {}: {e}", path.display()))?;
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
        })
    }

    /// Takes over `path` from a live predecessor, which still holds its lock: a new locked
    /// file with our pid, renamed over the old one.
    pub fn replace(path: &Path) -> Result<PidFile, String> {
        let fail = |e: &dyn std::fmt::Display| format!("--pid-file {}: {e}", path.display());
        let mut name = path.file_name().unwrap_or_default().to_os_string();
        name.push(format!(".{}.new", std::process::id()));
        let temp = path.with_file_name(name);
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&temp)
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
        })
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
        if self.is_ours() {
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
}
