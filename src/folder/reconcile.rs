//! One reconcile pass between the folder and the catalog (the model of the library the
//! namespace sync keeps in step with the other devices). First what changed here goes
//! into the catalog, then what the catalog holds that the folder does not comes out:
//!
//! - local → catalog: a new or changed file, once settled (`settle.rs`: same size and
//!   mtime across two looks, and not open for writing where the OS tells), is copied
//!   into the cache's staging folder, hashed and committed as a new blob exactly as the
//!   mount's write commits one (`Cache::commit_new`: durable upload queue), then named by
//!   the catalog. A path that vanished since the last pass is deleted from the catalog
//!   (a rename is that delete plus the new path; content addressing makes the new path
//!   cost no upload when its blob is still cached). New folders are created, vanished
//!   ones removed.
//! - catalog → local: a file whose catalog hash differs from what the folder held
//!   (`manifest.rs`), and which was not touched here since, is downloaded through the
//!   cache and placed atomically (`place.rs`); a file the catalog no longer has is
//!   removed if it was not touched here since (an edit beats a remote delete: it is
//!   taken again at the next pass).
//!
//! Conflicts: the namespace sync makes the conflict copies under `.conflicts/` as for
//! the mount, because a local edit is in the catalog before the cycle that would receive
//! a remote one. The one case the folder adds — a remote version applied to the catalog
//! while the local file was being edited (not taken yet) — keeps the remote version as a
//! conflict copy too when the local edit is taken; nothing is overwritten.
//!
//! Names matching the local-only patterns (the app's database backups) are never taken:
//! they stay in the folder only. Must never: overwrite or delete a file changed here since
//! the last pass, take a file still being written, or take a partial listing as deletes.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use super::manifest::{Manifest, Record};
use super::place;
use super::scan::{self, Seen};
use super::settle::{self, Settle};
use super::spelling::Spelling;
use crate::cache::Cache;
use crate::catalog::{ns_to_time, Catalog, CatalogError, Kind, Node, ROOT_INO};
use crate::content::{self, EMPTY_HASH};
use crate::paths::Style;
use crate::sync::namespace::{conflict_copy_path, ensure_dirs};

/// How long a file must stay unchanged before it is taken.
pub const SETTLE_QUIET: Duration = Duration::from_secs(1);

/// What a pass did (logged; the counts make the tests' and the log's story).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct PassReport {
    /// Local files taken into the catalog (new or changed).
    pub taken: u64,
    /// Local deletes sent to the catalog.
    pub deleted_in_catalog: u64,
    /// Files placed into the folder from the catalog.
    pub downloaded: u64,
    /// Local files removed because the catalog no longer has them.
    pub removed_here: u64,
    /// Local files changed but not settled yet (looked at again after `SETTLE_QUIET`).
    pub waiting: u64,
    /// Remote versions kept under `.conflicts/` by this pass.
    pub conflict_copies: u64,
    pub errors: Vec<String>,
}

impl PassReport {
    pub fn changed_anything(&self) -> bool {
        self.taken + self.deleted_in_catalog + self.downloaded + self.removed_here > 0
    }
}

/// The reconciler of one folder. Not thread-safe on its own: the daemon holds it in a
/// mutex shared by the watcher thread and the sync loop.
pub struct Reconciler {
    root: PathBuf,
    catalog: Arc<Catalog>,
    cache: Arc<Cache>,
    rt: tokio::runtime::Handle,
    manifest: Manifest,
    settle: Settle,
    local_only: Vec<glob::Pattern>,
    /// The folder's file system's naming rules (`Style::HOST` unless told otherwise).
    style: Style,
    /// This pass's local spelling of each store path.
    spelling: Spelling,
}

type Fallible<T> = Result<T, String>;

/// The catalog's folders and files by store path.
type Tree = (BTreeSet<String>, BTreeMap<String, Node>);

impl Reconciler {
    pub fn new(
        root: PathBuf,
        catalog: Arc<Catalog>,
        cache: Arc<Cache>,
        rt: tokio::runtime::Handle,
        mount_db: &Path,
        local_only: Vec<glob::Pattern>,
        style: Style,
    ) -> rusqlite::Result<Reconciler> {
        Ok(Reconciler {
            root,
            catalog,
            cache,
            rt,
            manifest: Manifest::open(mount_db)?,
            settle: Settle::new(SETTLE_QUIET),
            local_only,
            style,
            spelling: Spelling::new(style, [], &BTreeMap::new()),
        })
    }

    /// True while some local file waits to settle (the watcher looks again soon).
    pub fn has_waiting(&self) -> bool {
        self.settle.waiting().next().is_some()
    }

    /// One pass: local → catalog, then catalog → local.
    pub fn pass(&mut self) -> PassReport {
        let mut r = PassReport::default();
        if let Err(e) = self.run(&mut r) {
            r.errors.push(e);
        }
        if r.changed_anything() || !r.errors.is_empty() || r.conflict_copies > 0 {
            tracing::info!(?r, folder = %self.root.display(), "folder reconciled");
        }
        r
    }

    fn run(&mut self, r: &mut PassReport) -> Fallible<()> {
        let found = scan::scan(&self.root)
            .map_err(|e| format!("cannot look at {}: {e}", self.root.display()))?;
        let mut held = self.manifest.all().map_err(|e| e.to_string())?;
        self.respell(&held);
        let seen: BTreeMap<String, Seen> = found
            .into_iter()
            .map(|(local, s)| (self.spelling.store(&local), s))
            .collect();
        self.send_deletes(&seen, &mut held, r)?;
        self.take_changes(&seen, &mut held, r)?;
        // What was taken is held now, under the spelling it was found by.
        let tree = self.respell(&held);
        self.bring_in(tree, &mut held, r)?;
        Ok(())
    }

    /// Spells this pass's paths; returns the catalog's tree it spelled.
    fn respell(&mut self, held: &BTreeMap<String, Record>) -> Tree {
        let (dirs, files) = self.catalog_tree();
        let paths = dirs.iter().chain(files.keys()).map(String::as_str);
        self.spelling = Spelling::new(self.style, paths, held);
        (dirs, files)
    }

    /// The local file that stands for a store path.
    fn local_path(&self, path: &str) -> PathBuf {
        self.spelling.local_path(&self.root, path)
    }

    fn is_local_only(&self, path: &str) -> bool {
        let name = path.rsplit('/').next().unwrap_or(path);
        crate::config::name_is_local_only(&self.local_only, name)
    }

    fn record(
        &self,
        held: &mut BTreeMap<String, Record>,
        path: &str,
        mut rec: Record,
    ) -> Fallible<()> {
        rec.local = Some(self.spelling.local_leaf(path));
        self.manifest.put(path, &rec).map_err(|e| e.to_string())?;
        held.insert(path.to_string(), rec);
        Ok(())
    }

    fn forget(&mut self, held: &mut BTreeMap<String, Record>, path: &str) -> Fallible<()> {
        self.manifest.remove(path).map_err(|e| e.to_string())?;
        held.remove(path);
        self.settle.forget(path);
        Ok(())
    }

    // ---- local → catalog ----

    /// Paths the folder held at the last pass and no longer holds: deleted here. Files
    /// first, then folders deepest first.
    fn send_deletes(
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
                Ok(n) if n.kind == Kind::File && n.hash == rec.hash => {
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
    fn take_changes(
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
                if !held.contains_key(path) {
                    ensure_dirs(&self.catalog, path).map_err(|e| format!("{path}: {e}"))?;
                    self.record(held, path, Record::dir())?;
                }
                continue;
            }
            if let Some(rec) = held.get(path) {
                if rec.size == s.size && rec.mtime_ns == s.mtime_ns {
                    self.settle.forget(path);
                    continue;
                }
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
        let now = std::fs::metadata(local).map(|m| Seen::of(&m));
        if now.ok() != Some(s) || info.size != s.size {
            // Changed while copied: the next look starts the wait again.
            return Ok(());
        }
        let prev = held.get(path).cloned();
        let rec = Record {
            size: s.size,
            mtime_ns: s.mtime_ns,
            hash: Some(info.hash.clone()),
            local: None,
        };
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
            Ok(n) if n.kind == Kind::File => {
                let held_hash = prev.as_ref().and_then(|p| p.hash.clone());
                if n.hash.as_deref() != Some(info.hash.as_str()) && n.hash != held_hash {
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
        let hash = n.hash.as_deref().unwrap_or(EMPTY_HASH);
        self.catalog
            .upsert_file(&copy, hash, n.size, n.mtime_ns, n.mode)
            .map_err(|e| format!("cannot keep the other version as {copy}: {e}"))?;
        tracing::warn!(path, copy, "edited here while another device changed it: the other version is kept under .conflicts/");
        Ok(())
    }

    // ---- catalog → local ----

    /// Downloads what the catalog has and the folder does not; removes what the catalog
    /// no longer has.
    fn bring_in(
        &mut self,
        (dirs, files): Tree,
        held: &mut BTreeMap<String, Record>,
        r: &mut PassReport,
    ) -> Fallible<()> {
        for dir in &dirs {
            if !held.contains_key(dir) && !self.is_local_only(dir) {
                let local = self.local_path(dir);
                std::fs::create_dir_all(&local)
                    .map_err(|e| format!("cannot create {}: {e}", local.display()))?;
                self.record(held, dir, Record::dir())?;
            }
        }
        for (path, n) in &files {
            if let Err(e) = self.bring_file(path, n, held, r) {
                r.errors.push(format!("{path}: {e}"));
            }
        }
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
            let untouched = std::fs::metadata(&local)
                .map(|m| Seen::of(&m))
                .is_ok_and(|s| s.size == rec.size && s.mtime_ns == rec.mtime_ns);
            if untouched {
                std::fs::remove_file(&local)
                    .map_err(|e| format!("cannot remove {}: {e}", local.display()))?;
                r.removed_here += 1;
            }
            // Changed here (or already gone): no longer held; an edit is taken again.
            self.forget(held, path)?;
        }
        for (path, _) in gone.iter().rev().filter(|(_, rec)| rec.is_dir()) {
            // Only if empty: anything still inside is this device's and stays.
            let _ = std::fs::remove_dir(self.local_path(path));
            if !self.local_path(path).exists() {
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
        let here = std::fs::metadata(&local).ok().map(|m| Seen::of(&m));
        let rec = held.get(path);
        let untouched = |rec: &Record, s: &Seen| rec.size == s.size && rec.mtime_ns == s.mtime_ns;
        match (here, rec) {
            // Same hash, and the size to match (a 0-byte file recorded under a hash
            // that is not empty is placed again).
            (Some(s), Some(rec))
                if untouched(rec, &s) && rec.hash == n.hash && rec.size == n.size =>
            {
                return Ok(())
            }
            // Changed here, or new here and not taken yet: the local version goes first.
            (Some(s), Some(rec)) if !untouched(rec, &s) => return Ok(()),
            (Some(_), None) => return Ok(()),
            _ => {}
        }
        self.download(path, &local, n)?;
        let s = std::fs::metadata(&local)
            .map(|m| Seen::of(&m))
            .map_err(|e| e.to_string())?;
        self.record(
            held,
            path,
            Record {
                size: s.size,
                mtime_ns: s.mtime_ns,
                hash: n.hash.clone(),
                local: None,
            },
        )?;
        r.downloaded += 1;
        Ok(())
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

    /// Every folder and synced file of the catalog by path (local-only entries left out).
    fn catalog_tree(&self) -> Tree {
        // Symlinks from the mount are not placed in the folder yet (doc/SEMANTICS.md).
        let files: BTreeMap<String, Node> = self
            .catalog
            .files()
            .into_iter()
            .filter(|(_, n)| n.kind == Kind::File)
            .collect();
        let mut dirs = BTreeSet::new();
        let mut stack = vec![(ROOT_INO, String::new())];
        while let Some((ino, prefix)) = stack.pop() {
            for c in self.catalog.children(ino).unwrap_or_default() {
                if c.is_dir() {
                    let p = if prefix.is_empty() {
                        c.name.clone()
                    } else {
                        format!("{prefix}/{}", c.name)
                    };
                    dirs.insert(p.clone());
                    stack.push((c.ino, p));
                }
            }
        }
        (dirs, files)
    }
}

fn wall_ms() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}
