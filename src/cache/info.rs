//! The chunk-hash record of a blob (`BlobInfo`: the hash of every 256 KiB chunk), which
//! every fetched chunk is verified against: known locally, or fetched from the store's
//! sidecar once and checked against the blob's hash and size before it is kept.

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
    pub async fn fetch_info(&self, hash: &str, size: u64) -> Result<BlobInfo, CacheError> {
        if !is_valid_hash(hash) {
            return Err(CacheError::InvalidHash { hash: hash.into() });
        }
        if let Some(info) = self.blob_info(hash) {
            return Ok(info);
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
        lock(&self.index).put_info(&info)?;
        Ok(info)
    }
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
    Ok(())
}
