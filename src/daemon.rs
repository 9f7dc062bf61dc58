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

pub mod control;
pub mod folder;
pub mod lock;
pub mod sync_loop;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use serde::{Deserialize, Serialize};

use crate::cache::{Cache, CacheUsage};
use crate::catalog::Catalog;
use crate::config::{Config, Home};
#[cfg(fuse)]
use crate::fs::{FsOptions, FuseAdapter, SongFs};
use crate::store::identity::Checked;
use crate::store::{self, format, ObjectStore, StoreError};
use crate::uploader::Uploader;

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
    rt: tokio::runtime::Runtime,
    store: Arc<Checked>,
    offline: Offline,
    cache: Arc<Cache>,
    uploader: Arc<Uploader>,
    catalog: Arc<Catalog>,
    fs: Arc<SongFs>,
}

/// What runs beside the FUSE session until it ends.
#[cfg(fuse)]
struct Running {
    sync: sync_loop::SyncLoop,
    control_task: tokio::task::JoinHandle<()>,
    status_task: tokio::task::JoinHandle<()>,
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
    let running = start(&parts, home, cfg, &opts, &mut session, as_root)?;
    let served = session.run();
    shut_down(parts, running, home, &opts);
    served.context("the FUSE session failed")
}

/// The shared core, and the filesystem logic on it.
#[cfg(fuse)]
fn build(home: &Home, cfg: &Config, opts: &DaemonOptions) -> anyhow::Result<Parts> {
    let Core {
        rt,
        store,
        offline,
        cache,
        uploader,
        catalog,
        mount_db: _,
        local_only,
    } = open_core(home, cfg, opts)?;
    let fs = Arc::new(
        SongFs::new(
            catalog.clone(),
            cache.clone(),
            FsOptions {
                local_dir: local_dir(home),
                rescue_dir: home.root.join("lost+found"),
                local_only_patterns: local_only,
            },
        )
        .context("cannot set up the filesystem")?,
    );
    Ok(Parts {
        rt,
        store,
        offline,
        cache,
        uploader,
        catalog,
        fs,
    })
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
    let adapter = FuseAdapter::new(parts.fs.clone(), parts.rt.handle().clone());
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

/// Writes the status file, starts the sync loop and the control socket, writes the pid
/// file, starts the signal handler and the status writer.
#[cfg(fuse)]
fn start(
    parts: &Parts,
    home: &Home,
    cfg: &Config,
    opts: &DaemonOptions,
    session: &mut fuser::Session<FuseAdapter>,
    as_root: bool,
) -> anyhow::Result<Running> {
    let Parts {
        rt,
        store,
        offline,
        cache,
        uploader,
        catalog,
        fs,
    } = parts;
    // Status first, then (below) the pid file that `songfs mount` waits for: whoever sees
    // this daemon running never reads the previous mount's status.
    write_status(
        home,
        &mount_front(opts),
        &store.describe(),
        offline,
        cache,
        uploader,
        &std::sync::Mutex::new(sync_loop::SyncStatus::default()),
    );
    let mut sync_cfg = cfg.clone();
    sync_cfg.mount_point = Some(opts.mountpoint.clone());
    let sync = sync_loop::SyncLoop::start(
        sync_loop::CycleContext {
            home: home.clone(),
            cfg: sync_cfg,
            store: store.clone(),
            catalog: catalog.clone(),
            rt: rt.handle().clone(),
            busy: Some({
                let fs = fs.clone();
                Arc::new(move |ino| fs.has_unsaved_writes(ino))
            }),
        },
        Some(Box::new(session.notifier())),
        opts.sync_interval,
    );
    let listener = {
        let _enter = rt.enter();
        control::bind(home)
    };
    let served = Arc::new(control::Served {
        catalog: catalog.clone(),
        cache: cache.clone(),
        store: store.clone(),
        sync: sync.requester(),
    });
    let control_task = rt.spawn(async move {
        if let Some(l) = listener {
            control::serve(l, served).await
        }
    });
    // The pid file that `songfs mount` waits for, once the control socket answers.
    std::fs::write(pid_path(home), format!("{}\n", std::process::id()))
        .with_context(|| format!("cannot write {}", pid_path(home).display()))?;
    tracing::info!(mountpoint = %opts.mountpoint.display(), store = %store.describe(), "mounted");

    let mut unmounter = as_root.then(|| session.unmount_callable());
    let mountpoint = opts.mountpoint.clone();
    rt.spawn(async move {
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
    let status_task = rt.spawn(write_status_loop(
        home.clone(),
        mount_front(opts),
        store.describe(),
        offline.clone(),
        cache.clone(),
        uploader.clone(),
        sync.status.clone(),
    ));
    Ok(Running {
        sync,
        control_task,
        status_task,
    })
}

/// After the session ended: commits staged files, drains uploads for a bounded time,
/// runs the last sync cycle, writes the final status and removes the pid file.
#[cfg(fuse)]
fn shut_down(parts: Parts, running: Running, home: &Home, opts: &DaemonOptions) {
    let Parts {
        rt,
        store,
        offline,
        cache,
        uploader,
        fs,
        ..
    } = parts;
    let Running {
        sync,
        control_task,
        status_task,
    } = running;
    tracing::info!("session ended: committing staged files and draining uploads");
    fs.commit_all();
    status_task.abort();
    let _ = rt.block_on(status_task);
    let drained = rt.block_on(uploader.drain(DRAIN_TIMEOUT));
    if !drained {
        let (n, bytes) = uploader.pending();
        tracing::warn!(
            pending = n,
            bytes,
            "uploads not finished at unmount: they resume at the next mount"
        );
    }
    // The last cycle, after the uploads: what was written last is exported now.
    let sync_status = sync.status.clone();
    sync.stop(LAST_CYCLE_TIMEOUT);
    control_task.abort();
    let _ = std::fs::remove_file(control::socket_path(home));
    write_status(
        home,
        &mount_front(opts),
        &store.describe(),
        &offline,
        &cache,
        &uploader,
        &sync_status,
    );
    if let Ok(up) = Arc::try_unwrap(uploader) {
        rt.block_on(up.shutdown());
    }
    let _ = std::fs::remove_file(pid_path(home));
}

#[cfg(fuse)]
fn mount_front(opts: &DaemonOptions) -> Front {
    Front {
        path: opts.mountpoint.clone(),
        folder: false,
    }
}

/// Without FUSE there is no mount to serve (`songfs mount` says so before it gets here).
#[cfg(not(fuse))]
pub fn run(_: &Home, _: &Config, _: DaemonOptions, _: lock::HomeLock) -> anyhow::Result<()> {
    anyhow::bail!("this build of songfs has no FUSE mount (Linux only)")
}

/// Where a daemon serves: a mount point, or a folder kept in step (folder mode).
#[derive(Debug, Clone)]
pub(crate) struct Front {
    pub path: PathBuf,
    pub folder: bool,
}

pub(crate) async fn write_status_loop(
    home: Home,
    front: Front,
    store: String,
    offline: Offline,
    cache: Arc<Cache>,
    uploader: Arc<Uploader>,
    sync: Arc<std::sync::Mutex<sync_loop::SyncStatus>>,
) {
    loop {
        write_status(&home, &front, &store, &offline, &cache, &uploader, &sync);
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

pub(crate) fn write_status(
    home: &Home,
    front: &Front,
    store: &str,
    offline: &Offline,
    cache: &Cache,
    uploader: &Uploader,
    sync: &std::sync::Mutex<sync_loop::SyncStatus>,
) {
    let CacheUsage {
        bytes,
        limit,
        pinned_bytes,
        dirty_bytes,
        blobs,
    } = cache.usage();
    let (pending_uploads, pending_bytes) = uploader.pending();
    let s = DaemonStatus {
        pid: std::process::id(),
        mountpoint: front.path.clone(),
        folder: front.folder,
        store: store.to_string(),
        store_reachable: offline.is_none(),
        offline_reason: offline.clone(),
        cache_bytes: bytes,
        cache_limit: limit,
        cache_pinned_bytes: pinned_bytes,
        cache_dirty_bytes: dirty_bytes,
        cache_blobs: blobs,
        pending_uploads,
        pending_bytes,
        last_error: uploader.last_error(),
        updated_at: chrono::Utc::now().to_rfc3339(),
        sync: Some(sync.lock().unwrap_or_else(|p| p.into_inner()).clone()),
    };
    let path = status_path(home);
    let tmp = path.with_extension("json.tmp");
    let written = serde_json::to_vec_pretty(&s)
        .map_err(std::io::Error::other)
        .and_then(|b| std::fs::write(&tmp, b))
        .and_then(|_| std::fs::rename(&tmp, &path));
    if let Err(e) = written {
        tracing::warn!(path = %path.display(), error = %e, "cannot write the status file");
    }
}
