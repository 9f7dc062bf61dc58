//! One `ObjectStore` over an Apache OpenDAL `Operator`: the code WebDAV, Google Drive
//! and Dropbox share (the service files only build the operator and name the store).
//!
//! None of these services has a conditional create, and songfs needs none:
//! `put_if_absent` is "stat, then write if absent". That is correct for every caller
//! without compare-and-swap, because songfs only ever puts-if-absent objects that one
//! writer owns (a device's own change logs and snapshots) or whose every writer
//! writes the same bytes (content-addressed blobs): two writers racing both write, and
//! what is left is one of two equal objects. The one exception, the store's format
//! record that two devices' first `init` may race to write with different store ids,
//! is read back after a pause (`format::settle_created`), so both adopt the survivor.
//! On Drive, where one folder may hold two files of the same name, `list`
//! reports such a name once.
//!
//! This module must never compare-and-swap, never return a half-written object to a
//! reader (services without atomic PUT write a temporary name and rename it), and
//! never put a credential into an error message.

use std::ops::Range;
use std::path::Path;

use async_trait::async_trait;
use bytes::Bytes;
use opendal::{ErrorKind, Operator};
use tokio::io::AsyncReadExt;

use super::upload_session::{self, Source, UploadError, UploadSessions};
use super::{ObjectStore, StoreError, StoreResult};

/// Where temporary uploads go before their rename (never listed as keys).
const TMP_PREFIX: &str = ".songfs-tmp/";
/// Bytes of a local file sent per write call of a chunked upload.
const UPLOAD_CHUNK: usize = 8 * 1024 * 1024;

/// What differs between the services behind the one adapter.
#[derive(Debug, Clone)]
pub struct ServiceTraits {
    /// Short name for messages: "WebDAV", "Google Drive", "Dropbox".
    pub name: &'static str,
    /// A PUT may be seen half-written by a reader (plain WebDAV servers): write a
    /// temporary name, then rename.
    pub put_via_rename: bool,
    /// The service lists a folder tree in one recursive listing with full paths
    /// (otherwise `list` walks the folders one listing at a time).
    pub recursive_list: bool,
    /// What the user does when the service refuses the credentials.
    pub denied_hint: String,
}

pub struct OpendalStore {
    op: Operator,
    url: String,
    traits: ServiceTraits,
    /// Large objects go up in the provider's upload sessions (Drive, Dropbox).
    sessions: Option<UploadSessions>,
}

impl OpendalStore {
    pub fn new(op: Operator, url: String, traits: ServiceTraits) -> OpendalStore {
        OpendalStore {
            op,
            url,
            traits,
            sessions: None,
        }
    }

    pub fn with_upload_sessions(mut self, sessions: UploadSessions) -> OpendalStore {
        self.sessions = Some(sessions);
        self
    }

    /// Sends `source` through an upload session if it is large and the service has them.
    async fn put_in_session(
        &self,
        key: &str,
        source: Source<'_>,
        size: u64,
    ) -> Option<StoreResult<()>> {
        let sessions = self
            .sessions
            .as_ref()
            .filter(|_| size > upload_session::SESSION_ABOVE)?;
        Some(
            sessions
                .upload(&self.op, key, source, size)
                .await
                .map_err(|e| self.upload_error(key, e)),
        )
    }

    fn upload_error(&self, key: &str, err: UploadError) -> StoreError {
        match err {
            UploadError::Transport(e) => self.error(key, e),
            UploadError::Io(e) => StoreError::Io {
                path: key.to_string(),
                source: e,
            },
            UploadError::Http { status, body } => self.failure(
                key,
                Failure {
                    kind: if status == 404 {
                        ErrorKind::NotFound
                    } else {
                        ErrorKind::Unexpected
                    },
                    status: Some(status),
                    detail: one_line(&body),
                    text: body,
                    unreachable: None,
                },
            ),
        }
    }

    fn check_key(key: &str) -> StoreResult<()> {
        if key.is_empty()
            || key.starts_with('/')
            || key.ends_with('/')
            || key.starts_with(TMP_PREFIX)
            || key
                .split('/')
                .any(|c| c.is_empty() || c == "." || c == "..")
        {
            return Err(StoreError::Other(format!("invalid object key {key:?}")));
        }
        Ok(())
    }

    /// Turns an OpenDAL error into one that says what failed and what to do.
    fn error(&self, key: &str, err: opendal::Error) -> StoreError {
        let detail = one_line(err.message());
        let status = http_status(&err);
        let unreachable = (status.is_none()
            && (err.is_temporary() || detail.contains("send http request")))
        .then(|| root_cause(&err));
        self.failure(
            key,
            Failure {
                kind: err.kind(),
                status,
                text: format!("{err:?}"),
                detail,
                unreachable,
            },
        )
    }

    fn failure(&self, key: &str, f: Failure) -> StoreError {
        let Failure {
            kind,
            status,
            text,
            detail,
            unreachable,
        } = f;
        let name = self.traits.name;
        match (kind, status) {
            (ErrorKind::NotFound, _) => StoreError::NotFound {
                key: key.to_string(),
            },
            _ if signed_out(&text) => StoreError::Denied {
                detail: format!("{name} did not accept songfs's sign-in: {}", self.traits.denied_hint),
            },
            (_, Some(401)) => StoreError::Denied {
                detail: format!("{name} at {} refused the sign-in (401): {}", self.url, self.traits.denied_hint),
            },
            // Before the 403 arm: Drive says "quota exceeded" with a 403.
            _ if storage_full(status, &text) => StoreError::Other(format!(
                "{name} at {} is full ({}): free some space or raise the quota; nothing was lost, songfs retries later",
                self.url,
                status.map_or("no space left".to_string(), |s| s.to_string()),
            )),
            (ErrorKind::PermissionDenied, _) | (_, Some(403)) => StoreError::Denied {
                detail: format!(
                    "{name} at {} does not let this account write there (403): check the folder's permissions or sign in with another account",
                    self.url
                ),
            },
            (ErrorKind::RateLimited, _) | (_, Some(429)) => StoreError::Unreachable {
                detail: format!("{name} is throttling requests for {key} (429), songfs retries later"),
            },
            (ErrorKind::ConfigInvalid, _) => StoreError::BadUrl {
                url: self.url.clone(),
                why: detail,
            },
            _ if unreachable.is_some() => StoreError::Unreachable {
                detail: format!("{name} at {}: {}", self.url, unreachable.unwrap_or_default()),
            },
            (_, Some(s)) if s >= 500 => StoreError::Unreachable {
                detail: format!("{name} at {} answered {s} for {key}", self.url),
            },
            _ => StoreError::Other(format!("{name}: {key}: {detail}")),
        }
    }

    async fn write_whole(&self, key: &str, data: Bytes) -> StoreResult<()> {
        if !self.traits.put_via_rename {
            self.op
                .write(key, data)
                .await
                .map_err(|e| self.error(key, e))?;
            return Ok(());
        }
        // Two writers of one key (two devices uploading the same blob) race on the
        // server: both create the same folders and move onto the same name, and
        // servers refuse the loser (Apache 403/409 on a folder being created,
        // rclone 423 Locked). A short, bounded retry with jitter lets it through.
        let mut attempt = 0;
        loop {
            let tmp = temp_key(key);
            let result = match self.op.write(&tmp, data.clone()).await {
                Ok(_) => match self.op.rename(&tmp, key).await {
                    Ok(()) => Ok(()),
                    Err(e) => {
                        let _ = self.op.delete(&tmp).await;
                        Err(e)
                    }
                },
                Err(e) => Err(e),
            };
            match result {
                Ok(()) => return Ok(()),
                Err(e) if attempt < RACE_RETRIES && lost_a_race(&e) => {
                    attempt += 1;
                    let ms = 50 * attempt as u64 + rand::random::<u64>() % 100;
                    tokio::time::sleep(std::time::Duration::from_millis(ms)).await;
                }
                Err(e) => return Err(self.error(key, e)),
            }
        }
    }

    /// The files under `dir`, one listing per folder, named from `dir` down (for
    /// services whose recursive listing loses the folder part of names). Folders that
    /// cannot hold a key with `prefix` are not entered.
    async fn walk(&self, dir: &str, prefix: &str) -> StoreResult<Vec<String>> {
        let mut files = Vec::new();
        let mut pending = vec![dir.to_string()];
        while let Some(folder) = pending.pop() {
            let entries = match self.op.list(&folder).await {
                Ok(entries) => entries,
                Err(e) if e.kind() == ErrorKind::NotFound => continue,
                Err(e) => return Err(self.error(prefix, e)),
            };
            for e in entries {
                let name = e.name().trim_end_matches('/');
                if name.is_empty() {
                    continue; // the folder itself
                }
                let path = format!("{folder}{name}");
                if e.metadata().is_dir() {
                    let sub = format!("{path}/");
                    if sub.starts_with(prefix) || prefix.starts_with(&sub) {
                        pending.push(sub);
                    }
                } else {
                    files.push(path);
                }
            }
        }
        Ok(files)
    }

    async fn finish_rename(&self, tmp: &str, key: &str) -> StoreResult<()> {
        if let Err(e) = self.op.rename(tmp, key).await {
            let _ = self.op.delete(tmp).await;
            return Err(self.error(key, e));
        }
        Ok(())
    }
}

/// A read error that can mean "the range is past the end" (416, or OpenDAL's own
/// short-read check), not a missing object, throttling or an unreachable server.
fn may_be_past_the_end(e: &opendal::Error) -> bool {
    e.kind() != ErrorKind::NotFound
        && e.kind() != ErrorKind::RateLimited
        && !e.is_temporary()
        && !matches!(http_status(e), Some(401 | 403 | 429 | 500..=599))
}

/// Tries of a write that lost a race with another writer of the same key.
const RACE_RETRIES: u32 = 4;

/// The answers a WebDAV server gives the loser of two concurrent writes of one name.
fn lost_a_race(err: &opendal::Error) -> bool {
    matches!(http_status(err), Some(403 | 405 | 409 | 412 | 423))
        || err.message().contains("Locked")
}

/// A unique temporary name for an upload of `key`.
fn temp_key(key: &str) -> String {
    format!(
        "{TMP_PREFIX}{}-{}",
        hex::encode(rand::random::<[u8; 8]>()),
        key.replace('/', "_")
    )
}

/// The HTTP status in an OpenDAL error's context, when a server answered. OpenDAL
/// keeps it only in the formatted `response` context, hence the text search.
fn http_status(err: &opendal::Error) -> Option<u16> {
    let text = format!("{err:?}");
    let at = text.find("status: ")? + "status: ".len();
    text[at..].get(..3)?.parse().ok()
}

/// What failed, as much as is known: the kind, the HTTP status, everything said
/// (searched for the providers' reason codes), and for no answer at all, why.
struct Failure {
    kind: ErrorKind,
    status: Option<u16>,
    text: String,
    detail: String,
    unreachable: Option<String>,
}

/// The account's storage is used up: WebDAV's 507 Insufficient Storage, Drive's 403
/// `storageQuotaExceeded`, Dropbox's 409 `insufficient_space`.
fn storage_full(status: Option<u16>, text: &str) -> bool {
    // OpenDAL keeps only Drive's message, not its reason code.
    status == Some(507)
        || text.contains("storage quota has been exceeded")
        || text.contains("storageQuotaExceeded")
        || text.contains("insufficient_space")
}

/// The provider refused to renew the access token (the refresh token was revoked or
/// expired): Google answers `invalid_grant`; OpenDAL's Dropbox client fails to read
/// the token answer, which then has no `access_token`.
fn signed_out(text: &str) -> bool {
    text.contains("invalid_grant")
        || text.contains("RefreshAccessToken")
        || text.contains("missing field `access_token`")
}

fn one_line(s: &str) -> String {
    let s = s.split_whitespace().collect::<Vec<_>>().join(" ");
    match s.char_indices().nth(200) {
        Some((cut, _)) => format!("{}…", &s[..cut]),
        None => s,
    }
}

fn root_cause(err: &(dyn std::error::Error + 'static)) -> String {
    let mut cur = err;
    while let Some(next) = cur.source() {
        cur = next;
    }
    one_line(&cur.to_string())
}

#[async_trait]
impl ObjectStore for OpendalStore {
    async fn put(&self, key: &str, data: Bytes) -> StoreResult<()> {
        Self::check_key(key)?;
        let size = data.len() as u64;
        if let Some(done) = self.put_in_session(key, Source::Bytes(&data), size).await {
            return done;
        }
        self.write_whole(key, data).await
    }

    async fn put_file(&self, key: &str, path: &Path) -> StoreResult<()> {
        Self::check_key(key)?;
        let io = |e| StoreError::Io {
            path: path.display().to_string(),
            source: e,
        };
        let size = tokio::fs::metadata(path).await.map_err(io)?.len();
        if let Some(done) = self.put_in_session(key, Source::File(path), size).await {
            return done;
        }
        if !self.op.info().capability().write_can_multi {
            // The service takes an upload in one request (OpenDAL's WebDAV, Drive and
            // Dropbox writers): send the file whole.
            let data = tokio::fs::read(path).await.map_err(io)?;
            return self.write_whole(key, Bytes::from(data)).await;
        }
        let mut file = tokio::fs::File::open(path).await.map_err(io)?;
        let target = if self.traits.put_via_rename {
            temp_key(key)
        } else {
            key.to_string()
        };
        // Chunked: services with upload sessions (Drive resumable uploads, Dropbox
        // upload sessions) send each chunk as it comes; the others gather the file.
        let mut writer = self
            .op
            .writer_with(&target)
            .chunk(UPLOAD_CHUNK)
            .await
            .map_err(|e| self.error(key, e))?;
        let mut buf = vec![0u8; UPLOAD_CHUNK];
        loop {
            let n = file.read(&mut buf).await.map_err(io)?;
            if n == 0 {
                break;
            }
            if let Err(e) = writer.write(Bytes::copy_from_slice(&buf[..n])).await {
                let _ = writer.abort().await;
                return Err(self.error(key, e));
            }
        }
        writer.close().await.map_err(|e| self.error(key, e))?;
        if self.traits.put_via_rename {
            self.finish_rename(&target, key).await?;
        }
        Ok(())
    }

    async fn put_if_absent(&self, key: &str, data: Bytes) -> StoreResult<bool> {
        // See the module header: stat-then-write is enough for every caller.
        if self.head(key).await?.is_some() {
            return Ok(false);
        }
        self.put(key, data).await?;
        Ok(true)
    }

    fn creates_atomically(&self) -> bool {
        false
    }

    async fn get(&self, key: &str) -> StoreResult<Bytes> {
        Self::check_key(key)?;
        match self.op.read(key).await {
            Ok(buf) => Ok(buf.to_bytes()),
            // Drive answers a read of an empty file with 416 (its range 0- is past
            // the end): an empty object, if it exists.
            Err(e) if may_be_past_the_end(&e) && self.head(key).await? == Some(0) => {
                Ok(Bytes::new())
            }
            Err(e) => Err(self.error(key, e)),
        }
    }

    async fn get_range(&self, key: &str, range: Range<u64>) -> StoreResult<Bytes> {
        Self::check_key(key)?;
        if range.start >= range.end {
            // Nothing to read, but a missing object is still an error.
            return match self.head(key).await? {
                Some(_) => Ok(Bytes::new()),
                None => Err(StoreError::NotFound { key: key.into() }),
            };
        }
        match self.op.read_with(key).range(range.clone()).await {
            Ok(buf) => {
                let mut bytes = buf.to_bytes();
                // A server that ignores Range sends the whole object: cut it here.
                let want = (range.end - range.start) as usize;
                if bytes.len() > want {
                    bytes.truncate(want);
                }
                Ok(bytes)
            }
            Err(e) if may_be_past_the_end(&e) => {
                // A range past the end (416), or one crossing it (OpenDAL then reports
                // "too little data"): cut it at the object's size and read again.
                let Some(size) = self.head(key).await? else {
                    return Err(StoreError::NotFound { key: key.into() });
                };
                let end = range.end.min(size);
                if range.start >= end {
                    return Ok(Bytes::new());
                }
                if end == range.end {
                    return Err(self.error(key, e));
                }
                let buf = self
                    .op
                    .read_with(key)
                    .range(range.start..end)
                    .await
                    .map_err(|e| self.error(key, e))?;
                Ok(buf.to_bytes())
            }
            Err(e) => Err(self.error(key, e)),
        }
    }

    async fn head(&self, key: &str) -> StoreResult<Option<u64>> {
        Self::check_key(key)?;
        match self.op.stat(key).await {
            Ok(meta) if meta.is_file() => Ok(Some(meta.content_length())),
            Ok(_) => Ok(None),
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(None),
            Err(e) => Err(self.error(key, e)),
        }
    }

    async fn list(&self, prefix: &str) -> StoreResult<Vec<String>> {
        // List the folder the prefix names (recursively), then match as a string prefix.
        let dir = match prefix.rfind('/') {
            Some(i) => &prefix[..=i],
            None => "",
        };
        let listed = if self.traits.recursive_list {
            match self.op.list_with(dir).recursive(true).await {
                Ok(entries) => entries
                    .into_iter()
                    .filter(|e| e.metadata().is_file())
                    .map(|e| e.path().trim_start_matches('/').to_string())
                    .collect(),
                Err(e) if e.kind() == ErrorKind::NotFound => return Ok(Vec::new()),
                Err(e) => return Err(self.error(prefix, e)),
            }
        } else {
            self.walk(dir, prefix).await?
        };
        let mut keys: Vec<String> = listed
            .into_iter()
            .filter(|k: &String| k.starts_with(prefix) && !k.starts_with(TMP_PREFIX))
            .collect();
        keys.sort();
        // Drive may hold two files of one name (two devices uploaded the same blob).
        keys.dedup();
        Ok(keys)
    }

    async fn delete(&self, key: &str) -> StoreResult<()> {
        Self::check_key(key)?;
        match self.op.delete(key).await {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(()),
            Err(e) => Err(self.error(key, e)),
        }
    }

    fn describe(&self) -> String {
        self.url.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_that_escape_the_root_or_hit_temporaries_are_refused() {
        for bad in ["", "/a", "a/", "a//b", "a/../b", ".songfs-tmp/x"] {
            assert!(OpendalStore::check_key(bad).is_err(), "{bad:?}");
        }
        OpendalStore::check_key("blobs/sha256/ab/abcd").unwrap();
    }

    #[test]
    fn temporary_names_are_unique_and_flat() {
        let a = temp_key("logs/dev/1.json");
        assert!(a.starts_with(TMP_PREFIX) && !a[TMP_PREFIX.len()..].contains('/'));
        assert_ne!(a, temp_key("logs/dev/1.json"));
    }
}
