//! When the folder is looked at: on filesystem notifications (crate `notify`: inotify,
//! FSEvents, ReadDirectoryChangesW), every `SETTLE_QUIET` while a file waits to settle,
//! and every rescan interval regardless (the safety net for notifications lost to a full
//! queue, a network share that sends none, or a watcher that could not start). Each
//! look is one reconcile pass (`reconcile.rs`) on its own thread.
//!
//! Must never: run two passes at once (the reconciler sits in a mutex the sync loop
//! shares).

use std::path::Path;
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use notify::Watcher;

use super::reconcile::{Reconciler, SETTLE_QUIET};

/// How long a burst of notifications is gathered before the pass they cause.
const GATHER: Duration = Duration::from_millis(150);

enum Wake {
    Changed,
    Stop,
}

pub fn lock(r: &Mutex<Reconciler>) -> std::sync::MutexGuard<'_, Reconciler> {
    r.lock().unwrap_or_else(|p| p.into_inner())
}

/// The watcher and the thread that runs the passes.
pub struct Watch {
    tx: mpsc::Sender<Wake>,
    thread: Option<JoinHandle<()>>,
    _watcher: Option<notify::RecommendedWatcher>,
}

impl Watch {
    pub fn start(reconciler: Arc<Mutex<Reconciler>>, root: &Path, rescan: Duration) -> Watch {
        let (tx, rx) = mpsc::channel::<Wake>();
        let events = tx.clone();
        let watcher = notify::recommended_watcher(move |ev: notify::Result<notify::Event>| {
            if ev.is_ok() {
                let _ = events.send(Wake::Changed);
            }
        })
        .and_then(|mut w| w.watch(root, notify::RecursiveMode::Recursive).map(|()| w));
        let watcher = match watcher {
            Ok(w) => Some(w),
            Err(e) => {
                tracing::warn!(folder = %root.display(), error = %e, "no filesystem notifications for the folder: it is rescanned every {rescan:?} instead");
                None
            }
        };
        let thread = std::thread::Builder::new()
            .name("songfs-folder".into())
            .spawn(move || loop {
                let wait = if lock(&reconciler).has_waiting() {
                    SETTLE_QUIET
                } else {
                    rescan
                };
                match rx.recv_timeout(wait) {
                    Ok(Wake::Stop) | Err(RecvTimeoutError::Disconnected) => return,
                    Ok(Wake::Changed) => {
                        std::thread::sleep(GATHER);
                        if rx.try_iter().any(|w| matches!(w, Wake::Stop)) {
                            return;
                        }
                    }
                    Err(RecvTimeoutError::Timeout) => {}
                }
                lock(&reconciler).pass();
            })
            .expect("spawn the folder thread");
        Watch {
            tx,
            thread: Some(thread),
            _watcher: watcher,
        }
    }

    /// Stops the thread after the pass it may be running.
    pub fn stop(mut self) {
        let _ = self.tx.send(Wake::Stop);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
