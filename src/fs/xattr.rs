//! The one extended attribute the mount answers: `user.songfs.state`, what a file browser
//! or a script reads to know where a file's bytes are (`remote`, `partial`, `cached`,
//! `pinned`, `uploading`, `local-only`). Answered from memory: never a store round trip.
//!
//! Names outside the `user.` namespace (`security.selinux`, `system.posix_acl_access`,
//! `security.capability`, ...) are refused from the name alone with EOPNOTSUPP, "this
//! filesystem has no such attributes", which is what the kernel answered for them before
//! the mount implemented getxattr. Not ENODATA ("this file has none"): `ls -l` (and
//! other tools) remember an EOPNOTSUPP per filesystem and stop asking, while after an
//! ENODATA `ls -l` asks for two of them per file, one daemon round trip each: that made
//! `ls -l` of 5,000 files 4.5x slower than native. Must never: answer such a name with
//! anything but EOPNOTSUPP, or touch a lock, the catalog or the cache to answer it.

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;

use crate::cache::{BlobState, Cache};
use crate::catalog::Node;

/// The attribute's name.
pub const STATE_XATTR: &str = "user.songfs.state";

/// How a `getxattr` of a name is answered, decided from the name alone.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NameKind {
    /// `user.songfs.state`: the file is looked up.
    State,
    /// Another `user.` name: the namespace exists, the attribute does not (ENODATA).
    OtherUser,
    /// Any other namespace: the mount has no labels, ACLs or capabilities (EOPNOTSUPP).
    Unsupported,
}

impl NameKind {
    pub fn of(name: &OsStr) -> NameKind {
        let name = name.as_bytes();
        if name == STATE_XATTR.as_bytes() {
            NameKind::State
        } else if name.starts_with(b"user.") {
            NameKind::OtherUser
        } else {
            NameKind::Unsupported
        }
    }

    /// The error this name gets without a lookup; None for the state attribute.
    pub fn errno(self) -> Option<i32> {
        match self {
            NameKind::State => None,
            NameKind::OtherUser => Some(libc::ENODATA),
            NameKind::Unsupported => Some(libc::EOPNOTSUPP),
        }
    }
}

/// Where a file's bytes are, as one word.
pub fn file_state(n: &Node, cache: &Cache) -> &'static str {
    if n.is_dir() {
        return "folder";
    }
    if n.local_only {
        return "local-only";
    }
    let Some(hash) = n.hash.as_deref() else {
        // Empty, just created: nothing to fetch or upload.
        return "cached";
    };
    if n.size == 0 {
        return "cached";
    }
    match cache.state(hash) {
        BlobState::Remote => "remote",
        BlobState::Partial => "partial",
        BlobState::Cached => "cached",
        BlobState::Pinned => "pinned",
        BlobState::Uploading => "uploading",
    }
}

/// The reply to `getxattr`/`listxattr` for a buffer of `size` bytes: the value's length
/// when size is 0, the value when it fits, ERANGE otherwise.
pub enum XattrReply {
    Size(u32),
    Data(Vec<u8>),
    Error(i32),
}

pub fn reply_for(value: &[u8], size: u32) -> XattrReply {
    if size == 0 {
        XattrReply::Size(value.len() as u32)
    } else if (size as usize) < value.len() {
        XattrReply::Error(libc::ERANGE)
    } else {
        XattrReply::Data(value.to_vec())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_answered_by_namespace() {
        let kind = |n: &str| NameKind::of(OsStr::new(n));
        assert_eq!(kind("user.songfs.state"), NameKind::State);
        assert_eq!(kind("user.songfs.state").errno(), None);
        for other in [
            "user.songfs.stat",
            "user.songfs.state2",
            "user.xdg.origin.url",
        ] {
            assert_eq!(kind(other).errno(), Some(libc::ENODATA), "{other}");
        }
        for foreign in [
            "security.selinux",
            "security.capability",
            "system.posix_acl_access",
            "system.posix_acl_default",
            "trusted.overlay.opaque",
            "songfs.state",
            "",
        ] {
            assert_eq!(kind(foreign).errno(), Some(libc::EOPNOTSUPP), "{foreign}");
        }
    }
}
