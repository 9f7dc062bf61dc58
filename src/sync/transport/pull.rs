//! Pulling: for every other device, its newest snapshot past the cursor (it holds all of
//! that device's logs up to its seq, which may be deleted already), then its logs after
//! it, in order, each applied by the receiver with the cursor moved in the same
//! transaction. An object over `MAX_OBJECT_BYTES` is not read. A log that cannot be read
//! or that the receiver refuses is set aside (recorded with its reason, the cursor moves
//! past it, a message names its key) and the device's later logs still apply; set-aside
//! logs are retried at every pull, since an update of songfs or of the app database may
//! make them readable. A store failure stops that device's logs until the next pull.
//! Must never apply a log of this device's own id, or one out of order.

use std::collections::{BTreeMap, BTreeSet};

use super::keys::Kind;
use super::state::StreamState;
use super::{BlockingStore, Stream, TransportError};
use crate::sync::changelog::{self, LogFile, MAX_OBJECT_BYTES};

/// What a stream's logs are applied to (the database sync, the namespace sync).
pub trait Receiver {
    type Error: From<TransportError> + std::fmt::Display;

    /// The stream's bookkeeping (cursors, logs set aside) on the receiver's connection.
    fn state(&self) -> StreamState<'_>;

    /// Checks that depend on the receiver (the local schema). An error sets the log aside.
    fn check(&self, _key: &str, _log: &LogFile) -> Result<(), TransportError> {
        Ok(())
    }

    /// Merges and applies one log. `cursor`: the seq to move the device's cursor to, in
    /// the apply's own transaction (None for a set-aside log applied on a retry).
    fn apply(
        &mut self,
        key: &str,
        device: &str,
        cursor: Option<u64>,
        log: &LogFile,
    ) -> Result<(), Self::Error>;

    /// `(applied, to apply)`, for a progress bar.
    fn progress(&self, _done: usize, _total: usize) {}
}

/// What a pull did.
#[derive(Debug, Default)]
pub struct PullReport {
    pub applied: usize,
    /// One message per log set aside or device left for later, naming the key.
    pub errors: Vec<String>,
}

/// Parses and checks an object read from `key` of `stream`: the format checks of
/// `changelog::decode`, and that it is the log its key says.
pub fn decode(stream: Stream, key: &str, bytes: &[u8]) -> Result<LogFile, TransportError> {
    let log = changelog::decode(key, bytes)?;
    match stream.parse(key) {
        Some((_, device, seq)) if device == log.device_id && seq == log.seq => Ok(log),
        Some((_, device, seq)) => Err(TransportError::BadLog {
            key: key.into(),
            why: format!(
                "says it is {}/{} but is stored as {device}/{seq}",
                log.device_id, log.seq
            ),
        }),
        None => Err(TransportError::BadLog {
            key: key.into(),
            why: "is not a change log key".into(),
        }),
    }
}

/// Reads an object if it is not over the cap. `Ok(None)`: it is gone (compacted away).
fn fetch(store: &BlockingStore, key: &str) -> Result<Option<bytes::Bytes>, TransportError> {
    match store.head(key)? {
        None => return Ok(None),
        Some(size) if size as usize > MAX_OBJECT_BYTES => {
            return Err(TransportError::BadLog {
                key: key.into(),
                why: format!(
                    "{size} bytes is over the size limit ({} MiB); it was not read",
                    MAX_OBJECT_BYTES >> 20
                ),
            })
        }
        Some(_) => {}
    }
    match store.get(key) {
        Ok(b) => Ok(Some(b)),
        Err(crate::store::StoreError::NotFound { .. }) => Ok(None),
        Err(e @ crate::store::StoreError::Unauthentic { .. }) => Err(TransportError::Unauthentic {
            key: key.into(),
            why: e.to_string(),
        }),
        Err(e) => Err(e.into()),
    }
}

enum Outcome {
    Applied,
    SetAside,
    /// The store failed (or the object went away): this device's later logs wait.
    Wait,
}

/// Fetches, checks and applies one object of `device`.
fn receive<R: Receiver>(
    store: &BlockingStore,
    stream: Stream,
    r: &mut R,
    key: &str,
    device: &str,
    seq: u64,
    report: &mut PullReport,
) -> Result<Outcome, R::Error> {
    let checked = fetch(store, key).and_then(|b| match b {
        None => Ok(None),
        Some(b) => {
            let log = decode(stream, key, &b)?;
            r.check(key, &log)?;
            Ok(Some(log))
        }
    });
    match checked {
        Ok(Some(log)) => {
            r.apply(key, device, Some(seq), &log)?;
            report.applied += 1;
            Ok(Outcome::Applied)
        }
        Ok(None) => {
            // Compacted away between the listing and now: the next pull re-lists.
            report
                .errors
                .push(format!("{key}: gone from the store; retried next cycle"));
            Ok(Outcome::Wait)
        }
        Err(e @ TransportError::BadLog { .. }) => {
            tracing::warn!(error = %e, "change log set aside (retried at every sync)");
            report.errors.push(e.to_string());
            r.state().reject(device, seq, &e.to_string())?;
            Ok(Outcome::SetAside)
        }
        Err(e @ TransportError::Unauthentic { .. }) => {
            // Not moving the cursor: a forged log with a high seq must not make this
            // device skip the real logs below it.
            tracing::error!(error = %e, "change log refused: it does not authenticate under the store's key");
            report.errors.push(e.to_string());
            r.state().reject_in_place(device, seq, &e.to_string())?;
            Ok(Outcome::SetAside)
        }
        Err(e) => {
            report.errors.push(format!("{key}: {e}"));
            Ok(Outcome::Wait)
        }
    }
}

/// Applies the other devices' snapshots and logs after their cursors, then retries the
/// logs set aside in earlier pulls.
pub fn pull<R: Receiver>(
    store: &BlockingStore,
    stream: Stream,
    me: &str,
    r: &mut R,
) -> Result<PullReport, R::Error> {
    let mut report = PullReport::default();
    let mut logs: BTreeMap<String, Vec<u64>> = BTreeMap::new();
    let mut snaps: BTreeMap<String, u64> = BTreeMap::new();
    for k in store
        .list(&stream.list_prefix(Kind::Log, None))
        .map_err(TransportError::from)?
    {
        if let Some((_, d, s)) = stream.parse(&k) {
            logs.entry(d).or_default().push(s);
        }
    }
    for k in store
        .list(&stream.list_prefix(Kind::Snapshot, None))
        .map_err(TransportError::from)?
    {
        if let Some((_, d, s)) = stream.parse(&k) {
            let e = snaps.entry(d.clone()).or_default();
            *e = (*e).max(s);
            logs.entry(d).or_default();
        }
    }
    logs.remove(me);
    let already: BTreeSet<(String, u64)> = r
        .state()
        .rejected()
        .map_err(TransportError::from)?
        .into_iter()
        .map(|(d, s, _)| (d, s))
        .collect();
    // Objects refused earlier stay out of the plan (the retries below see them again).
    for (device, seqs) in logs.iter_mut() {
        seqs.retain(|s| !already.contains(&(device.clone(), *s)));
    }
    snaps.retain(|d, s| !already.contains(&(d.clone(), *s)));
    // What each device has for us: the newest snapshot past the cursor, then the logs
    // after it.
    let mut plan: Vec<(String, Vec<(u64, String)>)> = Vec::new();
    for (device, mut seqs) in logs {
        let cursor = r.state().cursor(&device).map_err(TransportError::from)?;
        seqs.sort();
        let mut objects = Vec::new();
        let mut from = cursor;
        if let Some(&snap) = snaps.get(&device).filter(|s| **s > cursor) {
            objects.push((snap, stream.snapshot_key(&device, snap)));
            from = snap;
        }
        objects.extend(
            seqs.into_iter()
                .filter(|s| *s > from)
                .map(|s| (s, stream.log_key(&device, s))),
        );
        plan.push((device, objects));
    }
    let total: usize = plan.iter().map(|(_, o)| o.len()).sum();
    if total > 0 {
        r.progress(0, total);
    }
    let mut done = 0;
    for (device, objects) in plan {
        for (seq, key) in objects {
            let outcome = receive(store, stream, r, &key, &device, seq, &mut report)?;
            done += 1;
            r.progress(done.min(total), total);
            if matches!(outcome, Outcome::Wait) {
                break;
            }
        }
    }
    // Logs set aside in earlier pulls (an unknown table, a newer format, ...): this
    // receiver may take them now. Their error was reported when they were set aside.
    for (device, seq, why) in r.state().rejected().map_err(TransportError::from)? {
        // A value over the limit stays over it: fetching the log again costs its size.
        if !already.contains(&(device.clone(), seq))
            || why.contains(crate::sync::changelog::OVER_VALUE_LIMIT)
        {
            continue;
        }
        let key = stream.log_key(&device, seq);
        let log = match fetch(store, &key) {
            Ok(None) => {
                r.state()
                    .unreject(&device, seq)
                    .map_err(TransportError::from)?;
                continue;
            }
            Ok(Some(b)) => decode(stream, &key, &b).and_then(|log| {
                r.check(&key, &log)?;
                Ok(log)
            }),
            Err(e) => Err(e),
        };
        match log {
            Ok(log) => {
                r.apply(&key, &device, None, &log)?;
                r.state()
                    .unreject(&device, seq)
                    .map_err(TransportError::from)?;
                report.applied += 1;
                tracing::info!(key, "a log set aside earlier is applied now");
            }
            Err(e) => tracing::debug!(key, error = %e, "set-aside log still refused"),
        }
    }
    Ok(report)
}
