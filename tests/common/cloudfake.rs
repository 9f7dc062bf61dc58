//! The Google Drive and Dropbox fakes (tests/fakes/*.py, Python's http.server) as
//! test servers on 127.0.0.1: started per test, killed by PID on drop (and by the
//! kernel if the test process dies), reached through the transport's host rewrite
//! exactly as songfs reaches the real providers.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use songfs::secrets::grant::Grant;
use songfs::store::opendal_http::{SongfsTransport, Throttle};
use songfs::store::{cloud, ObjectStore};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Provider {
    Gdrive,
    Dropbox,
}

impl Provider {
    pub fn name(self) -> &'static str {
        match self {
            Provider::Gdrive => "gdrive",
            Provider::Dropbox => "dropbox",
        }
    }
    /// The provider hosts songfs talks to (API, content, sign-in, token).
    fn hosts(self) -> &'static [&'static str] {
        match self {
            Provider::Gdrive => &[
                "https://www.googleapis.com",
                "https://oauth2.googleapis.com",
                "https://accounts.google.com",
            ],
            Provider::Dropbox => &[
                "https://api.dropboxapi.com",
                "https://content.dropboxapi.com",
                "https://www.dropbox.com",
            ],
        }
    }
}

/// The client registration every test sign-in uses.
pub const CLIENT_ID: &str = "songfs-test-client";
pub const CLIENT_SECRET: &str = "client-PLANTED-secret-55";

pub struct CloudFake {
    pub provider: Provider,
    child: Child,
    port: u16,
}

impl CloudFake {
    pub fn start(provider: Provider) -> CloudFake {
        let script = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fakes")
            .join(format!("{}.py", provider.name()));
        let mut cmd = Command::new("python3");
        cmd.arg(&script).arg("0");
        // SAFETY: prctl is async-signal-safe and touches no memory of the parent.
        unsafe {
            use std::os::unix::process::CommandExt;
            cmd.pre_exec(|| {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                Ok(())
            });
        }
        let mut child = cmd
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("python3 must be installed: run scripts/deps");
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let port = line
            .trim()
            .strip_prefix("LISTENING ")
            .and_then(|p| p.parse().ok())
            .unwrap_or_else(|| panic!("the {provider:?} fake did not start: {line:?}"));
        CloudFake {
            provider,
            child,
            port,
        }
    }

    pub fn base(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Every provider host to this fake.
    pub fn rewrites(&self) -> Vec<(String, String)> {
        self.provider
            .hosts()
            .iter()
            .map(|h| (h.to_string(), self.base()))
            .collect()
    }

    /// `SONGFS_API_REWRITE` for a `songfs` child process.
    pub fn rewrite_env(&self) -> String {
        self.rewrites()
            .iter()
            .map(|(a, b)| format!("{a}={b}"))
            .collect::<Vec<_>>()
            .join(",")
    }

    /// A grant the fake accepts, as if `songfs login` had filed it.
    pub fn grant(&self) -> Grant {
        let token = format!("rt-test-{}", self.port);
        self.control("/_fake/grant", &format!(r#"{{"refresh_token":"{token}"}}"#));
        Grant {
            refresh_token: token,
            client_id: CLIENT_ID.into(),
            client_secret: Some(CLIENT_SECRET.into()),
            signed_in: None,
        }
    }

    pub fn open_store(&self, folder: &str) -> std::sync::Arc<dyn ObjectStore> {
        self.open_store_with(folder, Throttle::default())
    }

    pub fn open_store_with(
        &self,
        folder: &str,
        throttle: Throttle,
    ) -> std::sync::Arc<dyn ObjectStore> {
        let url = format!("{}://{folder}", self.provider.name());
        let transport = SongfsTransport::new(self.rewrites(), throttle);
        std::sync::Arc::new(
            cloud::open(&url, Some(self.grant()), transport).expect("open the cloud store"),
        )
    }

    /// A control call (POST path with a JSON body); returns the answer's body.
    pub fn control(&self, path: &str, body: &str) -> String {
        let mut s = TcpStream::connect(("127.0.0.1", self.port)).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        write!(
            s,
            "POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        )
        .unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).unwrap();
        let (head, rest) = out.split_once("\r\n\r\n").unwrap_or((&out, ""));
        assert!(head.starts_with("HTTP/1.1 200"), "{path}: {head}");
        rest.to_string()
    }

    /// The fake's request log: (method, path, Range header, status, bytes sent).
    pub fn requests(&self) -> Vec<serde_json::Value> {
        serde_json::from_str(&self.control("/_fake/log", "")).unwrap()
    }
}

impl Drop for CloudFake {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl CloudFake {
    /// A store holding the grant filed before the provider revoked it.
    pub fn open_store_revoked(&self, folder: &str) -> std::sync::Arc<dyn ObjectStore> {
        let url = format!("{}://{folder}", self.provider.name());
        let grant = Grant {
            refresh_token: format!("rt-test-{}", self.port),
            client_id: CLIENT_ID.into(),
            client_secret: Some(CLIENT_SECRET.into()),
            signed_in: None,
        };
        let transport = SongfsTransport::new(self.rewrites(), Throttle::default());
        std::sync::Arc::new(cloud::open(&url, Some(grant), transport).unwrap())
    }
}
