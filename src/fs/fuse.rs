//! The FUSE shim: fuser callbacks that convert arguments, call `SongFs`, and reply.
//! Each callback is a few lines; the conversions and the one error reply (`fail`) are in
//! `fuse_types.rs`.
//!
//! Operations that may wait for the network (a read of bytes not yet cached, a write or
//! truncate that first needs the current content) are spawned on the tokio runtime and
//! reply when done, so a slow download never holds a FUSE thread and other files keep
//! working. Everything else answers on the FUSE thread from local state. This module
//! must never contain filesystem logic.

use std::ffi::OsStr;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use fuser::{
    Errno, FileHandle, FopenFlags, Generation, INodeNo, InitFlags, KernelConfig, LockOwner,
    OpenFlags, RenameFlags, ReplyAttr, ReplyCreate, ReplyData, ReplyDirectory, ReplyDirectoryPlus,
    ReplyEmpty, ReplyEntry, ReplyOpen, ReplyStatfs, ReplyWrite, ReplyXattr, Request, TimeOrNow,
    WriteFlags,
};

use super::error::FsError;
use super::filesystem::{SetAttr, SongFs};
use super::fuse_types::{
    attr, creator, fail, file_type, name_str, open_flags, time_ns, try_or_reply, writable,
    xattr_reply, MAX_IO,
};
use super::passthrough::{CreateAnswer, OpenAnswer, Passthrough};
use crate::catalog::RenameMode;

/// How long the kernel may trust attributes and names: the namespace changes only
/// through this mount (and the sync, which is rare), so a few seconds is safe and makes
/// `ls -l` of a big folder cost no round trips.
pub(super) const TTL: Duration = Duration::from_secs(2);

pub struct FuseAdapter {
    fs: Arc<SongFs>,
    rt: tokio::runtime::Handle,
    passthrough: Passthrough,
}

impl FuseAdapter {
    pub fn new(fs: Arc<SongFs>, rt: tokio::runtime::Handle) -> FuseAdapter {
        FuseAdapter {
            fs,
            rt,
            passthrough: Passthrough::default(),
        }
    }

    /// A change to a file's bytes (write, fallocate): `now` is its attempt here, on the
    /// request's own buffer, which succeeds when the content is on this machine. When it
    /// is not, `later()` makes an owned copy of the change, run on the runtime after
    /// `prepare_staging` brought the content (a download never blocks a FUSE thread; a
    /// write's bytes are copied only then).
    fn staged_change<T: Send + 'static, L>(
        &self,
        op: &'static str,
        ino: INodeNo,
        now: Result<Option<T>, FsError>,
        later: impl FnOnce() -> L,
        done: impl FnOnce(Result<T, FsError>) + Send + 'static,
    ) where
        L: FnOnce(&SongFs) -> Result<Option<T>, FsError> + Send + 'static,
    {
        match now {
            Ok(Some(v)) => done(Ok(v)),
            Ok(None) => {
                let (fs, change) = (self.fs.clone(), later());
                self.rt.spawn(async move {
                    let r = match fs.prepare_staging(ino.0).await {
                        Ok(()) => change(&fs),
                        Err(e) => Err(e),
                    };
                    done(match r {
                        Ok(Some(v)) => Ok(v),
                        Ok(None) => Err(FsError::new(
                            libc::EIO,
                            format!("{op}: content vanished while staging"),
                        )),
                        Err(e) => Err(e),
                    })
                });
            }
            Err(e) => done(Err(e)),
        }
    }
}

impl fuser::Filesystem for FuseAdapter {
    fn init(&mut self, _req: &Request, config: &mut KernelConfig) -> std::io::Result<()> {
        let _ = config
            .add_capabilities(InitFlags::FUSE_DO_READDIRPLUS | InitFlags::FUSE_READDIRPLUS_AUTO);
        let _ = config.add_capabilities(InitFlags::FUSE_PARALLEL_DIROPS);
        let _ = config.set_max_write(MAX_IO);
        // Cache misses are answered asynchronously: let the kernel keep more in flight.
        let _ = config.set_max_background(64);
        if let Err(nearest) = config.set_max_readahead(MAX_IO) {
            let _ = config.set_max_readahead(nearest);
        }
        // Depth 2: the cache may itself sit on a stacked filesystem (overlayfs).
        match config.add_capabilities(InitFlags::FUSE_PASSTHROUGH) {
            Ok(()) => {
                let _ = config.set_max_stack_depth(2);
                self.passthrough.enable();
            }
            Err(_) => tracing::info!(
                "this kernel offers no FUSE passthrough; cached reads go through songfs"
            ),
        }
        Ok(())
    }

    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        let name = try_or_reply!("lookup", reply, name_str(name));
        let n = try_or_reply!("lookup", reply, self.fs.lookup(parent.0, name));
        reply.entry(&TTL, &attr(&n), Generation(0));
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        let n = try_or_reply!("getattr", reply, self.fs.getattr(ino.0));
        reply.attr(&TTL, &attr(&n));
    }

    fn setattr(
        &self,
        _req: &Request,
        ino: INodeNo,
        mode: Option<u32>,
        uid: Option<u32>,
        gid: Option<u32>,
        size: Option<u64>,
        atime: Option<TimeOrNow>,
        mtime: Option<TimeOrNow>,
        _ctime: Option<SystemTime>,
        _fh: Option<FileHandle>,
        _crtime: Option<SystemTime>,
        _chgtime: Option<SystemTime>,
        _bkuptime: Option<SystemTime>,
        _flags: Option<fuser::BsdFileFlags>,
        reply: ReplyAttr,
    ) {
        let a = SetAttr {
            mode,
            uid,
            gid,
            size,
            atime_ns: atime.map(time_ns),
            mtime_ns: mtime.map(time_ns),
        };
        match self.fs.setattr(ino.0, a) {
            Ok(Some(n)) => reply.attr(&TTL, &attr(&n)),
            Ok(None) => {
                let fs = self.fs.clone();
                self.rt.spawn(async move {
                    let r = match fs.prepare_staging(ino.0).await {
                        Ok(()) => fs.setattr(ino.0, a),
                        Err(e) => Err(e),
                    };
                    match r {
                        Ok(Some(n)) => reply.attr(&TTL, &attr(&n)),
                        Ok(None) => fail(
                            "setattr",
                            FsError::new(libc::EIO, "content vanished while staging"),
                            reply,
                        ),
                        Err(e) => fail("setattr", e, reply),
                    }
                });
            }
            Err(e) => fail("setattr", e, reply),
        }
    }

    fn mkdir(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        reply: ReplyEntry,
    ) {
        let name = try_or_reply!("mkdir", reply, name_str(name));
        let n = try_or_reply!(
            "mkdir",
            reply,
            self.fs
                .mkdir(parent.0, name, mode & !umask, req.uid(), req.gid())
        );
        reply.entry(&TTL, &attr(&n), Generation(0));
    }

    fn mknod(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        rdev: u32,
        reply: ReplyEntry,
    ) {
        let name = try_or_reply!("mknod", reply, name_str(name));
        let n = try_or_reply!(
            "mknod",
            reply,
            self.fs
                .mknod(parent.0, name, mode & !umask, rdev, creator(req))
        );
        reply.entry(&TTL, &attr(&n), Generation(0));
    }

    fn symlink(
        &self,
        req: &Request,
        parent: INodeNo,
        link_name: &OsStr,
        target: &Path,
        reply: ReplyEntry,
    ) {
        let name = try_or_reply!("symlink", reply, name_str(link_name));
        let target = try_or_reply!("symlink", reply, name_str(target.as_os_str()));
        let n = try_or_reply!(
            "symlink",
            reply,
            self.fs.symlink(parent.0, name, target, creator(req))
        );
        reply.entry(&TTL, &attr(&n), Generation(0));
    }

    fn readlink(&self, _req: &Request, ino: INodeNo, reply: ReplyData) {
        let target = try_or_reply!("readlink", reply, self.fs.readlink(ino.0));
        reply.data(target.as_bytes());
    }

    fn link(
        &self,
        _req: &Request,
        ino: INodeNo,
        newparent: INodeNo,
        newname: &OsStr,
        reply: ReplyEntry,
    ) {
        let name = try_or_reply!("link", reply, name_str(newname));
        let n = try_or_reply!("link", reply, self.fs.link(ino.0, newparent.0, name));
        reply.entry(&TTL, &attr(&n), Generation(0));
    }

    fn unlink(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        let name = try_or_reply!("unlink", reply, name_str(name));
        try_or_reply!("unlink", reply, self.fs.unlink(parent.0, name));
        reply.ok();
    }

    fn rmdir(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        let name = try_or_reply!("rmdir", reply, name_str(name));
        try_or_reply!("rmdir", reply, self.fs.rmdir(parent.0, name));
        reply.ok();
    }

    fn rename(
        &self,
        _req: &Request,
        parent: INodeNo,
        name: &OsStr,
        newparent: INodeNo,
        newname: &OsStr,
        flags: RenameFlags,
        reply: ReplyEmpty,
    ) {
        let name = try_or_reply!("rename", reply, name_str(name));
        let newname = try_or_reply!("rename", reply, name_str(newname));
        let mode = RenameMode {
            no_replace: flags.contains(RenameFlags::RENAME_NOREPLACE),
            exchange: flags.contains(RenameFlags::RENAME_EXCHANGE),
        };
        try_or_reply!(
            "rename",
            reply,
            self.fs.rename(parent.0, name, newparent.0, newname, mode)
        );
        reply.ok();
    }

    fn open(&self, _req: &Request, ino: INodeNo, flags: OpenFlags, reply: ReplyOpen) {
        let writable = writable(flags);
        let mut o = try_or_reply!("open", reply, self.fs.open(ino.0, writable));
        let plain = open_flags(&o);
        let (fh, content) = (FileHandle(o.fh), o.backing.take());
        let answer = OpenAnswer { reply, fh, plain };
        self.passthrough
            .open(ino.0, o.fh, writable, content, answer);
    }

    fn create(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        flags: i32,
        reply: ReplyCreate,
    ) {
        let name = try_or_reply!("create", reply, name_str(name));
        let (n, o) = try_or_reply!(
            "create",
            reply,
            self.fs.create(
                parent.0,
                name,
                mode & !umask,
                req.uid(),
                req.gid(),
                writable(OpenFlags(flags)),
            )
        );
        // A new file has no backing yet, unless the name raced an open of it (the
        // kernel then needs every open in passthrough mode).
        let answer = CreateAnswer {
            reply,
            attr: attr(&n),
            fh: FileHandle(o.fh),
            plain: open_flags(&o),
        };
        let writable = writable(OpenFlags(flags));
        self.passthrough.open(n.ino, o.fh, writable, None, answer);
    }

    fn read(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyData,
    ) {
        match self.fs.read(fh.0, offset, size) {
            Ok(Some(data)) => reply.data(&data),
            Ok(None) => {
                let fs = self.fs.clone();
                self.rt.spawn(async move {
                    match fs.read_fetch(fh.0, offset, size).await {
                        Ok(data) => reply.data(&data),
                        Err(e) => fail("read", e, reply),
                    }
                });
            }
            Err(e) => fail("read", e, reply),
        }
    }

    fn write(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        data: &[u8],
        _write_flags: WriteFlags,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyWrite,
    ) {
        self.staged_change(
            "write",
            ino,
            self.fs.write(fh.0, offset, data),
            || {
                let data = data.to_vec();
                move |fs: &SongFs| fs.write(fh.0, offset, &data)
            },
            move |r| match r {
                Ok(n) => reply.written(n),
                Err(e) => fail("write", e, reply),
            },
        );
    }

    fn fallocate(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        length: u64,
        mode: i32,
        reply: ReplyEmpty,
    ) {
        self.staged_change(
            "fallocate",
            ino,
            self.fs.fallocate(fh.0, offset, length, mode),
            || move |fs: &SongFs| fs.fallocate(fh.0, offset, length, mode),
            move |r| match r {
                Ok(()) => reply.ok(),
                Err(e) => fail("fallocate", e, reply),
            },
        );
    }

    fn flush(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        _lock_owner: LockOwner,
        reply: ReplyEmpty,
    ) {
        try_or_reply!("flush", reply, self.fs.flush(fh.0));
        reply.ok();
    }

    fn release(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        _flush: bool,
        reply: ReplyEmpty,
    ) {
        let settle = self.passthrough.release(fh.0);
        let released = self.fs.release(fh.0);
        if let Some((ino, hash)) = settle {
            // Here, not on a task: no open may take the changed file as a backing again
            // before it is settled (rare: a writer beside a passthrough reader).
            self.fs.settle_backing(ino, &hash);
        }
        try_or_reply!("release", reply, released);
        reply.ok();
    }

    fn fsync(&self, _req: &Request, _ino: INodeNo, fh: FileHandle, _ds: bool, reply: ReplyEmpty) {
        try_or_reply!("fsync", reply, self.fs.fsync(fh.0));
        reply.ok();
    }

    fn opendir(&self, _req: &Request, ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        let fh = try_or_reply!("opendir", reply, self.fs.opendir(ino.0));
        reply.opened(FileHandle(fh), FopenFlags::empty());
    }

    fn readdir(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectory,
    ) {
        let snap = try_or_reply!("readdir", reply, self.fs.dir_snapshot(fh.0));
        let dots = [(&snap.dir, "."), (&snap.parent, "..")];
        let all = dots
            .into_iter()
            .chain(snap.entries.iter().map(|n| (n, n.name.as_str())));
        for (i, (n, name)) in all.enumerate().skip(offset as usize) {
            let kind = file_type(n.kind);
            if reply.add(INodeNo(n.ino), i as u64 + 1, kind, name) {
                break;
            }
        }
        reply.ok();
    }

    fn readdirplus(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectoryPlus,
    ) {
        let snap = try_or_reply!("readdirplus", reply, self.fs.dir_snapshot(fh.0));
        let dots = [(&snap.dir, "."), (&snap.parent, "..")];
        let all = dots
            .into_iter()
            .chain(snap.entries.iter().map(|n| (n, n.name.as_str())));
        for (i, (n, name)) in all.enumerate().skip(offset as usize) {
            if reply.add(
                INodeNo(n.ino),
                i as u64 + 1,
                name,
                &TTL,
                &attr(n),
                Generation(0),
            ) {
                break;
            }
        }
        reply.ok();
    }

    fn releasedir(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        reply: ReplyEmpty,
    ) {
        self.fs.releasedir(fh.0);
        reply.ok();
    }

    fn fsyncdir(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _ds: bool,
        reply: ReplyEmpty,
    ) {
        reply.ok();
    }

    // One attribute, `user.songfs.state`, answered from memory; every other name is
    // refused from its name alone (xattr.rs says why `security.*` gets EOPNOTSUPP).
    fn getxattr(&self, _req: &Request, ino: INodeNo, name: &OsStr, size: u32, reply: ReplyXattr) {
        if let Some(errno) = super::xattr::NameKind::of(name).errno() {
            reply.error(Errno::from_i32(errno));
            return;
        }
        let n = try_or_reply!("getxattr", reply, self.fs.getattr(ino.0));
        if n.is_dir() {
            reply.error(Errno::ENODATA);
            return;
        }
        let value = super::xattr::file_state(&n, self.fs.cache());
        xattr_reply(reply, value.as_bytes(), size);
    }

    fn listxattr(&self, _req: &Request, ino: INodeNo, size: u32, reply: ReplyXattr) {
        let n = try_or_reply!("listxattr", reply, self.fs.getattr(ino.0));
        let list: &[u8] = if n.is_dir() {
            b""
        } else {
            b"user.songfs.state\0"
        };
        xattr_reply(reply, list, size);
    }

    fn statfs(&self, _req: &Request, _ino: INodeNo, reply: ReplyStatfs) {
        let s = super::statfs::local_space(&self.fs.cache().staging_dir());
        reply.statfs(
            s.blocks,
            s.bfree,
            s.bavail,
            self.fs.entry_count() + s.ffree,
            s.ffree,
            s.bsize,
            crate::catalog::NAME_MAX as u32,
            s.bsize,
        );
    }
}
