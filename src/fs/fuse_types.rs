//! Between fuser's types and songfs's: node attributes, names, open flags, times, and
//! the one place an error is logged and replied (`fail`, `try_or_reply!`).

use std::ffi::OsStr;
use std::time::SystemTime;

use fuser::{
    Errno, FileAttr, FileType, FopenFlags, INodeNo, OpenAccMode, OpenFlags, ReplyAttr, ReplyCreate,
    ReplyData, ReplyDirectory, ReplyDirectoryPlus, ReplyEmpty, ReplyEntry, ReplyOpen, ReplyWrite,
    ReplyXattr, Request, TimeOrNow,
};

use super::error::FsError;
use super::filesystem::Opened;
use super::nodes::Creator;
use crate::catalog::{time_to_ns, Kind, Node};

/// Largest read/write the kernel sends in one request.
pub const MAX_IO: u32 = 1 << 20;

pub fn file_type(k: Kind) -> FileType {
    match k {
        Kind::Dir => FileType::Directory,
        Kind::File => FileType::RegularFile,
        Kind::Symlink => FileType::Symlink,
        Kind::Fifo => FileType::NamedPipe,
        Kind::Socket => FileType::Socket,
        Kind::CharDev => FileType::CharDevice,
        Kind::BlockDev => FileType::BlockDevice,
    }
}

pub fn attr(n: &Node) -> FileAttr {
    FileAttr {
        ino: INodeNo(n.ino),
        size: n.size,
        blocks: n.size.div_ceil(512),
        atime: n.atime(),
        mtime: n.mtime(),
        ctime: n.ctime(),
        crtime: n.ctime(),
        kind: file_type(n.kind),
        perm: n.mode as u16,
        nlink: n.nlink,
        uid: n.uid,
        gid: n.gid,
        rdev: n.rdev,
        blksize: MAX_IO,
        flags: 0,
    }
}

pub fn name_str(name: &OsStr) -> Result<&str, FsError> {
    name.to_str()
        .ok_or_else(|| FsError::new(libc::EINVAL, "file names must be UTF-8"))
}

pub fn creator(req: &Request) -> Creator {
    Creator {
        uid: req.uid(),
        gid: req.gid(),
    }
}

pub fn open_flags(o: &Opened) -> FopenFlags {
    if o.keep_cache {
        FopenFlags::FOPEN_KEEP_CACHE
    } else {
        FopenFlags::empty()
    }
}

pub fn writable(flags: OpenFlags) -> bool {
    !matches!(flags.acc_mode(), OpenAccMode::O_RDONLY)
}

pub fn time_ns(t: TimeOrNow) -> i64 {
    match t {
        TimeOrNow::SpecificTime(t) => time_to_ns(t),
        TimeOrNow::Now => time_to_ns(SystemTime::now()),
    }
}

/// Every reply type can carry an error.
pub trait ErrorReply {
    fn error(self, e: Errno);
}
macro_rules! error_reply {
    ($($t:ty),*) => {$(impl ErrorReply for $t { fn error(self, e: Errno) { <$t>::error(self, e) } })*};
}
error_reply!(
    ReplyXattr,
    ReplyAttr,
    ReplyCreate,
    ReplyData,
    ReplyDirectory,
    ReplyDirectoryPlus,
    ReplyEmpty,
    ReplyEntry,
    ReplyOpen,
    ReplyWrite
);

/// The one place errors are logged and replied.
pub fn fail(op: &str, e: FsError, reply: impl ErrorReply) {
    if e.is_routine() {
        tracing::debug!(op, errno = e.errno, "{e}");
    } else {
        tracing::warn!(op, errno = e.errno, "{e}");
    }
    reply.error(Errno::from_i32(e.errno));
}

/// `?` for a callback: on error, `fail` and return.
macro_rules! try_or_reply {
    ($op:expr, $reply:expr, $e:expr) => {
        match $e {
            Ok(v) => v,
            Err(err) => return $crate::fs::fuse_types::fail($op, err.into(), $reply),
        }
    };
}
pub(super) use try_or_reply;

pub fn xattr_reply(reply: ReplyXattr, value: &[u8], size: u32) {
    match super::xattr::reply_for(value, size) {
        super::xattr::XattrReply::Size(n) => reply.size(n),
        super::xattr::XattrReply::Data(d) => reply.data(&d),
        super::xattr::XattrReply::Error(e) => reply.error(Errno::from_i32(e)),
    }
}
