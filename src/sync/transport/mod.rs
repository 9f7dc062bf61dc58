//! The one change-log transport: a log stream under a key prefix, used by the database
//! sync (prefix ``), the namespace sync (prefix `ns/`) and, later, the folder mode.
//!
//! A stream holds, per device, numbered immutable logs `<prefix>logs/<device>/<seq>.json`
//! and at most a few snapshots `<prefix>snapshots/<device>/<seq>.json` (that device's
//! logs 1..=seq compacted, `compact.rs`). What a stream does, one idea per file:
//! - `keys.rs`: the key layout and parsing (a device id is plain hex-ish text);
//! - `blocking.rs`: the one blocking adapter over the async `ObjectStore`;
//! - `state.rs`: the stream's bookkeeping in the sync database (outbox, next sequence
//!   number, cursors, logs set aside, the hybrid clock), in tables named per stream;
//! - `send.rs`: numbering queued logs and uploading them with put-if-absent, its answer
//!   checked (a slot taken by other content stops the upload with a message saying how
//!   to recover: `songfs init --force --new-device-id`);
//! - `pull.rs`: reading the other devices' snapshot and logs after their cursors, with a
//!   size cap; a bad log is set aside with a message naming its key, and retried at
//!   every cycle;
//! - `compact.rs`: folding a device's own logs into a snapshot.
//!
//! Correct on stores without compare-and-swap (Drive, Dropbox and WebDAV only emulate
//! put-if-absent with a HEAD then a PUT): the rule it relies on is ONE WRITER PER DEVICE
//! PER KEY. Only this device writes under its own device id, and it writes each seq once
//! (the number is committed to the sync database before the upload), so put-if-absent
//! only ever races with itself after a crash, where the retry carries identical bytes.
//! What breaks the rule is a cloned device (a copy of `~/.songfs`, a restored backup of
//! it): two processes then write under one id. With a real put-if-absent (S3, a folder)
//! the second writer of a seq is told so, compares, and stops with `SlotTaken`. With an
//! emulated one both HEADs can miss and the later PUT silently replaces the earlier log;
//! the replaced log's changes reach no device that had not read it yet, and the next
//! seq's upload is the first to notice the clone (its slot is taken). Recovery is the
//! same in both cases: the clone moves to a fresh device id, re-sending what it had not
//! sent; the overwritten log stays lost for devices that had not read it, which is why
//! the message is shown the moment any slot is found taken.
//!
//! Must never: write under another device's id, rewrite a log it already uploaded, move
//! a cursor past a log it neither applied nor set aside, or read an object over the size
//! cap.

pub mod blocking;
pub mod compact;
pub mod keys;
pub mod pull;
pub mod send;
pub mod state;

pub use blocking::BlockingStore;
pub use keys::Stream;
pub use pull::{pull, PullReport, Receiver};
pub use state::{StreamState, StreamTables};

use crate::store::StoreError;

/// What can go wrong moving logs in or out.
#[derive(Debug, thiserror::Error)]
pub enum TransportError {
    #[error("store: {0}")]
    Store(#[from] StoreError),
    #[error("sync state: {0}")]
    Db(#[from] rusqlite::Error),
    #[error("change log {key}: {why}")]
    BadLog { key: String, why: String },
    /// An encrypted store's object that does not open under its key: none of the user's
    /// devices wrote it. Set aside like a bad log, but the cursor stays where it is.
    #[error("change log {key}: {why}")]
    Unauthentic { key: String, why: String },
    #[error(
        "{key} already exists in the store with other content: another songfs wrote this \
         device's next change log under its device id (a copy of ~/.songfs, or a restored \
         backup of it). Nothing was sent and nothing is lost: run `songfs init --force \
         --new-device-id` on this device to move it to a fresh device id; its unsent \
         changes then go out under the new id"
    )]
    SlotTaken { key: String },
}
