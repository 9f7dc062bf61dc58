//! Background upload of blobs written on this machine.
//!
//! The queue is the cache's dirty blobs (durable in mount.db, so a restart resumes
//! it), uploaded several at a time; a blob queued while others are in the air goes
//! ahead of those still waiting (see `run`). For each: the blob goes up first
//! (`content::blob_key`, skipped when the store already has it with the right size:
//! dedup), then its chunk-hash sidecar
//! (`content::chunks_key`), so a reader that finds the sidecar always finds the blob.
//! Only then is the blob marked uploaded in the cache, which makes it evictable. A
//! failure is retried with exponential backoff (capped), never dropped. This module
//! must never delete a dirty blob or mark one uploaded before the store has both
//! objects.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use futures::stream::{FuturesUnordered, StreamExt};

use crate::cache::{Cache, CacheError};
use crate::content::{blob_key, chunks_key};
use crate::store::{ObjectStore, StoreError};

/// Blobs uploaded at the same time (many small files are bound by round trips).
const PARALLEL_UPLOADS: usize = 4;

/// How the upload loop retries.
#[derive(Debug, Clone, Copy)]
pub struct RetryPolicy {
    pub first_delay: Duration,
    pub max_delay: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            first_delay: Duration::from_millis(500),
            max_delay: Duration::from_secs(60),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum UploadError {
    #[error("uploading {key}: {source}")]
    Store {
        key: String,
        #[source]
        source: StoreError,
    },
    #[error(transparent)]
    Cache(#[from] CacheError),
    #[error("blob {hash}: its chunk hashes are unknown here, cannot write its sidecar")]
    NoInfo { hash: String },
}

impl UploadError {
    /// The store is unreachable (as opposed to a problem with this one blob).
    pub fn is_transient(&self) -> bool {
        matches!(self, UploadError::Store { source, .. } if source.is_transient())
    }
}

pub struct Uploader {
    cache: Arc<Cache>,
    shared: Arc<Shared>,
    stop: tokio::sync::watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

#[derive(Default)]
struct Shared {
    last_error: Mutex<Option<String>>,
    /// The error of a blob failing for a reason retrying will not cure by itself (the
    /// store refuses it: read-only, denied, full), as opposed to network trouble.
    lasting_error: Mutex<Option<String>>,
    /// Woken after every upload attempt (drain waits on it).
    progress: tokio::sync::Notify,
}

impl Uploader {
    /// Starts the upload loop on the current tokio runtime, with the default retry policy.
    pub fn start(cache: Arc<Cache>, store: Arc<dyn ObjectStore>) -> Uploader {
        Uploader::start_with(cache, store, RetryPolicy::default())
    }

    pub fn start_with(
        cache: Arc<Cache>,
        store: Arc<dyn ObjectStore>,
        retry: RetryPolicy,
    ) -> Uploader {
        let shared = Arc::new(Shared::default());
        let (stop, stopped) = tokio::sync::watch::channel(false);
        let task = tokio::spawn(run(cache.clone(), store, shared.clone(), retry, stopped));
        Uploader {
            cache,
            shared,
            stop,
            task,
        }
    }

    /// Blobs waiting for upload, and their bytes.
    pub fn pending(&self) -> (u64, u64) {
        let q = self.cache.upload_queue();
        (q.len() as u64, q.iter().map(|(_, s)| s).sum())
    }

    /// Waits until the queue is empty or the timeout passes; true if drained.
    pub async fn drain(&self, timeout: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let progressed = self.shared.progress.notified();
            if self.pending().0 == 0 {
                return true;
            }
            // Poll as well as wait: a blob committed while we wait also counts.
            let wake = tokio::time::Instant::now() + Duration::from_millis(100);
            if tokio::time::timeout_at(wake.min(deadline), progressed)
                .await
                .is_err()
                && tokio::time::Instant::now() >= deadline
            {
                return self.pending().0 == 0;
            }
        }
    }

    /// The error of a blob whose last upload attempt failed; None when none is failing.
    pub fn last_error(&self) -> Option<String> {
        self.shared
            .last_error
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Why some blob cannot be uploaded, when retrying alone will not cure it (see
    /// `Shared::lasting_error`); None while uploads work or only the network fails.
    pub fn lasting_error(&self) -> Option<String> {
        self.shared
            .lasting_error
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Stops the loop (an upload in progress is abandoned and redone after restart).
    pub async fn shutdown(self) {
        let _ = self.stop.send(true);
        let _ = self.task.await;
    }
}

/// The loop: rounds of uploads. A round starts with the queue, keeps
/// `PARALLEL_UPLOADS` in the air, and takes in blobs queued while it runs, ahead of
/// those still waiting (a file saved during a long import should not wait for the whole
/// backlog, let alone for its slowest upload). It ends when nothing is left or the store
/// is down; after a failure the next round waits with backoff, else until a blob is
/// queued.
async fn run(
    cache: Arc<Cache>,
    store: Arc<dyn ObjectStore>,
    shared: Arc<Shared>,
    retry: RetryPolicy,
    mut stopped: tokio::sync::watch::Receiver<bool>,
) {
    let mut delay = retry.first_delay;
    // Blobs whose last attempt failed, with the error and whether it is transient.
    let mut failing: HashMap<String, (String, bool)> = HashMap::new();
    let upload = |hash: String, size: u64| {
        let (cache, store) = (&cache, store.as_ref());
        async move {
            let result = upload_one(cache, store, &hash, size).await;
            (hash, result)
        }
    };
    loop {
        // Armed before the queue is read, so a blob queued after the read wakes us.
        let queued = cache.upload_wakeup().notified();
        tokio::pin!(queued);
        let mut waiting: VecDeque<(String, u64)> = cache.upload_queue().into();
        let mut taken: HashSet<String> = waiting.iter().map(|(h, _)| h.clone()).collect();
        let mut in_air = FuturesUnordered::new();
        let mut failed = false;
        loop {
            while in_air.len() < PARALLEL_UPLOADS {
                let Some((hash, size)) = waiting.pop_front() else {
                    break;
                };
                in_air.push(upload(hash, size));
            }
            if in_air.is_empty() {
                break;
            }
            let (hash, result) = tokio::select! {
                Some(done) = in_air.next() => done,
                _ = &mut queued => {
                    queued.set(cache.upload_wakeup().notified());
                    for (hash, size) in cache.upload_queue() {
                        if taken.insert(hash.clone()) {
                            waiting.push_front((hash, size));
                        }
                    }
                    continue;
                }
                _ = stopped.changed() => return,
            };
            let mut store_down = false;
            match result {
                Ok(()) => {
                    failing.remove(&hash);
                }
                Err(e) => {
                    tracing::warn!(hash, "upload failed, retrying in {delay:?}: {e}");
                    store_down = e.is_transient();
                    failing.insert(hash.clone(), (e.to_string(), store_down));
                    failed = true;
                }
            }
            // The error shown is that of a blob still failing, if any.
            let shown = failing
                .get(&hash)
                .or_else(|| failing.values().next())
                .map(|(e, _)| e.clone());
            let lasting = failing
                .values()
                .find(|(_, transient)| !transient)
                .map(|(e, _)| e.clone());
            *shared.last_error.lock().unwrap_or_else(|e| e.into_inner()) = shown;
            *shared
                .lasting_error
                .lock()
                .unwrap_or_else(|e| e.into_inner()) = lasting;
            shared.progress.notify_waiters();
            if store_down {
                // Every other blob would fail the same way: wait, then retry (uploads
                // still in the air are dropped; they are redone whole).
                break;
            }
        }
        drop(in_air);
        if !failed {
            delay = retry.first_delay;
        }
        let wait = if failed {
            let d = delay;
            delay = (delay * 2).min(retry.max_delay);
            d
        } else {
            // Nothing to do: sleep until something is queued (or check now and then).
            retry.max_delay
        };
        tokio::select! {
            _ = &mut queued, if !failed => {}
            _ = tokio::time::sleep(wait) => {}
            _ = stopped.changed() => return,
        }
    }
}

async fn upload_one(
    cache: &Cache,
    store: &dyn ObjectStore,
    hash: &str,
    size: u64,
) -> Result<(), UploadError> {
    let info = cache
        .blob_info(hash)
        .ok_or_else(|| UploadError::NoInfo { hash: hash.into() })?;
    let key = blob_key(hash);
    let err = |key: &str| {
        let key = key.to_string();
        move |source| UploadError::Store { key, source }
    };
    if store.head(&key).await.map_err(err(&key))? == Some(size) {
        tracing::debug!(key, "already in the store");
    } else {
        store
            .put_file(&key, &cache.data_path(hash))
            .await
            .map_err(err(&key))?;
        tracing::info!(key, size, "uploaded");
    }
    let sidecar = chunks_key(hash);
    if store.head(&sidecar).await.map_err(err(&sidecar))?.is_none() {
        let json = serde_json::to_vec(&info).expect("BlobInfo serializes");
        store
            .put(&sidecar, Bytes::from(json))
            .await
            .map_err(err(&sidecar))?;
    }
    cache.mark_uploaded(hash)?;
    Ok(())
}
