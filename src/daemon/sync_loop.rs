//! The daemon's sync loop: one cycle (namespace, then the app database) at start, every
//! `sync_interval_secs`, on request ("sync now" from `songfs sync`), and a last one at
//! unmount.
//!
//! Never two cycles at once: cycles run on this one thread, and each holds an exclusive
//! `flock` on `$SONGFS_HOME/sync.lock`, which `songfs sync` without a daemon takes too.
//! Must never: apply remote changes to a catalog other than the live one of the mount.

use std::fs::File;
use std::path::PathBuf;
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::catalog::Catalog;
use crate::config::{Config, Home};
use crate::store::identity::Checked;
use crate::sync::cycle::{self, Summary};
use crate::sync::namespace::{NamespaceSync, NsSummary, Touched};

/// What the last cycle did (shown by `songfs status`, returned to `songfs sync`).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct CycleReport {
    pub started_at: String,
    pub finished_at: String,
    pub namespace: Option<NsSummary>,
    /// The database part (None when no database is configured).
    pub database: Option<serde_json::Value>,
    /// A human line, as `songfs sync` prints it.
    pub summary: String,
    pub error: Option<String>,
    /// Cycles this daemon has run so far (this one included).
    pub cycle_number: u64,
}

impl CycleReport {
    /// A cycle that stopped before doing anything, for the reason `msg`.
    fn failed(started_at: String, cycle_number: u64, msg: String) -> CycleReport {
        CycleReport {
            started_at,
            finished_at: chrono::Utc::now().to_rfc3339(),
            summary: msg.clone(),
            error: Some(msg),
            cycle_number,
            ..CycleReport::default()
        }
    }
}

/// Shared between the loop and the status writer.
#[derive(Debug, Default, Clone, Serialize, Deserialize)]
pub struct SyncStatus {
    pub cycles: u64,
    pub last: Option<CycleReport>,
    pub last_error: Option<String>,
    pub running: bool,
}

/// The front end's part in a cycle: the mount sends invalidations to the kernel for
/// entries the sync changed; the folder mode takes the folder's changes into the catalog
/// before the namespace part and brings the received ones into the folder after it.
pub trait Invalidate: Send + Sync {
    fn invalidate(&self, touched: &[Touched]);
    /// Runs under the cycle lock, before the namespace part.
    fn before_cycle(&self) {}
}

#[cfg(fuse)]
impl Invalidate for fuser::Notifier {
    fn invalidate(&self, touched: &[Touched]) {
        for t in touched {
            // Errors (ENOENT: the kernel never looked the entry up) are normal.
            let _ = self.inval_entry(
                fuser::INodeNo(t.parent),
                std::ffi::OsStr::new(t.name.as_str()),
            );
            if let Some(ino) = t.ino {
                let _ = self.inval_inode(fuser::INodeNo(ino), 0, 0);
            }
        }
    }
}

pub fn lock_path(home: &Home) -> PathBuf {
    home.root.join("sync.lock")
}

/// An exclusive `flock` held for one cycle; released on drop (and by the kernel if the
/// process dies).
pub struct CycleLock {
    _file: File,
}

impl CycleLock {
    /// Waits for the lock (another cycle of this device may be running).
    pub fn acquire(home: &Home) -> std::io::Result<CycleLock> {
        std::fs::create_dir_all(&home.root)?;
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(lock_path(home))?;
        crate::os::lock_exclusive(&file)?;
        Ok(CycleLock { _file: file })
    }
}

/// Everything one cycle needs.
pub struct CycleContext {
    pub home: Home,
    pub cfg: Config,
    /// Checked against the store id at the start of every cycle (`Checked::verify`).
    pub store: Arc<Checked>,
    pub catalog: Arc<Catalog>,
    pub rt: tokio::runtime::Handle,
    /// Inodes with unsaved writes in the mount (see `NamespaceSync::with_busy`).
    pub busy: Option<Arc<dyn Fn(u64) -> bool + Send + Sync>>,
    /// Why uploads fail now for a reason retrying alone will not cure (the uploader's
    /// lasting error): files that wait for upload then make the cycle an error, not a
    /// quiet "wait for upload". Network trouble is not such a reason.
    pub upload_error: Option<Arc<dyn Fn() -> Option<String> + Send + Sync>>,
}

/// One full cycle under the lock: namespace first (so files a database path names are
/// there when the path arrives), then the database.
pub fn run_cycle(ctx: &CycleContext, inval: Option<&dyn Invalidate>, number: u64) -> CycleReport {
    let started_at = chrono::Utc::now().to_rfc3339();
    let _lock = match CycleLock::acquire(&ctx.home) {
        Ok(l) => l,
        Err(e) => {
            let msg = format!("cannot lock {}: {e}", lock_path(&ctx.home).display());
            return CycleReport::failed(started_at, number, msg);
        }
    };
    if let Err(e) = ctx.rt.block_on(ctx.store.verify()) {
        // Not this device's store (a disk not attached): nothing is read or written, the
        // changes stay queued here.
        return CycleReport::failed(started_at, number, e.to_string());
    }
    if let Some(i) = inval {
        i.before_cycle();
    }
    let mut errors = Vec::new();
    let mut parts = Vec::new();
    let ns = NamespaceSync::open(
        &ctx.cfg,
        &ctx.home.state_db_path(),
        &ctx.catalog,
        ctx.store.clone(),
        ctx.rt.clone(),
    )
    .map(|ns| match &ctx.busy {
        Some(b) => ns.with_busy(b.as_ref()),
        None => ns,
    })
    .and_then(|mut ns| ns.cycle());
    let namespace = match ns {
        Ok((s, touched)) => {
            if let Some(i) = inval {
                i.invalidate(&touched);
            }
            errors.extend(s.errors.iter().cloned());
            if let Some(e) = uploads_failing(ctx, &s) {
                errors.push(e);
            }
            parts.push(ns_line(&s));
            Some(s)
        }
        Err(e) => {
            errors.push(format!("namespace: {e}"));
            None
        }
    };
    let database = if ctx.cfg.db_path.is_some() {
        match run_db_cycle(ctx) {
            Ok(s) => {
                errors.extend(s.errors.iter().cloned());
                parts.push(s.human());
                Some(db_json(&s))
            }
            Err(e) => {
                errors.push(format!("database: {e}"));
                None
            }
        }
    } else {
        None
    };
    let error = (!errors.is_empty()).then(|| errors.join("; "));
    if let Some(e) = &error {
        tracing::warn!(error = %e, "sync cycle finished with errors");
    }
    crate::os::release_free_memory();
    CycleReport {
        started_at,
        finished_at: chrono::Utc::now().to_rfc3339(),
        namespace,
        database,
        summary: parts.join("; "),
        error,
        cycle_number: number,
    }
}

/// Files held back because their uploads fail (a read-only or full store, a revoked
/// token): said as an error of the cycle, so `songfs sync` exits non-zero with the
/// reason instead of "wait for upload" forever.
fn uploads_failing(ctx: &CycleContext, s: &NsSummary) -> Option<String> {
    if s.waiting_for_upload == 0 {
        return None;
    }
    let why = ctx.upload_error.as_ref()?()?;
    Some(format!(
        "{} file(s) cannot be uploaded and are not sent yet (retried; nothing is lost): {why}",
        s.waiting_for_upload
    ))
}

/// The database part of a cycle. Its state.db transactions take the write lock at BEGIN
/// (`sync::state::write_tx`), so the cache's and catalog's commits make it wait, not fail.
fn run_db_cycle(ctx: &CycleContext) -> Result<Summary, crate::sync::SyncError> {
    cycle::run(
        &ctx.cfg,
        &ctx.home,
        ctx.store.clone(),
        &ctx.rt,
        cycle::Options::default(),
    )
}

fn db_json(s: &Summary) -> serde_json::Value {
    serde_json::to_value(s).unwrap_or_default()
}

pub fn ns_line(s: &NsSummary) -> String {
    let mut p = Vec::new();
    if s.received_files + s.received_deletes > 0 {
        p.push(format!(
            "{} file(s) new or changed, {} removed",
            s.received_files, s.received_deletes
        ));
    }
    if s.sent_files + s.sent_deletes > 0 {
        p.push(format!(
            "{} local file change(s) sent",
            s.sent_files + s.sent_deletes
        ));
    }
    if s.received_dirs + s.sent_dirs > 0 {
        p.push(format!(
            "{} folder(s) made or removed here, {} sent",
            s.received_dirs, s.sent_dirs
        ));
    }
    if s.waiting_for_upload > 0 {
        p.push(format!("{} file(s) wait for upload", s.waiting_for_upload));
    }
    if s.being_written > 0 {
        p.push(format!("{} file(s) still being written", s.being_written));
    }
    if s.conflict_copies > 0 {
        p.push(format!(
            "{} conflict cop{} under .conflicts/",
            s.conflict_copies,
            if s.conflict_copies == 1 { "y" } else { "ies" }
        ));
    }
    if !s.refused.is_empty() {
        let each: Vec<String> = s
            .refused
            .iter()
            .map(|r| format!("{:?} from {} ({})", r.path, r.log, r.why))
            .collect();
        p.push(format!(
            "{} remote entr{} refused: {}",
            s.refused.len(),
            if s.refused.len() == 1 { "y" } else { "ies" },
            each.join("; ")
        ));
    }
    if p.is_empty() {
        "Files: nothing new".into()
    } else {
        format!("Files: {}", p.join(", "))
    }
}

enum Msg {
    SyncNow(mpsc::Sender<CycleReport>),
    Stop,
}

/// The loop thread and its mailbox.
pub struct SyncLoop {
    tx: mpsc::Sender<Msg>,
    thread: Option<JoinHandle<()>>,
    pub status: Arc<Mutex<SyncStatus>>,
}

impl SyncLoop {
    pub fn start(
        ctx: CycleContext,
        inval: Option<Box<dyn Invalidate>>,
        interval: Duration,
    ) -> SyncLoop {
        let (tx, rx) = mpsc::channel::<Msg>();
        let status = Arc::new(Mutex::new(SyncStatus::default()));
        let st = status.clone();
        let thread = std::thread::Builder::new()
            .name("songfs-sync".into())
            .spawn(move || {
                let once = |reason: &str| -> CycleReport {
                    let n = {
                        let mut s = st.lock().unwrap_or_else(|p| p.into_inner());
                        s.running = true;
                        s.cycles + 1
                    };
                    tracing::info!(reason, cycle = n, "sync cycle");
                    // A bug in one cycle must not end the loop (nor the mount): report it.
                    let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                        run_cycle(&ctx, inval.as_deref(), n)
                    }))
                    .unwrap_or_else(|_| {
                        let msg = "the sync cycle failed unexpectedly (a bug; see the log)";
                        tracing::error!(cycle = n, "{msg}");
                        CycleReport::failed(chrono::Utc::now().to_rfc3339(), n, msg.into())
                    });
                    let mut s = st.lock().unwrap_or_else(|p| p.into_inner());
                    s.running = false;
                    s.cycles = n;
                    if r.error.is_some() {
                        s.last_error = r.error.clone();
                    }
                    s.last = Some(r.clone());
                    r
                };
                once("start");
                let mut next = Instant::now() + interval;
                loop {
                    let wait = next.saturating_duration_since(Instant::now());
                    match rx.recv_timeout(wait) {
                        Ok(Msg::SyncNow(reply)) => {
                            let r = once("requested");
                            let _ = reply.send(r);
                            next = Instant::now() + interval;
                        }
                        Ok(Msg::Stop) | Err(RecvTimeoutError::Disconnected) => {
                            once("unmount");
                            return;
                        }
                        Err(RecvTimeoutError::Timeout) => {
                            once("interval");
                            next = Instant::now() + interval;
                        }
                    }
                }
            })
            .expect("spawn the sync thread");
        SyncLoop {
            tx,
            thread: Some(thread),
            status,
        }
    }

    /// Asks for a cycle now and waits for its report (a running cycle finishes first;
    /// requests are served one after another, never in parallel).
    pub fn sync_now(&self, timeout: Duration) -> Option<CycleReport> {
        let (rtx, rrx) = mpsc::channel();
        self.tx.send(Msg::SyncNow(rtx)).ok()?;
        rrx.recv_timeout(timeout).ok()
    }

    /// A handle that can request cycles from another thread.
    pub fn requester(&self) -> SyncRequester {
        SyncRequester {
            tx: Mutex::new(self.tx.clone()),
        }
    }

    /// Runs the last cycle and stops; waits at most `bound` for it.
    pub fn stop(mut self, bound: Duration) -> bool {
        let _ = self.tx.send(Msg::Stop);
        let Some(t) = self.thread.take() else {
            return true;
        };
        let deadline = Instant::now() + bound;
        while !t.is_finished() {
            if Instant::now() > deadline {
                tracing::warn!(
                    "the last sync cycle did not finish in {bound:?}: exiting without it"
                );
                return false;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = t.join();
        true
    }
}

/// Sends "sync now" to the loop from any thread.
pub struct SyncRequester {
    tx: Mutex<mpsc::Sender<Msg>>,
}

impl SyncRequester {
    pub fn sync_now(&self, timeout: Duration) -> Option<CycleReport> {
        let (rtx, rrx) = mpsc::channel();
        self.tx
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .send(Msg::SyncNow(rtx))
            .ok()?;
        rrx.recv_timeout(timeout).ok()
    }
}

/// The namespace part of `songfs sync` with no daemon running: on the catalog in
/// `mount.db` (safe: no mount holds it). The caller holds the cycle lock and has checked
/// the store's identity.
pub fn namespace_standalone(
    home: &Home,
    cfg: &Config,
    store: Arc<Checked>,
    rt: &tokio::runtime::Runtime,
) -> anyhow::Result<NsSummary> {
    use anyhow::Context;
    let (uid, gid) = crate::os::uid_gid();
    let mount_db = crate::db::mount_db(home)?;
    let catalog = Catalog::open(&mount_db, uid, gid)
        .with_context(|| format!("cannot open {}", mount_db.display()))?;
    let mut ns = NamespaceSync::open(
        cfg,
        &home.state_db_path(),
        &catalog,
        store,
        rt.handle().clone(),
    )?;
    let (s, _) = ns.cycle().context("the namespace sync failed")?;
    Ok(s)
}
