//! The one extended attribute the mount answers: `user.songfs.state`, what a file browser
//! or a script reads to know where a file's bytes are (`remote`, `partial`, `cached`,
//! `pinned`, `uploading`, `local-only`). Answered from memory: never a store round trip.

use crate::cache::{BlobState, Cache};
use crate::catalog::Node;

/// The attribute's name.
pub const STATE_XATTR: &str = "user.songfs.state";

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
