//! Putting a file from the store into the folder so that no program ever sees half of
//! it under its real name: the bytes go to a temporary name in the same directory
//! (`.songfs-part-<name>`, so the rename never crosses file systems), are flushed to
//! disk, and the temporary file is renamed over the real name. A daemon killed mid-way
//! leaves only a temporary file, which `clear_leftovers` removes at the next start and
//! the watcher never takes (`settle::is_temporary`).
//!
//! Must never: write under the real name directly, or remove a file that is not its own
//! temporary file.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

/// The start of every temporary name this module makes.
pub const TEMP_PREFIX: &str = ".songfs-part-";

/// True for a name `temp_path` made (a download in progress, or left by a killed one).
pub fn is_own_temporary(name: &str) -> bool {
    name.starts_with(TEMP_PREFIX)
}

/// The temporary name beside `target`.
pub fn temp_path(target: &Path) -> PathBuf {
    let name = target
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    target.with_file_name(format!("{TEMP_PREFIX}{name}"))
}

/// Writes `target` from `fill`, which writes the bytes into the file it is given. On
/// any error (of `fill` too) the temporary file is removed and `target` is as it was.
pub fn place(target: &Path, fill: impl FnOnce(&mut File) -> io::Result<()>) -> io::Result<()> {
    if let Some(dir) = target.parent() {
        fs::create_dir_all(dir)?;
    }
    let tmp = temp_path(target);
    let written = (|| {
        let mut f = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .open(&tmp)?;
        fill(&mut f)?;
        f.flush()?;
        f.sync_all()?;
        drop(f);
        fs::rename(&tmp, target)
    })();
    if written.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    written
}

/// Makes `target` a symlink to `link_to` the same way: the link is made under the
/// temporary name and renamed over the real one (a file or link there is replaced whole).
#[cfg(unix)]
pub fn place_link(target: &Path, link_to: &str) -> io::Result<()> {
    if let Some(dir) = target.parent() {
        fs::create_dir_all(dir)?;
    }
    let tmp = temp_path(target);
    if fs::symlink_metadata(&tmp).is_ok() {
        fs::remove_file(&tmp)?;
    }
    std::os::unix::fs::symlink(link_to, &tmp)?;
    let renamed = fs::rename(&tmp, target);
    if renamed.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    renamed
}

/// True if every folder between `root` and `target` is a real folder or not there yet:
/// none is a symlink, so nothing written at `target` can land outside `root`.
pub fn inside_real_folders(root: &Path, target: &Path) -> bool {
    let Ok(rel) = target.strip_prefix(root) else {
        return false;
    };
    let mut at = root.to_path_buf();
    let folders: Vec<_> = rel.components().collect();
    for part in folders.iter().take(folders.len().saturating_sub(1)) {
        at.push(part);
        match fs::symlink_metadata(&at) {
            Ok(m) if m.is_dir() => {}
            Ok(_) => return false,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return true,
            Err(_) => return false,
        }
    }
    true
}

/// Removes the temporary files a killed daemon left under `dir` (recursively); returns
/// how many.
pub fn clear_leftovers(dir: &Path) -> io::Result<usize> {
    let mut n = 0;
    for entry in fs::read_dir(dir)? {
        let entry = entry?;
        let kind = entry.file_type()?;
        if kind.is_dir() {
            n += clear_leftovers(&entry.path())?;
        } else if (kind.is_file() || kind.is_symlink())
            && is_own_temporary(&entry.file_name().to_string_lossy())
        {
            fs::remove_file(entry.path())?;
            n += 1;
        }
    }
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_real_name_holds_the_old_bytes_or_all_the_new_ones() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("2026-02-12_x/x_v1.mp3");
        place(&target, |f| f.write_all(b"first version")).unwrap();
        assert_eq!(fs::read(&target).unwrap(), b"first version");

        // A download that fails half-way: the old file stays whole, no temporary left.
        let failed = place(&target, |f| {
            f.write_all(b"half of the sec")?;
            Err(io::Error::other("connection reset"))
        });
        assert!(failed.is_err());
        assert_eq!(fs::read(&target).unwrap(), b"first version");
        assert!(!temp_path(&target).exists());

        // While the bytes are written, only the temporary name holds them.
        place(&target, |f| {
            f.write_all(b"second version")?;
            assert_eq!(fs::read(&target).unwrap(), b"first version");
            assert!(temp_path(&target).exists());
            Ok(())
        })
        .unwrap();
        assert_eq!(fs::read(&target).unwrap(), b"second version");
    }

    #[cfg(unix)]
    #[test]
    fn a_link_replaces_a_file_whole_and_nothing_is_written_through_a_linked_folder() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("lib");
        let outside = dir.path().join("outside");
        fs::create_dir_all(root.join("album")).unwrap();
        fs::create_dir(&outside).unwrap();
        let latest = root.join("album/latest");
        fs::write(&latest, b"a file first").unwrap();
        place_link(&latest, "../x.mp3").unwrap();
        assert_eq!(fs::read_link(&latest).unwrap(), Path::new("../x.mp3"));
        place_link(&latest, "/elsewhere").unwrap();
        assert_eq!(fs::read_link(&latest).unwrap(), Path::new("/elsewhere"));
        assert!(!temp_path(&latest).exists());

        std::os::unix::fs::symlink(&outside, root.join("linked")).unwrap();
        assert!(inside_real_folders(&root, &root.join("album/x.mp3")));
        assert!(inside_real_folders(&root, &root.join("new/deeper/x.mp3")));
        assert!(inside_real_folders(&root, &root.join("linked")));
        assert!(!inside_real_folders(&root, &root.join("linked/x.mp3")));
        assert!(!inside_real_folders(&root, &root.join("linked/a/x.mp3")));
        assert!(!inside_real_folders(&root, &outside.join("x.mp3")));
    }

    #[test]
    fn leftovers_of_a_killed_download_are_cleared_and_nothing_else() {
        let dir = tempfile::tempdir().unwrap();
        let album = dir.path().join("album");
        fs::create_dir(&album).unwrap();
        fs::write(temp_path(&album.join("a.mp3")), b"half").unwrap();
        fs::write(album.join("a.mp3.part"), b"someone else's").unwrap();
        fs::write(album.join("b.mp3"), b"whole").unwrap();
        assert_eq!(clear_leftovers(dir.path()).unwrap(), 1);
        let mut left: Vec<String> = fs::read_dir(&album)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        left.sort();
        assert_eq!(left, ["a.mp3.part", "b.mp3"]);
    }
}
