//! The in-memory copy of the namespace that answers `lookup`, `getattr` and `readdir`
//! without touching disk, and the name bookkeeping every change goes through (an inode's
//! first name lives in `ns_inodes`, further hard-link names in `ns_links`). Every change
//! is written to SQLite first, then mirrored here; must never change memory alone.

use std::collections::{BTreeMap, HashMap};
use std::time::Instant;

use rusqlite::{params, Connection, OptionalExtension};

use super::node::{CatalogError, CatalogResult, Node};
use super::schema;

pub(super) struct Index {
    pub db: Connection,
    /// Every inode, under its first name.
    pub nodes: HashMap<u64, Node>,
    /// Every name of every directory (hard links appear once per name).
    pub children: HashMap<u64, BTreeMap<String, u64>>,
    /// `ns_meta.version` the index reflects (triggers bump it on every row change).
    pub version: i64,
    pub checked: Instant,
}

/// What removing one name did to its inode.
pub(super) enum NameGone {
    /// It was the last name: the inode is gone too.
    LastName(Node),
    /// The inode lives on under its other names.
    OtherNamesLeft(Node),
}

impl Index {
    pub fn open(db: Connection) -> rusqlite::Result<Index> {
        let (nodes, children) = schema::load(&db)?;
        let version = schema::version(&db)?;
        Ok(Index {
            db,
            nodes,
            children,
            version,
            checked: Instant::now(),
        })
    }

    /// Reloads the tree if another connection changed the namespace since we last looked.
    pub fn refresh(&mut self) -> rusqlite::Result<()> {
        self.checked = Instant::now();
        let v = schema::version(&self.db)?;
        if v != self.version {
            let (nodes, children) = schema::load(&self.db)?;
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
    pub fn own_change(&mut self) {
        match schema::version(&self.db) {
            Ok(v) => self.version = v,
            Err(e) => tracing::warn!(error = %e, "cannot read the namespace version"),
        }
    }

    pub fn dir(&self, ino: u64) -> CatalogResult<&BTreeMap<String, u64>> {
        match self.nodes.get(&ino) {
            None => Err(CatalogError::NotFound),
            Some(n) if !n.is_dir() => Err(CatalogError::NotDir),
            Some(_) => Ok(self.children.get(&ino).expect("every dir has a child map")),
        }
    }

    /// The inode a name in `dir` names.
    pub fn ino_at(&self, dir: u64, name: &str) -> CatalogResult<u64> {
        self.dir(dir)?
            .get(name)
            .copied()
            .ok_or(CatalogError::NotFound)
    }

    /// The node reached through `parent/name`, carrying that name.
    pub fn entry(&self, parent: u64, name: &str, ino: u64) -> Node {
        let mut n = self.nodes[&ino].clone();
        if n.parent != parent || n.name != name {
            n.parent = parent;
            n.name = name.to_string();
        }
        n
    }

    pub fn node(&self, ino: u64) -> CatalogResult<Node> {
        self.nodes.get(&ino).cloned().ok_or(CatalogError::NotFound)
    }

    /// Adds a new inode (already inserted in the database) under its first name.
    pub fn insert(&mut self, n: Node) {
        if n.is_dir() {
            self.children.entry(n.ino).or_default();
            self.adjust_nlink(n.parent, 1);
        }
        self.children
            .entry(n.parent)
            .or_default()
            .insert(n.name.clone(), n.ino);
        self.nodes.insert(n.ino, n);
    }

    fn adjust_nlink(&mut self, ino: u64, by: i32) {
        if let Some(n) = self.nodes.get_mut(&ino) {
            n.nlink = n.nlink.saturating_add_signed(by);
        }
    }

    /// Another name for an existing file (`link(2)`).
    pub fn add_link(&mut self, ino: u64, parent: u64, name: &str) -> rusqlite::Result<()> {
        self.db.execute(
            "INSERT INTO ns_links(parent, name, ino) VALUES (?1, ?2, ?3)",
            params![parent as i64, name, ino as i64],
        )?;
        self.children
            .entry(parent)
            .or_default()
            .insert(name.to_string(), ino);
        self.adjust_nlink(ino, 1);
        Ok(())
    }

    /// Removes the name `parent/name` of `ino` (in the database, then here). When it
    /// was the inode's first name and others remain, one of them becomes the first.
    pub fn remove_name(&mut self, parent: u64, name: &str, ino: u64) -> rusqlite::Result<NameGone> {
        let first = {
            let n = &self.nodes[&ino];
            n.parent == parent && n.name == name
        };
        if !first {
            self.db.execute(
                "DELETE FROM ns_links WHERE parent = ?1 AND name = ?2",
                params![parent as i64, name],
            )?;
        } else {
            let next: Option<(i64, String)> = self
                .db
                .query_row(
                    "SELECT parent, name FROM ns_links WHERE ino = ?1 ORDER BY parent, name LIMIT 1",
                    [ino as i64],
                    |r| Ok((r.get(0)?, r.get(1)?)),
                )
                .optional()?;
            match next {
                Some((p, nm)) => {
                    self.db.execute(
                        "DELETE FROM ns_links WHERE parent = ?1 AND name = ?2",
                        params![p, nm],
                    )?;
                    self.db.execute(
                        "UPDATE ns_inodes SET parent = ?1, name = ?2 WHERE ino = ?3",
                        params![p, nm, ino as i64],
                    )?;
                    let n = self.nodes.get_mut(&ino).expect("node exists");
                    n.parent = p as u64;
                    n.name = nm;
                }
                None => {
                    self.db
                        .execute("DELETE FROM ns_inodes WHERE ino = ?1", [ino as i64])?;
                }
            }
        }
        if let Some(kids) = self.children.get_mut(&parent) {
            kids.remove(name);
        }
        let n = &self.nodes[&ino];
        if n.nlink > 1 && !n.is_dir() {
            self.adjust_nlink(ino, -1);
            return Ok(NameGone::OtherNamesLeft(self.entry(parent, name, ino)));
        }
        let mut n = self.nodes.remove(&ino).expect("removed node exists");
        if n.is_dir() {
            self.children.remove(&ino);
            self.adjust_nlink(parent, -1);
        }
        n.parent = parent;
        n.name = name.to_string();
        Ok(NameGone::LastName(n))
    }

    /// Moves the name `parent/name` of `ino` to `new_parent/new_name` (which is free).
    pub fn move_name(
        &mut self,
        parent: u64,
        name: &str,
        ino: u64,
        new_parent: u64,
        new_name: &str,
    ) -> rusqlite::Result<()> {
        let first = {
            let n = &self.nodes[&ino];
            n.parent == parent && n.name == name
        };
        if first {
            self.db.execute(
                "UPDATE ns_inodes SET parent = ?1, name = ?2 WHERE ino = ?3",
                params![new_parent as i64, new_name, ino as i64],
            )?;
            let n = self.nodes.get_mut(&ino).expect("node exists");
            n.parent = new_parent;
            n.name = new_name.to_string();
        } else {
            self.db.execute(
                "UPDATE ns_links SET parent = ?1, name = ?2 WHERE parent = ?3 AND name = ?4",
                params![new_parent as i64, new_name, parent as i64, name],
            )?;
        }
        if let Some(kids) = self.children.get_mut(&parent) {
            kids.remove(name);
        }
        self.children
            .entry(new_parent)
            .or_default()
            .insert(new_name.to_string(), ino);
        if self.nodes[&ino].is_dir() && parent != new_parent {
            self.adjust_nlink(parent, -1);
            self.adjust_nlink(new_parent, 1);
        }
        Ok(())
    }

    /// Writes a node's attributes (not its names) and mirrors them here.
    pub fn update(&mut self, n: &Node) -> rusqlite::Result<()> {
        schema::update_node(&self.db, n)?;
        if let Some(cur) = self.nodes.get_mut(&n.ino) {
            let (parent, name, nlink) = (cur.parent, std::mem::take(&mut cur.name), cur.nlink);
            *cur = n.clone();
            cur.parent = parent;
            cur.name = name;
            cur.nlink = nlink;
        }
        Ok(())
    }

    /// A directory's entries changed: its mtime and ctime move.
    pub fn touch_dir(&mut self, dir: u64, now: i64) -> rusqlite::Result<()> {
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

    /// An inode's metadata changed (a name added or removed): its ctime moves.
    pub fn touch_ctime(&mut self, ino: u64, now: i64) -> rusqlite::Result<()> {
        self.db.execute(
            "UPDATE ns_inodes SET ctime_ns = ?1 WHERE ino = ?2",
            params![now, ino as i64],
        )?;
        if let Some(n) = self.nodes.get_mut(&ino) {
            n.ctime_ns = now;
        }
        Ok(())
    }
}

impl Index {
    /// Runs a change in one transaction. On failure the database rolls back and the
    /// index is reloaded from it, so memory never keeps half a change.
    pub fn atomically<T>(
        &mut self,
        change: impl FnOnce(&mut Index) -> CatalogResult<T>,
    ) -> CatalogResult<T> {
        self.db.execute_batch("BEGIN IMMEDIATE")?;
        let result = change(self).and_then(|v| {
            self.db.execute_batch("COMMIT")?;
            Ok(v)
        });
        match result {
            Ok(v) => {
                self.own_change();
                Ok(v)
            }
            Err(e) => {
                let _ = self.db.execute_batch("ROLLBACK");
                self.version = -1;
                if let Err(re) = self.refresh() {
                    tracing::warn!(error = %re, "cannot reload the namespace after a failed change");
                }
                Err(e)
            }
        }
    }
}
