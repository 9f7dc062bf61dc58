//! `songfs sync [--json] [--accept-restore]`: one sync cycle of the app database;
//! `songfs conflicts [--json]`: what the sync resolved on its own, newest first.

use anyhow::Context;
use clap::Args;

use crate::config::{Config, Home};
use crate::sync::conflicts;
use crate::sync::cycle::{self, Options};

#[derive(Args)]
pub struct SyncArgs {
    /// Machine-readable summary (the app's "Sync Now" button reads it).
    #[arg(long)]
    pub json: bool,
    /// The database was restored from a backup on purpose: send its contents to the
    /// other devices as new edits (without this, songfs refuses to sync a restored database).
    #[arg(long)]
    pub accept_restore: bool,
}

#[derive(Args)]
pub struct ConflictsArgs {
    #[arg(long)]
    pub json: bool,
}

pub fn run_sync(a: SyncArgs) -> anyhow::Result<()> {
    let home = Home::from_env();
    let cfg = Config::load(&home)?;
    // A running mount owns the live namespace: it runs the cycle (never two at once).
    if !a.accept_restore {
        if let Some(report) = super::files::sync_via_daemon(&home)? {
            return super::files::print_report(&report, a.json);
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
    if crate::daemon::running_pid(&home).is_none() {
        let ns = crate::daemon::sync_loop::namespace_standalone(&home, &cfg, store.clone(), &rt)?;
        if cfg.db_path.is_none() {
            if a.json {
                println!("{}", serde_json::to_string(&ns)?);
            } else {
                println!("{}", crate::daemon::sync_loop::ns_line(&ns));
            }
            return Ok(());
        }
    }
    let opts = Options {
        accept_restore: a.accept_restore,
    };
    let handle = rt.handle().clone();
    let summary = cycle::run(&cfg, &home, store, &handle, opts).context("sync failed")?;
    if a.json {
        println!("{}", serde_json::to_string(&summary)?);
    } else {
        println!("{}", summary.human());
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

pub fn run_conflicts(a: ConflictsArgs) -> anyhow::Result<()> {
    let home = Home::from_env();
    let cfg = Config::load(&home)?;
    let path = cfg.conflicts_log_path();
    let (records, skipped) = conflicts::read_newest_first(&path)
        .with_context(|| format!("cannot read {}", path.display()))?;
    if skipped > 0 {
        tracing::warn!(skipped, path = %path.display(), "lines that are not conflict records were skipped");
    }
    // `songfs status` counts the conflicts logged since they were last looked at here.
    super::files::mark_conflicts_seen(&home, records.len());
    if a.json {
        println!("{}", serde_json::to_string(&records)?);
        return Ok(());
    }
    if records.is_empty() {
        println!("No conflicts.");
        return Ok(());
    }
    for r in records {
        let col = r
            .column
            .as_deref()
            .map(|c| format!(".{c}"))
            .unwrap_or_default();
        println!(
            "{}  {:<9} {}/{}{}  kept {}{}  lost {}{}\n    {}",
            r.at,
            r.kind,
            r.table,
            r.row,
            col,
            r.kept,
            r.kept_by
                .map(|d| format!(" (from {d})"))
                .unwrap_or_default(),
            r.lost,
            r.lost_by
                .map(|d| format!(" (from {d})"))
                .unwrap_or_default(),
            r.why
        );
    }
    Ok(())
}
