//! The daemon's control socket, `$SONGFS_HOME/daemon.sock`: how `songfs sync`, `pin`,
//! `unpin`, `evict` and `status PATH` talk to the running mount (only it holds the live
//! namespace and cache). One JSON request line, one JSON response line, per connection.
//!
//! Paths on the wire are relative to the mount root. The socket is created mode 0600:
//! only the user who mounted can drive the daemon. Must never block the FUSE threads: each
//! request runs on the runtime, slow ones (a cycle, a download) off its worker threads.

// Without FUSE, the server half is the mount's (FUSE builds); elsewhere only the client is used.
#![cfg_attr(not(fuse), allow(dead_code, unused_imports))]

use std::io::{BufRead, BufReader, Write};
#[cfg(unix)]
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt};

use super::sync_loop::SyncRequester;
use crate::cache::Cache;
use crate::catalog::{Catalog, Node};
use crate::config::Home;
#[cfg(fuse)]
use crate::fs::xattr::file_state;

/// How long `songfs sync` waits for the daemon's cycle.
pub const SYNC_TIMEOUT: Duration = Duration::from_secs(600);

pub fn socket_path(home: &Home) -> PathBuf {
    home.root.join("daemon.sock")
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Request {
    /// Run a sync cycle now (after the running one, if any) and return its report.
    Sync,
    /// The files at or under these paths, with size and state.
    Files {
        paths: Vec<String>,
    },
    Pin {
        path: String,
    },
    Unpin {
        path: String,
    },
    Evict {
        path: String,
    },
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct FileInfo {
    pub path: String,
    pub size: u64,
    pub state: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Response {
    pub ok: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub files: Vec<FileInfo>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub report: Option<super::sync_loop::CycleReport>,
}

impl Response {
    fn err(e: impl Into<String>) -> Response {
        Response {
            ok: false,
            error: Some(e.into()),
            files: Vec::new(),
            report: None,
        }
    }
    fn files(files: Vec<FileInfo>) -> Response {
        Response {
            ok: true,
            error: None,
            files,
            report: None,
        }
    }
}

/// What the server needs.
pub struct Served {
    pub catalog: Arc<Catalog>,
    pub cache: Arc<Cache>,
    /// The store, its identity checked (an evict asks it whether it holds the blob).
    pub store: Arc<crate::store::identity::Checked>,
    pub sync: SyncRequester,
}

/// Opens the control socket (the mount's daemon: FUSE builds only); a stale socket file
/// (a crashed daemon) is replaced. Done before the pid file is written, so whoever sees
/// the daemon running can reach it (a `songfs sync` that found the pid but no socket
/// would run a second, standalone cycle beside the mount's). Needs a tokio runtime
/// entered.
#[cfg(fuse)]
pub fn bind(home: &Home) -> Option<tokio::net::UnixListener> {
    let path = socket_path(home);
    let _ = std::fs::remove_file(&path);
    match tokio::net::UnixListener::bind(&path) {
        Ok(l) => {
            use std::os::unix::fs::PermissionsExt;
            let _ = std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600));
            Some(l)
        }
        Err(e) => {
            tracing::warn!(path = %path.display(), error = %e, "cannot open the control socket: `songfs sync`/`pin` will not reach this mount");
            None
        }
    }
}

/// Answers requests on the control socket until the runtime shuts down.
#[cfg(fuse)]
pub async fn serve(listener: tokio::net::UnixListener, served: Arc<Served>) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let served = served.clone();
        tokio::spawn(async move {
            let (r, mut w) = stream.into_split();
            let mut line = String::new();
            let mut r = tokio::io::BufReader::new(r);
            if r.read_line(&mut line).await.is_err() {
                return;
            }
            let resp = match serde_json::from_str::<Request>(&line) {
                Ok(req) => handle(&served, req).await,
                Err(e) => Response::err(format!("bad request: {e}")),
            };
            let mut out = serde_json::to_vec(&resp).expect("encodes");
            out.push(b'\n');
            let _ = w.write_all(&out).await;
        });
    }
}

#[cfg(fuse)]
async fn handle(s: &Arc<Served>, req: Request) -> Response {
    match req {
        Request::Sync => {
            let s2 = s.clone();
            let r = tokio::task::spawn_blocking(move || s2.sync.sync_now(SYNC_TIMEOUT)).await;
            match r {
                Ok(Some(report)) => Response {
                    ok: true,
                    error: None,
                    files: Vec::new(),
                    report: Some(report),
                },
                _ => Response::err("the daemon's sync loop did not answer (it is stopping?)"),
            }
        }
        Request::Files { paths } => {
            let mut out = Vec::new();
            for p in &paths {
                match files_under(&s.catalog, p) {
                    Ok(v) => out.extend(v.into_iter().map(|(path, n)| FileInfo {
                        state: file_state(&n, &s.cache).to_string(),
                        size: n.size,
                        path,
                    })),
                    Err(e) => return Response::err(e),
                }
            }
            Response::files(out)
        }
        Request::Pin { path } => one_file(s, &path, Action::Pin).await,
        Request::Unpin { path } => one_file(s, &path, Action::Unpin).await,
        Request::Evict { path } => one_file(s, &path, Action::Evict).await,
    }
}

#[cfg(fuse)]
enum Action {
    Pin,
    Unpin,
    Evict,
}

#[cfg(fuse)]
async fn one_file(s: &Arc<Served>, path: &str, a: Action) -> Response {
    let n = match s.catalog.resolve(path) {
        Ok(n) if !n.is_dir() => n,
        Ok(_) => return Response::err(format!("{path} is a folder")),
        Err(_) => return Response::err(format!("{path}: no such file in the mount")),
    };
    if n.local_only {
        return Response::files(vec![info(s, path, &n)]);
    }
    let Some(hash) = n.hash.clone() else {
        return Response::files(vec![info(s, path, &n)]);
    };
    let r: Result<(), String> = async {
        match a {
            Action::Pin => {
                s.cache.pin(&hash).map_err(|e| e.to_string())?;
                if n.size > 0 {
                    let info = match s.cache.blob_info(&hash) {
                        Some(i) => i,
                        None => s
                            .cache
                            .fetch_info(
                                &hash,
                                n.size,
                                s.catalog
                                    .chunk_root(&hash)
                                    .map_err(|e| e.to_string())?
                                    .as_deref(),
                            )
                            .await
                            .map_err(|e| e.to_string())?,
                    };
                    s.cache
                        .materialize(&info)
                        .await
                        .map_err(|e| e.to_string())?;
                }
                Ok(())
            }
            Action::Unpin => s.cache.unpin(&hash).map_err(|e| e.to_string()),
            Action::Evict => {
                // The local copy may be the only one: free it only once this device's
                // store (its identity checked) holds the blob.
                if n.size > 0 {
                    use crate::store::ObjectStore;
                    s.store.verify().await.map_err(|e| format!("not evicted: {e}"))?;
                    let held = s
                        .store
                        .head(&crate::content::blob_key(&hash))
                        .await
                        .map_err(|e| format!("not evicted: {e}"))?;
                    if held != Some(n.size) {
                        return Err(format!(
                            "not evicted: the store {} does not hold its content yet, and the \
                             copy here may be the only one (it is kept; try again after the upload)",
                            s.store.describe()
                        ));
                    }
                }
                // "Free up space" also ends "always keep".
                s.cache.unpin(&hash).map_err(|e| e.to_string())?;
                s.cache.evict(&hash).map(|_| ()).map_err(|e| e.to_string())
            }
        }
    }
    .await;
    match r {
        Ok(()) => Response::files(vec![info(s, path, &n)]),
        Err(e) => Response::err(format!("{path}: {e}")),
    }
}

#[cfg(fuse)]
fn info(s: &Served, path: &str, n: &Node) -> FileInfo {
    FileInfo {
        path: path.to_string(),
        size: n.size,
        state: file_state(n, &s.cache).to_string(),
    }
}

/// The files at `path` (a file, or every file under a folder), with their paths.
#[cfg(fuse)]
fn files_under(catalog: &Catalog, path: &str) -> Result<Vec<(String, Node)>, String> {
    let n = catalog
        .resolve(path)
        .map_err(|_| format!("{}: no such file or folder in the mount", show(path)))?;
    if !n.is_dir() {
        return Ok(vec![(path.to_string(), n)]);
    }
    let mut out = Vec::new();
    let mut stack = vec![(n.ino, path.trim_end_matches('/').to_string())];
    while let Some((dir, prefix)) = stack.pop() {
        for c in catalog.children(dir).map_err(|e| e.to_string())? {
            let p = if prefix.is_empty() {
                c.name.clone()
            } else {
                format!("{prefix}/{}", c.name)
            };
            if c.is_dir() {
                stack.push((c.ino, p));
            } else {
                out.push((p, c));
            }
        }
    }
    out.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(out)
}

#[cfg(fuse)]
fn show(p: &str) -> &str {
    if p.is_empty() {
        "the mount root"
    } else {
        p
    }
}

/// Error of the client side.
#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    #[error("no songfs daemon is running for {0} (mount first: `songfs mount DIR`)")]
    NotRunning(String),
    #[error("the daemon's control socket {path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("the daemon answered something unreadable: {0}")]
    Garbled(String),
    #[error("{0}")]
    Refused(String),
}

/// Sends one request to the running daemon. `NotRunning` when there is none.
pub fn ask(
    home: &Home,
    req: &Request,
    timeout: Option<Duration>,
) -> Result<Response, ControlError> {
    #[cfg(unix)]
    return ask_socket(home, req, timeout);
    #[cfg(not(unix))]
    {
        // No daemon runs on this system yet (the control socket is a Unix socket).
        let _ = (req, timeout);
        Err(ControlError::NotRunning(home.root.display().to_string()))
    }
}

#[cfg(unix)]
fn ask_socket(
    home: &Home,
    req: &Request,
    timeout: Option<Duration>,
) -> Result<Response, ControlError> {
    let path = socket_path(home);
    let io = |source| ControlError::Io {
        path: path.display().to_string(),
        source,
    };
    let mut stream = match UnixStream::connect(&path) {
        Ok(s) => s,
        Err(e)
            if matches!(
                e.kind(),
                std::io::ErrorKind::NotFound | std::io::ErrorKind::ConnectionRefused
            ) =>
        {
            return Err(ControlError::NotRunning(home.root.display().to_string()))
        }
        Err(e) => return Err(io(e)),
    };
    stream.set_read_timeout(timeout).map_err(io)?;
    let mut line = serde_json::to_vec(req).expect("encodes");
    line.push(b'\n');
    stream.write_all(&line).map_err(io)?;
    let mut answer = String::new();
    BufReader::new(&stream).read_line(&mut answer).map_err(io)?;
    let resp: Response =
        serde_json::from_str(&answer).map_err(|e| ControlError::Garbled(e.to_string()))?;
    if !resp.ok {
        return Err(ControlError::Refused(
            resp.error.unwrap_or_else(|| "refused".into()),
        ));
    }
    Ok(resp)
}

/// A user's path (absolute, or relative to the working directory) as a path relative to
/// the mount root; an error names the path and the mount when it is outside.
pub fn relative_to_mount(user_path: &Path, mount: &Path) -> Result<String, String> {
    let abs = if user_path.is_absolute() {
        user_path.to_path_buf()
    } else {
        std::env::current_dir()
            .map_err(|e| e.to_string())?
            .join(user_path)
    };
    // Lexical normalisation: the path may not exist (yet) on this side.
    let mut parts: Vec<String> = Vec::new();
    for c in abs.components() {
        match c {
            std::path::Component::ParentDir => {
                parts.pop();
            }
            std::path::Component::Normal(s) => parts.push(s.to_string_lossy().into_owned()),
            _ => {}
        }
    }
    let mount_parts: Vec<String> = mount
        .components()
        .filter_map(|c| match c {
            std::path::Component::Normal(s) => Some(s.to_string_lossy().into_owned()),
            _ => None,
        })
        .collect();
    if parts.len() < mount_parts.len() || parts[..mount_parts.len()] != mount_parts[..] {
        return Err(format!(
            "{} is not inside the mount at {}",
            user_path.display(),
            mount.display()
        ));
    }
    Ok(parts[mount_parts.len()..].join("/"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_paths_become_mount_relative() {
        let m = Path::new("/home/u/SongFactory");
        assert_eq!(
            relative_to_mount(Path::new("/home/u/SongFactory/a/b.mp3"), m).unwrap(),
            "a/b.mp3"
        );
        assert_eq!(
            relative_to_mount(Path::new("/home/u/SongFactory/a/../c"), m).unwrap(),
            "c"
        );
        assert_eq!(relative_to_mount(m, m).unwrap(), "");
        let e = relative_to_mount(Path::new("/home/u/Music/x.mp3"), m).unwrap_err();
        assert!(e.contains("not inside the mount"), "{e}");
        assert!(relative_to_mount(Path::new("/home/u/SongFactoryX"), m).is_err());
    }
}
