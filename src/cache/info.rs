//! The chunk-hash record of a blob (`BlobInfo`: the hash of every 256 KiB chunk), which
//! every fetched chunk is verified against: known locally, or fetched from the store's
//! sidecar once and checked against the blob's hash, size and chunk root (the one the
//! entry naming the blob carries) before it is kept.

use std::sync::Arc;

use super::{lock, Cache, CacheError};
use crate::content::{chunk_count, chunks_key, is_valid_hash, BlobInfo, EMPTY_HASH};
use crate::store::StoreError;

impl Cache {
    /// Chunk hashes known locally (written here or fetched before).
    pub fn blob_info(&self, hash: &str) -> Option<BlobInfo> {
        if hash == EMPTY_HASH {
            return Some(empty_info());
        }
        lock(&self.index).get_info(hash).ok().flatten()
    }

    /// Chunk hashes from the store's sidecar, checked and kept locally afterwards.
    /// `root` is the chunk root recorded with the entry that names the blob: a record
    /// that does not match it is refused, so a blob altered in the store together with
    /// its record never serves a byte. Entries from before roots travelled have none;
    /// their records are checked for shape (and a one-chunk blob's only chunk hash must
    /// be the blob's hash, which binds it).
    pub async fn fetch_info(
        &self,
        hash: &str,
        size: u64,
        root: Option<&str>,
    ) -> Result<BlobInfo, CacheError> {
        match self.fetch_checked_info(hash, size, root).await? {
            Fetched::Known(info) => Ok(info),
            Fetched::New(info) => {
                self.keep_info(&info)?;
                Ok(info)
            }
        }
    }

    /// As `fetch_info`, leaving a new record for the caller to keep.
    pub(super) async fn fetch_checked_info(
        &self,
        hash: &str,
        size: u64,
        root: Option<&str>,
    ) -> Result<Fetched, CacheError> {
        if !is_valid_hash(hash) {
            return Err(CacheError::InvalidHash { hash: hash.into() });
        }
        if let Some(info) = self.blob_info(hash) {
            return Ok(Fetched::Known(info));
        }
        let key = chunks_key(hash);
        let got = self
            .with_timeout(hash, self.store.get(&key))
            .await?
            .map_err(|e| match e {
                StoreError::NotFound { key } => CacheError::NotInStore { key },
                e => CacheError::Store {
                    hash: hash.into(),
                    source: Arc::new(e),
                },
            })?;
        let bad = |why: String| CacheError::BadInfo {
            hash: hash.into(),
            why,
        };
        let info: BlobInfo =
            serde_json::from_slice(&got).map_err(|e| bad(format!("{key}: {e}")))?;
        if info.hash != hash || info.size != size {
            return Err(bad(format!(
                "{key} describes {} ({} bytes), expected {hash} ({size} bytes)",
                info.hash, info.size
            )));
        }
        check_info(&info)?;
        if let Some(root) = root.filter(|r| *r != info.chunk_root()) {
            tracing::error!(key, expected = root, got = %info.chunk_root(), "chunk-hash record does not match the chunk root its entry carries: refused, nothing served");
            return Err(bad(format!(
                "{key} does not match the chunk root {root} its entry carries (altered in the store)"
            )));
        }
        Ok(Fetched::New(info))
    }

    /// Keeps a checked record in the index.
    pub(super) fn keep_info(&self, info: &BlobInfo) -> Result<(), CacheError> {
        lock(&self.index).put_info(info)
    }
}

/// A checked record, and whether it is new here (to be kept).
pub(super) enum Fetched {
    Known(BlobInfo),
    New(BlobInfo),
}

pub(super) fn empty_info() -> BlobInfo {
    BlobInfo {
        hash: EMPTY_HASH.into(),
        size: 0,
        chunks: Vec::new(),
    }
}

/// A chunk list the read path can trust its arithmetic on.
pub(super) fn check_info(info: &BlobInfo) -> Result<(), CacheError> {
    if !is_valid_hash(&info.hash) {
        return Err(CacheError::InvalidHash {
            hash: info.hash.clone(),
        });
    }
    if info.chunks.len() as u64 != chunk_count(info.size) {
        return Err(CacheError::BadInfo {
            hash: info.hash.clone(),
            why: format!(
                "{} chunk hashes for {} bytes, expected {}",
                info.chunks.len(),
                info.size,
                chunk_count(info.size)
            ),
        });
    }
    // One chunk is the whole blob: its hash must be the blob's.
    if info.chunks.len() == 1 && info.chunks[0] != info.hash {
        return Err(CacheError::BadInfo {
            hash: info.hash.clone(),
            why: "the only chunk's hash is not the blob's hash".into(),
        });
    }
    Ok(())
}
