//! The namespace's row model: one file version as it travels (`FileValue`), what a cycle
//! did, the entries the kernel may hold stale, and the naming of conflict copies and
//! which remote paths are safe to take. Pure: must never touch the catalog or the store.

use serde::{Deserialize, Serialize};

use super::CONFLICTS_DIR;
use crate::catalog::Node;
use crate::content;

/// One file version as it travels: what a path names.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileValue {
    pub hash: String,
    pub size: u64,
    pub mtime_ns: i64,
    pub mode: u32,
    /// Name of the device that wrote it (for conflict copy names).
    pub by: String,
    /// `BlobInfo::chunk_root` of the blob: binds the chunk-hash record in the store to
    /// this entry, so a record rewritten to match altered bytes is refused before a byte
    /// is served. None in entries from before it travelled.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub chunk_root: Option<String>,
    /// A symlink's target, verbatim (relative stays relative, absolute is kept as it
    /// is). A symlink travels with the empty blob's hash and size 0, so a device from
    /// before symlinks travelled shows an empty file rather than failing on a read.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
}

impl FileValue {
    /// Same bytes (or link target) and mode as the entry here.
    pub(super) fn same_content(&self, n: &Node) -> bool {
        let same = match &n.target {
            Some(t) => self.target.as_ref() == Some(t),
            None => self.target.is_none() && node_hash(n) == self.hash && n.size == self.size,
        };
        same && n.mode == self.mode
    }
    pub(super) fn same_as(&self, n: &Node) -> bool {
        self.same_content(n) && n.mtime_ns == self.mtime_ns
    }
}

/// What a namespace cycle did.
#[derive(Debug, Default, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct NsSummary {
    /// Paths this device exported (created/changed) and deleted.
    pub sent_files: u64,
    pub sent_deletes: u64,
    /// Files not exported yet because their blob is still uploading.
    pub waiting_for_upload: u64,
    /// Files not exported yet because they are open with unsaved writes.
    #[serde(default)]
    pub being_written: u64,
    /// Folders created or removed here and sent; received from the others.
    #[serde(default)]
    pub sent_dirs: u64,
    #[serde(default)]
    pub received_dirs: u64,
    /// Remote changes applied here.
    pub received_files: u64,
    pub received_deletes: u64,
    /// Conflict copies made.
    pub conflict_copies: u64,
    pub logs_sent: u64,
    pub logs_applied: u64,
    pub errors: Vec<String>,
    /// Remote entries refused on arrival (`admit.rs`), with the log each came from.
    #[serde(default)]
    pub refused: Vec<super::admit::Refused>,
}

/// An entry the kernel may hold stale: `(parent inode, name)`, and the inode itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Touched {
    pub parent: u64,
    pub name: String,
    pub ino: Option<u64>,
}

pub(super) fn node_hash(n: &Node) -> String {
    n.hash
        .clone()
        .unwrap_or_else(|| content::EMPTY_HASH.to_string())
}

/// True for paths inside the conflict-copy folder (never a conflict copy of those).
pub fn is_conflict_copy(path: &str) -> bool {
    path == CONFLICTS_DIR || path.starts_with(&format!("{CONFLICTS_DIR}/"))
}

/// `<dir>/<name>.<ext>` → `.conflicts/<dir>/<name> (from <device> <date>).<ext>`.
pub fn conflict_copy_path(path: &str, device_name: &str, wall_ms: u64) -> String {
    let (dir, file) = match path.rsplit_once('/') {
        Some((d, f)) => (Some(d), f),
        None => (None, path),
    };
    let (stem, ext) = match file.rsplit_once('.') {
        Some((s, e)) if !s.is_empty() => (s, Some(e)),
        _ => (file, None),
    };
    let date = chrono::DateTime::from_timestamp_millis(wall_ms as i64)
        .unwrap_or_default()
        .format("%Y-%m-%d %H-%M-%S");
    let device: String = device_name
        .chars()
        .map(|c| if c == '/' || c == '\0' { '_' } else { c })
        .collect();
    let name = match ext {
        Some(e) => format!("{stem} (from {device} {date}).{e}"),
        None => format!("{stem} (from {device} {date})"),
    };
    match dir {
        Some(d) => format!("{CONFLICTS_DIR}/{d}/{name}"),
        None => format!("{CONFLICTS_DIR}/{name}"),
    }
}

pub(super) fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// No `..`, no empty parts, no absolute paths, no NUL: a path from another device stays
/// inside the mount.
pub(super) fn safe_path(path: &str) -> bool {
    !path.is_empty()
        && !path.starts_with('/')
        && !path.contains('\0')
        && path
            .split('/')
            .all(|p| !p.is_empty() && p != "." && p != ".." && p.len() <= crate::catalog::NAME_MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conflict_copies_keep_folder_and_extension() {
        let p = conflict_copy_path("2026-02-12_song/song_v1.mp3", "laptop", 0);
        assert_eq!(
            p,
            ".conflicts/2026-02-12_song/song_v1 (from laptop 1970-01-01 00-00-00).mp3"
        );
        assert_eq!(
            conflict_copy_path("README", "a/b", 0),
            ".conflicts/README (from a_b 1970-01-01 00-00-00)"
        );
        assert!(is_conflict_copy(&p));
        assert!(!is_conflict_copy(".conflictsx/a"));
    }

    #[test]
    fn unsafe_paths_are_refused() {
        assert!(safe_path("a/b.mp3"));
        for p in ["", "/etc/passwd", "a/../b", "a//b", "./a"] {
            assert!(!safe_path(p), "{p}");
        }
    }
}
