//! Catalog → local, the second half of a pass: folders the catalog has are made, files
//! whose catalog version the folder does not hold are downloaded through the cache and
//! placed atomically (`place.rs`), and what the catalog no longer has is removed, unless
//! it was touched here since the last pass (then the local version goes first).
//!
//! Must never: overwrite or remove a file changed here since the last pass.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::path::Path;
use std::time::SystemTime;

use super::{Fallible, PassReport, Reconciler, Tree};
use crate::catalog::Node;
use crate::content::EMPTY_HASH;
use crate::folder::manifest::Record;
use crate::folder::place;
use crate::folder::scan::{self, Seen};

impl Reconciler {
    /// Removes what the catalog no longer has, then makes its folders and places its
    /// files and links (removing first frees a name that changed kind, and a link that
    /// became a folder is gone before anything is placed under that name).
    pub(super) fn bring_in(
        &mut self,
        (dirs, files): Tree,
        held: &mut BTreeMap<String, Record>,
        r: &mut PassReport,
    ) -> Fallible<()> {
        self.remove_gone(&dirs, &files, held, r)?;
        for dir in &dirs {
            if !held.contains_key(dir) && !self.is_local_only(dir) {
                let local = self.local_path(dir);
                let made = if place::inside_real_folders(&self.root, &local) {
                    std::fs::create_dir_all(&local).map_err(|e| e.to_string())
                } else {
                    Err("a folder above it is a symlink here".to_string())
                };
                match made {
                    Ok(()) => self.record(held, dir, Record::dir())?,
                    Err(e) => r
                        .errors
                        .push(format!("cannot create {}: {e}", local.display())),
                }
            }
        }
        for (path, n) in &files {
            if let Err(e) = self.bring_file(path, n, held, r) {
                r.errors.push(format!("{path}: {e}"));
            }
        }
        Ok(())
    }

    /// What the folder holds and the catalog no longer has (or has as another kind):
    /// removed if untouched here since, forgotten either way (an edit is taken again).
    fn remove_gone(
        &mut self,
        dirs: &BTreeSet<String>,
        files: &BTreeMap<String, Node>,
        held: &mut BTreeMap<String, Record>,
        r: &mut PassReport,
    ) -> Fallible<()> {
        let gone: Vec<(String, Record)> = held
            .iter()
            .filter(|(p, rec)| {
                if rec.is_dir() {
                    !dirs.contains(*p)
                } else {
                    !files.contains_key(*p)
                }
            })
            .map(|(p, rec)| (p.clone(), rec.clone()))
            .collect();
        for (path, rec) in gone.iter().filter(|(_, rec)| !rec.is_dir()) {
            let local = self.local_path(path);
            let untouched = scan::look(&local).is_some_and(|s| rec.matches(&s));
            if untouched && place::inside_real_folders(&self.root, &local) {
                // A link goes, never what it points to.
                std::fs::remove_file(&local)
                    .map_err(|e| format!("cannot remove {}: {e}", local.display()))?;
                r.removed_here += 1;
            }
            self.forget(held, path)?;
        }
        for (path, _) in gone.iter().rev().filter(|(_, rec)| rec.is_dir()) {
            // Only if empty: anything still inside is this device's and stays.
            let local = self.local_path(path);
            let _ = std::fs::remove_dir(&local);
            if scan::look(&local).is_none() {
                self.forget(held, path)?;
            }
        }
        Ok(())
    }

    fn bring_file(
        &mut self,
        path: &str,
        n: &Node,
        held: &mut BTreeMap<String, Record>,
        r: &mut PassReport,
    ) -> Fallible<()> {
        let local = self.local_path(path);
        match (scan::look(&local), held.get(path)) {
            // The version held here, untouched (a 0-byte file recorded under a hash that
            // is not empty is placed again: the size must match too).
            (Some(s), Some(rec)) if rec.matches(&s) && rec.is_version_of(n) => return Ok(()),
            // Changed here, or new here and not taken yet: the local version goes first.
            (Some(s), Some(rec)) if !rec.matches(&s) => return Ok(()),
            (Some(_), None) => return Ok(()),
            _ => {}
        }
        if !place::inside_real_folders(&self.root, &local) {
            return Err("a folder above it is a symlink here: not placed".into());
        }
        let rec = match &n.target {
            Some(target) => {
                place_link(&local, target)?;
                Record::link(self.look_placed(&local)?, target.clone())
            }
            None => {
                self.download(path, &local, n)?;
                let hash = n.hash.clone().unwrap_or_else(|| EMPTY_HASH.to_string());
                Record::file(self.look_placed(&local)?, hash)
            }
        };
        self.record(held, path, rec)?;
        r.downloaded += 1;
        Ok(())
    }

    fn look_placed(&self, local: &Path) -> Fallible<Seen> {
        scan::look(local).ok_or_else(|| format!("{} vanished once placed", local.display()))
    }

    /// The catalog's bytes of `n` under `local`, atomically, with the catalog's mtime.
    fn download(&self, path: &str, local: &Path, n: &Node) -> Fallible<()> {
        let hash = n.hash.as_deref().unwrap_or(EMPTY_HASH);
        let source = if n.size == 0 {
            None
        } else {
            let cache = self.cache.clone();
            let (hash, size) = (hash.to_string(), n.size);
            let root = self.catalog.chunk_root(&hash).map_err(|e| e.to_string())?;
            let file = self
                .rt
                .block_on(async move {
                    let info = cache.fetch_info(&hash, size, root.as_deref()).await?;
                    cache.materialize(&info).await?;
                    Ok::<_, crate::cache::CacheError>(cache.open_complete(&hash))
                })
                .map_err(|e| format!("cannot download it: {e}"))?;
            Some(file.ok_or("its blob was evicted during the download; retried next pass")?)
        };
        let mtime: SystemTime = n.mtime();
        place::place(local, |f| {
            if let Some(mut src) = source {
                std::io::copy(&mut src, f)?;
            }
            f.flush()?;
            f.set_modified(mtime)
        })
        .map_err(|e| format!("cannot write {}: {e}", local.display()))?;
        tracing::debug!(path, size = n.size, "placed in the folder");
        Ok(())
    }
}

/// Links are placed where the OS makes them for anyone (on Windows making one needs
/// Developer Mode or an administrator, so `catalog_tree` leaves them out there).
#[cfg(unix)]
fn place_link(local: &Path, target: &str) -> Fallible<()> {
    place::place_link(local, target).map_err(|e| format!("cannot make the link: {e}"))
}

#[cfg(not(unix))]
fn place_link(_local: &Path, _target: &str) -> Fallible<()> {
    Err("symlinks are not placed in a folder on this system".into())
}
