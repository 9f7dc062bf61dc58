//! A plaintext file seen as the sealed object it becomes (doc/FORMAT.md): any range of
//! the sealed bytes is made on request from the plaintext chunks it covers, so an
//! upload streams the sealed form without a sealed copy on disk, and a retried request
//! gets the same bytes again (one random header per `SealedFile`).

use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};

use crate::crypt::chunks::{Header, ObjectCipher, HEADER_LEN, SEALED_CHUNK};
use crate::crypt::keys::Subkeys;
use crate::os::FileExt;
use crate::store::body::Body;

pub struct SealedFile {
    file: File,
    path: PathBuf,
    cipher: ObjectCipher,
}

impl SealedFile {
    /// The file at `path` sealed as the object `name` (its stored name).
    pub fn open(keys: &Subkeys, name: &str, path: &Path) -> io::Result<SealedFile> {
        let file = File::open(path)?;
        let len = file.metadata()?.len();
        Ok(SealedFile {
            file,
            path: path.to_path_buf(),
            cipher: ObjectCipher::new(&keys.objects, name, Header::random(len)),
        })
    }
}

impl Body for SealedFile {
    fn size(&self) -> u64 {
        self.cipher.header().sealed_len()
    }

    fn read_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        let header = self.cipher.header();
        let (mut at, mut out) = (offset, 0usize);
        if at < HEADER_LEN {
            let n = ((HEADER_LEN - at) as usize).min(buf.len());
            buf[..n].copy_from_slice(&self.cipher.header_bytes()[at as usize..at as usize + n]);
            (at, out) = (at + n as u64, n);
        }
        if out == buf.len() {
            return Ok(());
        }
        // The plaintext of every chunk the rest covers, in one read.
        let first = (at - HEADER_LEN) / SEALED_CHUNK;
        let last = (offset + buf.len() as u64 - 1 - HEADER_LEN) / SEALED_CHUNK;
        let plain_start = header.chunk_plain(first).start;
        let mut plain = vec![0u8; (header.chunk_plain(last).end - plain_start) as usize];
        self.file.read_exact_at(&mut plain, plain_start)?;
        let mut sealed = Vec::with_capacity(SEALED_CHUNK as usize);
        for i in first..=last {
            let r = header.chunk_plain(i);
            sealed.clear();
            self.cipher.seal_chunk_into(
                i,
                &plain[(r.start - plain_start) as usize..(r.end - plain_start) as usize],
                &mut sealed,
            );
            let within = ((at - HEADER_LEN) % SEALED_CHUNK) as usize;
            let n = (sealed.len() - within).min(buf.len() - out);
            buf[out..out + n].copy_from_slice(&sealed[within..within + n]);
            (at, out) = (at + n as u64, out + n);
        }
        Ok(())
    }

    fn describe(&self) -> String {
        self.path.display().to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypt::chunks;
    use crate::crypt::keys::MasterKey;
    use std::io::Read;

    /// Every way of reading it (whole, in odd pieces across chunk edges and the header)
    /// gives one sealed object, which opens to the file.
    #[test]
    fn any_reading_of_it_is_the_sealed_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("plain");
        let plain: Vec<u8> = (0..300_000u32).map(|i| (i * 7 % 256) as u8).collect();
        std::fs::write(&path, &plain).unwrap();
        let keys = MasterKey::generate().subkeys();
        let body = SealedFile::open(&keys, "blobs/x", &path).unwrap();
        let mut whole = Vec::new();
        crate::store::body::BodyReader::new(&body)
            .read_to_end(&mut whole)
            .unwrap();
        assert_eq!(whole.len() as u64, body.size());
        assert_eq!(
            chunks::open(&keys.objects, "blobs/x", &whole).unwrap(),
            plain
        );
        for (piece, upto) in [
            (1usize, 200),
            (47, u64::MAX),
            (48, u64::MAX),
            (65_551, u64::MAX),
            (100_000, u64::MAX),
        ] {
            let mut at = 0u64;
            while at < body.size().min(upto) {
                let n = (piece as u64).min(body.size() - at) as usize;
                let mut buf = vec![0u8; n];
                body.read_at(at, &mut buf).unwrap();
                assert_eq!(
                    buf,
                    whole[at as usize..at as usize + n],
                    "piece {piece} at {at}"
                );
                at += n as u64;
            }
        }
        assert!(chunks::open(&keys.objects, "blobs/y", &whole).is_err());
    }
}
