//! `songfs sync [--json] [--accept-restore]`: one sync cycle of the namespace and the app
//! database, run by the mount's daemon when one runs, else here.
//!
//! On a terminal, long work shows progress on stderr: a bar while the other devices'
//! change logs are applied (a new device catching up), a spinner while the file list
//! syncs or the daemon runs the cycle. Never on stdout, never with --json.
//! With --json, stdout is the line stream of `sync_json.rs` instead.

use std::io::IsTerminal;
use std::time::Duration;

use anyhow::Context;
use clap::Args;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use super::sync_json::{JsonStream, Phase, SummaryLine};
use crate::config::{Config, Home};
use crate::sync::cycle::{self, Options};

#[derive(Args)]
pub struct SyncArgs {
    /// A stream of JSON lines for programs (the app's "Sync Now"): progress, then the
    /// summary as the last line (doc/SYNC-JSON.md).
    #[arg(long)]
    pub json: bool,
    /// The database was restored from a backup on purpose: send its contents to the
    /// other devices as new edits (without this, songfs refuses to sync a restored database).
    #[arg(long)]
    pub accept_restore: bool,
}

pub fn run_sync(a: SyncArgs) -> anyhow::Result<()> {
    let stream = a.json.then(JsonStream::default);
    let result = sync(&a, stream.as_ref());
    if let (Err(e), Some(s)) = (&result, &stream) {
        s.error(&super::error_line(e));
    }
    result
}

fn sync(a: &SyncArgs, stream: Option<&JsonStream>) -> anyhow::Result<()> {
    let home = Home::from_env();
    let cfg = Config::load(&home)?;
    // A running mount owns the live namespace: it runs the cycle (never two at once).
    let show = !a.json && std::io::stderr().is_terminal();
    let daemon = crate::daemon::running_pid(&home).is_some();
    if !a.accept_restore {
        if let Some(s) = stream.filter(|_| daemon) {
            s.progress(Phase::Mount, None, None);
        }
        let wait = (show && daemon).then(|| spinner("the mount is running the sync cycle"));
        let report = super::files::sync_via_daemon(&home);
        if let Some(w) = wait {
            w.finish_and_clear();
        }
        if let Some(report) = report? {
            if let Some(s) = stream {
                s.summary(&SummaryLine::from_report(&report));
            }
            return super::files::print_report(&report, stream.is_some());
        }
    }
    let _lock = crate::daemon::sync_loop::CycleLock::acquire(&home).with_context(|| {
        format!(
            "cannot lock {}",
            crate::daemon::sync_loop::lock_path(&home).display()
        )
    })?;
    let rt = super::runtime()?;
    let store = rt
        .block_on(crate::store::open(&cfg.store))
        .with_context(|| format!("cannot open the store {}", cfg.store.url))?;
    let mut files = None;
    if crate::daemon::running_pid(&home).is_none() {
        if let Some(s) = stream {
            s.progress(Phase::Files, None, None);
        }
        let wait = show.then(|| spinner("syncing the file list"));
        let ns = crate::daemon::sync_loop::namespace_standalone(&home, &cfg, store.clone(), &rt);
        if let Some(w) = wait {
            w.finish_and_clear();
        }
        let ns = ns?;
        if cfg.db_path.is_none() {
            match stream {
                Some(s) => s.summary(&SummaryLine::new(Some(ns), None)),
                None => println!("{}", crate::daemon::sync_loop::ns_line(&ns)),
            }
            return Ok(());
        }
        files = Some(ns);
    }
    let opts = Options {
        accept_restore: a.accept_restore,
    };
    let handle = rt.handle().clone();
    let bar = show.then(logs_bar);
    let drawn = bar.clone();
    let json = a.json;
    let progress = move |done: usize, total: usize| {
        if let Some(b) = &drawn {
            b.set_length(total as u64);
            b.set_position(done as u64);
        }
        if json {
            JsonStream::default().progress(Phase::Receive, Some(done), Some(total));
        }
    };
    if let Some(s) = stream {
        s.progress(Phase::Send, None, None);
    }
    let summary = cycle::run_with_progress(&cfg, &home, store, &handle, opts, Some(&progress));
    if let Some(b) = &bar {
        b.finish_and_clear();
    }
    let summary = summary.context("sync failed")?;
    match stream {
        Some(s) => s.summary(&SummaryLine::new(files, Some(&summary))),
        None => println!("{}", summary.human()),
    }
    if !summary.errors.is_empty() {
        anyhow::bail!(
            "{} change log(s) could not be applied (the others were): {}",
            summary.errors.len(),
            summary.errors.join("; ")
        );
    }
    Ok(())
}

/// The bar for the other devices' change logs; drawn from the first report on (a cycle
/// with nothing to apply reports nothing, so shows nothing).
fn logs_bar() -> ProgressBar {
    let b = ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr());
    b.set_style(
        ProgressStyle::with_template(
            "applying other devices' changes [{bar:30}] {pos}/{len} change logs ({elapsed}, eta {eta})",
        )
        .expect("valid template")
        .progress_chars("=> "),
    );
    b
}

/// A spinner on stderr for work whose length is not known.
fn spinner(msg: &'static str) -> ProgressBar {
    let s = ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr());
    s.set_style(
        ProgressStyle::with_template("{spinner} {msg} ({elapsed})").expect("valid template"),
    );
    s.set_message(msg);
    s.enable_steady_tick(Duration::from_millis(120));
    s
}
