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
//!
//! Here: the steps in order, capture and queueing. `restore.rs`: the marker that tells a
//! restored backup (steps 2 and 9). `receive.rs`: the database as the transport's receiver
//! (steps 5 to 7). The transport itself (steps 4, 5, 8) is `sync::transport`.
//!
//! Must never: send a change received from another device as its own, or apply half a log.

mod receive;
mod restore;

use receive::{apply_rows, ApplyContext, DbReceiver};
use restore::{restored, stamp};

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use bytes::Bytes;
use rusqlite::Connection;
use serde::Serialize;

use super::apply;
use super::capture::{self, CaptureContext, Counts};
use super::changelog::{self, LogFile, MAX_CHANGES_PER_LOG};
use super::clock::Clock;
use super::conflicts::{self, ConflictRecord};
use super::invariants;
use super::merge::{Change, MergeState, Row, RowId, Rules, Value};
use super::schema::{self, Schema};
use super::state::StateDb;
use super::translate::refs_in;
use super::transport::compact::compact_own;
use super::transport::send::send_queued;
use super::transport::state::DATABASE_TABLES;
use super::transport::{self, BlockingStore, Stream, StreamState, TransportError};
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
    Ok(st.stream().clock(&cfg.device_id)?)
}

fn save_clock(conn: &Connection, clock: &Clock) -> Result<(), SyncError> {
    Ok(StreamState::new(conn, &DATABASE_TABLES).save_clock(clock)?)
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
    StreamState::new(&tx, &DATABASE_TABLES).queue(&captured.changes, MAX_CHANGES_PER_LOG)?;
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
    let store = BlockingStore::new(store, rt.clone());
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
    summary.logs_sent += send_queued(&store, Stream::DATABASE, st.stream(), &cfg.device_id)?;

    // 5. Other devices.
    let mut ctx = ApplyContext {
        cfg,
        schema: &schema,
        conflicts: Vec::new(),
        follow_up: false,
        progress,
    };
    let report = transport::pull(
        &store,
        Stream::DATABASE,
        &cfg.device_id,
        &mut DbReceiver {
            ctx: &mut ctx,
            app: &mut app,
            st: &mut st,
            summary: &mut summary,
        },
    )?;
    summary.errors.extend(report.errors);

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
        summary.logs_sent += send_queued(&store, Stream::DATABASE, st.stream(), &cfg.device_id)?;
    }

    // 9. Compaction.
    if let Err(e) = compact_own(&store, Stream::DATABASE, &cfg.device_id) {
        tracing::warn!(error = %e, "compacting this device's logs failed; retried next cycle");
    }

    // 10. Stamp.
    stamp(cfg, &app, &st)?;
    let _ = store.put(
        &format!("devices/{}.json", cfg.device_id),
        Bytes::from(
            serde_json::to_vec(&serde_json::json!({
                "device_id": cfg.device_id, "name": cfg.device_name,
                "last_seen": apply::now_text(),
            }))
            .expect("encodes"),
        ),
    );
    summary.conflicts = ctx.conflicts.len();
    conflicts::append(&cfg.conflicts_log_path(), &ctx.conflicts);
    Ok(summary)
}
