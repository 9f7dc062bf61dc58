//! One row written into the app database: upsert (only fields not edited here since the
//! last capture), insert (the origin's id where free), delete (only a row still as songfs
//! last saw it), the UNIQUE-name swap, and `sqlite_sequence` kept above every id.

use rusqlite::{params_from_iter, Connection, OptionalExtension};

use super::super::capture::{canonical, Counts, LocalRow};
use super::super::conflicts::ConflictRecord;
use super::super::identity;
use super::super::merge::Value;
use super::super::schema::{LocalKey, Schema, Table, UNIQUE_NAME_TABLES};
use super::super::state::{Intent, ShadowRow};
use super::super::translate;
use super::super::SyncError;
use super::{now_text, Outcome};

/// Upserts that each wait for a UNIQUE name another of them holds (a cycle: row A takes B's
/// name while B takes A's) never go through one at a time. This moves the names of all such
/// rows at once, inside a savepoint: each first to a placeholder no row can hold, then to the
/// name the merge gave it. Only names songfs may write are moved (the live name still equals
/// the shadow: not edited here since the last capture). If any of them is still taken (by a
/// row outside the batch), the savepoint is rolled back and nothing moved. True if moved.
pub(super) fn swap_names(
    tx: &Connection,
    schema: &Schema,
    stuck: &[(&Intent, &Option<ShadowRow>)],
) -> Result<bool, SyncError> {
    let mut moves = Vec::new();
    for (i, shadow) in stuck {
        let (Some(t), Some(key), Some(data), Some(shadow)) =
            (schema.table(&i.table), &i.key, &i.data, shadow)
        else {
            continue;
        };
        if !UNIQUE_NAME_TABLES.contains(&t.name.as_str()) {
            continue;
        }
        let target: LocalRow = serde_json::from_str(data).unwrap_or_default();
        let seen: LocalRow = serde_json::from_str(&shadow.data).unwrap_or_default();
        let Some(live) = read_row(tx, t, key)? else {
            continue;
        };
        let (Some(want), Some(have)) = (target.get("name"), live.get("name")) else {
            continue;
        };
        if want != have && seen.get("name") == Some(have) {
            moves.push((t, key, &i.gid, want.clone()));
        }
    }
    if moves.len() < 2 {
        return Ok(false);
    }
    tx.execute_batch("SAVEPOINT swap_names")?;
    let set_name = |t: &Table, key: &str, name: rusqlite::types::Value| {
        // The key columns are ?1..?k (key_where), the name the parameter after them.
        let mut vals = key_values(key);
        vals.push(name);
        tx.execute(
            &format!(
                "UPDATE \"{}\" SET \"name\" = ?{} WHERE {}",
                t.name,
                vals.len(),
                key_where(t)
            ),
            params_from_iter(vals),
        )
    };
    let mut result = Ok(true);
    for (t, key, gid, _) in &moves {
        // A control character and the row's global id: no name the app writes.
        let placeholder = rusqlite::types::Value::Text(format!("\u{1}songfs moving {gid}"));
        if let Err(e) = set_name(t, key, placeholder) {
            result = Err(e);
            break;
        }
    }
    if matches!(result, Ok(true)) {
        for (t, key, _, want) in &moves {
            match set_name(t, key, translate::to_sql(want)) {
                Ok(_) => {}
                Err(e) if is_constraint(&e) => {
                    result = Ok(false);
                    break;
                }
                Err(e) => {
                    result = Err(e);
                    break;
                }
            }
        }
    }
    match result {
        Ok(true) => tx.execute_batch("RELEASE swap_names")?,
        _ => tx.execute_batch("ROLLBACK TO swap_names; RELEASE swap_names")?,
    }
    Ok(result?)
}

fn key_where(t: &Table) -> String {
    t.key_columns()
        .iter()
        .enumerate()
        .map(|(n, c)| format!("\"{c}\" = ?{}", n + 1))
        .collect::<Vec<_>>()
        .join(" AND ")
}

fn key_values(key: &str) -> Vec<rusqlite::types::Value> {
    let vals: Vec<Value> = serde_json::from_str(key).unwrap_or_default();
    vals.iter().map(translate::to_sql).collect()
}

fn read_row(conn: &Connection, t: &Table, key: &str) -> Result<Option<LocalRow>, SyncError> {
    let mut stmt = conn.prepare_cached(&format!(
        "SELECT * FROM \"{}\" WHERE {}",
        t.name,
        key_where(t)
    ))?;
    let names: Vec<String> = stmt.column_names().map(|s| s.to_string()).collect();
    let mut rows = stmt.query(params_from_iter(key_values(key)))?;
    match rows.next()? {
        None => Ok(None),
        Some(r) => {
            let mut row = LocalRow::new();
            for (i, n) in names.iter().enumerate() {
                row.insert(n.clone(), translate::from_sql(r.get_ref(i)?));
            }
            Ok(Some(row))
        }
    }
}

fn count<'a>(out: &'a mut Outcome, table: &str) -> &'a mut Counts {
    out.counts.entry(table.to_string()).or_default()
}

/// Inserts or updates one row. Returns the new shadow row, or None if nothing could be
/// written (a UNIQUE clash) or the app deleted the row since the last capture.
pub(super) fn upsert(
    tx: &Connection,
    t: &Table,
    key: &str,
    gid: &str,
    target: &LocalRow,
    shadow: Option<&ShadowRow>,
    out: &mut Outcome,
) -> Result<Option<ShadowRow>, SyncError> {
    let live = read_row(tx, t, key)?;
    let Some(live) = live else {
        if shadow.is_some_and(|s| s.gid == gid) {
            // songfs saw this row and the app deleted it since (while this cycle ran): the
            // user's delete is newer than anything merged, so it stands, and the shadow
            // keeps the row so the next capture sends the delete.
            tracing::info!(table = %t.name, key, "deleted here since the last capture; the local delete is kept");
            return Ok(None);
        }
        return insert(tx, t, key, gid, target, out);
    };
    let shadow_row: Option<LocalRow> =
        shadow.map(|s| serde_json::from_str(&s.data).unwrap_or_default());
    let Some(shadow_row) = shadow_row else {
        if let LocalKey::IntegerId(col) = &t.key {
            let ours = target
                .iter()
                .all(|(c, v)| c == col || live.get(c) == Some(v));
            if !ours {
                // The app took this id after the plan: the remote row gets the next one.
                let seq: i64 = tx
                    .query_row(
                        "SELECT seq FROM sqlite_sequence WHERE name = ?1",
                        [&t.name],
                        |r| r.get(0),
                    )
                    .optional()?
                    .unwrap_or(0);
                let max: i64 = tx.query_row(
                    &format!("SELECT COALESCE(MAX(\"{col}\"), 0) FROM \"{}\"", t.name),
                    [],
                    |r| r.get(0),
                )?;
                let id = seq.max(max) + 1;
                let mut moved = target.clone();
                moved.insert(col.clone(), Value::from(id));
                return insert(tx, t, &identity::id_key(id), gid, &moved, out);
            }
        }
        // The key is taken by a row songfs has not captured yet: our own insert before a
        // crash (equal values), or the same config key / tag pair added here since (its
        // edit is newer and the next capture sends it).
        let mut data = live.clone();
        data.extend(target.iter().map(|(k, v)| (k.clone(), v.clone())));
        return Ok(Some(ShadowRow {
            key: key.to_string(),
            gid: gid.to_string(),
            data: canonical(&data),
        }));
    };
    let mut sets: Vec<(&String, &Value)> = Vec::new();
    for (col, want) in target {
        let have = live.get(col);
        if have == Some(want) || t.key_columns().contains(col) {
            continue;
        }
        match shadow_row.get(col) {
            Some(seen) if Some(seen) != have => {
                tracing::info!(table = %t.name, key, col, "edited here since the last capture; the local edit is kept");
            }
            _ => sets.push((col, want)),
        }
    }
    if !sets.is_empty() {
        let assign = sets
            .iter()
            .enumerate()
            .map(|(n, (c, _))| format!("\"{c}\" = ?{}", n + 1))
            .collect::<Vec<_>>()
            .join(", ");
        let nkeys = t.key_columns().len();
        let wher = t
            .key_columns()
            .iter()
            .enumerate()
            .map(|(n, c)| format!("\"{c}\" = ?{}", sets.len() + n + 1))
            .collect::<Vec<_>>()
            .join(" AND ");
        let mut vals: Vec<rusqlite::types::Value> =
            sets.iter().map(|(_, v)| translate::to_sql(v)).collect();
        vals.extend(key_values(key));
        debug_assert_eq!(vals.len(), sets.len() + nkeys);
        match tx.execute(
            &format!("UPDATE \"{}\" SET {assign} WHERE {wher}", t.name),
            params_from_iter(vals),
        ) {
            Ok(_) => count(out, &t.name).updated += 1,
            Err(e) if is_constraint(&e) => {
                out.conflicts.push(clash(t, gid, target, &e));
                return Ok(None);
            }
            Err(e) => return Err(e.into()),
        }
    }
    let mut data = live;
    data.extend(target.iter().map(|(k, v)| (k.clone(), v.clone())));
    Ok(Some(ShadowRow {
        key: key.to_string(),
        gid: gid.to_string(),
        data: canonical(&data),
    }))
}

fn insert(
    tx: &Connection,
    t: &Table,
    key: &str,
    gid: &str,
    target: &LocalRow,
    out: &mut Outcome,
) -> Result<Option<ShadowRow>, SyncError> {
    let cols: Vec<&String> = target.keys().collect();
    let sql = format!(
        "INSERT INTO \"{}\" ({}) VALUES ({})",
        t.name,
        cols.iter()
            .map(|c| format!("\"{c}\""))
            .collect::<Vec<_>>()
            .join(", "),
        (1..=cols.len())
            .map(|n| format!("?{n}"))
            .collect::<Vec<_>>()
            .join(", ")
    );
    match tx.execute(
        &sql,
        params_from_iter(target.values().map(translate::to_sql)),
    ) {
        Ok(_) => {}
        Err(e) if is_constraint(&e) => {
            out.conflicts.push(clash(t, gid, target, &e));
            return Ok(None);
        }
        Err(e) => return Err(e.into()),
    }
    count(out, &t.name).new += 1;
    // Read back: columns the log did not carry got their defaults.
    let row = read_row(tx, t, key)?.unwrap_or_else(|| target.clone());
    Ok(Some(ShadowRow {
        key: key.to_string(),
        gid: gid.to_string(),
        data: canonical(&row),
    }))
}

fn is_constraint(e: &rusqlite::Error) -> bool {
    matches!(e, rusqlite::Error::SqliteFailure(f, _) if f.code == rusqlite::ErrorCode::ConstraintViolation)
}

fn clash(t: &Table, gid: &str, target: &LocalRow, e: &rusqlite::Error) -> ConflictRecord {
    tracing::warn!(table = %t.name, gid, error = %e, "a remote row clashes with a local one; not written");
    ConflictRecord {
        at: now_text(),
        kind: "unique".into(),
        table: t.name.clone(),
        row: gid.to_string(),
        local_id: None,
        column: None,
        kept: Value::Null,
        lost: serde_json::to_value(target).unwrap_or(Value::Null),
        kept_by: None,
        lost_by: None,
        why: format!("the other device's row could not be written here ({e}); rename one of them"),
    }
}

/// Deletes one row if it is still as songfs last saw it. Returns true if it is gone.
pub(super) fn delete(
    tx: &Connection,
    schema: &Schema,
    t: &Table,
    key: &str,
    gid: &str,
    shadow: Option<&ShadowRow>,
    out: &mut Outcome,
) -> Result<bool, SyncError> {
    let Some(live) = read_row(tx, t, key)? else {
        return Ok(true);
    };
    if let Some(s) = shadow {
        if s.data != canonical(&live) {
            // Edited here since the last capture: the edit is newer than the delete and
            // the next capture sends it (the row comes back on every device).
            return Ok(false);
        }
    }
    if t.name == "genres" {
        let n: i64 = tx.query_row("SELECT COUNT(*) FROM genres", [], |r| r.get(0))?;
        if n <= 1 {
            tracing::warn!(
                gid,
                "the last genre is not deleted (the app would re-seed every song)"
            );
            return Ok(false);
        }
    }
    if let LocalKey::IntegerId(_) = t.key {
        let id = identity::key_id(key);
        for (child, col, action) in schema.children_of(&t.name) {
            let Some(id) = id else { break };
            let sql = match action.as_str() {
                "CASCADE" => format!("DELETE FROM \"{child}\" WHERE \"{col}\" = ?1"),
                _ => format!("UPDATE \"{child}\" SET \"{col}\" = NULL WHERE \"{col}\" = ?1"),
            };
            let n = tx.execute(&sql, [id])?;
            if n > 0 {
                out.follow_up = true;
                if action != "CASCADE" && action != "SET NULL" {
                    out.conflicts.push(ConflictRecord {
                        at: now_text(),
                        kind: "reference".into(),
                        table: child.clone(),
                        row: format!("{n} row(s)"),
                        local_id: None,
                        column: Some(col.clone()),
                        kept: Value::Null,
                        lost: Value::from(id),
                        kept_by: None,
                        lost_by: None,
                        why: format!(
                            "{}/{gid} was deleted on another device; {n} {child} row(s) here pointed at it, \
                             their {col} was cleared so the delete could apply",
                            t.name
                        ),
                    });
                }
            }
        }
    }
    tx.execute(
        &format!("DELETE FROM \"{}\" WHERE {}", t.name, key_where(t)),
        params_from_iter(key_values(key)),
    )?;
    count(out, &t.name).deleted += 1;
    Ok(true)
}

/// `sqlite_sequence` at or above the largest id, or the app would re-issue an id.
pub(super) fn raise_sequence(tx: &Connection, t: &Table) -> Result<(), SyncError> {
    let LocalKey::IntegerId(col) = &t.key else {
        return Ok(());
    };
    let max: Option<i64> = tx.query_row(
        &format!("SELECT MAX(\"{col}\") FROM \"{}\"", t.name),
        [],
        |r| r.get(0),
    )?;
    let Some(max) = max else { return Ok(()) };
    let n = tx.execute(
        "UPDATE sqlite_sequence SET seq = ?2 WHERE name = ?1 AND seq < ?2",
        rusqlite::params![t.name, max],
    )?;
    if n == 0 {
        tx.execute(
            "INSERT INTO sqlite_sequence(name, seq) SELECT ?1, ?2
             WHERE NOT EXISTS (SELECT 1 FROM sqlite_sequence WHERE name = ?1)",
            rusqlite::params![t.name, max],
        )?;
    }
    Ok(())
}
