//! The merge rules: how every device turns the set of changes it has received into the same rows.
//!
//! Pure: no I/O, no SQLite, no system time. The merged state is a function of the SET of events
//! received — applying an event is idempotent, commutative and associative — so devices that received
//! the same events hold the same state, whatever order and however often the logs arrived.
//! Must never: drop a version that could still win, or depend on arrival order.
//!
//! # Fields: last writer wins, with concurrent versions kept
//! Every edit of one field is an [`Event::Set`] with an [`Hlc`] and `replaces`: the field's causal past
//! as the writer knew it ([`RowState::frontier`]: per device that wrote the field, its version the
//! writer held, or the newest of its clocks the writer knew superseded — a version vector). A version is
//! *superseded* when it is causally before some version received:
//! - it is listed in some received event's `replaces`, or
//! - a later Set of the same field from the same device was received (a device writes a field only
//!   after applying its own previous write, so its previous write — or whatever superseded it — is in
//!   the causal past of the new one).
//!
//! Because one device's writes of one field are causally chained, "superseded" is a version vector:
//! per device, the greatest clock known to be superseded. A field therefore keeps, per device, only its
//! newest version (value dropped once superseded, clock kept) and the greatest superseded clock: state is
//! bounded by the number of devices, and an old version arriving late stays superseded. Because each
//! Set carries its writer's whole version vector for the field, a device that got a Set but not the
//! logs in between still knows everything that Set superseded: its frontier is exactly the causal one
//! at every moment, not only once every log arrived.
//!
//! The *frontier* of a field is its non-superseded versions: a value plus every concurrent value not yet
//! replaced. Versions with the zero clock (what each device held before its first sync: its copy of a
//! seeded row) are the common base, superseded by any real edit of the field from anywhere; otherwise a
//! seeded song's status lowered on one device would lose, on the ladder, to the other devices' untouched
//! copies. The resolved value, among the frontier:
//! - on a laddered column (`songs.status`, `distributions.status`) whose frontier values are ALL on the
//!   ladder: the highest rung wins, then the highest clock (two devices that changed the status
//!   without seeing each other's change: the higher status wins, regardless of time);
//! - otherwise the highest clock (values off the ladder, like `error` or `imported`, fall back to
//!   last-writer-wins).
//!
//! A status set after seeing the other one lists it in `replaces`, supersedes it, and wins as an ordinary
//! later edit. A local Set must therefore use `clock.tick()` and `replaces = state.frontier(column)`.
//! Replaced clocks that are not below the event's own clock are ignored: they cannot be its causal past,
//! and ignoring them keeps the newest version of a field always on the frontier.
//!
//! # Rows: alive or deleted
//! A row is alive iff its newest Live/Set clock is newer than its newest Delete: a delete wins over an
//! older edit and loses to a newer one. Field versions are never dropped on delete, so a row that comes
//! back comes back whole. A child removed by its parent's delete (FK cascade, `cascade_of`) is alive again
//! when the parent is alive and the parent's newest Live/Set is newer than that cascade delete: the
//! children come back with the parent. A direct delete of the child still keeps it dead.
//!
//! # Conflicts
//! [`RowState::conflicts`] lists frontier versions that lost (concurrent edits of one field);
//! [`MergeState::delete_conflict`] tells when a row is alive only because an edit newer than its delete
//! arrived from a device that had not seen the delete.

//!
//! # Where each rule lives
//! - `field.rs`: one field's versions as a version vector (supersede, offer, frontier);
//! - `decide.rs`: the per-column rules (ladders) and which frontier version wins;
//! - `row.rs`: one row's fields and liveness clocks ([`RowState`]);
//! - `state.rs`: all rows, liveness across cascades ([`MergeState`]);
//! - `conflict.rs`: which lost versions and deletes are conflicts, and which are new.

mod conflict;
mod decide;
mod field;
mod row;
mod state;
#[cfg(test)]
mod tests;

pub use conflict::{field_conflicts, new_conflicts, DeleteConflict, FieldConflict, RowConflict};
pub use decide::{Rules, DISTRIBUTION_STATUS_LADDER, SONG_STATUS_LADDER};
pub use row::RowState;
pub use state::MergeState;

use super::clock::Hlc;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// A SQLite value: null, integer, real, text. References to other rows are `{"$ref": "<table>/<gid>"}`
/// (translated by the DB side); blobs `{"$blob": "<base64>"}`.
pub type Value = serde_json::Value;

/// A resolved row: column → winning value.
pub type Row = BTreeMap<String, Value>;

/// Global identity of a row: its table and a global id that names it on every device.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct RowId {
    pub table: String,
    pub gid: String,
}

impl RowId {
    pub fn new(table: &str, gid: &str) -> RowId {
        RowId {
            table: table.to_string(),
            gid: gid.to_string(),
        }
    }
}

impl std::fmt::Display for RowId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.table, self.gid)
    }
}

/// One thing that happened to a row.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum Event {
    /// A field got a value. `replaces`: the clocks of this field's versions the writer held when it wrote
    /// (its causal past for this field; empty for the first value).
    Set {
        column: String,
        value: Value,
        clock: Hlc,
        replaces: Vec<Hlc>,
    },
    /// The row was created (or re-created) at `clock`.
    Live { clock: Hlc },
    /// The row was deleted at `clock`; `cascade_of` names the parent whose delete removed it (FK cascade).
    Delete {
        clock: Hlc,
        cascade_of: Option<RowId>,
    },
}

impl Event {
    /// The clock the event happened at (what the receiving clock must observe).
    pub fn clock(&self) -> &Hlc {
        match self {
            Event::Set { clock, .. } | Event::Live { clock } | Event::Delete { clock, .. } => clock,
        }
    }
}

/// An event of one row: the unit of a change log.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Change {
    pub row: RowId,
    pub event: Event,
}
