//! Sending: numbers the outbox's batches and uploads them with put-if-absent, checking
//! its answer. "Already there" is fine only when the object holds exactly the bytes this
//! device committed for that seq (a retry after a crash); anything else means another
//! writer uses this device id, and the upload stops (see the module header of
//! `transport`). Must never renumber a batch that may already be in the store.

use bytes::Bytes;

use super::keys::Kind;
use super::state::StreamState;
use super::{BlockingStore, Stream, TransportError};
use crate::sync::changelog::{self, LogFile};
use crate::sync::merge::Change;

/// The seq this device's next log gets: `next_seq` from the state, or (a fresh state for
/// a device id that already wrote) one past the highest log or snapshot in the store.
pub fn next_seq(
    store: &BlockingStore,
    stream: Stream,
    state: StreamState<'_>,
    device: &str,
) -> Result<u64, TransportError> {
    if let Some(n) = state.meta("next_seq")?.and_then(|s| s.parse().ok()) {
        return Ok(n);
    }
    Ok(highest_seq(store, stream, device)? + 1)
}

/// The highest seq of `device`'s logs and snapshots in the store (0: none).
pub fn highest_seq(
    store: &BlockingStore,
    stream: Stream,
    device: &str,
) -> Result<u64, TransportError> {
    let mut max = 0;
    for kind in [Kind::Log, Kind::Snapshot] {
        for k in store.list(&stream.list_prefix(kind, Some(device)))? {
            if let Some((_, _, s)) = stream.parse(&k) {
                max = max.max(s);
            }
        }
    }
    Ok(max)
}

/// Uploads the outbox in order; returns how many logs went up. Stops at the first
/// failure (later batches keep their order for the next try).
pub fn send_queued(
    store: &BlockingStore,
    stream: Stream,
    state: StreamState<'_>,
    device: &str,
) -> Result<usize, TransportError> {
    if let Some(key) = state.meta("slot_taken")? {
        // Known to be cloned: sending more would only make it worse.
        return Err(TransportError::SlotTaken { key });
    }
    let mut sent = 0;
    for entry in state.outbox()? {
        let (seq, body) = match (entry.seq, entry.log) {
            (Some(s), Some(b)) => (s, b),
            _ => {
                let changes: Vec<Change> =
                    serde_json::from_slice(&entry.changes).map_err(|e| TransportError::BadLog {
                        key: format!("{}(outbox {})", stream.log_key(device, 0), entry.id),
                        why: format!("the queued batch in the sync database is unreadable: {e}"),
                    })?;
                if changes.is_empty() {
                    state.sent(entry.id)?;
                    continue;
                }
                let seq = next_seq(store, stream, state, device)?;
                let log = LogFile {
                    device_id: device.to_string(),
                    sync_version: changelog::SYNC_VERSION,
                    timestamp: chrono::Utc::now().to_rfc3339(),
                    seq,
                    changes,
                };
                let body = changelog::encode(&log);
                state.number(entry.id, seq, &body)?;
                (seq, body)
            }
        };
        let key = stream.log_key(device, seq);
        if !store.put_if_absent(&key, Bytes::from(body.clone()))? {
            let existing = store.get(&key)?;
            if existing.as_ref() != body.as_slice() {
                state.set_meta("slot_taken", &key)?;
                tracing::error!(
                    key,
                    "this device's change log slot is taken by another writer"
                );
                return Err(TransportError::SlotTaken { key });
            }
        }
        state.sent(entry.id)?;
        sent += 1;
    }
    Ok(sent)
}
