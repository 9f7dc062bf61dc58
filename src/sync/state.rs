//! songfs's own sync tables in `state.db` (all prefixed `sync_`): the shadow copy of the
//! app database, the merged state of every row, the pending intent of an apply; and the
//! database stream's bookkeeping (outbox, cursors, logs set aside: `transport/state.rs`).
//!
//! Must never touch the app database; every multi-step change is one transaction here.

use std::collections::BTreeMap;
use std::path::Path;

use rusqlite::{params, Connection, OptionalExtension};

use super::merge::{RowId, RowState};
use super::transport::state::DATABASE_TABLES;
use super::transport::StreamState;
use super::SyncError;

pub struct StateDb {
    pub conn: Connection,
}

/// One row of the shadow copy: the row as this device last saw (or wrote) it.
#[derive(Debug, Clone, PartialEq)]
pub struct ShadowRow {
    pub key: String,
    pub gid: String,
    /// The row's local column values as canonical JSON text (a sorted object).
    pub data: String,
}

/// What an apply is about to write for one row (kept until the shadow is updated, so a
/// crash between the app database's commit and ours is finished on the next start
/// instead of turning into "local edits").
#[derive(Debug, Clone, PartialEq)]
pub struct Intent {
    pub table: String,
    pub gid: String,
    /// The local key chosen for the row (None: decided from the values, see apply).
    pub key: Option<String>,
    /// The local values to write, canonical JSON text; None = delete.
    pub data: Option<String>,
}

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS sync_shadow (
    tbl TEXT NOT NULL, key TEXT NOT NULL, gid TEXT NOT NULL, data TEXT NOT NULL,
    hash BLOB NOT NULL, PRIMARY KEY (tbl, key));
CREATE UNIQUE INDEX IF NOT EXISTS sync_shadow_gid ON sync_shadow(tbl, gid);
CREATE TABLE IF NOT EXISTS sync_tombs (
    tbl TEXT NOT NULL, key TEXT NOT NULL, gid TEXT NOT NULL, PRIMARY KEY (tbl, key));
CREATE TABLE IF NOT EXISTS sync_rows (
    tbl TEXT NOT NULL, gid TEXT NOT NULL, state TEXT NOT NULL, PRIMARY KEY (tbl, gid));
CREATE TABLE IF NOT EXISTS sync_parents (
    parent TEXT NOT NULL, child_tbl TEXT NOT NULL, child_gid TEXT NOT NULL, col TEXT NOT NULL,
    PRIMARY KEY (parent, child_tbl, child_gid, col));
CREATE INDEX IF NOT EXISTS sync_parents_child ON sync_parents(child_tbl, child_gid);
CREATE TABLE IF NOT EXISTS sync_intent (
    tbl TEXT NOT NULL, gid TEXT NOT NULL, key TEXT, data TEXT, PRIMARY KEY (tbl, gid));
";

/// A write transaction on state.db that takes the write lock at BEGIN. state.db is shared
/// with the mount's cache and catalog, which commit all the time; a deferred transaction
/// that reads and then writes fails at once with SQLITE_BUSY when one of their commits
/// came in between (WAL mode cannot wait there), while BEGIN IMMEDIATE waits out the busy
/// timeout like any other writer.
pub fn write_tx(conn: &Connection) -> rusqlite::Result<rusqlite::Transaction<'_>> {
    rusqlite::Transaction::new_unchecked(conn, rusqlite::TransactionBehavior::Immediate)
}

impl StateDb {
    pub fn open(path: &Path) -> Result<StateDb, SyncError> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)
                .map_err(|e| SyncError::Other(format!("cannot create {}: {e}", dir.display())))?;
        }
        let conn = crate::db::open(path)?;
        StreamState::new(&conn, &DATABASE_TABLES).create()?;
        conn.execute_batch(SCHEMA)?;
        Ok(StateDb { conn })
    }

    /// The database stream's bookkeeping (outbox, cursors, logs set aside, clock).
    pub fn stream(&self) -> StreamState<'_> {
        StreamState::new(&self.conn, &DATABASE_TABLES)
    }

    pub fn meta(&self, key: &str) -> Result<Option<String>, SyncError> {
        Ok(self.stream().meta(key)?)
    }

    pub fn set_meta(conn: &Connection, key: &str, value: &str) -> Result<(), SyncError> {
        Ok(StreamState::new(conn, &DATABASE_TABLES).set_meta(key, value)?)
    }

    /// True once a first capture has been taken.
    pub fn has_snapshot(&self) -> Result<bool, SyncError> {
        Ok(self.meta("first_capture_at")?.is_some())
    }

    /// Key → (gid, row hash) of every shadow row of a table; the data is read only for
    /// the rows whose hash differs (a 10,000-song scan stays fast).
    pub fn shadow_hashes(
        &self,
        table: &str,
    ) -> Result<BTreeMap<String, (String, Vec<u8>)>, SyncError> {
        let mut stmt = self
            .conn
            .prepare_cached("SELECT key, gid, hash FROM sync_shadow WHERE tbl = ?1")?;
        let rows = stmt.query_map([table], |r| {
            Ok((r.get::<_, String>(0)?, (r.get(1)?, r.get(2)?)))
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    pub fn put_shadow(conn: &Connection, table: &str, row: &ShadowRow) -> Result<(), SyncError> {
        // A gid moves to a new key (a row re-inserted at a fresh rowid): drop its old entry.
        conn.prepare_cached("DELETE FROM sync_shadow WHERE tbl = ?1 AND gid = ?2 AND key <> ?3")?
            .execute(params![table, row.gid, row.key])?;
        let values: BTreeMap<String, super::merge::Value> =
            serde_json::from_str(&row.data).unwrap_or_default();
        let hash = super::capture::row_hash(values.iter().map(|(k, v)| (k.as_str(), v)));
        conn.prepare_cached(
            "INSERT INTO sync_shadow(tbl, key, gid, data, hash) VALUES (?1, ?2, ?3, ?4, ?5)
             ON CONFLICT(tbl, key) DO UPDATE SET gid = excluded.gid, data = excluded.data,
                 hash = excluded.hash",
        )?
        .execute(params![table, row.key, row.gid, row.data, hash])?;
        conn.prepare_cached("DELETE FROM sync_tombs WHERE tbl = ?1 AND key = ?2")?
            .execute(params![table, row.key])?;
        Ok(())
    }

    /// Removes a row from the shadow, remembering its gid (a child deleted later by a
    /// cascade still names its parent).
    pub fn remove_shadow(conn: &Connection, table: &str, key: &str) -> Result<(), SyncError> {
        conn.prepare_cached(
            "INSERT OR REPLACE INTO sync_tombs(tbl, key, gid)
             SELECT tbl, key, gid FROM sync_shadow WHERE tbl = ?1 AND key = ?2",
        )?
        .execute(params![table, key])?;
        conn.prepare_cached("DELETE FROM sync_shadow WHERE tbl = ?1 AND key = ?2")?
            .execute(params![table, key])?;
        Ok(())
    }

    pub fn tomb_gid(&self, table: &str, key: &str) -> Result<Option<String>, SyncError> {
        Ok(self
            .conn
            .prepare_cached("SELECT gid FROM sync_tombs WHERE tbl = ?1 AND key = ?2")?
            .query_row(params![table, key], |r| r.get(0))
            .optional()?)
    }

    pub fn row_state(&self, row: &RowId) -> Result<Option<RowState>, SyncError> {
        let text: Option<String> = self
            .conn
            .prepare_cached("SELECT state FROM sync_rows WHERE tbl = ?1 AND gid = ?2")?
            .query_row(params![row.table, row.gid], |r| r.get(0))
            .optional()?;
        match text {
            None => Ok(None),
            Some(t) => serde_json::from_str(&t).map(Some).map_err(|e| {
                SyncError::Other(format!(
                    "state.db holds an unreadable merge state for {}/{}: {e}",
                    row.table, row.gid
                ))
            }),
        }
    }

    /// Every row of a table that the merge state knows.
    pub fn row_ids(&self, table: &str) -> Result<Vec<RowId>, SyncError> {
        let mut stmt = self
            .conn
            .prepare_cached("SELECT gid FROM sync_rows WHERE tbl = ?1")?;
        let rows = stmt.query_map([table], |r| r.get::<_, String>(0))?;
        let mut out = Vec::new();
        for g in rows {
            out.push(RowId {
                table: table.to_string(),
                gid: g?,
            });
        }
        Ok(out)
    }

    pub fn put_row_state(conn: &Connection, row: &RowId, st: &RowState) -> Result<(), SyncError> {
        let text = serde_json::to_string(st)
            .map_err(|e| SyncError::Other(format!("cannot encode merge state: {e}")))?;
        conn.prepare_cached(
            "INSERT INTO sync_rows(tbl, gid, state) VALUES (?1, ?2, ?3)
             ON CONFLICT(tbl, gid) DO UPDATE SET state = excluded.state",
        )?
        .execute(params![row.table, row.gid, text])?;
        Ok(())
    }

    /// Records which rows `child` references (its `$ref` fields), so a parent's delete or
    /// return can find its children even when they are not in the database.
    pub fn put_parents(
        conn: &Connection,
        child: &RowId,
        refs: &[(String, String)],
    ) -> Result<(), SyncError> {
        conn.prepare_cached("DELETE FROM sync_parents WHERE child_tbl = ?1 AND child_gid = ?2")?
            .execute(params![child.table, child.gid])?;
        let mut ins = conn.prepare_cached(
            "INSERT OR IGNORE INTO sync_parents(parent, child_tbl, child_gid, col) VALUES (?1, ?2, ?3, ?4)",
        )?;
        for (col, parent) in refs {
            ins.execute(params![parent, child.table, child.gid, col])?;
        }
        Ok(())
    }

    /// (child row, column) of every row that references `parent` (`"<table>/<gid>"`).
    pub fn children(&self, parent: &RowId) -> Result<Vec<(RowId, String)>, SyncError> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT child_tbl, child_gid, col FROM sync_parents WHERE parent = ?1",
        )?;
        let rows = stmt.query_map([parent.to_string()], |r| {
            Ok((
                RowId {
                    table: r.get(0)?,
                    gid: r.get(1)?,
                },
                r.get(2)?,
            ))
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// The gid ↔ key map of every live row (no row data).
    pub fn id_map(&self) -> Result<super::identity::IdMap, SyncError> {
        let mut ids = super::identity::IdMap::default();
        let mut stmt = self.conn.prepare("SELECT tbl, key, gid FROM sync_shadow")?;
        let mut rows = stmt.query([])?;
        while let Some(r) = rows.next()? {
            let (t, k, g): (String, String, String) = (r.get(0)?, r.get(1)?, r.get(2)?);
            ids.insert(&t, &g, &k);
        }
        Ok(ids)
    }

    pub fn shadow_row(&self, table: &str, key: &str) -> Result<Option<ShadowRow>, SyncError> {
        Ok(self
            .conn
            .prepare_cached("SELECT key, gid, data FROM sync_shadow WHERE tbl = ?1 AND key = ?2")?
            .query_row(params![table, key], |r| {
                Ok(ShadowRow {
                    key: r.get(0)?,
                    gid: r.get(1)?,
                    data: r.get(2)?,
                })
            })
            .optional()?)
    }

    /// The parents `child` references (`"<table>/<gid>"`, column).
    pub fn parents(&self, child: &RowId) -> Result<Vec<(String, String)>, SyncError> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT parent, col FROM sync_parents WHERE child_tbl = ?1 AND child_gid = ?2",
        )?;
        let rows = stmt.query_map(params![child.table, child.gid], |r| {
            Ok((r.get(0)?, r.get(1)?))
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    pub fn intents(&self) -> Result<Vec<Intent>, SyncError> {
        let mut stmt = self
            .conn
            .prepare("SELECT tbl, gid, key, data FROM sync_intent")?;
        let rows = stmt.query_map([], |r| {
            Ok(Intent {
                table: r.get(0)?,
                gid: r.get(1)?,
                key: r.get(2)?,
                data: r.get(3)?,
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    pub fn put_intent(conn: &Connection, i: &Intent) -> Result<(), SyncError> {
        conn.prepare_cached(
            "INSERT OR REPLACE INTO sync_intent(tbl, gid, key, data) VALUES (?1, ?2, ?3, ?4)",
        )?
        .execute(params![i.table, i.gid, i.key, i.data])?;
        Ok(())
    }
}
