//! The change-log format: encoding, validation, and how a device's changes compact. The
//! keys, numbering and moving of logs are the transport's (`transport/`).
//!
//! `logs/<device_id>/<seq>.json` (seq zero-padded to 12 digits so listings sort) is one
//! device's changes of one cycle, written once with put-if-absent and never changed:
//! ```json
//! {"device_id": "…", "sync_version": 2, "timestamp": "2026-02-10T12:00:00Z", "seq": 7,
//!  "changes": [{"row": {"table": "songs", "gid": "t:abc"},
//!               "event": {"Set": {"column": "status", "value": "completed",
//!                                 "clock": {"wall_ms": 1, "counter": 0, "device": "…"},
//!                                 "replaces": []}}}]}
//! ```
//! A flat list of `merge::Change` (the merge needs each event's row, clock and causal
//! past; grouping per table would only repeat the table name less often).
//! `snapshots/<device_id>/<seq>.json` has the same shape and holds that device's own
//! changes of logs 1..=seq, compacted; its logs up to seq are then deleted.
//!
//! Must never: accept a log of an unknown `sync_version`, a table or column name that is
//! not a plain identifier, or an object over the size cap; or rewrite an existing log.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::merge::{Change, Event};
use super::schema::{is_plain_name, Schema};
use super::transport::TransportError;

/// The change log format this build writes and reads (the seed's format was 1).
pub const SYNC_VERSION: u32 = 2;
/// No log or snapshot larger than this is read (a 10,000-song library is ~50 MiB).
pub const MAX_OBJECT_BYTES: usize = 256 << 20;
/// No value in a log larger than this (the app's largest real values, lyrics, are
/// kilobytes): a log holding one is set aside whole. A 100 MB text once took the sync to
/// 1.1 GB of memory and state.db to 420 MB.
pub const MAX_VALUE_BYTES: usize = 1 << 20;
/// The words every "value over the limit" refusal carries: such a log is never retried
/// (it cannot change), so a no-op sync does not fetch it again.
pub const OVER_VALUE_LIMIT: &str = "over the limit for one value";
/// A cycle's changes are split into logs of at most this many changes.
pub const MAX_CHANGES_PER_LOG: usize = 100_000;
/// Own logs are compacted into a snapshot once this many pile up.
pub const COMPACT_AFTER_LOGS: usize = 32;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LogFile {
    pub device_id: String,
    pub sync_version: u32,
    pub timestamp: String,
    pub seq: u64,
    pub changes: Vec<Change>,
}

pub fn encode(log: &LogFile) -> Vec<u8> {
    serde_json::to_vec(log).expect("a log always encodes")
}

fn bad(key: &str, why: impl Into<String>) -> TransportError {
    TransportError::BadLog {
        key: key.to_string(),
        why: why.into(),
    }
}

/// Parses and checks a log or snapshot read from `key`. Checks that do not depend on the
/// local schema; see [`check_against`] for those that do.
pub fn decode(key: &str, bytes: &[u8]) -> Result<LogFile, TransportError> {
    if bytes.len() > MAX_OBJECT_BYTES {
        return Err(bad(
            key,
            format!(
                "{} bytes is over the {} MiB limit; it was not read",
                bytes.len(),
                MAX_OBJECT_BYTES >> 20
            ),
        ));
    }
    // The version first (skimming the rest), so a log of another version gets that message
    // rather than whatever its unknown fields would make the full decode say.
    #[derive(serde::Deserialize)]
    struct Version {
        sync_version: Option<serde_json::Value>,
    }
    let v: Version = serde_json::from_slice(bytes)
        .map_err(|e| bad(key, format!("not valid JSON ({e}); it was skipped")))?;
    match v.sync_version.as_ref().and_then(|v| v.as_u64()) {
        Some(n) if n == SYNC_VERSION as u64 => {}
        Some(n) => {
            return Err(bad(
                key,
                format!(
                    "written with sync_version {n}, this songfs reads version {SYNC_VERSION}: \
                     update songfs on this device"
                ),
            ))
        }
        None => return Err(bad(key, "has no sync_version: not a songfs change log")),
    }
    let log: LogFile = serde_json::from_slice(bytes)
        .map_err(|e| bad(key, format!("is not a songfs change log ({e})")))?;
    for c in &log.changes {
        if !is_plain_name(&c.row.table) {
            return Err(bad(
                key,
                format!("names a table {:?} that is not a plain name", c.row.table),
            ));
        }
        if c.row.gid.is_empty() || c.row.gid.len() > 1024 {
            return Err(bad(
                key,
                format!("holds a row id of {} bytes", c.row.gid.len()),
            ));
        }
        if let Event::Set { column, value, .. } = &c.event {
            if !is_plain_name(column) {
                return Err(bad(
                    key,
                    format!("names a column {column:?} that is not a plain name"),
                ));
            }
            let size = match value {
                serde_json::Value::String(s) => s.len(),
                other => other.to_string().len(),
            };
            if size > MAX_VALUE_BYTES {
                return Err(bad(
                    key,
                    format!(
                        "holds {size} bytes in {}.{column} of row {}, {OVER_VALUE_LIMIT} ({} MiB): \
                         set aside, not applied",
                        c.row.table,
                        c.row.gid,
                        MAX_VALUE_BYTES >> 20
                    ),
                ));
            }
        }
    }
    Ok(log)
}

/// Checks a log against the local schema: every table must exist here. (A column this
/// database does not have yet is fine: the merge state keeps it until the column exists.)
pub fn check_against(key: &str, log: &LogFile, schema: &Schema) -> Result<(), TransportError> {
    for c in &log.changes {
        if schema.table(&c.row.table).is_none() {
            return Err(bad(
                key,
                format!(
                    "changes the table {:?}, which this database does not have: update Song Factory \
                     on this device (the log is retried at every sync)",
                    c.row.table
                ),
            ));
        }
    }
    Ok(())
}

/// Compacts a device's own changes: for each field only the newest Set survives, with
/// the union of the causal pasts of the Sets it replaces (an older Set of the same
/// device is in the newer one's causal past, so what it replaced is too); for each row
/// the newest Live, newest delete, newest delete per cascade parent.
pub fn compact(changes: impl IntoIterator<Item = Change>) -> Vec<Change> {
    use super::merge::RowId;
    type SetKey = (RowId, String);
    let mut sets: BTreeMap<SetKey, Change> = BTreeMap::new();
    let mut lives: BTreeMap<RowId, Change> = BTreeMap::new();
    let mut deletes: BTreeMap<(RowId, Option<RowId>), Change> = BTreeMap::new();
    for c in changes {
        match &c.event {
            Event::Set { column, .. } => {
                let k = (c.row.clone(), column.clone());
                let merged = match sets.remove(&k) {
                    None => c,
                    Some(old) => merge_sets(old, c),
                };
                sets.insert(k, merged);
            }
            Event::Live { clock } => {
                if lives.get(&c.row).is_none_or(|o| o.event.clock() < clock) {
                    lives.insert(c.row.clone(), c);
                }
            }
            Event::Delete { clock, cascade_of } => {
                let k = (c.row.clone(), cascade_of.clone());
                if deletes.get(&k).is_none_or(|o| o.event.clock() < clock) {
                    deletes.insert(k, c);
                }
            }
        }
    }
    let mut out: Vec<Change> = lives.into_values().collect();
    out.extend(sets.into_values());
    out.extend(deletes.into_values());
    out
}

fn merge_sets(a: Change, b: Change) -> Change {
    let (older, mut newer) = if a.event.clock() <= b.event.clock() {
        (a, b)
    } else {
        (b, a)
    };
    if let (
        Event::Set {
            clock: oc,
            replaces: or,
            ..
        },
        Event::Set {
            clock: nc,
            replaces: nr,
            ..
        },
    ) = (&older.event, &mut newer.event)
    {
        if oc != nc {
            nr.push(oc.clone());
        }
        nr.extend(or.iter().cloned());
        nr.retain(|r| r < nc);
        nr.sort();
        nr.dedup();
    }
    newer
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sync::clock::Hlc;
    use crate::sync::merge::{MergeState, RowId, Rules};

    fn hlc(ms: u64, d: &str) -> Hlc {
        Hlc {
            wall_ms: ms,
            counter: 0,
            device: d.into(),
        }
    }

    fn set(col: &str, v: &str, c: Hlc, replaces: Vec<Hlc>) -> Change {
        Change {
            row: RowId::new("songs", "g"),
            event: Event::Set {
                column: col.into(),
                value: v.into(),
                clock: c,
                replaces,
            },
        }
    }

    #[test]
    fn bad_logs_are_refused_with_the_reason() {
        let e = decode("logs/a/000000000001.json", b"{not json").unwrap_err();
        assert!(e.to_string().contains("not valid JSON"), "{e}");
        let e = decode(
            "logs/a/000000000001.json",
            br#"{"device_id":"a","sync_version":3,"timestamp":"","seq":1,"changes":[]}"#,
        )
        .unwrap_err();
        assert!(e.to_string().contains("sync_version 3"), "{e}");
        let e = decode(
            "logs/a/000000000001.json",
            br#"{"device_id":"a","sync_version":2,"timestamp":"","seq":1,"changes":[
              {"row":{"table":"songs; DROP TABLE songs","gid":"x"},"event":{"Live":{"clock":{"wall_ms":1,"counter":0,"device":"a"}}}}]}"#,
        )
        .unwrap_err();
        assert!(e.to_string().contains("not a plain name"), "{e}");
    }

    /// Compaction must not change what a receiver resolves, even when another device's
    /// version was replaced only by the dropped older Set.
    #[test]
    fn compaction_keeps_the_merged_result() {
        let b1 = set("title", "B", hlc(1, "b"), vec![]);
        let a1 = set("title", "A1", hlc(2, "a"), vec![hlc(1, "b")]);
        let a2 = set("title", "A2", hlc(3, "a"), vec![hlc(2, "a")]);
        let full = [b1.clone(), a1.clone(), a2.clone()];
        let compacted: Vec<Change> = std::iter::once(b1).chain(compact([a1, a2])).collect();
        assert_eq!(compacted.len(), 2);
        let (mut m1, mut m2) = (MergeState::default(), MergeState::default());
        full.iter().for_each(|c| {
            m1.apply(c);
        });
        compacted.iter().for_each(|c| {
            m2.apply(c);
        });
        let rules = Rules::default();
        let row = RowId::new("songs", "g");
        assert_eq!(m1.resolve(&rules, &row), m2.resolve(&rules, &row));
        assert!(m2.rows[&row].conflicts(&rules, "songs").is_empty());
    }
}
