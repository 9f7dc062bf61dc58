//! `songfs pin`, `unpin`, `evict` (what is kept on this machine), `songfs status PATH`
//! (each file's state), and the client side of `songfs sync` while a mount runs. These
//! talk to the running daemon over its control socket: only it holds the live namespace
//! and cache. With no daemon, `status PATH` reads the state the last mount or sync left
//! on disk (`ondisk.rs`). Must never act on the cache behind a running daemon's back.

use std::io::{IsTerminal, Write};
use std::path::{Component, Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context};
use clap::Args;

use crate::config::{Config, Home};
use crate::daemon::control::{self, ControlError, FileInfo, Request};
use crate::daemon::sync_loop::CycleReport;

#[derive(Args)]
pub struct PathsArgs {
    /// Files or folders inside the mount (folders: every file under them).
    #[arg(required = true)]
    pub paths: Vec<PathBuf>,
    /// Machine-readable output (one JSON array of {path, size, state}).
    #[arg(long)]
    pub json: bool,
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
            None if p.is_relative() && !p.components().any(|c| c == Component::ParentDir) => p
                .components()
                .filter_map(|c| match c {
                    Component::Normal(s) => Some(s.to_string_lossy()),
                    _ => None,
                })
                .collect::<Vec<_>>()
                .join("/"),
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
/// With `streamed` the JSON summary line was already written (`sync_json.rs`).
pub fn print_report(r: &CycleReport, streamed: bool) -> anyhow::Result<()> {
    if !streamed {
        println!("{}", r.summary);
    }
    if let Some(e) = &r.error {
        bail!("the sync finished with errors: {e}");
    }
    Ok(())
}
