//! The store's identity, checked before anything is written to it: `songfs.json` (its
//! format record, with the store id made at `songfs init`) must be there and carry the
//! store id this device recorded in its config. A folder store whose disk is not
//! attached (an empty mount point, a re-created folder) or an S3 endpoint answering for
//! another store fails the check, and every write and listing is refused with
//! `StoreError::WrongStore`, which callers treat as "offline": the uploader keeps its
//! queue and retries, the sync keeps its logs queued, nothing is created in the store's
//! place; once the right store answers again, everything goes out.
//!
//! Reads by key are not checked (blob reads are verified against their hash anyway);
//! listings are, since the sync pulls what a listing names. Every write is checked on its
//! own (one small GET of `songfs.json` before it): a check trusted for a while would let
//! the uploads of the next seconds into a store that changed in between, and an upload
//! marks the local copy evictable.
//! Must never write `songfs.json` or anything else on its own.

use std::ops::Range;
use std::path::Path;
use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;

use super::body::Body;
use super::format::{self, FORMAT_KEY};
use super::{ObjectStore, StoreError, StoreResult};

/// An `ObjectStore` that refuses to write into a store that is not this device's.
pub struct Checked {
    inner: Arc<dyn ObjectStore>,
    /// The store id recorded at init; None for a device set up before stores had ids
    /// (then only the presence of `songfs.json` is checked).
    expected: Option<String>,
}

impl Checked {
    pub fn new(inner: Arc<dyn ObjectStore>, expected: Option<String>) -> Checked {
        Checked { inner, expected }
    }

    fn wrong(&self, why: String) -> StoreError {
        StoreError::WrongStore {
            store: self.inner.describe(),
            why,
        }
    }

    /// Checks the identity now: `songfs.json` is there and carries the recorded store id.
    pub async fn verify(&self) -> StoreResult<()> {
        let raw = match self.inner.get(FORMAT_KEY).await {
            Ok(b) => b,
            Err(StoreError::NotFound { .. }) => {
                return Err(self.wrong(format!("it holds no {FORMAT_KEY}")))
            }
            Err(e) => return Err(e),
        };
        let record: format::StoreFormat = serde_json::from_slice(&raw)
            .map_err(|e| self.wrong(format!("its {FORMAT_KEY} is unreadable ({e})")))?;
        match (&self.expected, &record.store_id) {
            (Some(want), Some(got)) if want != got => {
                return Err(self.wrong(format!(
                    "its store id is {got}, this device was set up with {want}"
                )))
            }
            (Some(want), None) => {
                return Err(self.wrong(format!(
                    "its {FORMAT_KEY} has no store id, this device was set up with {want}"
                )))
            }
            _ => {}
        }
        Ok(())
    }
}

#[async_trait]
impl ObjectStore for Checked {
    async fn put(&self, key: &str, data: Bytes) -> StoreResult<()> {
        self.verify().await?;
        self.inner.put(key, data).await
    }

    async fn put_file(&self, key: &str, path: &Path) -> StoreResult<()> {
        self.verify().await?;
        self.inner.put_file(key, path).await
    }

    async fn put_body(&self, key: &str, body: Arc<dyn Body>) -> Option<StoreResult<()>> {
        if let Err(e) = self.verify().await {
            return Some(Err(e));
        }
        self.inner.put_body(key, body).await
    }

    async fn put_if_absent(&self, key: &str, data: Bytes) -> StoreResult<bool> {
        self.verify().await?;
        self.inner.put_if_absent(key, data).await
    }

    async fn get(&self, key: &str) -> StoreResult<Bytes> {
        self.inner.get(key).await
    }

    async fn get_range(&self, key: &str, range: Range<u64>) -> StoreResult<Bytes> {
        self.inner.get_range(key, range).await
    }

    async fn head(&self, key: &str) -> StoreResult<Option<u64>> {
        self.inner.head(key).await
    }

    async fn list(&self, prefix: &str) -> StoreResult<Vec<String>> {
        self.verify().await?;
        self.inner.list(prefix).await
    }

    async fn delete(&self, key: &str) -> StoreResult<()> {
        self.verify().await?;
        self.inner.delete(key).await
    }

    fn creates_atomically(&self) -> bool {
        self.inner.creates_atomically()
    }

    fn describe(&self) -> String {
        self.inner.describe()
    }
    fn is_encrypted(&self) -> bool {
        self.inner.is_encrypted()
    }
}
