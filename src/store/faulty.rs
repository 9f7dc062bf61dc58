//! A store wrapper for tests of what happens when the store misbehaves: it can be
//! switched offline (every request then fails with `Unreachable` after a delay, as a
//! dead network would), can add latency to every request, and counts requests.
//!
//! It wraps a real store (folder or S3) and never invents data: online, every call is
//! passed through unchanged. Counting lets a test check, e.g., that two readers of one
//! cold range cause one request.

use std::ops::Range;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;

use super::body::Body;
use super::{ObjectStore, StoreError, StoreResult};

/// How many requests of each kind reached the wrapper (offline ones included).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RequestCounts {
    pub gets: u64,
    pub get_ranges: u64,
    /// `put`, `put_file` and `put_if_absent`.
    pub puts: u64,
    pub heads: u64,
    pub lists: u64,
    pub deletes: u64,
}

impl RequestCounts {
    pub fn total(&self) -> u64 {
        self.gets + self.get_ranges + self.puts + self.heads + self.lists + self.deletes
    }
}

#[derive(Default)]
struct Counters {
    gets: AtomicU64,
    get_ranges: AtomicU64,
    puts: AtomicU64,
    heads: AtomicU64,
    lists: AtomicU64,
    deletes: AtomicU64,
}

pub struct FaultyStore {
    inner: Arc<dyn ObjectStore>,
    offline: AtomicBool,
    /// How long an offline request takes to fail, in milliseconds.
    offline_delay_ms: AtomicU64,
    /// Added before every online request, in milliseconds.
    latency_ms: AtomicU64,
    counters: Counters,
}

impl FaultyStore {
    /// Online, no added latency, an offline delay of 100 ms.
    pub fn new(inner: Arc<dyn ObjectStore>) -> FaultyStore {
        FaultyStore {
            inner,
            offline: AtomicBool::new(false),
            offline_delay_ms: AtomicU64::new(100),
            latency_ms: AtomicU64::new(0),
            counters: Counters::default(),
        }
    }

    /// Offline: every request fails with `Unreachable` after the offline delay.
    pub fn set_offline(&self, offline: bool) {
        self.offline.store(offline, Ordering::SeqCst);
    }

    pub fn is_offline(&self) -> bool {
        self.offline.load(Ordering::SeqCst)
    }

    pub fn set_offline_delay(&self, delay: Duration) {
        self.offline_delay_ms
            .store(delay.as_millis() as u64, Ordering::SeqCst);
    }

    /// Every online request waits this long first (makes concurrent requests overlap).
    pub fn set_latency(&self, latency: Duration) {
        self.latency_ms
            .store(latency.as_millis() as u64, Ordering::SeqCst);
    }

    pub fn counts(&self) -> RequestCounts {
        let c = &self.counters;
        RequestCounts {
            gets: c.gets.load(Ordering::SeqCst),
            get_ranges: c.get_ranges.load(Ordering::SeqCst),
            puts: c.puts.load(Ordering::SeqCst),
            heads: c.heads.load(Ordering::SeqCst),
            lists: c.lists.load(Ordering::SeqCst),
            deletes: c.deletes.load(Ordering::SeqCst),
        }
    }

    pub fn reset_counts(&self) {
        let c = &self.counters;
        for n in [
            &c.gets,
            &c.get_ranges,
            &c.puts,
            &c.heads,
            &c.lists,
            &c.deletes,
        ] {
            n.store(0, Ordering::SeqCst);
        }
    }

    /// Counts the request, then fails it if offline or delays it by the latency.
    async fn enter(&self, counter: &AtomicU64) -> StoreResult<()> {
        counter.fetch_add(1, Ordering::SeqCst);
        if self.is_offline() {
            let delay = self.offline_delay_ms.load(Ordering::SeqCst);
            tokio::time::sleep(Duration::from_millis(delay)).await;
            return Err(StoreError::Unreachable {
                detail: format!("{} is switched offline (test)", self.inner.describe()),
            });
        }
        let latency = self.latency_ms.load(Ordering::SeqCst);
        if latency > 0 {
            tokio::time::sleep(Duration::from_millis(latency)).await;
        }
        Ok(())
    }
}

#[async_trait]
impl ObjectStore for FaultyStore {
    async fn put(&self, key: &str, data: Bytes) -> StoreResult<()> {
        self.enter(&self.counters.puts).await?;
        self.inner.put(key, data).await
    }

    async fn put_file(&self, key: &str, path: &Path) -> StoreResult<()> {
        self.enter(&self.counters.puts).await?;
        self.inner.put_file(key, path).await
    }

    async fn put_body(&self, key: &str, body: Arc<dyn Body>) -> Option<StoreResult<()>> {
        if let Err(e) = self.enter(&self.counters.puts).await {
            return Some(Err(e));
        }
        self.inner.put_body(key, body).await
    }

    async fn put_if_absent(&self, key: &str, data: Bytes) -> StoreResult<bool> {
        self.enter(&self.counters.puts).await?;
        self.inner.put_if_absent(key, data).await
    }

    async fn get(&self, key: &str) -> StoreResult<Bytes> {
        self.enter(&self.counters.gets).await?;
        self.inner.get(key).await
    }

    async fn get_range(&self, key: &str, range: Range<u64>) -> StoreResult<Bytes> {
        self.enter(&self.counters.get_ranges).await?;
        self.inner.get_range(key, range).await
    }

    async fn head(&self, key: &str) -> StoreResult<Option<u64>> {
        self.enter(&self.counters.heads).await?;
        self.inner.head(key).await
    }

    async fn list(&self, prefix: &str) -> StoreResult<Vec<String>> {
        self.enter(&self.counters.lists).await?;
        self.inner.list(prefix).await
    }

    async fn delete(&self, key: &str) -> StoreResult<()> {
        self.enter(&self.counters.deletes).await?;
        self.inner.delete(key).await
    }

    fn describe(&self) -> String {
        format!("{} (fault-injecting wrapper)", self.inner.describe())
    }
    fn is_encrypted(&self) -> bool {
        self.inner.is_encrypted()
    }
}
