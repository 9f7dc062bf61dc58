//! An object's bytes produced on request instead of read from a file: the encrypting
//! store hands the sealed form of a cached file to the store below this way, so the
//! sealed copy is never written to disk and sealing overlaps the upload.
//!
//! A body is read by offset, as many times as a retried request needs, from any thread
//! (S3 reads its parts in parallel).

use std::io;

pub trait Body: Send + Sync + 'static {
    /// The object's length in bytes.
    fn size(&self) -> u64;

    /// Fills `buf` with the bytes at `offset` (`offset + buf.len() <= size()`).
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<()>;

    /// Where the bytes come from, for error messages (a path).
    fn describe(&self) -> String;
}

/// Reads a body from its start as an `io::Read` (for stores that copy it into a file).
pub struct BodyReader<'a> {
    body: &'a dyn Body,
    at: u64,
}

impl<'a> BodyReader<'a> {
    pub fn new(body: &'a dyn Body) -> BodyReader<'a> {
        BodyReader { body, at: 0 }
    }
}

impl io::Read for BodyReader<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = (self.body.size() - self.at).min(buf.len() as u64) as usize;
        self.body.read_at(self.at, &mut buf[..n])?;
        self.at += n as u64;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    struct Counting(u64);

    impl Body for Counting {
        fn size(&self) -> u64 {
            self.0
        }
        fn read_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<()> {
            for (i, b) in buf.iter_mut().enumerate() {
                *b = ((offset + i as u64) % 251) as u8;
            }
            Ok(())
        }
        fn describe(&self) -> String {
            "counting".into()
        }
    }

    #[test]
    fn a_reader_yields_the_whole_body_once() {
        let body = Counting(1_000_003);
        let mut all = Vec::new();
        BodyReader::new(&body).read_to_end(&mut all).unwrap();
        assert_eq!(all.len(), 1_000_003);
        assert!(all.iter().enumerate().all(|(i, &b)| b == (i % 251) as u8));
    }
}
