//! The encrypting store: a decorator over any `ObjectStore` that seals every object but
//! `songfs.json` on the way in and authenticates it on the way out (doc/FORMAT.md).
//!
//! Callers keep using plain keys (`blobs/sha256/..`, `logs/..`); blob keys are mapped to
//! their keyed names, every body is sealed in 64 KiB AES-256-GCM chunks bound to its
//! name. A ranged read fetches and opens only the chunks it covers. Anything that does
//! not authenticate is refused with `StoreError::Unauthentic` naming its key, and logged;
//! it is never handed up, so never cached or applied. `unlock` reads the passphrase
//! (keyring or `$SONGFS_PASSPHRASE_FILE`) only to unwrap the master key, and keeps the
//! key in memory only; this layer never writes plaintext anywhere but memory.

use std::collections::HashMap;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use bytes::{Buf, Bytes, BytesMut};

use super::body::{Body, BodyReader};
use super::format::FORMAT_KEY;
use super::{ObjectStore, StoreError, StoreResult};
use crate::crypt::chunks::{self, Header, ObjectCipher, CHUNK, HEADER_LEN, SEALED_CHUNK};
use crate::crypt::keys::{MasterKey, Subkeys};
use crate::crypt::{names, CryptError};
use sealed_file::SealedFile;
pub use unlock::{key_record, open_record, unlock};

mod sealed_file;
mod unlock;

/// Objects at least this large are sealed and opened on the blocking pool, so a big
/// blob does not stall the async workers.
const OFFLOAD_BYTES: usize = 256 * 1024;
/// A ranged read's chunks are opened on the async worker up to this size: AES-GCM
/// opens 1 MiB (one GET run) in ~0.2 ms, less than the SHA-256 check the cache then runs
/// inline on the same bytes, and a hop to the blocking pool per GET cost more (two
/// thread wake-ups each, 256 per 256 MiB read).
const INLINE_OPEN_BYTES: usize = 4 << 20;
/// Headers of immutable blobs remembered for ranged reads (cleared when full).
const HEADER_MEMORY: usize = 4096;

pub struct EncryptedStore {
    inner: Arc<dyn ObjectStore>,
    keys: Arc<Subkeys>,
    /// Where `put_file` writes the sealed copy for an inner store that takes no body.
    scratch: PathBuf,
    headers: Mutex<HashMap<String, Header>>,
    /// Chunks opened so far (lets tests prove the cached read path never decrypts).
    opened_chunks: AtomicU64,
}

impl EncryptedStore {
    /// `scratch` must be a private folder on a local disk (created if missing).
    pub fn new(
        inner: Arc<dyn ObjectStore>,
        master: &MasterKey,
        scratch: PathBuf,
    ) -> EncryptedStore {
        EncryptedStore {
            inner,
            keys: Arc::new(master.subkeys()),
            scratch,
            headers: Mutex::new(HashMap::new()),
            opened_chunks: AtomicU64::new(0),
        }
    }

    /// How many chunks this store has authenticated and decrypted.
    pub fn opened_chunks(&self) -> u64 {
        self.opened_chunks.load(Ordering::Relaxed)
    }

    /// The object's name in the inner store.
    pub fn stored_name(&self, key: &str) -> String {
        names::stored_key(&self.keys.names, key)
    }

    fn refused(&self, key: &str, stored: &str, e: CryptError) -> StoreError {
        tracing::error!(
            key,
            stored,
            store = %self.inner.describe(),
            error = %e,
            "object refused: it does not authenticate under this store's key"
        );
        StoreError::Unauthentic {
            key: key.to_string(),
            why: e.to_string(),
        }
    }

    fn count(&self, sealed_len: usize) {
        let n = (sealed_len as u64)
            .saturating_sub(HEADER_LEN)
            .div_ceil(SEALED_CHUNK)
            .max(1);
        self.opened_chunks.fetch_add(n, Ordering::Relaxed);
    }

    async fn seal(&self, stored: &str, data: Bytes) -> StoreResult<Bytes> {
        let keys = self.keys.clone();
        let name = stored.to_string();
        let big = self.offload_for(data.len());
        let work = move || Bytes::from(chunks::seal(&keys.objects, &name, &data));
        offload(work, big).await
    }

    fn offload_for(&self, len: usize) -> bool {
        len >= OFFLOAD_BYTES
    }

    /// The header of `stored`: remembered (immutable blobs) or fetched.
    async fn header(&self, stored: &str, key: &str) -> StoreResult<Header> {
        if let Some(h) = self.remembered_header(stored) {
            return Ok(h);
        }
        let raw = self
            .inner
            .get_range(stored, 0..HEADER_LEN)
            .await
            .map_err(|e| with_key(e, key))?;
        self.parse_header(stored, key, &raw)
    }

    fn remembered_header(&self, stored: &str) -> Option<Header> {
        self.headers
            .lock()
            .expect("header memory")
            .get(stored)
            .copied()
    }

    /// Parses the header at the start of `raw`, remembering a blob's (blobs never change).
    fn parse_header(&self, stored: &str, key: &str, raw: &[u8]) -> StoreResult<Header> {
        let h = Header::parse(raw).map_err(|e| self.refused(key, stored, e))?;
        if names::is_blob_key(key) {
            let mut m = self.headers.lock().expect("header memory");
            if m.len() >= HEADER_MEMORY {
                m.clear();
            }
            m.insert(stored.to_string(), h);
        }
        Ok(h)
    }

    async fn ranged(
        &self,
        key: &str,
        stored: &str,
        range: Range<u64>,
        remembered: bool,
    ) -> StoreResult<Option<Bytes>> {
        // The chunks a range covers follow from the range alone, so the header (needed
        // for the length and the key) is fetched at the same time, not before: in the
        // same request when the range starts at the first chunk (every first read of a
        // file: one round trip, and no tiny header-only answer, which loopback TCP can
        // hold back for a delayed ACK's 40 ms), else beside it.
        let first = range.start / CHUNK;
        let last = (range.end - 1) / CHUNK;
        let sealed = HEADER_LEN + first * SEALED_CHUNK..HEADER_LEN + (last + 1) * SEALED_CHUNK;
        let (header, body) = match self.remembered_header(stored) {
            None if first == 0 => {
                let raw = self
                    .inner
                    .get_range(stored, 0..sealed.end)
                    .await
                    .map_err(|e| with_key(e, key))?;
                let header = self.parse_header(stored, key, &raw)?;
                (header, raw.slice(HEADER_LEN as usize..))
            }
            _ => {
                let (header, body) = tokio::join!(
                    self.header(stored, key),
                    self.inner.get_range(stored, sealed.clone())
                );
                (header?, body.map_err(|e| with_key(e, key))?)
            }
        };
        let span = chunks::span(&header, range);
        if span.take == 0 {
            return Ok(Some(Bytes::new()));
        }
        let skip = (span.sealed.start - sealed.start) as usize;
        let want = (span.sealed.end - span.sealed.start) as usize;
        // Narrowed in place, not sliced: the body must stay its buffer's only handle so
        // it can be decrypted where it is (`open_span`).
        let mut part = body;
        part.advance(skip.min(part.len()));
        part.truncate(want);
        let keys = self.keys.clone();
        let name = stored.to_string();
        let n = part.len();
        let opened = offload(
            move || {
                let c = ObjectCipher::new(&keys.objects, &name, header);
                // The body's own buffer when nothing else holds it (the usual case).
                let part = part
                    .try_into_mut()
                    .unwrap_or_else(|shared| BytesMut::from(&shared[..]));
                c.open_span(&span, part)
            },
            n > INLINE_OPEN_BYTES,
        )
        .await?;
        match opened {
            Ok(plain) => {
                self.count(n + HEADER_LEN as usize);
                Ok(Some(plain))
            }
            // A remembered header may be stale (the blob was deleted and written again
            // with a new salt): forget it and let the caller try once more.
            Err(_) if remembered => {
                self.headers.lock().expect("header memory").remove(stored);
                Ok(None)
            }
            Err(e) => Err(self.refused(key, stored, e)),
        }
    }
}

/// Runs `work` on the blocking pool when `big`, inline otherwise.
async fn offload<T: Send + 'static>(
    work: impl FnOnce() -> T + Send + 'static,
    big: bool,
) -> StoreResult<T> {
    if !big {
        return Ok(work());
    }
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|e| StoreError::Other(format!("encryption task failed: {e}")))
}

/// The inner store's NotFound names the stored key; callers asked for the plain one.
fn with_key(e: StoreError, key: &str) -> StoreError {
    match e {
        StoreError::NotFound { .. } => StoreError::NotFound {
            key: key.to_string(),
        },
        e => e,
    }
}

/// Writes `body` into a new file in `dir` (for stores that take no body); returns its path.
fn spool(body: &dyn Body, dir: &Path) -> std::io::Result<PathBuf> {
    create_private_dir(dir)?;
    let out_path = dir.join(format!(
        ".sealing-{}",
        hex::encode(rand::random::<[u8; 8]>())
    ));
    let result = (|| {
        let mut out = std::io::BufWriter::with_capacity(1 << 20, std::fs::File::create(&out_path)?);
        std::io::copy(&mut BodyReader::new(body), &mut out)?;
        // Flushed, not synced: the copy lives only until the upload reads it, and a
        // crash meanwhile redoes the upload from the cache.
        out.into_inner().map_err(|e| e.into_error()).map(drop)
    })();
    match result {
        Ok(()) => Ok(out_path),
        Err(e) => {
            let _ = std::fs::remove_file(&out_path);
            Err(e)
        }
    }
}

/// Creates `dir` (and parents) readable only by this user (elsewhere than Unix the
/// user's profile folder is already private).
#[cfg(not(unix))]
pub fn create_private_dir(dir: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)
}

/// Creates `dir` (and parents) readable only by this user.
#[cfg(unix)]
pub fn create_private_dir(dir: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)?;
    let mode = std::fs::metadata(dir)?.permissions().mode() & 0o777;
    if mode != 0o700 {
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))?;
    }
    Ok(())
}

#[async_trait]
impl ObjectStore for EncryptedStore {
    async fn put(&self, key: &str, data: Bytes) -> StoreResult<()> {
        if key == FORMAT_KEY {
            return self.inner.put(key, data).await;
        }
        let stored = self.stored_name(key);
        let sealed = self.seal(&stored, data).await?;
        self.inner
            .put(&stored, sealed)
            .await
            .map_err(|e| with_key(e, key))
    }

    async fn put_file(&self, key: &str, path: &Path) -> StoreResult<()> {
        let stored = self.stored_name(key);
        let io = |e| StoreError::Io {
            path: path.display().to_string(),
            source: e,
        };
        let body: Arc<dyn Body> =
            Arc::new(SealedFile::open(&self.keys, &stored, path).map_err(io)?);
        if let Some(done) = self.inner.put_body(&stored, body.clone()).await {
            return done.map_err(|e| with_key(e, key));
        }
        let dir = self.scratch.clone();
        let sealed = offload(move || spool(body.as_ref(), &dir), true)
            .await?
            .map_err(io)?;
        let put = self.inner.put_file(&stored, &sealed).await;
        let _ = std::fs::remove_file(&sealed);
        put.map_err(|e| with_key(e, key))
    }

    async fn put_if_absent(&self, key: &str, data: Bytes) -> StoreResult<bool> {
        if key == FORMAT_KEY {
            return self.inner.put_if_absent(key, data).await;
        }
        let stored = self.stored_name(key);
        let sealed = self.seal(&stored, data).await?;
        self.inner
            .put_if_absent(&stored, sealed)
            .await
            .map_err(|e| with_key(e, key))
    }

    async fn get(&self, key: &str) -> StoreResult<Bytes> {
        if key == FORMAT_KEY {
            return self.inner.get(key).await;
        }
        let stored = self.stored_name(key);
        let raw = self
            .inner
            .get(&stored)
            .await
            .map_err(|e| with_key(e, key))?;
        let n = raw.len();
        let keys = self.keys.clone();
        let name = stored.clone();
        let opened = offload(
            move || chunks::open(&keys.objects, &name, &raw),
            self.offload_for(n),
        )
        .await?;
        match opened {
            Ok(plain) => {
                self.count(n);
                Ok(Bytes::from(plain))
            }
            Err(e) => Err(self.refused(key, &stored, e)),
        }
    }

    async fn get_range(&self, key: &str, range: Range<u64>) -> StoreResult<Bytes> {
        if key == FORMAT_KEY {
            return self.inner.get_range(key, range).await;
        }
        if range.end <= range.start {
            return Ok(Bytes::new());
        }
        let stored = self.stored_name(key);
        let remembered = self
            .headers
            .lock()
            .expect("header memory")
            .contains_key(&stored);
        if let Some(b) = self.ranged(key, &stored, range.clone(), remembered).await? {
            return Ok(b);
        }
        Ok(self
            .ranged(key, &stored, range, false)
            .await?
            .expect("a fresh header never asks for a retry"))
    }

    async fn head(&self, key: &str) -> StoreResult<Option<u64>> {
        if key == FORMAT_KEY {
            return self.inner.head(key).await;
        }
        let stored = self.stored_name(key);
        match self
            .inner
            .head(&stored)
            .await
            .map_err(|e| with_key(e, key))?
        {
            None => Ok(None),
            // A size no sealed object has is still reported (as an upper bound): the read
            // that follows refuses the object with its key, where the caller handles it.
            Some(sealed) => Ok(Some(
                chunks::plain_len_of(sealed).unwrap_or(sealed.saturating_sub(HEADER_LEN)),
            )),
        }
    }

    async fn list(&self, prefix: &str) -> StoreResult<Vec<String>> {
        if prefix.starts_with("blobs") {
            // Blob names are MACs: they cannot be mapped back to content hashes.
            return Err(StoreError::Other(format!(
                "{prefix}: blobs of an encrypted store cannot be listed by content hash"
            )));
        }
        self.inner.list(prefix).await
    }

    async fn delete(&self, key: &str) -> StoreResult<()> {
        let stored = self.stored_name(key);
        self.headers.lock().expect("header memory").remove(&stored);
        self.inner.delete(&stored).await
    }

    fn creates_atomically(&self) -> bool {
        self.inner.creates_atomically()
    }

    fn describe(&self) -> String {
        format!("{} (encrypted)", self.inner.describe())
    }

    fn is_encrypted(&self) -> bool {
        true
    }
}
