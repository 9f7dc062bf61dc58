//! The read path: what an open handle reads from, and how.
//!
//! In order of preference:
//! 1. the inode is staged (written and not yet committed): `pread` the staging file;
//! 2. the file is local-only: `pread` its file under `$SONGFS_HOME/local/`;
//! 3. the whole verified blob is in the cache: `Cache::open_complete` checks and opens
//!    it under the cache's lock (so an eviction followed by a new partial fetch can never
//!    slip a sparse file in between), once per handle, and the handle `pread`s it — the FUSE thread answers directly, no task, no copy through
//!    the cache;
//! 4. otherwise the bytes come through `Cache::read_ahead` on the tokio runtime (verified
//!    chunks, fetched lazily, sequential prefetch per handle); the FUSE thread is free
//!    meanwhile and the reply is sent when the bytes arrive.
//!
//! A handle re-checks the inode's hash on every read, so a commit through another handle
//! (or a rename over the file's content) is seen at once. This module never writes.

use std::fs::File;
use std::sync::{Arc, Mutex};

use bytes::Bytes;

use super::error::FsResult;
use super::filesystem::{lock, SongFs, EMPTY_HASH};
use super::staging::pread;
use crate::cache::{Lookup, ReadAhead};
use crate::catalog::Node;
use crate::content::BlobInfo;

/// One open file handle.
pub struct Handle {
    pub ino: u64,
    pub writable: bool,
    pub read_ahead: Arc<ReadAhead>,
    pub source: Mutex<Source>,
}

/// The committed content a handle last read, kept so a stream of reads does not
/// re-resolve it each time.
#[derive(Default)]
pub struct Source {
    pub hash: Option<String>,
    pub size: u64,
    pub file: Option<Arc<File>>,
    pub info: Option<Arc<BlobInfo>>,
}

impl Handle {
    pub fn new(ino: u64, writable: bool) -> Handle {
        Handle {
            ino,
            writable,
            read_ahead: Arc::new(ReadAhead::default()),
            source: Mutex::new(Source::default()),
        }
    }

    pub fn source(&self) -> std::sync::MutexGuard<'_, Source> {
        self.source.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl Source {
    /// Points the handle at new content (forgetting the old file and chunk hashes).
    pub fn retarget(&mut self, hash: Option<String>, size: u64) {
        if self.hash != hash || self.size != size {
            *self = Source {
                hash,
                size,
                ..Source::default()
            };
        }
    }
}

impl SongFs {
    /// Reads from local bytes when they are here. `Ok(None)`: they must be fetched —
    /// run `read_fetch` on the runtime.
    pub fn read(&self, fh: u64, offset: u64, len: u32) -> FsResult<Option<Vec<u8>>> {
        let h = self.handle(fh)?;
        if let Some(st) = self.staged_of(h.ino) {
            let g = lock(&st);
            if g.is_staged() {
                return Ok(Some(g.read(offset, len)?));
            }
        }
        let node = self.node_of(h.ino)?;
        if node.local_only {
            let f = std::fs::File::open(self.local_path(node.ino))?;
            return Ok(Some(pread(&f, offset, len, node.size)?));
        }
        if offset >= node.size || len == 0 {
            return Ok(Some(Vec::new()));
        }
        let mut src = h.source();
        src.retarget(node.hash.clone(), node.size);
        if src.file.is_none() {
            src.file = node
                .hash
                .as_deref()
                .and_then(|h| self.cache.open_complete(h))
                .map(Arc::new);
        }
        match &src.file {
            Some(f) => Ok(Some(pread(f, offset, len, node.size)?)),
            None => Ok(None),
        }
    }

    /// The slow read: verified bytes through the cache, fetching what is missing. One
    /// deadline for the whole read: the chunk-hash record and the bytes together never
    /// keep the app waiting longer than `--fetch-timeout` (a black-holed store is EIO then).
    pub async fn read_fetch(&self, fh: u64, offset: u64, len: u32) -> FsResult<Bytes> {
        let node = self.node_of(self.handle(fh)?.ino)?;
        let hash = node.hash.as_deref().unwrap_or(EMPTY_HASH);
        self.cache
            .with_timeout(hash, self.fetch_unbounded(fh, offset, len))
            .await?
    }

    async fn fetch_unbounded(&self, fh: u64, offset: u64, len: u32) -> FsResult<Bytes> {
        let h = self.handle(fh)?;
        let node = self.node_of(h.ino)?;
        if offset >= node.size {
            return Ok(Bytes::new());
        }
        let len = (len as u64).min(node.size - offset) as u32;
        let cached = {
            let mut src = h.source();
            src.retarget(node.hash.clone(), node.size);
            src.info.clone()
        };
        let info = match cached {
            Some(i) => i,
            None => {
                let i = Arc::new(self.blob_info(&node, Some(offset)).await?);
                let mut src = h.source();
                if src.hash == node.hash {
                    src.info = Some(i.clone());
                }
                i
            }
        };
        Ok(self
            .cache
            .read_ahead(&h.read_ahead, &info, offset, len)
            .await?)
    }

    /// The blob's chunk hashes: known locally, or fetched from the store's record. For a
    /// read at `offset`, the chunk holding it is fetched beside the record (one round
    /// trip for the first bytes).
    pub(super) async fn blob_info(&self, node: &Node, offset: Option<u64>) -> FsResult<BlobInfo> {
        let hash = node.hash.as_deref().unwrap_or(EMPTY_HASH);
        let early = match self.cache.known_info_or_get(hash, node.size, offset).await {
            Lookup::Known(info) => return Ok(info),
            Lookup::Missing(early) => early,
        };
        let root = self.catalog.chunk_root(hash)?;
        let root = root.as_deref();
        Ok(match early {
            Some(early) => {
                self.cache
                    .fetch_info_beside(hash, node.size, root, early)
                    .await?
            }
            None => self.cache.fetch_info(hash, node.size, root).await?,
        })
    }
}
