//! What `songfs status PATH` and `songfs conflicts` can know with no daemon running: the
//! namespace catalog (`ns_inodes`) and the cache index (`cache_blobs`, `cache_pins`) in
//! `mount.db`, and the cache's data files, as the last mount or sync left them.
//!
//! Must never write: it opens `mount.db` read-only and never creates it (only the one-time
//! move of an old layout, `db::mount_db`, writes), so asking about a device changes
//! nothing on it (the daemon's own recovery runs at the next mount).

use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};

use rusqlite::{Connection, OpenFlags, OptionalExtension};
use serde::Serialize;

use crate::catalog::ROOT_INO;
use crate::config::Home;

#[derive(Debug, thiserror::Error)]
pub enum OnDiskError {
    #[error("{0} does not exist: this device has no namespace yet (run `songfs sync` or `songfs mount DIR`)")]
    NoState(PathBuf),
    #[error("cannot read {path}: {source}")]
    Db {
        path: PathBuf,
        #[source]
        source: rusqlite::Error,
    },
    #[error("{0}: not in this device's copy of the namespace (as of its last sync; `songfs sync` fetches the latest)")]
    NotFound(String),
}

/// One file as the last mount or sync left it.
#[derive(Debug, Clone, Serialize)]
pub struct DiskFile {
    /// Relative to the mount root.
    pub path: String,
    pub size: u64,
    /// remote, partial, cached, pinned, uploading, local-only (as the daemon says them).
    pub state: &'static str,
    /// Always false: read from disk, not from a running mount.
    pub live: bool,
}

struct Row {
    parent: u64,
    name: String,
    is_dir: bool,
    hash: Option<String>,
    size: u64,
    local_only: bool,
}

/// The catalog and cache index of one `$SONGFS_HOME`, loaded once.
pub struct OnDisk {
    rows: BTreeMap<u64, Row>,
    children: BTreeMap<u64, Vec<u64>>,
    /// hash -> (dirty, complete, chunks present)
    blobs: BTreeMap<String, (bool, bool, bool)>,
    pins: HashSet<String>,
    blobs_dir: PathBuf,
}

fn open(path: &Path) -> Result<Connection, OnDiskError> {
    if !path.exists() {
        return Err(OnDiskError::NoState(path.to_path_buf()));
    }
    let db = |source| OnDiskError::Db {
        path: path.to_path_buf(),
        source,
    };
    let c = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(db)?;
    c.busy_timeout(std::time::Duration::from_secs(5))
        .map_err(db)?;
    Ok(c)
}

fn has_table(c: &Connection, name: &str) -> rusqlite::Result<bool> {
    Ok(c.query_row(
        "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?1",
        [name],
        |_| Ok(()),
    )
    .optional()?
    .is_some())
}

impl OnDisk {
    pub fn load(home: &Home) -> Result<OnDisk, OnDiskError> {
        let path = crate::db::mount_db(home).unwrap_or_else(|_| home.mount_db_path());
        let c = open(&path)?;
        let db = |source| OnDiskError::Db {
            path: path.clone(),
            source,
        };
        let mut out = OnDisk {
            rows: BTreeMap::new(),
            children: BTreeMap::new(),
            blobs: BTreeMap::new(),
            pins: HashSet::new(),
            blobs_dir: home.cache_dir().join("blobs"),
        };
        // One read transaction: the catalog and the cache index as of one moment.
        c.execute_batch("BEGIN").map_err(db)?;
        if has_table(&c, "ns_inodes").map_err(db)? {
            let mut stmt = c
                .prepare("SELECT ino, parent, name, kind, hash, size, local_only FROM ns_inodes")
                .map_err(db)?;
            let rows = stmt
                .query_map([], |r| {
                    Ok((
                        r.get::<_, i64>(0)? as u64,
                        Row {
                            parent: r.get::<_, i64>(1)? as u64,
                            name: r.get(2)?,
                            is_dir: r.get::<_, String>(3)? == "dir",
                            hash: r.get(4)?,
                            size: r.get::<_, i64>(5)? as u64,
                            local_only: r.get::<_, i64>(6)? != 0,
                        },
                    ))
                })
                .map_err(db)?;
            for row in rows {
                let (ino, row) = row.map_err(db)?;
                if ino != ROOT_INO {
                    out.children.entry(row.parent).or_default().push(ino);
                }
                out.rows.insert(ino, row);
            }
        }
        if has_table(&c, "cache_blobs").map_err(db)? {
            let mut stmt = c
                .prepare("SELECT hash, dirty, complete, present FROM cache_blobs")
                .map_err(db)?;
            let rows = stmt
                .query_map([], |r| {
                    let present: Vec<u8> = r.get(3)?;
                    Ok((
                        r.get::<_, String>(0)?,
                        (r.get(1)?, r.get(2)?, present.iter().any(|b| *b != 0)),
                    ))
                })
                .map_err(db)?;
            for row in rows {
                let (h, v) = row.map_err(db)?;
                out.blobs.insert(h, v);
            }
        }
        if has_table(&c, "cache_pins").map_err(db)? {
            let mut stmt = c.prepare("SELECT hash FROM cache_pins").map_err(db)?;
            let rows = stmt.query_map([], |r| r.get(0)).map_err(db)?;
            for row in rows {
                out.pins.insert(row.map_err(db)?);
            }
        }
        c.execute_batch("COMMIT").map_err(db)?;
        Ok(out)
    }

    /// True once a mount or a sync has made the namespace here.
    pub fn has_namespace(&self) -> bool {
        self.rows.contains_key(&ROOT_INO)
    }

    fn resolve(&self, path: &str) -> Option<u64> {
        let mut cur = ROOT_INO;
        self.rows.get(&cur)?;
        for part in path.split('/').filter(|p| !p.is_empty()) {
            cur = *self
                .children
                .get(&cur)?
                .iter()
                .find(|i| self.rows[*i].name == part)?;
        }
        Some(cur)
    }

    /// The files at `path` (relative to the mount root; a file, or every file under a
    /// folder), in path order, with their state.
    pub fn files_under(&self, path: &str) -> Result<Vec<DiskFile>, OnDiskError> {
        let path = path.trim_matches('/');
        let shown = || {
            if path.is_empty() {
                "the mount root".to_string()
            } else {
                path.to_string()
            }
        };
        let ino = self
            .resolve(path)
            .ok_or_else(|| OnDiskError::NotFound(shown()))?;
        let mut out = Vec::new();
        let mut stack = vec![(ino, path.to_string())];
        while let Some((ino, p)) = stack.pop() {
            let row = &self.rows[&ino];
            if !row.is_dir {
                out.push(DiskFile {
                    state: self.state(row),
                    size: row.size,
                    path: p,
                    live: false,
                });
                continue;
            }
            for c in self.children.get(&ino).into_iter().flatten() {
                let name = &self.rows[c].name;
                let cp = if p.is_empty() {
                    name.clone()
                } else {
                    format!("{p}/{name}")
                };
                stack.push((*c, cp));
            }
        }
        out.sort_by(|a, b| a.path.cmp(&b.path));
        Ok(out)
    }

    /// The state word, decided as the cache does it (`Cache::state`) from its index; a
    /// row whose data file is gone counts as remote, as the cache will at its next open.
    fn state(&self, row: &Row) -> &'static str {
        if row.local_only {
            return "local-only";
        }
        let Some(hash) = row.hash.as_deref().filter(|_| row.size > 0) else {
            return "cached";
        };
        let blob = self
            .blobs
            .get(hash)
            .filter(|_| hash.len() > 2 && self.blobs_dir.join(&hash[..2]).join(hash).exists());
        match blob {
            Some((true, _, _)) => "uploading",
            _ if self.pins.contains(hash) => "pinned",
            Some((_, true, _)) => "cached",
            Some((_, _, true)) => "partial",
            _ => "remote",
        }
    }
}

/// What a state from the running mount means, for people.
pub fn note_live(state: &str) -> &'static str {
    match state {
        "local-only" => "  (stays on this machine: never uploaded or synced)",
        _ => "",
    }
}

/// What a state read from disk means, for people.
pub fn note(state: &str) -> &'static str {
    match state {
        "uploading" => "  (not in the store yet: the upload resumes at the next mount)",
        "local-only" => "  (stays on this machine: never uploaded or synced)",
        _ => "",
    }
}
