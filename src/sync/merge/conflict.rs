//! Conflicts: a concurrent version of a field that lost, and a row alive only because an edit from a
//! device that had not seen its delete arrived. What the conflicts log records is decided here.
//!
//! Pure, like the merge: a function of the merged state. Must never report two versions that agree
//! (same value) or a version the writer had seen.

use super::{Hlc, MergeState, RowId, RowState, Rules, Value};
use serde::{Deserialize, Serialize};

/// A concurrent version of a field that lost to another (for the conflicts log).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FieldConflict {
    pub column: String,
    pub kept: Value,
    pub kept_clock: Hlc,
    pub lost: Value,
    pub lost_clock: Hlc,
}

/// A row that is alive only because an edit newer than its delete arrived: the editing device had not
/// seen the delete (a device cannot edit a row it knows is deleted). The edit won; log it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DeleteConflict {
    pub delete_clock: Hlc,
    pub edit_clock: Hlc,
}

impl RowState {
    /// Concurrent versions that lost (for the conflicts log): every non-superseded version but the
    /// winner, except those holding the winner's value (two devices that agree do not conflict).
    pub fn conflicts(&self, rules: &Rules, table: &str) -> Vec<FieldConflict> {
        let mut conflicts = Vec::new();
        for (column, field) in &self.fields {
            let Some((kept_clock, kept)) = field.winner(rules.ladder(table, column)) else {
                continue;
            };
            for (lost_clock, lost) in field.frontier() {
                if lost_clock != kept_clock && lost != kept {
                    conflicts.push(FieldConflict {
                        column: column.clone(),
                        kept: kept.clone(),
                        kept_clock: kept_clock.clone(),
                        lost: lost.clone(),
                        lost_clock: lost_clock.clone(),
                    });
                }
            }
        }
        conflicts
    }
}

impl MergeState {
    /// Some when `row` is alive only because an edit newer than its newest delete arrived, with no
    /// re-creation after that delete: the editing device had not seen the delete.
    pub fn delete_conflict(&self, row: &RowId) -> Option<DeleteConflict> {
        let state = self.rows.get(row)?;
        let deleted = state.newest_delete_clock()?;
        let edited = state.edited.as_ref()?;
        let recreated = state.created.as_ref().is_some_and(|c| c > deleted);
        (edited > deleted && !recreated && self.is_alive(row)).then(|| DeleteConflict {
            delete_clock: deleted.clone(),
            edit_clock: edited.clone(),
        })
    }
}

/// A field conflict of one row, as the conflicts log records it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RowConflict {
    pub row: RowId,
    pub conflict: FieldConflict,
}

impl RowConflict {
    /// What names a conflict across merges: the field and the version that lost.
    fn key(&self) -> (&RowId, &str, &Hlc) {
        (&self.row, &self.conflict.column, &self.conflict.lost_clock)
    }
}

/// The field conflicts of `rows` in `state` that the log records. Two copies of a seeded row
/// (the zero clock) with different install times are not a conflict: nobody edited them.
pub fn field_conflicts<'a>(
    state: &MergeState,
    rules: &Rules,
    rows: impl IntoIterator<Item = &'a RowId>,
) -> Vec<RowConflict> {
    let mut out = Vec::new();
    for row in rows {
        let Some(s) = state.rows.get(row) else {
            continue;
        };
        for c in s.conflicts(rules, &row.table) {
            let seeded_stamp = c.kept_clock.wall_ms == 0
                && c.lost_clock.wall_ms == 0
                && (c.column == "created_at" || c.column == "updated_at");
            if !seeded_stamp {
                out.push(RowConflict {
                    row: row.clone(),
                    conflict: c,
                });
            }
        }
    }
    out
}

/// The conflicts in `after` that were not in `before` (the same field losing the same version):
/// what one merge step created, so each is logged once however often the state is merged again.
pub fn new_conflicts(before: &[RowConflict], after: Vec<RowConflict>) -> Vec<RowConflict> {
    after
        .into_iter()
        .filter(|a| !before.iter().any(|b| b.key() == a.key()))
        .collect()
}
