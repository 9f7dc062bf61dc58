//! The merged state of every row, and liveness across rows: a child removed by its parent's
//! delete comes back with the parent.
//!
//! Must never hold anything but what the set of received changes determines.

use super::{Change, Row, RowId, RowState, Rules};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// How deep a chain of cascades can be (songs → distributions is 1); guards against a reference cycle.
const MAX_CASCADE_DEPTH: usize = 8;

/// The whole merged state of a set of rows. Liveness needs the parents (cascades), so it lives here.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct MergeState {
    /// Serialized as a list of pairs: JSON map keys must be strings.
    #[serde(with = "pairs")]
    pub rows: BTreeMap<RowId, RowState>,
}

impl MergeState {
    /// Merges one change; idempotent, commutative, associative. Returns true if the state changed.
    pub fn apply(&mut self, change: &Change) -> bool {
        match self.rows.get_mut(&change.row) {
            Some(row) => row.apply(&change.event),
            None => self
                .rows
                .entry(change.row.clone())
                .or_default()
                .apply(&change.event),
        }
    }

    /// Alive iff its newest Live/Set is newer than its newest Delete (a delete wins over an older edit
    /// and loses to a newer one); a cascade-deleted child is alive again when its parent came back after
    /// that delete. Unknown rows are not alive.
    pub fn is_alive(&self, row: &RowId) -> bool {
        self.alive_within(row, MAX_CASCADE_DEPTH)
    }

    fn alive_within(&self, row: &RowId, depth: usize) -> bool {
        let Some(state) = self.rows.get(row) else {
            return false;
        };
        let Some(alive) = state.newest_alive_clock() else {
            return false;
        };
        if state
            .deleted
            .as_ref()
            .is_some_and(|deleted| deleted > alive)
        {
            return false;
        }
        state.cascade_deleted.iter().all(|(parent, deleted)| {
            if deleted < alive {
                return true;
            }
            depth > 0
                && self.alive_within(parent, depth - 1)
                && self.rows[parent]
                    .newest_alive_clock()
                    .is_some_and(|back| back > deleted)
        })
    }

    /// The resolved row (None if dead or unknown).
    pub fn resolve(&self, rules: &Rules, row: &RowId) -> Option<Row> {
        if !self.is_alive(row) {
            return None;
        }
        Some(self.rows.get(row)?.fields(rules, &row.table))
    }

    /// The rows of one table, in global-id order.
    pub fn table<'a>(&'a self, table: &'a str) -> impl Iterator<Item = (&'a RowId, &'a RowState)> {
        self.rows
            .range(RowId::new(table, "")..)
            .take_while(move |(id, _)| id.table == table)
    }
}

/// Serializes a map with non-string keys as a list of `[key, value]` pairs.
mod pairs {
    use serde::{Deserialize, Deserializer, Serialize, Serializer};
    use std::collections::BTreeMap;

    pub fn serialize<K: Serialize, V: Serialize, S: Serializer>(
        map: &BTreeMap<K, V>,
        serializer: S,
    ) -> Result<S::Ok, S::Error> {
        serializer.collect_seq(map.iter())
    }

    pub fn deserialize<'de, K, V, D>(deserializer: D) -> Result<BTreeMap<K, V>, D::Error>
    where
        K: Deserialize<'de> + Ord,
        V: Deserialize<'de>,
        D: Deserializer<'de>,
    {
        Ok(Vec::<(K, V)>::deserialize(deserializer)?
            .into_iter()
            .collect())
    }
}
