//! Reading verified bytes through the cache: present chunks are pread from the blob's
//! data file, missing ones fetched (or joined) by `fetch_missing`; a read that keeps
//! losing its chunks to evictions gets everything from memory on its last attempt.

use std::fs::File;
use std::path::Path;
use std::sync::Arc;

use bytes::{Bytes, BytesMut};

use super::info::check_info;
use super::{lock, Cache, CacheError};
use crate::content::{BlobInfo, CHUNK_SIZE};
use crate::os::FileExt;

impl Cache {
    /// Bytes `[offset, offset+len)` of the blob, clamped to its size; every byte
    /// verified. See the cache's module comment (mod.rs) for the path a read takes.
    /// Fetched chunks are in the cache when this returns (`read_ahead`, the filesystem's
    /// path, answers before they are written).
    pub async fn read(&self, blob: &BlobInfo, offset: u64, len: u32) -> Result<Bytes, CacheError> {
        self.read_kept(&Arc::new(blob.clone()), offset, len, true)
            .await
    }

    /// `read` on shared chunk hashes: a reader's stream of reads (`read_ahead`) hands the
    /// same list every time instead of copying its thousands of hashes per read.
    pub(super) async fn read_kept(
        &self,
        blob: &Arc<BlobInfo>,
        offset: u64,
        len: u32,
        kept: bool,
    ) -> Result<Bytes, CacheError> {
        check_info(blob)?;
        let end = offset.saturating_add(len as u64).min(blob.size);
        if offset >= end {
            return Ok(Bytes::new());
        }
        let chunks = offset / CHUNK_SIZE..(end - 1) / CHUNK_SIZE + 1;
        const ATTEMPTS: u32 = 4;
        for attempt in 1..=ATTEMPTS {
            let (complete, gen) = {
                let mut st = lock(&self.state);
                st.touch(&blob.hash);
                match st.entries.get(&blob.hash) {
                    Some(e) => (e.complete, Some(e.gen)),
                    None => (false, None),
                }
            };
            if complete && attempt < ATTEMPTS {
                if let Ok(bytes) = pread(&self.data_path(&blob.hash), offset, end - offset) {
                    if self.gen_of(&blob.hash) == gen {
                        return Ok(bytes);
                    }
                }
                continue;
            }
            let fetched = self
                .with_timeout(
                    &blob.hash,
                    // The last attempt does not count on the cache keeping anything.
                    self.fetch_missing(blob, chunks.clone(), attempt == ATTEMPTS, kept),
                )
                .await??;
            // Everything not fetched must be present now; remember gen before reading.
            let gen = {
                let st = lock(&self.state);
                let entry = st.entries.get(&blob.hash);
                let all_here = chunks
                    .clone()
                    .all(|i| fetched.contains_key(&i) || entry.is_some_and(|e| e.present.get(i)));
                if !all_here {
                    continue;
                }
                entry.map(|e| e.gen)
            };
            let mut out = BytesMut::with_capacity((end - offset) as usize);
            let mut file: Option<File> = None;
            let mut file_ok = true;
            for i in chunks.clone() {
                let r = blob.chunk_range(i);
                let (s, e) = (r.start.max(offset), r.end.min(end));
                if let Some(data) = fetched.get(&i) {
                    out.extend_from_slice(&data[(s - r.start) as usize..(e - r.start) as usize]);
                    continue;
                }
                let read = match &file {
                    Some(f) => Ok(f),
                    None => File::open(self.data_path(&blob.hash)).map(|f| &*file.insert(f)),
                }
                .and_then(|f| {
                    let at = out.len();
                    out.resize(at + (e - s) as usize, 0);
                    f.read_exact_at(&mut out[at..], s)
                });
                if read.is_err() {
                    file_ok = false;
                    break;
                }
            }
            if file_ok
                && (fetched.len() as u64 == chunks.end - chunks.start
                    || self.gen_of(&blob.hash) == gen)
            {
                return Ok(out.freeze());
            }
        }
        Err(CacheError::Internal {
            what: format!("blob {}: the cache kept changing under a read", blob.hash),
        })
    }
}

fn pread(path: &Path, offset: u64, len: u64) -> std::io::Result<Bytes> {
    let f = File::open(path)?;
    let mut buf = vec![0u8; len as usize];
    f.read_exact_at(&mut buf, offset)?;
    Ok(Bytes::from(buf))
}
