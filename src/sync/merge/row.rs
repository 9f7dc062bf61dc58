//! One row's merged state: its fields' version vectors and its liveness clocks (newest Live, Set,
//! direct delete, and delete cascaded from each parent). Serializable: the DB side stores it as
//! JSON per row.
//!
//! Must never depend on the order or number of times events are applied.

use super::field::FieldState;
use super::{Event, Hlc, Row, RowId, Rules, Value};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

fn max_clock(slot: &mut Option<Hlc>, clock: &Hlc) -> bool {
    match slot {
        Some(held) if *held >= *clock => false,
        _ => {
            *slot = Some(clock.clone());
            true
        }
    }
}

/// Everything known about one row: the non-superseded versions of every field, and its liveness events.
/// Serializable (the DB side stores it as JSON per row).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct RowState {
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub(super) fields: BTreeMap<String, FieldState>,
    /// Newest Live (creation or re-creation).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(super) created: Option<Hlc>,
    /// Newest Set of any field.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(super) edited: Option<Hlc>,
    /// Newest delete of this row itself.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(super) deleted: Option<Hlc>,
    /// Newest delete cascaded from each parent. A list of pairs, not a map: JSON map keys must be strings.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub(super) cascade_deleted: Vec<(RowId, Hlc)>,
}

impl RowState {
    /// Merges one event; idempotent, commutative, associative. Returns true if the state changed.
    pub fn apply(&mut self, event: &Event) -> bool {
        match event {
            Event::Set {
                column,
                value,
                clock,
                replaces,
            } => {
                let field = match self.fields.get_mut(column) {
                    Some(field) => field,
                    None => self.fields.entry(column.clone()).or_default(),
                };
                let mut changed = false;
                for replaced in replaces.iter().filter(|r| *r < clock) {
                    changed |= field.supersede(replaced);
                }
                changed |= field.offer(clock, value);
                changed |= max_clock(&mut self.edited, clock);
                changed
            }
            Event::Live { clock } => max_clock(&mut self.created, clock),
            Event::Delete {
                clock,
                cascade_of: None,
            } => max_clock(&mut self.deleted, clock),
            Event::Delete {
                clock,
                cascade_of: Some(parent),
            } => match self
                .cascade_deleted
                .binary_search_by(|(p, _)| p.cmp(parent))
            {
                Ok(at) if self.cascade_deleted[at].1 >= *clock => false,
                Ok(at) => {
                    self.cascade_deleted[at].1 = clock.clone();
                    true
                }
                Err(at) => {
                    self.cascade_deleted
                        .insert(at, (parent.clone(), clock.clone()));
                    true
                }
            },
        }
    }

    /// Clocks a new local Set of `column` replaces: the field's causal past as one clock per device
    /// that wrote it — that device's non-superseded version, or else the newest of its clocks known to
    /// be superseded. Listing the superseded ones too means a receiver that has not yet got the logs in
    /// between still knows them superseded, so an old version never resurfaces. In clock order.
    pub fn frontier(&self, column: &str) -> Vec<Hlc> {
        let Some(field) = self.fields.get(column) else {
            return Vec::new();
        };
        let mut past: BTreeMap<&str, &Hlc> = field
            .superseded
            .iter()
            .map(|(device, clock)| (device.as_str(), clock))
            .collect();
        for (device, version) in &field.newest {
            let clock = past.entry(device.as_str()).or_insert(&version.clock);
            if version.clock > **clock {
                *clock = &version.clock;
            }
        }
        let mut clocks: Vec<Hlc> = past.into_values().cloned().collect();
        clocks.sort();
        clocks
    }

    /// The non-superseded versions of `column`, in clock order: more than one while concurrent edits
    /// are not yet resolved by a later edit.
    pub fn concurrent(&self, column: &str) -> Vec<Hlc> {
        self.fields
            .get(column)
            .map(|field| field.frontier().map(|(clock, _)| clock.clone()).collect())
            .unwrap_or_default()
    }

    /// The winning value per column (ladder first among concurrent versions, else highest clock),
    /// ignoring liveness.
    pub fn fields(&self, rules: &Rules, table: &str) -> Row {
        self.fields
            .iter()
            .filter_map(|(column, field)| {
                let (_, value) = field.winner(rules.ladder(table, column))?;
                Some((column.clone(), value.clone()))
            })
            .collect()
    }

    /// The winning value of one column and its clock.
    pub fn field(&self, rules: &Rules, table: &str, column: &str) -> Option<(&Hlc, &Value)> {
        self.fields.get(column)?.winner(rules.ladder(table, column))
    }

    /// The newest clock of anything that happened to this row.
    pub fn latest_clock(&self) -> Option<&Hlc> {
        [
            self.created.as_ref(),
            self.edited.as_ref(),
            self.deleted.as_ref(),
        ]
        .into_iter()
        .flatten()
        .chain(self.cascade_deleted.iter().map(|(_, clock)| clock))
        .max()
    }

    /// Newest Live or Set: what a delete must be older than for the row to be alive.
    pub fn newest_alive_clock(&self) -> Option<&Hlc> {
        self.created.as_ref().max(self.edited.as_ref())
    }

    /// Newest Live (creation or re-creation) clock.
    pub fn created(&self) -> Option<&Hlc> {
        self.created.as_ref()
    }

    /// Newest delete, direct or cascaded.
    pub fn newest_delete_clock(&self) -> Option<&Hlc> {
        self.deleted
            .iter()
            .chain(self.cascade_deleted.iter().map(|(_, clock)| clock))
            .max()
    }
}
