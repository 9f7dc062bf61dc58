//! The process behind `songfs mount`: opens the store, the cache, the uploader and the
//! namespace, serves the FUSE session until it is unmounted (by `songfs unmount`,
//! `fusermount3 -u`, SIGTERM or SIGINT), then commits staged files, drains uploads for
//! a bounded time and exits.
//!
//! It holds `$SONGFS_HOME/daemon.lock` for its whole life (`lock.rs`: one daemon per
//! home), writes its PID to `$SONGFS_HOME/daemon.pid` and, every second, what
//! `songfs status` shows to `$SONGFS_HOME/daemon-status.json` (the status command runs in
//! another process and cannot ask the uploader directly). It must never exit with the
//! mount still attached (a dead mount answers ENOTCONN to every program).
//!
//! Alongside the filesystem it runs the sync loop (`sync_loop.rs`: a cycle at start,
//! every interval, on request, and a last one after unmount) and the control socket
//! (`control.rs`) through which `songfs sync`, `pin`, `unpin`, `evict` reach it.

// The mount half (`run` and what only it uses) serves a FUSE session; without FUSE only
// the pid and status helpers are used (`songfs status`, `sync`).
#![cfg_attr(not(fuse), allow(dead_code, unused_imports))]

mod beside;
pub mod control;
pub mod folder;
pub mod lock;
pub mod sync_loop;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use serde::{Deserialize, Serialize};

use crate::cache::Cache;
use crate::catalog::Catalog;
use crate::config::{Config, Home};
#[cfg(fuse)]
use crate::fs::{FsOptions, FuseAdapter, SongFs};
use crate::store::identity::Checked;
use crate::store::{self, format, ObjectStore, StoreError};
use crate::uploader::Uploader;
pub(crate) use beside::{Beside, Front};

/// How long unmount waits for pending uploads before leaving them for the next mount.
pub const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);

pub struct DaemonOptions {
    pub mountpoint: PathBuf,
    pub cache_size: u64,
    pub fetch_timeout: Duration,
    /// Let other users (and root) into the mount; needs `user_allow_other` in
    /// /etc/fuse.conf for a non-root user.
    pub allow_other: bool,
    /// Seconds between sync cycles.
    pub sync_interval: Duration,
    /// Folder mode: the naming rules of the folder's file system.
    pub names: crate::paths::Style,
}

/// How long the last sync cycle at unmount may take before the daemon exits without it.
pub const LAST_CYCLE_TIMEOUT: Duration = Duration::from_secs(30);

/// What `songfs status` reads.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DaemonStatus {
    pub pid: u32,
    pub mountpoint: PathBuf,
    /// Folder mode (`songfs mount --folder`): `mountpoint` is a plain folder kept in
    /// step, not a FUSE mount.
    #[serde(default)]
    pub folder: bool,
    pub store: String,
    /// The store answered when the mount started.
    pub store_reachable: bool,
    /// Why the mount started offline (the store did not answer, or is not this device's).
    #[serde(default)]
    pub offline_reason: Option<String>,
    pub cache_bytes: u64,
    pub cache_limit: u64,
    pub cache_pinned_bytes: u64,
    pub cache_dirty_bytes: u64,
    pub cache_blobs: u64,
    pub pending_uploads: u64,
    pub pending_bytes: u64,
    pub last_error: Option<String>,
    pub updated_at: String,
    /// The sync loop: cycles run, the last one's report, its last error.
    #[serde(default)]
    pub sync: Option<sync_loop::SyncStatus>,
}

pub fn pid_path(home: &Home) -> PathBuf {
    home.root.join("daemon.pid")
}

pub fn status_path(home: &Home) -> PathBuf {
    home.root.join("daemon-status.json")
}

pub fn local_dir(home: &Home) -> PathBuf {
    home.root.join("local")
}

/// The PID in the pid file, if that process is alive.
pub fn running_pid(home: &Home) -> Option<u32> {
    let pid: u32 = std::fs::read_to_string(pid_path(home))
        .ok()?
        .trim()
        .parse()
        .ok()?;
    process_alive(pid).then_some(pid)
}

/// True if `pid` is a live (not zombie) songfs process: a daemon killed by a crash may
/// linger as a zombie where nothing reaps it, and its PID may be reused later.
/// Without /proc (macOS, Windows) the OS is asked whether the process exists at all
/// (`os::process_exists`).
pub fn process_alive(pid: u32) -> bool {
    if !cfg!(target_os = "linux") {
        return crate::os::process_exists(pid);
    }
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return false;
    };
    // The state follows the parenthesised command name.
    let state = stat
        .rsplit(')')
        .next()
        .and_then(|r| r.split_whitespace().next());
    if matches!(state, Some("Z") | Some("X")) {
        return false;
    }
    std::fs::read(format!("/proc/{pid}/cmdline"))
        .map(|c| String::from_utf8_lossy(&c).contains("songfs"))
        .unwrap_or(false)
}

pub fn read_status(home: &Home) -> Option<DaemonStatus> {
    let text = std::fs::read_to_string(status_path(home)).ok()?;
    serde_json::from_str(&text).ok()
}

/// Checks the store at mount. Unreachable (network down, endpoint off), or not the store
/// this device was set up with (a folder whose disk is not attached, an endpoint that
/// answers for another store): mount anyway, offline — cached files read, writes queue
/// for upload and go out once the right store answers. Reachable but refusing access, or
/// written by a format this build does not understand: refuse.
async fn check_store(store: &Checked, timeout: Duration) -> anyhow::Result<Offline> {
    let offline = match tokio::time::timeout(timeout, store.verify()).await {
        Err(_) => format!(
            "the store {} did not answer within {timeout:?}: mounted offline (cached files only; writes upload later)",
            store.describe()
        ),
        Ok(Err(e @ StoreError::WrongStore { .. })) => e.to_string(),
        Ok(Err(
            e @ (StoreError::Denied { .. }
            | StoreError::NoSuchBucket { .. }
            | StoreError::BadUrl { .. }),
        )) => {
            return Err(anyhow::anyhow!(
                "cannot use the store {}: {e}",
                store.describe()
            ))
        }
        Ok(Err(e)) => format!(
            "the store {} is unreachable ({e}): mounted offline (cached files only; writes upload later)",
            store.describe()
        ),
        Ok(Ok(())) => {
            format::check(store).await?;
            return Ok(None);
        }
    };
    tracing::warn!("{offline}");
    Ok(Some(offline))
}

/// Why the mount started offline; None when the store answered as this device's.
type Offline = Option<String>;

/// What every front end (the FUSE mount, the folder mode) is built on: the store (its
/// identity checked), the cache, the uploader and the catalog, in one runtime.
pub(crate) struct Core {
    pub rt: tokio::runtime::Runtime,
    pub store: Arc<Checked>,
    pub offline: Offline,
    pub cache: Arc<Cache>,
    pub uploader: Arc<Uploader>,
    pub catalog: Arc<Catalog>,
    pub mount_db: PathBuf,
    /// `local_only_patterns`, parsed.
    pub local_only: Vec<glob::Pattern>,
}

/// Opens the store (its identity checked), the cache, the uploader and the catalog.
pub(crate) fn open_core(home: &Home, cfg: &Config, opts: &DaemonOptions) -> anyhow::Result<Core> {
    crate::os::bound_allocator();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(4)
        .enable_all()
        .build()?;
    let store = rt.block_on(store::open_checked(cfg))?;
    let offline = rt.block_on(check_store(&store, opts.fetch_timeout))?;
    let dyn_store: Arc<dyn ObjectStore> = store.clone();

    std::fs::create_dir_all(home.cache_dir())
        .with_context(|| format!("cannot create {}", home.cache_dir().display()))?;
    // The cache empties its staging folder when it opens: first save what a crash left
    // there (bytes of files never closed) to lost+found.
    #[cfg(fuse)]
    crate::fs::staging::rescue_leftovers(
        &home.cache_dir().join("staging"),
        &home.root.join("lost+found"),
    );
    let mount_db = crate::db::mount_db(home)?;
    let cache = {
        let _enter = rt.enter();
        Cache::open(
            &home.cache_dir(),
            &mount_db,
            opts.cache_size,
            dyn_store.clone(),
            opts.fetch_timeout,
        )
        .context("cannot open the cache")?
    };
    let uploader = {
        let _enter = rt.enter();
        Arc::new(Uploader::start(cache.clone(), dyn_store))
    };
    let (uid, gid) = crate::os::uid_gid();
    let catalog = Arc::new(
        Catalog::open(&mount_db, uid, gid)
            .with_context(|| format!("cannot open {}", mount_db.display()))?,
    );
    let local_only = cfg
        .local_only_patterns
        .iter()
        .map(|p| {
            glob::Pattern::new(p).with_context(|| {
                format!(
                    "local_only_patterns: {p:?} is not a valid glob: fix it in {}",
                    home.config_path().display()
                )
            })
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    Ok(Core {
        rt,
        store,
        offline,
        cache,
        uploader,
        catalog,
        mount_db,
        local_only,
    })
}

/// What the mount is made of, built before anything is mounted.
#[cfg(fuse)]
struct Parts {
    core: Core,
    fs: Arc<SongFs>,
    front: Front,
}

/// Serves the mount in this process until it is unmounted, holding the home's lock
/// (taken by the caller before it touched the home): build, mount, start what runs
/// beside it, serve, shut down.
#[cfg(fuse)]
pub fn run(
    home: &Home,
    cfg: &Config,
    opts: DaemonOptions,
    _home_lock: lock::HomeLock,
) -> anyhow::Result<()> {
    let parts = build(home, cfg, &opts)?;
    let (mut session, as_root) = mount(&parts, &opts)?;
    let beside = start(&parts, home, cfg, &opts, &mut session, as_root)?;
    let served = session.run();
    shut_down(parts, beside, home);
    served.context("the FUSE session failed")
}

/// The shared core, and the filesystem logic on it.
#[cfg(fuse)]
fn build(home: &Home, cfg: &Config, opts: &DaemonOptions) -> anyhow::Result<Parts> {
    let core = open_core(home, cfg, opts)?;
    let fs = Arc::new(
        SongFs::new(
            core.catalog.clone(),
            core.cache.clone(),
            FsOptions {
                local_dir: local_dir(home),
                rescue_dir: home.root.join("lost+found"),
                local_only_patterns: core.local_only.clone(),
            },
        )
        .context("cannot set up the filesystem")?,
    );
    let front = Front {
        path: opts.mountpoint.clone(),
        folder: false,
    };
    Ok(Parts { core, fs, front })
}

/// Attaches the FUSE session at the mount point (directly as root, else through the
/// setuid fusermount3). Returns the session and whether it was mounted as root.
#[cfg(fuse)]
fn mount(
    parts: &Parts,
    opts: &DaemonOptions,
) -> anyhow::Result<(fuser::Session<FuseAdapter>, bool)> {
    let mut fuse_cfg = fuser::Config::default();
    fuse_cfg.mount_options = vec![
        fuser::MountOption::FSName("songfs".into()),
        fuser::MountOption::Subtype("songfs".into()),
        fuser::MountOption::DefaultPermissions,
        fuser::MountOption::NoAtime,
        fuser::MountOption::RW,
    ];
    fuse_cfg.n_threads = Some(4);
    fuse_cfg.clone_fd = true;
    if opts.allow_other {
        fuse_cfg.acl = fuser::SessionACL::All;
    }
    let adapter = FuseAdapter::new(parts.fs.clone(), parts.core.rt.handle().clone());
    let as_root = crate::os::is_root();
    let session = if as_root {
        fuser::Session::new(adapter, &opts.mountpoint, &fuse_cfg)
    } else {
        // A user mounts through the setuid fusermount3 (see fs::fusermount).
        let mut o = "fsname=songfs,subtype=songfs,default_permissions,noatime,rw".to_string();
        if opts.allow_other {
            o.push_str(",allow_other");
        }
        crate::fs::fusermount::mount(&opts.mountpoint, &o)
            .and_then(|fd| fuser::Session::from_fd(adapter, fd, fuse_cfg.acl, fuse_cfg.clone()))
    }
    .with_context(|| format!("cannot mount {}", opts.mountpoint.display()))?;
    Ok((session, as_root))
}

/// Starts what runs beside the mount (`beside.rs`: status, sync loop, control socket,
/// pid file) and the signal handler that unmounts.
#[cfg(fuse)]
fn start(
    parts: &Parts,
    home: &Home,
    cfg: &Config,
    opts: &DaemonOptions,
    session: &mut fuser::Session<FuseAdapter>,
    as_root: bool,
) -> anyhow::Result<Beside> {
    let fs = parts.fs.clone();
    let beside = parts.core.start_beside(
        home,
        cfg,
        &parts.front,
        Some(Arc::new(move |ino| fs.has_unsaved_writes(ino))),
        Box::new(session.notifier()),
        opts.sync_interval,
    )?;
    tracing::info!(mountpoint = %opts.mountpoint.display(), store = %parts.core.store.describe(), "mounted");

    let mut unmounter = as_root.then(|| session.unmount_callable());
    let mountpoint = opts.mountpoint.clone();
    parts.core.rt.spawn(async move {
        use tokio::signal::unix::{signal, SignalKind};
        let (Ok(mut term), Ok(mut int)) = (
            signal(SignalKind::terminate()),
            signal(SignalKind::interrupt()),
        ) else {
            return;
        };
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
        }
        tracing::info!(mountpoint = %mountpoint.display(), "signal received: unmounting");
        let done = match unmounter.as_mut() {
            Some(u) => u.unmount(),
            None => crate::fs::fusermount::unmount(&mountpoint, false),
        };
        if let Err(e) = done {
            tracing::warn!(error = %e, "unmount failed (busy?); detaching lazily");
            let _ = crate::fs::fusermount::unmount(&mountpoint, true);
        }
    });
    Ok(beside)
}

/// After the session ended: commits staged files, then stops what ran beside it.
#[cfg(fuse)]
fn shut_down(parts: Parts, beside: Beside, home: &Home) {
    tracing::info!("session ended: committing staged files and draining uploads");
    parts.fs.commit_all();
    parts.core.finish(home, &parts.front, beside);
}

/// Without FUSE there is no mount to serve (`songfs mount` says so before it gets here).
#[cfg(not(fuse))]
pub fn run(_: &Home, _: &Config, _: DaemonOptions, _: lock::HomeLock) -> anyhow::Result<()> {
    anyhow::bail!("this build of songfs has no FUSE mount (Linux only)")
}
