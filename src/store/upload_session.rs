//! Large uploads to Google Drive and Dropbox, in chunks and resumable.
//!
//! OpenDAL 0.59 sends a file to either provider in one request: Dropbox refuses those
//! above 150 MB, and one lost connection restarts a whole song. So objects larger
//! than `SESSION_ABOVE` go up here, through the providers' own upload sessions
//! (Drive's resumable uploads, Dropbox's upload sessions), one `CHUNK` at a time read
//! from the file as it is sent, so memory stays one chunk. When a chunk's answer is
//! lost, the provider is asked how much it holds (Drive: the `bytes */N` status query;
//! Dropbox: its `incorrect_offset` answer names the right offset) and the upload goes
//! on from there, never from zero. Both providers commit a session only at its end,
//! so nobody sees half a file under the name.
//!
//! Requests go through `SongfsTransport` (throttling waited out, host rewrites). The
//! access token comes from the grant's refresh token, renewed before it expires. This
//! module must never log, or put into an error, a token or a request's headers.

use std::collections::HashMap;
use std::path::Path;
use std::time::{Duration, Instant};

use bytes::Bytes;
use opendal::{Buffer, HttpTransport, Operator};
use tokio::io::{AsyncReadExt, AsyncSeekExt};

use super::opendal_http::SongfsTransport;
use crate::secrets::grant::Grant;

/// Objects above this size go up in a session (Drive suggests resumable uploads
/// above 5 MB; Dropbox's single upload stops at 150 MB).
pub const SESSION_ABOVE: u64 = 8 << 20;
/// Bytes per chunk: a multiple of Drive's 256 KiB and of Dropbox's 4 MiB.
pub const CHUNK: u64 = 8 << 20;
/// Lost answers one upload survives before it fails (and is retried next cycle).
const MAX_LOST: u32 = 5;

const DRIVE_API: &str = "https://www.googleapis.com";
const DROPBOX_CONTENT: &str = "https://content.dropboxapi.com/2/files/upload_session";
const FOLDER_MIME: &str = "application/vnd.google-apps.folder";

/// Why an upload failed, for `OpendalStore` to turn into a `StoreError`.
#[derive(Debug)]
pub enum UploadError {
    /// The provider answered with an error status; `body` is its (token-free) answer.
    Http {
        status: u16,
        body: String,
    },
    /// No answer: the network, or OpenDAL's own error (creating folders).
    Transport(opendal::Error),
    Io(std::io::Error),
}

type Result<T> = std::result::Result<T, UploadError>;

/// Where the bytes come from: a file on disk, or bytes already in memory.
pub enum Source<'a> {
    File(&'a Path),
    Bytes(&'a Bytes),
}

struct Reader<'a> {
    source: &'a Source<'a>,
    file: Option<tokio::fs::File>,
}

impl Reader<'_> {
    async fn chunk(&mut self, at: u64, len: u64) -> Result<Bytes> {
        match self.source {
            Source::Bytes(b) => Ok(b.slice(at as usize..(at + len) as usize)),
            Source::File(path) => {
                if self.file.is_none() {
                    self.file = Some(tokio::fs::File::open(path).await.map_err(UploadError::Io)?);
                }
                let f = self.file.as_mut().expect("opened above");
                f.seek(std::io::SeekFrom::Start(at))
                    .await
                    .map_err(UploadError::Io)?;
                let mut buf = vec![0u8; len as usize];
                f.read_exact(&mut buf).await.map_err(UploadError::Io)?;
                Ok(Bytes::from(buf))
            }
        }
    }
}

struct Answer {
    status: u16,
    headers: http::HeaderMap,
    body: Bytes,
}

impl Answer {
    fn ok(&self) -> bool {
        (200..300).contains(&self.status)
    }
    fn fail<T>(self) -> Result<T> {
        Err(UploadError::Http {
            status: self.status,
            body: String::from_utf8_lossy(&self.body)
                .chars()
                .take(500)
                .collect(),
        })
    }
    fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or(serde_json::Value::Null)
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Provider {
    Drive,
    Dropbox,
}

pub struct UploadSessions {
    provider: Provider,
    /// The store's folder, `/SongFactory/`.
    root: String,
    grant: Grant,
    transport: SongfsTransport,
    token: tokio::sync::Mutex<Option<(String, Instant)>>,
    /// Drive folder path (`SongFactory/blobs`) → folder id.
    folders: std::sync::Mutex<HashMap<String, String>>,
}

impl UploadSessions {
    /// `provider` is "gdrive" or "dropbox", `root` the store's folder (`/SF/`).
    pub fn new(provider: &str, root: &str, grant: Grant, transport: SongfsTransport) -> Self {
        UploadSessions {
            provider: if provider == "gdrive" {
                Provider::Drive
            } else {
                Provider::Dropbox
            },
            root: root.to_string(),
            grant,
            transport,
            token: tokio::sync::Mutex::new(None),
            folders: std::sync::Mutex::new(HashMap::new()),
        }
    }

    /// Puts `size` bytes from `source` under `key`, in a session.
    pub async fn upload(
        &self,
        op: &Operator,
        key: &str,
        source: Source<'_>,
        size: u64,
    ) -> Result<()> {
        let mut reader = Reader {
            source: &source,
            file: None,
        };
        match self.provider {
            Provider::Drive => self.drive(op, key, &mut reader, size).await,
            Provider::Dropbox => self.dropbox(op, key, &mut reader, size).await,
        }
    }

    // -- Drive ------------------------------------------------------------------

    async fn drive(
        &self,
        op: &Operator,
        key: &str,
        reader: &mut Reader<'_>,
        size: u64,
    ) -> Result<()> {
        let (dir, name) = key.rsplit_once('/').unwrap_or(("", key));
        if !dir.is_empty() {
            op.create_dir(&format!("{dir}/"))
                .await
                .map_err(UploadError::Transport)?;
        }
        let folder = format!("{}{dir}", self.root.trim_start_matches('/'));
        let parent = self.drive_folder(folder.trim_end_matches('/')).await?;
        // Replace the content of a file already there rather than add a second one.
        let (method, url, meta) = match self.drive_find(&parent, name, false).await? {
            Some(id) => (
                "PATCH",
                format!("{DRIVE_API}/upload/drive/v3/files/{id}?uploadType=resumable"),
                serde_json::json!({}),
            ),
            None => (
                "POST",
                format!("{DRIVE_API}/upload/drive/v3/files?uploadType=resumable"),
                serde_json::json!({"name": name, "parents": [parent]}),
            ),
        };
        let start = self
            .call(
                method,
                &url,
                &[
                    ("Content-Type", "application/json; charset=UTF-8".into()),
                    ("X-Upload-Content-Length", size.to_string()),
                ],
                Bytes::from(meta.to_string()),
            )
            .await?;
        if !start.ok() {
            return start.fail();
        }
        let Some(session) = start
            .headers
            .get(http::header::LOCATION)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
        else {
            return Err(UploadError::Http {
                status: start.status,
                body: "Drive started an upload without naming its session".into(),
            });
        };
        let (mut offset, mut lost) = (0u64, 0u32);
        loop {
            let end = (offset + CHUNK).min(size);
            let chunk = reader.chunk(offset, end - offset).await?;
            let range = format!("bytes {offset}-{}/{size}", end - 1);
            let answer = self
                .call("PUT", &session, &[("Content-Range", range)], chunk)
                .await;
            match answer {
                Ok(a) if a.ok() => return Ok(()),
                Ok(a) if a.status == 308 => offset = drive_received(&a.headers),
                Ok(a) if a.status < 500 => return a.fail(),
                Ok(_) | Err(UploadError::Transport(_)) if lost < MAX_LOST => {
                    lost += 1;
                    tracing::info!(
                        key,
                        offset,
                        "an upload chunk's answer was lost; asking Drive how much it holds"
                    );
                    let status = self
                        .call(
                            "PUT",
                            &session,
                            &[("Content-Range", format!("bytes */{size}"))],
                            Bytes::new(),
                        )
                        .await?;
                    match status.status {
                        200 | 201 => return Ok(()),
                        308 => offset = drive_received(&status.headers),
                        _ => return status.fail(),
                    }
                }
                Ok(a) => return a.fail(),
                Err(e) => return Err(e),
            }
        }
    }

    /// The id of the Drive folder at `path` (from the Drive's root), looked up once.
    async fn drive_folder(&self, path: &str) -> Result<String> {
        if let Some(id) = self.folders.lock().unwrap().get(path) {
            return Ok(id.clone());
        }
        let mut id = "root".to_string();
        let mut walked = String::new();
        for part in path.split('/').filter(|p| !p.is_empty()) {
            walked = if walked.is_empty() {
                part.to_string()
            } else {
                format!("{walked}/{part}")
            };
            let cached = self.folders.lock().unwrap().get(&walked).cloned();
            id = match cached {
                Some(found) => found,
                None => match self.drive_find(&id, part, true).await? {
                    Some(found) => found,
                    None => {
                        return Err(UploadError::Http {
                            status: 404,
                            body: format!("the Drive folder {walked} is not there"),
                        });
                    }
                },
            };
            self.folders
                .lock()
                .unwrap()
                .insert(walked.clone(), id.clone());
        }
        Ok(id)
    }

    /// The id of the (first) file or folder called `name` in folder `parent`.
    async fn drive_find(&self, parent: &str, name: &str, folder: bool) -> Result<Option<String>> {
        let mut q = format!(
            "name = '{}' and '{}' in parents and trashed = false",
            drive_quote(name),
            drive_quote(parent)
        );
        if folder {
            q.push_str(&format!(" and mimeType = '{FOLDER_MIME}'"));
        }
        let url = url::Url::parse_with_params(
            &format!("{DRIVE_API}/drive/v3/files"),
            [
                ("q", q.as_str()),
                ("fields", "files(id)"),
                ("pageSize", "10"),
            ],
        )
        .expect("a Drive URL");
        let a = self.call("GET", url.as_str(), &[], Bytes::new()).await?;
        if !a.ok() {
            return a.fail();
        }
        Ok(a.json()["files"][0]["id"].as_str().map(str::to_string))
    }

    // -- Dropbox ----------------------------------------------------------------

    async fn dropbox(
        &self,
        op: &Operator,
        key: &str,
        reader: &mut Reader<'_>,
        size: u64,
    ) -> Result<()> {
        let path = format!("{}{key}", self.root);
        let (mut offset, mut lost) = (0u64, 0u32);
        let first = (CHUNK).min(size);
        let start = self
            .dropbox_call(
                "start",
                serde_json::json!({"close": false}),
                reader.chunk(0, first).await?,
            )
            .await?;
        if !start.ok() {
            return start.fail();
        }
        let Some(session) = start.json()["session_id"].as_str().map(str::to_string) else {
            return Err(UploadError::Http {
                status: start.status,
                body: "Dropbox started an upload without naming its session".into(),
            });
        };
        offset += first;
        loop {
            let end = (offset + CHUNK).min(size);
            let cursor = serde_json::json!({"session_id": session, "offset": offset});
            let last = end == size;
            let (what, arg) = if last {
                (
                    "finish",
                    serde_json::json!({"cursor": cursor, "commit": {"path": path, "mode": "overwrite", "autorename": false, "mute": true}}),
                )
            } else {
                (
                    "append_v2",
                    serde_json::json!({"cursor": cursor, "close": false}),
                )
            };
            let answer = self
                .dropbox_call(what, arg, reader.chunk(offset, end - offset).await?)
                .await;
            match answer {
                Ok(a) if a.ok() && last => return Ok(()),
                Ok(a) if a.ok() => offset = end,
                Ok(a) if a.status == 409 => match find_u64(&a.json(), "correct_offset") {
                    // Dropbox holds more (or less) than was thought: go on from there.
                    Some(at) if at <= size => offset = at,
                    // A finish whose answer was lost ends its session: the file tells.
                    _ if last && lost > 0 && self.dropbox_arrived(op, key, size).await => {
                        return Ok(())
                    }
                    _ => return a.fail(),
                },
                Ok(a) if a.status < 500 => return a.fail(),
                Ok(_) | Err(UploadError::Transport(_)) if lost < MAX_LOST => {
                    lost += 1;
                    tracing::info!(
                        key,
                        offset,
                        "an upload chunk's answer was lost; sending it again"
                    );
                }
                Ok(a) => return a.fail(),
                Err(e) => return Err(e),
            }
        }
    }

    async fn dropbox_arrived(&self, op: &Operator, key: &str, size: u64) -> bool {
        matches!(op.stat(key).await, Ok(m) if m.is_file() && m.content_length() == size)
    }

    async fn dropbox_call(
        &self,
        what: &str,
        arg: serde_json::Value,
        body: Bytes,
    ) -> Result<Answer> {
        let headers = [
            ("Dropbox-API-Arg", ascii_json(&arg)),
            ("Content-Type", "application/octet-stream".into()),
        ];
        self.call("POST", &format!("{DROPBOX_CONTENT}/{what}"), &headers, body)
            .await
    }

    // -- HTTP and tokens --------------------------------------------------------

    /// One request with the access token; a 401 renews the token and tries once more.
    async fn call(
        &self,
        method: &str,
        url: &str,
        headers: &[(&str, String)],
        body: Bytes,
    ) -> Result<Answer> {
        let mut renewed = false;
        loop {
            let token = self.access_token(renewed).await?;
            let mut req = http::Request::builder()
                .method(method)
                .uri(url)
                .header(http::header::AUTHORIZATION, format!("Bearer {token}"));
            for (k, v) in headers {
                req = req.header(*k, v);
            }
            req = req.header(http::header::CONTENT_LENGTH, body.len());
            let req = req
                .body(Buffer::from(body.clone()))
                .map_err(|e| UploadError::Http {
                    status: 0,
                    body: format!("a bad request to {}: {e}", host_of(url)),
                })?;
            let a = self.send(req).await?;
            if a.status == 401 && !renewed {
                renewed = true;
                continue;
            }
            return Ok(a);
        }
    }

    async fn send(&self, req: http::Request<Buffer>) -> Result<Answer> {
        let resp = self
            .transport
            .fetch(req)
            .await
            .map_err(UploadError::Transport)?;
        let (parts, mut body) = resp.into_parts();
        let body = body
            .to_buffer()
            .await
            .map_err(UploadError::Transport)?
            .to_bytes();
        Ok(Answer {
            status: parts.status.as_u16(),
            headers: parts.headers,
            body,
        })
    }

    /// A valid access token, renewed a minute before it expires (or now, if `renew`).
    async fn access_token(&self, renew: bool) -> Result<String> {
        let mut slot = self.token.lock().await;
        if let Some((token, until)) = slot.as_ref() {
            if !renew && Instant::now() < *until {
                return Ok(token.clone());
            }
        }
        // The serializer is not Send: build the form before any await.
        let body = {
            let mut form = url::form_urlencoded::Serializer::new(String::new());
            form.append_pair("grant_type", "refresh_token")
                .append_pair("refresh_token", &self.grant.refresh_token)
                .append_pair("client_id", &self.grant.client_id);
            if let Some(secret) = &self.grant.client_secret {
                form.append_pair("client_secret", secret);
            }
            Bytes::from(form.finish())
        };
        let req = http::Request::builder()
            .method("POST")
            .uri(token_url(self.provider))
            .header(
                http::header::CONTENT_TYPE,
                "application/x-www-form-urlencoded",
            )
            .header(http::header::CONTENT_LENGTH, body.len())
            .body(Buffer::from(body))
            .expect("a token request");
        let a = self.send(req).await?;
        if !a.ok() {
            return a.fail();
        }
        let json = a.json();
        let Some(token) = json["access_token"].as_str() else {
            return Err(UploadError::Http {
                status: a.status,
                body: "the token answer has no access_token (invalid_grant)".into(),
            });
        };
        let life = json["expires_in"].as_u64().unwrap_or(3600);
        let until = Instant::now() + Duration::from_secs(life.saturating_sub(60));
        *slot = Some((token.to_string(), until));
        Ok(token.to_string())
    }
}

/// Where the provider renews access tokens (the same URLs `songfs login` uses).
fn token_url(p: Provider) -> &'static str {
    match p {
        Provider::Drive => "https://oauth2.googleapis.com/token",
        Provider::Dropbox => "https://api.dropboxapi.com/oauth2/token",
    }
}

/// Bytes Drive holds, from a 308's `Range: bytes=0-N` (none: nothing yet).
fn drive_received(headers: &http::HeaderMap) -> u64 {
    headers
        .get(http::header::RANGE)
        .and_then(|v| v.to_str().ok())
        .and_then(|r| r.rsplit_once('-'))
        .and_then(|(_, end)| end.trim().parse::<u64>().ok())
        .map_or(0, |end| end + 1)
}

/// A value in Drive's `q` language: `'` and `\` escaped.
fn drive_quote(s: &str) -> String {
    s.replace('\\', "\\\\").replace('\'', "\\'")
}

/// JSON with every non-ASCII character escaped, as Dropbox wants in a header.
fn ascii_json(v: &serde_json::Value) -> String {
    let mut out = String::new();
    for c in v.to_string().chars() {
        if c.is_ascii() {
            out.push(c);
        } else {
            let mut units = [0u16; 2];
            for u in c.encode_utf16(&mut units) {
                out.push_str(&format!("\\u{u:04x}"));
            }
        }
    }
    out
}

/// The first number called `name` anywhere in `v`.
fn find_u64(v: &serde_json::Value, name: &str) -> Option<u64> {
    match v {
        serde_json::Value::Object(m) => m
            .get(name)
            .and_then(|x| x.as_u64())
            .or_else(|| m.values().find_map(|x| find_u64(x, name))),
        serde_json::Value::Array(a) => a.iter().find_map(|x| find_u64(x, name)),
        _ => None,
    }
}

fn host_of(url: &str) -> &str {
    url.split('/').nth(2).unwrap_or(url)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn drive_ranges_dropbox_offsets_and_headers_parse() {
        let mut h = http::HeaderMap::new();
        assert_eq!(drive_received(&h), 0);
        h.insert(http::header::RANGE, "bytes=0-8388607".parse().unwrap());
        assert_eq!(drive_received(&h), 8 << 20);
        let err = serde_json::json!({"error": {".tag": "lookup_failed", "lookup_failed": {".tag": "incorrect_offset", "correct_offset": 42}}});
        assert_eq!(find_u64(&err, "correct_offset"), Some(42));
        assert_eq!(
            ascii_json(&serde_json::json!({"path": "/Música/𝄞"})),
            r#"{"path":"/M\u00fasica/\ud834\udd1e"}"#
        );
        assert_eq!(drive_quote(r"it's a\b"), r"it\'s a\\b");
    }
}
