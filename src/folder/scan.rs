//! One look at the folder: every file and sub-folder with its size and modification
//! time, by its local path relative to the folder (`spelling.rs` says which store path
//! each stands for: `ＣON.txt` on Windows is `CON.txt` in the library). Symlinks and
//! special files are not library content and are left out, as are songfs's own
//! downloads in progress (`place.rs`).
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
    pub size: u64,
    pub mtime_ns: i64,
}

impl Seen {
    pub fn of(meta: &std::fs::Metadata) -> Seen {
        Seen {
            dir: meta.is_dir(),
            size: if meta.is_dir() { 0 } else { meta.len() },
            mtime_ns: meta.modified().map(time_to_ns).unwrap_or(0),
        }
    }
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
        if !(kind.is_file() || kind.is_dir()) {
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
    fn a_look_lists_files_and_folders_but_not_downloads_in_progress() {
        let d = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(d.path().join("album/empty")).unwrap();
        std::fs::write(d.path().join("album/x.mp3"), b"12345").unwrap();
        std::fs::write(
            super::super::place::temp_path(&d.path().join("album/y.mp3")),
            b"half",
        )
        .unwrap();
        let seen = scan(d.path()).unwrap();
        let paths: Vec<&str> = seen.keys().map(String::as_str).collect();
        assert_eq!(paths, ["album", "album/empty", "album/x.mp3"]);
        assert_eq!(seen["album/x.mp3"].size, 5);
        assert!(seen["album/empty"].dir);
    }
}
