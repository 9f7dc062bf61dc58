//! A real S3 server for tests: an `s3s-fs` process on 127.0.0.1, started and stopped by
//! the test that owns the `S3Server` value.
//!
//! Each server gets a free port, its own temporary data folder and one bucket. The
//! process is killed by its PID when the value is dropped, also when a test panics,
//! and by the kernel when the test process dies without unwinding (Ctrl-C, a timeout).
//! `stop()` and `restart()` simulate the store going offline and coming back (same
//! port, same data). This file never mocks S3 and never talks to anything but loopback.
//!
//! ```ignore
//! let mut server = S3Server::start();                  // bucket BUCKET, free port
//! let store = server.open_store("team").await;         // in-process Arc<dyn ObjectStore>
//! let mut cmd = common::songfs(home.path());           // or the binary:
//! server.apply_env(&mut cmd)                           //   AWS_* keys for the child
//!     .args(["init", "--store", &server.url("team"), "--s3-endpoint", &server.endpoint()]);
//! server.stop();    /* store offline */    server.restart();    /* back, same data */
//! ```

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use std::sync::Arc;

use songfs::config::StoreConfig;
use songfs::store::s3::{S3Options, S3Store};
use songfs::store::ObjectStore;

/// Access key every test server accepts.
pub const ACCESS_KEY: &str = "songfs-test-access";
/// Secret key every test server accepts.
pub const SECRET_KEY: &str = "songfs-test-secret-0123456789";
/// The bucket `S3Server::start()` creates.
pub const BUCKET: &str = "songfs-test";

/// How long a starting server may take to accept connections before the test fails.
const START_TIMEOUT: Duration = Duration::from_secs(20);

pub struct S3Server {
    child: Option<Child>,
    port: u16,
    bucket: String,
    /// Holds the data folder (`data/`) and the server's log; removed on drop.
    dir: tempfile::TempDir,
}

impl S3Server {
    /// Starts a server with the bucket `BUCKET` and waits until it accepts connections.
    pub fn start() -> S3Server {
        S3Server::start_with_bucket(BUCKET)
    }

    pub fn start_with_bucket(bucket: &str) -> S3Server {
        let dir = tempfile::Builder::new()
            .prefix("songfs-s3-")
            .tempdir()
            .expect("temp dir for s3s-fs");
        // s3s-fs keeps a bucket as a folder under its root (its CreateBucket is a mkdir).
        std::fs::create_dir_all(dir.path().join("data").join(bucket)).expect("bucket folder");
        // Another test may take the free port between our probe and the server's bind:
        // then the server exits at once and we try again with another port.
        let mut server = S3Server {
            child: None,
            port: free_port(),
            bucket: bucket.to_string(),
            dir,
        };
        let mut last_err = String::new();
        for _ in 0..5 {
            match server.spawn_and_wait() {
                Ok(()) => return server,
                Err(e) => {
                    last_err = e;
                    server.port = free_port();
                }
            }
        }
        panic!("s3s-fs did not start: {last_err}");
    }

    /// `http://127.0.0.1:PORT`
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn bucket(&self) -> &str {
        &self.bucket
    }

    pub fn access_key(&self) -> &'static str {
        ACCESS_KEY
    }

    pub fn secret_key(&self) -> &'static str {
        SECRET_KEY
    }

    /// The server's storage root (buckets are folders in it).
    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// `s3://BUCKET/prefix` (or `s3://BUCKET` for an empty prefix).
    pub fn url(&self, prefix: &str) -> String {
        if prefix.is_empty() {
            format!("s3://{}", self.bucket)
        } else {
            format!("s3://{}/{}", self.bucket, prefix.trim_matches('/'))
        }
    }

    /// A store config for this server under `prefix`.
    pub fn store_config(&self, prefix: &str) -> StoreConfig {
        StoreConfig {
            url: self.url(prefix),
            s3_endpoint: Some(self.endpoint()),
            s3_region: None,
            encrypted: false,
        }
    }

    /// Options for an in-process `S3Store` that carry this server's keys (so a test
    /// never has to set process-wide AWS_* variables).
    pub fn s3_options(&self) -> S3Options {
        S3Options {
            credentials: Some((ACCESS_KEY.into(), SECRET_KEY.into())),
            ..S3Options::default()
        }
    }

    /// An in-process store on this server under `prefix`.
    pub async fn open_store(&self, prefix: &str) -> Arc<dyn ObjectStore> {
        let store = S3Store::open(&self.store_config(prefix), self.s3_options())
            .await
            .expect("open the S3 store of the test server");
        Arc::new(store)
    }

    /// Environment for a child process (the `songfs` binary) so the AWS credential
    /// chain finds this server's keys and nothing from the machine's own ~/.aws.
    pub fn env(&self) -> Vec<(String, String)> {
        // Empty files (a missing one makes the SDK warn on stderr).
        let nowhere = self.dir.path().join("empty-aws-config");
        if !nowhere.exists() {
            std::fs::write(&nowhere, b"").expect("empty AWS config file");
        }
        vec![
            ("AWS_ACCESS_KEY_ID".into(), ACCESS_KEY.into()),
            ("AWS_SECRET_ACCESS_KEY".into(), SECRET_KEY.into()),
            ("AWS_REGION".into(), "us-east-1".into()),
            ("AWS_EC2_METADATA_DISABLED".into(), "true".into()),
            ("AWS_CONFIG_FILE".into(), nowhere.display().to_string()),
            (
                "AWS_SHARED_CREDENTIALS_FILE".into(),
                nowhere.display().to_string(),
            ),
        ]
    }

    /// Adds `env()` to a command and removes any session token of the caller's.
    pub fn apply_env<'c>(&self, cmd: &'c mut Command) -> &'c mut Command {
        cmd.env_remove("AWS_SESSION_TOKEN")
            .env_remove("AWS_PROFILE")
            .envs(self.env())
    }

    /// Kills the server (the store goes offline). Data and port are kept for `restart`.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the server again on the same port with the same data.
    pub fn restart(&mut self) {
        self.stop();
        // The old socket may linger for a moment; keep trying the same port.
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            match self.spawn_and_wait() {
                Ok(()) => return,
                Err(e) if Instant::now() > deadline => panic!("s3s-fs did not restart: {e}"),
                Err(_) => std::thread::sleep(Duration::from_millis(200)),
            }
        }
    }

    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }

    /// The server's stdout and stderr so far (for failure messages).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    fn log_path(&self) -> PathBuf {
        self.dir.path().join("s3s-fs.log")
    }

    fn spawn_and_wait(&mut self) -> Result<(), String> {
        let bin = s3s_fs_bin();
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path())
            .map_err(|e| format!("log file: {e}"))?;
        let log2 = log.try_clone().map_err(|e| format!("log file: {e}"))?;
        let mut cmd = Command::new(&bin);
        // A test binary killed outright (Ctrl-C, a CI timeout) runs no Drop: let the
        // kernel kill the server with it. Linux ties this to the *thread* that spawns
        // the server, so start and restart servers on the test's own thread.
        // SAFETY: prctl is async-signal-safe and touches no memory of the parent.
        unsafe {
            use std::os::unix::process::CommandExt;
            cmd.pre_exec(|| {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                Ok(())
            });
        }
        let child = cmd
            .arg("--host")
            .arg("127.0.0.1")
            .arg("--port")
            .arg(self.port.to_string())
            .arg("--access-key")
            .arg(ACCESS_KEY)
            .arg("--secret-key")
            .arg(SECRET_KEY)
            .arg(self.data_dir())
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log2)
            .spawn()
            .map_err(|e| format!("cannot run {}: {e}", bin.display()))?;
        self.child = Some(child);
        let addr = SocketAddr::from(([127, 0, 0, 1], self.port));
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            // A connection alone may reach another test's server that took the port
            // first (ours then exits on its failed bind): the listener must be ours.
            if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok()
                && self
                    .child
                    .as_ref()
                    .is_some_and(|c| listens_on(c.id(), self.port))
            {
                return Ok(());
            }
            let exited = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten());
            if let Some(status) = exited {
                self.child = None;
                return Err(format!(
                    "s3s-fs on port {} exited with {status}: {}",
                    self.port,
                    self.log()
                ));
            }
            if Instant::now() > deadline {
                self.stop();
                return Err(format!(
                    "s3s-fs on port {} did not accept connections within {START_TIMEOUT:?}",
                    self.port
                ));
            }
            std::thread::sleep(Duration::from_millis(25));
        }
    }
}

impl Drop for S3Server {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A port nothing listens on right now (the kernel picks it for a bind to port 0).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("bind 127.0.0.1:0")
}

/// Whether process `pid` holds the socket listening on 127.0.0.1:`port` (Linux: the
/// socket's inode from /proc/net/tcp among the process's open files).
pub fn listens_on(pid: u32, port: u16) -> bool {
    const LISTEN: &str = "0A";
    let want = format!("0100007F:{port:04X}");
    let Ok(table) = std::fs::read_to_string("/proc/net/tcp") else {
        return false;
    };
    let inodes: Vec<String> = table
        .lines()
        .skip(1)
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            (f.len() > 9 && f[1] == want && f[3] == LISTEN).then(|| format!("socket:[{}]", f[9]))
        })
        .collect();
    let Ok(fds) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
        return false;
    };
    fds.flatten().any(|fd| {
        std::fs::read_link(fd.path())
            .is_ok_and(|t| inodes.iter().any(|i| t.as_os_str() == i.as_str()))
    })
}

/// `$S3S_FS`, else `s3s-fs` on PATH, else `~/.cargo/bin/s3s-fs`.
pub fn s3s_fs_bin() -> PathBuf {
    if let Some(p) = std::env::var_os("S3S_FS") {
        return PathBuf::from(p);
    }
    if let Some(paths) = std::env::var_os("PATH") {
        for dir in std::env::split_paths(&paths) {
            let candidate = dir.join("s3s-fs");
            if is_executable(&candidate) {
                return candidate;
            }
        }
    }
    let home = std::env::var_os("HOME")
        .map(PathBuf::from)
        .unwrap_or_default();
    let candidate = home.join(".cargo/bin/s3s-fs");
    if is_executable(&candidate) {
        return candidate;
    }
    panic!(
        "s3s-fs not found: set S3S_FS or run \
         `cargo install s3s-fs --version 0.14.1 --features binary`"
    );
}

fn is_executable(p: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(p)
        .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        .unwrap_or(false)
}
