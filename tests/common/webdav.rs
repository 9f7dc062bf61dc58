//! Real WebDAV servers for tests, on 127.0.0.1, started and stopped by the test that
//! owns the `WebdavServer` value: `rclone serve webdav` (Debian's rclone) and Apache
//! httpd with mod_dav (Debian's apache2, run in the foreground from a config of its
//! own). Both ask for a user and password (basic auth).
//!
//! Each server gets a free port and a temporary folder for its data, config and log;
//! the process is killed by its PID on drop (also when a test panics) and by the
//! kernel when the test process dies (PR_SET_PDEATHSIG). `stop`/`restart` take the
//! server offline and back (same port, same data). Never talks to anything but loopback.

use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use songfs::config::StoreConfig;
use songfs::store::opendal_http::SongfsTransport;
use songfs::store::{webdav, ObjectStore};

use super::s3server::free_port;

/// The user every test server accepts.
pub const USER: &str = "alice";
/// Her password (the grep tests look for it where it must not be).
pub const PASSWORD: &str = "dav-PLANTED-pw-7319";

const START_TIMEOUT: Duration = Duration::from_secs(20);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Rclone,
    Apache,
}

pub struct WebdavServer {
    kind: Kind,
    child: Option<Child>,
    port: u16,
    dir: tempfile::TempDir,
}

impl WebdavServer {
    pub fn start(kind: Kind) -> WebdavServer {
        let dir = tempfile::Builder::new()
            .prefix("songfs-dav-")
            .tempdir()
            .expect("temp dir for a WebDAV server");
        // `readonly/` refuses writes on Apache (403), for the error-mapping tests.
        std::fs::create_dir_all(dir.path().join("data").join("readonly")).unwrap();
        let mut server = WebdavServer {
            kind,
            child: None,
            port: free_port(),
            dir,
        };
        if kind == Kind::Apache {
            server.write_apache_files();
        }
        let mut last = String::new();
        for _ in 0..5 {
            match server.spawn_and_wait() {
                Ok(()) => return server,
                Err(e) => {
                    last = e;
                    server.port = free_port();
                    if kind == Kind::Apache {
                        server.write_apache_files();
                    }
                }
            }
        }
        panic!("the {kind:?} WebDAV server did not start: {last}");
    }

    /// `webdav://alice@127.0.0.1:PORT/folder`
    pub fn url(&self, folder: &str) -> String {
        format!(
            "webdav://{USER}@127.0.0.1:{}/{}",
            self.port,
            folder.trim_matches('/')
        )
    }

    pub fn store_config(&self, folder: &str) -> StoreConfig {
        StoreConfig {
            url: self.url(folder),
            s3_endpoint: None,
            s3_region: None,
            encrypted: false,
        }
    }

    /// An in-process store on this server under `folder`, password handed in directly.
    pub fn open_store(&self, folder: &str) -> std::sync::Arc<dyn ObjectStore> {
        self.open_store_as(folder, Some(PASSWORD))
    }

    pub fn open_store_as(
        &self,
        folder: &str,
        password: Option<&str>,
    ) -> std::sync::Arc<dyn ObjectStore> {
        std::sync::Arc::new(
            webdav::open(
                &self.url(folder),
                password.map(str::to_string),
                SongfsTransport::from_env(),
            )
            .expect("open the WebDAV store of the test server"),
        )
    }

    /// The folder the server serves (objects are plain files in it).
    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn log(&self) -> String {
        let mut s = std::fs::read_to_string(self.dir.path().join("server.log")).unwrap_or_default();
        s += &std::fs::read_to_string(self.dir.path().join("error.log")).unwrap_or_default();
        s
    }

    /// SIGTERM first: httpd then stops the worker processes it forked (a SIGKILL of
    /// the parent alone left them running, serving the port, after the test); SIGKILL
    /// if it has not exited within a few seconds.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            // SAFETY: kill(2) of the server process this value started, by its PID.
            unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
            let deadline = Instant::now() + Duration::from_secs(5);
            while child.try_wait().ok().flatten().is_none() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    pub fn restart(&mut self) {
        self.stop();
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            match self.spawn_and_wait() {
                Ok(()) => return,
                Err(e) if Instant::now() > deadline => panic!("WebDAV server did not restart: {e}"),
                Err(_) => std::thread::sleep(Duration::from_millis(200)),
            }
        }
    }

    fn write_apache_files(&self) {
        let d = self.dir.path();
        let users = d.join("users");
        let out = Command::new("htpasswd")
            .args(["-cbB"])
            .arg(&users)
            .args([USER, PASSWORD])
            .output()
            .expect("htpasswd (apache2-utils) must be installed: run scripts/deps");
        assert!(out.status.success(), "htpasswd: {out:?}");
        let m = "/usr/lib/apache2/modules";
        let conf = format!(
            r#"ServerRoot {d}
Listen 127.0.0.1:{port}
ServerName 127.0.0.1
PidFile {d}/httpd.pid
ErrorLog {d}/error.log
LogLevel warn
LoadModule mpm_event_module {m}/mod_mpm_event.so
LoadModule authz_core_module {m}/mod_authz_core.so
LoadModule authn_core_module {m}/mod_authn_core.so
LoadModule authn_file_module {m}/mod_authn_file.so
LoadModule auth_basic_module {m}/mod_auth_basic.so
LoadModule authz_user_module {m}/mod_authz_user.so
LoadModule dav_module {m}/mod_dav.so
LoadModule dav_fs_module {m}/mod_dav_fs.so
DavLockDB {d}/davlock
DocumentRoot {data}
<Directory {data}>
  Dav On
  AuthType Basic
  AuthName songfs
  AuthUserFile {users}
  Require valid-user
</Directory>
<Directory {data}/readonly>
  <LimitExcept GET HEAD OPTIONS PROPFIND>
    Require all denied
  </LimitExcept>
</Directory>
"#,
            d = d.display(),
            port = self.port,
            data = self.data_dir().display(),
            users = users.display(),
        );
        std::fs::write(d.join("httpd.conf"), conf).unwrap();
    }

    fn command(&self) -> Command {
        match self.kind {
            Kind::Rclone => {
                let mut c = Command::new("rclone");
                c.args(["serve", "webdav"])
                    .arg(self.data_dir())
                    .args(["--addr", &format!("127.0.0.1:{}", self.port)])
                    .args(["--user", USER, "--pass", PASSWORD])
                    // No rclone.conf of the machine's, no notice about its absence.
                    .env("RCLONE_CONFIG", self.dir.path().join("rclone.conf"));
                c
            }
            Kind::Apache => {
                let mut c = Command::new(apache_bin());
                c.arg("-f")
                    .arg(self.dir.path().join("httpd.conf"))
                    .arg("-DFOREGROUND");
                c
            }
        }
    }

    fn spawn_and_wait(&mut self) -> Result<(), String> {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join("server.log"))
            .map_err(|e| e.to_string())?;
        let log2 = log.try_clone().map_err(|e| e.to_string())?;
        let mut cmd = self.command();
        // SAFETY: prctl is async-signal-safe and touches no memory of the parent.
        unsafe {
            use std::os::unix::process::CommandExt;
            cmd.pre_exec(|| {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                Ok(())
            });
        }
        let child = cmd
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log2)
            .spawn()
            .map_err(|e| {
                format!(
                    "cannot start the {:?} server: {e} (run scripts/deps)",
                    self.kind
                )
            })?;
        self.child = Some(child);
        let addr = SocketAddr::from(([127, 0, 0, 1], self.port));
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            // The listener must be ours, not another test's that took the port first.
            if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok()
                && self
                    .child
                    .as_ref()
                    .is_some_and(|c| super::s3server::listens_on(c.id(), self.port))
            {
                return Ok(());
            }
            if let Some(status) = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                self.child = None;
                return Err(format!("exited with {status}: {}", self.log()));
            }
            if Instant::now() > deadline {
                self.stop();
                return Err("did not accept connections in time".into());
            }
            std::thread::sleep(Duration::from_millis(25));
        }
    }
}

impl Drop for WebdavServer {
    fn drop(&mut self) {
        self.stop();
    }
}

fn apache_bin() -> &'static Path {
    Path::new("/usr/sbin/apache2")
}
