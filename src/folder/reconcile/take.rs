//! Local → catalog, the first half of a pass: paths the folder no longer holds are
//! deleted in the catalog, new folders and links are made there, and new or changed
//! files are taken once settled (copied to staging, hashed, committed to the cache's
//! upload queue, then named by the catalog, as the mount's write does).
//!
//! Must never: take a file still being written, send a delete for a version the folder
//! never held, or put a remote version that arrived meanwhile anywhere but `.conflicts/`.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Instant;

use super::{wall_ms, Fallible, PassReport, Reconciler};
use crate::catalog::{ns_to_time, CatalogError, Kind, Node};
use crate::content::{self, EMPTY_HASH};
use crate::folder::manifest::Record;
use crate::folder::scan::{self, Seen};
use crate::folder::settle;
use crate::sync::namespace::{conflict_copy_path, ensure_dirs};

impl Reconciler {
    /// Paths the folder held at the last pass and no longer holds: deleted here. Files
    /// first, then folders deepest first.
    pub(super) fn send_deletes(
        &mut self,
        seen: &BTreeMap<String, Seen>,
        held: &mut BTreeMap<String, Record>,
        r: &mut PassReport,
    ) -> Fallible<()> {
        let gone: Vec<(String, Record)> = held
            .iter()
            .filter(|(p, _)| !seen.contains_key(*p))
            .map(|(p, rec)| (p.clone(), rec.clone()))
            .collect();
        for (path, rec) in gone.iter().filter(|(_, rec)| !rec.is_dir()) {
            match self.catalog.resolve(path) {
                // Still the version the folder held: the delete travels.
                Ok(n) if rec.is_version_of(&n) => {
                    self.catalog
                        .unlink(n.parent, &n.name)
                        .map_err(|e| e.to_string())?;
                    r.deleted_in_catalog += 1;
                }
                // A newer version arrived meanwhile: it wins over the delete and is
                // downloaded below (the path is no longer held).
                _ => {}
            }
            self.forget(held, path)?;
        }
        for (path, _) in gone.iter().rev().filter(|(_, rec)| rec.is_dir()) {
            if let Ok(n) = self.catalog.resolve(path) {
                if n.is_dir() {
                    // Not empty in the catalog (something arrived in it): it stays, and
                    // comes back here below.
                    match self.catalog.rmdir(n.parent, &n.name) {
                        Ok(_) | Err(CatalogError::NotEmpty) => {}
                        Err(e) => return Err(e.to_string()),
                    }
                }
            }
            self.forget(held, path)?;
        }
        Ok(())
    }

    /// New and changed local files and folders, each file taken once settled.
    pub(super) fn take_changes(
        &mut self,
        seen: &BTreeMap<String, Seen>,
        held: &mut BTreeMap<String, Record>,
        r: &mut PassReport,
    ) -> Fallible<()> {
        let now = Instant::now();
        for (path, s) in seen {
            if self.is_local_only(path) || settle::is_temporary(path) {
                continue;
            }
            if s.dir {
                if !held.get(path).is_some_and(Record::is_dir) {
                    ensure_dirs(&self.catalog, path).map_err(|e| format!("{path}: {e}"))?;
                    self.record(held, path, Record::dir())?;
                }
                continue;
            }
            if let Some(rec) = held.get(path) {
                if rec.matches(s) {
                    self.settle.forget(path);
                    continue;
                }
            }
            if s.link {
                // A link is made whole by one call: nothing to wait for.
                if let Err(e) = self.take_link(path, *s, held, r) {
                    r.errors.push(format!("{path}: {e}"));
                }
                continue;
            }
            let look = settle::Seen {
                size: s.size,
                mtime: ns_to_time(s.mtime_ns),
            };
            let local = self.local_path(path);
            if !self.settle.observe(path, look, now) {
                r.waiting += 1;
                continue;
            }
            if crate::os::open_for_writing(&local) == Some(true) {
                // Settled in size and time but still open by its writer: wait again.
                self.settle.observe(path, look, now);
                r.waiting += 1;
                continue;
            }
            if let Err(e) = self.take(path, *s, held, r) {
                r.errors.push(format!("{path}: {e}"));
            }
        }
        Ok(())
    }

    /// Takes one local symlink into the catalog, its target verbatim.
    fn take_link(
        &mut self,
        path: &str,
        s: Seen,
        held: &mut BTreeMap<String, Record>,
        r: &mut PassReport,
    ) -> Fallible<()> {
        let local = self.local_path(path);
        let target = std::fs::read_link(&local)
            .map_err(|e| format!("cannot read the link: {e}"))?
            .into_os_string()
            .into_string()
            .map_err(|_| "its target is not UTF-8: it is not synced")?;
        let rec = Record::link(s, target.clone());
        let prev = held.get(path).cloned();
        if prev.as_ref().and_then(|p| p.target.as_deref()) == Some(target.as_str()) {
            // Made again with the same target: nothing to send.
            return self.record(held, path, rec);
        }
        match self.catalog.resolve(path) {
            Ok(n) if n.is_dir() => {
                return Err("the library holds a folder of this name: rename the link".into())
            }
            Ok(n)
                if n.target.as_deref() != Some(target.as_str())
                    && !prev.as_ref().is_some_and(|p| p.is_version_of(&n)) =>
            {
                self.keep_remote_version(path, &n)?;
                r.conflict_copies += 1;
            }
            _ => {}
        }
        self.catalog
            .upsert_symlink(path, &target, s.mtime_ns)
            .map_err(|e| format!("cannot record it in the library: {e}"))?;
        r.taken += 1;
        self.record(held, path, rec)
    }

    /// Takes one settled local file into the cache and the catalog.
    fn take(
        &mut self,
        path: &str,
        s: Seen,
        held: &mut BTreeMap<String, Record>,
        r: &mut PassReport,
    ) -> Fallible<()> {
        let local = self.local_path(path);
        // Hash a copy, not the file: what is committed is exactly what was hashed, even
        // if a program writes the file again meanwhile.
        let staged = self.cache.staging_dir().join(format!(
            "folder-{}-{}",
            std::process::id(),
            rand::random::<u64>()
        ));
        std::fs::copy(&local, &staged).map_err(|e| format!("cannot copy it: {e}"))?;
        let outcome = self.commit_copy(path, &local, &staged, s, held, r);
        let _ = std::fs::remove_file(&staged);
        outcome
    }

    fn commit_copy(
        &mut self,
        path: &str,
        local: &Path,
        staged: &Path,
        s: Seen,
        held: &mut BTreeMap<String, Record>,
        r: &mut PassReport,
    ) -> Fallible<()> {
        let info = content::hash_file(staged).map_err(|e| format!("cannot hash it: {e}"))?;
        let now = scan::look(local);
        if now != Some(s) || info.size != s.size {
            // Changed while copied: the next look starts the wait again.
            return Ok(());
        }
        let prev = held.get(path).cloned();
        let rec = Record::file(s, info.hash.clone());
        if prev.as_ref().and_then(|p| p.hash.as_deref()) == Some(info.hash.as_str()) {
            // Touched, same bytes: nothing to send.
            return self.record(held, path, rec);
        }
        if info.size > 0 {
            self.cache
                .commit_new(staged, &info)
                .map_err(|e| format!("cannot commit it to the cache: {e}"))?;
            // As the mount's write does: the root that binds the blob's chunk record.
            self.catalog
                .set_chunk_root(&info.hash, &info.chunk_root())
                .map_err(|e| e.to_string())?;
        }
        match self.catalog.resolve(path) {
            Ok(n) if !n.is_dir() => {
                let taken_is_there =
                    n.kind == Kind::File && n.hash.as_deref() == Some(info.hash.as_str());
                if !taken_is_there && !prev.as_ref().is_some_and(|p| p.is_version_of(&n)) {
                    // A version from another device reached the catalog while this file
                    // was edited here: keep it beside, never under the name.
                    self.keep_remote_version(path, &n)?;
                    r.conflict_copies += 1;
                }
            }
            Ok(n) if n.is_dir() => {
                return Err("the library holds a folder of this name: rename the file".into())
            }
            _ => {}
        }
        let mode = 0o644;
        self.catalog
            .upsert_file(path, &info.hash, info.size, s.mtime_ns, mode)
            .map_err(|e| format!("cannot record it in the library: {e}"))?;
        r.taken += 1;
        self.record(held, path, rec)
    }

    fn keep_remote_version(&self, path: &str, n: &Node) -> Fallible<()> {
        let copy = conflict_copy_path(path, "another device", wall_ms());
        let kept = match &n.target {
            Some(target) => self.catalog.upsert_symlink(&copy, target, n.mtime_ns),
            None => {
                let hash = n.hash.as_deref().unwrap_or(EMPTY_HASH);
                self.catalog
                    .upsert_file(&copy, hash, n.size, n.mtime_ns, n.mode)
            }
        };
        kept.map_err(|e| format!("cannot keep the other version as {copy}: {e}"))?;
        tracing::warn!(path, copy, "edited here while another device changed it: the other version is kept under .conflicts/");
        Ok(())
    }
}
