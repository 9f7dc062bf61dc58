//! The folder store: a plain directory on a NAS, a USB disk or this machine.
//!
//! Every object is written to a temporary name in its final folder and renamed into
//! place, so a reader never sees half of it; put-if-absent uses `link(2)`, which fails
//! if the target exists. Blocking file I/O runs on tokio's blocking pool. The root folder
//! is never created here (`songfs init` makes it): a missing root is a disk that is not
//! attached, and writes must wait for it, not land in a new empty folder.

use std::io::Write;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;

use super::body::{Body, BodyReader};
use super::{ObjectStore, StoreError, StoreResult};

pub struct LocalStore {
    root: PathBuf,
    /// Make the root folder on the first write (a store made here, by tests). A device's
    /// store (`attached`) never does.
    make_root: bool,
}

impl LocalStore {
    /// A store in `root`, made on the first write if it is not there yet.
    pub fn new(root: impl Into<PathBuf>) -> LocalStore {
        LocalStore {
            root: root.into(),
            make_root: true,
        }
    }

    /// The store of a device: `root` must exist (it is the attached disk); a write while
    /// it is missing fails as unreachable.
    pub fn attached(root: impl Into<PathBuf>) -> LocalStore {
        LocalStore {
            root: root.into(),
            make_root: false,
        }
    }

    fn path_of(&self, key: &str) -> StoreResult<PathBuf> {
        if key.is_empty()
            || key.starts_with('/')
            || key
                .split('/')
                .any(|c| c.is_empty() || c == "." || c == "..")
        {
            return Err(StoreError::Other(format!("invalid object key {key:?}")));
        }
        Ok(self.root.join(key))
    }

    /// Writes the object `key` as `fill` writes its temp file, then renames it into place.
    async fn put_with(
        &self,
        key: &str,
        fill: impl FnOnce(&mut std::fs::File) -> std::io::Result<()> + Send + 'static,
    ) -> StoreResult<()> {
        let path = self.path_of(key)?;
        let (root, make_root) = (self.root.clone(), self.make_root);
        blocking(move || {
            let tmp = Self::write_temp(&root, make_root, &path, fill)?;
            std::fs::rename(&tmp, &path).map_err(|e| io_err(&path, e))
        })
        .await
    }

    /// Writes `data` to a fresh temp file beside `path`; returns the temp path. The
    /// folders below the root are made as needed, the root never: a missing root is a
    /// disk not attached, and a folder made in its place would take writes that belong
    /// on that disk.
    fn write_temp(
        root: &Path,
        make_root: bool,
        path: &Path,
        fill: impl FnOnce(&mut std::fs::File) -> std::io::Result<()>,
    ) -> StoreResult<PathBuf> {
        let dir = path.parent().expect("object paths have a parent");
        if make_root {
            std::fs::create_dir_all(root).map_err(|e| io_err(root, e))?;
        }
        make_dirs_below(root, dir)?;
        let tmp = dir.join(format!(
            ".tmp-{}-{}",
            std::process::id(),
            hex::encode(rand::random::<[u8; 8]>())
        ));
        let result = (|| {
            let mut f = std::fs::File::create(&tmp)?;
            fill(&mut f)?;
            f.sync_all()
        })();
        if let Err(e) = result {
            let _ = std::fs::remove_file(&tmp);
            return Err(io_err(&tmp, e));
        }
        Ok(tmp)
    }
}

/// `create_dir_all` of `dir`, but only below an existing `root`.
fn make_dirs_below(root: &Path, dir: &Path) -> StoreResult<()> {
    if !root.is_dir() {
        return Err(StoreError::Unreachable {
            detail: format!(
                "the store folder {} is not there (disk not attached?)",
                root.display()
            ),
        });
    }
    let rel = dir.strip_prefix(root).unwrap_or(Path::new(""));
    let mut at = root.to_path_buf();
    for part in rel.components() {
        at.push(part);
        match std::fs::create_dir(&at) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(io_err(&at, e)),
        }
    }
    Ok(())
}

fn io_err(path: &Path, e: std::io::Error) -> StoreError {
    StoreError::Io {
        path: path.display().to_string(),
        source: e,
    }
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> StoreResult<T> + Send + 'static,
) -> StoreResult<T> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| StoreError::Other(format!("store task failed: {e}")))?
}

#[async_trait]
impl ObjectStore for LocalStore {
    async fn put(&self, key: &str, data: Bytes) -> StoreResult<()> {
        self.put_with(key, move |f| f.write_all(&data)).await
    }

    async fn put_file(&self, key: &str, src: &Path) -> StoreResult<()> {
        let path = self.path_of(key)?;
        let src = src.to_path_buf();
        let (root, make_root) = (self.root.clone(), self.make_root);
        blocking(move || {
            let mut input = std::fs::File::open(&src).map_err(|e| io_err(&src, e))?;
            let tmp = Self::write_temp(&root, make_root, &path, |f| {
                std::io::copy(&mut input, f).map(|_| ())
            })?;
            std::fs::rename(&tmp, &path).map_err(|e| io_err(&path, e))
        })
        .await
    }

    async fn put_body(&self, key: &str, body: Arc<dyn Body>) -> Option<StoreResult<()>> {
        let copy = move |f: &mut std::fs::File| {
            std::io::copy(&mut BodyReader::new(body.as_ref()), f).map(drop)
        };
        Some(self.put_with(key, copy).await)
    }

    async fn put_if_absent(&self, key: &str, data: Bytes) -> StoreResult<bool> {
        let path = self.path_of(key)?;
        let (root, make_root) = (self.root.clone(), self.make_root);
        blocking(move || {
            let tmp = Self::write_temp(&root, make_root, &path, |f| f.write_all(&data))?;
            let linked = std::fs::hard_link(&tmp, &path);
            let _ = std::fs::remove_file(&tmp);
            match linked {
                Ok(()) => Ok(true),
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(false),
                Err(e) => Err(io_err(&path, e)),
            }
        })
        .await
    }

    async fn get(&self, key: &str) -> StoreResult<Bytes> {
        let path = self.path_of(key)?;
        let key = key.to_string();
        blocking(move || match std::fs::read(&path) {
            Ok(v) => Ok(Bytes::from(v)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Err(StoreError::NotFound { key }),
            Err(e) => Err(io_err(&path, e)),
        })
        .await
    }

    async fn get_range(&self, key: &str, range: Range<u64>) -> StoreResult<Bytes> {
        use crate::os::FileExt;
        let path = self.path_of(key)?;
        let key = key.to_string();
        blocking(move || {
            let f = match std::fs::File::open(&path) {
                Ok(f) => f,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    return Err(StoreError::NotFound { key })
                }
                Err(e) => return Err(io_err(&path, e)),
            };
            let size = f.metadata().map_err(|e| io_err(&path, e))?.len();
            let end = range.end.min(size);
            let start = range.start.min(end);
            let mut buf = vec![0u8; (end - start) as usize];
            f.read_exact_at(&mut buf, start)
                .map_err(|e| io_err(&path, e))?;
            Ok(Bytes::from(buf))
        })
        .await
    }

    async fn head(&self, key: &str) -> StoreResult<Option<u64>> {
        let path = self.path_of(key)?;
        blocking(move || match std::fs::metadata(&path) {
            Ok(m) if m.is_file() => Ok(Some(m.len())),
            Ok(_) => Ok(None),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(io_err(&path, e)),
        })
        .await
    }

    async fn list(&self, prefix: &str) -> StoreResult<Vec<String>> {
        let root = self.root.clone();
        let prefix = prefix.to_string();
        blocking(move || {
            // Walk only the folder the prefix names, not the whole store.
            let dir_part = match prefix.rfind('/') {
                Some(i) => &prefix[..i],
                None => "",
            };
            let mut out = Vec::new();
            let mut stack = vec![root.join(dir_part)];
            while let Some(dir) = stack.pop() {
                let entries = match std::fs::read_dir(&dir) {
                    Ok(e) => e,
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                    Err(e) => return Err(io_err(&dir, e)),
                };
                for entry in entries {
                    let entry = entry.map_err(|e| io_err(&dir, e))?;
                    let path = entry.path();
                    let name = entry.file_name();
                    if name.to_string_lossy().starts_with(".tmp-") {
                        continue;
                    }
                    let ft = entry.file_type().map_err(|e| io_err(&path, e))?;
                    if ft.is_dir() {
                        stack.push(path);
                    } else if let Ok(rel) = path.strip_prefix(&root) {
                        let key = rel.to_string_lossy().into_owned();
                        if key.starts_with(&prefix) {
                            out.push(key);
                        }
                    }
                }
            }
            out.sort();
            Ok(out)
        })
        .await
    }

    async fn delete(&self, key: &str) -> StoreResult<()> {
        let path = self.path_of(key)?;
        blocking(move || match std::fs::remove_file(&path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(io_err(&path, e)),
        })
        .await
    }

    fn describe(&self) -> String {
        format!("file://{}", self.root.display())
    }
}
