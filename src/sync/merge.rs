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

use super::clock::Hlc;
use serde::{Deserialize, Serialize};
use std::cmp::Ordering;
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

/// `songs.status`, lowest rung first.
pub const SONG_STATUS_LADDER: &[&str] =
    &["draft", "queued", "processing", "submitted", "completed"];
/// `distributions.status`, lowest rung first.
pub const DISTRIBUTION_STATUS_LADDER: &[&str] =
    &["draft", "ready", "uploading", "submitted", "live"];

/// Per-column merge rules: which columns have a status ladder.
/// `Rules::default()` has the `songs.status` and `distributions.status` ladders.
#[derive(Clone, Debug)]
pub struct Rules {
    ladders: Vec<(&'static str, &'static str, &'static [&'static str])>,
}

impl Default for Rules {
    fn default() -> Rules {
        Rules::none()
            .with_ladder("songs", "status", SONG_STATUS_LADDER)
            .with_ladder("distributions", "status", DISTRIBUTION_STATUS_LADDER)
    }
}

impl Rules {
    /// No ladders: every column is plain last-writer-wins.
    pub fn none() -> Rules {
        Rules {
            ladders: Vec::new(),
        }
    }

    /// Adds (or replaces) the ladder of `table.column`, lowest rung first.
    pub fn with_ladder(
        mut self,
        table: &'static str,
        column: &'static str,
        rungs: &'static [&'static str],
    ) -> Rules {
        self.ladders
            .retain(|(t, c, _)| !(*t == table && *c == column));
        self.ladders.push((table, column, rungs));
        self
    }

    /// The ladder of `table.column`, lowest rung first, if it has one.
    pub fn ladder(&self, table: &str, column: &str) -> Option<&[&str]> {
        self.ladders
            .iter()
            .find(|(t, c, _)| *t == table && *c == column)
            .map(|(_, _, rungs)| *rungs)
    }
}

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

/// The newest version of a field from one device. `value` is `None` once the version is superseded
/// (only its clock is still needed, to know later arrivals from that device are older).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
struct Version {
    clock: Hlc,
    /// Absent once superseded; a present `null` is SQL NULL (serde alone would read it as absent).
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "present_value"
    )]
    value: Option<Value>,
}

fn present_value<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Value>, D::Error> {
    Value::deserialize(d).map(Some)
}

/// Everything known about one field.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
struct FieldState {
    /// Per device: its newest version of this field.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    newest: BTreeMap<String, Version>,
    /// Per device: the greatest of its clocks known to be superseded (all its older ones are too).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    superseded: BTreeMap<String, Hlc>,
}

/// A value a device held before its first sync, with no known history.
fn is_base(clock: &Hlc) -> bool {
    clock.wall_ms == 0 && clock.counter == 0
}

impl FieldState {
    fn is_superseded(&self, clock: &Hlc) -> bool {
        self.superseded
            .get(&clock.device)
            .is_some_and(|upto| clock <= upto)
    }

    /// Marks `clock` (and so every older clock of its device) superseded.
    fn supersede(&mut self, clock: &Hlc) -> bool {
        match self.superseded.get_mut(&clock.device) {
            Some(upto) if *upto >= *clock => return false,
            Some(upto) => *upto = clock.clone(),
            None => {
                self.superseded.insert(clock.device.clone(), clock.clone());
            }
        }
        if let Some(version) = self.newest.get_mut(&clock.device) {
            if version.clock <= *clock {
                version.value = None;
            }
        }
        true
    }

    /// Offers a version; kept if it is its device's newest.
    fn offer(&mut self, clock: &Hlc, value: &Value) -> bool {
        let value = if self.is_superseded(clock) {
            None
        } else {
            Some(value)
        };
        match self.newest.get_mut(&clock.device) {
            Some(version) => match clock.cmp(&version.clock) {
                Ordering::Less => false,
                Ordering::Greater => {
                    *version = Version {
                        clock: clock.clone(),
                        value: value.cloned(),
                    };
                    true
                }
                // The same clock twice: a duplicate, normally. Should two events ever share a clock
                // with different values, keep the greater value so every device picks the same one.
                Ordering::Equal => match (&version.value, value) {
                    (Some(held), Some(offered))
                        if value_order(offered, held) == Ordering::Greater =>
                    {
                        version.value = Some(offered.clone());
                        true
                    }
                    _ => false,
                },
            },
            None => {
                self.newest.insert(
                    clock.device.clone(),
                    Version {
                        clock: clock.clone(),
                        value: value.cloned(),
                    },
                );
                true
            }
        }
    }

    /// The non-superseded versions, in clock order. Values held before any sync (the zero
    /// clock: each device's copy of a seeded row) are the common base, not rival edits: once
    /// any real edit of the field is known, they leave the frontier.
    fn frontier(&self) -> impl Iterator<Item = (&Hlc, &Value)> {
        let mut versions: Vec<(&Hlc, &Value)> = self
            .newest
            .values()
            .filter_map(|v| v.value.as_ref().map(|value| (&v.clock, value)))
            .collect();
        if versions.iter().any(|(clock, _)| !is_base(clock)) {
            versions.retain(|(clock, _)| !is_base(clock));
        }
        versions.sort_by(|a, b| a.0.cmp(b.0));
        versions.into_iter()
    }

    /// The winning version: highest rung if every frontier value is on the ladder, else highest clock.
    fn winner(&self, ladder: Option<&[&str]>) -> Option<(&Hlc, &Value)> {
        let frontier: Vec<(&Hlc, &Value)> = self.frontier().collect();
        if frontier.len() <= 1 {
            return frontier.into_iter().next();
        }
        if let Some(rungs) = ladder {
            let ranked: Option<Vec<(usize, &Hlc, &Value)>> = frontier
                .iter()
                .map(|(clock, value)| rung(rungs, value).map(|r| (r, *clock, *value)))
                .collect();
            if let Some(ranked) = ranked {
                return ranked
                    .into_iter()
                    .max_by(|a, b| (a.0, a.1).cmp(&(b.0, b.1)))
                    .map(|(_, clock, value)| (clock, value));
            }
        }
        frontier.into_iter().max_by(|a, b| a.0.cmp(b.0))
    }
}

/// Position of `value` on the ladder, if it is a rung.
fn rung(rungs: &[&str], value: &Value) -> Option<usize> {
    let text = value.as_str()?;
    rungs.iter().position(|r| *r == text)
}

/// A total order on values, only to break the tie of two events that (wrongly) share a clock.
fn value_order(a: &Value, b: &Value) -> Ordering {
    a.to_string().cmp(&b.to_string())
}

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
    fields: BTreeMap<String, FieldState>,
    /// Newest Live (creation or re-creation).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    created: Option<Hlc>,
    /// Newest Set of any field.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    edited: Option<Hlc>,
    /// Newest delete of this row itself.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    deleted: Option<Hlc>,
    /// Newest delete cascaded from each parent. A list of pairs, not a map: JSON map keys must be strings.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    cascade_deleted: Vec<(RowId, Hlc)>,
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

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn hlc(wall_ms: u64, device: &str) -> Hlc {
        Hlc {
            wall_ms,
            counter: 0,
            device: device.into(),
        }
    }

    fn set(column: &str, value: Value, clock: &Hlc, replaces: &[&Hlc]) -> Event {
        Event::Set {
            column: column.into(),
            value,
            clock: clock.clone(),
            replaces: replaces.iter().map(|c| (*c).clone()).collect(),
        }
    }

    fn song_status(row: &RowState) -> Value {
        row.fields(&Rules::default(), "songs")["status"].clone()
    }

    #[test]
    fn concurrent_statuses_resolve_to_the_higher_rung_regardless_of_time() {
        let base = hlc(1, "a");
        let mut row = RowState::default();
        row.apply(&set("status", json!("draft"), &base, &[]));
        row.apply(&set("status", json!("completed"), &hlc(5, "a"), &[&base]));
        row.apply(&set("status", json!("queued"), &hlc(9, "b"), &[&base]));
        assert_eq!(song_status(&row), json!("completed"));
        let conflicts = row.conflicts(&Rules::default(), "songs");
        assert_eq!(conflicts.len(), 1);
        assert_eq!(conflicts[0].lost, json!("queued"));
        assert_eq!(conflicts[0].kept, json!("completed"));
    }

    #[test]
    fn a_seeded_songs_status_lowered_on_one_device_beats_the_other_devices_seed_copies() {
        // Every device holds the seeded song as `completed` from before its first sync.
        let (a0, b0, c0) = (Hlc::zero("a"), Hlc::zero("b"), Hlc::zero("c"));
        let mut row = RowState::default();
        for base in [&a0, &b0, &c0] {
            row.apply(&set("status", json!("completed"), base, &[]));
        }
        // Device a re-queues it, knowing only its own copy.
        row.apply(&set("status", json!("queued"), &hlc(9, "a"), &[&a0]));
        assert_eq!(song_status(&row), json!("queued"));
        assert!(row.conflicts(&Rules::default(), "songs").is_empty());
    }

    #[test]
    fn concurrent_equal_values_are_not_conflicts() {
        let mut row = RowState::default();
        row.apply(&set("title", json!("same"), &hlc(5, "a"), &[]));
        row.apply(&set("title", json!("same"), &hlc(6, "b"), &[]));
        assert_eq!(row.concurrent("title").len(), 2);
        assert!(row.conflicts(&Rules::default(), "songs").is_empty());
    }

    #[test]
    fn a_status_set_after_seeing_the_other_wins_as_an_ordinary_edit() {
        let mut row = RowState::default();
        let completed = hlc(5, "a");
        row.apply(&set("status", json!("completed"), &completed, &[]));
        // A user re-queues the song after seeing it completed.
        row.apply(&set("status", json!("queued"), &hlc(9, "b"), &[&completed]));
        assert_eq!(song_status(&row), json!("queued"));
        assert!(row.conflicts(&Rules::default(), "songs").is_empty());
    }

    #[test]
    fn values_off_the_ladder_fall_back_to_last_writer_wins() {
        let mut row = RowState::default();
        row.apply(&set("status", json!("completed"), &hlc(5, "a"), &[]));
        row.apply(&set("status", json!("error"), &hlc(9, "b"), &[]));
        assert_eq!(song_status(&row), json!("error"));
        // The same column of a table without a ladder is plain LWW too.
        let fields = row.fields(&Rules::default(), "genres");
        assert_eq!(fields["status"], json!("error"));
    }

    #[test]
    fn an_old_version_arriving_late_stays_superseded() {
        let a = hlc(1, "a");
        let b = hlc(2, "b");
        let c = hlc(3, "c");
        let events = [
            set("title", json!("A"), &a, &[]),
            set("title", json!("B"), &b, &[&a]),
            set("title", json!("C"), &c, &[&b]),
        ];
        for order in [
            [0, 1, 2],
            [2, 1, 0],
            [2, 0, 1],
            [1, 2, 0],
            [0, 2, 1],
            [1, 0, 2],
        ] {
            let mut row = RowState::default();
            for i in order {
                row.apply(&events[i]);
            }
            assert_eq!(row.concurrent("title"), vec![c.clone()], "order {order:?}");
            assert_eq!(row.fields(&Rules::default(), "songs")["title"], json!("C"));
        }
    }

    #[test]
    fn an_old_version_never_resurfaces_while_a_log_in_between_is_missing() {
        // Device a writes A; b, having A, writes B; c, having both, writes C.
        let mut on_b = RowState::default();
        let a = set("title", json!("A"), &hlc(1, "a"), &[]);
        on_b.apply(&a);
        let b = Event::Set {
            column: "title".into(),
            value: json!("B"),
            clock: hlc(2, "b"),
            replaces: on_b.frontier("title"),
        };
        let mut on_c = on_b.clone();
        on_c.apply(&b);
        let c = Event::Set {
            column: "title".into(),
            value: json!("C"),
            clock: hlc(3, "c"),
            replaces: on_c.frontier("title"),
        };
        // Device d gets a's and c's logs, not yet b's.
        let mut on_d = RowState::default();
        on_d.apply(&c);
        on_d.apply(&a);
        assert_eq!(on_d.concurrent("title"), vec![hlc(3, "c")]);
        assert_eq!(on_c.frontier("title"), vec![hlc(1, "a"), hlc(2, "b")]);
    }

    #[test]
    fn a_later_write_from_the_same_device_supersedes_its_earlier_one() {
        let mut row = RowState::default();
        // The earlier write reached the writer only through the later one: no `replaces` needed.
        row.apply(&set("status", json!("completed"), &hlc(9, "a"), &[]));
        row.apply(&set("status", json!("submitted"), &hlc(5, "a"), &[]));
        assert_eq!(row.concurrent("status"), vec![hlc(9, "a")]);
    }

    #[test]
    fn many_edits_keep_one_version_per_device() {
        let mut row = RowState::default();
        let mut previous: Vec<Hlc> = Vec::new();
        for i in 0..1000u64 {
            let device = if i % 2 == 0 { "a" } else { "b" };
            let clock = hlc(i, device);
            row.apply(&Event::Set {
                column: "title".into(),
                value: json!(i),
                clock: clock.clone(),
                replaces: previous.clone(),
            });
            previous = row.frontier("title");
        }
        let json = serde_json::to_string(&row).unwrap();
        assert!(json.len() < 400, "state grew: {json}");
        assert_eq!(row.fields(&Rules::default(), "songs")["title"], json!(999));
    }

    #[test]
    fn applying_an_event_twice_changes_nothing_the_second_time() {
        let mut row = RowState::default();
        let events = [
            set("title", json!("x"), &hlc(1, "a"), &[]),
            Event::Live { clock: hlc(0, "a") },
            Event::Delete {
                clock: hlc(2, "b"),
                cascade_of: None,
            },
            Event::Delete {
                clock: hlc(3, "b"),
                cascade_of: Some(RowId::new("songs", "p")),
            },
        ];
        for event in &events {
            assert!(row.apply(event));
            assert!(!row.apply(event));
        }
    }

    #[test]
    fn equal_clocks_with_different_values_pick_the_same_value_in_any_order() {
        let clock = hlc(1, "a");
        let x = set("title", json!("x"), &clock, &[]);
        let y = set("title", json!("y"), &clock, &[]);
        let mut one = RowState::default();
        one.apply(&x);
        one.apply(&y);
        let mut two = RowState::default();
        two.apply(&y);
        two.apply(&x);
        assert_eq!(one, two);
    }

    #[test]
    fn replaced_clocks_not_below_the_event_are_ignored() {
        let mut row = RowState::default();
        row.apply(&set("title", json!("x"), &hlc(5, "a"), &[&hlc(9, "b")]));
        row.apply(&set("title", json!("y"), &hlc(9, "b"), &[]));
        assert_eq!(row.concurrent("title"), vec![hlc(5, "a"), hlc(9, "b")]);
    }

    fn change(row: &RowId, event: Event) -> Change {
        Change {
            row: row.clone(),
            event,
        }
    }

    #[test]
    fn a_delete_wins_over_an_older_edit_and_loses_to_a_newer_one() {
        let song = RowId::new("songs", "s1");
        let mut state = MergeState::default();
        state.apply(&change(&song, Event::Live { clock: hlc(1, "a") }));
        state.apply(&change(
            &song,
            set("title", json!("old"), &hlc(2, "b"), &[]),
        ));
        state.apply(&change(
            &song,
            Event::Delete {
                clock: hlc(3, "a"),
                cascade_of: None,
            },
        ));
        assert!(!state.is_alive(&song));
        assert_eq!(state.resolve(&Rules::default(), &song), None);
        assert_eq!(state.delete_conflict(&song), None);

        state.apply(&change(&song, set("genre", json!(4), &hlc(4, "b"), &[])));
        assert!(state.is_alive(&song));
        // It comes back whole: the field set before the delete is still there.
        let resolved = state.resolve(&Rules::default(), &song).unwrap();
        assert_eq!(resolved["title"], json!("old"));
        assert_eq!(resolved["genre"], json!(4));
        assert_eq!(
            state.delete_conflict(&song),
            Some(DeleteConflict {
                delete_clock: hlc(3, "a"),
                edit_clock: hlc(4, "b"),
            })
        );
    }

    #[test]
    fn a_recreated_row_is_not_a_delete_conflict() {
        let song = RowId::new("songs", "s1");
        let mut state = MergeState::default();
        state.apply(&change(&song, Event::Live { clock: hlc(1, "a") }));
        state.apply(&change(
            &song,
            Event::Delete {
                clock: hlc(2, "a"),
                cascade_of: None,
            },
        ));
        state.apply(&change(&song, Event::Live { clock: hlc(3, "a") }));
        state.apply(&change(&song, set("title", json!("t"), &hlc(3, "a"), &[])));
        assert!(state.is_alive(&song));
        assert_eq!(state.delete_conflict(&song), None);
    }

    #[test]
    fn cascaded_children_come_back_with_their_parent_but_not_after_their_own_delete() {
        let project = RowId::new("cd_projects", "p");
        let kept = RowId::new("cd_tracks", "t1");
        let removed = RowId::new("cd_tracks", "t2");
        let mut state = MergeState::default();
        for row in [&project, &kept, &removed] {
            state.apply(&change(row, Event::Live { clock: hlc(1, "a") }));
        }
        state.apply(&change(
            &kept,
            set("title", json!("one"), &hlc(1, "a"), &[]),
        ));
        // Device b removes track 2 itself, then device a deletes the project with its tracks.
        state.apply(&change(
            &removed,
            Event::Delete {
                clock: hlc(2, "b"),
                cascade_of: None,
            },
        ));
        for row in [&project, &kept, &removed] {
            let cascade_of = (*row != project).then(|| project.clone());
            state.apply(&change(
                row,
                Event::Delete {
                    clock: hlc(5, "a"),
                    cascade_of,
                },
            ));
        }
        assert!(!state.is_alive(&project));
        assert!(!state.is_alive(&kept));
        // Device c renamed the project later, without seeing the delete: the project wins, whole.
        state.apply(&change(
            &project,
            set("name", json!("CD"), &hlc(7, "c"), &[]),
        ));
        assert!(state.is_alive(&project));
        assert!(state.is_alive(&kept));
        assert_eq!(
            state.resolve(&Rules::default(), &kept).unwrap()["title"],
            json!("one")
        );
        assert!(!state.is_alive(&removed));
    }

    #[test]
    fn a_child_stays_dead_when_its_parent_came_back_and_was_deleted_again() {
        let project = RowId::new("cd_projects", "p");
        let track = RowId::new("cd_tracks", "t");
        let mut state = MergeState::default();
        for row in [&project, &track] {
            state.apply(&change(row, Event::Live { clock: hlc(1, "a") }));
        }
        state.apply(&change(
            &project,
            Event::Delete {
                clock: hlc(5, "a"),
                cascade_of: None,
            },
        ));
        state.apply(&change(
            &track,
            Event::Delete {
                clock: hlc(5, "a"),
                cascade_of: Some(project.clone()),
            },
        ));
        state.apply(&change(
            &project,
            set("name", json!("n"), &hlc(7, "b"), &[]),
        ));
        assert!(state.is_alive(&track));
        // Deleted again by a device that did not hold the track (so no new cascade event for it).
        state.apply(&change(
            &project,
            Event::Delete {
                clock: hlc(9, "c"),
                cascade_of: None,
            },
        ));
        assert!(!state.is_alive(&project));
        assert!(!state.is_alive(&track));
    }

    #[test]
    fn a_child_stays_dead_while_any_cascading_parent_is_dead() {
        let song = RowId::new("songs", "s");
        let tag = RowId::new("tags", "t");
        let link = RowId::new("song_tags", "s+t");
        let mut state = MergeState::default();
        for row in [&song, &tag, &link] {
            state.apply(&change(row, Event::Live { clock: hlc(1, "a") }));
        }
        for (parent, at) in [(&song, 3), (&tag, 4)] {
            state.apply(&change(
                parent,
                Event::Delete {
                    clock: hlc(at, "a"),
                    cascade_of: None,
                },
            ));
            state.apply(&change(
                &link,
                Event::Delete {
                    clock: hlc(at, "a"),
                    cascade_of: Some(parent.clone()),
                },
            ));
        }
        state.apply(&change(&song, set("title", json!("x"), &hlc(9, "b"), &[])));
        assert!(state.is_alive(&song));
        assert!(!state.is_alive(&link), "its tag is still deleted");
    }

    #[test]
    fn unknown_and_never_created_rows_are_not_alive() {
        let state = MergeState::default();
        assert!(!state.is_alive(&RowId::new("songs", "nope")));
        let mut state = MergeState::default();
        let only_deleted = RowId::new("songs", "d");
        state.apply(&change(
            &only_deleted,
            Event::Delete {
                clock: hlc(1, "a"),
                cascade_of: None,
            },
        ));
        assert!(!state.is_alive(&only_deleted));
    }

    #[test]
    fn state_round_trips_through_json() {
        let mut state = MergeState::default();
        let child = RowId::new("distributions", "d");
        state.apply(&change(&child, Event::Live { clock: hlc(1, "a") }));
        state.apply(&change(
            &child,
            set("status", json!("ready"), &hlc(2, "a"), &[]),
        ));
        state.apply(&change(
            &child,
            Event::Delete {
                clock: hlc(3, "b"),
                cascade_of: Some(RowId::new("songs", "s")),
            },
        ));
        let text = serde_json::to_string(&state).unwrap();
        let back: MergeState = serde_json::from_str(&text).unwrap();
        assert_eq!(back, state);
        let row_text = serde_json::to_string(&state.rows[&child]).unwrap();
        let row_back: RowState = serde_json::from_str(&row_text).unwrap();
        assert_eq!(row_back, state.rows[&child]);
    }

    #[test]
    fn a_field_cleared_to_null_stays_null_after_a_json_round_trip() {
        let row = RowId::new("songs", "s");
        let rules = Rules::default();
        let mut state = MergeState::default();
        state.apply(&change(&row, Event::Live { clock: hlc(1, "a") }));
        state.apply(&change(&row, set("genre_id", json!(3), &hlc(2, "a"), &[])));
        let three = hlc(2, "a");
        state.apply(&change(
            &row,
            set("genre_id", Value::Null, &hlc(3, "a"), &[&three]),
        ));
        let back: MergeState =
            serde_json::from_str(&serde_json::to_string(&state).unwrap()).unwrap();
        assert_eq!(back, state);
        assert_eq!(back.resolve(&rules, &row).unwrap()["genre_id"], Value::Null);
    }

    #[test]
    fn table_lists_only_that_tables_rows() {
        let mut state = MergeState::default();
        for id in [
            RowId::new("song", "x"),
            RowId::new("songs", "a"),
            RowId::new("songs", "b"),
            RowId::new("songs_x", "c"),
        ] {
            state.apply(&change(&id, Event::Live { clock: hlc(1, "a") }));
        }
        let gids: Vec<&str> = state
            .table("songs")
            .map(|(id, _)| id.gid.as_str())
            .collect();
        assert_eq!(gids, ["a", "b"]);
    }

    #[test]
    fn default_rules_know_both_ladders() {
        let rules = Rules::default();
        assert_eq!(rules.ladder("songs", "status"), Some(SONG_STATUS_LADDER));
        assert_eq!(
            rules.ladder("distributions", "status"),
            Some(DISTRIBUTION_STATUS_LADDER)
        );
        assert_eq!(rules.ladder("songs", "title"), None);
        assert_eq!(Rules::none().ladder("songs", "status"), None);
    }
}
