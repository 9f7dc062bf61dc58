//! The sync of the Song Factory database between devices.
//!
//! One cycle (`cycle.rs`): capture this device's edits by diffing the live tables
//! against a shadow copy in `state.db` (`capture.rs`), give rows global ids
//! (`identity.rs`, `translate.rs`), export them as an immutable change log in the store
//! (`changelog.rs`), merge the other devices' logs field by field (`merge.rs`, pure) and
//! write the resolved rows back into the app database (`apply.rs`). `state.rs` owns
//! songfs's own tables; `conflicts.rs` the conflicts log.
//!
//! Must never: push secrets or machine-local config keys, export a change it received
//! from another device as its own, or hold a write transaction on the app database
//! longer than one log's worth of rows.

pub mod apply;
pub mod capture;
pub mod changelog;
pub mod clock;
pub mod conflicts;
pub mod cycle;
pub mod identity;
pub mod invariants;
pub mod merge;
pub mod namespace;
pub mod presync;
pub mod schema;
pub mod state;
pub mod translate;
pub mod words;

use std::path::Path;
use std::time::Duration;

use anyhow::Context;
use rusqlite::Connection;

use crate::config::{Config, Home};

/// Errors of the database side of the sync.
#[derive(Debug, thiserror::Error)]
pub enum SyncError {
    #[error("database error: {0}")]
    Sql(#[from] rusqlite::Error),
    #[error("{0}")]
    Schema(String),
    #[error("change log {key}: {why}")]
    BadLog { key: String, why: String },
    #[error("store: {0}")]
    Store(#[from] crate::store::StoreError),
    #[error(
        "the database {db} looks restored from a backup or replaced ({why}); nothing was sent. \
         Run `songfs sync --accept-restore` to keep its contents and send them to the other devices as new edits"
    )]
    RestoreDetected { db: String, why: String },
    #[error("songfs has no database to sync: run `songfs init --store ... --db ~/.songfactory/songfactory.db`")]
    NoDatabase,
    #[error("{0}")]
    Other(String),
}

/// Crash simulation for tests: true when `SONGFS_FAILPOINT` names this point. The
/// caller then stops as a crash there would (an error, nothing after it done).
pub(crate) fn failpoint(name: &str) -> bool {
    std::env::var("SONGFS_FAILPOINT").is_ok_and(|v| v == name)
}

/// How long a statement waits for the app's write lock before giving up.
pub const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// Opens the app database the way the app itself does: WAL, a 5 s busy timeout, and
/// foreign keys OFF (the app's workers write without them; songfs does cascades itself).
pub fn open_app_db(path: &Path) -> Result<Connection, SyncError> {
    if !path.exists() {
        return Err(SyncError::Other(format!(
            "the database {} does not exist: check `db_path` in songfs's config",
            path.display()
        )));
    }
    let conn = Connection::open(path)?;
    conn.busy_timeout(BUSY_TIMEOUT)?;
    conn.pragma_update(None, "journal_mode", "WAL")?;
    conn.pragma_update(None, "foreign_keys", "OFF")?;
    Ok(conn)
}

/// `songfs init --db`: takes the first snapshot of the database (the shadow copy and
/// first capture), so edits made from now on are told apart from what was there.
/// Nothing is sent to the store here; the first `songfs sync` does that.
pub fn snapshot_on_init(cfg: &Config, home: &Home) -> anyhow::Result<()> {
    let Some(db) = &cfg.db_path else {
        return Ok(());
    };
    let app = open_app_db(db).with_context(|| format!("cannot open {}", db.display()))?;
    let mut st = state::StateDb::open(&home.state_db_path())?;
    if st.has_snapshot()? {
        // Re-init of a device already syncing this database: the next cycle captures.
        return Ok(());
    }
    let n = cycle::capture_only(cfg, &app, &mut st)
        .with_context(|| format!("cannot take the first snapshot of {}", db.display()))?;
    tracing::info!(changes = n, "first snapshot of the database taken");
    Ok(())
}
