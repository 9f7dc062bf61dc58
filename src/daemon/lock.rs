//! One daemon per `$SONGFS_HOME`: an exclusive lock on `daemon.lock`, taken before
//! anything in the home is opened and held for the daemon's whole life.
//!
//! The pid file alone cannot do this: two mounts started at the same instant both see
//! no live pid and both mount. The OS releases the lock when its holder dies (even by
//! kill -9), so a crash never leaves a stale lock behind. This module must never remove
//! the lock file: a second process could then lock a fresh file while the first still
//! holds the old one.

use std::fs::{File, TryLockError};
use std::io::{Read, Seek, Write};
use std::path::PathBuf;

use crate::config::Home;

pub fn lock_path(home: &Home) -> PathBuf {
    home.root.join("daemon.lock")
}

/// Held while the daemon runs; the lock goes with the open file.
pub struct HomeLock {
    _file: File,
}

/// Why the home's lock could not be taken.
#[derive(Debug, thiserror::Error)]
pub enum LockError {
    #[error("another songfs daemon{} is already running from {home}: run `songfs unmount` first, or use another SONGFS_HOME", .pid.map(|p| format!(" (pid {p})")).unwrap_or_default())]
    Held { pid: Option<u32>, home: String },
    #[error("cannot lock {path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
}

/// Takes the home's lock, or says which pid holds it. Writes this process's pid into
/// the file, for the message a loser prints.
pub fn acquire(home: &Home) -> Result<HomeLock, LockError> {
    let path = lock_path(home);
    let io = |source| LockError::Io {
        path: path.display().to_string(),
        source,
    };
    let mut file = open(&path).map_err(io)?;
    match file.try_lock() {
        Ok(()) => {}
        Err(TryLockError::WouldBlock) => {
            return Err(LockError::Held {
                pid: pid_in(&mut file),
                home: home.root.display().to_string(),
            })
        }
        Err(TryLockError::Error(e)) => return Err(io(e)),
    }
    let mine = format!("{}\n", std::process::id());
    file.set_len(0)
        .and_then(|_| file.rewind())
        .and_then(|_| file.write_all(mine.as_bytes()))
        .map_err(io)?;
    Ok(HomeLock { _file: file })
}

/// The pid the lock file names, if that process is alive. Read without taking the lock:
/// trying it, even for an instant, could make a daemon starting at that moment lose.
pub fn recorded_pid(home: &Home) -> Option<u32> {
    let mut file = File::open(lock_path(home)).ok()?;
    pid_in(&mut file).filter(|p| super::process_alive(*p))
}

fn open(path: &std::path::Path) -> std::io::Result<File> {
    std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(path)
}

fn pid_in(file: &mut File) -> Option<u32> {
    let mut text = String::new();
    file.read_to_string(&mut text).ok()?;
    text.trim().parse().ok()
}
