//! What both front ends (the FUSE mount, the folder mode) run beside their own work,
//! started and stopped the same way: the status file (written first, so whoever sees the
//! daemon never reads the previous one's), the sync loop, the control socket where there
//! is one, the pid file `songfs mount` waits for, and a status writer. Stopping drains
//! the uploads for a bounded time, runs the last cycle (what was written last goes out
//! now), writes the final status and removes the pid file.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;

use super::sync_loop::{self, Invalidate, SyncLoop};
use super::{
    pid_path, status_path, Core, DaemonStatus, Offline, DRAIN_TIMEOUT, LAST_CYCLE_TIMEOUT,
};
use crate::cache::{Cache, CacheUsage};
use crate::config::{Config, Home};
use crate::store::ObjectStore;
use crate::uploader::Uploader;

/// The sync's "is this inode being written" question, answered by the front end.
pub(crate) type Busy = Arc<dyn Fn(u64) -> bool + Send + Sync>;

/// What runs beside a front end until it stops.
pub(crate) struct Beside {
    pub sync: SyncLoop,
    control_task: Option<tokio::task::JoinHandle<()>>,
    status_task: tokio::task::JoinHandle<()>,
}

impl Core {
    /// Starts what runs beside `front`: status file, sync loop (with the front end's
    /// `busy` and `invalidate` hooks), control socket, pid file, status writer.
    pub(crate) fn start_beside(
        &self,
        home: &Home,
        cfg: &Config,
        front: &Front,
        busy: Option<Busy>,
        invalidate: Box<dyn Invalidate>,
        interval: Duration,
    ) -> anyhow::Result<Beside> {
        self.write_status(
            home,
            front,
            &std::sync::Mutex::new(sync_loop::SyncStatus::default()),
        );
        let mut sync_cfg = cfg.clone();
        sync_cfg.mount_point = Some(front.path.clone());
        let sync = SyncLoop::start(
            sync_loop::CycleContext {
                home: home.clone(),
                cfg: sync_cfg,
                store: self.store.clone(),
                catalog: self.catalog.clone(),
                rt: self.rt.handle().clone(),
                busy,
                upload_error: Some({
                    let uploader = self.uploader.clone();
                    Arc::new(move || uploader.lasting_error())
                }),
            },
            Some(invalidate),
            interval,
        );
        let control_task = self.serve_control(home, &sync);
        std::fs::write(pid_path(home), format!("{}\n", std::process::id()))
            .with_context(|| format!("cannot write {}", pid_path(home).display()))?;
        let status_task = self.rt.spawn(write_status_loop(
            home.clone(),
            front.clone(),
            self.store.describe(),
            self.offline.clone(),
            self.cache.clone(),
            self.uploader.clone(),
            sync.status.clone(),
        ));
        Ok(Beside {
            sync,
            control_task,
            status_task,
        })
    }

    /// The control socket (`songfs sync`, pin, evict, status of a path), where the build
    /// has one.
    #[cfg(fuse)]
    fn serve_control(&self, home: &Home, sync: &SyncLoop) -> Option<tokio::task::JoinHandle<()>> {
        use super::control;
        let listener = {
            let _enter = self.rt.enter();
            control::bind(home)?
        };
        let served = Arc::new(control::Served {
            catalog: self.catalog.clone(),
            cache: self.cache.clone(),
            store: self.store.clone(),
            sync: sync.requester(),
        });
        Some(self.rt.spawn(control::serve(listener, served)))
    }

    #[cfg(not(fuse))]
    fn serve_control(&self, _: &Home, _: &SyncLoop) -> Option<tokio::task::JoinHandle<()>> {
        None
    }

    /// Stops what `start_beside` started, after the front end has stopped taking writes:
    /// drains uploads (bounded), runs the last cycle, writes the final status, removes the
    /// pid file.
    pub(crate) fn finish(self, home: &Home, front: &Front, beside: Beside) {
        let Beside {
            sync,
            control_task,
            status_task,
        } = beside;
        status_task.abort();
        let _ = self.rt.block_on(status_task);
        if !self.rt.block_on(self.uploader.drain(DRAIN_TIMEOUT)) {
            let (n, bytes) = self.uploader.pending();
            tracing::warn!(
                pending = n,
                bytes,
                "uploads not finished at the stop: they resume at the next start"
            );
        }
        let sync_status = sync.status.clone();
        sync.stop(LAST_CYCLE_TIMEOUT);
        if let Some(task) = control_task {
            task.abort();
            #[cfg(fuse)]
            let _ = std::fs::remove_file(super::control::socket_path(home));
        }
        self.write_status(home, front, &sync_status);
        if let Ok(up) = Arc::try_unwrap(self.uploader) {
            self.rt.block_on(up.shutdown());
        }
        let _ = std::fs::remove_file(pid_path(home));
    }

    fn write_status(
        &self,
        home: &Home,
        front: &Front,
        sync: &std::sync::Mutex<sync_loop::SyncStatus>,
    ) {
        write_status(
            home,
            front,
            &self.store.describe(),
            &self.offline,
            &self.cache,
            &self.uploader,
            sync,
        );
    }
}

/// Where a daemon serves: a mount point, or a folder kept in step (folder mode).
#[derive(Debug, Clone)]
pub(crate) struct Front {
    pub path: PathBuf,
    pub folder: bool,
}

async fn write_status_loop(
    home: Home,
    front: Front,
    store: String,
    offline: Offline,
    cache: Arc<Cache>,
    uploader: Arc<Uploader>,
    sync: Arc<std::sync::Mutex<sync_loop::SyncStatus>>,
) {
    loop {
        write_status(&home, &front, &store, &offline, &cache, &uploader, &sync);
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

fn write_status(
    home: &Home,
    front: &Front,
    store: &str,
    offline: &Offline,
    cache: &Cache,
    uploader: &Uploader,
    sync: &std::sync::Mutex<sync_loop::SyncStatus>,
) {
    let CacheUsage {
        bytes,
        limit,
        pinned_bytes,
        dirty_bytes,
        blobs,
    } = cache.usage();
    let (pending_uploads, pending_bytes) = uploader.pending();
    let s = DaemonStatus {
        pid: std::process::id(),
        mountpoint: front.path.clone(),
        folder: front.folder,
        store: store.to_string(),
        store_reachable: offline.is_none(),
        offline_reason: offline.clone(),
        cache_bytes: bytes,
        cache_limit: limit,
        cache_pinned_bytes: pinned_bytes,
        cache_dirty_bytes: dirty_bytes,
        cache_blobs: blobs,
        pending_uploads,
        pending_bytes,
        last_error: uploader.last_error(),
        updated_at: chrono::Utc::now().to_rfc3339(),
        sync: Some(sync.lock().unwrap_or_else(|p| p.into_inner()).clone()),
    };
    let path = status_path(home);
    let tmp = path.with_extension("json.tmp");
    let written = serde_json::to_vec_pretty(&s)
        .map_err(std::io::Error::other)
        .and_then(|b| std::fs::write(&tmp, b))
        .and_then(|_| std::fs::rename(&tmp, &path));
    if let Err(e) = written {
        tracing::warn!(path = %path.display(), error = %e, "cannot write the status file");
    }
}
