//! Content addressing: SHA-256 of whole files and of their fixed-size chunks, and the
//! store keys derived from them.
//!
//! A blob is named by the SHA-256 of its bytes. Its chunk hashes (one per `CHUNK_SIZE`
//! bytes) let a reader verify a ranged read before the whole file is local; they travel
//! with the blob as a sidecar object (`<blob key>.chunks`), bound to the name that points
//! at the blob by their `chunk_root` (carried beside the hash). Nothing here does I/O except
//! `hash_file` and `hash_whole_file`, which read a local file.

use std::io::Read;
use std::path::Path;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// Unit of ranged download, verification and cache presence. Small enough that the
/// first bytes of a cold file arrive about as fast as one small ranged GET.
pub const CHUNK_SIZE: u64 = 256 * 1024;

/// Hex SHA-256 of a whole blob.
pub type BlobHash = String;

/// The hash of the empty file (every empty file is this blob; it is never stored).
pub const EMPTY_HASH: &str = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

/// A blob's identity and the per-chunk hashes that verify its ranges.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BlobInfo {
    pub hash: BlobHash,
    pub size: u64,
    /// Hex SHA-256 of each `CHUNK_SIZE` chunk, in order (the last may be shorter).
    pub chunks: Vec<String>,
}

impl BlobInfo {
    pub fn chunk_count(&self) -> u64 {
        chunk_count(self.size)
    }

    /// Byte range of chunk `i` within the blob.
    pub fn chunk_range(&self, i: u64) -> std::ops::Range<u64> {
        let start = (i * CHUNK_SIZE).min(self.size);
        start..(start + CHUNK_SIZE).min(self.size)
    }

    /// SHA-256 over the chunk hashes in order (each hex hash and a newline): what ties a
    /// chunk-hash record to the entry that names the blob. A record rewritten in the store
    /// to match altered bytes has every chunk matching, so only a root carried beside the
    /// blob's hash can refuse it before a byte is served.
    pub fn chunk_root(&self) -> String {
        let mut h = Sha256::new();
        for c in &self.chunks {
            h.update(c.as_bytes());
            h.update(b"\n");
        }
        hex::encode(h.finalize())
    }

    /// True when `data` is exactly chunk `i` of this blob.
    pub fn verify_chunk(&self, i: u64, data: &[u8]) -> bool {
        let range = self.chunk_range(i);
        data.len() as u64 == range.end - range.start
            && self
                .chunks
                .get(i as usize)
                .is_some_and(|h| *h == hex::encode(Sha256::digest(data)))
    }
}

pub fn chunk_count(size: u64) -> u64 {
    size.div_ceil(CHUNK_SIZE)
}

/// Store key of a blob: `blobs/sha256/ab/<hash>`.
pub fn blob_key(hash: &str) -> String {
    format!("blobs/sha256/{}/{}", &hash[..2], hash)
}

/// Store key of a blob's chunk-hash sidecar.
pub fn chunks_key(hash: &str) -> String {
    format!("{}.chunks", blob_key(hash))
}

/// True for a 64-digit lower-case hex string (guards keys built from untrusted names).
pub fn is_valid_hash(s: &str) -> bool {
    s.len() == 64
        && s.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// Hashes a stream fed in order: whole-file and per-chunk at once, so a file written
/// sequentially is hashed while it is written, not read again at close.
#[derive(Clone, Default)]
pub struct StreamHasher {
    whole: Sha256,
    chunks: ChunkHasher,
    size: u64,
}

/// The per-chunk half of a `StreamHasher`.
#[derive(Clone, Default)]
struct ChunkHasher {
    chunk: Sha256,
    in_chunk: u64,
    done: Vec<String>,
}

impl ChunkHasher {
    fn update(&mut self, mut data: &[u8]) {
        while !data.is_empty() {
            let take = ((CHUNK_SIZE - self.in_chunk) as usize).min(data.len());
            self.chunk.update(&data[..take]);
            self.in_chunk += take as u64;
            data = &data[take..];
            if self.in_chunk == CHUNK_SIZE {
                let done = std::mem::take(&mut self.chunk);
                self.done.push(hex::encode(done.finalize()));
                self.in_chunk = 0;
            }
        }
    }

    fn finish(mut self) -> Vec<String> {
        if self.in_chunk > 0 {
            self.done.push(hex::encode(self.chunk.finalize()));
        }
        self.done
    }
}

impl StreamHasher {
    pub fn new() -> Self {
        Self::default()
    }

    /// Bytes fed so far.
    pub fn len(&self) -> u64 {
        self.size
    }

    pub fn is_empty(&self) -> bool {
        self.size == 0
    }

    pub fn update(&mut self, data: &[u8]) {
        self.whole.update(data);
        self.chunks.update(data);
        self.size += data.len() as u64;
    }

    pub fn finish(self) -> BlobInfo {
        BlobInfo {
            hash: hex::encode(self.whole.finalize()),
            size: self.size,
            chunks: self.chunks.finish(),
        }
    }
}

/// A `StreamHasher` that works beside the writer instead of in its way: past the first
/// `INLINE_BYTES`, the whole-file hash and the chunk hashes are computed by two threads
/// (in parallel, so a large file costs one SHA-256 pass of wall time, not two), and
/// `update` only copies the bytes to them. Measured on `cp` of 64 MiB into the mount:
/// SHA-256 was 72% of the daemon's CPU, all of it on the FUSE write path.
/// At most `QUEUED` buffers wait per thread (back-pressure on a writer faster than the
/// hash). Small files stay inline: two threads cost more than hashing them.
/// The buffers are recycled (the thread that drops a buffer last sends it back): a fresh
/// 1 MiB buffer per write is an mmap with the daemon's fixed mmap threshold; during a
/// 64 MiB `cp` into the mount, page faults were 20 % of all CPU samples, munmap 3 %.
#[derive(Default)]
pub struct BackgroundHasher {
    size: u64,
    inline: StreamHasher,
    workers: Option<Workers>,
}

/// The two hashing threads and the buffers they have finished with.
struct Workers {
    whole: Worker<Sha256>,
    chunks: Worker<ChunkHasher>,
    spare: std::sync::mpsc::Receiver<Vec<u8>>,
}

const INLINE_BYTES: u64 = 1 << 20;
const QUEUED: usize = 8;

type Shared = std::sync::Arc<Vec<u8>>;

struct Worker<T> {
    tx: std::sync::mpsc::SyncSender<Shared>,
    done: std::thread::JoinHandle<T>,
}

impl<T: Send + 'static> Worker<T> {
    fn spawn(
        mut state: T,
        feed: fn(&mut T, &[u8]),
        spare: std::sync::mpsc::Sender<Vec<u8>>,
    ) -> std::io::Result<Worker<T>> {
        let (tx, rx) = std::sync::mpsc::sync_channel::<Shared>(QUEUED);
        let done = std::thread::Builder::new()
            .name("songfs-hash".into())
            .spawn(move || {
                for data in rx {
                    feed(&mut state, &data);
                    if let Some(buf) = std::sync::Arc::into_inner(data) {
                        let _ = spare.send(buf);
                    }
                }
                state
            })?;
        Ok(Worker { tx, done })
    }
}

impl BackgroundHasher {
    pub fn new() -> Self {
        Self::default()
    }

    /// Bytes fed so far.
    pub fn len(&self) -> u64 {
        self.size
    }

    pub fn is_empty(&self) -> bool {
        self.size == 0
    }

    pub fn update(&mut self, data: &[u8]) {
        self.size += data.len() as u64;
        if self.workers.is_none() && self.size > INLINE_BYTES {
            // Hand the state so far to the threads; if they cannot start, stay inline.
            let (spare_tx, spare_rx) = std::sync::mpsc::channel();
            let whole = Worker::spawn(
                self.inline.whole.clone(),
                |h: &mut Sha256, d| h.update(d),
                spare_tx.clone(),
            );
            let chunks = Worker::spawn(self.inline.chunks.clone(), ChunkHasher::update, spare_tx);
            if let (Ok(whole), Ok(chunks)) = (whole, chunks) {
                self.workers = Some(Workers {
                    whole,
                    chunks,
                    spare: spare_rx,
                });
            }
        }
        match &self.workers {
            None => self.inline.update(data),
            Some(w) => {
                let mut buf = w.spare.try_recv().unwrap_or_default();
                buf.clear();
                buf.extend_from_slice(data);
                let data = std::sync::Arc::new(buf);
                // A send fails only if a thread died; `finish` then reports None.
                let _ = w.whole.tx.send(data.clone());
                let _ = w.chunks.tx.send(data);
            }
        }
    }

    /// The content's hashes; None if a hashing thread died (hash the file instead).
    pub fn finish(self) -> Option<BlobInfo> {
        let Some(Workers { whole, chunks, .. }) = self.workers else {
            return Some(self.inline.finish());
        };
        drop((whole.tx, chunks.tx));
        let (whole, chunks) = (whole.done.join().ok()?, chunks.done.join().ok()?);
        Some(BlobInfo {
            hash: hex::encode(whole.finalize()),
            size: self.size,
            chunks: chunks.finish(),
        })
    }
}

pub fn hash_bytes(data: &[u8]) -> BlobInfo {
    let mut h = StreamHasher::new();
    h.update(data);
    h.finish()
}

/// A file's hashes; a large one is hashed by two threads (one SHA-256 pass of wall time).
pub fn hash_file(path: &Path) -> std::io::Result<BlobInfo> {
    let mut h = BackgroundHasher::new();
    read_blocks(path, |block| h.update(block))?;
    h.finish()
        .ok_or_else(|| std::io::Error::other("a hashing thread stopped; try again"))
}

/// SHA-256 and size of a local file, without its chunk hashes (half the work of
/// `hash_file`, for a file whose chunks were verified already).
pub fn hash_whole_file(path: &Path) -> std::io::Result<(BlobHash, u64)> {
    let (mut h, mut size) = (Sha256::new(), 0u64);
    read_blocks(path, |block| {
        h.update(block);
        size += block.len() as u64;
    })?;
    Ok((hex::encode(h.finalize()), size))
}

/// Feeds a file's bytes to `f`, 1 MiB at a time.
pub fn read_blocks(path: &Path, mut f: impl FnMut(&[u8])) -> std::io::Result<()> {
    let mut file = std::fs::File::open(path)?;
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = file.read(&mut buf)?;
        if n == 0 {
            return Ok(());
        }
        f(&buf[..n]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_whole_file_hash_is_that_of_hash_file() {
        let dir = tempfile::tempdir().unwrap();
        for len in [0, 1, CHUNK_SIZE as usize, 3 << 20 | 17] {
            let path = dir.path().join(format!("f{len}"));
            let data: Vec<u8> = (0..len).map(|i| (i * 7 % 251) as u8).collect();
            std::fs::write(&path, &data).unwrap();
            let full = hash_file(&path).unwrap();
            assert_eq!(hash_whole_file(&path).unwrap(), (full.hash, len as u64));
        }
    }

    #[test]
    fn empty_file_has_the_known_sha256_and_no_chunks() {
        let info = hash_bytes(b"");
        assert_eq!(info.hash, EMPTY_HASH);
        assert_eq!(
            EMPTY_HASH,
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
        assert!(info.chunks.is_empty());
    }

    #[test]
    fn chunking_is_independent_of_how_bytes_are_fed() {
        let data: Vec<u8> = (0..(CHUNK_SIZE * 2 + 17))
            .map(|i| (i * 7 % 251) as u8)
            .collect();
        let whole = hash_bytes(&data);
        let mut h = StreamHasher::new();
        for piece in data.chunks(1000) {
            h.update(piece);
        }
        assert_eq!(h.finish(), whole);
        assert_eq!(whole.chunks.len(), 3);
        assert!(whole.verify_chunk(2, &data[(2 * CHUNK_SIZE) as usize..]));
        assert!(!whole.verify_chunk(1, &data[(2 * CHUNK_SIZE) as usize..]));
        assert!(!whole.verify_chunk(3, b""));
    }

    #[test]
    fn background_hashing_matches_inline_hashing() {
        let data: Vec<u8> = (0..(CHUNK_SIZE * 9 + 5))
            .map(|i| (i * 13 % 251) as u8)
            .collect();
        let mut h = BackgroundHasher::new();
        for piece in data.chunks(300_000) {
            h.update(piece);
        }
        assert_eq!(h.len(), data.len() as u64);
        let got = h.finish().expect("hash threads alive");
        assert_eq!(got, hash_bytes(&data));
        assert_eq!(got.chunks.len(), 10);
        // Recycled buffers of every size: a large one reused for a small piece must
        // carry none of its old bytes.
        let data: Vec<u8> = (0..(8u64 << 20)).map(|i| (i * 7 % 253) as u8).collect();
        let mut h = BackgroundHasher::new();
        let (mut at, mut turn) = (0, 0);
        while at < data.len() {
            let n = [1 << 20, 100_000, 777][turn % 3].min(data.len() - at);
            h.update(&data[at..at + n]);
            (at, turn) = (at + n, turn + 1);
        }
        assert_eq!(h.finish(), Some(hash_bytes(&data)));
        let mut small = BackgroundHasher::new();
        small.update(b"abc");
        assert_eq!(small.finish(), Some(hash_bytes(b"abc")));
    }

    #[test]
    fn keys_fan_out_by_the_first_byte() {
        let h = hash_bytes(b"x").hash;
        assert_eq!(blob_key(&h), format!("blobs/sha256/{}/{}", &h[..2], h));
        assert!(is_valid_hash(&h));
        assert!(!is_valid_hash("../etc/passwd"));
    }
}
