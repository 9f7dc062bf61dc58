//! `songfs mount` and `unmount` (`status` is in status.rs).
//!
//! `mount` checks everything a user can get wrong before anything is mounted (set up?
//! mountpoint there, a directory, empty, not mounted? FUSE installed?), cleans up a mount
//! a crashed daemon left behind, then by default starts itself again with `--foreground`
//! in the background (logging to `$SONGFS_HOME/logs/daemon.log`) and returns once the
//! mount is live. It never mounts over a non-empty folder (that would hide its files).

use std::io::BufRead;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use clap::Args;

use super::init::parse_size;
use crate::config::{Config, Home};
use crate::daemon::{self, DaemonOptions};
use crate::paths::Style;

#[derive(Args)]
pub struct MountArgs {
    /// Where to mount, e.g. ~/SongFactory/audio.
    #[arg(required_unless_present = "folder", conflicts_with = "folder")]
    pub mountpoint: Option<PathBuf>,
    /// Folder mode, no kernel driver: keep this plain folder in step with the store
    /// instead of mounting (files written there are uploaded once settled, files from
    /// other devices downloaded into it). `songfs unmount DIR` stops it.
    #[arg(long, value_name = "DIR")]
    pub folder: Option<PathBuf>,
    /// Stay attached to the terminal.
    #[arg(long)]
    pub foreground: bool,
    /// Cache size for this mount (overrides the config), e.g. 20G.
    #[arg(long, value_parser = parse_size)]
    pub cache_size: Option<u64>,
    /// Seconds an uncached read waits for the store before failing with EIO.
    #[arg(long)]
    pub fetch_timeout: Option<u64>,
    /// Let other users (and root) see the mount (a non-root user needs
    /// `user_allow_other` in /etc/fuse.conf).
    #[arg(long)]
    pub allow_other: bool,
    /// Seconds between sync cycles (overrides the config's sync_interval_secs).
    #[arg(long)]
    pub sync_interval: Option<u64>,
    /// Folder mode: the naming rules of the folder's file system (doc/PATHS.md), when
    /// they are not this system's own: `windows` for an exFAT or FAT disk, `macos` for
    /// a case-insensitive one.
    #[arg(long, value_enum, requires = "folder", default_value_t = NameRules::host())]
    pub names: NameRules,
}

/// The naming rules `--names` picks (`paths::Style`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum NameRules {
    Linux,
    Macos,
    Windows,
}

impl NameRules {
    fn host() -> NameRules {
        match Style::HOST {
            Style::Linux => NameRules::Linux,
            Style::MacOs => NameRules::Macos,
            Style::Windows => NameRules::Windows,
        }
    }

    fn style(self) -> Style {
        match self {
            NameRules::Linux => Style::Linux,
            NameRules::Macos => Style::MacOs,
            NameRules::Windows => Style::Windows,
        }
    }
}

#[derive(Args)]
pub struct UnmountArgs {
    pub mountpoint: PathBuf,
}

/// How long `songfs mount` waits for the background daemon to have the mount live.
const START_TIMEOUT: Duration = Duration::from_secs(30);

pub fn run_mount(a: MountArgs) -> anyhow::Result<()> {
    let home = Home::from_env();
    let cfg = Config::load(&home)?;
    if let Some(pid) = daemon::running_pid(&home) {
        let at = daemon::read_status(&home)
            .map(|s| s.mountpoint.display().to_string())
            .unwrap_or_else(|| "?".into());
        bail!(
            "songfs is already running from {} (pid {pid}, mounted at {at}): run `songfs unmount {at}` first, or use another SONGFS_HOME",
            home.root.display()
        );
    }
    let (mountpoint, folder) = match (&a.folder, &a.mountpoint) {
        (Some(dir), _) => (super::folder::check_folder(dir)?, true),
        (None, Some(m)) => {
            check_fuse_installed()?;
            (check_mountpoint(m)?, false)
        }
        (None, None) => bail!("say where: `songfs mount DIR`, or `songfs mount --folder DIR`"),
    };
    super::passphrase::ask_if_missing(&cfg)?;
    if a.foreground {
        // The home's lock first: of two mounts started at once, only the winner records
        // where the mount sits.
        let home_lock = daemon::lock::acquire(&home)?;
        let mut cfg = cfg;
        if cfg.mount_point.as_deref() != Some(mountpoint.as_path()) {
            // The sync writes paths inside the mount relative to where it sits here.
            cfg.mount_point = Some(mountpoint.clone());
            cfg.save(&home)?;
        }
        let opts = DaemonOptions {
            mountpoint,
            cache_size: a.cache_size.unwrap_or(cfg.cache_size),
            fetch_timeout: Duration::from_secs(a.fetch_timeout.unwrap_or(cfg.fetch_timeout_secs)),
            allow_other: a.allow_other,
            sync_interval: Duration::from_secs(
                a.sync_interval.unwrap_or(cfg.sync_interval_secs).max(1),
            ),
            names: a.names.style(),
        };
        if folder {
            return daemon::folder::run(&home, &cfg, opts, home_lock);
        }
        return daemon::run(&home, &cfg, opts, home_lock);
    }
    start_background(&home, &a, &mountpoint, folder)
}

fn check_fuse_installed() -> anyhow::Result<()> {
    if !cfg!(fuse) {
        bail!("this build of songfs has no FUSE mount (Linux only): use folder mode, `songfs mount --folder DIR`");
    }
    if !Path::new("/dev/fuse").exists() {
        bail!("/dev/fuse is missing: install FUSE (`sudo apt install fuse3`) or load the module (`sudo modprobe fuse`)");
    }
    let root = crate::os::is_root();
    if !root && which("fusermount3").is_none() {
        bail!("fusermount3 is not installed: run `sudo apt install fuse3`");
    }
    Ok(())
}

fn which(prog: &str) -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|p| {
        std::env::split_paths(&p)
            .map(|d| d.join(prog))
            .find(|c| c.is_file())
    })
}

/// Validates the mountpoint and returns its absolute path.
fn check_mountpoint(dir: &Path) -> anyhow::Result<PathBuf> {
    let abs = if dir.is_absolute() {
        dir.to_path_buf()
    } else {
        std::env::current_dir()?.join(dir)
    };
    match std::fs::metadata(&abs) {
        Err(e) if e.raw_os_error() == Some(libc::ENOTCONN) => {
            tracing::warn!(dir = %abs.display(), "cleaning up a mount left by a crashed songfs");
            lazy_unmount(&abs)?;
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => bail!(
            "{} does not exist: create it first (`mkdir -p {}`)",
            abs.display(),
            abs.display()
        ),
        Err(e) => return Err(e).with_context(|| format!("cannot use {}", abs.display())),
        Ok(m) if !m.is_dir() => bail!(
            "{} is not a directory: mount on an empty folder",
            abs.display()
        ),
        Ok(_) => {}
    }
    let abs =
        std::fs::canonicalize(&abs).with_context(|| format!("cannot use {}", abs.display()))?;
    if is_mounted(&abs) {
        bail!(
            "{} is already mounted (busy): run `songfs unmount {}` first",
            abs.display(),
            abs.display()
        );
    }
    let mut entries =
        std::fs::read_dir(&abs).with_context(|| format!("cannot read {}", abs.display()))?;
    if entries.next().is_some() {
        bail!(
            "{} is not empty: songfs mounts only on an empty folder (its files would be hidden); move them away, or import them with `songfs import`",
            abs.display()
        );
    }
    Ok(abs)
}

fn lazy_unmount(dir: &Path) -> anyhow::Result<()> {
    let status = Command::new("fusermount3")
        .arg("-u")
        .arg("-z")
        .arg(dir)
        .status();
    match status {
        Ok(s) if s.success() => Ok(()),
        _ => {
            // As root, umount works where fusermount3 is missing.
            let ok = Command::new("umount")
                .arg("-l")
                .arg(dir)
                .status()
                .map(|s| s.success())
                .unwrap_or(false);
            if ok {
                Ok(())
            } else {
                bail!(
                    "{} is a dead songfs mount and could not be cleaned up: run `fusermount3 -u -z {}`",
                    dir.display(),
                    dir.display()
                )
            }
        }
    }
}

/// Unescapes a mountinfo path field (`\040` for a space, etc.).
fn unescape_mountinfo(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\' && i + 4 <= b.len() {
            if let Ok(v) = u8::from_str_radix(&s[i + 1..i + 4], 8) {
                out.push(v);
                i += 4;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// True if a FUSE filesystem is mounted exactly at `dir`.
pub fn is_mounted(dir: &Path) -> bool {
    let Ok(f) = std::fs::File::open("/proc/self/mountinfo") else {
        return false;
    };
    let want = dir.to_string_lossy();
    std::io::BufReader::new(f)
        .lines()
        .map_while(Result::ok)
        .any(|line| {
            let fields: Vec<&str> = line.split(' ').collect();
            let Some(sep) = fields.iter().position(|f| *f == "-") else {
                return false;
            };
            fields.len() > sep + 1
                && fields[sep + 1].starts_with("fuse")
                && fields.get(4).map(|m| unescape_mountinfo(m)) == Some(want.to_string())
        })
}

fn start_background(
    home: &Home,
    a: &MountArgs,
    mountpoint: &Path,
    folder: bool,
) -> anyhow::Result<()> {
    let log_dir = home.log_dir();
    std::fs::create_dir_all(&log_dir)
        .with_context(|| format!("cannot create {}", log_dir.display()))?;
    let log_path = log_dir.join("daemon.log");
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log_path)
        .with_context(|| format!("cannot write {}", log_path.display()))?;
    let log_start = log.metadata().map(|m| m.len()).unwrap_or(0);
    let mut cmd = Command::new(std::env::current_exe()?);
    cmd.arg("mount");
    if folder {
        cmd.arg("--folder");
    }
    cmd.arg(mountpoint).arg("--foreground");
    if folder {
        if let Some(v) = clap::ValueEnum::to_possible_value(&a.names) {
            cmd.arg("--names").arg(v.get_name());
        }
    }
    if let Some(c) = a.cache_size {
        cmd.arg("--cache-size").arg(c.to_string());
    }
    if let Some(t) = a.fetch_timeout {
        cmd.arg("--fetch-timeout").arg(t.to_string());
    }
    if a.allow_other {
        cmd.arg("--allow-other");
    }
    if let Some(s) = a.sync_interval {
        cmd.arg("--sync-interval").arg(s.to_string());
    }
    if std::env::var_os("RUST_LOG").is_none() {
        // fuser warns on every external unmount (it tries to unmount again): noise.
        cmd.env("RUST_LOG", "songfs=info,warn,fuser::session=error");
    }
    // The log is a file: no terminal colour codes in it.
    cmd.env("NO_COLOR", "1");
    cmd.stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log);
    // Closing the terminal must not kill the mount.
    crate::os::detach_from_terminal(&mut cmd);
    let mut child = cmd.spawn().context("cannot start the songfs daemon")?;
    let started = Instant::now();
    loop {
        // Our child's pid, not just any: a daemon started at the same instant by another
        // `songfs mount` may have won the home's lock while ours gives up.
        if (folder || is_mounted(mountpoint)) && daemon::running_pid(home) == Some(child.id()) {
            eprintln!(
                "songfs: {} {} (daemon pid {}, log {})",
                if folder { "keeping in step" } else { "mounted" },
                mountpoint.display(),
                child.id(),
                log_path.display()
            );
            // Mounted, but offline: the user must hear why now, not find it in the log.
            if let Some(why) = daemon::read_status(home).and_then(|s| s.offline_reason) {
                eprintln!("songfs: warning: {why}");
            }
            return Ok(());
        }
        if let Some(status) = child.try_wait()? {
            if let Some(pid) = daemon::lock::recorded_pid(home).filter(|p| *p != child.id()) {
                // The log is shared with the winner: its last line may be the winner's.
                return Err(daemon::lock::LockError::Held {
                    pid: Some(pid),
                    home: home.root.display().to_string(),
                }
                .into());
            }
            bail!(
                "the songfs daemon stopped ({status}): {}",
                log_tail(&log_path, log_start)
            );
        }
        if started.elapsed() > START_TIMEOUT {
            bail!(
                "the mount did not come up within {START_TIMEOUT:?}; see {}",
                log_path.display()
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The daemon's last error line from its log, to show why it stopped.
fn log_tail(log: &Path, from: u64) -> String {
    let text = std::fs::read(log).unwrap_or_default();
    let new = String::from_utf8_lossy(&text[(from as usize).min(text.len())..]).into_owned();
    new.lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .map(|l| l.trim().to_string())
        .unwrap_or_else(|| format!("see {}", log.display()))
}

pub fn run_unmount(a: UnmountArgs) -> anyhow::Result<()> {
    let home = Home::from_env();
    let abs = if a.mountpoint.is_absolute() {
        a.mountpoint.clone()
    } else {
        std::env::current_dir()?.join(&a.mountpoint)
    };
    if let Err(e) = std::fs::metadata(&abs) {
        if e.raw_os_error() == Some(libc::ENOTCONN) {
            return lazy_unmount(&abs);
        }
        return Err(e).with_context(|| format!("cannot use {}", abs.display()));
    }
    let abs = std::fs::canonicalize(&abs)?;
    if super::folder::is_kept_folder(&home, &abs) {
        return super::folder::stop(&home, &abs);
    }
    if !is_mounted(&abs) {
        bail!("{} is not mounted", abs.display());
    }
    let pid = daemon::running_pid(&home);
    let out = Command::new("fusermount3").arg("-u").arg(&abs).output();
    let ok = match out {
        Ok(o) if o.status.success() => true,
        Ok(o) => {
            let why = String::from_utf8_lossy(&o.stderr).trim().to_string();
            if why.contains("busy") {
                bail!(
                    "{} is busy (a program has a file open there): close it and try again",
                    abs.display()
                );
            }
            Command::new("umount")
                .arg(&abs)
                .status()
                .map(|s| s.success())
                .unwrap_or(false)
        }
        Err(_) => Command::new("umount")
            .arg(&abs)
            .status()
            .map(|s| s.success())
            .unwrap_or(false),
    };
    if !ok {
        bail!(
            "cannot unmount {}: run `fusermount3 -u {}`",
            abs.display(),
            abs.display()
        );
    }
    // Wait for the daemon to finish its uploads and exit.
    if let Some(pid) = pid {
        let deadline = Instant::now() + daemon::DRAIN_TIMEOUT + Duration::from_secs(10);
        while daemon::process_alive(pid) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    eprintln!("songfs: unmounted {}", abs.display());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mountinfo_paths_are_unescaped() {
        assert_eq!(unescape_mountinfo("/a\\040b"), "/a b");
        assert_eq!(unescape_mountinfo("/plain"), "/plain");
    }

    #[test]
    fn mountpoint_errors_say_what_to_do() {
        let d = tempfile::tempdir().unwrap();
        let missing = d.path().join("nope");
        let e = check_mountpoint(&missing).unwrap_err().to_string();
        assert!(e.contains("mkdir -p"), "{e}");
        let file = d.path().join("f");
        std::fs::write(&file, b"x").unwrap();
        let e = check_mountpoint(&file).unwrap_err().to_string();
        assert!(e.contains("not a directory"), "{e}");
        let e = check_mountpoint(d.path()).unwrap_err().to_string();
        assert!(e.contains("not empty"), "{e}");
        std::fs::remove_file(&file).unwrap();
        assert!(check_mountpoint(d.path()).is_ok());
    }
}
