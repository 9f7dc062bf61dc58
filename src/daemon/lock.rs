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

/// How long a start waits for a holder that has died but not yet let go.
const DYING_HOLDER_WAIT: std::time::Duration = std::time::Duration::from_secs(10);

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
    let mut dying_since = None;
    loop {
        match file.try_lock() {
            Ok(()) => break,
            Err(TryLockError::WouldBlock) => {
                let holder = pid_in(&mut file);
                // A daemon killed a moment ago holds the lock until its last thread has
                // torn down (a thread deep in a large write can take a while), though
                // /proc already shows it dead: wait for that rather than refuse a restart.
                let dying = holder.is_some_and(|p| !super::process_alive(p));
                let since = *dying_since.get_or_insert_with(std::time::Instant::now);
                if !dying || since.elapsed() > DYING_HOLDER_WAIT {
                    return Err(LockError::Held {
                        pid: holder,
                        home: home.root.display().to_string(),
                    });
                }
                std::thread::sleep(std::time::Duration::from_millis(20));
                file.rewind().map_err(io)?;
            }
            Err(TryLockError::Error(e)) => return Err(io(e)),
        }
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

#[cfg(test)]
mod tests {
    use super::*;

    /// A holder that is still open but whose pid names a dead process.
    fn held_by(home: &Home, pid: u32) -> File {
        let mut holder = open(&lock_path(home)).unwrap();
        holder.try_lock().unwrap();
        holder.set_len(0).unwrap();
        write!(holder, "{pid}").unwrap();
        holder
    }

    fn dead_pid() -> u32 {
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let pid = child.id();
        child.wait().unwrap();
        pid
    }

    #[test]
    fn a_start_waits_for_a_dead_holder_to_let_go() {
        let dir = tempfile::tempdir().unwrap();
        let home = Home::at(dir.path());
        let holder = held_by(&home, dead_pid());
        let letting_go = std::thread::spawn(move || {
            std::thread::sleep(std::time::Duration::from_millis(300));
            drop(holder);
        });
        let lock = acquire(&home).expect("the dead holder's lock, once let go");
        letting_go.join().unwrap();
        drop(lock);
    }

    #[test]
    fn a_live_holder_is_refused_at_once_by_pid() {
        let dir = tempfile::tempdir().unwrap();
        let home = Home::at(dir.path());
        let _holder = held_by(&home, std::process::id());
        let started = std::time::Instant::now();
        match acquire(&home) {
            Err(LockError::Held { pid, .. }) => assert_eq!(pid, Some(std::process::id())),
            other => panic!("expected Held, got {:?}", other.map(|_| ())),
        }
        assert!(started.elapsed() < std::time::Duration::from_secs(1));
    }
}
