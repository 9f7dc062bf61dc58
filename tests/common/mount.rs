//! A real songfs mount for a test: a temp SONGFS_HOME, a temp folder store (or a given
//! store URL), the real `songfs` binary doing `init` and `mount`, and a guard that
//! unmounts and kills the daemon (by its PID) when dropped, also after a panic.
#![allow(dead_code)] // each test file uses a different subset

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

pub use super::songfs_bin;

/// Runs a command, panicking with its stderr if it fails.
pub fn run_ok(cmd: &mut Command) -> Output {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed ({}):\nstdout: {}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

pub struct Mount {
    pub home: PathBuf,
    pub store: PathBuf,
    pub dir: PathBuf,
    /// Everything of this test lives under here; removed on drop.
    root: tempfile::TempDir,
    extra_args: Vec<String>,
    /// Environment for every `songfs` run (the S3 server's credentials).
    env: Vec<(String, String)>,
    pid: Option<u32>,
}

impl Mount {
    /// init with a fresh folder store, then mount.
    pub fn new() -> Mount {
        Mount::with_args(&[])
    }

    /// Like `new`, with extra `songfs mount` arguments (e.g. `--cache-size 1M`).
    pub fn with_args(args: &[&str]) -> Mount {
        let m = Mount::init_only(args);
        let mut m = m;
        m.mount();
        m
    }

    /// init with an S3 store on a test server (`prefix` inside its bucket), then mount.
    pub fn with_s3(s3: &super::s3server::S3Server, prefix: &str, args: &[&str]) -> Mount {
        let mut m = Mount::bare(args);
        m.env = s3.env();
        m.store = s3.data_dir().join(s3.bucket()).join(prefix);
        run_ok(m.songfs().args([
            "init",
            "--store",
            &s3.url(prefix),
            "--s3-endpoint",
            &s3.endpoint(),
            "--device-name",
            "test",
        ]));
        m.mount();
        m
    }

    /// Another device on an existing folder store (`store`, shared with another Mount),
    /// mounted.
    pub fn on_folder_store(store: &Path, name: &str) -> Mount {
        let mut m = Mount::init_on_folder_store(store, name);
        m.mount();
        m
    }

    /// Another device on an existing folder store, set up but not mounted yet.
    pub fn init_on_folder_store(store: &Path, name: &str) -> Mount {
        let mut m = Mount::bare(&[]);
        m.store = store.to_path_buf();
        run_ok(m.songfs().args([
            "init",
            "--store",
            &format!("file://{}", m.store.display()),
            "--device-name",
            name,
        ]));
        m
    }

    /// init with `$SONGFS_HOME` at `home` (a small disk, say), then mount.
    pub fn with_home(home: &Path, args: &[&str]) -> Mount {
        let mut m = Mount::bare(args);
        m.home = home.to_path_buf();
        run_ok(m.songfs().args([
            "init",
            "--store",
            &format!("file://{}", m.store.display()),
            "--device-name",
            "test",
        ]));
        m.mount();
        m
    }

    /// A home set up (`songfs init`) but not mounted yet.
    pub fn init_only(args: &[&str]) -> Mount {
        let m = Mount::bare(args);
        run_ok(m.songfs().args([
            "init",
            "--store",
            &format!("file://{}", m.store.display()),
            "--device-name",
            "test",
        ]));
        m
    }

    /// A home set up with `songfs init --store URL` (this test's folder store if None)
    /// plus `init_args`, every run with `env`; not mounted yet.
    pub fn init_with(
        store_url: Option<&str>,
        init_args: &[&str],
        env: &[(&str, &str)],
        args: &[&str],
    ) -> Mount {
        Mount::init_fed(store_url, init_args, env, args, None)
    }

    /// Like `init_with`, with `stdin` piped to `songfs init` (`--password-stdin`).
    pub fn init_fed(
        store_url: Option<&str>,
        init_args: &[&str],
        env: &[(&str, &str)],
        args: &[&str],
        stdin: Option<&str>,
    ) -> Mount {
        let mut m = Mount::bare(args);
        m.env = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let url = store_url
            .map(str::to_string)
            .unwrap_or_else(|| format!("file://{}", m.store.display()));
        let mut init = m.songfs();
        init.args(["init", "--store", &url, "--device-name", "test"])
            .args(init_args);
        match stdin {
            None => {
                run_ok(&mut init);
            }
            Some(input) => {
                let out = super::run_fed(&mut init, input);
                assert!(
                    out.status.success(),
                    "songfs init failed: {}",
                    String::from_utf8_lossy(&out.stderr)
                );
            }
        }
        m
    }

    /// Sets (or with None removes) a variable for every later `songfs` run.
    pub fn set_env(&mut self, key: &str, value: Option<&str>) {
        self.env.retain(|(k, _)| k != key);
        if let Some(v) = value {
            self.env.push((key.into(), v.into()));
        }
    }

    fn bare(args: &[&str]) -> Mount {
        let root = tempfile::Builder::new()
            .prefix("songfs-mount-test-")
            .tempdir()
            .expect("temp dir");
        let home = root.path().join("home");
        let store = root.path().join("store");
        let dir = root.path().join("mnt");
        std::fs::create_dir_all(&store).unwrap();
        std::fs::create_dir_all(&dir).unwrap();
        Mount {
            home,
            store,
            dir,
            root,
            extra_args: args.iter().map(|s| s.to_string()).collect(),
            env: Vec::new(),
            pid: None,
        }
    }

    pub fn root(&self) -> &Path {
        self.root.path()
    }

    /// `songfs` with this test's SONGFS_HOME.
    pub fn songfs(&self) -> Command {
        let mut c = Command::new(songfs_bin());
        c.env("SONGFS_HOME", &self.home)
            .env("RUST_LOG", "songfs=debug,warn")
            .envs(self.env.iter().map(|(k, v)| (k, v)));
        c
    }

    pub fn mount(&mut self) {
        let mut c = self.songfs();
        c.arg("mount").arg(&self.dir).args(&self.extra_args);
        run_ok(&mut c);
        self.record_pid();
        assert!(self.pid.is_some(), "the daemon wrote no pid file");
    }

    /// `songfs mount` whatever it answers (its stderr is what the test checks); a daemon
    /// it started is stopped with the test.
    pub fn mount_output(&mut self) -> Output {
        let out = self
            .songfs()
            .arg("mount")
            .arg(&self.dir)
            .args(&self.extra_args)
            .output()
            .unwrap();
        self.record_pid();
        out
    }

    fn record_pid(&mut self) {
        self.pid = std::fs::read_to_string(self.home.join("daemon.pid"))
            .ok()
            .and_then(|s| s.trim().parse().ok());
    }

    /// `songfs unmount` (waits for the daemon to drain uploads and exit).
    /// Unmounts (which drains uploads), deletes every cached blob, mounts again: every
    /// read after this must come from the store.
    pub fn empty_cache(&mut self) {
        self.unmount();
        let cache = self.home.join("cache");
        for e in std::fs::read_dir(&cache).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                std::fs::remove_dir_all(&p).unwrap();
            } else {
                std::fs::remove_file(&p).unwrap();
            }
        }
        self.mount();
    }

    pub fn unmount(&mut self) {
        run_ok(self.songfs().arg("unmount").arg(&self.dir));
        if let Some(pid) = self.pid.take() {
            assert!(
                wait_until(Duration::from_secs(30), || !alive(pid)),
                "daemon {pid} still running after unmount"
            );
        }
    }

    /// The daemon's PID while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.pid
    }

    /// Takes charge of the daemon the pid file names (one the test started itself, e.g.
    /// with two `songfs mount` at once), so the guard stops it.
    pub fn adopt_daemon(&mut self) -> Option<u32> {
        self.record_pid();
        self.pid
    }

    /// Forgets the daemon after the test stopped it some other way.
    pub fn forget_daemon(&mut self) {
        self.pid = None;
    }

    /// kill -9 of the daemon: the mount is left dead (ENOTCONN) like after a crash.
    pub fn kill9(&mut self) {
        let pid = self.pid.take().expect("daemon running");
        // SAFETY: plain kill(2) of the daemon this test started.
        unsafe { libc::kill(pid as i32, libc::SIGKILL) };
        assert!(wait_until(Duration::from_secs(10), || !alive(pid)));
    }

    pub fn path(&self, rel: &str) -> PathBuf {
        self.dir.join(rel)
    }

    pub fn status(&self) -> serde_json::Value {
        let out = run_ok(self.songfs().args(["status", "--json"]));
        serde_json::from_slice(&out.stdout).expect("status --json is JSON")
    }

    /// A status the daemon wrote after this call began (it refreshes it every second),
    /// so a check cannot pass on numbers from before the action it checks.
    pub fn fresh_status(&self) -> serde_json::Value {
        let since = chrono::Utc::now();
        let mut last = serde_json::Value::Null;
        let fresh = wait_until(Duration::from_secs(10), || {
            last = self.status();
            last["daemon"]["updated_at"]
                .as_str()
                .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
                .is_some_and(|t| t > since)
        });
        assert!(fresh, "the daemon stopped refreshing its status: {last}");
        last
    }

    /// Waits until the daemon reports no pending uploads in a status written after
    /// this call began (the status file is refreshed every second).
    pub fn wait_uploads(&self, timeout: Duration) -> bool {
        let since = chrono::Utc::now();
        wait_until(timeout, || {
            let s = self.status();
            let fresh = s["daemon"]["updated_at"]
                .as_str()
                .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
                .is_some_and(|t| t > since);
            fresh && s["daemon"]["pending_uploads"].as_u64() == Some(0)
        })
    }

    /// Where the store keeps a blob on disk (the folder store, or the S3 server's data
    /// folder).
    pub fn store_blob(&self, hash: &str) -> PathBuf {
        self.store.join("blobs/sha256").join(&hash[..2]).join(hash)
    }

    pub fn daemon_log(&self) -> String {
        std::fs::read_to_string(self.home.join("logs/daemon.log")).unwrap_or_default()
    }
}

impl Drop for Mount {
    fn drop(&mut self) {
        let _ = Command::new("fusermount3")
            .arg("-u")
            .arg("-z")
            .arg(&self.dir)
            .output();
        if let Some(pid) = self.pid.take() {
            if alive(pid) {
                // SAFETY: kill(2) of the daemon this test started, by PID.
                unsafe { libc::kill(pid as i32, libc::SIGKILL) };
            }
        }
        if std::thread::panicking() {
            eprintln!("--- daemon log ---\n{}", self.daemon_log());
        }
    }
}

/// A live (not zombie) songfs process.
pub fn alive(pid: u32) -> bool {
    songfs::daemon::process_alive(pid)
}

pub fn wait_until(timeout: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let start = Instant::now();
    while start.elapsed() < timeout {
        if cond() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    cond()
}

/// SHA-256 hex of bytes (what the store names a blob by).
pub fn sha256_hex(data: &[u8]) -> String {
    songfs::content::hash_bytes(data).hash
}

/// Deterministic pseudo-random bytes.
pub fn bytes(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}
