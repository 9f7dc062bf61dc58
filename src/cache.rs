//! The blob cache between the filesystem and the store (API published first; the
//! implementation lands in the next commits — every body below is `todo!()` until then).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;

use crate::content::BlobInfo;
use crate::store::{ObjectStore, StoreError};

#[derive(Debug, thiserror::Error)]
pub enum CacheError {
    #[error("blob {hash}: chunk {chunk} from the store does not match its hash (corrupt or truncated)")]
    Corrupt { hash: String, chunk: u64 },
    #[error("blob {hash}: {source}")]
    Store {
        hash: String,
        #[source]
        source: StoreError,
    },
    #[error("blob {hash}: the store did not answer within {secs} s")]
    Timeout { hash: String, secs: u64 },
    #[error("blob {hash} is not in the store")]
    NotFound { hash: String },
    #[error("the cache disk is full ({path}): free space or lower cache_size")]
    NoSpace { path: String },
    #[error("{path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("cache index {path}: {source}")]
    Db {
        path: String,
        #[source]
        source: rusqlite::Error,
    },
}

impl CacheError {
    pub fn errno(&self) -> i32 {
        match self {
            CacheError::NotFound { .. } => libc::ENOENT,
            CacheError::NoSpace { .. } => libc::ENOSPC,
            _ => libc::EIO,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BlobState {
    Remote,
    Partial,
    Cached,
    Pinned,
    Uploading,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct CacheUsage {
    pub bytes: u64,
    pub limit: u64,
    pub pinned_bytes: u64,
    pub dirty_bytes: u64,
    pub blobs: u64,
}

pub struct Cache {}

#[derive(Default)]
pub struct ReadAhead {}

#[allow(unused_variables)]
impl Cache {
    pub fn open(
        dir: &Path,
        state_db: &Path,
        limit_bytes: u64,
        store: Arc<dyn ObjectStore>,
        fetch_timeout: Duration,
    ) -> Result<Arc<Cache>, CacheError> {
        todo!()
    }
    pub fn staging_dir(&self) -> PathBuf {
        todo!()
    }
    pub async fn read(&self, blob: &BlobInfo, offset: u64, len: u32) -> Result<Bytes, CacheError> {
        todo!()
    }
    pub async fn read_ahead(
        &self,
        ra: &ReadAhead,
        blob: &BlobInfo,
        offset: u64,
        len: u32,
    ) -> Result<Bytes, CacheError> {
        todo!()
    }
    pub fn complete_path(&self, hash: &str) -> Option<PathBuf> {
        todo!()
    }
    pub async fn materialize(&self, blob: &BlobInfo) -> Result<PathBuf, CacheError> {
        todo!()
    }
    pub fn commit_new(&self, staged: &Path, info: &BlobInfo) -> Result<(), CacheError> {
        todo!()
    }
    pub fn blob_info(&self, hash: &str) -> Option<BlobInfo> {
        todo!()
    }
    pub async fn fetch_info(&self, hash: &str, size: u64) -> Result<BlobInfo, CacheError> {
        todo!()
    }
    pub fn pin(&self, hash: &str) -> Result<(), CacheError> {
        todo!()
    }
    pub fn unpin(&self, hash: &str) -> Result<(), CacheError> {
        todo!()
    }
    pub fn evict(&self, hash: &str) -> Result<bool, CacheError> {
        todo!()
    }
    pub fn state(&self, hash: &str) -> BlobState {
        todo!()
    }
    pub fn usage(&self) -> CacheUsage {
        todo!()
    }
}
