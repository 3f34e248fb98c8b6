//! One `run` process per state directory: an exclusive OS file lock on `<state dir>/LOCK`.
//!
//! The lock is an advisory `flock`, so the kernel releases it on any exit (kill -9 too)
//! and a stale `LOCK` file never blocks a new run. The holder writes its pid into the file
//! so that a second `run` can say who holds the directory.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Seek, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// How long a second process waits for the holder's pid to appear in the file: the holder
/// writes it right after taking the lock.
const PID_WAIT: Duration = Duration::from_secs(1);
const PID_RETRY: Duration = Duration::from_millis(20);

/// Holds the state directory until dropped or until the process exits.
#[derive(Debug)]
pub struct StateLock {
    _file: File,
}

/// Why the state directory could not be locked.
#[derive(Debug, thiserror::Error)]
pub enum StateLockError {
    #[error("state directory {} is in use by another esmd (pid {})", .dir.display(), Holder(*.pid))]
    InUse { dir: PathBuf, pid: Option<u32> },
    #[error("cannot lock state directory {}: {source}", .dir.display())]
    Io { dir: PathBuf, source: io::Error },
}

/// Displays a pid, or `unknown` when the holder's file held none.
struct Holder(Option<u32>);

impl std::fmt::Display for Holder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.0 {
            Some(pid) => write!(f, "{pid}"),
            None => f.write_str("unknown"),
        }
    }
}

impl StateLock {
    /// Creates `dir` if needed and locks `dir/LOCK` without waiting.
    pub fn acquire(dir: &Path) -> Result<StateLock, StateLockError> {
        let io_error = |source| StateLockError::Io {
            dir: dir.to_path_buf(),
            source,
        };
        fs::create_dir_all(dir).map_err(io_error)?;
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false) // the holder's pid must survive our open
            .open(dir.join("LOCK"))
            .map_err(io_error)?;
        match file.try_lock() {
            Ok(()) => {}
            Err(fs::TryLockError::WouldBlock) => {
                return Err(StateLockError::InUse {
                    dir: dir.to_path_buf(),
                    pid: holder_pid(&mut file),
                });
            }
            Err(fs::TryLockError::Error(err)) => return Err(io_error(err)),
        }
        write_pid(&mut file).map_err(io_error)?;
        Ok(StateLock { _file: file })
    }
}

fn write_pid(file: &mut File) -> io::Result<()> {
    file.set_len(0)?;
    file.rewind()?;
    writeln!(file, "{}", std::process::id())?;
    file.sync_all()
}

/// The pid the holder wrote, waiting briefly in case it has only just taken the lock.
fn holder_pid(file: &mut File) -> Option<u32> {
    let deadline = std::time::Instant::now() + PID_WAIT;
    loop {
        let mut text = String::new();
        let read = file.rewind().and_then(|()| file.read_to_string(&mut text));
        if let Ok(pid) = text.trim().parse() {
            return Some(pid);
        }
        if read.is_err() || std::time::Instant::now() >= deadline {
            return None;
        }
        std::thread::sleep(PID_RETRY);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_lock_on_the_same_directory_names_the_holder() {
        let parent = tempfile::tempdir().unwrap();
        let dir = parent.path().join("state");
        let held = StateLock::acquire(&dir).unwrap();
        let pid = std::fs::read_to_string(dir.join("LOCK")).unwrap();
        assert_eq!(pid.trim(), std::process::id().to_string());

        let err = StateLock::acquire(&dir).unwrap_err();
        assert_eq!(
            err.to_string(),
            format!(
                "state directory {} is in use by another esmd (pid {})",
                dir.display(),
                std::process::id()
            )
        );

        drop(held);
        StateLock::acquire(&dir).expect("the lock is free again once its holder is gone");
    }

    #[test]
    fn a_leftover_lock_file_does_not_block() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("LOCK"), "999999\n").unwrap();
        StateLock::acquire(dir.path()).expect("nobody holds the lock");
        let pid = std::fs::read_to_string(dir.path().join("LOCK")).unwrap();
        assert_eq!(pid, format!("{}\n", std::process::id()));
    }
}
