//! FUSE passthrough: the kernel reads a cached file straight from the cache's copy, so a
//! cached read runs at the disk's speed with no request reaching songfs.
//!
//! The kernel's rules (fs/fuse/iomode.c) shape everything here: while any open of an
//! inode is in passthrough mode, every other open of it must be too, and on the same
//! backing file — a plain open then fails with EIO. So, per inode:
//! - the first open, if it is a read-only open of a blob wholly in the cache (and in the
//!   store: `Cache::open_clean`) and nothing else has the inode open, registers that
//!   file as the inode's backing file and reads through it;
//! - while that backing lives, every other open reuses it: a read-only open of the same
//!   content reads through it too; a writer, or a reader of newer content, gets
//!   `FOPEN_DIRECT_IO` beside it, so its reads and writes still reach songfs (hashed,
//!   staged, committed as always);
//! - the backing is closed at the inode's last release. If a writer shared it, the
//!   cache's copy is hashed again then (`SongFs::settle_backing`): the kernel maps a
//!   writer's shared writable mmap onto the backing file, so bytes written that way land
//!   in the cache's copy; they become the file's new content and the blob, which must
//!   never be served changed, is dropped from the cache.
//!
//! A reader opened in passthrough mode keeps reading the content it opened even if a
//! writer commits new content meanwhile (as if the file had been replaced by a rename);
//! every open after the commit sees the new content (doc/SEMANTICS.md).
//!
//! Registering a backing file needs CAP_SYS_ADMIN; without it (an ordinary user), or on
//! a kernel without passthrough, or with `SONGFS_PASSTHROUGH=off`, every open is a plain
//! one and cached reads go through `read.rs`.

use std::collections::HashMap;
use std::fs::File;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;

use fuser::{BackingId, FileAttr, FileHandle, FopenFlags, Generation, ReplyCreate, ReplyOpen};

use super::filesystem::lock;

/// The reply to an open or create: it can register a backing file, then answers.
pub trait OpenReply {
    fn register(&self, file: &File) -> std::io::Result<BackingId>;
    fn answer(self, how: OpenAs<'_>);
}

/// How an open is answered.
pub enum OpenAs<'a> {
    /// Through the inode's backing file; `FOPEN_DIRECT_IO` when reads and writes must
    /// still come to songfs.
    Passthrough(&'a BackingId, FopenFlags),
    Plain,
}

#[derive(Default)]
pub struct Passthrough {
    enabled: AtomicBool,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    inodes: HashMap<u64, InodeOpens>,
    handles: HashMap<u64, u64>,
}

#[derive(Default)]
struct InodeOpens {
    open: usize,
    backing: Option<Backing>,
}

struct Backing {
    id: BackingId,
    hash: String,
    shared_with_writer: bool,
}

impl Passthrough {
    /// Called from `init` once the kernel agreed to passthrough.
    pub fn enable(&self) {
        let off = std::env::var("SONGFS_PASSTHROUGH").is_ok_and(|v| v == "off" || v == "0");
        if off {
            tracing::info!(
                "passthrough turned off (SONGFS_PASSTHROUGH); cached reads go through songfs"
            );
        }
        self.enabled.store(!off, Ordering::Relaxed);
    }

    /// Records an open of `ino` as handle `fh` and answers it. `content`: the hash and
    /// cache file of a read-only open of clean, complete content (`Opened::backing`).
    pub fn open(
        &self,
        ino: u64,
        fh: u64,
        writable: bool,
        content: Option<(String, File)>,
        reply: impl OpenReply,
    ) {
        tracing::debug!(
            ino,
            fh,
            writable,
            content = content.is_some(),
            enabled = self.enabled.load(Ordering::Relaxed),
            "passthrough open"
        );
        let mut st = lock(&self.state);
        st.handles.insert(fh, ino);
        let inode = st.inodes.entry(ino).or_default();
        let first = inode.open == 0;
        inode.open += 1;
        if let Some(b) = &mut inode.backing {
            let same = content.as_ref().is_some_and(|(h, _)| *h == b.hash);
            b.shared_with_writer |= writable;
            let flags = if same {
                FopenFlags::empty()
            } else {
                FopenFlags::FOPEN_DIRECT_IO
            };
            return reply.answer(OpenAs::Passthrough(&b.id, flags));
        }
        let Some((hash, file)) = content.filter(|_| first && self.enabled.load(Ordering::Relaxed))
        else {
            return reply.answer(OpenAs::Plain);
        };
        match reply.register(&file) {
            Ok(id) => {
                tracing::debug!(ino, fh, "passthrough backing registered");
                let b = inode.backing.insert(Backing {
                    id,
                    hash,
                    shared_with_writer: false,
                });
                reply.answer(OpenAs::Passthrough(&b.id, FopenFlags::empty()))
            }
            Err(e) => {
                // EPERM: not CAP_SYS_ADMIN. Nothing will change that while mounted.
                self.enabled.store(false, Ordering::Relaxed);
                tracing::info!(
                    "passthrough unavailable ({e}); cached reads go through songfs (it needs CAP_SYS_ADMIN: root, or a unit granting it)"
                );
                reply.answer(OpenAs::Plain)
            }
        }
    }

    /// Records the release of `fh`. Returns the inode and the backing's hash when its
    /// last open closed a backing that a writer shared (`SongFs::settle_backing`).
    pub fn release(&self, fh: u64) -> Option<(u64, String)> {
        let mut st = lock(&self.state);
        let ino = st.handles.remove(&fh)?;
        let inode = st.inodes.get_mut(&ino)?;
        inode.open = inode.open.saturating_sub(1);
        if inode.open > 0 {
            return None;
        }
        let gone = st.inodes.remove(&ino)?;
        // Dropping the BackingId closes it in the kernel.
        let b = gone.backing?;
        b.shared_with_writer.then_some((ino, b.hash))
    }
}

/// An open's reply, with the flags of a plain open.
pub struct OpenAnswer {
    pub reply: ReplyOpen,
    pub fh: FileHandle,
    pub plain: FopenFlags,
}

impl OpenReply for OpenAnswer {
    fn register(&self, file: &File) -> std::io::Result<BackingId> {
        self.reply.open_backing(file)
    }

    fn answer(self, how: OpenAs<'_>) {
        match how {
            OpenAs::Passthrough(id, flags) => self.reply.opened_passthrough(self.fh, flags, id),
            OpenAs::Plain => self.reply.opened(self.fh, self.plain),
        }
    }
}

/// A create's reply: the new entry and its handle.
pub struct CreateAnswer {
    pub reply: ReplyCreate,
    pub attr: FileAttr,
    pub fh: FileHandle,
    pub plain: FopenFlags,
}

impl OpenReply for CreateAnswer {
    fn register(&self, file: &File) -> std::io::Result<BackingId> {
        self.reply.open_backing(file)
    }

    fn answer(self, how: OpenAs<'_>) {
        let ttl = super::fuse::TTL;
        match how {
            OpenAs::Passthrough(id, flags) => {
                self.reply
                    .created_passthrough(&ttl, &self.attr, Generation(0), self.fh, flags, id)
            }
            OpenAs::Plain => {
                self.reply
                    .created(&ttl, &self.attr, Generation(0), self.fh, self.plain)
            }
        }
    }
}
