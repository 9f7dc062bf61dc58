//! Compaction of a device's own logs: once `COMPACT_AFTER_LOGS` pile up, they and the
//! previous snapshot are folded into one snapshot at the highest seq (a new device then
//! reads one object, not every cycle's log), and the folded objects are deleted. Safe to
//! repeat after a crash at any point: the snapshot is written before anything is
//! deleted, and readers apply a snapshot only past their cursor.
//! Must never delete a log that is not in the snapshot written just before.

use bytes::Bytes;

use super::keys::Kind;
use super::{BlockingStore, Stream, TransportError};
use crate::sync::changelog::{self, LogFile, COMPACT_AFTER_LOGS};

/// Folds `device`'s logs into a snapshot if enough piled up; true if it did.
pub fn compact_own(
    store: &BlockingStore,
    stream: Stream,
    device: &str,
) -> Result<bool, TransportError> {
    let seqs_of = |kind: Kind| -> Result<Vec<u64>, TransportError> {
        let mut v: Vec<u64> = store
            .list(&stream.list_prefix(kind, Some(device)))?
            .iter()
            .filter_map(|k| stream.parse(k).map(|(_, _, s)| s))
            .collect();
        v.sort();
        Ok(v)
    };
    let mut seqs = seqs_of(Kind::Log)?;
    if seqs.len() < COMPACT_AFTER_LOGS {
        return Ok(false);
    }
    let mut snaps = seqs_of(Kind::Snapshot)?;
    let mut changes = Vec::new();
    // Objects under this device's id that it did not write (an encrypted store's forged
    // ones) are left out: not folded, not deleted, not counted for the snapshot's seq.
    let mut read = |key: String| -> Result<bool, TransportError> {
        let bytes = match store.get(&key) {
            Err(e @ crate::store::StoreError::Unauthentic { .. }) => {
                tracing::error!(error = %e, "not compacted: this device did not write it");
                return Ok(false);
            }
            b => b?,
        };
        changes.extend(super::pull::decode(stream, &key, &bytes)?.changes);
        Ok(true)
    };
    while let Some(&prev) = snaps.last() {
        if read(stream.snapshot_key(device, prev))? {
            break;
        }
        snaps.pop();
    }
    let mut mine = Vec::with_capacity(seqs.len());
    for &s in &seqs {
        if read(stream.log_key(device, s))? {
            mine.push(s);
        }
    }
    seqs = mine;
    if seqs.is_empty() {
        return Ok(false);
    }
    let upto = *seqs.last().expect("not empty");
    let snap = LogFile {
        device_id: device.to_string(),
        sync_version: changelog::SYNC_VERSION,
        timestamp: chrono::Utc::now().to_rfc3339(),
        seq: upto,
        changes: changelog::compact(changes),
    };
    store.put_if_absent(
        &stream.snapshot_key(device, upto),
        Bytes::from(changelog::encode(&snap)),
    )?;
    for &s in &seqs {
        store.delete(&stream.log_key(device, s))?;
    }
    for s in snaps.into_iter().filter(|s| *s < upto) {
        store.delete(&stream.snapshot_key(device, s))?;
    }
    tracing::info!(
        upto,
        logs = seqs.len(),
        stream = stream.list_prefix(Kind::Log, None),
        "this device's logs compacted into a snapshot"
    );
    Ok(true)
}
