//! What the folder held at the last reconcile, path by path (store spelling, relative to
//! the folder): size, modification time and hash for a file, a mark for a folder, and
//! the local name that stands for it (`spelling.rs`). It is
//! how a local edit is told from a remote one: a file that still matches its record was
//! not touched here since, so a newer catalog version may replace it; one that does not
//! was changed here and is never overwritten. Kept in `mount.db` (table
//! `folder_manifest`), beside the catalog it is reconciled with.
//!
//! Must never: hold a record for bytes the folder does not hold under that name.

use std::collections::BTreeMap;
use std::path::Path;

use rusqlite::{params, Connection};

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
}

impl Record {
    pub fn dir() -> Record {
        Record {
            size: 0,
            mtime_ns: 0,
            hash: None,
            local: None,
        }
    }

    pub fn is_dir(&self) -> bool {
        self.hash.is_none()
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
        let has_local = db
            .prepare("SELECT 1 FROM pragma_table_info('folder_manifest') WHERE name = 'local'")?
            .exists([])?;
        if !has_local {
            db.execute_batch("ALTER TABLE folder_manifest ADD COLUMN local TEXT")?;
        }
        Ok(Manifest { db })
    }

    pub fn all(&self) -> rusqlite::Result<BTreeMap<String, Record>> {
        let mut stmt = self
            .db
            .prepare("SELECT path, size, mtime_ns, hash, local FROM folder_manifest")?;
        let rows = stmt.query_map([], |r| {
            Ok((
                r.get::<_, String>(0)?,
                Record {
                    size: r.get::<_, i64>(1)? as u64,
                    mtime_ns: r.get(2)?,
                    hash: r.get(3)?,
                    local: r.get(4)?,
                },
            ))
        })?;
        rows.collect()
    }

    pub fn put(&self, path: &str, r: &Record) -> rusqlite::Result<()> {
        self.db.execute(
            "INSERT INTO folder_manifest(path, size, mtime_ns, hash, local)
             VALUES (?1, ?2, ?3, ?4, ?5)
             ON CONFLICT(path) DO UPDATE SET size = excluded.size,
                 mtime_ns = excluded.mtime_ns, hash = excluded.hash, local = excluded.local",
            params![path, r.size as i64, r.mtime_ns, r.hash, r.local],
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
        };
        {
            let m = Manifest::open(&db).unwrap();
            m.put("a/x.mp3", &file).unwrap();
            m.put("a", &Record::dir()).unwrap();
            m.put("b.wav", &file).unwrap();
            m.remove("b.wav").unwrap();
        }
        let m = Manifest::open(&db).unwrap();
        let all = m.all().unwrap();
        assert_eq!(all.len(), 2);
        assert_eq!(all["a/x.mp3"], file);
        assert!(all["a"].is_dir());
        let newer = Record {
            size: 6,
            ..file.clone()
        };
        m.put("a/x.mp3", &newer).unwrap();
        assert_eq!(m.all().unwrap()["a/x.mp3"].size, 6);
    }
}
