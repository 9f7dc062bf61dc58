//! The blob cache and the uploader against real stores: the folder store (wrapped in
//! the fault-injecting, request-counting `FaultyStore`) and, for the round trip
//! between two machines, a real s3s-fs server.
//!
//! Blobs are a few 256 KiB chunks so every test runs in well under a second or two.

mod common;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::s3server::{self, S3Server};
use songfs::cache::{BlobState, Cache, ReadAhead};
use songfs::content::{blob_key, chunks_key, hash_bytes, BlobInfo, CHUNK_SIZE};
use songfs::store::faulty::FaultyStore;
use songfs::store::local::LocalStore;
use songfs::store::s3::{S3Options, S3Store};
use songfs::store::ObjectStore;
use songfs::uploader::{RetryPolicy, Uploader};

const CHUNK: u64 = CHUNK_SIZE;
const TIMEOUT: Duration = Duration::from_secs(3);

/// A cache over a counting folder store, in a temp folder.
struct Fx {
    tmp: tempfile::TempDir,
    store: Arc<FaultyStore>,
    cache: Arc<Cache>,
    limit: u64,
}

impl Fx {
    fn new(limit: u64) -> Fx {
        let tmp = tempfile::tempdir().unwrap();
        let local: Arc<dyn ObjectStore> = Arc::new(LocalStore::new(tmp.path().join("store")));
        let store = Arc::new(FaultyStore::new(local));
        let cache = open_cache(tmp.path(), limit, store.clone(), TIMEOUT);
        Fx {
            tmp,
            store,
            cache,
            limit,
        }
    }

    /// Drops the cache (as a process exit would) and opens it again on the same state.
    fn reopen(self) -> Fx {
        let Fx {
            tmp,
            store,
            cache,
            limit,
        } = self;
        // A clean shutdown's flush, here and now: if the periodic flusher held the last
        // reference, the flush on drop would run on its thread, possibly after the
        // reopen below read the index (strong_count is 0 before Drop has run).
        cache.flush();
        let gone = Arc::downgrade(&cache);
        drop(cache);
        // Background tasks (a flush, a verification) let go of it within moments.
        let start = Instant::now();
        while gone.strong_count() > 0 {
            assert!(
                start.elapsed() < Duration::from_secs(5),
                "old cache still alive"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
        let cache = open_cache(tmp.path(), limit, store.clone(), TIMEOUT);
        Fx {
            tmp,
            store,
            cache,
            limit,
        }
    }

    fn store_file(&self, hash: &str) -> PathBuf {
        self.tmp.path().join("store").join(blob_key(hash))
    }

    /// Puts a blob and its sidecar in the store, as another machine's uploader would.
    async fn remote_blob(&self, len: u64, seed: u64) -> (BlobInfo, Vec<u8>) {
        remote_blob(self.store.as_ref(), len, seed).await
    }

    /// Writes `data` into staging and commits it, as the filesystem does at close.
    fn commit(&self, data: &[u8]) -> BlobInfo {
        commit(&self.cache, data)
    }

    fn get_ranges(&self) -> u64 {
        self.store.counts().get_ranges
    }
}

fn open_cache(
    root: &Path,
    limit: u64,
    store: Arc<dyn ObjectStore>,
    timeout: Duration,
) -> Arc<Cache> {
    Cache::open(
        &root.join("cache"),
        &root.join("state.db"),
        limit,
        store,
        timeout,
    )
    .unwrap()
}

fn commit(cache: &Cache, data: &[u8]) -> BlobInfo {
    let info = hash_bytes(data);
    let staged = cache.staging_dir().join(format!("w-{}", &info.hash[..8]));
    std::fs::write(&staged, data).unwrap();
    cache.commit_new(&staged, &info).unwrap();
    assert!(!staged.exists(), "commit moves the staged file");
    info
}

async fn remote_blob(store: &dyn ObjectStore, len: u64, seed: u64) -> (BlobInfo, Vec<u8>) {
    let data = pseudo_random(len, seed);
    let info = hash_bytes(&data);
    store
        .put(&blob_key(&info.hash), Bytes::from(data.clone()))
        .await
        .unwrap();
    store
        .put(
            &chunks_key(&info.hash),
            Bytes::from(serde_json::to_vec(&info).unwrap()),
        )
        .await
        .unwrap();
    (info, data)
}

fn pseudo_random(len: u64, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

fn slice(data: &[u8], offset: u64, len: u64) -> &[u8] {
    let end = (offset + len).min(data.len() as u64);
    &data[offset.min(end) as usize..end as usize]
}

async fn wait_complete(cache: &Cache, hash: &str) -> PathBuf {
    let start = Instant::now();
    loop {
        if let Some(p) = cache.complete_path(hash) {
            return p;
        }
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "blob never became complete"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Bytes allocated on disk under `dir` (sparse files count only their data).
fn disk_usage(dir: &Path) -> u64 {
    use std::os::unix::fs::MetadataExt;
    let mut total = 0;
    for entry in std::fs::read_dir(dir).unwrap().flatten() {
        let meta = entry.metadata().unwrap();
        total += if meta.is_dir() {
            disk_usage(&entry.path())
        } else {
            meta.blocks() * 512
        };
    }
    total
}

/// Evictable bytes: what the limit bounds.
fn evictable(cache: &Cache) -> u64 {
    let u = cache.usage();
    u.bytes - u.pinned_bytes - u.dirty_bytes
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cold_read_is_correct_and_a_seek_to_the_end_fetches_only_the_last_chunk() {
    let fx = Fx::new(64 * CHUNK);
    let (info, data) = fx.remote_blob(10 * CHUNK + 1000, 1).await;
    assert_eq!(fx.cache.state(&info.hash), BlobState::Remote);

    // ffprobe-style: the last bytes first.
    let got = fx.cache.read(&info, info.size - 100, 4096).await.unwrap();
    assert_eq!(&got[..], slice(&data, info.size - 100, 100));
    assert_eq!(fx.get_ranges(), 1, "one ranged GET for the last chunk only");
    assert_eq!(
        fx.cache.usage().bytes,
        1000,
        "only the last (short) chunk is kept"
    );
    assert_eq!(fx.cache.state(&info.hash), BlobState::Partial);

    // A read across a chunk boundary: one GET for both chunks.
    let got = fx.cache.read(&info, 3 * CHUNK - 10, 20).await.unwrap();
    assert_eq!(&got[..], slice(&data, 3 * CHUNK - 10, 20));
    assert_eq!(fx.get_ranges(), 2);

    // Cached now: no more requests.
    let got = fx.cache.read(&info, 3 * CHUNK - 5, 10).await.unwrap();
    assert_eq!(&got[..], slice(&data, 3 * CHUNK - 5, 10));
    assert_eq!(fx.get_ranges(), 2);

    // Past the end: empty, no request.
    assert!(fx
        .cache
        .read(&info, info.size, 10)
        .await
        .unwrap()
        .is_empty());
    assert_eq!(fx.get_ranges(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_blob_read_through_becomes_complete_and_is_served_from_its_file() {
    let fx = Fx::new(64 * CHUNK);
    let (info, data) = fx.remote_blob(5 * CHUNK + 7, 2).await;
    let mut offset = 0;
    while offset < info.size {
        let got = fx.cache.read(&info, offset, 100_000).await.unwrap();
        assert_eq!(&got[..], slice(&data, offset, 100_000));
        offset += got.len() as u64;
    }
    let path = wait_complete(&fx.cache, &info.hash).await;
    assert_eq!(std::fs::read(path).unwrap(), data);
    assert_eq!(fx.cache.state(&info.hash), BlobState::Cached);
    let before = fx.get_ranges();
    let got = fx.cache.read(&info, 0, 10_000_000).await.unwrap();
    assert_eq!(&got[..], &data[..]);
    assert_eq!(fx.get_ranges(), before);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_corrupt_chunk_is_eio_never_cached_and_stays_an_error() {
    let fx = Fx::new(64 * CHUNK);
    let (info, data) = fx.remote_blob(4 * CHUNK, 3).await;
    let path = fx.store_file(&info.hash);
    let mut bad = data.clone();
    bad[(CHUNK + 5) as usize] ^= 0xff;
    std::fs::write(&path, &bad).unwrap();

    for attempt in 1..=2 {
        let err = fx.cache.read(&info, CHUNK, 10).await.unwrap_err();
        assert_eq!(err.errno(), libc::EIO, "{err}");
        assert!(err.to_string().contains("does not match"), "{err}");
        assert_eq!(
            fx.get_ranges(),
            attempt,
            "the bad chunk is fetched again, not cached"
        );
    }
    assert_eq!(fx.cache.usage().bytes, 0);
    // The good chunks still read fine.
    let got = fx.cache.read(&info, 0, 10).await.unwrap();
    assert_eq!(&got[..], &data[..10]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_truncated_blob_is_eio() {
    let fx = Fx::new(64 * CHUNK);
    let (info, data) = fx.remote_blob(4 * CHUNK, 4).await;
    std::fs::write(
        fx.store_file(&info.hash),
        &data[..(2 * CHUNK + 100) as usize],
    )
    .unwrap();
    let err = fx.cache.read(&info, 3 * CHUNK, 10).await.unwrap_err();
    assert_eq!(err.errno(), libc::EIO);
    let err = fx.cache.read(&info, 2 * CHUNK, 10).await.unwrap_err();
    assert_eq!(err.errno(), libc::EIO, "a short chunk is not served either");
    assert_eq!(fx.cache.usage().bytes, 0);
    let err = fx.cache.materialize(&info).await.unwrap_err();
    assert_eq!(err.errno(), libc::EIO);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_blob_missing_from_the_store_is_eio_within_the_timeout() {
    let fx = Fx::new(64 * CHUNK);
    let info = hash_bytes(&pseudo_random(CHUNK, 5));
    let err = fx.cache.read(&info, 0, 10).await.unwrap_err();
    assert_eq!(err.errno(), libc::EIO, "{err}");
    assert!(err.to_string().contains("not in the store"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_reads_of_one_cold_chunk_make_one_request() {
    let fx = Fx::new(64 * CHUNK);
    let (info, data) = fx.remote_blob(8 * CHUNK, 6).await;
    fx.store.set_latency(Duration::from_millis(200));
    let reads = (0..8).map(|k| {
        let (cache, info) = (fx.cache.clone(), info.clone());
        tokio::spawn(async move { cache.read(&info, 3 * CHUNK + k * 1000, 500).await })
    });
    let results = futures::future::join_all(reads).await;
    for (k, r) in results.into_iter().enumerate() {
        let got = r.unwrap().unwrap();
        assert_eq!(&got[..], slice(&data, 3 * CHUNK + k as u64 * 1000, 500));
    }
    assert_eq!(fx.get_ranges(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_limit_holds_while_a_blob_larger_than_the_cache_streams_through() {
    let limit = 4 * CHUNK;
    let fx = Fx::new(limit);
    let (small, small_data) = fx.remote_blob(2 * CHUNK, 7).await;
    fx.cache.read(&small, 0, 1).await.unwrap();
    let (big, data) = fx.remote_blob(24 * CHUNK + 3, 8).await;
    let big = Arc::new(big);
    let ra = ReadAhead::default();
    let mut offset = 0;
    while offset < big.size {
        let got = fx
            .cache
            .read_ahead(&ra, &big, offset, 128 * 1024)
            .await
            .unwrap();
        assert_eq!(&got[..], slice(&data, offset, 128 * 1024), "at {offset}");
        offset += got.len() as u64;
        assert!(
            evictable(&fx.cache) <= limit,
            "{:?} at {offset}",
            fx.cache.usage()
        );
    }
    // Prefetches may still land: the limit holds then too.
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(evictable(&fx.cache) <= limit, "{:?}", fx.cache.usage());
    assert_eq!(
        fx.cache.state(&small.hash),
        BlobState::Remote,
        "the cold blob was evicted"
    );
    // On disk too: evicted chunks are holes, not just forgotten.
    let on_disk = disk_usage(&fx.tmp.path().join("cache/blobs"));
    assert!(on_disk <= limit, "{on_disk} bytes allocated");
    // And what was evicted reads again, correctly.
    let got = fx.cache.read(&small, 0, 2 * CHUNK as u32).await.unwrap();
    assert_eq!(&got[..], &small_data[..]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sequential_reads_prefetch_ahead_and_a_seek_fetches_only_what_it_needs() {
    let fx = Fx::new(256 * CHUNK);
    let (info, data) = fx.remote_blob(40 * CHUNK, 9).await;
    let info = Arc::new(info);
    let ra = ReadAhead::default();
    for k in 0..4u64 {
        let got = fx
            .cache
            .read_ahead(&ra, &info, k * 128 * 1024, 128 * 1024)
            .await
            .unwrap();
        assert_eq!(&got[..], slice(&data, k * 128 * 1024, 128 * 1024));
    }
    // The prefetch runs ahead of the reader: chunks past what was read arrive.
    let start = Instant::now();
    while fx.cache.usage().bytes < 8 * CHUNK {
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "no prefetch: {:?}",
            fx.cache.usage()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    let before = fx.get_ranges();
    // (a plain read: another read_ahead would widen the window and prefetch more)
    let got = fx.cache.read(&info, 4 * CHUNK, 1000).await.unwrap();
    assert_eq!(&got[..], slice(&data, 4 * CHUNK, 1000));
    assert_eq!(fx.get_ranges(), before, "served from prefetched chunks");

    // A seek far ahead: one GET for the chunk wanted, no prefetch for a random reader.
    let before = fx.get_ranges();
    let got = fx
        .cache
        .read_ahead(&ra, &info, 35 * CHUNK + 17, 100)
        .await
        .unwrap();
    assert_eq!(&got[..], slice(&data, 35 * CHUNK + 17, 100));
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(fx.get_ranges(), before + 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dirty_blobs_are_never_evicted() {
    let limit = 2 * CHUNK;
    let fx = Fx::new(limit);
    let written = pseudo_random(3 * CHUNK, 10);
    let info = fx.commit(&written);
    assert_eq!(fx.cache.state(&info.hash), BlobState::Uploading);
    assert!(!fx.cache.evict(&info.hash).unwrap());

    let (other, other_data) = fx.remote_blob(6 * CHUNK, 11).await;
    let got = fx.cache.read(&other, 0, 6 * CHUNK as u32).await.unwrap();
    assert_eq!(&got[..], &other_data[..]);
    assert!(evictable(&fx.cache) <= limit);
    let path = fx.cache.complete_path(&info.hash).expect("dirty blob kept");
    assert_eq!(std::fs::read(path).unwrap(), written);
    assert_eq!(fx.cache.usage().dirty_bytes, 3 * CHUNK);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pinned_blobs_are_never_evicted_until_unpinned() {
    let limit = 3 * CHUNK;
    let fx = Fx::new(limit);
    let (a, a_data) = fx.remote_blob(2 * CHUNK, 12).await;
    fx.cache.pin(&a.hash).unwrap();
    assert_eq!(fx.cache.state(&a.hash), BlobState::Pinned);
    let path = fx.cache.materialize(&a).await.unwrap();
    assert_eq!(std::fs::read(&path).unwrap(), a_data);
    assert!(!fx.cache.evict(&a.hash).unwrap());

    let (b, _) = fx.remote_blob(8 * CHUNK, 13).await;
    fx.cache.read(&b, 0, 8 * CHUNK as u32).await.unwrap();
    assert!(
        fx.cache.complete_path(&a.hash).is_some(),
        "pinned blob kept"
    );
    assert_eq!(fx.cache.usage().pinned_bytes, 2 * CHUNK);
    assert!(evictable(&fx.cache) <= limit);

    fx.cache.unpin(&a.hash).unwrap();
    assert_eq!(fx.cache.state(&a.hash), BlobState::Cached);
    let (c, _) = fx.remote_blob(3 * CHUNK, 14).await;
    fx.cache.read(&c, 0, 3 * CHUNK as u32).await.unwrap();
    assert!(
        fx.cache.complete_path(&a.hash).is_none(),
        "unpinned blob evicted"
    );
    assert!(evictable(&fx.cache) <= limit);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_keeps_cached_chunks_without_downloading_again() {
    let fx = Fx::new(64 * CHUNK);
    let (partial, p_data) = fx.remote_blob(8 * CHUNK, 15).await;
    let (whole, w_data) = fx.remote_blob(3 * CHUNK, 16).await;
    fx.cache.read(&partial, 0, 10).await.unwrap();
    fx.cache.read(&partial, 5 * CHUNK, 10).await.unwrap();
    fx.cache.read(&whole, 0, 3 * CHUNK as u32).await.unwrap();
    wait_complete(&fx.cache, &whole.hash).await;
    let written = fx.commit(&pseudo_random(CHUNK + 1, 17));
    let before = fx.get_ranges();

    let fx = fx.reopen();
    assert_eq!(fx.cache.state(&partial.hash), BlobState::Partial);
    assert_eq!(fx.cache.state(&whole.hash), BlobState::Cached);
    assert_eq!(fx.cache.state(&written.hash), BlobState::Uploading);
    let got = fx.cache.read(&partial, 5 * CHUNK + 3, 7).await.unwrap();
    assert_eq!(&got[..], slice(&p_data, 5 * CHUNK + 3, 7));
    let got = fx.cache.read(&partial, 0, 10).await.unwrap();
    assert_eq!(&got[..], &p_data[..10]);
    let path = fx.cache.complete_path(&whole.hash).unwrap();
    assert_eq!(std::fs::read(path).unwrap(), w_data);
    assert_eq!(fx.get_ranges(), before, "nothing downloaded again");
    assert_eq!(fx.cache.blob_info(&partial.hash), Some(partial.clone()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn open_removes_staging_leftovers_and_unrecorded_files() {
    let fx = Fx::new(64 * CHUNK);
    let leftover = fx.cache.staging_dir().join("half-written");
    std::fs::write(&leftover, b"partial write").unwrap();
    let stray = fx.tmp.path().join("cache/blobs/ab/ab00");
    std::fs::create_dir_all(stray.parent().unwrap()).unwrap();
    std::fs::write(&stray, b"x").unwrap();
    // A crash between recording a commit and moving its file: a row, no file.
    let lost = fx.commit(b"interrupted commit");
    std::fs::remove_file(fx.cache.data_path(&lost.hash)).unwrap();
    let fx = fx.reopen();
    assert!(!leftover.exists());
    assert!(!stray.exists());
    assert_eq!(fx.cache.state(&lost.hash), BlobState::Remote);
    assert!(fx.cache.upload_queue().is_empty());
}

/// A blob written here, synced by the flusher and then uploaded, is a whole clean copy
/// after a restart (the kernel may read it directly: `fs/passthrough.rs`), not a
/// partial one fetched again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_written_blob_synced_then_uploaded_is_cached_whole_after_a_restart() {
    let fx = Fx::new(64 * CHUNK);
    let info = fx.commit(&pseudo_random(3 * CHUNK, 42));
    fx.cache.flush();
    fx.cache.mark_uploaded(&info.hash).unwrap();
    let fx = fx.reopen();
    assert_eq!(fx.cache.state(&info.hash), BlobState::Cached);
    assert!(fx.cache.open_clean(&info.hash).is_some());
}

/// close() does not wait for the disk, so after a power loss a blob written here may be
/// recorded with none of its chunks vouched for (the row `commit_new` writes before the
/// flusher or an fsync syncs the file). Open checks those chunks: whole bytes are kept
/// and still queued; damaged ones are set aside in `damaged/`, never served or uploaded.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_written_blob_not_synced_before_a_power_loss_is_checked_at_open() {
    let fx = Fx::new(64 * CHUNK);
    let whole_data = pseudo_random(3 * CHUNK + 5, 40);
    let torn_data = pseudo_random(2 * CHUNK, 41);
    let whole = fx.commit(&whole_data);
    let torn = fx.commit(&torn_data);
    fx.cache.make_durable(&whole.hash).unwrap();
    let tmp = fx.tmp;
    let gone = Arc::downgrade(&fx.cache);
    drop(fx.cache);
    while gone.strong_count() > 0 {
        std::thread::sleep(Duration::from_millis(10));
    }
    // What the disk holds after the power loss: the rows as first written (no chunk
    // vouched for), and a block of one file that never made it.
    let db = rusqlite::Connection::open(tmp.path().join("state.db")).unwrap();
    let rows = db
        .execute(
            "UPDATE cache_blobs SET present = zeroblob(length(present)), complete = 0",
            [],
        )
        .unwrap();
    assert_eq!(rows, 2);
    drop(db);
    let torn_file = tmp
        .path()
        .join("cache/blobs")
        .join(&torn.hash[..2])
        .join(&torn.hash);
    assert!(torn_file.exists(), "{} missing", torn_file.display());
    let mut bytes = std::fs::read(&torn_file).unwrap();
    bytes[CHUNK as usize + 100..CHUNK as usize + 4196].fill(0);
    std::fs::write(&torn_file, &bytes).unwrap();

    let store: Arc<dyn ObjectStore> = Arc::new(LocalStore::new(tmp.path().join("store")));
    let cache = open_cache(tmp.path(), 64 * CHUNK, store, TIMEOUT);
    assert_eq!(cache.state(&whole.hash), BlobState::Uploading);
    let got = cache.read(&whole, 0, whole.size as u32).await.unwrap();
    assert_eq!(&got[..], &whole_data[..]);
    assert_eq!(cache.state(&torn.hash), BlobState::Remote);
    assert_eq!(
        cache.upload_queue(),
        vec![(whole.hash.clone(), whole.size)],
        "the damaged blob is not uploaded"
    );
    let kept = tmp.path().join("cache/damaged").join(&torn.hash);
    assert_eq!(
        std::fs::read(&kept).unwrap(),
        bytes,
        "what reached the disk is kept"
    );
    assert!(!torn_file.exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn offline_cached_reads_work_and_uncached_reads_fail_within_the_bound() {
    let tmp = tempfile::tempdir().unwrap();
    let local: Arc<dyn ObjectStore> = Arc::new(LocalStore::new(tmp.path().join("store")));
    let store = Arc::new(FaultyStore::new(local));
    let timeout = Duration::from_millis(300);
    let cache = open_cache(tmp.path(), 64 * CHUNK, store.clone(), timeout);
    let (info, data) = remote_blob(store.as_ref(), 4 * CHUNK, 18).await;
    cache.read(&info, 0, 100).await.unwrap();

    // A dead network: requests hang far longer than the timeout.
    store.set_offline_delay(Duration::from_secs(30));
    store.set_offline(true);
    let got = cache.read(&info, 10, 50).await.unwrap();
    assert_eq!(&got[..], &data[10..60]);
    let start = Instant::now();
    let err = cache.read(&info, 2 * CHUNK, 100).await.unwrap_err();
    assert!(
        start.elapsed() < Duration::from_secs(2),
        "{:?}",
        start.elapsed()
    );
    assert_eq!(err.errno(), libc::EIO, "{err}");
    let err = cache
        .fetch_info(&hash_bytes(b"other").hash, 5, None)
        .await
        .unwrap_err();
    assert_eq!(err.errno(), libc::EIO, "{err}");
    // Writes still succeed offline.
    commit(&cache, b"written offline");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commit_dedups_and_materialize_makes_a_remote_blob_local() {
    let fx = Fx::new(64 * CHUNK);
    let data = pseudo_random(CHUNK + 9, 19);
    let info = fx.commit(&data);
    let again = fx.cache.staging_dir().join("again");
    std::fs::write(&again, &data).unwrap();
    fx.cache.commit_new(&again, &info).unwrap();
    assert!(!again.exists(), "a duplicate staged file is removed");
    assert_eq!(fx.cache.usage().blobs, 1);

    let (remote, r_data) = fx.remote_blob(5 * CHUNK + 1, 20).await;
    let path = fx.cache.materialize(&remote).await.unwrap();
    assert_eq!(std::fs::read(path).unwrap(), r_data);
    let mut opened = fx.cache.open_complete(&remote.hash).unwrap();
    assert!(fx.cache.evict(&remote.hash).unwrap());
    let mut still = Vec::new();
    std::io::Read::read_to_end(&mut opened, &mut still).unwrap();
    assert_eq!(still, r_data, "an open complete file survives its eviction");
    assert!(fx.cache.open_complete(&remote.hash).is_none());
    assert_eq!(fx.get_ranges(), 2, "1 MiB runs: 6 chunks in two GETs");

    // A staged file that does not match its info is refused and left in place.
    let wrong = fx.cache.staging_dir().join("wrong");
    std::fs::write(&wrong, b"short").unwrap();
    let other = hash_bytes(&pseudo_random(1000, 28));
    let err = fx.cache.commit_new(&wrong, &other).unwrap_err();
    assert!(err.to_string().contains("5 bytes, not 1000"), "{err}");
    assert!(wrong.exists());
    assert_eq!(fx.cache.state(&other.hash), BlobState::Remote);
    assert!(
        fx.cache.commit_new(&wrong, &info).is_err(),
        "not even as a duplicate"
    );
    assert!(wrong.exists());
}

fn fast_retry() -> RetryPolicy {
    RetryPolicy {
        first_delay: Duration::from_millis(20),
        max_delay: Duration::from_millis(100),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_uploader_uploads_blob_and_sidecar_and_another_cache_reads_it() {
    let fx = Fx::new(64 * CHUNK);
    let data = pseudo_random(3 * CHUNK + 5, 21);
    let info = fx.commit(&data);
    let up = Uploader::start_with(fx.cache.clone(), fx.store.clone(), fast_retry());
    assert!(up.drain(Duration::from_secs(5)).await);
    assert_eq!(up.pending(), (0, 0));
    assert_eq!(up.last_error(), None);
    assert_eq!(std::fs::read(fx.store_file(&info.hash)).unwrap(), data);
    assert_eq!(fx.cache.state(&info.hash), BlobState::Cached);
    assert!(fx.cache.evict(&info.hash).unwrap(), "uploaded: evictable");
    up.shutdown().await;

    // Another machine: knows only (hash, size) from the namespace.
    let other = tempfile::tempdir().unwrap();
    let cache2 = open_cache(other.path(), 64 * CHUNK, fx.store.clone(), TIMEOUT);
    assert_eq!(cache2.blob_info(&info.hash), None);
    let got_info = cache2
        .fetch_info(&info.hash, info.size, Some(&info.chunk_root()))
        .await
        .unwrap();
    assert_eq!(got_info, info);
    assert_eq!(cache2.blob_info(&info.hash), Some(info.clone()));
    let got = cache2.read(&info, 0, 4 * CHUNK as u32).await.unwrap();
    assert_eq!(&got[..], &data[..]);
    // A sidecar that lies about the size is refused.
    let err = cache2
        .fetch_info(&hash_bytes(&data[..10]).hash, 10, None)
        .await
        .unwrap_err();
    assert_eq!(err.errno(), libc::EIO);
}

/// A file saved while a backlog uploads goes ahead of the blobs still waiting: it lands
/// while several of the backlog are still queued, not after the whole backlog.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_blob_queued_during_a_backlog_goes_up_before_the_backlog_ends() {
    let fx = Fx::new(64 * CHUNK);
    // Every request takes 100 ms: an upload (HEAD, blob, sidecar) about 0.3 s.
    fx.store.set_latency(Duration::from_millis(100));
    let backlog: Vec<BlobInfo> = (0..12)
        .map(|i| fx.commit(&pseudo_random(1000 + i, 300 + i)))
        .collect();
    let up = Uploader::start_with(fx.cache.clone(), fx.store.clone(), fast_retry());
    tokio::time::sleep(Duration::from_millis(50)).await;
    let saved = fx.commit(&pseudo_random(5000, 299));
    let start = Instant::now();
    while fx.cache.state(&saved.hash) != BlobState::Cached {
        assert!(start.elapsed() < Duration::from_secs(10), "never uploaded");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let still_waiting = backlog
        .iter()
        .filter(|b| fx.cache.state(&b.hash) == BlobState::Uploading)
        .count();
    assert!(
        still_waiting >= 2,
        "the saved file waited for the backlog: {still_waiting} of 12 left when it landed"
    );
    assert!(fx.store_file(&saved.hash).exists());
    assert!(up.drain(Duration::from_secs(10)).await);
    for b in &backlog {
        assert!(
            fx.store_file(&b.hash).exists(),
            "backlog blob {} lost",
            b.hash
        );
    }
    up.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_uploader_skips_blobs_the_store_already_has() {
    let fx = Fx::new(64 * CHUNK);
    let (info, data) = fx.remote_blob(2 * CHUNK, 22).await;
    fx.store.reset_counts();
    let committed = fx.commit(&data);
    assert_eq!(committed, info);
    let up = Uploader::start_with(fx.cache.clone(), fx.store.clone(), fast_retry());
    assert!(up.drain(Duration::from_secs(5)).await);
    assert_eq!(
        fx.store.counts().puts,
        0,
        "blob and sidecar were there: nothing sent"
    );
    assert_eq!(fx.cache.state(&info.hash), BlobState::Cached);
    up.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_uploader_retries_until_the_store_comes_back() {
    let fx = Fx::new(64 * CHUNK);
    fx.store.set_offline_delay(Duration::from_millis(5));
    fx.store.set_offline(true);
    let info = fx.commit(&pseudo_random(CHUNK, 23));
    let up = Uploader::start_with(fx.cache.clone(), fx.store.clone(), fast_retry());
    assert!(!up.drain(Duration::from_millis(300)).await);
    assert_eq!(up.pending(), (1, CHUNK));
    assert!(
        up.last_error().unwrap().contains("offline"),
        "{:?}",
        up.last_error()
    );
    assert!(
        fx.store.counts().heads >= 3,
        "retried: {:?}",
        fx.store.counts()
    );
    assert_eq!(fx.cache.state(&info.hash), BlobState::Uploading);

    fx.store.set_offline(false);
    assert!(up.drain(Duration::from_secs(5)).await);
    assert_eq!(up.last_error(), None);
    assert!(fx.store_file(&info.hash).exists());
    up.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_blob_that_cannot_be_uploaded_does_not_hold_up_the_others() {
    let fx = Fx::new(64 * CHUNK);
    let broken = fx.commit(&pseudo_random(CHUNK, 26));
    let fine = fx.commit(&pseudo_random(CHUNK, 27));
    // Its local copy vanished (a disk error, a user cleaning folders).
    std::fs::remove_file(fx.cache.data_path(&broken.hash)).unwrap();
    let up = Uploader::start_with(fx.cache.clone(), fx.store.clone(), fast_retry());
    let start = Instant::now();
    while fx.cache.state(&fine.hash) != BlobState::Cached || up.last_error().is_none() {
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "{:?}",
            up.last_error()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(up.pending(), (1, CHUNK));
    let error = up.last_error().unwrap();
    assert!(error.contains(&broken.hash[..12]), "{error}");
    assert!(!fx.store_file(&broken.hash).exists());
    up.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pending_uploads_resume_after_a_restart() {
    let fx = Fx::new(64 * CHUNK);
    fx.store.set_offline_delay(Duration::from_millis(5));
    fx.store.set_offline(true);
    let data = pseudo_random(2 * CHUNK + 1, 24);
    let info = fx.commit(&data);
    let up = Uploader::start_with(fx.cache.clone(), fx.store.clone(), fast_retry());
    assert!(!up.drain(Duration::from_millis(100)).await);
    up.shutdown().await;

    let fx = fx.reopen();
    fx.store.set_offline(false);
    assert_eq!(fx.cache.state(&info.hash), BlobState::Uploading);
    let up = Uploader::start_with(fx.cache.clone(), fx.store.clone(), fast_retry());
    assert_eq!(up.pending(), (1, 2 * CHUNK + 1));
    assert!(up.drain(Duration::from_secs(5)).await);
    assert_eq!(std::fs::read(fx.store_file(&info.hash)).unwrap(), data);
    up.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3_round_trip_between_two_machines() {
    let server = S3Server::start();
    let opts = S3Options {
        credentials: Some((s3server::ACCESS_KEY.into(), s3server::SECRET_KEY.into())),
        ..S3Options::default()
    };
    let s3: Arc<dyn ObjectStore> = Arc::new(
        S3Store::open(&server.store_config("lib"), opts)
            .await
            .unwrap(),
    );
    let store = Arc::new(FaultyStore::new(s3));

    let writer_dir = tempfile::tempdir().unwrap();
    let writer = open_cache(writer_dir.path(), 64 * CHUNK, store.clone(), TIMEOUT);
    let data = pseudo_random(6 * CHUNK + 11, 25);
    let info = commit(&writer, &data);
    let up = Uploader::start_with(writer.clone(), store.clone(), fast_retry());
    assert!(
        up.drain(Duration::from_secs(10)).await,
        "{:?}",
        up.last_error()
    );
    up.shutdown().await;

    let reader_dir = tempfile::tempdir().unwrap();
    let reader = open_cache(reader_dir.path(), 64 * CHUNK, store.clone(), TIMEOUT);
    let got_info = reader
        .fetch_info(&info.hash, info.size, None)
        .await
        .unwrap();
    assert_eq!(got_info, info);
    store.reset_counts();
    let got = reader.read(&info, info.size - 20, 100).await.unwrap();
    assert_eq!(&got[..], &data[data.len() - 20..]);
    assert_eq!(store.counts().get_ranges, 1);
    let path = reader.materialize(&info).await.unwrap();
    assert_eq!(std::fs::read(path).unwrap(), data);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3_server_down_cached_reads_work_uncached_fail_in_time_uploads_resume() {
    let mut server = S3Server::start();
    let opts = S3Options {
        credentials: Some((s3server::ACCESS_KEY.into(), s3server::SECRET_KEY.into())),
        ..S3Options::default()
    };
    let store: Arc<dyn ObjectStore> = Arc::new(
        S3Store::open(&server.store_config("lib"), opts)
            .await
            .unwrap(),
    );
    let (info, data) = remote_blob(store.as_ref(), 4 * CHUNK, 80).await;
    let tmp = tempfile::tempdir().unwrap();
    let timeout = Duration::from_millis(800);
    let cache = open_cache(tmp.path(), 64 * CHUNK, store.clone(), timeout);
    cache.read(&info, 0, 100).await.unwrap();

    server.stop();
    let got = cache.read(&info, 10, 20).await.unwrap();
    assert_eq!(&got[..], &data[10..30]);
    let start = Instant::now();
    let err = cache.read(&info, 3 * CHUNK, 100).await.unwrap_err();
    assert!(
        start.elapsed() < timeout + Duration::from_millis(500),
        "{:?}",
        start.elapsed()
    );
    assert_eq!(err.errno(), libc::EIO, "{err}");
    let written = commit(&cache, &pseudo_random(CHUNK, 81));
    let up = Uploader::start_with(cache.clone(), store.clone(), fast_retry());
    assert!(!up.drain(Duration::from_millis(300)).await);
    assert!(up.last_error().is_some());

    server.restart();
    assert!(
        up.drain(Duration::from_secs(10)).await,
        "{:?}",
        up.last_error()
    );
    assert_eq!(
        store.head(&blob_key(&written.hash)).await.unwrap(),
        Some(CHUNK)
    );
    let got = cache.read(&info, 3 * CHUNK, 100).await.unwrap();
    assert_eq!(&got[..], slice(&data, 3 * CHUNK, 100));
    up.shutdown().await;
}

/// A small tmpfs mounted for one test (we run as root here and in CI); unmounted on drop.
struct SmallDisk {
    dir: tempfile::TempDir,
}

impl SmallDisk {
    fn new(bytes: u64) -> Option<SmallDisk> {
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } != 0 {
            eprintln!("skipped: mounting a small tmpfs needs root");
            return None;
        }
        let dir = tempfile::tempdir().unwrap();
        let ok = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={bytes}"), "tmpfs"])
            .arg(dir.path())
            .status()
            .unwrap()
            .success();
        assert!(ok, "mount -t tmpfs failed");
        Some(SmallDisk { dir })
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg(self.dir.path())
            .status();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_streams_reads_through_and_refuses_to_materialize_with_enospc() {
    let Some(disk) = SmallDisk::new(4 * CHUNK) else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let store: Arc<dyn ObjectStore> = Arc::new(LocalStore::new(tmp.path().join("store")));
    let cache = Cache::open(
        &disk.path().join("cache"),
        &tmp.path().join("state.db"),
        64 * CHUNK,
        store.clone(),
        TIMEOUT,
    )
    .unwrap();
    let (info, data) = remote_blob(store.as_ref(), 12 * CHUNK, 29).await;
    let mut offset = 0;
    while offset < info.size {
        let got = cache.read(&info, offset, CHUNK as u32).await.unwrap();
        assert_eq!(&got[..], slice(&data, offset, CHUNK), "at {offset}");
        offset += got.len() as u64;
    }
    assert!(cache.complete_path(&info.hash).is_none());
    let err = cache.materialize(&info).await.unwrap_err();
    assert_eq!(err.errno(), libc::ENOSPC, "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commit_on_a_full_disk_is_enospc_and_records_nothing() {
    let Some(disk) = SmallDisk::new(64 * CHUNK) else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let store: Arc<dyn ObjectStore> = Arc::new(LocalStore::new(tmp.path().join("store")));
    let cache = Cache::open(
        &disk.path().join("cache"),
        &disk.path().join("state.db"),
        64 * CHUNK,
        store,
        TIMEOUT,
    )
    .unwrap();
    let data = pseudo_random(CHUNK, 30);
    let info = hash_bytes(&data);
    let staged = cache.staging_dir().join("song.wav");
    std::fs::write(&staged, &data).unwrap();
    // Fill the disk to the last byte.
    let filler = disk.path().join("filler");
    let mut f = std::fs::File::create(&filler).unwrap();
    let block = vec![7u8; 4096];
    loop {
        if let Err(e) = std::io::Write::write_all(&mut f, &block) {
            assert_eq!(e.raw_os_error(), Some(libc::ENOSPC));
            break;
        }
    }
    drop(f);

    let err = cache.commit_new(&staged, &info).unwrap_err();
    assert_eq!(err.errno(), libc::ENOSPC, "{err}");
    assert_eq!(
        std::fs::read(&staged).unwrap(),
        data,
        "the written file is kept"
    );
    assert_eq!(cache.state(&info.hash), BlobState::Remote);
    assert_eq!(cache.upload_queue(), vec![]);

    std::fs::remove_file(&filler).unwrap();
    cache.commit_new(&staged, &info).unwrap();
    assert_eq!(cache.state(&info.hash), BlobState::Uploading);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_lru_order_survives_a_restart() {
    let fx = Fx::new(5 * CHUNK);
    let (a, _) = fx.remote_blob(2 * CHUNK, 31).await;
    let (b, _) = fx.remote_blob(2 * CHUNK, 32).await;
    fx.cache.read(&a, 0, 2 * CHUNK as u32).await.unwrap();
    tokio::time::sleep(Duration::from_millis(5)).await;
    fx.cache.read(&b, 0, 2 * CHUNK as u32).await.unwrap();
    tokio::time::sleep(Duration::from_millis(5)).await;
    fx.cache.read(&a, 0, 10).await.unwrap(); // a is now the most recent
    let fx = fx.reopen();
    let (c, _) = fx.remote_blob(2 * CHUNK, 33).await;
    fx.cache.read(&c, 0, 2 * CHUNK as u32).await.unwrap();
    assert_eq!(
        fx.cache.state(&b.hash),
        BlobState::Remote,
        "b was the coldest"
    );
    assert_ne!(fx.cache.state(&a.hash), BlobState::Remote);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_random_reads_under_eviction_pressure_are_always_correct() {
    let fx = Fx::new(4 * CHUNK);
    let mut blobs = Vec::new();
    for seed in 40..43 {
        let (info, data) = fx.remote_blob(12 * CHUNK + seed, seed).await;
        blobs.push(Arc::new((Arc::new(info), data)));
    }
    let readers = (0..6u64).map(|r| {
        let (cache, blobs) = (fx.cache.clone(), blobs.clone());
        tokio::spawn(async move {
            let mut x = r * 7919 + 1;
            let ra = ReadAhead::default();
            for _ in 0..100 {
                x = x
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                let (info, data) = &*blobs[(x >> 60) as usize % blobs.len()];
                let offset = (x >> 20) % info.size;
                let len = ((x >> 8) % (3 * CHUNK)) as u32;
                let got = if r % 2 == 0 {
                    cache.read(info, offset, len).await
                } else {
                    cache.read_ahead(&ra, info, offset, len).await
                }
                .unwrap();
                assert_eq!(
                    &got[..],
                    slice(data, offset, len as u64),
                    "at {offset}+{len}"
                );
            }
        })
    });
    for r in futures::future::join_all(readers).await {
        r.unwrap();
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(evictable(&fx.cache) <= 4 * CHUNK, "{:?}", fx.cache.usage());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_small_files_all_reach_the_store_once() {
    let fx = Fx::new(64 * CHUNK);
    fx.store.set_latency(Duration::from_millis(20));
    let infos: Vec<BlobInfo> = (0..12)
        .map(|k| fx.commit(&pseudo_random(1000 + k, 50 + k)))
        .collect();
    let up = Uploader::start_with(fx.cache.clone(), fx.store.clone(), fast_retry());
    let start = Instant::now();
    assert!(
        up.drain(Duration::from_secs(10)).await,
        "{:?}",
        up.last_error()
    );
    // 12 blobs x (2 HEADs + 2 PUTs) x 20 ms one after the other would be ~1 s.
    assert!(
        start.elapsed() < Duration::from_millis(900),
        "{:?}",
        start.elapsed()
    );
    assert_eq!(fx.store.counts().puts, 24, "one blob and one sidecar each");
    for info in &infos {
        assert_eq!(fx.cache.state(&info.hash), BlobState::Cached);
        assert!(fx.store_file(&info.hash).exists());
    }
    up.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_blob_whose_chunks_match_but_whole_does_not_is_dropped() {
    let fx = Fx::new(64 * CHUNK);
    // A lying sidecar: the chunk hashes of `data`, under the name of other content.
    let data = pseudo_random(3 * CHUNK, 60);
    let mut info = hash_bytes(&data);
    info.hash = hash_bytes(b"something else").hash;
    fx.store
        .put(&blob_key(&info.hash), Bytes::from(data.clone()))
        .await
        .unwrap();
    let got = fx.cache.read(&info, 0, 3 * CHUNK as u32).await.unwrap();
    assert_eq!(&got[..], &data[..], "each chunk matched its hash");
    let err = fx.cache.materialize(&info).await.unwrap_err();
    assert_eq!(err.errno(), libc::EIO, "{err}");
    assert!(fx.cache.complete_path(&info.hash).is_none());
    let start = Instant::now();
    while fx.cache.state(&info.hash) != BlobState::Remote {
        assert!(start.elapsed() < Duration::from_secs(5), "never dropped");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Entry point of the child process of `kill_9_while_fetching_keeps_only_good_chunks`
/// (ignored: it only runs when that test starts it, with its folder in the environment).
#[test]
#[ignore]
fn child_reading_until_killed() {
    let root = PathBuf::from(std::env::var("SONGFS_TEST_CHILD_DIR").expect("run by the parent"));
    let info: BlobInfo =
        serde_json::from_slice(&std::fs::read(root.join("info.json")).unwrap()).unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let store: Arc<dyn ObjectStore> = Arc::new(LocalStore::new(root.join("store")));
        let cache = open_cache(&root, 1 << 30, store, TIMEOUT);
        for i in 0..info.chunks.len() as u64 {
            cache.read(&info, i * CHUNK, CHUNK as u32).await.unwrap();
            std::fs::write(root.join("progress"), i.to_string()).unwrap();
            tokio::time::sleep(Duration::from_millis(40)).await;
        }
        // Never returns normally: the parent kills this process.
        tokio::time::sleep(Duration::from_secs(60)).await;
    });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_while_fetching_keeps_only_good_chunks() {
    let tmp = tempfile::tempdir().unwrap();
    let local: Arc<dyn ObjectStore> = Arc::new(LocalStore::new(tmp.path().join("store")));
    let (info, data) = remote_blob(local.as_ref(), 60 * CHUNK, 70).await;
    std::fs::write(
        tmp.path().join("info.json"),
        serde_json::to_vec(&info).unwrap(),
    )
    .unwrap();
    let mut child = std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "child_reading_until_killed",
            "--ignored",
            "--nocapture",
        ])
        .env("SONGFS_TEST_CHILD_DIR", tmp.path())
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    // Past at least one flush (every second), in the middle of fetching.
    let start = Instant::now();
    let progress = || {
        std::fs::read_to_string(tmp.path().join("progress"))
            .ok()
            .and_then(|s| s.parse::<u64>().ok())
    };
    while start.elapsed() < Duration::from_millis(1600) || progress().unwrap_or(0) < 30 {
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "child stuck at {:?}",
            progress()
        );
        assert!(child.try_wait().unwrap().is_none(), "child exited early");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    let fetched = progress().unwrap() + 1;

    // Reopen with the store offline: only what the index kept can be read, and it
    // must be exactly the right bytes.
    let store = Arc::new(FaultyStore::new(local));
    store.set_offline_delay(Duration::from_millis(1));
    store.set_offline(true);
    let cache = open_cache(tmp.path(), 1 << 30, store, TIMEOUT);
    let mut kept = 0;
    for i in 0..60u64 {
        match cache.read(&info, i * CHUNK, CHUNK as u32).await {
            Ok(got) => {
                assert_eq!(&got[..], slice(&data, i * CHUNK, CHUNK), "chunk {i}");
                kept += 1;
            }
            Err(e) => assert_eq!(e.errno(), libc::EIO),
        }
    }
    assert!(kept > 0, "the flushed chunks survive a kill -9");
    assert!(kept <= fetched, "{kept} kept, {fetched} fetched");
}
