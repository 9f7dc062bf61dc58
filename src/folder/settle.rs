//! When a file written into the folder is complete. The app writes audio with
//! `mkstemp` + write + rename, but other programs write in place, slowly; a file is
//! taken only once it has *settled*: the same size and modification time seen by two
//! looks at least `quiet` apart, and its name is not a temporary one. Pure: the caller
//! passes what it saw and when (the watcher's events and the periodic rescan both feed it).
//!
//! Must never: report a file as settled while its size or mtime still changes.

use std::collections::HashMap;
use std::time::{Duration, Instant, SystemTime};

/// What one look at a file saw.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Seen {
    pub size: u64,
    pub mtime: SystemTime,
}

/// Files being watched until they settle, by path relative to the folder.
#[derive(Debug)]
pub struct Settle {
    quiet: Duration,
    pending: HashMap<String, (Seen, Instant)>,
}

impl Settle {
    pub fn new(quiet: Duration) -> Settle {
        Settle {
            quiet,
            pending: HashMap::new(),
        }
    }

    /// Records a look at `path` at `now`; true when the file has settled (and forgets
    /// it: the next change starts a new wait).
    pub fn observe(&mut self, path: &str, seen: Seen, now: Instant) -> bool {
        if is_temporary(path) {
            return false;
        }
        match self.pending.get(path) {
            Some((before, since)) if *before == seen => {
                if now.duration_since(*since) >= self.quiet {
                    self.pending.remove(path);
                    return true;
                }
                false
            }
            _ => {
                // New, or changed since the last look: the wait starts again.
                self.pending.insert(path.to_string(), (seen, now));
                false
            }
        }
    }

    /// The file went away (deleted, or renamed: the new name is observed on its own).
    pub fn forget(&mut self, path: &str) {
        self.pending.remove(path);
    }

    /// Paths still waiting, so the caller looks at them again after `quiet`.
    pub fn waiting(&self) -> impl Iterator<Item = &str> {
        self.pending.keys().map(String::as_str)
    }
}

/// Names of files still being written by their program, never taken as they are:
/// Python's `mkstemp` (`tmpXXXXXXXX`), editors' and browsers' partial files, and
/// songfs's own downloads in progress (`place.rs`).
pub fn is_temporary(path: &str) -> bool {
    let name = path.rsplit(['/', '\\']).next().unwrap_or(path);
    let mkstemp = name.len() == 11
        && name.starts_with("tmp")
        && name[3..]
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_');
    mkstemp
        || name.starts_with(super::place::TEMP_PREFIX)
        || name.ends_with(".part")
        || name.ends_with(".crdownload")
        || name.ends_with(".tmp")
        || name.ends_with('~')
        || (name.starts_with(".~lock.") && name.ends_with('#'))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seen(size: u64, secs: u64) -> Seen {
        Seen {
            size,
            mtime: SystemTime::UNIX_EPOCH + Duration::from_secs(secs),
        }
    }

    #[test]
    fn a_file_written_slowly_settles_only_after_it_stops_changing() {
        let t0 = Instant::now();
        let at = |ms| t0 + Duration::from_millis(ms);
        let mut s = Settle::new(Duration::from_secs(2));
        let p = "2026-02-12_x/x_v1.mp3";
        assert!(!s.observe(p, seen(100, 1), at(0)));
        // Still growing: every look restarts the wait, however long it has been.
        assert!(!s.observe(p, seen(200, 2), at(2500)));
        assert!(!s.observe(p, seen(300, 3), at(5000)));
        // Unchanged, but not for long enough yet.
        assert!(!s.observe(p, seen(300, 3), at(6000)));
        assert!(s.observe(p, seen(300, 3), at(7000)));
        // Taken once; a later change waits again.
        assert!(!s.observe(p, seen(300, 3), at(7100)));
        assert_eq!(s.waiting().count(), 1);
        s.forget(p);
        assert_eq!(s.waiting().count(), 0);
    }

    #[test]
    fn a_change_of_mtime_alone_restarts_the_wait() {
        let t0 = Instant::now();
        let mut s = Settle::new(Duration::from_secs(1));
        assert!(!s.observe("a.wav", seen(10, 1), t0));
        assert!(!s.observe("a.wav", seen(10, 2), t0 + Duration::from_secs(5)));
        assert!(s.observe("a.wav", seen(10, 2), t0 + Duration::from_secs(6)));
    }

    #[test]
    fn temporary_names_are_never_taken() {
        let t0 = Instant::now();
        let mut s = Settle::new(Duration::ZERO);
        for p in [
            "d/tmpa1b2c3d4",
            "d/x.mp3.part",
            "d/.songfs-part-x.mp3",
            "x.tmp",
            "notes~",
        ] {
            assert!(is_temporary(p), "{p}");
            assert!(!s.observe(p, seen(1, 1), t0));
            assert!(!s.observe(p, seen(1, 1), t0 + Duration::from_secs(60)));
        }
        for p in [
            "d/x_v1.mp3",
            "tmp.mp3",
            "d/temporal.wav",
            "songfactory_backup_2026.db",
        ] {
            assert!(!is_temporary(p), "{p}");
        }
    }
}
