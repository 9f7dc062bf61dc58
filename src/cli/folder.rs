//! The folder-mode half of `songfs mount --folder DIR` and `songfs unmount DIR`: checks
//! the folder before the daemon starts, and stops a running folder daemon through its
//! stop file (no signal, so it works the same on every OS). Must never stop a daemon
//! that keeps another folder.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};

use crate::config::Home;
use crate::daemon;

/// The folder's absolute path, once it is known to be a usable folder. Unlike a mount
/// point it may hold files: they are the library's (taken at the first pass).
pub fn check_folder(dir: &Path) -> anyhow::Result<PathBuf> {
    match std::fs::metadata(dir) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => bail!(
            "{} does not exist: create it first (`mkdir -p {}`)",
            dir.display(),
            dir.display()
        ),
        Err(e) => return Err(e).with_context(|| format!("cannot use {}", dir.display())),
        Ok(m) if !m.is_dir() => bail!(
            "{} is not a directory: folder mode keeps a folder in step",
            dir.display()
        ),
        Ok(_) => {}
    }
    let abs =
        std::fs::canonicalize(dir).with_context(|| format!("cannot use {}", dir.display()))?;
    if super::mount::is_mounted(&abs) {
        bail!(
            "{} is a FUSE mount: unmount it first (`songfs unmount {}`), folder mode needs a plain folder",
            abs.display(),
            abs.display()
        );
    }
    Ok(abs)
}

/// True if this home's running daemon keeps `dir` in folder mode.
pub fn is_kept_folder(home: &Home, dir: &Path) -> bool {
    daemon::running_pid(home).is_some()
        && daemon::read_status(home).is_some_and(|s| s.folder && s.mountpoint == dir)
}

/// Asks the folder daemon to stop and waits until it has (last pass, uploads drained,
/// last sync cycle).
pub fn stop(home: &Home, dir: &Path) -> anyhow::Result<()> {
    let pid = daemon::running_pid(home);
    let stop = daemon::folder::stop_path(home);
    std::fs::write(&stop, b"stop\n").with_context(|| format!("cannot write {}", stop.display()))?;
    if let Some(pid) = pid {
        let bound = daemon::DRAIN_TIMEOUT + daemon::LAST_CYCLE_TIMEOUT + Duration::from_secs(10);
        let deadline = Instant::now() + bound;
        while daemon::process_alive(pid) {
            if Instant::now() > deadline {
                bail!(
                    "the folder daemon (pid {pid}) did not stop within {bound:?}: see {}",
                    home.log_dir().join("daemon.log").display()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    eprintln!("songfs: stopped keeping {} in step", dir.display());
    Ok(())
}
