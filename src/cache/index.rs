//! The cache's durable index: tables `cache_*` in mount.db.
//!
//! `cache_blobs` has one row per local data file: its chunk bitmap, whether the whole
//! file was verified, whether it is dirty (written here, not yet uploaded: that column
//! IS the durable upload queue) and its last access time (LRU order after a restart).
//! `cache_info` keeps chunk hashes of blobs seen before, `cache_pins` the pinned hashes.
//! A row may only claim chunks whose bytes were synced to disk before the row was
//! written; callers keep that order. Nothing here touches data files.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rusqlite::{params, Connection, OptionalExtension};

use super::CacheError;
use crate::content::BlobInfo;

pub struct Index {
    conn: Connection,
    path: PathBuf,
}

/// One `cache_blobs` row.
pub struct BlobRow {
    pub hash: String,
    pub size: u64,
    pub present: Vec<u8>,
    pub complete: bool,
    pub dirty: bool,
    pub last_access: i64,
}

impl Index {
    pub fn open(path: &Path) -> Result<Index, CacheError> {
        let db_err = |e| db_error(path, e);
        // WAL, FULL (a commit survives power loss): see `crate::db`.
        let conn = crate::db::open(path).map_err(db_err)?;
        conn.execute_batch(
            "CREATE TABLE IF NOT EXISTS cache_blobs (
                 hash TEXT PRIMARY KEY,
                 size INTEGER NOT NULL,
                 present BLOB NOT NULL,
                 complete INTEGER NOT NULL,
                 dirty INTEGER NOT NULL,
                 last_access INTEGER NOT NULL, -- unix milliseconds
                 queued_at INTEGER NOT NULL DEFAULT 0
             );
             CREATE TABLE IF NOT EXISTS cache_info (
                 hash TEXT PRIMARY KEY,
                 size INTEGER NOT NULL,
                 chunks TEXT NOT NULL
             );
             CREATE TABLE IF NOT EXISTS cache_pins (hash TEXT PRIMARY KEY);",
        )
        .map_err(db_err)?;
        Ok(Index {
            conn,
            path: path.to_path_buf(),
        })
    }

    fn err(&self, e: rusqlite::Error) -> CacheError {
        db_error(&self.path, e)
    }

    pub fn load_blobs(&self) -> Result<Vec<BlobRow>, CacheError> {
        let mut stmt = self
            .conn
            .prepare(
                "SELECT hash, size, present, complete, dirty, last_access FROM cache_blobs
                 ORDER BY last_access",
            )
            .map_err(|e| self.err(e))?;
        let rows = stmt
            .query_map([], |r| {
                Ok(BlobRow {
                    hash: r.get(0)?,
                    size: r.get::<_, i64>(1)? as u64,
                    present: r.get(2)?,
                    complete: r.get(3)?,
                    dirty: r.get(4)?,
                    last_access: r.get(5)?,
                })
            })
            .map_err(|e| self.err(e))?;
        rows.collect::<Result<Vec<_>, _>>().map_err(|e| self.err(e))
    }

    pub fn upsert_blob(&self, row: &BlobRow) -> Result<(), CacheError> {
        self.conn
            .execute(
                "INSERT INTO cache_blobs (hash, size, present, complete, dirty, last_access)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)
                 ON CONFLICT(hash) DO UPDATE SET size = ?2, present = ?3, complete = ?4,
                     dirty = ?5, last_access = MAX(last_access, ?6)",
                params![
                    row.hash,
                    row.size as i64,
                    row.present,
                    row.complete,
                    row.dirty,
                    row.last_access
                ],
            )
            .map(|_| ())
            .map_err(|e| self.err(e))
    }

    /// Records a freshly written blob as dirty (queued for upload) with its chunk
    /// hashes, in one transaction: both or neither.
    pub fn commit_new(&mut self, row: &BlobRow, info: &BlobInfo) -> Result<(), CacheError> {
        let path = self.path.clone();
        let err = |e| db_error(&path, e);
        let tx = self.conn.transaction().map_err(err)?;
        tx.execute(
            "INSERT OR REPLACE INTO cache_blobs
                 (hash, size, present, complete, dirty, last_access, queued_at)
             VALUES (?1, ?2, ?3, ?4, 1, ?5, ?5)",
            params![
                row.hash,
                row.size as i64,
                row.present,
                row.complete,
                row.last_access
            ],
        )
        .map_err(err)?;
        put_info(&tx, info).map_err(err)?;
        tx.commit().map_err(err)
    }

    pub fn delete_blob(&self, hash: &str) -> Result<(), CacheError> {
        self.conn
            .execute("DELETE FROM cache_blobs WHERE hash = ?1", [hash])
            .map(|_| ())
            .map_err(|e| self.err(e))
    }

    pub fn set_uploaded(&self, hash: &str) -> Result<(), CacheError> {
        self.conn
            .execute("UPDATE cache_blobs SET dirty = 0 WHERE hash = ?1", [hash])
            .map(|_| ())
            .map_err(|e| self.err(e))
    }

    /// Writes the batched LRU touches in one transaction.
    pub fn touch_many(&mut self, touches: &[(String, i64)]) -> Result<(), CacheError> {
        let path = self.path.clone();
        let err = |e| db_error(&path, e);
        let tx = self.conn.transaction().map_err(err)?;
        {
            let mut stmt = tx
                .prepare(
                    "UPDATE cache_blobs SET last_access = MAX(last_access, ?2) WHERE hash = ?1",
                )
                .map_err(err)?;
            for (hash, at) in touches {
                stmt.execute(params![hash, at]).map_err(err)?;
            }
        }
        tx.commit().map_err(err)
    }

    pub fn get_info(&self, hash: &str) -> Result<Option<BlobInfo>, CacheError> {
        let row: Option<(i64, String)> = self
            .conn
            .query_row(
                "SELECT size, chunks FROM cache_info WHERE hash = ?1",
                [hash],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()
            .map_err(|e| self.err(e))?;
        Ok(row.and_then(|(size, chunks)| {
            Some(BlobInfo {
                hash: hash.to_string(),
                size: size as u64,
                chunks: serde_json::from_str(&chunks).ok()?,
            })
        }))
    }

    pub fn put_info(&self, info: &BlobInfo) -> Result<(), CacheError> {
        put_info(&self.conn, info).map_err(|e| self.err(e))
    }

    pub fn pins(&self) -> Result<Vec<String>, CacheError> {
        let mut stmt = self
            .conn
            .prepare("SELECT hash FROM cache_pins")
            .map_err(|e| self.err(e))?;
        let rows = stmt.query_map([], |r| r.get(0)).map_err(|e| self.err(e))?;
        rows.collect::<Result<Vec<_>, _>>().map_err(|e| self.err(e))
    }

    pub fn set_pin(&self, hash: &str, pinned: bool) -> Result<(), CacheError> {
        let sql = if pinned {
            "INSERT OR IGNORE INTO cache_pins (hash) VALUES (?1)"
        } else {
            "DELETE FROM cache_pins WHERE hash = ?1"
        };
        self.conn
            .execute(sql, [hash])
            .map(|_| ())
            .map_err(|e| self.err(e))
    }
}

/// A hash names one content, so a row once written never changes: keep the first.
fn put_info(conn: &Connection, info: &BlobInfo) -> rusqlite::Result<()> {
    let chunks = serde_json::to_string(&info.chunks).expect("strings serialize");
    conn.execute(
        "INSERT OR IGNORE INTO cache_info (hash, size, chunks) VALUES (?1, ?2, ?3)",
        params![info.hash, info.size as i64, chunks],
    )
    .map(|_| ())
}

/// A full disk surfaces as SQLITE_FULL: report it as such (ENOSPC), not as EIO.
fn db_error(path: &Path, e: rusqlite::Error) -> CacheError {
    if let rusqlite::Error::SqliteFailure(f, _) = &e {
        if f.code == rusqlite::ErrorCode::DiskFull {
            return CacheError::NoSpace {
                path: path.display().to_string(),
            };
        }
    }
    CacheError::Db {
        path: path.display().to_string(),
        source: Arc::new(e),
    }
}
