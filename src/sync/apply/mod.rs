//! Apply: write the merged state of some rows into the app database.
//!
//! Two steps, so a crash never turns applied remote changes into "local edits":
//! 1. [`plan`] turns resolved rows into intents (local values, local key) that the
//!    cycle stores in `state.db` in the same transaction as the merged state.
//! 2. [`execute`] writes the intents into the app database in ONE short
//!    `BEGIN IMMEDIATE` transaction, then, in one `state.db` transaction, moves them into
//!    the shadow and clears them. After a crash between the two commits, `execute` runs
//!    again at the next start: rows already written compare equal and are left alone.
//!
//! Concurrency with the app: a field is only written where the live value still equals
//! the shadow (what songfs last saw); a field the user changed since then is left alone
//! and the shadow records the merged value, so the next capture sends the user's edit,
//! which is newer. Inserts and updates go parents first, deletes children first, so
//! `genres` is never empty on the way; the last genre is never deleted.
//!
//! Must never: leave half a log applied, write a secret config key, or let
//! `sqlite_sequence` fall below a table's largest id (the app would re-issue it).
//!
//! The writes of single rows (upsert, insert, delete, the UNIQUE-name swap) are in
//! `rows.rs`, the check of each remote value against its column in `check.rs`; this file decides what to write and in which order.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use rusqlite::{Connection, OptionalExtension, TransactionBehavior};

use super::capture::{canonical, is_private, Counts, LocalRow};
use super::conflicts::ConflictRecord;
use super::identity::{self, IdMap};
use super::merge::{Row, RowId, Value};
use super::schema::{LocalKey, Schema, Table, SYNCED_TABLES};
use super::state::{Intent, ShadowRow, StateDb};
use super::translate::Translator;
use super::SyncError;
use rows::{delete, raise_sequence, swap_names, upsert};

mod check;
mod rows;

/// What an execute did.
#[derive(Debug, Default)]
pub struct Outcome {
    pub counts: BTreeMap<String, Counts>,
    pub conflicts: Vec<ConflictRecord>,
    /// Changes the apply caused locally that other devices must hear about (a reference
    /// cleared, children removed with their parent): the next capture sends them.
    pub follow_up: bool,
}

fn table_rank(t: &str) -> usize {
    SYNCED_TABLES
        .iter()
        .position(|x| *x == t)
        .unwrap_or(usize::MAX)
}

/// Intents for `rows` (resolved wire rows; None = not alive). `ids` is a working copy
/// that learns the keys chosen for new rows, so children translate to them.
pub fn plan(
    app: &Connection,
    schema: &Schema,
    rows: &BTreeMap<RowId, Option<Row>>,
    ids: &mut IdMap,
    mount: Option<&Path>,
    private_config_keys: &[String],
) -> Result<Vec<Intent>, SyncError> {
    let mut order: Vec<&RowId> = rows.keys().collect();
    order.sort_by_key(|r| (table_rank(&r.table), (*r).clone()));
    let mut taken: BTreeMap<String, i64> = BTreeMap::new();
    let mut out = Vec::new();
    for rid in order {
        let Some(t) = schema.table(&rid.table) else {
            continue;
        };
        let existing = ids.key_of(&rid.table, &rid.gid).map(str::to_string);
        let Some(wire) = &rows[rid] else {
            if let Some(key) = existing {
                out.push(Intent {
                    table: rid.table.clone(),
                    gid: rid.gid.clone(),
                    key: Some(key),
                    data: None,
                });
            }
            continue;
        };
        let tr = Translator { schema, ids, mount };
        let mut local = LocalRow::new();
        for c in &t.columns {
            if let Some(v) = wire.get(&c.name) {
                if let Some(why) = check::refusal(t, c, v) {
                    tracing::warn!(row = %rid, column = %c.name, why, "a value from another device was refused; the rest of the row is applied");
                    continue;
                }
                local.insert(c.name.clone(), tr.to_local(&t.name, &c.name, v));
            }
        }
        if is_private(&t.name, &local, private_config_keys) {
            tracing::warn!(row = %rid, "a remote change of a private config key was ignored");
            continue;
        }
        let key = match (&t.key, existing) {
            (LocalKey::IntegerId(col), Some(k)) => {
                // The row's id here, not the origin's (they differ after a collision).
                if let Some(id) = identity::key_id(&k) {
                    local.insert(col.clone(), Value::from(id));
                }
                k
            }
            (_, Some(k)) => k,
            (LocalKey::IntegerId(col), None) => {
                let id = choose_id(
                    app,
                    t,
                    local.get(col).and_then(|v| v.as_i64()),
                    ids,
                    &mut taken,
                )?;
                local.insert(col.clone(), Value::from(id));
                identity::id_key(id)
            }
            (LocalKey::Text(_) | LocalKey::Composite(_), None) => {
                let vals: Vec<Value> = t
                    .key_columns()
                    .iter()
                    .map(|c| local.get(c).cloned().unwrap_or(Value::Null))
                    .collect();
                if vals.iter().any(Value::is_null) {
                    tracing::warn!(row = %rid, "a remote row names a row this device does not have; skipped");
                    continue;
                }
                identity::key_text(&vals)
            }
        };
        ids.insert(&rid.table, &rid.gid, &key);
        out.push(Intent {
            table: rid.table.clone(),
            gid: rid.gid.clone(),
            key: Some(key),
            data: Some(canonical(&local)),
        });
    }
    Ok(out)
}

/// The origin's rowid where it is free here, else the next free one.
fn choose_id(
    app: &Connection,
    t: &Table,
    wanted: Option<i64>,
    ids: &IdMap,
    taken: &mut BTreeMap<String, i64>,
) -> Result<i64, SyncError> {
    let col = &t.key_columns()[0];
    let floor = taken.get(&t.name).copied().unwrap_or(0);
    if let Some(w) = wanted.filter(|w| *w > 0) {
        let free = ids.gid_of(&t.name, &identity::id_key(w)).is_none()
            && app
                .query_row(
                    &format!("SELECT 1 FROM \"{}\" WHERE \"{col}\" = ?1", t.name),
                    [w],
                    |_| Ok(()),
                )
                .optional()?
                .is_none();
        if free {
            taken.insert(t.name.clone(), floor.max(w));
            return Ok(w);
        }
    }
    let max: i64 = app.query_row(
        &format!("SELECT COALESCE(MAX(\"{col}\"), 0) FROM \"{}\"", t.name),
        [],
        |r| r.get(0),
    )?;
    let seq: i64 = app
        .query_row(
            "SELECT seq FROM sqlite_sequence WHERE name = ?1",
            [&t.name],
            |r| r.get(0),
        )
        .optional()
        .unwrap_or(None)
        .unwrap_or(0);
    let id = max.max(seq).max(floor) + 1;
    taken.insert(t.name.clone(), id);
    Ok(id)
}

/// Writes the pending intents (from `state.db`) into the app database, then the shadow.
pub fn execute(
    app: &mut Connection,
    st: &mut StateDb,
    schema: &Schema,
) -> Result<Outcome, SyncError> {
    let intents = st.intents()?;
    if intents.is_empty() {
        return Ok(Outcome::default());
    }
    if super::failpoint("apply-before-app-commit") {
        return Err(SyncError::Other("failpoint apply-before-app-commit".into()));
    }
    let mut with_shadows = Vec::new();
    for i in intents {
        let s = match &i.key {
            Some(k) => st.shadow_row(&i.table, k)?,
            None => None,
        };
        with_shadows.push((i, s));
    }
    with_shadows.sort_by_key(|(i, s)| {
        let rank = table_rank(&i.table);
        // Upserts parents first (within a table, rows already here before new ones, so a
        // row renamed away from a UNIQUE name frees it first), then deletes children first.
        if i.data.is_some() {
            (0, rank as i64, s.is_none(), i.gid.clone())
        } else {
            (1, -(rank as i64), false, i.gid.clone())
        }
    });
    let (intents, shadows): (Vec<Intent>, Vec<Option<ShadowRow>>) =
        with_shadows.into_iter().unzip();
    let mut out = Outcome::default();
    let mut puts: Vec<(String, ShadowRow)> = Vec::new();
    let mut removes: Vec<(String, String)> = Vec::new();
    let tx = app.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let mut touched: BTreeSet<String> = BTreeSet::new();
    // Upserts refused by a UNIQUE name that a later row of this batch gives up (a rename,
    // a delete) are tried again after the others, until no more go through.
    let mut deferred: Vec<(&Intent, &Option<ShadowRow>)> = Vec::new();
    let mut write = |i: &Intent, shadow: &Option<ShadowRow>, out: &mut Outcome, last_try: bool| {
        let (Some(t), Some(key)) = (schema.table(&i.table), &i.key) else {
            return Ok(true);
        };
        match &i.data {
            Some(data) => {
                let target: LocalRow = serde_json::from_str(data).unwrap_or_default();
                let clashes = out.conflicts.len();
                match upsert(&tx, t, key, &i.gid, &target, shadow.as_ref(), out)? {
                    Some(row) => {
                        touched.insert(t.name.clone());
                        puts.push((t.name.clone(), row));
                    }
                    None if out.conflicts.len() > clashes && !last_try => {
                        out.conflicts.truncate(clashes);
                        return Ok(false);
                    }
                    None => {}
                }
            }
            None => {
                if delete(&tx, schema, t, key, &i.gid, shadow.as_ref(), out)? {
                    removes.push((t.name.clone(), key.clone()));
                }
            }
        }
        Ok::<bool, SyncError>(true)
    };
    for (i, shadow) in intents.iter().zip(&shadows) {
        if !write(i, shadow, &mut out, false)? {
            deferred.push((i, shadow));
        }
    }
    let mut swapped = false;
    while !deferred.is_empty() {
        let before = deferred.len();
        let mut again = Vec::new();
        for (i, shadow) in deferred {
            if !write(i, shadow, &mut out, false)? {
                again.push((i, shadow));
            }
        }
        if again.len() == before {
            // No progress. Names that only block each other (two rows swapping names) are
            // moved in one step; what still clashes is written off with a conflict record each.
            if !swapped && swap_names(&tx, schema, &again)? {
                swapped = true;
                deferred = again;
                continue;
            }
            for (i, shadow) in again {
                write(i, shadow, &mut out, true)?;
            }
            break;
        }
        deferred = again;
    }
    for name in &touched {
        if let Some(t) = schema.table(name) {
            raise_sequence(&tx, t)?;
        }
    }
    tx.commit()?;
    if super::failpoint("apply-after-app-commit") {
        return Err(SyncError::Other("failpoint apply-after-app-commit".into()));
    }
    let stx = super::state::write_tx(&st.conn)?;
    for (table, row) in &puts {
        StateDb::put_shadow(&stx, table, row)?;
    }
    for (table, key) in &removes {
        StateDb::remove_shadow(&stx, table, key)?;
    }
    stx.execute("DELETE FROM sync_intent", [])?;
    stx.commit()?;
    Ok(out)
}

pub fn now_text() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}
