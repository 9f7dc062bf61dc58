//! What one namespace entry is: its kind, content, times, mode and owner, and the
//! errors the namespace answers with (each with the errno ext4 gives for the same case).
//! Plain data: nothing here touches the database or the index.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Inode number of the mount's root directory.
pub const ROOT_INO: u64 = 1;

/// Longest file name accepted (as on ext4).
pub const NAME_MAX: usize = 255;

/// Longest symlink target accepted (PATH_MAX, as on Linux).
pub const TARGET_MAX: usize = 4095;

/// Most hard links one inode may have (ext4's EXT4_LINK_MAX).
pub const LINK_MAX: u32 = 65_000;

#[derive(Debug, thiserror::Error)]
pub enum CatalogError {
    #[error("no such file or directory")]
    NotFound,
    #[error("{0:?} already exists")]
    Exists(String),
    #[error("directory is not empty")]
    NotEmpty,
    #[error("not a directory")]
    NotDir,
    #[error("is a directory")]
    IsDir,
    #[error("invalid name {0:?}")]
    InvalidName(String),
    #[error("name too long ({0} bytes, at most {NAME_MAX})")]
    NameTooLong(usize),
    #[error("cannot move a directory into itself")]
    IntoItself,
    #[error("unsupported rename flags")]
    Unsupported,
    #[error("directories cannot be hard-linked")]
    LinkDir,
    #[error("too many links (at most {LINK_MAX})")]
    TooManyLinks,
    #[error("not a symbolic link")]
    NotSymlink,
    #[error("namespace database: {0}")]
    Db(#[from] rusqlite::Error),
    #[error("cannot flush the namespace's journal {path}: {source} (check the disk's space and health)", path = .0.display(), source = .1)]
    Flush(std::path::PathBuf, std::io::Error),
}

impl CatalogError {
    pub fn errno(&self) -> i32 {
        match self {
            CatalogError::NotFound => libc::ENOENT,
            CatalogError::Exists(_) => libc::EEXIST,
            CatalogError::NotEmpty => libc::ENOTEMPTY,
            CatalogError::NotDir => libc::ENOTDIR,
            CatalogError::IsDir => libc::EISDIR,
            CatalogError::InvalidName(_) | CatalogError::IntoItself => libc::EINVAL,
            CatalogError::NameTooLong(_) => libc::ENAMETOOLONG,
            CatalogError::Unsupported | CatalogError::NotSymlink => libc::EINVAL,
            CatalogError::LinkDir => libc::EPERM,
            CatalogError::TooManyLinks => libc::EMLINK,
            CatalogError::Db(_) | CatalogError::Flush(..) => libc::EIO,
        }
    }
}

pub type CatalogResult<T> = Result<T, CatalogError>;

/// The node types of `stat(2)`. Directories, files and symlinks are synced; FIFOs,
/// sockets and device nodes exist on this machine only (their meaning is local).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Dir,
    File,
    Symlink,
    Fifo,
    Socket,
    CharDev,
    BlockDev,
}

impl Kind {
    pub(super) fn as_str(self) -> &'static str {
        match self {
            Kind::Dir => "dir",
            Kind::File => "file",
            Kind::Symlink => "symlink",
            Kind::Fifo => "fifo",
            Kind::Socket => "socket",
            Kind::CharDev => "chardev",
            Kind::BlockDev => "blockdev",
        }
    }

    pub(super) fn parse(s: &str) -> Kind {
        match s {
            "dir" => Kind::Dir,
            "symlink" => Kind::Symlink,
            "fifo" => Kind::Fifo,
            "socket" => Kind::Socket,
            "chardev" => Kind::CharDev,
            "blockdev" => Kind::BlockDev,
            _ => Kind::File,
        }
    }

    /// The kind a `mknod` mode (S_IFMT bits) asks for.
    pub fn from_mode(mode: u32) -> Option<Kind> {
        match mode & mode_bits::S_IFMT {
            mode_bits::S_IFREG | 0 => Some(Kind::File),
            mode_bits::S_IFIFO => Some(Kind::Fifo),
            mode_bits::S_IFSOCK => Some(Kind::Socket),
            mode_bits::S_IFCHR => Some(Kind::CharDev),
            mode_bits::S_IFBLK => Some(Kind::BlockDev),
            _ => None,
        }
    }

    /// FIFOs, sockets and device nodes: usable here, never synced.
    pub fn is_special(self) -> bool {
        matches!(
            self,
            Kind::Fifo | Kind::Socket | Kind::CharDev | Kind::BlockDev
        )
    }
}

/// One entry of the namespace. `parent`/`name` are the name it was reached by (a
/// file with hard links has several; `nlink` counts them).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Node {
    pub ino: u64,
    pub parent: u64,
    pub name: String,
    pub kind: Kind,
    /// SHA-256 of the content (files; None for other kinds and local-only files).
    pub hash: Option<String>,
    pub size: u64,
    /// Nanoseconds since the epoch.
    pub atime_ns: i64,
    pub mtime_ns: i64,
    pub ctime_ns: i64,
    /// Permission bits only (0o7777).
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    /// Content lives on this machine only and never reaches the store (local-only
    /// names, and every FIFO, socket and device node).
    pub local_only: bool,
    /// A symlink's target, verbatim.
    pub target: Option<String>,
    /// A device node's device number.
    pub rdev: u32,
    /// Names this inode has (directories: 2 + subdirectories, as on ext4).
    pub nlink: u32,
}

impl Node {
    pub fn is_dir(&self) -> bool {
        self.kind == Kind::Dir
    }
    pub fn atime(&self) -> SystemTime {
        ns_to_time(self.atime_ns)
    }
    pub fn mtime(&self) -> SystemTime {
        ns_to_time(self.mtime_ns)
    }
    pub fn ctime(&self) -> SystemTime {
        ns_to_time(self.ctime_ns)
    }
}

pub fn now_ns() -> i64 {
    time_to_ns(SystemTime::now())
}

/// Nanoseconds since the epoch, saturating outside i64's ±292 years (1678–2262).
pub fn time_to_ns(t: SystemTime) -> i64 {
    let clamp = |n: u128| n.min(i64::MAX as u128) as i64;
    match t.duration_since(UNIX_EPOCH) {
        Ok(d) => clamp(d.as_nanos()),
        Err(e) => -clamp(e.duration().as_nanos()),
    }
}

pub fn ns_to_time(ns: i64) -> SystemTime {
    if ns >= 0 {
        UNIX_EPOCH + Duration::from_nanos(ns as u64)
    } else {
        UNIX_EPOCH - Duration::from_nanos(ns.unsigned_abs())
    }
}

/// Attribute changes of `setattr` that the namespace records (size goes through
/// `set_content`, because it changes the bytes).
#[derive(Debug, Default, Clone, Copy)]
pub struct AttrChange {
    pub mode: Option<u32>,
    pub uid: Option<u32>,
    pub gid: Option<u32>,
    pub atime_ns: Option<i64>,
    pub mtime_ns: Option<i64>,
}

impl AttrChange {
    pub fn is_empty(&self) -> bool {
        self.mode.is_none()
            && self.uid.is_none()
            && self.gid.is_none()
            && self.atime_ns.is_none()
            && self.mtime_ns.is_none()
    }
}

/// A rename's options (renameat2 flags).
#[derive(Debug, Default, Clone, Copy)]
pub struct RenameMode {
    pub no_replace: bool,
    pub exchange: bool,
}

/// What a new entry is made of (`Catalog::create`).
#[derive(Debug, Clone, Default)]
pub struct NewNode<'a> {
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    /// A file's initial content (None for other kinds and local-only files).
    pub hash: Option<&'a str>,
    pub local_only: bool,
    pub target: Option<&'a str>,
    pub rdev: u32,
    /// A file's size and mtime at creation, so an entry that arrives whole (another
    /// device's file) is never seen with its hash but without its size.
    pub size: u64,
    pub mtime_ns: Option<i64>,
}

/// The POSIX mode bits the catalog stores. They are part of the catalog's format, the same
/// numbers on every OS; `libc`'s constants are not (u16 on macOS, absent on Windows).
pub mod mode_bits {
    pub const S_IFMT: u32 = 0o170000;
    pub const S_IFREG: u32 = 0o100000;
    pub const S_IFIFO: u32 = 0o010000;
    pub const S_IFSOCK: u32 = 0o140000;
    pub const S_IFCHR: u32 = 0o020000;
    pub const S_IFBLK: u32 = 0o060000;
    pub const S_ISGID: u32 = 0o2000;

    #[cfg(target_os = "linux")]
    #[test]
    fn the_numbers_are_linux_s() {
        assert_eq!(S_IFMT, libc::S_IFMT);
        assert_eq!(S_IFREG, libc::S_IFREG);
        assert_eq!(S_IFIFO, libc::S_IFIFO);
        assert_eq!(S_IFSOCK, libc::S_IFSOCK);
        assert_eq!(S_IFCHR, libc::S_IFCHR);
        assert_eq!(S_IFBLK, libc::S_IFBLK);
        assert_eq!(S_ISGID, libc::S_ISGID);
    }
}
