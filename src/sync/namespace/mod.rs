//! The namespace sync: every machine's mount shows the same files at the same paths.
//!
//! The namespace travels through the same machinery as the database: each file is a row
//! of the pseudo-table `ns` whose global id is its path relative to the mount root, with
//! one field, `file` = `{hash, size, mtime_ns, mode, by}`, or `{"deleted": true}` once
//! deleted; the merge (`merge.rs`) decides per path, last writer wins by hybrid clock.
//! Rename = delete of the old path + a new path (content addressing makes that free: no
//! byte moves). Folders are rows too, their path with a `/` after it and the value
//! `{"dir": true}`: empty folders, folder renames and removals travel; a folder removed
//! elsewhere that still holds something here stays (and is sent back as present).
//! Logs live under `ns/logs/<device>/<seq>.json` in the change-log format (`changelog.rs`).
//!
//! Capture diffs the live catalog against a shadow (what this device last exported or
//! applied). A file is exported only once its blob is in the store, so a reader on
//! another machine never sees an entry whose bytes are not there; local-only files are
//! never exported. Remote changes go straight into the live catalog (the daemon's), and
//! the touched entries are returned so the caller can invalidate the kernel's caches.
//!
//! Two versions of one path written without either seeing the other: the merge keeps the
//! later one at the name; the other is kept as a conflict copy under `.conflicts/` (same
//! relative folder, `(from <device> <date>)` before the extension) and logged. Paths
//! under `.conflicts/` are synced but never produce conflict copies themselves.
//!
//! Files: `model.rs` (the row value, conflict-copy names, safe paths), `admit.rs` (the
//! checks every remote entry passes on arrival), `capture.rs`,
//! `apply.rs` (carrying out) and `decide.rs` (who keeps each name, pure); here the state
//! tables and the glue to the one transport (`sync::transport`).
//!
//! Must never: export a file whose blob is not in the store, overwrite a local write that
//! was not exported yet (the remote version becomes the conflict copy instead), touch the
//! store's blobs, or export a change it received from another device as its own.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::Arc;

use rusqlite::{params, Connection, OptionalExtension};

use super::changelog::{LogFile, MAX_CHANGES_PER_LOG};
use super::clock::{Clock, Hlc};
use super::conflicts::{self, ConflictRecord};
use super::merge::{Change, Event, MergeState, RowId, RowState, Rules};
use super::transport::compact::compact_own;
use super::transport::send::send_queued;
use super::transport::state::NAMESPACE_TABLES;
use super::transport::{self, BlockingStore, Stream, StreamState, TransportError};
use crate::catalog::{Catalog, CatalogError, Kind, Node, ROOT_INO};
use crate::config::Config;
use crate::content;
use crate::store::{ObjectStore, StoreError};

/// The pseudo-table of namespace rows in change logs.
pub const NS_TABLE: &str = "ns";
/// The one field of a namespace row.
pub const FILE_FIELD: &str = "file";
/// Where conflict copies go, relative to the mount root.
pub const CONFLICTS_DIR: &str = ".conflicts";

mod admit;
mod apply;
mod capture;
pub mod decide;
mod model;

pub use admit::Refused;
use apply::NsReceiver;
pub use model::{conflict_copy_path, is_conflict_copy, FileValue, NsSummary, Touched};
use model::{node_hash, now_ms, safe_path};

#[derive(Debug, thiserror::Error)]
pub enum NamespaceError {
    #[error("namespace state: {0}")]
    Db(#[from] rusqlite::Error),
    #[error("namespace: {0}")]
    Catalog(#[from] CatalogError),
    #[error("store: {0}")]
    Store(#[from] StoreError),
    #[error("namespace log {key}: {why}")]
    BadLog { key: String, why: String },
    #[error("{0}")]
    Transport(TransportError),
}

impl From<TransportError> for NamespaceError {
    fn from(e: TransportError) -> NamespaceError {
        match e {
            TransportError::Store(e) => NamespaceError::Store(e),
            TransportError::Db(e) => NamespaceError::Db(e),
            TransportError::BadLog { key, why } | TransportError::Unauthentic { key, why } => {
                NamespaceError::BadLog { key, why }
            }
            e @ TransportError::SlotTaken { .. } => NamespaceError::Transport(e),
        }
    }
}

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS nsync_shadow (path TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS nsync_dirs (path TEXT PRIMARY KEY);
CREATE TABLE IF NOT EXISTS nsync_rows (path TEXT PRIMARY KEY, state TEXT NOT NULL);
";

/// The namespace side of a sync cycle. Holds its own connection to `state.db`.
pub struct NamespaceSync<'a> {
    cfg: &'a Config,
    catalog: &'a Catalog,
    store: BlockingStore,
    db: Connection,
    busy: Option<&'a (dyn Fn(u64) -> bool + Send + Sync)>,
}

impl<'a> NamespaceSync<'a> {
    pub fn open(
        cfg: &'a Config,
        state_db: &Path,
        catalog: &'a Catalog,
        store: Arc<dyn ObjectStore>,
        rt: tokio::runtime::Handle,
    ) -> Result<NamespaceSync<'a>, NamespaceError> {
        let db = crate::catalog::open_db(state_db)?;
        StreamState::new(&db, &NAMESPACE_TABLES).create()?;
        db.execute_batch(SCHEMA)?;
        migrate_numbered_outbox(&db)?;
        Ok(NamespaceSync {
            cfg,
            catalog,
            store: BlockingStore::new(store, rt),
            db,
            busy: None,
        })
    }

    /// Tells which inodes hold unsaved writes (open for writing in the mount): a remote
    /// version of such a file is kept as a conflict copy, never written underneath.
    pub fn with_busy(mut self, busy: &'a (dyn Fn(u64) -> bool + Send + Sync)) -> Self {
        self.busy = Some(busy);
        self
    }

    /// One cycle: capture and send local changes, then apply the other devices' logs.
    /// Returns what it did and the entries to invalidate in the kernel.
    pub fn cycle(&mut self) -> Result<(NsSummary, Vec<Touched>), NamespaceError> {
        let mut summary = NsSummary::default();
        let mut touched = Vec::new();
        if self.meta("applying")?.is_some() {
            // A crash interrupted an apply: finish it before capturing, or the remote
            // changes already in the catalog would be sent as this device's own.
            tracing::info!("finishing a namespace apply interrupted by a crash");
            touched = self.pull(&mut summary)?;
        }
        self.capture(&mut summary)?;
        self.upload(&mut summary)?;
        if let Err(e) = self.compact_own() {
            tracing::warn!(error = %e, "compacting this device's namespace logs failed; retried next cycle");
        }
        touched.extend(self.pull(&mut summary)?);
        Ok((summary, touched))
    }

    fn stream(&self) -> StreamState<'_> {
        StreamState::new(&self.db, &NAMESPACE_TABLES)
    }

    fn meta(&self, key: &str) -> Result<Option<String>, NamespaceError> {
        Ok(self.stream().meta(key)?)
    }

    fn set_meta(conn: &Connection, key: &str, value: &str) -> Result<(), NamespaceError> {
        Ok(StreamState::new(conn, &NAMESPACE_TABLES).set_meta(key, value)?)
    }

    fn clock(&self) -> Result<Clock, NamespaceError> {
        Ok(self.stream().clock(&self.cfg.device_id)?)
    }

    fn shadow(&self) -> Result<BTreeMap<String, FileValue>, NamespaceError> {
        let mut stmt = self.db.prepare("SELECT path, value FROM nsync_shadow")?;
        let rows = stmt.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?)))?;
        let mut out = BTreeMap::new();
        for row in rows {
            let (p, v) = row?;
            if let Ok(v) = serde_json::from_str(&v) {
                out.insert(p, v);
            }
        }
        Ok(out)
    }

    fn put_shadow(
        conn: &Connection,
        path: &str,
        v: Option<&FileValue>,
    ) -> Result<(), NamespaceError> {
        match v {
            Some(v) => conn.execute(
                "INSERT INTO nsync_shadow(path, value) VALUES (?1, ?2)
                 ON CONFLICT(path) DO UPDATE SET value = excluded.value",
                params![path, serde_json::to_string(v).expect("encodes")],
            )?,
            None => conn.execute("DELETE FROM nsync_shadow WHERE path = ?1", [path])?,
        };
        Ok(())
    }

    fn row_state(&self, path: &str) -> Result<RowState, NamespaceError> {
        let text: Option<String> = self
            .db
            .query_row(
                "SELECT state FROM nsync_rows WHERE path = ?1",
                [path],
                |r| r.get(0),
            )
            .optional()?;
        Ok(text
            .and_then(|t| serde_json::from_str(&t).ok())
            .unwrap_or_default())
    }

    fn put_row_state(conn: &Connection, path: &str, s: &RowState) -> Result<(), NamespaceError> {
        conn.execute(
            "INSERT INTO nsync_rows(path, state) VALUES (?1, ?2)
             ON CONFLICT(path) DO UPDATE SET state = excluded.state",
            params![path, serde_json::to_string(s).expect("encodes")],
        )?;
        Ok(())
    }

    /// Is this blob in the store (so another machine can read it)? The uploader writes
    /// the chunk-hash sidecar after the blob, and a reader needs both: check the sidecar.
    fn uploaded(&self, v: &FileValue) -> Result<bool, NamespaceError> {
        if v.size == 0 {
            return Ok(true);
        }
        Ok(self.store.head(&content::chunks_key(&v.hash))?.is_some())
    }

    fn value_of(&self, n: &Node) -> Result<FileValue, NamespaceError> {
        let hash = node_hash(n);
        if n.target.is_some() {
            return Ok(FileValue {
                hash,
                size: 0,
                mtime_ns: n.mtime_ns,
                mode: n.mode,
                by: self.cfg.device_name.clone(),
                chunk_root: None,
                target: n.target.clone(),
            });
        }
        Ok(FileValue {
            chunk_root: self.catalog.chunk_root(&hash)?,
            hash,
            size: n.size,
            mtime_ns: n.mtime_ns,
            mode: n.mode,
            by: self.cfg.device_name.clone(),
            target: None,
        })
    }

    /// Puts a remote file version (or symlink) at `path` and records its chunk root, so
    /// the record fetched when it is first read is checked against it.
    fn put_file(&self, path: &str, v: &FileValue) -> Result<Node, CatalogError> {
        if let Some(target) = &v.target {
            return self.catalog.upsert_symlink(path, target, v.mtime_ns);
        }
        let n = self
            .catalog
            .upsert_file(path, &v.hash, v.size, v.mtime_ns, v.mode)?;
        if let Some(root) = &v.chunk_root {
            self.catalog.set_chunk_root(&v.hash, root)?;
        }
        Ok(n)
    }

    /// Uploads queued logs (numbered, put-if-absent, its answer checked).
    fn upload(&mut self, summary: &mut NsSummary) -> Result<(), NamespaceError> {
        summary.logs_sent += send_queued(
            &self.store,
            Stream::NAMESPACE,
            self.stream(),
            &self.cfg.device_id,
        )? as u64;
        Ok(())
    }

    /// Folds this device's logs into one snapshot once they pile up.
    fn compact_own(&self) -> Result<(), NamespaceError> {
        compact_own(&self.store, Stream::NAMESPACE, &self.cfg.device_id)?;
        Ok(())
    }

    /// Reads the other devices' logs after their cursors and applies them in order.
    fn pull(&mut self, summary: &mut NsSummary) -> Result<Vec<Touched>, NamespaceError> {
        let store = self.store.clone();
        let me = self.cfg.device_id.clone();
        let mut r = NsReceiver {
            ns: self,
            summary,
            touched: Vec::new(),
            records: Vec::new(),
        };
        let report = transport::pull(&store, Stream::NAMESPACE, &me, &mut r)?;
        let NsReceiver {
            ns,
            summary,
            touched,
            records,
        } = r;
        summary.errors.extend(report.errors);
        conflicts::append(&ns.cfg.conflicts_log_path(), &records);
        Ok(touched)
    }
}

/// State written before the one transport numbered namespace logs at upload: its outbox
/// held finished logs by seq. They move to the queue as they are (numbered, same bytes).
fn migrate_numbered_outbox(db: &Connection) -> Result<(), NamespaceError> {
    let old: bool = db.query_row(
        "SELECT COUNT(*) FROM sqlite_master WHERE type = 'table' AND name = 'nsync_outbox'",
        [],
        |r| r.get::<_, i64>(0).map(|n| n > 0),
    )?;
    if old {
        let tx = super::state::write_tx(db)?;
        tx.execute_batch(
            "INSERT INTO nsync_queue(changes, seq, log)
                 SELECT '[]', seq, log FROM nsync_outbox ORDER BY seq;
             DROP TABLE nsync_outbox;",
        )?;
        tx.commit()?;
    }
    Ok(())
}

/// Makes `path` (relative to the mount root) a directory chain in the catalog; used by
/// tests and tools that place files by path.
pub fn ensure_dirs(catalog: &Catalog, path: &str) -> Result<u64, NamespaceError> {
    let root = catalog.get(ROOT_INO)?;
    let mut parent = ROOT_INO;
    for d in path.split('/').filter(|p| !p.is_empty()) {
        parent = match catalog.lookup(parent, d) {
            Ok(n) => n.ino,
            Err(CatalogError::NotFound) => {
                catalog
                    .create(parent, d, Kind::Dir, 0o755, root.uid, root.gid, None, false)?
                    .ino
            }
            Err(e) => return Err(e.into()),
        };
    }
    Ok(parent)
}
