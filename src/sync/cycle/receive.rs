//! Receiving: the database as a stream's receiver. Each remote log is merged into the row
//! states and applied to the app database in one transaction with the cursor; conflicts
//! a log creates (concurrent edits of one field, `merge::field_conflicts`, pure) are recorded
//! for `songfs conflicts`. Must never apply half a log, or send what it applied as this
//! device's own edit.

use super::*;
use crate::sync::merge;

pub(super) struct ApplyContext<'a> {
    pub(super) cfg: &'a Config,
    pub(super) schema: &'a Schema,
    pub(super) conflicts: Vec<ConflictRecord>,
    pub(super) follow_up: bool,
    pub(super) progress: Option<&'a Progress>,
}

/// The database as a stream's receiver: each log is checked against the local schema,
/// merged and applied.
pub(super) struct DbReceiver<'r, 'c> {
    pub(super) ctx: &'r mut ApplyContext<'c>,
    pub(super) app: &'r mut Connection,
    pub(super) st: &'r mut StateDb,
    pub(super) summary: &'r mut Summary,
}

impl transport::Receiver for DbReceiver<'_, '_> {
    type Error = SyncError;

    fn state(&self) -> StreamState<'_> {
        self.st.stream()
    }

    fn check(&self, key: &str, log: &LogFile) -> Result<(), TransportError> {
        changelog::check_against(key, log, self.ctx.schema)
    }

    fn apply(
        &mut self,
        _key: &str,
        device: &str,
        cursor: Option<u64>,
        log: &LogFile,
    ) -> Result<(), SyncError> {
        apply_log(
            self.ctx,
            self.app,
            self.st,
            log,
            device,
            cursor,
            self.summary,
        )
    }

    fn progress(&self, done: usize, total: usize) {
        if let Some(p) = self.ctx.progress {
            p(done, total);
        }
    }
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
pub(super) fn apply_rows(
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
    let before_conflicts = merge::field_conflicts(&m, &rules, &rows);
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
    let after = merge::field_conflicts(&m, &rules, &rows);
    for merge::RowConflict {
        row: rid,
        conflict: c,
    } in merge::new_conflicts(&before_conflicts, after)
    {
        ctx.conflicts.push(ConflictRecord {
            at: apply::now_text(),
            kind: "field".into(),
            table: rid.table.clone(),
            row: rid.gid.clone(),
            local_id: None,
            column: Some(c.column),
            kept: c.kept,
            lost: c.lost,
            kept_by: Some(c.kept_clock.device),
            lost_by: Some(c.lost_clock.device),
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
    let tx = crate::sync::state::write_tx(&st.conn)?;
    save_rows(st, &m, &rows)?;
    if let Some((device, seq)) = cursor {
        StreamState::new(&tx, &DATABASE_TABLES).set_cursor(device, seq)?;
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
