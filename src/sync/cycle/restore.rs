//! Restore detection: every cycle stamps the app database with a fresh marker (in its
//! `sync_metadata` table) and remembers it in the sync state; a database whose marker is
//! older, or missing, was replaced by a backup, and the cycle refuses to go on unless the
//! user accepts it (its rows would otherwise look like deletions of everything newer).
//! Must never stamp before the state remembers the marker (a crash then looks like a
//! restore, a safe refusal, never the other way round).

use super::*;

const MARKER_KEY: &str = "songfs_cycle";

fn ensure_sync_metadata(app: &Connection) -> Result<(), SyncError> {
    app.execute_batch(
        "CREATE TABLE IF NOT EXISTS sync_metadata (key TEXT PRIMARY KEY, value TEXT)",
    )?;
    Ok(())
}

fn app_marker(app: &Connection) -> Result<Option<String>, SyncError> {
    use rusqlite::OptionalExtension;
    let exists: bool = app.query_row(
        "SELECT COUNT(*) FROM sqlite_master WHERE type = 'table' AND name = 'sync_metadata'",
        [],
        |r| r.get::<_, i64>(0).map(|n| n > 0),
    )?;
    if !exists {
        return Ok(None);
    }
    Ok(app
        .query_row(
            "SELECT value FROM sync_metadata WHERE key = ?1",
            [MARKER_KEY],
            |r| r.get::<_, Option<String>>(0),
        )
        .optional()?
        .flatten())
}

/// Stamps the database with a fresh marker (and the seed's sync keys) and remembers it:
/// a file copied over the database later carries an older marker, or none.
pub(super) fn stamp(cfg: &Config, app: &Connection, st: &StateDb) -> Result<(), SyncError> {
    ensure_sync_metadata(app)?;
    let marker = hex::encode(rand::random::<[u8; 12]>());
    let now = apply::now_text();
    // The state remembers the new marker first: a crash in between then looks like a
    // restore (a safe refusal), never the other way round.
    StateDb::set_meta(&st.conn, "pending_marker", &marker)?;
    let mut stmt = app.prepare(
        "INSERT INTO sync_metadata(key, value) VALUES (?1, ?2)
         ON CONFLICT(key) DO UPDATE SET value = excluded.value",
    )?;
    app.execute_batch("BEGIN IMMEDIATE")?;
    let r = (|| -> Result<(), SyncError> {
        stmt.execute(["last_sync_at", now.as_str()])?;
        stmt.execute(["device_id", cfg.device_id.as_str()])?;
        stmt.execute(["sync_provider", "songfs"])?;
        stmt.execute([MARKER_KEY, marker.as_str()])?;
        Ok(())
    })();
    match r {
        Ok(()) => app.execute_batch("COMMIT")?,
        Err(e) => {
            let _ = app.execute_batch("ROLLBACK");
            return Err(e);
        }
    }
    StateDb::set_meta(&st.conn, "marker", &marker)?;
    Ok(())
}

/// Has the database been replaced since the last cycle? (None: no.)
pub(super) fn restored(app: &Connection, st: &StateDb) -> Result<Option<String>, SyncError> {
    let Some(mine) = st.meta("marker")? else {
        return Ok(None);
    };
    let theirs = app_marker(app)?;
    if theirs.as_deref() == Some(mine.as_str()) {
        return Ok(None);
    }
    if theirs.is_some() && theirs == st.meta("pending_marker")? {
        // Crash between stamping the database and remembering it.
        return Ok(None);
    }
    Ok(Some(match theirs {
        None => "it carries no songfs marker".into(),
        Some(_) => "its songfs marker is from an earlier sync".into(),
    }))
}
