//! One reconcile pass between the folder and the catalog (the model of the library the
//! namespace sync keeps in step with the other devices). First what changed here goes
//! into the catalog (`take.rs`), then what the catalog holds that the folder does not
//! comes out (`bring.rs`):
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
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use super::manifest::{Manifest, Record};
use super::scan::{self, Seen};
use super::settle::Settle;
use super::spelling::Spelling;
use crate::cache::Cache;
use crate::catalog::{Catalog, Kind, Node, ROOT_INO};
use crate::paths::Style;

mod bring;
mod take;

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

    /// Every folder, synced file and symlink of the catalog by path.
    fn catalog_tree(&self) -> Tree {
        // Links where the OS lets anyone make them (see `bring::place_link`).
        let files: BTreeMap<String, Node> = self
            .catalog
            .files()
            .into_iter()
            .filter(|(_, n)| n.kind == Kind::File || (cfg!(unix) && n.kind == Kind::Symlink))
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
