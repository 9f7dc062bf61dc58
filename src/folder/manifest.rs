//! What the folder held at the last reconcile, path by path (store spelling, relative to
//! the folder): size, modification time and hash for a file, the target for a symlink, a
//! mark for a folder, and the local name that stands for it (`spelling.rs`). It is
//! how a local edit is told from a remote one: a file that still matches its record was
//! not touched here since, so a newer catalog version may replace it; one that does not
//! was changed here and is never overwritten. Kept in `mount.db` (table
//! `folder_manifest`), beside the catalog it is reconciled with.
//!
//! Must never: hold a record for bytes the folder does not hold under that name.

use std::collections::BTreeMap;
use std::path::Path;

use rusqlite::{params, Connection};

use super::scan::Seen;
use crate::catalog::{Kind, Node};

/// One path as the folder held it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    pub size: u64,
    pub mtime_ns: i64,
    /// The content's SHA-256; None for a folder.
    pub hash: Option<String>,
    /// The local file's name, where it was recorded (None: records from before names
    /// were recorded, spelled by the rule).
    pub local: Option<String>,
    /// A symlink's target (its hash is None).
    pub target: Option<String>,
}

impl Record {
    pub fn dir() -> Record {
        Record {
            size: 0,
            mtime_ns: 0,
            hash: None,
            local: None,
            target: None,
        }
    }

    pub fn file(seen: Seen, hash: String) -> Record {
        Record {
            size: seen.size,
            mtime_ns: seen.mtime_ns,
            hash: Some(hash),
            ..Record::dir()
        }
    }

    pub fn link(seen: Seen, target: String) -> Record {
        Record {
            size: seen.size,
            mtime_ns: seen.mtime_ns,
            target: Some(target),
            ..Record::dir()
        }
    }

    pub fn is_dir(&self) -> bool {
        self.hash.is_none() && self.target.is_none()
    }

    pub fn is_link(&self) -> bool {
        self.target.is_some()
    }

    /// True while the folder still holds what was recorded (same kind, size and mtime):
    /// nothing touched it here since.
    pub fn matches(&self, now: &Seen) -> bool {
        now.dir == self.is_dir()
            && now.link == self.is_link()
            && now.size == self.size
            && now.mtime_ns == self.mtime_ns
    }

    /// True if `n` is the version recorded here (the same bytes, or the same link).
    pub fn is_version_of(&self, n: &Node) -> bool {
        match n.kind {
            Kind::File => !self.is_link() && self.hash == n.hash && self.size == n.size,
            Kind::Symlink => self.is_link() && self.target == n.target,
            _ => false,
        }
    }
}

pub struct Manifest {
    db: Connection,
}

impl Manifest {
    pub fn open(mount_db: &Path) -> rusqlite::Result<Manifest> {
        let db = crate::db::open(mount_db)?;
        db.execute_batch(
            "CREATE TABLE IF NOT EXISTS folder_manifest (
                 path TEXT PRIMARY KEY, size INTEGER NOT NULL,
                 mtime_ns INTEGER NOT NULL, hash TEXT)",
        )?;
        // Columns added since the table was first made, added in place.
        for column in ["local", "target"] {
            let has = db
                .prepare("SELECT 1 FROM pragma_table_info('folder_manifest') WHERE name = ?1")?
                .exists([column])?;
            if !has {
                db.execute_batch(&format!(
                    "ALTER TABLE folder_manifest ADD COLUMN {column} TEXT"
                ))?;
            }
        }
        Ok(Manifest { db })
    }

    pub fn all(&self) -> rusqlite::Result<BTreeMap<String, Record>> {
        let mut stmt = self
            .db
            .prepare("SELECT path, size, mtime_ns, hash, local, target FROM folder_manifest")?;
        let rows = stmt.query_map([], |r| {
            Ok((
                r.get::<_, String>(0)?,
                Record {
                    size: r.get::<_, i64>(1)? as u64,
                    mtime_ns: r.get(2)?,
                    hash: r.get(3)?,
                    local: r.get(4)?,
                    target: r.get(5)?,
                },
            ))
        })?;
        rows.collect()
    }

    pub fn put(&self, path: &str, r: &Record) -> rusqlite::Result<()> {
        self.db.execute(
            "INSERT INTO folder_manifest(path, size, mtime_ns, hash, local, target)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6)
             ON CONFLICT(path) DO UPDATE SET size = excluded.size,
                 mtime_ns = excluded.mtime_ns, hash = excluded.hash, local = excluded.local,
                 target = excluded.target",
            params![path, r.size as i64, r.mtime_ns, r.hash, r.local, r.target],
        )?;
        Ok(())
    }

    pub fn remove(&self, path: &str) -> rusqlite::Result<()> {
        self.db
            .execute("DELETE FROM folder_manifest WHERE path = ?1", [path])?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_survive_a_reopen_and_are_replaced_or_removed() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("mount.db");
        let file = Record {
            size: 5,
            mtime_ns: 42,
            hash: Some("ab".repeat(32)),
            local: Some("x (2).mp3".into()),
            target: None,
        };
        let link = Record {
            size: 5,
            target: Some("x.mp3".into()),
            ..Record::dir()
        };
        {
            let m = Manifest::open(&db).unwrap();
            m.put("a/x.mp3", &file).unwrap();
            m.put("a", &Record::dir()).unwrap();
            m.put("b.wav", &file).unwrap();
            m.put("a/latest", &link).unwrap();
            m.remove("b.wav").unwrap();
        }
        let m = Manifest::open(&db).unwrap();
        let all = m.all().unwrap();
        assert_eq!(all.len(), 3);
        assert_eq!(all["a/x.mp3"], file);
        assert!(all["a"].is_dir());
        assert!(all["a/latest"].is_link() && !all["a/latest"].is_dir());
        assert_eq!(all["a/latest"], link);
        let newer = Record {
            size: 6,
            ..file.clone()
        };
        m.put("a/x.mp3", &newer).unwrap();
        assert_eq!(m.all().unwrap()["a/x.mp3"].size, 6);
    }
}
