//! `songfs pin`, `unpin`, `evict` (what is kept on this machine), `songfs restore` (a
//! conflict copy back to its place), and the client side of `songfs sync` while a mount
//! runs. All of these talk to the running daemon over its control socket: only it holds
//! the live namespace and cache. Must never act on the cache behind a running daemon's back.

use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context};
use clap::Args;

use crate::config::{Config, Home};
use crate::daemon::control::{self, ControlError, FileInfo, Request};
use crate::daemon::sync_loop::CycleReport;
use crate::sync::namespace::{conflict_copy_path, CONFLICTS_DIR};

#[derive(Args)]
pub struct PathsArgs {
    /// Files or folders inside the mount (folders: every file under them).
    #[arg(required = true)]
    pub paths: Vec<PathBuf>,
    /// Machine-readable output (one JSON array of {path, size, state}).
    #[arg(long)]
    pub json: bool,
}

#[derive(Args)]
pub struct RestoreArgs {
    /// A conflict copy under `<mount>/.conflicts/`.
    pub copy: PathBuf,
}

/// The mount point of the running daemon (from its status), else the configured one.
pub fn mount_point(home: &Home, cfg: &Config) -> anyhow::Result<PathBuf> {
    crate::daemon::read_status(home)
        .filter(|_| crate::daemon::running_pid(home).is_some())
        .map(|s| s.mountpoint)
        .or(cfg.mount_point.clone())
        .context("songfs has never been mounted here: run `songfs mount DIR` first")
}

fn not_running(home: &Home) -> anyhow::Error {
    anyhow::anyhow!(
        "no songfs mount is running for {}: run `songfs mount DIR` first",
        home.root.display()
    )
}

/// The files under the given user paths, as the daemon sees them.
fn list(home: &Home, mount: &Path, paths: &[PathBuf]) -> anyhow::Result<Vec<FileInfo>> {
    let rel = paths
        .iter()
        .map(|p| control::relative_to_mount(p, mount).map_err(anyhow::Error::msg))
        .collect::<anyhow::Result<Vec<_>>>()?;
    match control::ask(
        home,
        &Request::Files { paths: rel },
        Some(Duration::from_secs(30)),
    ) {
        Ok(r) => Ok(r.files),
        Err(ControlError::NotRunning(_)) => Err(not_running(home)),
        Err(e) => Err(e.into()),
    }
}

enum Op {
    Pin,
    Unpin,
    Evict,
}

fn run_op(a: PathsArgs, op: Op) -> anyhow::Result<()> {
    let home = Home::from_env();
    let cfg = Config::load(&home)?;
    let mount = mount_point(&home, &cfg)?;
    let files = list(&home, &mount, &a.paths)?;
    let total: u64 = files.iter().map(|f| f.size).sum();
    let bar = (matches!(op, Op::Pin) && std::io::stderr().is_terminal() && !a.json).then(|| {
        let b = indicatif::ProgressBar::new(total);
        b.set_style(
            indicatif::ProgressStyle::with_template(
                "{msg:30!} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} eta {eta}",
            )
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
        );
        b
    });
    let mut done = Vec::new();
    let mut failed = Vec::new();
    for f in files {
        if let Some(b) = &bar {
            b.set_message(f.path.clone());
        }
        let req = match op {
            Op::Pin => Request::Pin {
                path: f.path.clone(),
            },
            Op::Unpin => Request::Unpin {
                path: f.path.clone(),
            },
            Op::Evict => Request::Evict {
                path: f.path.clone(),
            },
        };
        match control::ask(&home, &req, None) {
            Ok(r) => done.extend(r.files),
            Err(e) => {
                tracing::warn!(path = %f.path, error = %e, "failed");
                failed.push(format!("{}: {e}", f.path));
            }
        }
        if let Some(b) = &bar {
            b.inc(f.size);
        }
    }
    if let Some(b) = bar {
        b.finish_and_clear();
    }
    let mut out = std::io::stdout().lock();
    if a.json {
        serde_json::to_writer(&mut out, &done)?;
        writeln!(out)?;
    } else {
        for f in &done {
            writeln!(out, "{:<10} {}", f.state, mount.join(&f.path).display())?;
        }
    }
    if !failed.is_empty() {
        bail!("{} file(s) failed: {}", failed.len(), failed.join("; "));
    }
    Ok(())
}

pub fn run_pin(a: PathsArgs) -> anyhow::Result<()> {
    run_op(a, Op::Pin)
}

pub fn run_unpin(a: PathsArgs) -> anyhow::Result<()> {
    run_op(a, Op::Unpin)
}

pub fn run_evict(a: PathsArgs) -> anyhow::Result<()> {
    run_op(a, Op::Evict)
}

/// `songfs status PATH...`: each file's state, from the running mount, else from what
/// the last mount or sync left on disk (said so in the output).
pub fn print_states(
    home: &Home,
    cfg: &Config,
    paths: &[PathBuf],
    json: bool,
) -> anyhow::Result<()> {
    if crate::daemon::running_pid(home).is_none() {
        return print_states_on_disk(home, cfg, paths, json);
    }
    let mount = mount_point(home, cfg)?;
    let files = match list(home, &mount, paths) {
        Ok(f) => f,
        // The daemon exited between the two looks.
        Err(_) if crate::daemon::running_pid(home).is_none() => {
            return print_states_on_disk(home, cfg, paths, json)
        }
        Err(e) => return Err(e),
    };
    let mut out = std::io::stdout().lock();
    if json {
        serde_json::to_writer_pretty(&mut out, &files)?;
        writeln!(out)?;
        return Ok(());
    }
    for f in &files {
        writeln!(
            out,
            "{:<10} {:>10}  {}{}",
            f.state,
            f.size,
            mount.join(&f.path).display(),
            super::ondisk::note_live(&f.state)
        )?;
    }
    Ok(())
}

/// `status PATH` with no daemon: the catalog and cache index in `state.db`, read-only.
/// What only a running mount knows (files open for writing, other devices' changes since
/// the last sync) is not there, and the output says so.
fn print_states_on_disk(
    home: &Home,
    cfg: &Config,
    paths: &[PathBuf],
    json: bool,
) -> anyhow::Result<()> {
    let disk = super::ondisk::OnDisk::load(home)?;
    if !disk.has_namespace() {
        bail!(
            "this device has no namespace yet (never mounted or synced): run `songfs sync` or `songfs mount DIR`"
        );
    }
    // A device that only ever ran `songfs sync` has no mount point: paths are then taken
    // relative to the library root.
    let mount = cfg.mount_point.clone();
    let mut files = Vec::new();
    for p in paths {
        let rel = match &mount {
            Some(m) => control::relative_to_mount(p, m).map_err(anyhow::Error::msg)?,
            None if p.is_relative() => p.to_string_lossy().into_owned(),
            None => bail!(
                "{} cannot be placed in the library: this device has never mounted it; give the path relative to the library root (e.g. 2026-02-12_song/song_v1.mp3)",
                p.display()
            ),
        };
        files.extend(disk.files_under(&rel)?);
    }
    let mut out = std::io::stdout().lock();
    if json {
        serde_json::to_writer_pretty(&mut out, &files)?;
        writeln!(out)?;
        return Ok(());
    }
    writeln!(
        out,
        "No mount is running: states as the last mount or sync left them in {} \
         (changes from other devices since then are not shown).",
        home.state_db_path().display()
    )?;
    for f in &files {
        let shown = match &mount {
            Some(m) => m.join(&f.path),
            None => PathBuf::from(&f.path),
        };
        writeln!(
            out,
            "{:<10} {:>10}  {}{}",
            f.state,
            f.size,
            shown.display(),
            super::ondisk::note(f.state)
        )?;
    }
    Ok(())
}

/// `songfs sync` while a mount runs: the daemon runs the cycle (so never two at once and
/// remote files land in the live namespace). None when no daemon is running.
pub fn sync_via_daemon(home: &Home) -> anyhow::Result<Option<CycleReport>> {
    match control::ask(home, &Request::Sync, Some(control::SYNC_TIMEOUT)) {
        Ok(r) => Ok(r.report),
        Err(ControlError::NotRunning(_)) => Ok(None),
        Err(e) => Err(e).context("the running mount could not sync"),
    }
}

/// Prints a cycle report like `songfs sync` does; an error in it fails the command.
pub fn print_report(r: &CycleReport, json: bool) -> anyhow::Result<()> {
    if json {
        println!("{}", serde_json::to_string(r)?);
    } else {
        println!("{}", r.summary);
    }
    if let Some(e) = &r.error {
        bail!("the sync finished with errors: {e}");
    }
    Ok(())
}

/// `songfs restore COPY`: the conflict copy goes back to its original place; the version
/// there now becomes a conflict copy itself (nothing is lost). Done through the mount, so
/// it syncs like any rename.
pub fn run_restore(a: RestoreArgs) -> anyhow::Result<()> {
    let home = Home::from_env();
    let cfg = Config::load(&home)?;
    let mount = mount_point(&home, &cfg)?;
    if crate::daemon::running_pid(&home).is_none() {
        return Err(not_running(&home));
    }
    let rel = control::relative_to_mount(&a.copy, &mount).map_err(anyhow::Error::msg)?;
    let original = original_of(&rel).with_context(|| {
        format!(
            "{} is not a conflict copy (those are under {}/{CONFLICTS_DIR}/ and named \"<name> (from <device> <date>).<ext>\")",
            a.copy.display(),
            mount.display()
        )
    })?;
    let copy_abs = mount.join(&rel);
    let orig_abs = mount.join(&original);
    if !copy_abs.is_file() {
        bail!("{} does not exist", copy_abs.display());
    }
    if orig_abs.exists() {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0);
        // A free name: never over another copy (the one being restored may carry the
        // same second in its name).
        let base = conflict_copy_path(&original, &cfg.device_name, now);
        let mut keep = mount.join(&base);
        let mut i = 2;
        while keep.exists() || keep == copy_abs {
            keep = mount.join(match base.rsplit_once('.') {
                Some((stem, ext)) if !stem.ends_with(CONFLICTS_DIR) => format!("{stem} {i}.{ext}"),
                _ => format!("{base} {i}"),
            });
            i += 1;
        }
        if let Some(d) = keep.parent() {
            std::fs::create_dir_all(d).with_context(|| format!("cannot create {}", d.display()))?;
        }
        std::fs::rename(&orig_abs, &keep).with_context(|| {
            format!(
                "cannot move {} aside to {}",
                orig_abs.display(),
                keep.display()
            )
        })?;
        println!("kept the current version as {}", keep.display());
    } else if let Some(d) = orig_abs.parent() {
        std::fs::create_dir_all(d).with_context(|| format!("cannot create {}", d.display()))?;
    }
    std::fs::rename(&copy_abs, &orig_abs).with_context(|| {
        format!(
            "cannot move {} to {}",
            copy_abs.display(),
            orig_abs.display()
        )
    })?;
    println!("restored {}", orig_abs.display());
    Ok(())
}

fn conflicts_seen_path(home: &Home) -> PathBuf {
    home.root.join("conflicts-seen")
}

/// Remembers how many conflict records `songfs conflicts` has shown.
pub fn mark_conflicts_seen(home: &Home, n: usize) {
    if let Err(e) = std::fs::write(conflicts_seen_path(home), n.to_string()) {
        tracing::warn!(error = %e, "cannot remember which conflicts were looked at");
    }
}

/// How many conflict records `songfs conflicts` has shown so far.
pub fn conflicts_seen(home: &Home) -> usize {
    std::fs::read_to_string(conflicts_seen_path(home))
        .ok()
        .and_then(|t| t.trim().parse().ok())
        .unwrap_or(0)
}

/// `.conflicts/a/b (from dev 2026-01-01 10-00-00).mp3` → `a/b.mp3`.
pub fn original_of(rel: &str) -> Option<String> {
    let inner = rel.strip_prefix(&format!("{CONFLICTS_DIR}/"))?;
    let (dir, file) = match inner.rsplit_once('/') {
        Some((d, f)) => (Some(d), f),
        None => (None, inner),
    };
    let at = file.rfind(" (from ")?;
    let close = at + file[at..].find(')')?;
    let mut rest = &file[close + 1..];
    // A second copy of the same version is "<name> (from …) 2.<ext>".
    if let Some(r) = rest.strip_prefix(' ') {
        let digits = r.bytes().take_while(u8::is_ascii_digit).count();
        if digits > 0 && (r.len() == digits || r.as_bytes()[digits] == b'.') {
            rest = &r[digits..];
        }
    }
    let name = format!("{}{rest}", &file[..at]);
    Some(match dir {
        Some(d) => format!("{d}/{name}"),
        None => name,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conflict_copies_name_their_original() {
        let c = conflict_copy_path("2026-02-12_song/song_v1.mp3", "laptop", 1_700_000_000_000);
        assert_eq!(
            original_of(&c).as_deref(),
            Some("2026-02-12_song/song_v1.mp3")
        );
        let c = conflict_copy_path("README", "laptop", 0);
        assert_eq!(original_of(&c).as_deref(), Some("README"));
        assert_eq!(
            original_of(".conflicts/a (from x 2026-01-01 00-00-00) 2.wav").as_deref(),
            Some("a.wav")
        );
        let c = conflict_copy_path("track 2.mp3", "x", 0);
        assert_eq!(original_of(&c).as_deref(), Some("track 2.mp3"));
        assert_eq!(original_of("a/b.mp3"), None);
    }
}
