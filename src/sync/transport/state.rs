//! A stream's bookkeeping in the sync database, in four tables named per stream (the
//! database stream keeps its historical `sync_*` names, the namespace `nsync_*`):
//! - meta: `next_seq` (the next number this device gives a log), `clock` (the hybrid
//!   clock's last value), `slot_taken` (the key whose slot another writer took);
//! - cursors: per other device, the highest seq applied or set aside;
//! - rejected: logs set aside, with the reason, retried at every cycle;
//! - outbox: batches of changes not yet in the store; a batch gets its seq and its log
//!   bytes (committed here) before the upload, so a retry sends identical bytes.
//!
//! Must never: lower a cursor, or drop an outbox batch that was not uploaded.

use rusqlite::{params, Connection, OptionalExtension};

use super::TransportError;
use crate::sync::clock::{Clock, Hlc};
use crate::sync::merge::Change;

/// The table names of one stream's state.
#[derive(Debug)]
pub struct StreamTables {
    pub meta: &'static str,
    pub cursors: &'static str,
    pub rejected: &'static str,
    pub outbox: &'static str,
}

pub const DATABASE_TABLES: StreamTables = StreamTables {
    meta: "sync_meta",
    cursors: "sync_cursors",
    rejected: "sync_rejected",
    outbox: "sync_outbox",
};

pub const NAMESPACE_TABLES: StreamTables = StreamTables {
    meta: "nsync_meta",
    cursors: "nsync_cursors",
    rejected: "nsync_rejected",
    outbox: "nsync_queue",
};

/// A batch waiting in the outbox.
#[derive(Debug, Clone)]
pub struct OutboxEntry {
    pub id: i64,
    /// The batch's changes (JSON list of `merge::Change`).
    pub changes: Vec<u8>,
    /// Once numbered: its seq and the log's exact bytes.
    pub seq: Option<u64>,
    pub log: Option<Vec<u8>>,
}

/// One stream's state on one connection (the caller's transaction, if it opened one).
#[derive(Clone, Copy)]
pub struct StreamState<'a> {
    pub conn: &'a Connection,
    pub tables: &'static StreamTables,
}

impl<'a> StreamState<'a> {
    pub fn new(conn: &'a Connection, tables: &'static StreamTables) -> StreamState<'a> {
        StreamState { conn, tables }
    }

    /// Creates the stream's tables if they are missing.
    pub fn create(&self) -> rusqlite::Result<()> {
        let t = self.tables;
        self.conn.execute_batch(&format!(
            "CREATE TABLE IF NOT EXISTS {} (key TEXT PRIMARY KEY, value TEXT NOT NULL);
             CREATE TABLE IF NOT EXISTS {} (device TEXT PRIMARY KEY, seq INTEGER NOT NULL);
             CREATE TABLE IF NOT EXISTS {} (
                 device TEXT NOT NULL, seq INTEGER NOT NULL, reason TEXT NOT NULL,
                 PRIMARY KEY (device, seq));
             CREATE TABLE IF NOT EXISTS {} (
                 id INTEGER PRIMARY KEY AUTOINCREMENT, changes BLOB NOT NULL, seq INTEGER,
                 log BLOB);",
            t.meta, t.cursors, t.rejected, t.outbox
        ))
    }

    pub fn meta(&self, key: &str) -> rusqlite::Result<Option<String>> {
        self.conn
            .prepare_cached(&format!(
                "SELECT value FROM {} WHERE key = ?1",
                self.tables.meta
            ))?
            .query_row([key], |r| r.get(0))
            .optional()
    }

    pub fn set_meta(&self, key: &str, value: &str) -> rusqlite::Result<()> {
        self.conn
            .prepare_cached(&format!(
                "INSERT INTO {}(key, value) VALUES (?1, ?2)
                 ON CONFLICT(key) DO UPDATE SET value = excluded.value",
                self.tables.meta
            ))?
            .execute(params![key, value])?;
        Ok(())
    }

    pub fn remove_meta(&self, key: &str) -> rusqlite::Result<()> {
        self.conn.execute(
            &format!("DELETE FROM {} WHERE key = ?1", self.tables.meta),
            [key],
        )?;
        Ok(())
    }

    /// The hybrid clock of `device`, resuming after its persisted last value.
    pub fn clock(&self, device: &str) -> rusqlite::Result<Clock> {
        let last: Option<Hlc> = self
            .meta("clock")?
            .and_then(|t| serde_json::from_str(&t).ok());
        Ok(Clock::new(device, last))
    }

    pub fn save_clock(&self, clock: &Clock) -> rusqlite::Result<()> {
        self.set_meta(
            "clock",
            &serde_json::to_string(clock.last()).expect("a clock encodes"),
        )
    }

    pub fn cursor(&self, device: &str) -> rusqlite::Result<u64> {
        Ok(self
            .conn
            .prepare_cached(&format!(
                "SELECT seq FROM {} WHERE device = ?1",
                self.tables.cursors
            ))?
            .query_row([device], |r| r.get::<_, i64>(0))
            .optional()?
            .unwrap_or(0) as u64)
    }

    /// Moves a cursor forward (never back).
    pub fn set_cursor(&self, device: &str, seq: u64) -> rusqlite::Result<()> {
        self.conn
            .prepare_cached(&format!(
                "INSERT INTO {}(device, seq) VALUES (?1, ?2)
                 ON CONFLICT(device) DO UPDATE SET seq = MAX(seq, excluded.seq)",
                self.tables.cursors
            ))?
            .execute(params![device, seq as i64])?;
        Ok(())
    }

    /// Logs set aside: (device, seq, reason).
    pub fn rejected(&self) -> rusqlite::Result<Vec<(String, u64, String)>> {
        let mut stmt = self.conn.prepare(&format!(
            "SELECT device, seq, reason FROM {} ORDER BY device, seq",
            self.tables.rejected
        ))?;
        let rows = stmt.query_map([], |r| {
            Ok((r.get(0)?, r.get::<_, i64>(1)? as u64, r.get(2)?))
        })?;
        rows.collect()
    }

    /// Sets a log aside and moves the cursor past it, in one transaction.
    pub fn reject(&self, device: &str, seq: u64, reason: &str) -> Result<(), TransportError> {
        self.set_aside(device, seq, reason, true)
    }

    /// Sets a log aside and leaves the cursor where it is (a log none of the user's
    /// devices wrote says nothing about how far that device got).
    pub fn reject_in_place(
        &self,
        device: &str,
        seq: u64,
        reason: &str,
    ) -> Result<(), TransportError> {
        self.set_aside(device, seq, reason, false)
    }

    fn set_aside(
        &self,
        device: &str,
        seq: u64,
        reason: &str,
        past: bool,
    ) -> Result<(), TransportError> {
        let tx = crate::sync::state::write_tx(self.conn)?;
        tx.execute(
            &format!(
                "INSERT OR REPLACE INTO {}(device, seq, reason) VALUES (?1, ?2, ?3)",
                self.tables.rejected
            ),
            params![device, seq as i64, reason],
        )?;
        if past {
            self.set_cursor(device, seq)?;
        }
        tx.commit()?;
        Ok(())
    }

    pub fn unreject(&self, device: &str, seq: u64) -> rusqlite::Result<()> {
        self.conn.execute(
            &format!(
                "DELETE FROM {} WHERE device = ?1 AND seq = ?2",
                self.tables.rejected
            ),
            params![device, seq as i64],
        )?;
        Ok(())
    }

    /// Queues changes for upload, split into batches of at most `per_log` changes.
    pub fn queue(&self, changes: &[Change], per_log: usize) -> rusqlite::Result<()> {
        let mut ins = self.conn.prepare_cached(&format!(
            "INSERT INTO {}(changes) VALUES (?1)",
            self.tables.outbox
        ))?;
        for chunk in changes.chunks(per_log.max(1)) {
            ins.execute([serde_json::to_vec(chunk).expect("changes encode")])?;
        }
        Ok(())
    }

    pub fn outbox(&self) -> rusqlite::Result<Vec<OutboxEntry>> {
        let mut stmt = self.conn.prepare(&format!(
            "SELECT id, changes, seq, log FROM {} ORDER BY id",
            self.tables.outbox
        ))?;
        let rows = stmt.query_map([], |r| {
            Ok(OutboxEntry {
                id: r.get(0)?,
                changes: r.get(1)?,
                seq: r.get::<_, Option<i64>>(2)?.map(|s| s as u64),
                log: r.get(3)?,
            })
        })?;
        rows.collect()
    }

    /// Gives a batch its seq and log bytes, and advances `next_seq`, in one transaction.
    pub fn number(&self, id: i64, seq: u64, log: &[u8]) -> rusqlite::Result<()> {
        let tx = crate::sync::state::write_tx(self.conn)?;
        tx.execute(
            &format!(
                "UPDATE {} SET seq = ?1, log = ?2 WHERE id = ?3",
                self.tables.outbox
            ),
            params![seq as i64, log, id],
        )?;
        self.set_meta("next_seq", &(seq + 1).to_string())?;
        tx.commit()
    }

    pub fn sent(&self, id: i64) -> rusqlite::Result<()> {
        self.conn.execute(
            &format!("DELETE FROM {} WHERE id = ?1", self.tables.outbox),
            [id],
        )?;
        Ok(())
    }

    /// For a move to a fresh device id: every queued batch loses its number (its log
    /// named the old id) and is numbered again from 1 at the next upload; nothing queued
    /// is dropped. Batches queued as finished logs keep their changes.
    pub fn renumber_all(&self) -> rusqlite::Result<usize> {
        let tx = crate::sync::state::write_tx(self.conn)?;
        let mut n = 0;
        for e in self.outbox()? {
            let changes = match (&e.log, e.changes.as_slice()) {
                (Some(log), b"[]") | (Some(log), b"") => {
                    serde_json::from_slice::<crate::sync::changelog::LogFile>(log)
                        .map(|l| serde_json::to_vec(&l.changes).expect("changes encode"))
                        .unwrap_or_else(|_| e.changes.clone())
                }
                _ => e.changes.clone(),
            };
            tx.execute(
                &format!(
                    "UPDATE {} SET changes = ?1, seq = NULL, log = NULL WHERE id = ?2",
                    self.tables.outbox
                ),
                params![changes, e.id],
            )?;
            n += 1;
        }
        self.remove_meta("next_seq")?;
        self.remove_meta("slot_taken")?;
        tx.commit()?;
        Ok(n)
    }
}
