//! `songfs status`: what this device is, whether its mount (or folder) runs, how the
//! sync stands; `--json` for programs (the app's "Sync Now" worker). Without a running
//! daemon it answers from the files the last mount or sync left, read-only.

use std::io::Write;
use std::path::{Path, PathBuf};

use clap::Args;

use super::mount::is_mounted;
use crate::config::{Config, Home};
use crate::daemon;

#[derive(Args)]
pub struct StatusArgs {
    /// Machine-readable output.
    #[arg(long)]
    pub json: bool,
    /// Files or folders inside the mount: show each file's state instead
    /// (remote, partial, cached, pinned, uploading, local-only); with no mount running,
    /// as the last mount or sync left it.
    pub paths: Vec<PathBuf>,
}

pub fn run_status(a: StatusArgs) -> anyhow::Result<()> {
    let home = Home::from_env();
    let cfg = Config::load(&home)?;
    if !a.paths.is_empty() {
        return super::files::print_states(&home, &cfg, &a.paths, a.json);
    }
    let pid = daemon::running_pid(&home);
    let st = daemon::read_status(&home);
    let mount_db = crate::db::mount_db(&home).unwrap_or_else(|_| home.mount_db_path());
    let local = local_facts(&mount_db);
    let conflict_records = crate::sync::conflicts::read_newest_first(&cfg.conflicts_log_path())
        .map(|(r, _)| r.len())
        .unwrap_or(0);
    let sync = st.as_ref().and_then(|s| s.sync.clone());
    let mountpoint = st
        .as_ref()
        .map(|s| s.mountpoint.clone())
        .or(cfg.mount_point.clone());
    let folder = st.as_ref().is_some_and(|s| s.folder);
    let mounted = pid.is_some() && (folder || mountpoint.as_deref().is_some_and(is_mounted));
    let entries = crate::catalog::count_entries(&mount_db).ok();
    if a.json {
        let v = serde_json::json!({
            "device_id": cfg.device_id,
            "device_name": cfg.device_name,
            "store": cfg.store.url,
            "store_encrypted": cfg.store.encrypted,
            "mountpoint": mountpoint,
            "mounted": mounted,
            "folder_mode": folder,
            "daemon_pid": pid,
            "namespace_entries": entries,
            "local_only_files": local.local_only,
            "conflict_copies": local.conflict_copies,
            "conflicts_logged": conflict_records,
            "conflicts_not_looked_at": conflict_records.saturating_sub(super::conflicts::conflicts_seen(&home)),
            "conflicts_log": cfg.conflicts_log_path(),
            "last_sync": sync.as_ref().and_then(|s| s.last.clone()),
            "sync_cycles": sync.as_ref().map(|s| s.cycles),
            "last_sync_error": sync.as_ref().and_then(|s| s.last_error.clone()),
            "daemon": st,
        });
        let mut out = std::io::stdout().lock();
        serde_json::to_writer_pretty(&mut out, &v)?;
        writeln!(out)?;
        return Ok(());
    }
    let mut out = std::io::stdout().lock();
    writeln!(out, "device:   {} ({})", cfg.device_name, cfg.device_id)?;
    let sealed = if cfg.store.encrypted {
        " (encrypted)"
    } else {
        " (not encrypted)"
    };
    writeln!(out, "store:    {}{sealed}", cfg.store.url)?;
    match (&mountpoint, mounted) {
        (Some(m), true) if folder => writeln!(
            out,
            "folder:   {} (folder mode: kept in step, daemon pid {})",
            m.display(),
            pid.unwrap_or(0)
        )?,
        (Some(m), true) => writeln!(
            out,
            "mount:    {} (mounted, daemon pid {})",
            m.display(),
            pid.unwrap_or(0)
        )?,
        (Some(m), false) => writeln!(out, "mount:    {} (not mounted)", m.display())?,
        (None, _) => writeln!(out, "mount:    not mounted")?,
    }
    if let Some(n) = entries {
        writeln!(
            out,
            "files:    {} entries in the namespace",
            n.saturating_sub(1)
        )?;
    }
    match &st {
        Some(s) => {
            let stale = if mounted {
                ""
            } else {
                " (as of the last mount)"
            };
            writeln!(
                out,
                "cache:    {} of {} used ({} not yet uploaded, {} pinned, {} blobs){stale}",
                human(s.cache_bytes),
                human(s.cache_limit),
                human(s.cache_dirty_bytes),
                human(s.cache_pinned_bytes),
                s.cache_blobs
            )?;
            writeln!(
                out,
                "uploads:  {} pending ({}){stale}",
                s.pending_uploads,
                human(s.pending_bytes)
            )?;
            if !s.store_reachable {
                let why = s
                    .offline_reason
                    .as_deref()
                    .unwrap_or("the store was unreachable when the mount started (offline)");
                writeln!(out, "warning:  {why}")?;
            }
            if let Some(e) = &s.last_error {
                writeln!(out, "last error: {e}")?;
            }
        }
        None => writeln!(out, "cache:    no mount has run yet")?,
    }
    match sync.as_ref().and_then(|s| s.last.as_ref()) {
        Some(r) => {
            writeln!(
                out,
                "sync:     last at {} ({} cycles): {}",
                r.finished_at,
                sync.as_ref().map(|s| s.cycles).unwrap_or(0),
                r.summary
            )?;
        }
        None => writeln!(out, "sync:     no sync cycle has run under a mount yet")?,
    }
    if let Some(e) = sync.as_ref().and_then(|s| s.last_error.as_ref()) {
        writeln!(out, "sync error: {e}")?;
    }
    if local.local_only > 0 {
        writeln!(
            out,
            "local:    {} file(s) stay on this machine only (never uploaded or synced: {})",
            local.local_only,
            cfg.local_only_patterns.join(", ")
        )?;
    }
    let unseen = conflict_records.saturating_sub(super::conflicts::conflicts_seen(&home));
    if local.conflict_copies > 0 || unseen > 0 {
        writeln!(
            out,
            "conflicts: {unseen} not looked at yet (`songfs conflicts`), {} cop{} waiting under .conflicts/ (`songfs conflicts --restore COPY` puts one back)",
            local.conflict_copies,
            if local.conflict_copies == 1 { "y" } else { "ies" },
        )?;
    }

    Ok(())
}

#[derive(Default)]
struct LocalFacts {
    local_only: u64,
    conflict_copies: u64,
}

/// Counts read straight from `mount.db` (status holds no catalog; a mount may run).
fn local_facts(state_db: &Path) -> LocalFacts {
    let Ok(db) = crate::catalog::open_db(state_db) else {
        return LocalFacts::default();
    };
    let count = |sql: &str| -> u64 {
        db.query_row(sql, [], |r| r.get::<_, i64>(0))
            .map(|n| n as u64)
            .unwrap_or(0)
    };
    LocalFacts {
        local_only: count("SELECT COUNT(*) FROM ns_inodes WHERE kind = 'file' AND local_only = 1"),
        conflict_copies: count(
            "WITH RECURSIVE t(ino) AS (
                 SELECT ino FROM ns_inodes WHERE parent = 1 AND name = '.conflicts'
                 UNION ALL SELECT n.ino FROM ns_inodes n JOIN t ON n.parent = t.ino)
             SELECT COUNT(*) FROM ns_inodes WHERE kind = 'file' AND ino IN t",
        ),
    }
}

fn human(b: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = b as f64;
    let mut u = 0;
    while v >= 1024.0 && u < UNITS.len() - 1 {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{b} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}
