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
//! Must never: export a file whose blob is not in the store, overwrite a local write that
//! was not exported yet (the remote version becomes the conflict copy instead), touch the
//! store's blobs, or export a change it received from another device as its own.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::Arc;

use rusqlite::{params, Connection, OptionalExtension};
use serde::{Deserialize, Serialize};

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

/// One file version as it travels: what a path names.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileValue {
    pub hash: String,
    pub size: u64,
    pub mtime_ns: i64,
    pub mode: u32,
    /// Name of the device that wrote it (for conflict copy names).
    pub by: String,
}

impl FileValue {
    fn same_content(&self, n: &Node) -> bool {
        node_hash(n) == self.hash && n.size == self.size && n.mode == self.mode
    }
    fn same_as(&self, n: &Node) -> bool {
        self.same_content(n) && n.mtime_ns == self.mtime_ns
    }
}

/// What a namespace cycle did.
#[derive(Debug, Default, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct NsSummary {
    /// Paths this device exported (created/changed) and deleted.
    pub sent_files: u64,
    pub sent_deletes: u64,
    /// Files not exported yet because their blob is still uploading.
    pub waiting_for_upload: u64,
    /// Files not exported yet because they are open with unsaved writes.
    #[serde(default)]
    pub being_written: u64,
    /// Folders created or removed here and sent; received from the others.
    #[serde(default)]
    pub sent_dirs: u64,
    #[serde(default)]
    pub received_dirs: u64,
    /// Remote changes applied here.
    pub received_files: u64,
    pub received_deletes: u64,
    /// Conflict copies made.
    pub conflict_copies: u64,
    pub logs_sent: u64,
    pub logs_applied: u64,
    pub errors: Vec<String>,
}

/// An entry the kernel may hold stale: `(parent inode, name)`, and the inode itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Touched {
    pub parent: u64,
    pub name: String,
    pub ino: Option<u64>,
}

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS nsync_shadow (path TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS nsync_dirs (path TEXT PRIMARY KEY);
CREATE TABLE IF NOT EXISTS nsync_rows (path TEXT PRIMARY KEY, state TEXT NOT NULL);
";

fn node_hash(n: &Node) -> String {
    n.hash
        .clone()
        .unwrap_or_else(|| content::EMPTY_HASH.to_string())
}

/// True for paths inside the conflict-copy folder (never a conflict copy of those).
pub fn is_conflict_copy(path: &str) -> bool {
    path == CONFLICTS_DIR || path.starts_with(&format!("{CONFLICTS_DIR}/"))
}

/// `<dir>/<name>.<ext>` → `.conflicts/<dir>/<name> (from <device> <date>).<ext>`.
pub fn conflict_copy_path(path: &str, device_name: &str, wall_ms: u64) -> String {
    let (dir, file) = match path.rsplit_once('/') {
        Some((d, f)) => (Some(d), f),
        None => (None, path),
    };
    let (stem, ext) = match file.rsplit_once('.') {
        Some((s, e)) if !s.is_empty() => (s, Some(e)),
        _ => (file, None),
    };
    let date = chrono::DateTime::from_timestamp_millis(wall_ms as i64)
        .unwrap_or_default()
        .format("%Y-%m-%d %H-%M-%S");
    let device: String = device_name
        .chars()
        .map(|c| if c == '/' || c == '\0' { '_' } else { c })
        .collect();
    let name = match ext {
        Some(e) => format!("{stem} (from {device} {date}).{e}"),
        None => format!("{stem} (from {device} {date})"),
    };
    match dir {
        Some(d) => format!("{CONFLICTS_DIR}/{d}/{name}"),
        None => format!("{CONFLICTS_DIR}/{name}"),
    }
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

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

    fn value_of(&self, n: &Node) -> FileValue {
        FileValue {
            hash: node_hash(n),
            size: n.size,
            mtime_ns: n.mtime_ns,
            mode: n.mode,
            by: self.cfg.device_name.clone(),
        }
    }

    /// Diffs the catalog against the shadow and queues a log of the differences.
    fn capture(&mut self, summary: &mut NsSummary) -> Result<(), NamespaceError> {
        let shadow = self.shadow()?;
        let files: BTreeMap<String, Node> = self
            .catalog
            .files()
            .into_iter()
            .filter(|(p, _)| !self.is_local_only_path(p))
            .collect();
        let mut clock = self.clock()?;
        let mut changes = Vec::new();
        let mut new_shadow: Vec<(String, Option<FileValue>)> = Vec::new();
        let mut states: BTreeMap<String, RowState> = BTreeMap::new();
        for (path, node) in &files {
            if shadow.get(path).is_some_and(|s| s.same_as(node)) {
                continue;
            }
            if self.busy.is_some_and(|b| b(node.ino)) {
                // Still being written (the app's mkstemp file, a WAV being rendered):
                // its bytes are not final; it goes out after the close.
                summary.being_written += 1;
                continue;
            }
            let v = self.value_of(node);
            if !self.uploaded(&v)? {
                summary.waiting_for_upload += 1;
                continue;
            }
            let mut st = self.row_state(path)?;
            let rid = RowId::new(NS_TABLE, path);
            let mut m = MergeState::default();
            m.rows.insert(rid.clone(), st.clone());
            if !m.is_alive(&rid) {
                let c = Change {
                    row: rid.clone(),
                    event: Event::Live {
                        clock: clock.tick(now_ms()),
                    },
                };
                st.apply(&c.event);
                changes.push(c);
            }
            let c = Change {
                row: rid,
                event: Event::Set {
                    column: FILE_FIELD.into(),
                    value: serde_json::to_value(&v).expect("encodes"),
                    clock: clock.tick(now_ms()),
                    replaces: st.frontier(FILE_FIELD),
                },
            };
            st.apply(&c.event);
            changes.push(c);
            states.insert(path.clone(), st);
            new_shadow.push((path.clone(), Some(v)));
            summary.sent_files += 1;
        }
        for path in shadow.keys().filter(|p| !files.contains_key(*p)) {
            // A delete is the value null, with the versions it replaces: a version written
            // elsewhere without seeing the delete is then concurrent with it, and kept as
            // a conflict copy if the delete wins (nothing is lost).
            let mut st = self.row_state(path)?;
            let c = Change {
                row: RowId::new(NS_TABLE, path),
                event: Event::Set {
                    column: FILE_FIELD.into(),
                    // Not JSON null: the merge state's storage reads a null version
                    // back as "superseded".
                    value: serde_json::json!({"deleted": true}),
                    clock: clock.tick(now_ms()),
                    replaces: st.frontier(FILE_FIELD),
                },
            };
            st.apply(&c.event);
            changes.push(c);
            states.insert(path.clone(), st);
            new_shadow.push((path.clone(), None));
            summary.sent_deletes += 1;
        }
        let dir_changes = self.capture_dirs(&mut clock, &mut changes, &mut states, summary)?;
        if changes.is_empty() {
            return Ok(());
        }
        let tx = super::state::write_tx(&self.db)?;
        StreamState::new(&tx, &NAMESPACE_TABLES).queue(&changes, MAX_CHANGES_PER_LOG)?;
        for (p, s) in &states {
            Self::put_row_state(&tx, p, s)?;
        }
        for (p, v) in &new_shadow {
            Self::put_shadow(&tx, p, v.as_ref())?;
        }
        StreamState::new(&tx, &NAMESPACE_TABLES).save_clock(&clock)?;
        for (d, present) in &dir_changes {
            Self::put_dir_shadow(&tx, d, *present)?;
        }
        tx.commit()?;
        Ok(())
    }

    fn dir_shadow(&self) -> Result<BTreeSet<String>, NamespaceError> {
        let mut stmt = self.db.prepare("SELECT path FROM nsync_dirs")?;
        let rows = stmt.query_map([], |r| r.get::<_, String>(0))?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    fn put_dir_shadow(conn: &Connection, path: &str, present: bool) -> Result<(), NamespaceError> {
        if present {
            conn.execute("INSERT OR IGNORE INTO nsync_dirs(path) VALUES (?1)", [path])?;
        } else {
            conn.execute("DELETE FROM nsync_dirs WHERE path = ?1", [path])?;
        }
        Ok(())
    }

    /// Every folder of the catalog (the root excluded), by path.
    fn local_dirs(&self) -> BTreeSet<String> {
        let mut out = BTreeSet::new();
        let mut stack = vec![(ROOT_INO, String::new())];
        while let Some((dir, prefix)) = stack.pop() {
            for c in self.catalog.children(dir).unwrap_or_default() {
                if c.is_dir() {
                    let p = if prefix.is_empty() {
                        c.name.clone()
                    } else {
                        format!("{prefix}/{}", c.name)
                    };
                    out.insert(p.clone());
                    stack.push((c.ino, p));
                }
            }
        }
        out
    }

    /// Adds the folders created or removed since the last capture to `changes`; returns
    /// the shadow updates to commit with them.
    fn capture_dirs(
        &self,
        clock: &mut Clock,
        changes: &mut Vec<Change>,
        states: &mut BTreeMap<String, RowState>,
        summary: &mut NsSummary,
    ) -> Result<Vec<(String, bool)>, NamespaceError> {
        let here = self.local_dirs();
        let known = self.dir_shadow()?;
        let mut out = Vec::new();
        let added = here.difference(&known).map(|d| (d, true));
        let removed = known.difference(&here).map(|d| (d, false));
        for (d, present) in added.chain(removed) {
            let gid = format!("{d}/");
            let mut st = self.row_state(&gid)?;
            let rid = RowId::new(NS_TABLE, &gid);
            let value = if present {
                serde_json::json!({"dir": true, "by": self.cfg.device_name})
            } else {
                serde_json::json!({"deleted": true})
            };
            let c = Change {
                row: rid,
                event: Event::Set {
                    column: FILE_FIELD.into(),
                    value,
                    clock: clock.tick(now_ms()),
                    replaces: st.frontier(FILE_FIELD),
                },
            };
            st.apply(&c.event);
            changes.push(c);
            states.insert(gid, st);
            out.push((d.clone(), present));
            summary.sent_dirs += 1;
        }
        Ok(out)
    }

    fn is_local_only_path(&self, path: &str) -> bool {
        let name = path.rsplit('/').next().unwrap_or(path);
        self.cfg.is_local_only(name)
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

    /// Merges one remote log and brings the catalog to the merged state of its paths.
    fn apply_log(
        &mut self,
        log: &LogFile,
        cursor: Option<u64>,
        summary: &mut NsSummary,
        touched: &mut Vec<Touched>,
        records: &mut Vec<ConflictRecord>,
    ) -> Result<(), NamespaceError> {
        let rules = Rules::none();
        let mut clock = self.clock()?;
        let mut m = MergeState::default();
        let mut paths = BTreeSet::new();
        for c in log.changes.iter().filter(|c| c.row.table == NS_TABLE) {
            if !m.rows.contains_key(&c.row) {
                m.rows.insert(c.row.clone(), self.row_state(&c.row.gid)?);
            }
            paths.insert(c.row.gid.clone());
        }
        let before: BTreeMap<String, BTreeSet<Hlc>> = paths
            .iter()
            .map(|p| (p.clone(), lost_clocks(&m, &rules, p)))
            .collect();
        for c in log.changes.iter().filter(|c| c.row.table == NS_TABLE) {
            clock.observe(c.event.clock());
            m.apply(c);
        }
        let shadow = self.shadow()?;
        // The catalog is written through its own connection to the same state.db, so our
        // bookkeeping is written after it, in one transaction; the "applying" mark makes
        // the next cycle replay this log (idempotent) before it captures, if a crash
        // comes in between.
        Self::set_meta(
            &self.db,
            "applying",
            &Stream::NAMESPACE.log_key(&log.device_id, log.seq),
        )?;
        let mut new_shadow: Vec<(String, Option<FileValue>)> = Vec::new();
        let mut derived: Vec<(String, RowState)> = Vec::new();
        for path in paths.iter().filter(|p| !p.ends_with('/')) {
            if self.is_local_only_path(path) || !safe_path(path) {
                tracing::warn!(
                    path,
                    "a remote namespace entry was ignored (local-only name or unsafe path)"
                );
                continue;
            }
            let resolved: Option<FileValue> = m
                .resolve(&rules, &RowId::new(NS_TABLE, path))
                .and_then(|row| row.get(FILE_FIELD).cloned())
                .and_then(|v| serde_json::from_value(v).ok());
            let local = match self.catalog.resolve(path) {
                Ok(n) if !n.is_dir() && !n.local_only => Some(n),
                _ => None,
            };
            let agreed = shadow.get(path);
            let busy = local
                .as_ref()
                .is_some_and(|n| self.busy.is_some_and(|b| b(n.ino)));
            let already = matches!((&resolved, &local), (Some(v), Some(n)) if v.same_content(n));
            let pending_local = busy
                || !already
                    && match (&local, agreed) {
                        (Some(n), Some(s)) => !s.same_content(n),
                        (Some(_), None) => true,
                        (None, _) => false,
                    };
            // Versions of this path that lost to a concurrent one: keep them as copies.
            if !is_conflict_copy(path) {
                for (lost_clock, lost) in lost_versions(&m, &rules, path) {
                    if before[path].contains(&lost_clock) {
                        continue;
                    }
                    let copy = match self.derive_copy(path, &lost, &lost_clock, &paths, touched)? {
                        Some(DerivedCopy { copy, state, value }) => {
                            new_shadow.push((copy.clone(), value));
                            derived.push((copy.clone(), state));
                            copy
                        }
                        None => self.keep_copy(path, &lost, lost_clock.wall_ms, touched)?,
                    };
                    summary.conflict_copies += 1;
                    records.push(file_conflict(path, resolved.as_ref(), &lost, &copy, "written on two devices without either seeing the other: the later keeps the name"));
                }
            }
            if pending_local {
                // A local write not exported yet (still uploading) is newer than anything
                // this device has seen: it keeps the name and supersedes the remote version
                // when exported. The remote version is kept as a copy: nothing is lost.
                if let (Some(v), Some(n)) = (&resolved, &local) {
                    if !v.same_content(n) && !is_conflict_copy(path) {
                        let copy = self.keep_copy(path, v, now_ms(), touched)?;
                        summary.conflict_copies += 1;
                        records.push(file_conflict(path, Some(&self.value_of(n)), v, &copy, "changed here while the other device's version arrived: this device's newer write keeps the name"));
                    }
                }
                // The shadow takes the merged value, so the next capture sends what is
                // here (or its delete) as a newer edit, whatever the user does meanwhile.
                new_shadow.push((path.clone(), resolved));
                continue;
            }
            match (&resolved, &local) {
                (Some(v), Some(n)) if v.same_as(n) => {}
                (Some(v), _) => {
                    match self
                        .catalog
                        .upsert_file(path, &v.hash, v.size, v.mtime_ns, v.mode)
                    {
                        Ok(n) => {
                            touched.push(Touched {
                                parent: n.parent,
                                name: n.name.clone(),
                                ino: Some(n.ino),
                            });
                            summary.received_files += 1;
                        }
                        Err(CatalogError::Db(e)) => return Err(CatalogError::Db(e).into()),
                        Err(e) => {
                            // A folder here has the file's name (or a file has its folder's):
                            // keep the remote file as a copy rather than stall every cycle.
                            let copy = if is_conflict_copy(path) {
                                None
                            } else {
                                self.keep_copy(path, v, now_ms(), touched).ok()
                            };
                            tracing::warn!(path, error = %e, ?copy, "a remote file does not fit here");
                            if let Some(copy) = copy {
                                summary.conflict_copies += 1;
                                records.push(file_conflict(
                                    path,
                                    None,
                                    v,
                                    &copy,
                                    &format!(
                                        "the other device's file cannot take its place here ({e})"
                                    ),
                                ));
                            }
                            continue;
                        }
                    }
                }
                (None, Some(_)) => {
                    if let Some(n) = self.catalog.remove_file(path)? {
                        touched.push(Touched {
                            parent: n.parent,
                            name: n.name.clone(),
                            ino: Some(n.ino),
                        });
                    }
                    summary.received_deletes += 1;
                }
                (None, None) => {}
            }
            new_shadow.push((path.clone(), resolved));
        }
        let dirs = self.apply_dirs(&m, &rules, &paths, summary, touched);
        let tx = super::state::write_tx(&self.db)?;
        for path in &paths {
            Self::put_row_state(&tx, path, &m.rows[&RowId::new(NS_TABLE, path)])?;
        }
        for (path, state) in &derived {
            Self::put_row_state(&tx, path, state)?;
        }
        for (d, present) in &dirs {
            Self::put_dir_shadow(&tx, d, *present)?;
        }
        for (p, v) in &new_shadow {
            Self::put_shadow(&tx, p, v.as_ref())?;
        }
        let stream = StreamState::new(&tx, &NAMESPACE_TABLES);
        if let Some(seq) = cursor {
            stream.set_cursor(&log.device_id, seq)?;
        }
        stream.save_clock(&clock)?;
        stream.remove_meta("applying")?;
        tx.commit()?;
        Ok(())
    }

    /// The conflict copy of a version that lost to a concurrent one, as every device that
    /// sees both versions derives it: same path (from the loser's device and clock), and a
    /// row state at the loser's own clock. No device exports it, so a delete or a restore
    /// of the copy on one device (a newer edit of that row) removes it everywhere, instead
    /// of racing the other devices' exports of the same copy. A copy deleted before this
    /// device derived it stays deleted. None when the name is taken here (or the copy is in
    /// this very log): then the copy goes to a free name and is exported as usual.
    fn derive_copy(
        &self,
        path: &str,
        v: &FileValue,
        lost_clock: &Hlc,
        in_log: &BTreeSet<String>,
        touched: &mut Vec<Touched>,
    ) -> Result<Option<DerivedCopy>, NamespaceError> {
        let copy = conflict_copy_path(path, &v.by, lost_clock.wall_ms);
        if in_log.contains(&copy) {
            return Ok(None);
        }
        let rid = RowId::new(NS_TABLE, &copy);
        let mut state = self.row_state(&copy)?;
        state.apply(&Event::Live {
            clock: lost_clock.clone(),
        });
        state.apply(&Event::Set {
            column: FILE_FIELD.into(),
            value: serde_json::to_value(v).expect("encodes"),
            clock: lost_clock.clone(),
            replaces: Vec::new(),
        });
        let mut m = MergeState::default();
        m.rows.insert(rid.clone(), state.clone());
        let value: Option<FileValue> = m
            .resolve(&Rules::none(), &rid)
            .and_then(|row| row.get(FILE_FIELD).cloned())
            .and_then(|v| serde_json::from_value(v).ok());
        match (&value, self.catalog.resolve(&copy)) {
            (Some(want), Ok(n)) if !n.is_dir() && node_hash(&n) == want.hash => {}
            (Some(_), Ok(_)) => return Ok(None),
            (Some(want), Err(CatalogError::NotFound)) => {
                let n = self.catalog.upsert_file(
                    &copy,
                    &want.hash,
                    want.size,
                    want.mtime_ns,
                    want.mode,
                )?;
                tracing::warn!(path, copy = %copy, "conflicting versions: one kept as a conflict copy");
                touched.push(Touched {
                    parent: n.parent,
                    name: n.name,
                    ino: Some(n.ino),
                });
            }
            (Some(_), Err(e)) => return Err(e.into()),
            (None, _) => {
                tracing::info!(path, copy = %copy, "conflict copy already removed on another device");
            }
        }
        Ok(Some(DerivedCopy { copy, state, value }))
    }

    /// Puts `v` at its conflict-copy path (a free name), unless an identical copy is
    /// already there. The copy is not in the shadow: the next capture exports it, so
    /// every device ends up with it.
    fn keep_copy(
        &self,
        path: &str,
        v: &FileValue,
        wall_ms: u64,
        touched: &mut Vec<Touched>,
    ) -> Result<String, NamespaceError> {
        let base = conflict_copy_path(path, &v.by, wall_ms);
        let mut candidate = base.clone();
        for i in 2.. {
            match self.catalog.resolve(&candidate) {
                Ok(n) if !n.is_dir() && node_hash(&n) == v.hash => return Ok(candidate),
                Ok(_) => {
                    candidate = match base.rsplit_once('.') {
                        Some((s, e)) if !s.ends_with(CONFLICTS_DIR) => format!("{s} {i}.{e}"),
                        _ => format!("{base} {i}"),
                    }
                }
                Err(CatalogError::NotFound) => break,
                Err(e) => return Err(e.into()),
            }
        }
        let n = self
            .catalog
            .upsert_file(&candidate, &v.hash, v.size, v.mtime_ns, v.mode)?;
        tracing::warn!(path, copy = %candidate, "conflicting versions: one kept as a conflict copy");
        touched.push(Touched {
            parent: n.parent,
            name: n.name,
            ino: Some(n.ino),
        });
        Ok(candidate)
    }

    /// Brings the folders named in a log to their merged state, deepest first (after the
    /// files, so a removed folder is empty by then). A removed folder that still holds
    /// something here stays, and the next capture sends it back as present. Returns the
    /// folder shadow updates.
    fn apply_dirs(
        &self,
        m: &MergeState,
        rules: &Rules,
        paths: &BTreeSet<String>,
        summary: &mut NsSummary,
        touched: &mut Vec<Touched>,
    ) -> Vec<(String, bool)> {
        let mut dirs: Vec<&String> = paths.iter().filter(|p| p.ends_with('/')).collect();
        dirs.sort_by_key(|p| std::cmp::Reverse(p.matches('/').count()));
        let mut out = Vec::new();
        for gid in dirs {
            let d = gid.trim_end_matches('/');
            if !safe_path(d) {
                continue;
            }
            let present = m
                .resolve(rules, &RowId::new(NS_TABLE, gid))
                .and_then(|row| row.get(FILE_FIELD).cloned())
                .is_some_and(|v| v.get("dir") == Some(&serde_json::Value::Bool(true)));
            let local = self.catalog.resolve(d).ok().filter(|n| n.is_dir());
            match (present, local) {
                (true, None) => match ensure_dirs(self.catalog, d) {
                    Ok(ino) => {
                        if let Ok(n) = self.catalog.get(ino) {
                            touched.push(Touched {
                                parent: n.parent,
                                name: n.name,
                                ino: Some(n.ino),
                            });
                        }
                        summary.received_dirs += 1;
                    }
                    Err(e) => {
                        tracing::warn!(path = d, error = %e, "a remote folder does not fit here");
                        continue;
                    }
                },
                (false, Some(n)) => {
                    let empty = self.catalog.children(n.ino).is_ok_and(|c| c.is_empty());
                    if empty && self.catalog.rmdir(n.parent, &n.name).is_ok() {
                        touched.push(Touched {
                            parent: n.parent,
                            name: n.name,
                            ino: Some(n.ino),
                        });
                        summary.received_dirs += 1;
                    }
                }
                _ => {}
            }
            out.push((d.to_string(), present));
        }
        out
    }
}

/// No `..`, no empty parts, no absolute paths: a path from another device stays inside
/// the mount.
fn safe_path(path: &str) -> bool {
    !path.is_empty()
        && !path.starts_with('/')
        && path
            .split('/')
            .all(|p| !p.is_empty() && p != "." && p != ".." && p.len() <= crate::catalog::NAME_MAX)
}

/// A conflict copy at its derived path, with its row state and resolved value (None: it
/// was removed already).
struct DerivedCopy {
    copy: String,
    state: RowState,
    value: Option<FileValue>,
}

fn lost_versions(m: &MergeState, rules: &Rules, path: &str) -> Vec<(Hlc, FileValue)> {
    let Some(s) = m.rows.get(&RowId::new(NS_TABLE, path)) else {
        return Vec::new();
    };
    s.conflicts(rules, NS_TABLE)
        .into_iter()
        .filter(|c| c.column == FILE_FIELD)
        .filter_map(|c| {
            let lost: FileValue = serde_json::from_value(c.lost).ok()?;
            let kept: Option<FileValue> = serde_json::from_value(c.kept).ok();
            // Same bytes on both sides is no conflict worth a copy.
            (kept.as_ref().map(|k| &k.hash) != Some(&lost.hash)).then_some((c.lost_clock, lost))
        })
        .collect()
}

fn lost_clocks(m: &MergeState, rules: &Rules, path: &str) -> BTreeSet<Hlc> {
    lost_versions(m, rules, path)
        .into_iter()
        .map(|(c, _)| c)
        .collect()
}

fn file_conflict(
    path: &str,
    kept: Option<&FileValue>,
    lost: &FileValue,
    copy: &str,
    why: &str,
) -> ConflictRecord {
    ConflictRecord {
        at: chrono::Utc::now().to_rfc3339(),
        kind: "file".into(),
        table: NS_TABLE.into(),
        row: path.into(),
        local_id: None,
        column: Some(FILE_FIELD.into()),
        kept: serde_json::to_value(kept).unwrap_or_default(),
        lost: serde_json::json!({"hash": lost.hash, "size": lost.size, "copy": copy}),
        kept_by: kept.map(|k| k.by.clone()),
        lost_by: Some(lost.by.clone()),
        why: why.into(),
    }
}

/// The namespace as a stream's receiver.
struct NsReceiver<'n, 'a> {
    ns: &'n mut NamespaceSync<'a>,
    summary: &'n mut NsSummary,
    touched: Vec<Touched>,
    records: Vec<ConflictRecord>,
}

impl transport::Receiver for NsReceiver<'_, '_> {
    type Error = NamespaceError;

    fn state(&self) -> StreamState<'_> {
        self.ns.stream()
    }

    fn apply(
        &mut self,
        _key: &str,
        _device: &str,
        cursor: Option<u64>,
        log: &LogFile,
    ) -> Result<(), NamespaceError> {
        self.ns.apply_log(
            log,
            cursor,
            self.summary,
            &mut self.touched,
            &mut self.records,
        )?;
        self.summary.logs_applied += 1;
        Ok(())
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conflict_copies_keep_folder_and_extension() {
        let p = conflict_copy_path("2026-02-12_song/song_v1.mp3", "laptop", 0);
        assert_eq!(
            p,
            ".conflicts/2026-02-12_song/song_v1 (from laptop 1970-01-01 00-00-00).mp3"
        );
        assert_eq!(
            conflict_copy_path("README", "a/b", 0),
            ".conflicts/README (from a_b 1970-01-01 00-00-00)"
        );
        assert!(is_conflict_copy(&p));
        assert!(!is_conflict_copy(".conflictsx/a"));
    }

    #[test]
    fn unsafe_paths_are_refused() {
        assert!(safe_path("a/b.mp3"));
        for p in ["", "/etc/passwd", "a/../b", "a//b", "./a"] {
            assert!(!safe_path(p), "{p}");
        }
    }
}
