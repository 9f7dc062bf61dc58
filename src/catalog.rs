//! The namespace the mount shows: every directory and file, with its blob hash, size,
//! times, mode and owner, kept in `state.db` (tables prefixed `ns_`).
//!
//! `lookup`, `getattr` and `readdir` are answered from an in-memory index loaded at open
//! and kept in step with the database (every change is written to SQLite first, in one
//! transaction, then applied to the index), so `ls -l` never waits for disk or network.
//! This module must never talk to the store or the cache: it only records which blob a
//! path names. Inode numbers are the table's rowids: stable across restarts.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use rusqlite::{params, Connection};

/// Inode number of the mount's root directory.
pub const ROOT_INO: u64 = 1;

/// Longest file name accepted (as on ext4).
pub const NAME_MAX: usize = 255;

#[derive(Debug, thiserror::Error)]
pub enum CatalogError {
    #[error("no such file or directory")]
    NotFound,
    #[error("{0:?} already exists")]
    Exists(String),
    #[error("directory is not empty")]
    NotEmpty,
    #[error("not a directory")]
    NotDir,
    #[error("is a directory")]
    IsDir,
    #[error("invalid name {0:?}")]
    InvalidName(String),
    #[error("name too long ({0} bytes, at most {NAME_MAX})")]
    NameTooLong(usize),
    #[error("cannot move a directory into itself")]
    IntoItself,
    #[error("unsupported rename flags")]
    Unsupported,
    #[error("namespace database: {0}")]
    Db(#[from] rusqlite::Error),
}

impl CatalogError {
    pub fn errno(&self) -> i32 {
        match self {
            CatalogError::NotFound => libc::ENOENT,
            CatalogError::Exists(_) => libc::EEXIST,
            CatalogError::NotEmpty => libc::ENOTEMPTY,
            CatalogError::NotDir => libc::ENOTDIR,
            CatalogError::IsDir => libc::EISDIR,
            CatalogError::InvalidName(_) | CatalogError::IntoItself => libc::EINVAL,
            CatalogError::NameTooLong(_) => libc::ENAMETOOLONG,
            CatalogError::Unsupported => libc::EINVAL,
            CatalogError::Db(_) => libc::EIO,
        }
    }
}

pub type CatalogResult<T> = Result<T, CatalogError>;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Dir,
    File,
}

impl Kind {
    fn as_str(self) -> &'static str {
        match self {
            Kind::Dir => "dir",
            Kind::File => "file",
        }
    }
}

/// One entry of the namespace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Node {
    pub ino: u64,
    pub parent: u64,
    pub name: String,
    pub kind: Kind,
    /// SHA-256 of the content (files; None for directories and local-only files).
    pub hash: Option<String>,
    pub size: u64,
    /// Nanoseconds since the epoch.
    pub mtime_ns: i64,
    pub ctime_ns: i64,
    /// Permission bits only (0o7777).
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    /// Content lives on this machine only and never reaches the store.
    pub local_only: bool,
}

impl Node {
    pub fn is_dir(&self) -> bool {
        self.kind == Kind::Dir
    }
    pub fn mtime(&self) -> SystemTime {
        ns_to_time(self.mtime_ns)
    }
    pub fn ctime(&self) -> SystemTime {
        ns_to_time(self.ctime_ns)
    }
}

pub fn now_ns() -> i64 {
    time_to_ns(SystemTime::now())
}

pub fn time_to_ns(t: SystemTime) -> i64 {
    match t.duration_since(UNIX_EPOCH) {
        Ok(d) => d.as_nanos() as i64,
        Err(e) => -(e.duration().as_nanos() as i64),
    }
}

pub fn ns_to_time(ns: i64) -> SystemTime {
    if ns >= 0 {
        UNIX_EPOCH + Duration::from_nanos(ns as u64)
    } else {
        UNIX_EPOCH - Duration::from_nanos(ns.unsigned_abs())
    }
}

/// Attribute changes of `setattr` that the namespace records (size goes through
/// `set_content`, because it changes the bytes).
#[derive(Debug, Default, Clone, Copy)]
pub struct AttrChange {
    pub mode: Option<u32>,
    pub uid: Option<u32>,
    pub gid: Option<u32>,
    pub mtime_ns: Option<i64>,
}

/// A rename's options (renameat2 flags).
#[derive(Debug, Default, Clone, Copy)]
pub struct RenameMode {
    pub no_replace: bool,
    pub exchange: bool,
}

pub struct Catalog {
    inner: Mutex<Index>,
}

struct Index {
    db: Connection,
    nodes: HashMap<u64, Node>,
    children: HashMap<u64, BTreeMap<String, u64>>,
    /// `ns_meta.version` the index reflects (triggers bump it on every row change).
    version: i64,
    checked: Instant,
}

type Tree = (HashMap<u64, Node>, HashMap<u64, BTreeMap<String, u64>>);

fn load(db: &Connection) -> rusqlite::Result<Tree> {
    let mut nodes = HashMap::new();
    let mut children: HashMap<u64, BTreeMap<String, u64>> = HashMap::new();
    let mut stmt = db.prepare(&format!("SELECT {COLUMNS} FROM ns_inodes"))?;
    let rows = stmt.query_map([], row_to_node)?;
    for n in rows {
        let n = n?;
        if n.kind == Kind::Dir {
            children.entry(n.ino).or_default();
        }
        if n.ino != ROOT_INO {
            children
                .entry(n.parent)
                .or_default()
                .insert(n.name.clone(), n.ino);
        }
        nodes.insert(n.ino, n);
    }
    Ok((nodes, children))
}

fn version(db: &Connection) -> rusqlite::Result<i64> {
    db.query_row("SELECT version FROM ns_meta WHERE id = 1", [], |r| r.get(0))
}

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS ns_inodes(
    ino        INTEGER PRIMARY KEY,
    parent     INTEGER NOT NULL,
    name       TEXT    NOT NULL,
    kind       TEXT    NOT NULL CHECK (kind IN ('dir', 'file')),
    hash       TEXT,
    size       INTEGER NOT NULL DEFAULT 0,
    mtime_ns   INTEGER NOT NULL,
    ctime_ns   INTEGER NOT NULL,
    mode       INTEGER NOT NULL,
    uid        INTEGER NOT NULL,
    gid        INTEGER NOT NULL,
    local_only INTEGER NOT NULL DEFAULT 0
);
CREATE UNIQUE INDEX IF NOT EXISTS ns_inodes_by_name ON ns_inodes(parent, name);
CREATE TABLE IF NOT EXISTS ns_meta(
    id      INTEGER PRIMARY KEY CHECK (id = 1),
    version INTEGER NOT NULL
);
INSERT OR IGNORE INTO ns_meta(id, version) VALUES (1, 0);
CREATE TRIGGER IF NOT EXISTS ns_bump_insert AFTER INSERT ON ns_inodes
    BEGIN UPDATE ns_meta SET version = version + 1 WHERE id = 1; END;
CREATE TRIGGER IF NOT EXISTS ns_bump_update AFTER UPDATE ON ns_inodes
    BEGIN UPDATE ns_meta SET version = version + 1 WHERE id = 1; END;
CREATE TRIGGER IF NOT EXISTS ns_bump_delete AFTER DELETE ON ns_inodes
    BEGIN UPDATE ns_meta SET version = version + 1 WHERE id = 1; END;
";

/// How stale the in-memory index may be with respect to changes another process (or
/// connection) made to `ns_inodes`, e.g. a sync run outside the daemon.
pub const REFRESH_INTERVAL: Duration = Duration::from_secs(1);

const COLUMNS: &str =
    "ino, parent, name, kind, hash, size, mtime_ns, ctime_ns, mode, uid, gid, local_only";

fn row_to_node(r: &rusqlite::Row<'_>) -> rusqlite::Result<Node> {
    let kind: String = r.get(3)?;
    Ok(Node {
        ino: r.get::<_, i64>(0)? as u64,
        parent: r.get::<_, i64>(1)? as u64,
        name: r.get(2)?,
        kind: if kind == "dir" { Kind::Dir } else { Kind::File },
        hash: r.get(4)?,
        size: r.get::<_, i64>(5)? as u64,
        mtime_ns: r.get(6)?,
        ctime_ns: r.get(7)?,
        mode: r.get::<_, i64>(8)? as u32,
        uid: r.get::<_, i64>(9)? as u32,
        gid: r.get::<_, i64>(10)? as u32,
        local_only: r.get::<_, i64>(11)? != 0,
    })
}

/// Opens the catalog's database file the way every songfs file is opened (`crate::db`).
pub fn open_db(path: &Path) -> rusqlite::Result<Connection> {
    crate::db::open(path)
}

fn check_name(name: &str) -> CatalogResult<()> {
    if name.is_empty() || name == "." || name == ".." || name.contains('/') || name.contains('\0') {
        return Err(CatalogError::InvalidName(name.to_string()));
    }
    if name.len() > NAME_MAX {
        return Err(CatalogError::NameTooLong(name.len()));
    }
    Ok(())
}

impl Catalog {
    /// Opens (creating if needed) the namespace in `state_db`; the root directory is made
    /// with `root_uid`/`root_gid` as owner the first time.
    pub fn open(state_db: &Path, root_uid: u32, root_gid: u32) -> CatalogResult<Catalog> {
        let db = open_db(state_db)?;
        db.execute_batch(SCHEMA)?;
        let now = now_ns();
        db.execute(
            "INSERT OR IGNORE INTO ns_inodes(ino, parent, name, kind, mtime_ns, ctime_ns, mode, uid, gid)
             VALUES (1, 0, '', 'dir', ?1, ?1, 493, ?2, ?3)",
            params![now, root_uid, root_gid],
        )?;
        let (nodes, children) = load(&db)?;
        let version = version(&db)?;
        Ok(Catalog {
            inner: Mutex::new(Index {
                db,
                nodes,
                children,
                version,
                checked: Instant::now(),
            }),
        })
    }

    fn index(&self) -> std::sync::MutexGuard<'_, Index> {
        // A panic while holding the lock leaves the index as consistent as the last
        // finished change (the database is the truth), so keep going.
        let mut ix = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        if ix.checked.elapsed() >= REFRESH_INTERVAL {
            if let Err(e) = ix.refresh() {
                tracing::warn!(error = %e, "cannot check the namespace for outside changes");
            }
        }
        ix
    }

    /// The index for a change: always checked against the database first, so a change
    /// made elsewhere is loaded before ours is applied (and never mistaken for ours).
    fn index_for_change(&self) -> std::sync::MutexGuard<'_, Index> {
        let mut ix = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        if let Err(e) = ix.refresh() {
            tracing::warn!(error = %e, "cannot check the namespace for outside changes");
        }
        ix
    }

    pub fn get(&self, ino: u64) -> CatalogResult<Node> {
        self.index()
            .nodes
            .get(&ino)
            .cloned()
            .ok_or(CatalogError::NotFound)
    }

    pub fn lookup(&self, parent: u64, name: &str) -> CatalogResult<Node> {
        let ix = self.index();
        let kids = ix.dir(parent)?;
        let ino = kids.get(name).ok_or(CatalogError::NotFound)?;
        Ok(ix.nodes[ino].clone())
    }

    /// The entries of a directory, in name order.
    pub fn children(&self, dir: u64) -> CatalogResult<Vec<Node>> {
        let ix = self.index();
        let kids = ix.dir(dir)?;
        Ok(kids.values().map(|i| ix.nodes[i].clone()).collect())
    }

    /// The path of an inode relative to the mount root ("a/b/c.mp3").
    pub fn path_of(&self, ino: u64) -> CatalogResult<String> {
        let ix = self.index();
        let mut parts = Vec::new();
        let mut cur = ino;
        while cur != ROOT_INO {
            let n = ix.nodes.get(&cur).ok_or(CatalogError::NotFound)?;
            parts.push(n.name.clone());
            cur = n.parent;
        }
        parts.reverse();
        Ok(parts.join("/"))
    }

    /// Number of entries (for statfs).
    pub fn len(&self) -> usize {
        self.index().nodes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() <= 1
    }

    /// Every distinct blob hash the namespace names (the cache keeps these pinned or
    /// fetchable; nothing else may be deleted from the store by this device).
    pub fn hashes(&self) -> Vec<String> {
        let ix = self.index();
        let mut v: Vec<String> = ix.nodes.values().filter_map(|n| n.hash.clone()).collect();
        v.sort();
        v.dedup();
        v
    }

    /// Creates an entry. `hash`/`size` give a file's initial content (None for dirs).
    #[allow(clippy::too_many_arguments)]
    pub fn create(
        &self,
        parent: u64,
        name: &str,
        kind: Kind,
        mode: u32,
        uid: u32,
        gid: u32,
        hash: Option<&str>,
        local_only: bool,
    ) -> CatalogResult<Node> {
        check_name(name)?;
        let mut ix = self.index_for_change();
        if ix.dir(parent)?.contains_key(name) {
            return Err(CatalogError::Exists(name.to_string()));
        }
        let now = now_ns();
        ix.db.execute(
            "INSERT INTO ns_inodes(parent, name, kind, hash, size, mtime_ns, ctime_ns, mode, uid, gid, local_only)
             VALUES (?1, ?2, ?3, ?4, 0, ?5, ?5, ?6, ?7, ?8, ?9)",
            params![parent as i64, name, kind.as_str(), hash, now, mode & 0o7777, uid, gid, local_only],
        )?;
        let ino = ix.db.last_insert_rowid() as u64;
        let node = Node {
            ino,
            parent,
            name: name.to_string(),
            kind,
            hash: hash.map(str::to_string),
            size: 0,
            mtime_ns: now,
            ctime_ns: now,
            mode: mode & 0o7777,
            uid,
            gid,
            local_only,
        };
        ix.insert(node.clone());
        ix.touch_dir(parent, now)?;
        ix.own_change();
        Ok(node)
    }

    /// Removes a file; returns it (its content may be dropped by the caller).
    pub fn unlink(&self, parent: u64, name: &str) -> CatalogResult<Node> {
        let mut ix = self.index_for_change();
        let ino = *ix.dir(parent)?.get(name).ok_or(CatalogError::NotFound)?;
        if ix.nodes[&ino].is_dir() {
            return Err(CatalogError::IsDir);
        }
        ix.db
            .execute("DELETE FROM ns_inodes WHERE ino = ?1", [ino as i64])?;
        let node = ix.remove(ino);
        ix.touch_dir(parent, now_ns())?;
        ix.own_change();
        Ok(node)
    }

    pub fn rmdir(&self, parent: u64, name: &str) -> CatalogResult<Node> {
        let mut ix = self.index_for_change();
        let ino = *ix.dir(parent)?.get(name).ok_or(CatalogError::NotFound)?;
        if !ix.nodes[&ino].is_dir() {
            return Err(CatalogError::NotDir);
        }
        if !ix.children.get(&ino).is_none_or(|c| c.is_empty()) {
            return Err(CatalogError::NotEmpty);
        }
        ix.db
            .execute("DELETE FROM ns_inodes WHERE ino = ?1", [ino as i64])?;
        let node = ix.remove(ino);
        ix.touch_dir(parent, now_ns())?;
        ix.own_change();
        Ok(node)
    }

    /// Moves `parent/name` to `new_parent/new_name`, replacing a file or an empty
    /// directory there (POSIX rename). Returns the entry it replaced, if any.
    pub fn rename(
        &self,
        parent: u64,
        name: &str,
        new_parent: u64,
        new_name: &str,
        mode: RenameMode,
    ) -> CatalogResult<Option<Node>> {
        check_name(new_name)?;
        if mode.exchange {
            return Err(CatalogError::Unsupported);
        }
        let mut ix = self.index_for_change();
        let ino = *ix.dir(parent)?.get(name).ok_or(CatalogError::NotFound)?;
        let target = ix.dir(new_parent)?.get(new_name).copied();
        if target == Some(ino) {
            return Ok(None);
        }
        let moving_dir = ix.nodes[&ino].is_dir();
        if moving_dir {
            // new_parent must not be ino or one of its descendants.
            let mut cur = new_parent;
            loop {
                if cur == ino {
                    return Err(CatalogError::IntoItself);
                }
                if cur == ROOT_INO {
                    break;
                }
                cur = ix.nodes.get(&cur).map(|n| n.parent).unwrap_or(ROOT_INO);
            }
        }
        if let Some(t) = target {
            if mode.no_replace {
                return Err(CatalogError::Exists(new_name.to_string()));
            }
            let t_dir = ix.nodes[&t].is_dir();
            match (moving_dir, t_dir) {
                (false, true) => return Err(CatalogError::IsDir),
                (true, false) => return Err(CatalogError::NotDir),
                (true, true) if !ix.children.get(&t).is_none_or(|c| c.is_empty()) => {
                    return Err(CatalogError::NotEmpty)
                }
                _ => {}
            }
        }
        let now = now_ns();
        let tx = ix.db.transaction()?;
        if let Some(t) = target {
            tx.execute("DELETE FROM ns_inodes WHERE ino = ?1", [t as i64])?;
        }
        tx.execute(
            "UPDATE ns_inodes SET parent = ?1, name = ?2, ctime_ns = ?3 WHERE ino = ?4",
            params![new_parent as i64, new_name, now, ino as i64],
        )?;
        for d in [parent, new_parent] {
            tx.execute(
                "UPDATE ns_inodes SET mtime_ns = ?1, ctime_ns = ?1 WHERE ino = ?2",
                params![now, d as i64],
            )?;
        }
        tx.commit()?;
        let replaced = target.map(|t| ix.remove(t));
        if let Some(kids) = ix.children.get_mut(&parent) {
            kids.remove(name);
        }
        ix.children
            .entry(new_parent)
            .or_default()
            .insert(new_name.to_string(), ino);
        let n = ix.nodes.get_mut(&ino).expect("renamed node exists");
        n.parent = new_parent;
        n.name = new_name.to_string();
        n.ctime_ns = now;
        for d in [parent, new_parent] {
            if let Some(dn) = ix.nodes.get_mut(&d) {
                dn.mtime_ns = now;
                dn.ctime_ns = now;
            }
        }
        ix.own_change();
        Ok(replaced)
    }

    /// chmod, chown, utimens.
    pub fn set_attr(&self, ino: u64, ch: AttrChange) -> CatalogResult<Node> {
        let mut ix = self.index_for_change();
        let mut n = ix.nodes.get(&ino).cloned().ok_or(CatalogError::NotFound)?;
        if let Some(m) = ch.mode {
            n.mode = m & 0o7777;
        }
        if let Some(u) = ch.uid {
            n.uid = u;
        }
        if let Some(g) = ch.gid {
            n.gid = g;
        }
        if let Some(t) = ch.mtime_ns {
            n.mtime_ns = t;
        }
        n.ctime_ns = now_ns();
        ix.db.execute(
            "UPDATE ns_inodes SET mode = ?1, uid = ?2, gid = ?3, mtime_ns = ?4, ctime_ns = ?5 WHERE ino = ?6",
            params![n.mode, n.uid, n.gid, n.mtime_ns, n.ctime_ns, ino as i64],
        )?;
        ix.nodes.insert(ino, n.clone());
        ix.own_change();
        Ok(n)
    }

    /// Records new content for a file (after its bytes were committed to the cache or
    /// to the local-only folder). The entry may have been unlinked meanwhile: then the
    /// write is dropped (NotFound), like a write to an unlinked file on any filesystem.
    pub fn set_content(
        &self,
        ino: u64,
        hash: Option<&str>,
        size: u64,
        mtime_ns: i64,
        local_only: bool,
    ) -> CatalogResult<Node> {
        let mut ix = self.index_for_change();
        let mut n = ix.nodes.get(&ino).cloned().ok_or(CatalogError::NotFound)?;
        if n.is_dir() {
            return Err(CatalogError::IsDir);
        }
        n.hash = hash.map(str::to_string);
        n.size = size;
        n.mtime_ns = mtime_ns;
        n.ctime_ns = mtime_ns.max(n.ctime_ns);
        n.local_only = local_only;
        ix.db.execute(
            "UPDATE ns_inodes SET hash = ?1, size = ?2, mtime_ns = ?3, ctime_ns = ?4, local_only = ?5 WHERE ino = ?6",
            params![n.hash, size as i64, n.mtime_ns, n.ctime_ns, local_only, ino as i64],
        )?;
        ix.nodes.insert(ino, n.clone());
        ix.own_change();
        Ok(n)
    }
}

/// Path-based access for the sync, which names files by their path relative to the
/// mount root ("2026-02-10_song/song_v1.mp3"), identical on every machine.
impl Catalog {
    /// The entry at `path` ("" is the root).
    pub fn resolve(&self, path: &str) -> CatalogResult<Node> {
        let ix = self.index();
        let mut cur = ROOT_INO;
        for part in path.split('/').filter(|p| !p.is_empty()) {
            cur = *ix.dir(cur)?.get(part).ok_or(CatalogError::NotFound)?;
        }
        Ok(ix.nodes[&cur].clone())
    }

    /// Every file with its path, local-only files excluded (they never leave this
    /// machine), in path order.
    pub fn files(&self) -> Vec<(String, Node)> {
        let ix = self.index();
        let mut out = Vec::new();
        let mut stack = vec![(ROOT_INO, String::new())];
        while let Some((dir, prefix)) = stack.pop() {
            for (name, ino) in ix.children.get(&dir).into_iter().flatten() {
                let n = &ix.nodes[ino];
                let path = if prefix.is_empty() {
                    name.clone()
                } else {
                    format!("{prefix}/{name}")
                };
                match n.kind {
                    Kind::Dir => stack.push((n.ino, path)),
                    Kind::File if !n.local_only => out.push((path, n.clone())),
                    Kind::File => {}
                }
            }
        }
        out.sort_by(|a, b| a.0.cmp(&b.0));
        out
    }

    /// Makes `path` a file with this content (a remote change applied by the sync):
    /// creates missing parent directories, replaces an existing file's content. The
    /// owner of new entries is the owner of the mount root.
    pub fn upsert_file(
        &self,
        path: &str,
        hash: &str,
        size: u64,
        mtime_ns: i64,
        mode: u32,
    ) -> CatalogResult<Node> {
        let parts: Vec<&str> = path.split('/').filter(|p| !p.is_empty()).collect();
        let Some((name, dirs)) = parts.split_last() else {
            return Err(CatalogError::InvalidName(path.to_string()));
        };
        let root = self.get(ROOT_INO)?;
        let mut parent = ROOT_INO;
        for d in dirs {
            parent = match self.lookup(parent, d) {
                Ok(n) if n.is_dir() => n.ino,
                Ok(_) => return Err(CatalogError::NotDir),
                Err(CatalogError::NotFound) => {
                    self.create(parent, d, Kind::Dir, 0o755, root.uid, root.gid, None, false)?
                        .ino
                }
                Err(e) => return Err(e),
            };
        }
        let ino = match self.lookup(parent, name) {
            Ok(n) if n.is_dir() => return Err(CatalogError::IsDir),
            Ok(n) => n.ino,
            Err(CatalogError::NotFound) => {
                self.create(
                    parent,
                    name,
                    Kind::File,
                    mode,
                    root.uid,
                    root.gid,
                    Some(hash),
                    false,
                )?
                .ino
            }
            Err(e) => return Err(e),
        };
        self.set_attr(
            ino,
            AttrChange {
                mode: Some(mode),
                ..AttrChange::default()
            },
        )?;
        self.set_content(ino, Some(hash), size, mtime_ns, false)
    }

    /// Removes the file at `path` (a remote delete); None if there was none.
    pub fn remove_file(&self, path: &str) -> CatalogResult<Option<Node>> {
        let n = match self.resolve(path) {
            Ok(n) => n,
            Err(CatalogError::NotFound) => return Ok(None),
            Err(e) => return Err(e),
        };
        if n.is_dir() {
            return Err(CatalogError::IsDir);
        }
        self.unlink(n.parent, &n.name).map(Some)
    }
}

impl Index {
    /// Reloads the tree if another connection changed `ns_inodes` since we last looked.
    fn refresh(&mut self) -> rusqlite::Result<()> {
        self.checked = Instant::now();
        let v = version(&self.db)?;
        if v != self.version {
            let (nodes, children) = load(&self.db)?;
            self.nodes = nodes;
            self.children = children;
            self.version = v;
            tracing::debug!(
                version = v,
                "namespace changed outside this process: reloaded"
            );
        }
        Ok(())
    }

    /// After a change of our own: the version it produced is already reflected.
    fn own_change(&mut self) {
        match version(&self.db) {
            Ok(v) => self.version = v,
            Err(e) => tracing::warn!(error = %e, "cannot read the namespace version"),
        }
    }

    fn dir(&self, ino: u64) -> CatalogResult<&BTreeMap<String, u64>> {
        match self.nodes.get(&ino) {
            None => Err(CatalogError::NotFound),
            Some(n) if !n.is_dir() => Err(CatalogError::NotDir),
            Some(_) => Ok(self.children.get(&ino).expect("every dir has a child map")),
        }
    }

    fn insert(&mut self, n: Node) {
        if n.is_dir() {
            self.children.entry(n.ino).or_default();
        }
        self.children
            .entry(n.parent)
            .or_default()
            .insert(n.name.clone(), n.ino);
        self.nodes.insert(n.ino, n);
    }

    fn remove(&mut self, ino: u64) -> Node {
        let n = self.nodes.remove(&ino).expect("removed node exists");
        if let Some(kids) = self.children.get_mut(&n.parent) {
            kids.remove(&n.name);
        }
        self.children.remove(&ino);
        n
    }

    fn touch_dir(&mut self, dir: u64, now: i64) -> CatalogResult<()> {
        self.db.execute(
            "UPDATE ns_inodes SET mtime_ns = ?1, ctime_ns = ?1 WHERE ino = ?2",
            params![now, dir as i64],
        )?;
        if let Some(d) = self.nodes.get_mut(&dir) {
            d.mtime_ns = now;
            d.ctime_ns = now;
        }
        Ok(())
    }
}

/// Number of namespace entries, read straight from the database (for `songfs status`,
/// which holds no Catalog).
pub fn count_entries(state_db: &Path) -> CatalogResult<u64> {
    let db = open_db(state_db)?;
    let n: i64 = db.query_row("SELECT COUNT(*) FROM ns_inodes", [], |r| r.get(0))?;
    Ok(n as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn open(dir: &Path) -> Catalog {
        Catalog::open(&dir.join("state.db"), 1000, 1000).unwrap()
    }

    #[test]
    fn entries_survive_reopen_with_their_attributes() {
        let d = tempfile::tempdir().unwrap();
        let c = open(d.path());
        let a = c
            .create(ROOT_INO, "a", Kind::Dir, 0o755, 1, 2, None, false)
            .unwrap();
        let f = c
            .create(a.ino, "f.mp3", Kind::File, 0o600, 1, 2, Some("00"), false)
            .unwrap();
        c.set_content(f.ino, Some("ab"), 42, 7, false).unwrap();
        drop(c);
        let c = open(d.path());
        let f2 = c.lookup(a.ino, "f.mp3").unwrap();
        assert_eq!(f2.ino, f.ino);
        assert_eq!(f2.hash.as_deref(), Some("ab"));
        assert_eq!(
            (f2.size, f2.mtime_ns, f2.mode, f2.uid, f2.gid),
            (42, 7, 0o600, 1, 2)
        );
        assert_eq!(c.path_of(f.ino).unwrap(), "a/f.mp3");
        assert_eq!(c.children(ROOT_INO).unwrap().len(), 1);
    }

    #[test]
    fn rename_replaces_files_and_empty_dirs_but_not_full_ones() {
        let d = tempfile::tempdir().unwrap();
        let c = open(d.path());
        let f = |n: &str| {
            c.create(ROOT_INO, n, Kind::File, 0o644, 0, 0, Some("h"), false)
                .unwrap()
        };
        let tmp = f("tmpXYZ");
        let old = f("song.mp3");
        let replaced = c
            .rename(
                ROOT_INO,
                "tmpXYZ",
                ROOT_INO,
                "song.mp3",
                RenameMode::default(),
            )
            .unwrap();
        assert_eq!(replaced.unwrap().ino, old.ino);
        assert_eq!(c.lookup(ROOT_INO, "song.mp3").unwrap().ino, tmp.ino);
        assert!(matches!(
            c.lookup(ROOT_INO, "tmpXYZ"),
            Err(CatalogError::NotFound)
        ));

        let d1 = c
            .create(ROOT_INO, "d1", Kind::Dir, 0o755, 0, 0, None, false)
            .unwrap();
        let d2 = c
            .create(ROOT_INO, "d2", Kind::Dir, 0o755, 0, 0, None, false)
            .unwrap();
        c.create(d2.ino, "x", Kind::File, 0o644, 0, 0, None, false)
            .unwrap();
        let e = c.rename(ROOT_INO, "d1", ROOT_INO, "d2", RenameMode::default());
        assert!(matches!(e, Err(CatalogError::NotEmpty)));
        let e = c.rename(ROOT_INO, "song.mp3", ROOT_INO, "d1", RenameMode::default());
        assert!(matches!(e, Err(CatalogError::IsDir)));
        let e = c.rename(ROOT_INO, "d2", d2.ino, "inner", RenameMode::default());
        assert!(matches!(e, Err(CatalogError::IntoItself)));
        c.rename(ROOT_INO, "d2", ROOT_INO, "d1", RenameMode::default())
            .unwrap();
        assert_eq!(c.lookup(ROOT_INO, "d1").unwrap().ino, d2.ino);
        assert!(c.get(d1.ino).is_err());
        assert_eq!(
            c.path_of(c.lookup(d2.ino, "x").unwrap().ino).unwrap(),
            "d1/x"
        );
    }

    #[test]
    fn the_sync_applies_remote_files_by_path() {
        let d = tempfile::tempdir().unwrap();
        let c = open(d.path());
        let n = c
            .upsert_file("2026-02-10_song/stems/v.mp3", "h1", 10, 5, 0o644)
            .unwrap();
        assert_eq!(c.path_of(n.ino).unwrap(), "2026-02-10_song/stems/v.mp3");
        assert_eq!(c.resolve("2026-02-10_song/stems").unwrap().uid, 1000);
        let n2 = c
            .upsert_file("2026-02-10_song/stems/v.mp3", "h2", 20, 6, 0o600)
            .unwrap();
        assert_eq!(
            (n2.ino, n2.hash.as_deref(), n2.size, n2.mode),
            (n.ino, Some("h2"), 20, 0o600)
        );
        c.create(
            ROOT_INO,
            "songfactory_backup_1.db",
            Kind::File,
            0o600,
            0,
            0,
            None,
            true,
        )
        .unwrap();
        let files = c.files();
        assert_eq!(files.len(), 1, "local-only files are not listed");
        assert_eq!(files[0].0, "2026-02-10_song/stems/v.mp3");
        assert!(matches!(
            c.upsert_file("2026-02-10_song", "h", 1, 1, 0o644),
            Err(CatalogError::IsDir)
        ));
        assert_eq!(
            c.remove_file("2026-02-10_song/stems/v.mp3")
                .unwrap()
                .unwrap()
                .ino,
            n.ino
        );
        assert!(c
            .remove_file("2026-02-10_song/stems/v.mp3")
            .unwrap()
            .is_none());
    }

    #[test]
    fn changes_made_by_another_connection_show_up_after_the_refresh_interval() {
        let d = tempfile::tempdir().unwrap();
        let a = open(d.path());
        let b = open(d.path());
        a.create(ROOT_INO, "mine", Kind::File, 0o644, 0, 0, None, false)
            .unwrap();
        b.upsert_file("synced/x.mp3", "h", 3, 1, 0o644).unwrap();
        std::thread::sleep(REFRESH_INTERVAL + Duration::from_millis(100));
        assert_eq!(
            a.resolve("synced/x.mp3").unwrap().hash.as_deref(),
            Some("h")
        );
        assert!(b.lookup(ROOT_INO, "mine").is_ok());
        // Our own changes never cause a reload that could lose them.
        let f = a.lookup(ROOT_INO, "mine").unwrap();
        a.set_content(f.ino, Some("h2"), 9, 2, false).unwrap();
        assert_eq!(a.get(f.ino).unwrap().size, 9);
    }

    #[test]
    fn rmdir_refuses_full_dirs_and_unlink_refuses_dirs() {
        let d = tempfile::tempdir().unwrap();
        let c = open(d.path());
        let dir = c
            .create(ROOT_INO, "d", Kind::Dir, 0o755, 0, 0, None, false)
            .unwrap();
        c.create(dir.ino, "f", Kind::File, 0o644, 0, 0, None, false)
            .unwrap();
        assert!(matches!(
            c.rmdir(ROOT_INO, "d"),
            Err(CatalogError::NotEmpty)
        ));
        assert!(matches!(c.unlink(ROOT_INO, "d"), Err(CatalogError::IsDir)));
        assert!(matches!(c.rmdir(dir.ino, "f"), Err(CatalogError::NotDir)));
        c.unlink(dir.ino, "f").unwrap();
        c.rmdir(ROOT_INO, "d").unwrap();
        assert!(c.children(ROOT_INO).unwrap().is_empty());
        assert!(matches!(
            c.create(ROOT_INO, "a/b", Kind::File, 0, 0, 0, None, false),
            Err(CatalogError::InvalidName(_))
        ));
        assert!(matches!(
            c.create(ROOT_INO, &"x".repeat(300), Kind::File, 0, 0, 0, None, false),
            Err(CatalogError::NameTooLong(300))
        ));
    }
}
