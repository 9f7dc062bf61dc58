//! The process behind `songfs mount --folder DIR`: the same store, cache, uploader,
//! catalog and sync loop as the mount (`daemon::open_core`), with the folder reconciler
//! (`folder/`) as the front end instead of a FUSE session. The sync loop runs a pass
//! before each cycle's namespace part (what changed here is in the catalog before it is
//! captured) and after it (what arrived is in the folder when `songfs sync` returns).
//!
//! It stops on SIGTERM/SIGINT (Ctrl-C on Windows) or when `songfs unmount DIR` leaves the
//! stop file (`stop_path`), then takes what settled, drains uploads for a bounded time,
//! runs the last cycle, like the mount. Must never: leave the pid file of a stopped
//! daemon, or start while another daemon of this home runs.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context;

use super::sync_loop::Invalidate;
use super::{open_core, DaemonOptions, Front};
use crate::config::{Config, Home};
use crate::folder::reconcile::Reconciler;
use crate::folder::watch::{lock, Watch};
use crate::store::ObjectStore;
use crate::sync::namespace::Touched;

/// How often the folder is rescanned without a notification (the safety net).
pub const RESCAN_INTERVAL: Duration = Duration::from_secs(10);

/// Written by `songfs unmount DIR` to ask the folder daemon to stop (portable: no
/// signal needed).
pub fn stop_path(home: &Home) -> PathBuf {
    home.root.join("folder.stop")
}

/// The folder as the sync loop's front end.
struct FolderFront(Arc<Mutex<Reconciler>>);

impl Invalidate for FolderFront {
    fn invalidate(&self, _touched: &[Touched]) {
        lock(&self.0).pass();
    }
    fn before_cycle(&self) {
        lock(&self.0).pass();
    }
}

/// Keeps `opts.mountpoint` (a plain folder) in step until stopped, holding the home's
/// lock (taken by the caller before it touched the home).
pub fn run(
    home: &Home,
    cfg: &Config,
    opts: DaemonOptions,
    _home_lock: super::lock::HomeLock,
) -> anyhow::Result<()> {
    let core = open_core(home, cfg, &opts)?;
    let dir = opts.mountpoint.clone();
    let left = crate::folder::place::clear_leftovers(&dir)
        .with_context(|| format!("cannot clean {}", dir.display()))?;
    if left > 0 {
        tracing::info!(
            count = left,
            "removed downloads a stopped daemon left half-done"
        );
    }
    let _ = std::fs::remove_file(stop_path(home));
    let reconciler = Arc::new(Mutex::new(
        Reconciler::new(
            dir.clone(),
            core.catalog.clone(),
            core.cache.clone(),
            core.rt.handle().clone(),
            &core.mount_db,
            core.local_only.clone(),
            opts.names,
        )
        .with_context(|| format!("cannot open {}", core.mount_db.display()))?,
    ));
    let front = Front {
        path: dir.clone(),
        folder: true,
    };
    let beside = core.start_beside(
        home,
        cfg,
        &front,
        None,
        Box::new(FolderFront(reconciler.clone())),
        opts.sync_interval,
    )?;
    let watch = Watch::start(reconciler.clone(), &dir, RESCAN_INTERVAL);
    tracing::info!(folder = %dir.display(), store = %core.store.describe(), "folder mode: keeping the folder in step");

    core.rt.block_on(wait_for_stop(home));
    tracing::info!(folder = %dir.display(), "stopping: last pass, uploads, last sync");
    watch.stop();
    lock(&reconciler).pass();
    core.finish(home, &front, beside);
    let _ = std::fs::remove_file(stop_path(home));
    Ok(())
}

/// Until a stop signal, or the stop file `songfs unmount` writes.
async fn wait_for_stop(home: &Home) {
    let stop_file = stop_path(home);
    let by_file = async {
        while !stop_file.exists() {
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    };
    #[cfg(unix)]
    let by_signal = async {
        use tokio::signal::unix::{signal, SignalKind};
        match (
            signal(SignalKind::terminate()),
            signal(SignalKind::interrupt()),
        ) {
            (Ok(mut term), Ok(mut int)) => {
                tokio::select! {
                    _ = term.recv() => {}
                    _ = int.recv() => {}
                }
            }
            _ => std::future::pending().await,
        }
    };
    #[cfg(not(unix))]
    let by_signal = async {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await
        }
    };
    tokio::select! {
        _ = by_file => {}
        _ = by_signal => {}
    }
}
