//! Capture: this device's edits, found by diffing the live tables against the shadow
//! copy (the rows as songfs last saw or wrote them).
//!
//! Rows are matched by primary key and compared by column values, so edits made while
//! songfs was not running are seen, and a table rebuild (create `songs_new`, copy, drop,
//! rename) keeps its rowids and values and is not mistaken for edits. A column the shadow
//! does not have yet (the app added it) counts as edited only where it holds something
//! other than its declared default. Only changed fields are emitted.
//!
//! Must never: write to the app database, emit a secret or machine-local config key, or
//! emit anything for a row whose values equal the shadow's.

use std::collections::{BTreeMap, BTreeSet};

use rusqlite::Connection;

use super::clock::Clock;
use super::identity::{self, IdMap};
use super::merge::{Change, Event, RowId, RowState, Value};
use super::presync;
use super::schema::{constant_default, LocalKey, Schema, Table, SYNCED_TABLES};
use super::state::{ShadowRow, StateDb};
use super::translate::Translator;
use super::SyncError;

/// A live row: column → local value.
pub type LocalRow = BTreeMap<String, Value>;

/// Rows of one table by key text: values and their hash.
pub type TableRows = BTreeMap<String, (LocalRow, Vec<u8>)>;

/// One table's shadow: key → (gid, row hash).
pub type Shadow = BTreeMap<String, (String, Vec<u8>)>;

/// Per-table counts of rows inserted, updated and deleted.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Counts {
    pub new: u64,
    pub updated: u64,
    pub deleted: u64,
}

impl Counts {
    pub fn total(&self) -> u64 {
        self.new + self.updated + self.deleted
    }
}

/// What one capture found.
#[derive(Debug, Default)]
pub struct Captured {
    pub changes: Vec<Change>,
    pub shadow_puts: Vec<(String, ShadowRow)>,
    pub shadow_removes: Vec<(String, String)>,
    pub counts: BTreeMap<String, Counts>,
}

pub struct CaptureContext<'a> {
    pub private_config_keys: &'a [String],
    pub mount: Option<&'a std::path::Path>,
    /// True for this device's very first capture: rows found then existed before any sync
    /// and get seeded identities and the clock of their last edit (`presync.rs`): the zero
    /// clock for rows never edited, which lose to every real edit or delete made elsewhere,
    /// so a new device never resurrects or reverts anything.
    pub first: bool,
    pub now_ms: u64,
}

/// Reads every row of a table: key text → (values, hash).
pub fn read_table(conn: &Connection, t: &Table) -> Result<TableRows, SyncError> {
    let mut stmt = conn.prepare(&format!("SELECT * FROM \"{}\"", t.name))?;
    let names: Vec<String> = stmt.column_names().map(|s| s.to_string()).collect();
    let key_cols = t.key_columns();
    let key_idx: Vec<usize> = key_cols
        .iter()
        .map(|k| {
            names
                .iter()
                .position(|n| n == k)
                .expect("key column is selected")
        })
        .collect();
    let mut rows = stmt.query([])?;
    let mut out = BTreeMap::new();
    while let Some(r) = rows.next()? {
        let mut row = LocalRow::new();
        for (i, n) in names.iter().enumerate() {
            row.insert(n.clone(), super::translate::from_sql(r.get_ref(i)?));
        }
        let key_vals: Vec<Value> = key_idx
            .iter()
            .map(|&i| super::translate::from_sql(r.get_ref(i).expect("column exists")))
            .collect();
        let key = identity::key_text(&key_vals);
        let hash = row_hash(row.iter().map(|(k, v)| (k.as_str(), v)));
        out.insert(key, (row, hash));
    }
    Ok(out)
}

/// A digest of a row's values, independent of column order: equal rows, equal hashes.
/// (Computed from `Value`s so the shadow written by an apply hashes the same way.)
pub fn row_hash<'a>(cols: impl Iterator<Item = (&'a str, &'a Value)>) -> Vec<u8> {
    use sha2::{Digest, Sha256};
    let mut sorted: Vec<(&str, &Value)> = cols.collect();
    sorted.sort_by_key(|(k, _)| *k);
    let mut h = Sha256::new();
    for (k, v) in sorted {
        h.update(k.as_bytes());
        h.update([0]);
        h.update(serde_json::to_vec(v).expect("JSON values always encode"));
        h.update([0]);
    }
    h.finalize()[..16].to_vec()
}

/// The canonical JSON text of a row (sorted keys), used for quick equality with the shadow.
pub fn canonical(row: &LocalRow) -> String {
    serde_json::to_string(row).expect("JSON values always encode")
}

pub fn is_private(table: &str, key_values: &LocalRow, private: &[String]) -> bool {
    table == "config"
        && key_values
            .get("key")
            .and_then(|k| k.as_str())
            .map(|k| private.iter().any(|p| p == k))
            .unwrap_or(false)
}

/// Diffs every synced table against the shadow. `ids` is updated with new rows' gids
/// (parents are captured before children so references translate).
#[allow(clippy::too_many_arguments)]
pub fn capture(
    app: &Connection,
    st: &StateDb,
    schema: &Schema,
    shadows: &BTreeMap<String, Shadow>,
    ids: &mut IdMap,
    clock: &mut Clock,
    ctx: &CaptureContext<'_>,
) -> Result<Captured, SyncError> {
    let mut out = Captured::default();
    // Keys deleted in this capture, per table (children name a deleted parent).
    let mut deleted: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let empty = BTreeMap::new();
    for &name in SYNCED_TABLES {
        let Some(t) = schema.table(name) else {
            continue;
        };
        let live = read_table(app, t)?;
        let shadow = shadows.get(name).unwrap_or(&empty);
        let mut counts = Counts::default();
        // Rows gone from the table since the last capture, and those of them that came back
        // under a new rowid (not deletes).
        let gone: BTreeSet<&String> = shadow.keys().filter(|k| !live.contains_key(*k)).collect();
        let mut taken_over: BTreeSet<String> = BTreeSet::new();
        for (key, (row, hash)) in &live {
            if is_private(name, row, ctx.private_config_keys) {
                continue;
            }
            match shadow.get(key) {
                Some((_, old_hash)) if old_hash == hash => {}
                Some((gid, _)) => {
                    let old = shadow_row_or_empty(st, name, key, gid)?;
                    if edit_of(t, &old, row, st, schema, ids, clock, ctx, &mut out.changes)? {
                        counts.updated += 1;
                    }
                    out.shadow_puts.push(shadow_of(name, key, &old.gid, row));
                }
                None => {
                    if let Some(old_key) = replaced_key(t, row, ids, &gone) {
                        // The app replaced the row (INSERT OR REPLACE, or a delete and an insert
                        // of the same name): the same thing under a new rowid, so an edit of it,
                        // not a delete and a second row whose name would clash on other devices.
                        let gid = ids.gid_of(name, &old_key).expect("replaced key has a gid");
                        let old = shadow_row_or_empty(st, name, &old_key, gid)?;
                        edit_of(t, &old, row, st, schema, ids, clock, ctx, &mut out.changes)?;
                        counts.updated += 1;
                        ids.insert(name, &old.gid, key);
                        out.shadow_puts.push(shadow_of(name, key, &old.gid, row));
                        out.shadow_removes.push((name.to_string(), old_key.clone()));
                        taken_over.insert(old_key);
                        continue;
                    }
                    let gid = new_gid(t, key, row, ids, ctx.first);
                    ids.insert(name, &gid, key);
                    let rid = RowId::new(name, &gid);
                    let state = if gid.starts_with("r:") {
                        RowState::default()
                    } else {
                        st.row_state(&rid)?.unwrap_or_default()
                    };
                    let c = if ctx.first {
                        let c = presync::row_clock(row, clock.device(), ctx.now_ms);
                        // Later local ticks must order after it, as after any edit.
                        clock.observe(&c);
                        c
                    } else {
                        clock.tick(ctx.now_ms)
                    };
                    out.changes.push(Change {
                        row: rid.clone(),
                        event: Event::Live { clock: c.clone() },
                    });
                    let tr = Translator {
                        schema,
                        ids,
                        mount: ctx.mount,
                    };
                    for (col, v) in row {
                        out.changes.push(Change {
                            row: rid.clone(),
                            event: Event::Set {
                                column: col.clone(),
                                value: tr.to_wire(name, col, v),
                                clock: c.clone(),
                                replaces: state.frontier(col),
                            },
                        });
                    }
                    counts.new += 1;
                    out.shadow_puts.push(shadow_of(name, key, &gid, row));
                }
            }
        }
        for (key, (gid, _)) in shadow {
            if live.contains_key(key) || taken_over.contains(key) {
                continue;
            }
            let old = st.shadow_row(name, key)?.unwrap_or(ShadowRow {
                key: key.clone(),
                gid: gid.clone(),
                data: "{}".into(),
            });
            let old_row: LocalRow = serde_json::from_str(&old.data).unwrap_or_default();
            let cascade_of = cascade_parent(st, schema, t, &old_row, shadows, &deleted)?;
            out.changes.push(Change {
                row: RowId::new(name, &old.gid),
                event: Event::Delete {
                    clock: clock.tick(ctx.now_ms),
                    cascade_of,
                },
            });
            deleted
                .entry(name.to_string())
                .or_default()
                .insert(key.clone());
            out.shadow_removes.push((name.to_string(), key.clone()));
            counts.deleted += 1;
        }
        if counts.total() > 0 {
            out.counts.insert(name.to_string(), counts);
        }
    }
    for (table, keys) in &deleted {
        for k in keys {
            ids.remove_key(table, k);
        }
    }
    Ok(out)
}

/// A shadow entry: the row as captured now, under its gid.
fn shadow_of(table: &str, key: &str, gid: &str, row: &LocalRow) -> (String, ShadowRow) {
    (
        table.to_string(),
        ShadowRow {
            key: key.to_string(),
            gid: gid.to_string(),
            data: canonical(row),
        },
    )
}

/// The shadow's copy of a row (an empty one if state.db lost it: every column then counts
/// as edited, which resends it rather than losing an edit).
fn shadow_row_or_empty(
    st: &StateDb,
    table: &str,
    key: &str,
    gid: &str,
) -> Result<ShadowRow, SyncError> {
    let found = st.shadow_row(table, key)?;
    Ok(ShadowRow {
        gid: gid.to_string(),
        ..found.unwrap_or(ShadowRow {
            key: key.to_string(),
            gid: gid.to_string(),
            data: "{}".into(),
        })
    })
}

/// Emits a Set for every column of `row` that differs from the shadow's `old`; true if any.
#[allow(clippy::too_many_arguments)]
fn edit_of(
    t: &Table,
    old: &ShadowRow,
    row: &LocalRow,
    st: &StateDb,
    schema: &Schema,
    ids: &IdMap,
    clock: &mut Clock,
    ctx: &CaptureContext<'_>,
    changes: &mut Vec<Change>,
) -> Result<bool, SyncError> {
    let old_row: LocalRow = serde_json::from_str(&old.data).unwrap_or_default();
    let edited = edited_columns(t, &old_row, row);
    if edited.is_empty() {
        return Ok(false);
    }
    let rid = RowId::new(&t.name, &old.gid);
    let state = st.row_state(&rid)?.unwrap_or_default();
    let c = clock.tick(ctx.now_ms);
    let tr = Translator {
        schema,
        ids,
        mount: ctx.mount,
    };
    for col in edited {
        changes.push(Change {
            row: rid.clone(),
            event: Event::Set {
                value: tr.to_wire(&t.name, &col, &row[&col]),
                replaces: state.frontier(&col),
                column: col,
                clock: c.clone(),
            },
        });
    }
    Ok(true)
}

/// The key of a row gone in this capture that a new row replaces: same natural identity
/// (UNIQUE name, task_id), new rowid.
fn replaced_key(
    t: &Table,
    row: &LocalRow,
    ids: &IdMap,
    gone: &BTreeSet<&String>,
) -> Option<String> {
    let g = identity::natural_gid(&t.name, row, &ref_gids(t, row, ids))?;
    let old = ids.key_of(&t.name, &g)?;
    gone.contains(&old.to_string()).then(|| old.to_string())
}

/// The gids of the rows a row's reference columns point at.
fn ref_gids(t: &Table, row: &LocalRow, ids: &IdMap) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    for (col, target) in &t.refs {
        if let Some(id) = row.get(col).and_then(|v| v.as_i64()) {
            if let Some(g) = ids.gid_of(target, &identity::id_key(id)) {
                out.insert(col.clone(), g.to_string());
            }
        }
    }
    out
}

/// The columns whose live value differs from the shadow's (never the integer key).
fn edited_columns(t: &Table, old: &LocalRow, new: &LocalRow) -> Vec<String> {
    let skip = match &t.key {
        LocalKey::IntegerId(c) => Some(c.as_str()),
        _ => None,
    };
    let mut cols = Vec::new();
    for (col, v) in new {
        if Some(col.as_str()) == skip {
            continue;
        }
        match old.get(col) {
            Some(o) if o == v => {}
            Some(_) => cols.push(col.clone()),
            None => {
                // A column the shadow never saw: the app added it. Its default is not an edit.
                let default = t.column(col).and_then(constant_default);
                let is_default = match &default {
                    Some(d) => d == v,
                    // CURRENT_TIMESTAMP or an expression: whatever it filled in is not an edit.
                    None => true,
                };
                if !is_default {
                    cols.push(col.clone());
                }
            }
        }
    }
    cols
}

fn new_gid(t: &Table, key: &str, row: &LocalRow, ids: &IdMap, first: bool) -> String {
    if let Some(g) = identity::natural_gid(&t.name, row, &ref_gids(t, row, ids)) {
        // A renamed row keeps its old name's gid; a new row of that name then needs its own.
        if ids.key_of(&t.name, &g).is_none() {
            return g;
        }
    }
    if first {
        let g = identity::seeded_gid(&t.name, key, row);
        if ids.key_of(&t.name, &g).is_none() {
            return g;
        }
    }
    identity::random_gid()
}

/// The parent whose delete removed this row (ON DELETE CASCADE), if any.
fn cascade_parent(
    st: &StateDb,
    schema: &Schema,
    t: &Table,
    old: &LocalRow,
    shadows: &BTreeMap<String, Shadow>,
    deleted: &BTreeMap<String, BTreeSet<String>>,
) -> Result<Option<RowId>, SyncError> {
    for (col, action) in &t.on_delete {
        if action != "CASCADE" {
            continue;
        }
        let Some(target) = t.refs.get(col) else {
            continue;
        };
        let Some(id) = old.get(col).and_then(|v| v.as_i64()) else {
            continue;
        };
        let pkey = identity::id_key(id);
        if deleted.get(target).is_some_and(|d| d.contains(&pkey)) {
            if let Some((gid, _)) = shadows.get(target).and_then(|s| s.get(&pkey)) {
                return Ok(Some(RowId::new(target, gid)));
            }
        }
        let parent_live = shadows.get(target).is_some_and(|s| s.contains_key(&pkey));
        if !parent_live && schema.table(target).is_some() {
            // Parent deleted by an earlier apply (a remote delete): its gid is in the tombs.
            if let Some(g) = st.tomb_gid(target, &pkey)? {
                return Ok(Some(RowId::new(target, &g)));
            }
        }
    }
    Ok(None)
}
