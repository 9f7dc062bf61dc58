//! One look at the folder: every file, sub-folder and symlink with its size and
//! modification time, by its local path relative to the folder (`spelling.rs` says which
//! store path each stands for: `ＣON.txt` on Windows is `CON.txt` in the library). Links
//! are looked at, never followed (a link to a folder is one entry, not its content).
//! Special files are not library content and are left out, as are songfs's own downloads
//! in progress (`place.rs`).
//!
//! Must never: report a partial listing as complete (an unreadable folder fails the
//! whole look, or its files would be taken as deleted).

use std::collections::BTreeMap;
use std::path::Path;

use crate::catalog::time_to_ns;

/// What one look saw at one path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Seen {
    pub dir: bool,
    /// A symlink (its size is its target's length).
    pub link: bool,
    pub size: u64,
    pub mtime_ns: i64,
}

impl Seen {
    /// From `symlink_metadata` (a link's own metadata, not its target's).
    pub fn of(meta: &std::fs::Metadata) -> Seen {
        Seen {
            dir: meta.is_dir(),
            link: meta.file_type().is_symlink(),
            size: if meta.is_dir() { 0 } else { meta.len() },
            mtime_ns: meta.modified().map(time_to_ns).unwrap_or(0),
        }
    }
}

/// What is at `local` now, without following a link (None: nothing, or unreadable).
pub fn look(local: &Path) -> Option<Seen> {
    std::fs::symlink_metadata(local).ok().map(|m| Seen::of(&m))
}

/// The folder's content, local path (relative, `/`-separated) → what was seen.
pub fn scan(root: &Path) -> std::io::Result<BTreeMap<String, Seen>> {
    let mut out = BTreeMap::new();
    let walk = walkdir::WalkDir::new(root)
        .follow_links(false)
        .min_depth(1)
        .into_iter()
        .filter_entry(|e| !super::place::is_own_temporary(&e.file_name().to_string_lossy()));
    for entry in walk {
        let entry = entry.map_err(|e| {
            let path = e.path().map(Path::to_path_buf).unwrap_or_default();
            std::io::Error::other(format!("cannot read {}: {e}", path.display()))
        })?;
        let kind = entry.file_type();
        if !(kind.is_file() || kind.is_dir() || kind.is_symlink()) {
            continue;
        }
        let Some(path) = relative(root, entry.path()) else {
            continue;
        };
        let meta = entry.metadata().map_err(std::io::Error::other)?;
        out.insert(path, Seen::of(&meta));
    }
    Ok(out)
}

/// `local` relative to `root`, `/`-separated (None for a name that is not UTF-8).
fn relative(root: &Path, local: &Path) -> Option<String> {
    let rel = local.strip_prefix(root).ok()?;
    let parts: Option<Vec<&str>> = rel.components().map(|c| c.as_os_str().to_str()).collect();
    Some(parts?.join("/"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_look_lists_files_folders_and_links_but_not_downloads_in_progress() {
        let d = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(d.path().join("album/empty")).unwrap();
        std::fs::write(d.path().join("album/x.mp3"), b"12345").unwrap();
        std::fs::write(
            super::super::place::temp_path(&d.path().join("album/y.mp3")),
            b"half",
        )
        .unwrap();
        #[cfg(unix)]
        {
            std::os::unix::fs::symlink("x.mp3", d.path().join("album/latest")).unwrap();
            std::os::unix::fs::symlink("/", d.path().join("album/root")).unwrap();
        }
        let seen = scan(d.path()).unwrap();
        let paths: Vec<&str> = seen.keys().map(String::as_str).collect();
        if cfg!(unix) {
            // The link to / is one entry: the walk does not go through it.
            assert_eq!(
                paths,
                [
                    "album",
                    "album/empty",
                    "album/latest",
                    "album/root",
                    "album/x.mp3"
                ]
            );
            assert!(seen["album/latest"].link && !seen["album/latest"].dir);
            assert_eq!(seen["album/latest"].size, 5);
            assert!(seen["album/root"].link && !seen["album/root"].dir);
        } else {
            assert_eq!(paths, ["album", "album/empty", "album/x.mp3"]);
        }
        assert_eq!(seen["album/x.mp3"].size, 5);
        assert!(!seen["album/x.mp3"].link);
        assert!(seen["album/empty"].dir);
    }
}
