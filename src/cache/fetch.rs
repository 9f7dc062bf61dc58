//! Filling holes: ranged GETs of missing chunks, verified chunk by chunk, with a
//! singleflight so concurrent misses on one chunk make one request.
//!
//! A "flight" is one spawned task that GETs a run of consecutive missing chunks,
//! checks every chunk against its hash, writes the good run into the cache and then
//! leaves the registry. Every reader that wants one of those chunks meanwhile awaits
//! the same flight. The task is spawned (not polled by a reader) so a reader that
//! gives up (timeout, interrupted syscall) never cancels the download for the others.
//! A flight never lasts longer than `fetch_timeout`; a failed flight caches nothing and
//! leaves the registry before its readers hear of the failure.
//!
//! A flight answers its readers as soon as its chunks are verified, before they are
//! written into the cache: keeping them (a data file to create, index rows, perhaps an
//! eviction) touches the disk, and a reader waiting for the first bytes of a cold file
//! should not wait for that. The flight stays registered until its chunks are kept, so a
//! reader arriving meanwhile joins it (and gets the bytes from memory) instead of
//! fetching them again; callers that need the chunks *present* (materialize) also wait
//! for `kept`.
//!
//! A blob whose chunk-hash record is not known yet (a new device's first read) would
//! cost two round trips: the record, then the data. `send_chunk_get` sends the GET of
//! the reader's chunk first (it is the larger one), then `fetch_info_beside` sends the
//! record's and hands the chunk's bytes to a flight once the record has arrived, so they
//! are verified as any flight's before a reader gets one.

use std::collections::HashMap;
use std::ops::Range;
use std::sync::Arc;

use bytes::Bytes;
use futures::future::{BoxFuture, FutureExt, Shared};

use super::info::Fetched;
use super::{lock, BlobState, Cache, CacheError};
use crate::content::{blob_key, chunk_count, BlobInfo, CHUNK_SIZE};
use crate::store::StoreError;

/// Largest run of chunks one GET asks for (1 MiB). Each flight holds its whole body in
/// memory until it is verified, so this times `prefetch::PARALLEL_GETS` bounds the read
/// path's buffers: a new device reading 1 GiB cold peaked at 55.8–57.0 MiB RSS with
/// 4 MiB runs, 43.7–44.8 MiB with 1 MiB runs, in the same time (6.3–7.3 s vs 6.1–6.4 s).
pub const MAX_RUN_CHUNKS: u64 = 4;

pub type FlightOutput = Result<Arc<Vec<Bytes>>, CacheError>;
type Flight = Shared<BoxFuture<'static, FlightOutput>>;
/// The bytes of a GET sent before its flight was registered (see `fetch_info_beside`).
type Early = tokio::task::JoinHandle<Result<Bytes, CacheError>>;

/// What `known_info_or_get` found.
pub enum Lookup {
    Known(BlobInfo),
    /// Not known here; the GET of the read's chunk, when there is one, is on its way.
    Missing(Option<EarlyChunk>),
}

/// The GET of one chunk sent before its blob's chunk-hash record is known. Dropped
/// unused (the record failed, the caller gave up), it is aborted: bytes that were never
/// verified are never kept.
pub struct EarlyChunk {
    chunk: u64,
    task: Option<Early>,
}

impl Drop for EarlyChunk {
    fn drop(&mut self) {
        if let Some(t) = self.task.take() {
            t.abort();
        }
    }
}

/// Flights in the air, by (blob, chunk).
#[derive(Default)]
pub struct Flights {
    by_chunk: HashMap<(String, u64), InFlight>,
    next_id: u64,
}

#[derive(Clone)]
struct InFlight {
    id: u64,
    first: u64,
    flight: Flight,
    /// Resolves once the flight's chunks were written into the cache (or given up).
    kept: Shared<BoxFuture<'static, ()>>,
}

impl Cache {
    /// Bytes of the chunks of `want` that are not present locally, fetched (or joined)
    /// and verified. Chunks present locally are left out: the caller preads them.
    /// With `all`, present chunks are fetched too (a reader that kept losing its chunks
    /// to evictions gets everything from memory). With `kept`, also waits until the
    /// fetched chunks were written into the cache. Does not bound its own wait: callers
    /// wrap it in `fetch_timeout`.
    pub(super) async fn fetch_missing(
        &self,
        info: &Arc<BlobInfo>,
        want: Range<u64>,
        all: bool,
        kept: bool,
    ) -> Result<HashMap<u64, Bytes>, CacheError> {
        let mut waits: Vec<(u64, InFlight)> = Vec::new();
        {
            // Lock order: flights, then state (checking presence inside the flights lock
            // means a flight that just landed is seen, not fetched again).
            let mut flights = lock(&self.flights);
            let present: Vec<bool> = {
                let st = lock(&self.state);
                let entry = st.entries.get(&info.hash);
                want.clone()
                    .map(|i| !all && entry.is_some_and(|e| e.present.get(i)))
                    .collect()
            };
            let mut run: Option<Range<u64>> = None;
            for i in want.clone() {
                let key = (info.hash.clone(), i);
                let joined = flights.by_chunk.get(&key).cloned();
                let missing = !present[(i - want.start) as usize] && joined.is_none();
                if let Some(r) = run
                    .as_mut()
                    .filter(|r| missing && r.end - r.start < MAX_RUN_CHUNKS)
                {
                    r.end = i + 1;
                    continue;
                }
                if let Some(r) = run.take() {
                    waits.extend(self.start_flight(&mut flights, info, r, None));
                }
                if missing {
                    run = Some(i..i + 1);
                } else if let Some(f) = joined {
                    waits.push((i, f));
                }
            }
            if let Some(r) = run.take() {
                waits.extend(self.start_flight(&mut flights, info, r, None));
            }
        }
        let mut out = HashMap::new();
        for (i, f) in waits {
            let chunks = f.flight.clone().await?;
            if kept {
                f.kept.clone().await;
            }
            out.insert(i, chunks[(i - f.first) as usize].clone());
        }
        Ok(out)
    }

    /// For a read at `offset` (if any): the blob's chunk-hash record if it is known here,
    /// else the GET of the chunk holding `offset` already sent (`send_chunk_get`). A blob
    /// this cache holds no byte of has, nearly always, no record here either (a record is
    /// kept with the blob's first chunk): its GET goes out before the index lookup, which
    /// after a page-cache drop reads the disk (1.5 ms traced on a new device's first
    /// read); a record found after all drops the GET.
    pub async fn known_info_or_get(&self, hash: &str, size: u64, offset: Option<u64>) -> Lookup {
        let send = || async move {
            match offset {
                Some(at) => self.send_chunk_get(hash, size, at).await,
                None => None,
            }
        };
        let early = match self.state(hash) {
            BlobState::Remote => send().await,
            _ => None,
        };
        if let Some(info) = self.blob_info(hash) {
            return Lookup::Known(info);
        }
        Lookup::Missing(match early {
            Some(early) => Some(early),
            None => send().await,
        })
    }

    /// For a read at `offset` of a blob whose chunk-hash record is not known here: sends the GET of the chunk holding `offset` now, before anything
    /// else the read needs (the record's root from the catalog, the record itself), for
    /// `fetch_info_beside`. `None` when there is no such chunk.
    async fn send_chunk_get(&self, hash: &str, size: u64, offset: u64) -> Option<EarlyChunk> {
        if offset >= size || !crate::content::is_valid_hash(hash) {
            return None;
        }
        let i = offset / CHUNK_SIZE;
        let bytes = i * CHUNK_SIZE..((i + 1) * CHUNK_SIZE).min(size);
        let cache = self.me.upgrade().expect("a cache in use is alive");
        let h = hash.to_string();
        let task = tokio::spawn(async move { cache.get_bytes(&h, bytes).await });
        // The spawned task waits in this worker's queue until the caller yields: let it
        // send its request before the caller goes on (traced on a new device's first
        // read, it otherwise left 0.4 ms after the record's).
        tokio::task::yield_now().await;
        Some(EarlyChunk {
            chunk: i,
            task: Some(task),
        })
    }

    /// The chunk-hash record of `hash`, checked as `fetch_info` checks it, with the
    /// `early` GET of one of its chunks (from `send_chunk_get` for the same blob) in the
    /// air beside it: once the record is checked a flight for that chunk verifies the
    /// bytes against it, so the read that follows joins the flight instead of making a
    /// second round trip. A failed record fetch discards those bytes unread.
    pub async fn fetch_info_beside(
        &self,
        hash: &str,
        size: u64,
        root: Option<&str>,
        mut early: EarlyChunk,
    ) -> Result<BlobInfo, CacheError> {
        // A new record is not written to the index here: the flight's `keep_chunks`
        // writes it when it makes the blob's cache entry (`ensure_entry`), off the
        // reader's path. Writing it here too put a SQLite write and an fsync between the
        // verified chunk and the reply (traced under strace: 0.3-0.9 ms). If the chunk
        // fails its check, the record is fetched again by the next read.
        let info = Arc::new(match self.fetch_checked_info(hash, size, root).await? {
            Fetched::Known(info) | Fetched::New(info) => info,
        });
        debug_assert_eq!(chunk_count(info.size), chunk_count(size));
        let i = early.chunk;
        {
            let mut flights = lock(&self.flights);
            let present = lock(&self.state)
                .entries
                .get(hash)
                .is_some_and(|e| e.present.get(i));
            if !present && !flights.by_chunk.contains_key(&(hash.to_string(), i)) {
                self.start_flight(&mut flights, &info, i..i + 1, early.task.take());
            }
        }
        Ok(Arc::unwrap_or_clone(info))
    }

    /// Registers and spawns one flight for `run`; returns the (chunk, flight) pairs.
    /// `early` is a GET of exactly the run's bytes already on its way.
    fn start_flight(
        &self,
        flights: &mut Flights,
        info: &Arc<BlobInfo>,
        run: Range<u64>,
        early: Option<Early>,
    ) -> Vec<(u64, InFlight)> {
        flights.next_id += 1;
        let id = flights.next_id;
        let cache = self.me.upgrade().expect("a cache in use is alive");
        let (kept_tx, kept_rx) = tokio::sync::oneshot::channel::<()>();
        let kept = async move {
            let _ = kept_rx.await;
        }
        .boxed()
        .shared();
        let task = tokio::spawn(fly(cache, info.clone(), run.clone(), id, kept_tx, early));
        let flight = async move {
            task.await.unwrap_or_else(|e| {
                Err(CacheError::Internal {
                    what: format!("fetch task failed: {e}"),
                })
            })
        }
        .boxed()
        .shared();
        let f = InFlight {
            id,
            first: run.start,
            flight,
            kept,
        };
        run.map(|i| {
            flights.by_chunk.insert((info.hash.clone(), i), f.clone());
            (i, f.clone())
        })
        .collect()
    }

    /// GETs `bytes` of blob `hash`, bounded by `fetch_timeout`.
    async fn get_bytes(&self, hash: &str, bytes: Range<u64>) -> Result<Bytes, CacheError> {
        let key = blob_key(hash);
        let got = tokio::time::timeout(self.fetch_timeout, self.store.get_range(&key, bytes)).await;
        match got {
            Err(_) => {
                tracing::warn!(key, "the store did not answer in time");
                Err(CacheError::Timeout {
                    hash: hash.to_string(),
                    secs: self.fetch_timeout.as_secs_f64(),
                })
            }
            Ok(Err(StoreError::NotFound { key })) => Err(CacheError::NotInStore { key }),
            Ok(Err(e)) => Err(CacheError::Store {
                hash: hash.to_string(),
                source: Arc::new(e),
            }),
            Ok(Ok(data)) => Ok(data),
        }
    }

    /// GETs chunks `run` of the blob (or takes the `early` GET of them) and checks each
    /// against its hash.
    async fn get_verified(
        &self,
        info: &BlobInfo,
        run: Range<u64>,
        early: Option<Early>,
    ) -> FlightOutput {
        let key = blob_key(&info.hash);
        let bytes = info.chunk_range(run.start).start..info.chunk_range(run.end - 1).end;
        let data = match early {
            Some(task) => task.await.unwrap_or_else(|e| {
                Err(CacheError::Internal {
                    what: format!("fetch task failed: {e}"),
                })
            })?,
            None => self.get_bytes(&info.hash, bytes.clone()).await?,
        };
        let mut chunks = Vec::with_capacity((run.end - run.start) as usize);
        for i in run {
            let r = info.chunk_range(i);
            let (s, e) = (
                (r.start - bytes.start) as usize,
                (r.end - bytes.start) as usize,
            );
            let chunk = if e <= data.len() {
                data.slice(s..e)
            } else {
                Bytes::new()
            };
            if !info.verify_chunk(i, &chunk) {
                tracing::error!(
                    key,
                    chunk = i,
                    got_bytes = data.len(),
                    "chunk from the store does not match its hash (corrupt or truncated): \
                     not served, not cached"
                );
                return Err(CacheError::Corrupt {
                    hash: info.hash.clone(),
                    chunk: i,
                });
            }
            chunks.push(chunk);
        }
        Ok(Arc::new(chunks))
    }
}

/// The body of one flight: fetch, verify, answer the readers; then keep the chunks and
/// leave the registry (signalled through `kept`). A failed flight leaves the registry
/// before it answers: a reader asking again after the error must get a new fetch, not
/// the same failure.
async fn fly(
    cache: Arc<Cache>,
    info: Arc<BlobInfo>,
    run: Range<u64>,
    id: u64,
    kept: tokio::sync::oneshot::Sender<()>,
    early: Option<Early>,
) -> FlightOutput {
    let out = cache.get_verified(&info, run.clone(), early).await;
    let Ok(chunks) = out.as_ref().cloned() else {
        leave(&cache, &info.hash, run, id);
        let _ = kept.send(());
        return out;
    };
    tokio::spawn(async move {
        let (c, i) = (cache.clone(), info.clone());
        let first = run.start;
        let done = tokio::task::spawn_blocking(move || c.keep_chunks(&i, first, &chunks));
        match done.await {
            Ok(Ok(())) => {}
            // The bytes are verified: they were served even if they cannot be kept.
            Ok(Err(e)) => tracing::warn!(hash = %info.hash, "fetched chunks not cached: {e}"),
            Err(e) => tracing::warn!(hash = %info.hash, "fetched chunks not cached: {e}"),
        }
        leave(&cache, &info.hash, run, id);
        let _ = kept.send(());
    });
    out
}

/// Removes flight `id` from the registry (a later flight of the same chunks stays).
fn leave(cache: &Cache, hash: &str, run: Range<u64>, id: u64) {
    let mut flights = lock(&cache.flights);
    for i in run {
        let key = (hash.to_string(), i);
        if flights.by_chunk.get(&key).is_some_and(|f| f.id == id) {
            flights.by_chunk.remove(&key);
        }
    }
}
