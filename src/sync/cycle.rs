//! One sync cycle, start to end:
//! 1. finish an apply a crash interrupted (pending intents);
//! 2. refuse to go on if the database was replaced by a backup (marker mismatch), unless
//!    the user accepts it;
//! 3. capture this device's edits, merge them into the state and queue them as a log
//!    (one `state.db` transaction with the new shadow);
//! 4. upload queued logs (put-if-absent, numbered per device);
//! 5. read the other devices' snapshots and logs after their cursors, each log merged and
//!    applied in one transaction; a bad log is set aside with its reason, the others still
//!    apply; set-aside logs are retried at every cycle;
//! 6. apply merged values of columns this database just gained;
//! 7. send what the apply changed here on its own (cleared references, cascades);
//! 8. compact this device's logs into a snapshot once they pile up;
//! 9. stamp the database (`sync_metadata`) so a restored backup is recognised next time.
//!
//! Must never: send a change received from another device as its own, or apply half a log.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use bytes::Bytes;
use rusqlite::Connection;
use serde::Serialize;

use super::apply;
use super::capture::{self, CaptureContext, Counts};
use super::changelog::{self, LogFile, COMPACT_AFTER_LOGS, MAX_CHANGES_PER_LOG};
use super::clock::{Clock, Hlc};
use super::conflicts::{self, ConflictRecord};
use super::invariants;
use super::merge::{Change, MergeState, Row, RowId, Rules, Value};
use super::schema::{self, Schema};
use super::state::StateDb;
use super::translate::refs_in;
use super::{open_app_db, SyncError};
use crate::config::{Config, Home};
use crate::store::ObjectStore;

#[derive(Debug, Default, Clone, Copy)]
pub struct Options {
    /// The database was restored on purpose: send its contents as new edits.
    pub accept_restore: bool,
}

/// What a cycle did, for `songfs sync` and the app's "Sync Now" button.
#[derive(Debug, Default, Clone, Serialize, serde::Deserialize)]
pub struct Summary {
    /// Rows changed in this database by other devices' edits, per table.
    pub received: BTreeMap<String, Counts>,
    /// This device's edits sent, per table.
    pub sent: BTreeMap<String, Counts>,
    pub logs_sent: usize,
    pub logs_applied: usize,
    pub conflicts: usize,
    pub errors: Vec<String>,
    pub restore_accepted: bool,
}

impl Summary {
    /// e.g. "Synced: 5 songs updated, 2 new, 1 conflict" (the words: `words.rs`).
    pub fn human(&self) -> String {
        format!("Synced: {}", super::words::message(self))
    }
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

fn load_clock(cfg: &Config, st: &StateDb) -> Result<Clock, SyncError> {
    let last: Option<Hlc> = st
        .meta("clock")?
        .and_then(|t| serde_json::from_str(&t).ok());
    Ok(Clock::new(&cfg.device_id, last))
}

fn save_clock(conn: &Connection, clock: &Clock) -> Result<(), SyncError> {
    StateDb::set_meta(
        conn,
        "clock",
        &serde_json::to_string(clock.last()).expect("encodes"),
    )
}

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
fn stamp(cfg: &Config, app: &Connection, st: &StateDb) -> Result<(), SyncError> {
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
fn restored(app: &Connection, st: &StateDb) -> Result<Option<String>, SyncError> {
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

fn rules() -> Rules {
    Rules::default()
}

/// Merges changes into the stored row states (in the caller's transaction), returning
/// the rows whose state changed.
fn merge_into_state(
    st: &StateDb,
    changes: &[Change],
    cache: &mut MergeState,
) -> Result<BTreeSet<RowId>, SyncError> {
    let mut changed = BTreeSet::new();
    for c in changes {
        if !cache.rows.contains_key(&c.row) {
            if let Some(s) = st.row_state(&c.row)? {
                cache.rows.insert(c.row.clone(), s);
            }
        }
        if cache.apply(c) {
            changed.insert(c.row.clone());
        }
    }
    save_rows(st, cache, &changed)?;
    Ok(changed)
}

/// Stores the merged state of `rows` and the references they hold.
fn save_rows(st: &StateDb, m: &MergeState, rows: &BTreeSet<RowId>) -> Result<(), SyncError> {
    let rules = rules();
    for rid in rows {
        let Some(s) = m.rows.get(rid) else { continue };
        StateDb::put_row_state(&st.conn, rid, s)?;
        let refs: Vec<(String, String)> = s
            .fields(&rules, &rid.table)
            .iter()
            .flat_map(|(col, v)| {
                refs_in(v)
                    .into_iter()
                    .map(move |(t, g)| (col.clone(), format!("{t}/{g}")))
            })
            .collect();
        StateDb::put_parents(&st.conn, rid, &refs)?;
    }
    Ok(())
}

/// Captures this device's edits and queues them (shadow, merged state and outbox in one
/// `state.db` transaction). Returns the number of changes.
fn capture_and_queue(
    cfg: &Config,
    app: &Connection,
    st: &StateDb,
    schema: &Schema,
    sent: &mut BTreeMap<String, Counts>,
) -> Result<usize, SyncError> {
    let mut shadows = BTreeMap::new();
    for &t in schema::SYNCED_TABLES {
        shadows.insert(t.to_string(), st.shadow_hashes(t)?);
    }
    let mut ids = st.id_map()?;
    let mut clock = load_clock(cfg, st)?;
    let private = cfg.private_config_keys();
    let first = !st.has_snapshot()?;
    let ctx = CaptureContext {
        private_config_keys: &private,
        mount: cfg.mount_point.as_deref(),
        first,
        now_ms: now_ms(),
    };
    // A read transaction: one consistent view of all tables while the app writes.
    app.execute_batch("BEGIN")?;
    let captured = capture::capture(app, st, schema, &shadows, &mut ids, &mut clock, &ctx);
    app.execute_batch("COMMIT")?;
    let captured = captured?;
    let n = captured.changes.len();
    let mut cache = MergeState::default();
    // Unchecked: reads through `st` in between see (and belong to) this transaction.
    let tx = super::state::write_tx(&st.conn)?;
    merge_into_state(st, &captured.changes, &mut cache)?;
    for chunk in captured.changes.chunks(MAX_CHANGES_PER_LOG) {
        tx.execute(
            "INSERT INTO sync_outbox(changes) VALUES (?1)",
            [serde_json::to_vec(chunk).expect("changes encode")],
        )?;
    }
    for (t, row) in &captured.shadow_puts {
        StateDb::put_shadow(&tx, t, row)?;
    }
    for (t, k) in &captured.shadow_removes {
        StateDb::remove_shadow(&tx, t, k)?;
    }
    save_clock(&tx, &clock)?;
    if first {
        StateDb::set_meta(&tx, "first_capture_at", &apply::now_text())?;
    }
    let cols = column_lists(schema);
    for (t, c) in &cols {
        StateDb::set_meta(&tx, &format!("columns:{t}"), c)?;
    }
    tx.commit()?;
    for (t, c) in captured.counts {
        let e = sent.entry(t).or_default();
        e.new += c.new;
        e.updated += c.updated;
        e.deleted += c.deleted;
    }
    Ok(n)
}

fn column_lists(schema: &Schema) -> BTreeMap<String, String> {
    schema
        .tables
        .values()
        .map(|t| {
            let cols: Vec<&str> = t.columns.iter().map(|c| c.name.as_str()).collect();
            (t.name.clone(), cols.join(","))
        })
        .collect()
}

/// Columns present now that the state had not seen at the last capture, per table.
fn new_columns(st: &StateDb, schema: &Schema) -> Result<BTreeMap<String, Vec<String>>, SyncError> {
    let mut out = BTreeMap::new();
    for t in schema.tables.values() {
        let Some(known) = st.meta(&format!("columns:{}", t.name))? else {
            continue;
        };
        let known: BTreeSet<&str> = known.split(',').collect();
        let added: Vec<String> = t
            .columns
            .iter()
            .filter(|c| !known.contains(c.name.as_str()))
            .map(|c| c.name.clone())
            .collect();
        if !added.is_empty() {
            out.insert(t.name.clone(), added);
        }
    }
    Ok(out)
}

/// The first capture, taken by `songfs init --db` (no store access).
pub fn capture_only(cfg: &Config, app: &Connection, st: &mut StateDb) -> Result<usize, SyncError> {
    let schema = schema::introspect(app)?;
    let n = capture_and_queue(cfg, app, st, &schema, &mut BTreeMap::new())?;
    stamp(cfg, app, st)?;
    Ok(n)
}

/// Told `(applied, to apply)` as the other devices' logs and snapshots are applied, so
/// a long first sync can show progress.
pub type Progress = dyn Fn(usize, usize) + Send + Sync;

/// One sync cycle against the store. Blocking; store calls run on `rt`, which must be a
/// multi-thread runtime (a current-thread runtime's handle cannot drive network I/O).
pub fn run(
    cfg: &Config,
    home: &Home,
    store: Arc<dyn ObjectStore>,
    rt: &tokio::runtime::Handle,
    opts: Options,
) -> Result<Summary, SyncError> {
    run_with_progress(cfg, home, store, rt, opts, None)
}

/// `run`, reporting the remote logs applied to `progress`.
pub fn run_with_progress(
    cfg: &Config,
    home: &Home,
    store: Arc<dyn ObjectStore>,
    rt: &tokio::runtime::Handle,
    opts: Options,
    progress: Option<&Progress>,
) -> Result<Summary, SyncError> {
    let db = cfg.db_path.as_ref().ok_or(SyncError::NoDatabase)?;
    let mut app = open_app_db(db)?;
    let mut st = StateDb::open(&home.state_db_path())?;
    let mut summary = Summary::default();
    let schema = schema::introspect(&app)?;

    // 1. An apply a crash interrupted.
    let recovered = apply::execute(&mut app, &mut st, &schema)?;
    if !recovered.counts.is_empty() {
        tracing::info!("finished an apply interrupted by a crash");
    }

    // 2. A restored backup.
    if let Some(why) = restored(&app, &st)? {
        if !opts.accept_restore {
            return Err(SyncError::RestoreDetected {
                db: db.display().to_string(),
                why,
            });
        }
        summary.restore_accepted = true;
        tracing::warn!("database restored from a backup: its contents are sent as new edits");
    }

    // 3. Capture.
    let added = new_columns(&st, &schema)?;
    capture_and_queue(cfg, &app, &st, &schema, &mut summary.sent)?;

    // 4. Upload.
    summary.logs_sent += upload(cfg, &*store, rt, &mut st)?;

    // 5. Other devices.
    let mut ctx = ApplyContext {
        cfg,
        schema: &schema,
        conflicts: Vec::new(),
        follow_up: false,
        progress,
    };
    pull(&mut ctx, &mut app, &mut st, &*store, rt, &mut summary)?;

    // 6. The invariants after this device's own edits: a local edit can end a correction
    // (a rename frees the name another row was moved off), and no remote log may come to
    // recompute it here.
    let own: Vec<&str> = invariants::WHOLE_TABLES
        .into_iter()
        .filter(|t| summary.sent.contains_key(*t))
        .collect();
    for table in own {
        let rows: BTreeSet<RowId> = st.row_ids(table)?.into_iter().collect();
        apply_rows(&mut ctx, &mut app, &mut st, rows, &[], None, &mut summary)?;
    }

    // 7. Columns this database just gained.
    for (table, cols) in &added {
        tracing::info!(
            table,
            ?cols,
            "new columns: applying merged values kept for them"
        );
        let rows: BTreeSet<RowId> = st.row_ids(table)?.into_iter().collect();
        apply_rows(&mut ctx, &mut app, &mut st, rows, &[], None, &mut summary)?;
    }

    // 8. What the apply changed here on its own.
    if ctx.follow_up {
        capture_and_queue(cfg, &app, &st, &schema, &mut summary.sent)?;
        summary.logs_sent += upload(cfg, &*store, rt, &mut st)?;
    }

    // 9. Compaction.
    if let Err(e) = compact_own(cfg, &*store, rt) {
        tracing::warn!(error = %e, "compacting this device's logs failed; retried next cycle");
    }

    // 10. Stamp.
    stamp(cfg, &app, &st)?;
    let _ = rt.block_on(
        store.put(
            &format!("devices/{}.json", cfg.device_id),
            Bytes::from(
                serde_json::to_vec(&serde_json::json!({
                    "device_id": cfg.device_id, "name": cfg.device_name,
                    "last_seen": apply::now_text(),
                }))
                .expect("encodes"),
            ),
        ),
    );
    summary.conflicts = ctx.conflicts.len();
    conflicts::append(&cfg.conflicts_log_path(), &ctx.conflicts);
    Ok(summary)
}

/// Numbers and uploads queued logs. Returns how many went up.
fn upload(
    cfg: &Config,
    store: &dyn ObjectStore,
    rt: &tokio::runtime::Handle,
    st: &mut StateDb,
) -> Result<usize, SyncError> {
    let mut sent = 0;
    for entry in st.outbox()? {
        let (seq, body) = match (entry.seq, entry.log) {
            (Some(s), Some(b)) => (s, b),
            _ => {
                let changes: Vec<Change> = serde_json::from_slice(&entry.changes)
                    .map_err(|e| SyncError::Other(format!("state.db outbox is unreadable: {e}")))?;
                if changes.is_empty() {
                    st.conn
                        .execute("DELETE FROM sync_outbox WHERE id = ?1", [entry.id])?;
                    continue;
                }
                let seq = next_seq(cfg, store, rt, st)?;
                let log = LogFile {
                    device_id: cfg.device_id.clone(),
                    sync_version: changelog::SYNC_VERSION,
                    timestamp: apply::now_text(),
                    seq,
                    changes,
                };
                let body = changelog::encode(&log);
                let tx = super::state::write_tx(&st.conn)?;
                tx.execute(
                    "UPDATE sync_outbox SET seq = ?1, log = ?2 WHERE id = ?3",
                    rusqlite::params![seq as i64, body, entry.id],
                )?;
                StateDb::set_meta(&tx, "next_seq", &(seq + 1).to_string())?;
                tx.commit()?;
                (seq, body)
            }
        };
        let key = changelog::log_key(&cfg.device_id, seq);
        let written = rt.block_on(store.put_if_absent(&key, Bytes::from(body.clone())))?;
        if !written {
            let existing = rt.block_on(store.get(&key))?;
            if existing.as_ref() != body.as_slice() {
                return Err(SyncError::Other(format!(
                    "{key} already exists in the store with other content: another songfs uses this \
                     device id (copy of ~/.songfs?); run `songfs init --force` on one of them"
                )));
            }
        }
        st.conn
            .execute("DELETE FROM sync_outbox WHERE id = ?1", [entry.id])?;
        sent += 1;
    }
    Ok(sent)
}

fn next_seq(
    cfg: &Config,
    store: &dyn ObjectStore,
    rt: &tokio::runtime::Handle,
    st: &StateDb,
) -> Result<u64, SyncError> {
    if let Some(n) = st.meta("next_seq")?.and_then(|s| s.parse().ok()) {
        return Ok(n);
    }
    // First upload from this state: continue after whatever this device id already wrote.
    let mut max = 0;
    for prefix in ["logs", "snapshots"] {
        for k in rt.block_on(store.list(&format!("{prefix}/{}/", cfg.device_id)))? {
            if let Some((_, s)) = changelog::parse_key(&k) {
                max = max.max(s);
            }
        }
    }
    Ok(max + 1)
}

struct ApplyContext<'a> {
    cfg: &'a Config,
    schema: &'a Schema,
    conflicts: Vec<ConflictRecord>,
    follow_up: bool,
    progress: Option<&'a Progress>,
}

/// Reads and applies the other devices' snapshots and logs after their cursors.
fn pull(
    ctx: &mut ApplyContext<'_>,
    app: &mut Connection,
    st: &mut StateDb,
    store: &dyn ObjectStore,
    rt: &tokio::runtime::Handle,
    summary: &mut Summary,
) -> Result<(), SyncError> {
    let mut logs: BTreeMap<String, Vec<u64>> = BTreeMap::new();
    let mut snaps: BTreeMap<String, u64> = BTreeMap::new();
    for k in rt.block_on(store.list("logs/"))? {
        if let Some((d, s)) = changelog::parse_key(&k) {
            logs.entry(d).or_default().push(s);
        }
    }
    for k in rt.block_on(store.list("snapshots/"))? {
        if let Some((d, s)) = changelog::parse_key(&k) {
            let e = snaps.entry(d).or_default();
            *e = (*e).max(s);
        }
    }
    let devices: BTreeSet<String> = logs.keys().chain(snaps.keys()).cloned().collect();
    let already: BTreeSet<(String, u64)> =
        st.rejected()?.into_iter().map(|(d, s, _)| (d, s)).collect();
    let (mut done, mut total) = (0, 0);
    for device in devices.iter().filter(|d| **d != ctx.cfg.device_id) {
        // What the loop below will apply: the newest snapshot past the cursor (if any),
        // then the logs after it.
        let cursor = st.cursor(device)?;
        let from = snaps.get(device).copied().filter(|s| *s > cursor);
        let after = from.unwrap_or(cursor);
        total += usize::from(from.is_some())
            + logs
                .get(device)
                .map_or(0, |v| v.iter().filter(|s| **s > after).count());
    }
    if let Some(p) = ctx.progress.filter(|_| total > 0) {
        p(0, total);
    }
    let mut step = |ctx: &ApplyContext<'_>| {
        done += 1;
        if let Some(p) = ctx.progress {
            p(done.min(total), total);
        }
    };
    for device in devices.iter().filter(|d| **d != ctx.cfg.device_id) {
        let mut cursor = st.cursor(device)?;
        if let Some(&s) = snaps.get(device) {
            if s > cursor {
                let key = changelog::snapshot_key(device, s);
                let applied = apply_object(ctx, app, st, store, rt, &key, device, s, summary)?;
                step(ctx);
                if !applied {
                    continue;
                }
                cursor = s;
            }
        }
        let mut seqs = logs.get(device).cloned().unwrap_or_default();
        seqs.sort();
        for seq in seqs.into_iter().filter(|s| *s > cursor) {
            let key = changelog::log_key(device, seq);
            let applied = apply_object(ctx, app, st, store, rt, &key, device, seq, summary)?;
            step(ctx);
            if !applied {
                break;
            }
        }
    }
    let set_aside_now: BTreeSet<(String, u64)> = st
        .rejected()?
        .into_iter()
        .map(|(d, s, _)| (d, s))
        .filter(|k| !already.contains(k))
        .collect();
    // Logs set aside in earlier cycles (unknown table, newer format, ...): this database
    // or this songfs may know them now. Their error was reported when they were set aside.
    for (device, seq, _) in st.rejected()? {
        if set_aside_now.contains(&(device.clone(), seq)) {
            continue;
        }
        let key = changelog::log_key(&device, seq);
        let fetched = match rt.block_on(store.head(&key)) {
            Ok(Some(size)) if size as usize <= changelog::MAX_OBJECT_BYTES => {
                rt.block_on(store.get(&key)).map(Some)
            }
            Ok(Some(_)) => Ok(None),
            Ok(None) => {
                st.conn.execute(
                    "DELETE FROM sync_rejected WHERE device = ?1 AND seq = ?2",
                    rusqlite::params![device, seq as i64],
                )?;
                continue;
            }
            Err(e) => Err(e),
        };
        let bytes = match fetched {
            Ok(Some(b)) => b,
            Ok(None) => continue,
            Err(e) => {
                tracing::debug!(key, error = %e, "set-aside log not retried");
                continue;
            }
        };
        match parse_checked(ctx, &key, &bytes) {
            Ok(log) => {
                apply_log(ctx, app, st, &log, &device, None, summary)?;
                st.conn.execute(
                    "DELETE FROM sync_rejected WHERE device = ?1 AND seq = ?2",
                    rusqlite::params![device, seq as i64],
                )?;
                tracing::info!(key, "a log set aside earlier is applied now");
            }
            Err(e) => tracing::debug!(error = %e, "set-aside log still refused"),
        }
    }
    Ok(())
}

fn parse_checked(ctx: &ApplyContext<'_>, key: &str, bytes: &[u8]) -> Result<LogFile, SyncError> {
    let log = changelog::decode(key, bytes)?;
    changelog::check_against(key, &log, ctx.schema)?;
    Ok(log)
}

/// Fetches, checks and applies one object. Returns false when the device's remaining
/// logs must wait (the store failed); a bad log is set aside and the cursor moves on.
#[allow(clippy::too_many_arguments)]
fn apply_object(
    ctx: &mut ApplyContext<'_>,
    app: &mut Connection,
    st: &mut StateDb,
    store: &dyn ObjectStore,
    rt: &tokio::runtime::Handle,
    key: &str,
    device: &str,
    seq: u64,
    summary: &mut Summary,
) -> Result<bool, SyncError> {
    if let Some(size) = rt.block_on(store.head(key))? {
        if size as usize > changelog::MAX_OBJECT_BYTES {
            let e = SyncError::BadLog {
                key: key.into(),
                why: format!("{size} bytes is over the size limit; it was not read"),
            };
            set_aside(st, device, seq, &e, summary)?;
            return Ok(true);
        }
    }
    let bytes = match rt.block_on(store.get(key)) {
        Ok(b) => b,
        Err(e) => {
            // Compacted away meanwhile, or the store is down: the next cycle re-lists.
            summary.errors.push(format!("{key}: {e}"));
            return Ok(false);
        }
    };
    match parse_checked(ctx, key, &bytes) {
        Ok(log) => {
            apply_log(ctx, app, st, &log, device, Some(seq), summary)?;
            Ok(true)
        }
        Err(e) => {
            set_aside(st, device, seq, &e, summary)?;
            Ok(true)
        }
    }
}

fn set_aside(
    st: &mut StateDb,
    device: &str,
    seq: u64,
    e: &SyncError,
    summary: &mut Summary,
) -> Result<(), SyncError> {
    tracing::warn!(error = %e, "change log set aside");
    summary.errors.push(e.to_string());
    let tx = super::state::write_tx(&st.conn)?;
    tx.execute(
        "INSERT OR REPLACE INTO sync_rejected(device, seq, reason) VALUES (?1, ?2, ?3)",
        rusqlite::params![device, seq as i64, e.to_string()],
    )?;
    StateDb::set_cursor(&tx, device, seq)?;
    tx.commit()?;
    Ok(())
}

/// Merges one log and applies the affected rows.
fn apply_log(
    ctx: &mut ApplyContext<'_>,
    app: &mut Connection,
    st: &mut StateDb,
    log: &LogFile,
    device: &str,
    seq: Option<u64>,
    summary: &mut Summary,
) -> Result<(), SyncError> {
    let private = ctx.cfg.private_config_keys();
    let changes: Vec<Change> = log
        .changes
        .iter()
        .filter(|c| !(c.row.table == "config" && private.contains(&c.row.gid)))
        .cloned()
        .collect();
    let rows: BTreeSet<RowId> = changes.iter().map(|c| c.row.clone()).collect();
    apply_rows(
        ctx,
        app,
        st,
        rows,
        &changes,
        seq.map(|s| (device, s)),
        summary,
    )?;
    summary.logs_applied += 1;
    Ok(())
}

/// Merges `changes` (if any) and writes the resolved state of `rows` (plus the rows
/// their liveness or the invariants depend on) into the app database.
fn apply_rows(
    ctx: &mut ApplyContext<'_>,
    app: &mut Connection,
    st: &mut StateDb,
    rows: BTreeSet<RowId>,
    changes: &[Change],
    cursor: Option<(&str, u64)>,
    summary: &mut Summary,
) -> Result<(), SyncError> {
    let rules = rules();
    // Rows that reference these: their liveness may follow (cascades), and a reference
    // that arrived before the row it names was written as NULL and resolves now. And the
    // parents their liveness depends on.
    let mut affected = rows.clone();
    for r in &rows {
        for (child, _) in st.children(r)? {
            affected.insert(child);
        }
    }
    let mut m = MergeState::default();
    let load = |m: &mut MergeState, r: &RowId| -> Result<(), SyncError> {
        if !m.rows.contains_key(r) {
            if let Some(s) = st.row_state(r)? {
                m.rows.insert(r.clone(), s);
            }
        }
        Ok(())
    };
    for r in &affected {
        load(&mut m, r)?;
        for (parent, _) in st.parents(r)? {
            if let Some((t, g)) = parent.split_once('/') {
                load(&mut m, &RowId::new(t, g))?;
            }
        }
    }
    // The invariants look across all rows of these tables, and all of them are written
    // again: a correction made earlier (an artist's default cleared) must be undone here
    // when it no longer applies, though that row did not change.
    let mut whole_tables = Vec::new();
    for t in invariants::WHOLE_TABLES {
        if affected.iter().any(|r| r.table == t) {
            for r in st.row_ids(t)? {
                load(&mut m, &r)?;
                whole_tables.push(r);
            }
        }
    }
    affected.extend(whole_tables);
    // Before: to tell which conflicts this log created.
    let before_conflicts = field_conflicts(&m, &rules, &rows);
    let before_delete: BTreeSet<RowId> = rows
        .iter()
        .filter(|r| m.delete_conflict(r).is_some())
        .cloned()
        .collect();
    let mut clock = load_clock(ctx.cfg, st)?;
    for c in changes {
        clock.observe(c.event.clock());
        m.apply(c);
    }
    // Resolve, then restore the invariants.
    let mut resolved: BTreeMap<RowId, Option<Row>> = affected
        .iter()
        .map(|r| (r.clone(), m.resolve(&rules, r)))
        .collect();
    let fixes = invariants::corrections(&m, &rules);
    for f in &fixes {
        let entry = resolved
            .entry(f.row.clone())
            .or_insert_with(|| m.resolve(&rules, &f.row));
        if let Some(row) = entry {
            let before = row.insert(f.column.clone(), f.value.clone());
            if affected.contains(&f.row) || rows.iter().any(|r| r.table == f.row.table) {
                ctx.conflicts.push(ConflictRecord {
                    at: apply::now_text(),
                    kind: "invariant".into(),
                    table: f.row.table.clone(),
                    row: f.row.gid.clone(),
                    local_id: None,
                    column: Some(f.column.clone()),
                    kept: f.value.clone(),
                    lost: before.unwrap_or(Value::Null),
                    kept_by: None,
                    lost_by: None,
                    why: f.reason.to_string(),
                });
            }
        }
    }
    // Conflicts this log created.
    for (rid, col, kept, kept_clock, lost, lost_clock) in field_conflicts(&m, &rules, &rows) {
        if before_conflicts
            .iter()
            .any(|b| b.0 == rid && b.1 == col && b.5 == lost_clock)
        {
            continue;
        }
        ctx.conflicts.push(ConflictRecord {
            at: apply::now_text(),
            kind: "field".into(),
            table: rid.table.clone(),
            row: rid.gid.clone(),
            local_id: None,
            column: Some(col),
            kept,
            lost,
            kept_by: Some(kept_clock.device),
            lost_by: Some(lost_clock.device),
            why: "edited on two devices without seeing each other's edit".into(),
        });
    }
    for rid in &rows {
        if let Some(dc) = m.delete_conflict(rid) {
            if !before_delete.contains(rid) {
                ctx.conflicts.push(ConflictRecord {
                    at: apply::now_text(),
                    kind: "delete".into(),
                    table: rid.table.clone(),
                    row: rid.gid.clone(),
                    local_id: None,
                    column: None,
                    kept: serde_json::to_value(m.resolve(&rules, rid)).unwrap_or(Value::Null),
                    lost: Value::String("deleted".into()),
                    kept_by: Some(dc.edit_clock.device),
                    lost_by: Some(dc.delete_clock.device),
                    why: "deleted on one device while edited on another: the newer edit keeps the row".into(),
                });
            }
        }
    }
    // A row known only from edits, its creation not received yet (another device's log
    // edits a row whose creator's log comes later): nothing to write until it arrives; a
    // row of just the edited fields would take defaults for the rest, and its name could
    // stand in the way of the real rows.
    resolved
        .retain(|rid, row| row.is_none() || m.rows.get(rid).is_some_and(|s| s.created().is_some()));
    // Plan, then store merged state + cursor + intents in one transaction.
    let mut ids = st.id_map()?;
    let private = ctx.cfg.private_config_keys();
    let intents = apply::plan(
        app,
        ctx.schema,
        &resolved,
        &mut ids,
        ctx.cfg.mount_point.as_deref(),
        &private,
    )?;
    let tx = super::state::write_tx(&st.conn)?;
    save_rows(st, &m, &rows)?;
    if let Some((device, seq)) = cursor {
        StateDb::set_cursor(&tx, device, seq)?;
    }
    save_clock(&tx, &clock)?;
    for i in &intents {
        StateDb::put_intent(&tx, i)?;
    }
    tx.commit()?;
    let out = apply::execute(app, st, ctx.schema)?;
    for (t, c) in out.counts {
        let e = summary.received.entry(t).or_default();
        e.new += c.new;
        e.updated += c.updated;
        e.deleted += c.deleted;
    }
    ctx.conflicts.extend(out.conflicts);
    ctx.follow_up |= out.follow_up;
    Ok(())
}

type ConflictKey = (RowId, String, Value, Hlc, Value, Hlc);

fn field_conflicts(m: &MergeState, rules: &Rules, rows: &BTreeSet<RowId>) -> Vec<ConflictKey> {
    let mut out = Vec::new();
    for r in rows {
        if let Some(s) = m.rows.get(r) {
            for c in s.conflicts(rules, &r.table) {
                // Two devices that hold the same value (the seeded rows) do not conflict,
                // nor do the install times of two copies of a seeded row.
                let seeded_stamp = c.kept_clock.wall_ms == 0
                    && c.lost_clock.wall_ms == 0
                    && (c.column == "created_at" || c.column == "updated_at");
                // (A value held before the first sync never loses to a real edit here: the
                // merge takes such values off the frontier once a real edit is known.)
                if c.kept != c.lost && !seeded_stamp {
                    out.push((
                        r.clone(),
                        c.column,
                        c.kept,
                        c.kept_clock,
                        c.lost,
                        c.lost_clock,
                    ));
                }
            }
        }
    }
    out
}

/// Folds this device's logs into a snapshot once they pile up, then deletes them.
fn compact_own(
    cfg: &Config,
    store: &dyn ObjectStore,
    rt: &tokio::runtime::Handle,
) -> Result<(), SyncError> {
    let mut seqs: Vec<u64> = rt
        .block_on(store.list(&format!("logs/{}/", cfg.device_id)))?
        .iter()
        .filter_map(|k| changelog::parse_key(k).map(|(_, s)| s))
        .collect();
    if seqs.len() < COMPACT_AFTER_LOGS {
        return Ok(());
    }
    seqs.sort();
    let snaps: Vec<u64> = rt
        .block_on(store.list(&format!("snapshots/{}/", cfg.device_id)))?
        .iter()
        .filter_map(|k| changelog::parse_key(k).map(|(_, s)| s))
        .collect();
    let mut changes = Vec::new();
    if let Some(&prev) = snaps.iter().max() {
        let key = changelog::snapshot_key(&cfg.device_id, prev);
        changes.extend(changelog::decode(&key, &rt.block_on(store.get(&key))?)?.changes);
    }
    for &s in &seqs {
        let key = changelog::log_key(&cfg.device_id, s);
        changes.extend(changelog::decode(&key, &rt.block_on(store.get(&key))?)?.changes);
    }
    let upto = *seqs.last().expect("not empty");
    let snap = LogFile {
        device_id: cfg.device_id.clone(),
        sync_version: changelog::SYNC_VERSION,
        timestamp: apply::now_text(),
        seq: upto,
        changes: changelog::compact(changes),
    };
    let key = changelog::snapshot_key(&cfg.device_id, upto);
    rt.block_on(store.put_if_absent(&key, Bytes::from(changelog::encode(&snap))))?;
    for &s in &seqs {
        rt.block_on(store.delete(&changelog::log_key(&cfg.device_id, s)))?;
    }
    for s in snaps.into_iter().filter(|s| *s < upto) {
        rt.block_on(store.delete(&changelog::snapshot_key(&cfg.device_id, s)))?;
    }
    tracing::info!(
        upto,
        logs = seqs.len(),
        "this device's logs compacted into a snapshot"
    );
    Ok(())
}
