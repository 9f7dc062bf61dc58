//! songfs's own SQLite files: which holds what, and the one way each is opened.
//!
//! - `mount.db` — the mount's state: the catalog (`ns_*`: what `ls` shows) and the cache
//!   index (`cache_*`, whose dirty rows are the durable upload queue). Written by the
//!   mount, one short transaction per operation.
//! - `state.db` — the sync's state (`sync_*` for the database, `nsync_*` for the
//!   namespace). A sync cycle's transactions can be long (the first capture of a large
//!   library, a big merge); in a file of their own they never hold the write lock the
//!   mount's writes need, so `ls -l`, `stat` and reads never wait on a sync.
//!
//! Every connection: WAL (readers never wait for the writer), one busy timeout, and
//! `synchronous = FULL`: a committed upload-queue row or a log's committed seq must
//! survive a power cut (a seq renumbered after one would look like another writer's log).
//! Must never: put a table that a sync transaction writes into `mount.db`.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;
use rusqlite::Connection;

use crate::config::Home;

/// How long a statement waits for another connection's write lock.
pub const BUSY_TIMEOUT: Duration = Duration::from_secs(10);

/// Opens (creating) one of songfs's own SQLite files.
pub fn open(path: &Path) -> rusqlite::Result<Connection> {
    let db = Connection::open(path)?;
    db.busy_timeout(BUSY_TIMEOUT)?;
    db.pragma_update(None, "journal_mode", "WAL")?;
    db.pragma_update(None, "synchronous", "FULL")?;
    Ok(db)
}

/// The mount's database file. A state written before the two files were apart kept the
/// catalog and the cache index in `state.db`: they move to `mount.db` here, once (a copy
/// taken with `VACUUM INTO`, renamed into place, then the old tables dropped), so no
/// file, pin or queued upload is lost.
pub fn mount_db(home: &Home) -> anyhow::Result<PathBuf> {
    let new = home.mount_db_path();
    let old = home.state_db_path();
    if new.exists() || !old.exists() {
        return Ok(new);
    }
    let conn = open(&old).with_context(|| format!("cannot open {}", old.display()))?;
    if mount_tables(&conn)?.is_empty() {
        return Ok(new);
    }
    let tmp = new.with_extension("db.moving");
    let _ = std::fs::remove_file(&tmp);
    conn.execute("VACUUM INTO ?1", [tmp.to_string_lossy()])
        .with_context(|| format!("cannot copy the mount's tables to {}", tmp.display()))?;
    {
        let copy = open(&tmp)?;
        for t in sync_tables(&copy)? {
            copy.execute_batch(&format!("DROP TABLE \"{t}\""))?;
        }
    }
    std::fs::rename(&tmp, &new).with_context(|| format!("cannot create {}", new.display()))?;
    for t in mount_tables(&conn)? {
        conn.execute_batch(&format!("DROP TABLE \"{t}\""))?;
    }
    tracing::info!(from = %old.display(), to = %new.display(), "the mount's tables moved to their own file");
    Ok(new)
}

fn tables_like(conn: &Connection, patterns: &[&str]) -> rusqlite::Result<Vec<String>> {
    let mut out = Vec::new();
    let mut stmt = conn.prepare(
        "SELECT name FROM sqlite_master WHERE type = 'table' AND name LIKE ?1 ESCAPE '\\'",
    )?;
    for p in patterns {
        for n in stmt.query_map([p], |r| r.get::<_, String>(0))? {
            out.push(n?);
        }
    }
    Ok(out)
}

fn mount_tables(conn: &Connection) -> rusqlite::Result<Vec<String>> {
    tables_like(conn, &["ns\\_%", "cache\\_%"])
}

fn sync_tables(conn: &Connection) -> rusqlite::Result<Vec<String>> {
    tables_like(conn, &["sync\\_%", "nsync\\_%"])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_old_state_moves_the_mount_tables_out_and_keeps_the_sync_tables() {
        let dir = tempfile::tempdir().unwrap();
        let home = Home::at(dir.path());
        let old = open(&home.state_db_path()).unwrap();
        old.execute_batch(
            "CREATE TABLE ns_inodes(ino INTEGER PRIMARY KEY, name TEXT);
             INSERT INTO ns_inodes VALUES (1, ''), (2, 'song.mp3');
             CREATE TABLE cache_blobs(hash TEXT PRIMARY KEY, dirty INTEGER);
             INSERT INTO cache_blobs VALUES ('ab', 1);
             CREATE TABLE sync_meta(key TEXT PRIMARY KEY, value TEXT);
             INSERT INTO sync_meta VALUES ('next_seq', '7');
             CREATE TABLE nsync_shadow(path TEXT PRIMARY KEY, value TEXT);",
        )
        .unwrap();
        drop(old);
        let path = mount_db(&home).unwrap();
        assert_eq!(path, home.mount_db_path());
        let m = open(&path).unwrap();
        let n: i64 = m
            .query_row("SELECT COUNT(*) FROM ns_inodes", [], |r| r.get(0))
            .unwrap();
        assert_eq!(n, 2);
        let dirty: i64 = m
            .query_row("SELECT dirty FROM cache_blobs WHERE hash = 'ab'", [], |r| {
                r.get(0)
            })
            .unwrap();
        assert_eq!(dirty, 1);
        assert!(sync_tables(&m).unwrap().is_empty());
        let s = open(&home.state_db_path()).unwrap();
        assert!(mount_tables(&s).unwrap().is_empty());
        let seq: String = s
            .query_row("SELECT value FROM sync_meta", [], |r| r.get(0))
            .unwrap();
        assert_eq!(seq, "7");
        // Once moved, never again.
        assert_eq!(mount_db(&home).unwrap(), path);
    }
}
