//! One file's uncommitted bytes: a staging file in the cache's staging folder (same
//! filesystem as the cache, so committing it is a rename), shared by every handle that
//! has the inode open for writing.
//!
//! Writes land at any offset with `pwrite`; reads of a staged inode are served from it
//! (read-your-writes). While the writes arrive in order from offset 0 the content is
//! hashed as it is written (`BackgroundHasher`); the first seek or truncate drops the running
//! hash and the file is hashed once at commit instead. This module only handles local
//! files: it never fetches, and never decides where committed bytes go.

use std::fs::{File, OpenOptions};
use std::os::fd::AsRawFd;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use crate::catalog::now_ns;
use crate::content::{hash_file, BackgroundHasher, BlobInfo};

static NEXT_STAGING: AtomicU64 = AtomicU64::new(1);

/// File-name prefix of staging files, so leftovers of a crash can be recognised.
pub const STAGING_PREFIX: &str = "fsw-";
/// The prefix once the file was closed: a crash before its commit finished leaves bytes
/// the user considers saved, which the next start commits (`closed_leftovers`).
pub const CLOSED_PREFIX: &str = "fsc-";

/// The pending write state of one inode.
#[derive(Default)]
pub struct Staged {
    /// The staging file; None while the inode's bytes are the committed ones.
    file: Option<(File, PathBuf)>,
    size: u64,
    hasher: Option<BackgroundHasher>,
    /// Bytes changed since the last commit.
    pub dirty: bool,
    /// Modification time to record at commit (last write, or an explicit utimens).
    pub mtime_ns: i64,
    /// Handles open for writing on this inode.
    pub writers: usize,
}

/// A staged file ready to be committed.
pub struct Sealed {
    pub path: PathBuf,
    pub info: BlobInfo,
    pub mtime_ns: i64,
}

fn new_path(dir: &Path, ino: u64) -> PathBuf {
    dir.join(format!(
        "{STAGING_PREFIX}{}-{ino}-{}",
        std::process::id(),
        NEXT_STAGING.fetch_add(1, Ordering::Relaxed)
    ))
}

impl Staged {
    pub fn is_staged(&self) -> bool {
        self.file.is_some()
    }

    pub fn size(&self) -> u64 {
        self.size
    }

    /// close(): renames the staging file so a crash before the commit is recovered as
    /// the file's content, not as a file that was still being written.
    pub fn mark_closed(&mut self) -> std::io::Result<()> {
        self.rename_prefix(STAGING_PREFIX, CLOSED_PREFIX)
    }

    /// A writer opened the file again: its bytes are being written once more.
    pub fn mark_open(&mut self) -> std::io::Result<()> {
        self.rename_prefix(CLOSED_PREFIX, STAGING_PREFIX)
    }

    fn rename_prefix(&mut self, from: &str, to: &str) -> std::io::Result<()> {
        let Some((_, path)) = &mut self.file else {
            return Ok(());
        };
        let Some(rest) = path
            .file_name()
            .and_then(|n| n.to_str())
            .and_then(|n| n.strip_prefix(from))
        else {
            return Ok(());
        };
        let renamed = path.with_file_name(format!("{to}{rest}"));
        std::fs::rename(&*path, &renamed)?;
        *path = renamed;
        Ok(())
    }

    /// Starts an empty staging file (new file, or truncated to 0: nothing to copy).
    pub fn stage_empty(&mut self, dir: &Path, ino: u64) -> std::io::Result<()> {
        let path = new_path(dir, ino);
        let f = OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(&path)?;
        self.discard();
        self.file = Some((f, path));
        self.size = 0;
        self.hasher = Some(BackgroundHasher::new());
        Ok(())
    }

    /// Starts a staging file holding a copy of `src` (the current content).
    pub fn stage_copy(&mut self, dir: &Path, ino: u64, src: &Path) -> std::io::Result<()> {
        self.stage_from(dir, ino, &File::open(src)?)
    }

    /// Starts a staging file holding a copy of the open file `src` (the current content;
    /// an open file, so it cannot be swapped between a check and the copy).
    pub fn stage_from(&mut self, dir: &Path, ino: u64, src: &File) -> std::io::Result<()> {
        let path = new_path(dir, ino);
        let mut f = OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(&path)?;
        // `io::copy` between files uses copy_file_range (a reflink or in-kernel copy).
        let copied = std::io::copy(&mut &*src, &mut f);
        let size = match copied {
            Ok(n) => n,
            Err(e) => {
                let _ = std::fs::remove_file(&path);
                return Err(e);
            }
        };
        self.discard();
        self.file = Some((f, path));
        self.size = size;
        self.hasher = if size == 0 {
            Some(BackgroundHasher::new())
        } else {
            None
        };
        Ok(())
    }

    fn file(&self) -> std::io::Result<&File> {
        self.file
            .as_ref()
            .map(|(f, _)| f)
            .ok_or_else(|| std::io::Error::other("write to an inode that is not staged"))
    }

    pub fn write(&mut self, offset: u64, data: &[u8]) -> std::io::Result<u32> {
        self.file()?.write_all_at(data, offset)?;
        match &mut self.hasher {
            Some(h) if h.len() == offset && self.size == offset => h.update(data),
            _ => self.hasher = None,
        }
        self.size = self.size.max(offset + data.len() as u64);
        self.dirty = true;
        self.mtime_ns = now_ns();
        Ok(data.len() as u32)
    }

    pub fn truncate(&mut self, size: u64) -> std::io::Result<()> {
        self.file()?.set_len(size)?;
        if size != self.size {
            self.hasher = if size == 0 {
                Some(BackgroundHasher::new())
            } else {
                None
            };
        }
        self.size = size;
        self.dirty = true;
        self.mtime_ns = now_ns();
        Ok(())
    }

    /// fallocate(2) on the staging file, in any mode its filesystem supports (reserve,
    /// keep the size, punch a hole, zero, collapse or insert a range); the staged size is
    /// the file's length afterwards, whatever the mode did to it.
    pub fn fallocate(&mut self, offset: u64, len: u64, mode: i32) -> std::io::Result<()> {
        let f = self.file()?;
        let too_big = |_| std::io::Error::from_raw_os_error(libc::EFBIG);
        let (offset, len) = (
            i64::try_from(offset).map_err(too_big)?,
            i64::try_from(len).map_err(too_big)?,
        );
        // SAFETY: a plain syscall on a file descriptor this struct owns.
        if unsafe { libc::fallocate(f.as_raw_fd(), mode, offset, len) } != 0 {
            return Err(std::io::Error::last_os_error());
        }
        self.size = f.metadata()?.len();
        self.hasher = None; // bytes may have changed anywhere: hash at commit
        self.dirty = true;
        self.mtime_ns = now_ns();
        Ok(())
    }

    pub fn read(&self, offset: u64, len: u32) -> std::io::Result<Vec<u8>> {
        pread(self.file()?, offset, len, self.size)
    }

    /// Hands the staged file over for commit (hashing it now unless hashed while
    /// written); the inode goes back to "not staged".
    pub fn seal(&mut self) -> std::io::Result<Option<Sealed>> {
        if !self.dirty {
            return Ok(None);
        }
        let Some((f, path)) = self.file.take() else {
            return Ok(None);
        };
        drop(f);
        let hashed = self.hasher.take().filter(|h| h.len() == self.size);
        let info = match hashed.and_then(|h| h.finish()) {
            Some(info) => info,
            None => hash_file(&path)?,
        };
        self.dirty = false;
        Ok(Some(Sealed {
            path,
            info,
            mtime_ns: self.mtime_ns,
        }))
    }

    /// Takes back a sealed file whose commit failed, so its bytes are not lost and the
    /// next flush tries again.
    pub fn restore(&mut self, sealed: Sealed) -> std::io::Result<()> {
        let f = OpenOptions::new()
            .read(true)
            .write(true)
            .open(&sealed.path)?;
        self.discard();
        self.size = sealed.info.size;
        self.file = Some((f, sealed.path));
        self.dirty = true;
        self.mtime_ns = sealed.mtime_ns;
        Ok(())
    }

    /// Drops uncommitted bytes (the inode was unlinked, or is being re-staged).
    pub fn discard(&mut self) {
        if let Some((f, path)) = self.file.take() {
            drop(f);
            let _ = std::fs::remove_file(path);
        }
        self.hasher = None;
        self.dirty = false;
    }
}

impl Drop for Staged {
    fn drop(&mut self) {
        self.discard();
    }
}

/// Reads up to `len` bytes at `offset` of a file of `size` bytes (short only at EOF).
pub fn pread(f: &File, offset: u64, len: u32, size: u64) -> std::io::Result<Vec<u8>> {
    if offset >= size {
        return Ok(Vec::new());
    }
    let want = (len as u64).min(size - offset) as usize;
    let mut buf = vec![0u8; want];
    let mut done = 0;
    while done < want {
        let n = f.read_at(&mut buf[done..], offset + done as u64)?;
        if n == 0 {
            break;
        }
        done += n;
    }
    buf.truncate(done);
    Ok(buf)
}

/// Moves staging files a crashed daemon left behind (bytes of files that were never
/// closed, or whose commit failed at unmount) into `rescue`, so nothing written is
/// deleted without the user seeing it.
pub fn rescue_leftovers(dir: &Path, rescue: &Path) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if !name.starts_with(STAGING_PREFIX) && !name.starts_with(CLOSED_PREFIX) {
            continue;
        }
        let from = e.path();
        let to = rescue.join(e.file_name());
        let moved = std::fs::create_dir_all(rescue).and_then(|_| {
            std::fs::rename(&from, &to).or_else(|_| {
                std::fs::copy(&from, &to)?;
                std::fs::remove_file(&from)
            })
        });
        match moved {
            Ok(()) => tracing::warn!(
                file = %to.display(),
                "uncommitted bytes of a file that was not closed before songfs stopped were saved here"
            ),
            Err(err) => {
                tracing::error!(file = %from.display(), error = %err, "cannot move leftover staging file")
            }
        }
    }
}

/// The staging files of closed files that `rescue_leftovers` saved into `rescue`, with
/// the inode each belongs to (named `fsc-<pid>-<ino>-<n>`).
pub fn closed_leftovers(rescue: &Path) -> Vec<(PathBuf, u64)> {
    let Ok(entries) = std::fs::read_dir(rescue) else {
        return Vec::new();
    };
    let mut found: Vec<(PathBuf, u64)> = entries
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().into_string().ok()?;
            let ino = name.strip_prefix(CLOSED_PREFIX)?.split('-').nth(1)?;
            Some((e.path(), ino.parse().ok()?))
        })
        .collect();
    found.sort();
    found
}

impl Staged {
    /// Detaches the staging file without deleting it (its commit failed at unmount;
    /// the next start rescues it).
    pub fn keep(&mut self) -> Option<PathBuf> {
        self.hasher = None;
        self.dirty = false;
        self.file.take().map(|(_, p)| p)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::content::hash_bytes;

    #[test]
    fn sequential_and_random_writes_hash_to_the_same_content() {
        let d = tempfile::tempdir().unwrap();
        let mut s = Staged::default();
        s.stage_empty(d.path(), 7).unwrap();
        s.write(0, b"hello ").unwrap();
        s.write(6, b"world").unwrap();
        assert_eq!(s.read(0, 100).unwrap(), b"hello world");
        let sealed = s.seal().unwrap().unwrap();
        assert_eq!(sealed.info, hash_bytes(b"hello world"));

        let mut s = Staged::default();
        s.stage_copy(d.path(), 7, &sealed.path).unwrap();
        s.write(0, b"J").unwrap();
        s.truncate(5).unwrap();
        s.write(8, b"!").unwrap();
        assert_eq!(s.read(0, 100).unwrap(), b"Jello\0\0\0!");
        let sealed2 = s.seal().unwrap().unwrap();
        assert_eq!(sealed2.info, hash_bytes(b"Jello\0\0\0!"));
        assert!(s.seal().unwrap().is_none(), "nothing left to commit");
    }
}
