//! Read-ahead for sequential readers: per open file, detect sequential access and
//! keep flights running ahead of the reader.
//!
//! The window starts at 1 MiB on the first sequential read and doubles on each one up
//! to 32 MiB (at most half the cache, so prefetched chunks are not evicted before they
//! are read). It is refilled when less than half of it remains ahead of the reader,
//! in runs of `fetch::MAX_RUN_CHUNKS` fetched `PARALLEL_GETS` at a time: one GET
//! stream is capped near 180 MiB/s here; eight in parallel keep further ahead of the
//! reader (cold `dd` of 256 MiB on 2 loaded cores, 5 runs: median 177 MiB/s with four,
//! 219 with eight). The eight are the cache's, shared by every prefetch in progress:
//! a refill starts while the previous one still runs, and with a bound per refill the
//! bodies in memory added up (heaptrack of a 1 GiB cold read: 23 MiB of them at the
//! peak); so at most 8 x 1 MiB of prefetched GET bodies are in memory. A read that is not
//! where the last one ended (a seek) resets the window and stops the prefetch in
//! progress between runs; the read itself then fetches only what it needs.
//! Prefetch errors are only logged: the foreground read reports its own.

use std::ops::Range;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use futures::StreamExt;

use super::{fetch, lock, Cache, CacheError};
use crate::content::{BlobInfo, CHUNK_SIZE};

/// GETs a prefetch keeps in the air at once.
pub const PARALLEL_GETS: usize = 8;
const FIRST_WINDOW: u64 = 1 << 20;
const MAX_WINDOW: u64 = 32 << 20;
/// Reads may arrive slightly out of order (several FUSE threads): still sequential.
const SEQUENTIAL_SLACK: u64 = 1 << 20;

/// Per open file handle read-ahead state (interior mutability, shared by the
/// handle's concurrent reads).
#[derive(Default)]
pub struct ReadAhead {
    inner: Mutex<Window>,
    /// Bumped on a seek; a running prefetch stops when it sees a newer epoch.
    epoch: Arc<AtomicU64>,
}

#[derive(Default)]
struct Window {
    hash: String,
    /// Where the next sequential read starts.
    next: u64,
    size: u64,
    /// Bytes before this offset were already requested.
    prefetched_to: u64,
}

impl ReadAhead {
    /// Decides what to prefetch for a read of `[offset, end)`; None if nothing.
    fn plan(
        &self,
        hash: &str,
        offset: u64,
        end: u64,
        blob_size: u64,
        max_window: u64,
    ) -> Option<Plan> {
        let mut w = lock(&self.inner);
        let sequential = w.hash == hash
            && offset + SEQUENTIAL_SLACK >= w.next
            && offset <= w.next + SEQUENTIAL_SLACK;
        let first_read = w.hash != hash;
        let fresh = first_read || !sequential;
        if fresh {
            if !first_read {
                self.epoch.fetch_add(1, Ordering::SeqCst);
            }
            *w = Window {
                hash: hash.to_string(),
                next: end,
                size: 0,
                prefetched_to: end,
            };
            // A file read from its start is most likely read through.
            if offset != 0 {
                return None;
            }
        }
        w.next = w.next.max(end);
        w.size = if w.size == 0 {
            FIRST_WINDOW
        } else {
            (w.size * 2).min(MAX_WINDOW)
        }
        .min(max_window.max(CHUNK_SIZE));
        let target = (w.next + w.size).min(blob_size);
        let ahead = w.prefetched_to.saturating_sub(w.next);
        if target <= w.prefetched_to || ahead >= w.size / 2 {
            return None;
        }
        let start = w.prefetched_to.max(w.next);
        w.prefetched_to = target;
        Some(Plan {
            bytes: start..target,
            epoch: self.epoch.load(Ordering::SeqCst),
            fresh,
        })
    }
}

/// What `ReadAhead::plan` decided to prefetch.
struct Plan {
    bytes: Range<u64>,
    /// The epoch the prefetch belongs to (a later seek cancels it).
    epoch: u64,
    /// The window was just (re)started: the reader's own bytes are not in the air yet.
    fresh: bool,
}

impl Cache {
    /// `read`, for a sequential reader: also prefetches ahead in the background, and
    /// answers as soon as the bytes are verified (they are written into the cache
    /// right after).
    pub async fn read_ahead(
        &self,
        ra: &ReadAhead,
        blob: &Arc<BlobInfo>,
        offset: u64,
        len: u32,
    ) -> Result<Bytes, CacheError> {
        let end = offset.saturating_add(len as u64).min(blob.size);
        let whole_here = lock(&self.state)
            .entries
            .get(&blob.hash)
            .is_some_and(|e| e.complete);
        let plan = if !whole_here && offset < end {
            ra.plan(&blob.hash, offset, end, blob.size, self.limit / 2)
        } else {
            None
        };
        match plan {
            None => self.read_kept(blob, offset, len, false).await,
            // A fresh window: the bytes the reader waits for are fetched alone and
            // replied first; a prefetch GET started at the same time would share the
            // link and the CPU with them (measured: first 64 KiB of a cold file 7-60 ms
            // with a 1 MiB prefetch beside it). Read-ahead starts right after.
            Some(p) if p.fresh => {
                let out = self.read_kept(blob, offset, len, false).await;
                self.spawn_prefetch(blob, p.bytes, ra.epoch.clone(), p.epoch);
                out
            }
            Some(p) => {
                self.spawn_prefetch(blob, p.bytes, ra.epoch.clone(), p.epoch);
                self.read_kept(blob, offset, len, false).await
            }
        }
    }

    fn spawn_prefetch(
        &self,
        blob: &Arc<BlobInfo>,
        bytes: Range<u64>,
        epoch: Arc<AtomicU64>,
        at: u64,
    ) {
        if super::check_info(blob).is_err() {
            return;
        }
        let cache = self.me.upgrade().expect("a cache in use is alive");
        let info = blob.clone();
        let first = bytes.start / CHUNK_SIZE;
        let last = (bytes.end - 1) / CHUNK_SIZE + 1;
        let step = fetch::MAX_RUN_CHUNKS;
        let runs: Vec<Range<u64>> = (first..last)
            .step_by(step as usize)
            .map(|s| s..(s + step).min(last))
            .collect();
        tokio::spawn(async move {
            futures::stream::iter(runs)
                .map(|run| {
                    let (cache, info, epoch) = (cache.clone(), info.clone(), epoch.clone());
                    async move {
                        let Ok(_slot) = cache.prefetch_slots.clone().acquire_owned().await else {
                            return; // never closed
                        };
                        if epoch.load(Ordering::SeqCst) != at {
                            return; // the reader seeked away
                        }
                        let got = cache
                            .with_timeout(
                                &info.hash,
                                cache.fetch_missing(&info, run.clone(), false, true),
                            )
                            .await;
                        if let Err(e) | Ok(Err(e)) = got.map(|r| r.map(|_| ())) {
                            tracing::debug!(hash = %info.hash, ?run, "prefetch failed: {e}");
                        }
                    }
                })
                .buffer_unordered(PARALLEL_GETS)
                .collect::<()>()
                .await;
        });
    }
}
