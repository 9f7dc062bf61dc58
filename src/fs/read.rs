//! What an open handle reads from, and how.
//!
//! Read path, in order of preference:
//! 1. the inode is staged (written and not yet committed): `pread` the staging file;
//! 2. the file is local-only: `pread` its file under `$SONGFS_HOME/local/`;
//! 3. the whole verified blob is in the cache (`Cache::complete_path`): open it once per
//!    handle and `pread` it — the FUSE thread answers directly, no task, no copy through
//!    the cache;
//! 4. otherwise the bytes come through `Cache::read_ahead` on the tokio runtime (verified
//!    chunks, fetched lazily, sequential prefetch per handle); the FUSE thread is free
//!    meanwhile and the reply is sent when the bytes arrive.
//!
//! A handle re-checks the inode's hash on every read, so a commit through another handle
//! (or a rename over the file's content) is seen at once. This module never writes.

use std::fs::File;
use std::sync::{Arc, Mutex};

use crate::cache::ReadAhead;
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
