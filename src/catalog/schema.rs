//! How the namespace is stored in `mount.db`: the tables (`ns_inodes`, one row per
//! inode with its first name; `ns_links`, every further hard-link name; `ns_meta`, a
//! version the triggers bump on every change), the upgrade of older layouts, and the
//! row ↔ `Node` mapping. Must never hold state: the index (`index.rs`) is built from it.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use rusqlite::{params, Connection, OptionalExtension};

use super::node::{Kind, Node, ROOT_INO};

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS ns_inodes(
    ino        INTEGER PRIMARY KEY AUTOINCREMENT,
    parent     INTEGER NOT NULL,
    name       TEXT    NOT NULL,
    kind       TEXT    NOT NULL
               CHECK (kind IN ('dir', 'file', 'symlink', 'fifo', 'socket', 'chardev', 'blockdev')),
    hash       TEXT,
    size       INTEGER NOT NULL DEFAULT 0,
    mtime_ns   INTEGER NOT NULL,
    ctime_ns   INTEGER NOT NULL,
    mode       INTEGER NOT NULL,
    uid        INTEGER NOT NULL,
    gid        INTEGER NOT NULL,
    local_only INTEGER NOT NULL DEFAULT 0,
    atime_ns   INTEGER NOT NULL DEFAULT 0,
    target     TEXT,
    rdev       INTEGER NOT NULL DEFAULT 0
);
CREATE UNIQUE INDEX IF NOT EXISTS ns_inodes_by_name ON ns_inodes(parent, name);
CREATE TABLE IF NOT EXISTS ns_links(
    parent INTEGER NOT NULL,
    name   TEXT    NOT NULL,
    ino    INTEGER NOT NULL,
    PRIMARY KEY (parent, name)
);
CREATE INDEX IF NOT EXISTS ns_links_by_ino ON ns_links(ino);
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
CREATE TRIGGER IF NOT EXISTS ns_links_bump_insert AFTER INSERT ON ns_links
    BEGIN UPDATE ns_meta SET version = version + 1 WHERE id = 1; END;
CREATE TRIGGER IF NOT EXISTS ns_links_bump_update AFTER UPDATE ON ns_links
    BEGIN UPDATE ns_meta SET version = version + 1 WHERE id = 1; END;
CREATE TRIGGER IF NOT EXISTS ns_links_bump_delete AFTER DELETE ON ns_links
    BEGIN UPDATE ns_meta SET version = version + 1 WHERE id = 1; END;
";

/// The columns of `ns_inodes` before node types and atime (kept by the upgrade).
const V1_COLUMNS: &str =
    "ino, parent, name, kind, hash, size, mtime_ns, ctime_ns, mode, uid, gid, local_only";

pub(super) const COLUMNS: &str = "ino, parent, name, kind, hash, size, atime_ns, mtime_ns, \
     ctime_ns, mode, uid, gid, local_only, target, rdev";

/// Opens the catalog's database file the way every songfs file is opened (`crate::db`).
pub fn open_db(path: &Path) -> rusqlite::Result<Connection> {
    crate::db::open(path)
}

/// Creates the tables, upgrading a namespace written by an older songfs (which knew
/// only directories and files, and no atime: atime starts as the mtime).
///
/// Inode numbers are never reused (AUTOINCREMENT): the kernel may still hold a removed
/// inode under its number, and a new directory given that number was taken for the
/// removed one (creating in it failed with ENOENT).
pub(super) fn create_or_upgrade(db: &mut Connection) -> rusqlite::Result<()> {
    let old: Option<String> = db
        .query_row(
            "SELECT sql FROM sqlite_master WHERE type = 'table' AND name = 'ns_inodes'",
            [],
            |r| r.get(0),
        )
        .optional()?;
    if old
        .as_deref()
        .is_some_and(|sql| !sql.contains("AUTOINCREMENT"))
    {
        // SQLite cannot change a CHECK constraint in place: copy into the new layout.
        let tx = db.transaction()?;
        tx.execute_batch(&format!(
            "ALTER TABLE ns_inodes RENAME TO ns_inodes_v1;
             DROP INDEX IF EXISTS ns_inodes_by_name;
             DROP TRIGGER IF EXISTS ns_bump_insert;
             DROP TRIGGER IF EXISTS ns_bump_update;
             DROP TRIGGER IF EXISTS ns_bump_delete;
             {SCHEMA}
             INSERT INTO ns_inodes({V1_COLUMNS}, atime_ns)
                 SELECT {V1_COLUMNS}, mtime_ns FROM ns_inodes_v1;
             DROP TABLE ns_inodes_v1;"
        ))?;
        tx.commit()?;
        tracing::info!("namespace upgraded: symlinks, hard links, special files and atime");
    }
    db.execute_batch(SCHEMA)?;
    db.execute_batch(super::roots::SCHEMA)
}

pub(super) fn insert_root(db: &Connection, now: i64, uid: u32, gid: u32) -> rusqlite::Result<()> {
    db.execute(
        "INSERT OR IGNORE INTO ns_inodes(ino, parent, name, kind, atime_ns, mtime_ns, ctime_ns, mode, uid, gid)
         VALUES (1, 0, '', 'dir', ?1, ?1, ?1, 493, ?2, ?3)",
        params![now, uid, gid],
    )?;
    Ok(())
}

fn row_to_node(r: &rusqlite::Row<'_>) -> rusqlite::Result<Node> {
    Ok(Node {
        ino: r.get::<_, i64>(0)? as u64,
        parent: r.get::<_, i64>(1)? as u64,
        name: r.get(2)?,
        kind: Kind::parse(&r.get::<_, String>(3)?),
        hash: r.get(4)?,
        size: r.get::<_, i64>(5)? as u64,
        atime_ns: r.get(6)?,
        mtime_ns: r.get(7)?,
        ctime_ns: r.get(8)?,
        mode: r.get::<_, i64>(9)? as u32,
        uid: r.get::<_, i64>(10)? as u32,
        gid: r.get::<_, i64>(11)? as u32,
        local_only: r.get::<_, i64>(12)? != 0,
        target: r.get(13)?,
        rdev: r.get::<_, i64>(14)? as u32,
        nlink: 1,
    })
}

pub(super) fn insert_node(db: &Connection, n: &Node) -> rusqlite::Result<u64> {
    db.execute(
        &format!(
            "INSERT INTO ns_inodes({COLUMNS}) VALUES (NULL, ?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14)"
        ),
        params![
            n.parent as i64,
            n.name,
            n.kind.as_str(),
            n.hash,
            n.size as i64,
            n.atime_ns,
            n.mtime_ns,
            n.ctime_ns,
            n.mode,
            n.uid,
            n.gid,
            n.local_only,
            n.target,
            n.rdev
        ],
    )?;
    Ok(db.last_insert_rowid() as u64)
}

/// Writes every attribute of `n` but its name (names move through `index.rs`).
pub(super) fn update_node(db: &Connection, n: &Node) -> rusqlite::Result<()> {
    db.execute(
        "UPDATE ns_inodes SET hash = ?1, size = ?2, atime_ns = ?3, mtime_ns = ?4, ctime_ns = ?5,
             mode = ?6, uid = ?7, gid = ?8, local_only = ?9 WHERE ino = ?10",
        params![
            n.hash,
            n.size as i64,
            n.atime_ns,
            n.mtime_ns,
            n.ctime_ns,
            n.mode,
            n.uid,
            n.gid,
            n.local_only,
            n.ino as i64
        ],
    )?;
    Ok(())
}

pub(super) type Tree = (HashMap<u64, Node>, HashMap<u64, BTreeMap<String, u64>>);

/// The whole namespace, with link counts: files count their names, directories 2 plus
/// their subdirectories (as on ext4).
pub(super) fn load(db: &Connection) -> rusqlite::Result<Tree> {
    let mut nodes = HashMap::new();
    let mut children: HashMap<u64, BTreeMap<String, u64>> = HashMap::new();
    let mut stmt = db.prepare(&format!("SELECT {COLUMNS} FROM ns_inodes"))?;
    for n in stmt.query_map([], row_to_node)? {
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
    let mut stmt = db.prepare("SELECT parent, name, ino FROM ns_links")?;
    let links = stmt.query_map([], |r| {
        Ok((
            r.get::<_, i64>(0)? as u64,
            r.get::<_, String>(1)?,
            r.get::<_, i64>(2)? as u64,
        ))
    })?;
    for l in links {
        let (parent, name, ino) = l?;
        if let Some(n) = nodes.get_mut(&ino) {
            n.nlink += 1;
            children.entry(parent).or_default().insert(name, ino);
        }
    }
    let subdirs: Vec<u64> = nodes
        .values()
        .filter(|n| n.is_dir() && n.ino != ROOT_INO)
        .map(|n| n.parent)
        .collect();
    for n in nodes.values_mut().filter(|n| n.is_dir()) {
        n.nlink = 2;
    }
    for p in subdirs {
        if let Some(d) = nodes.get_mut(&p) {
            d.nlink += 1;
        }
    }
    Ok((nodes, children))
}

pub(super) fn version(db: &Connection) -> rusqlite::Result<i64> {
    db.query_row("SELECT version FROM ns_meta WHERE id = 1", [], |r| r.get(0))
}
