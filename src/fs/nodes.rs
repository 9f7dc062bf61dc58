//! The node types beyond files and directories: symlinks, hard links, FIFOs, sockets and
//! device nodes, created as on ext4. FIFOs, sockets and devices only exist in the
//! namespace: the kernel serves their I/O itself (pipes, sockets, the device's driver),
//! so none of their bytes ever pass through songfs, and they are never synced.
//! Must never: give a special file content, or let a directory be hard-linked.

use super::error::{FsError, FsResult};
use super::filesystem::SongFs;
use crate::catalog::{Kind, NewNode, Node, TARGET_MAX};

/// Who creates an entry (its owner, before a set-group-ID directory's rule).
#[derive(Debug, Clone, Copy)]
pub struct Creator {
    pub uid: u32,
    pub gid: u32,
}

impl SongFs {
    pub fn symlink(&self, parent: u64, name: &str, target: &str, who: Creator) -> FsResult<Node> {
        if target.is_empty() {
            return Err(FsError::new(libc::ENOENT, "a symlink needs a target"));
        }
        if target.len() > TARGET_MAX {
            return Err(FsError::new(
                libc::ENAMETOOLONG,
                format!(
                    "symlink target of {} bytes (at most {TARGET_MAX})",
                    target.len()
                ),
            ));
        }
        let new = NewNode {
            mode: 0o777,
            uid: who.uid,
            gid: who.gid,
            target: Some(target),
            ..NewNode::default()
        };
        Ok(self
            .catalog()
            .create_node(parent, name, Kind::Symlink, &new)?)
    }

    pub fn readlink(&self, ino: u64) -> FsResult<String> {
        Ok(self.catalog().readlink(ino)?)
    }

    /// `link(2)`: a second name for a file, symlink or special file.
    pub fn link(&self, ino: u64, new_parent: u64, new_name: &str) -> FsResult<Node> {
        let n = self.catalog().link(ino, new_parent, new_name)?;
        Ok(self.overlay(n))
    }

    /// `mknod(2)`: a FIFO, socket or device node (a regular file too, as mknod allows).
    pub fn mknod(
        &self,
        parent: u64,
        name: &str,
        mode: u32,
        rdev: u32,
        who: Creator,
    ) -> FsResult<Node> {
        let kind = Kind::from_mode(mode)
            .ok_or_else(|| FsError::new(libc::EINVAL, "mknod: unknown file type"))?;
        if kind == Kind::File {
            let (n, opened) = self.create(parent, name, mode, who.uid, who.gid, false)?;
            self.release(opened.fh)?;
            return Ok(n);
        }
        let new = NewNode {
            mode,
            uid: who.uid,
            gid: who.gid,
            rdev: if matches!(kind, Kind::CharDev | Kind::BlockDev) {
                rdev
            } else {
                0
            },
            ..NewNode::default()
        };
        Ok(self.catalog().create_node(parent, name, kind, &new)?)
    }
}
