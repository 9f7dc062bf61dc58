//! The S3 store: a bucket + prefix on AWS or any S3-compatible server (MinIO, a NAS,
//! s3s-fs in tests), through aws-sdk-s3.
//!
//! Credentials come from the standard AWS chain (AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY,
//! ~/.aws, ...) unless `S3Options::credentials` names them. With an endpoint override
//! requests use path-style addressing (`http://host/bucket/key`), which every
//! S3-compatible server understands.
//!
//! Every request is bounded: a connect timeout, a time-to-first-byte timeout (scaled by
//! the body size for uploads), stalled-stream protection for bodies, and a few quick
//! retries. An unreachable store fails in seconds; this module must never wait forever
//! and never HEADs "directory" keys (s3s-fs answers such a HEAD with 500).
//!
//! `put_if_absent` sends `If-None-Match: *`. A server that answers that it does not
//! implement conditional writes gets HEAD-then-PUT instead, which races: two writers
//! that HEAD at the same moment both write. Our callers write immutable,
//! content-addressed objects or per-device keys there, so the race costs a duplicate
//! write, never a lost one. A server that silently ignores the header cannot be told
//! apart from one that honours it; with such a server a second writer overwrites.

use std::ops::Range;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use aws_config::meta::region::RegionProviderChain;
use aws_sdk_s3::config::retry::RetryConfig;
use aws_sdk_s3::config::timeout::TimeoutConfig;
use aws_sdk_s3::config::{
    BehaviorVersion, Credentials, Region, RequestChecksumCalculation, ResponseChecksumValidation,
};
use aws_sdk_s3::error::ProvideErrorMetadata;
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::Client;
use bytes::Bytes;

use super::body::Body;
use super::{ObjectStore, StoreError, StoreResult};
use crate::config::StoreConfig;
use errors::{is_not_implemented, is_precondition_failed, BROKE_OFF};
use upload::Upload;

mod errors;
mod upload;

/// S3's smallest allowed multipart part (all parts but the last).
pub const MIN_PART_SIZE: u64 = 5 * 1024 * 1024;
/// S3's largest number of parts in one upload.
const MAX_PARTS: u64 = 10_000;
/// Slowest upload speed we still wait for (about a 1 Mbit/s uplink): an upload's
/// time-to-response bound grows by its size at this rate.
const MIN_UPLOAD_BYTES_PER_SEC: u64 = 128 * 1024;
/// Largest body buffer sized up front from a Content-Length (bigger ones grow as read).
const MAX_PRESIZED_BODY: i64 = 8 << 20;

/// Knobs of the S3 store. `Default` is what `songfs` uses.
#[derive(Debug, Clone)]
pub struct S3Options {
    /// Access key and secret to use instead of the AWS credential chain.
    pub credentials: Option<(String, String)>,
    /// Time to establish a TCP (and TLS) connection.
    pub connect_timeout: Duration,
    /// Time from sending a request (without body) to the first byte of the response.
    pub first_byte_timeout: Duration,
    /// Tries per request, the first included.
    pub max_attempts: u32,
    /// Files larger than this go up as multipart uploads.
    pub multipart_threshold: u64,
    /// Size of each multipart part (at least `MIN_PART_SIZE`).
    pub part_size: u64,
    /// Parts uploaded at the same time.
    pub part_concurrency: usize,
}

impl Default for S3Options {
    fn default() -> S3Options {
        S3Options {
            credentials: None,
            connect_timeout: Duration::from_secs(3),
            first_byte_timeout: Duration::from_secs(10),
            max_attempts: 3,
            multipart_threshold: 16 * 1024 * 1024,
            part_size: 16 * 1024 * 1024,
            part_concurrency: 4,
        }
    }
}

pub struct S3Store {
    client: Client,
    bucket: String,
    /// Without leading or trailing '/'; empty for the bucket root.
    prefix: String,
    endpoint: Option<String>,
    region: String,
    opts: S3Options,
    /// Set once the server said it does not implement `If-None-Match` on PUT.
    no_conditional_put: AtomicBool,
}

/// `s3://bucket/some/prefix/` → ("bucket", "some/prefix").
pub fn parse_url(url: &str) -> StoreResult<(String, String)> {
    let bad = |why: &str| StoreError::BadUrl {
        url: url.to_string(),
        why: why.to_string(),
    };
    let rest = url
        .strip_prefix("s3://")
        .ok_or_else(|| bad("an S3 store URL starts with s3://, e.g. s3://my-bucket/songfs"))?;
    let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
    if bucket.is_empty() {
        return Err(bad(
            "the bucket name is missing, e.g. s3://my-bucket/songfs",
        ));
    }
    if let Some(c) = bucket
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_')))
    {
        return Err(bad(&format!(
            "{c:?} cannot appear in a bucket name (letters, digits, '-', '.', '_')"
        )));
    }
    let prefix = prefix.trim_matches('/');
    if prefix.split('/').any(|c| c == "." || c == "..") || prefix.contains("//") {
        return Err(bad(
            "the prefix must not contain '.', '..' or empty folders",
        ));
    }
    Ok((bucket.to_string(), prefix.to_string()))
}

impl S3Store {
    /// Builds a client for the store `cfg` names. Does not contact the store.
    pub async fn open(cfg: &StoreConfig, opts: S3Options) -> StoreResult<S3Store> {
        let (bucket, prefix) = parse_url(&cfg.url)?;
        if let Some(ep) = &cfg.s3_endpoint {
            if !(ep.starts_with("http://") || ep.starts_with("https://")) {
                return Err(StoreError::BadUrl {
                    url: ep.clone(),
                    why: "the S3 endpoint must be an http:// or https:// URL, e.g. http://nas.local:9000".into(),
                });
            }
        }
        // The region chain without the EC2 metadata lookup, which stalls off EC2.
        let region = RegionProviderChain::first_try(cfg.s3_region.clone().map(Region::new))
            .or_else(aws_config::environment::EnvironmentVariableRegionProvider::new())
            .or_else(aws_config::profile::ProfileFileRegionProvider::new())
            .or_else(Region::from_static("us-east-1"))
            .region()
            .await
            .unwrap_or_else(|| Region::from_static("us-east-1"));
        let mut loader = aws_config::defaults(BehaviorVersion::latest()).region(region.clone());
        if let Some((key, secret)) = &opts.credentials {
            loader =
                loader.credentials_provider(Credentials::new(key, secret, None, None, "songfs"));
        }
        let shared = loader.load().await;
        let mut builder = aws_sdk_s3::config::Builder::from(&shared)
            .timeout_config(
                TimeoutConfig::builder()
                    .connect_timeout(opts.connect_timeout)
                    .read_timeout(opts.first_byte_timeout)
                    .build(),
            )
            .retry_config(
                RetryConfig::standard()
                    .with_max_attempts(opts.max_attempts.max(1))
                    .with_initial_backoff(Duration::from_millis(100))
                    .with_max_backoff(Duration::from_secs(1)),
            )
            // Many S3-compatible servers reject the newer default checksum trailers;
            // content integrity is checked above this layer by SHA-256 anyway.
            .request_checksum_calculation(RequestChecksumCalculation::WhenRequired)
            .response_checksum_validation(ResponseChecksumValidation::WhenRequired);
        if let Some(ep) = &cfg.s3_endpoint {
            builder = builder.endpoint_url(ep).force_path_style(true);
        }
        let mut opts = opts;
        opts.part_size = opts.part_size.max(MIN_PART_SIZE);
        opts.part_concurrency = opts.part_concurrency.max(1);
        Ok(S3Store {
            client: Client::from_conf(builder.build()),
            bucket,
            prefix,
            endpoint: cfg.s3_endpoint.clone(),
            region: region.to_string(),
            opts,
            no_conditional_put: AtomicBool::new(false),
        })
    }

    fn full_key(&self, key: &str) -> StoreResult<String> {
        if key.is_empty() || key.starts_with('/') || key.ends_with('/') {
            return Err(StoreError::Other(format!("invalid object key {key:?}")));
        }
        Ok(if self.prefix.is_empty() {
            key.to_string()
        } else {
            format!("{}/{key}", self.prefix)
        })
    }

    fn where_(&self) -> String {
        match &self.endpoint {
            Some(ep) => ep.clone(),
            None => format!("AWS S3 ({})", self.region),
        }
    }

    /// A time-to-response bound for a request carrying `len` body bytes.
    fn upload_timeouts(&self, len: u64) -> aws_sdk_s3::config::Builder {
        let transfer = Duration::from_secs(len / MIN_UPLOAD_BYTES_PER_SEC);
        aws_sdk_s3::config::Builder::default().timeout_config(
            TimeoutConfig::builder()
                .connect_timeout(self.opts.connect_timeout)
                .read_timeout(self.opts.first_byte_timeout + transfer)
                .build(),
        )
    }

    /// Copies the body into one buffer frame by frame as it arrives. `collect` kept every
    /// frame (slices of hyper's read buffer) until the end and then copied them all into a
    /// new buffer: two copies of each body alive at once, and hyper's blocks could not be
    /// reused. `expected` (the Content-Length) only sizes the buffer, capped, so a
    /// server's claim cannot make us allocate.
    async fn collect_body(
        &self,
        key: &str,
        mut body: ByteStream,
        expected: Option<i64>,
    ) -> StoreResult<Bytes> {
        let cap = expected.unwrap_or(0).clamp(0, MAX_PRESIZED_BODY) as usize;
        let mut kept = bytes::BytesMut::with_capacity(cap);
        while let Some(piece) = body.next().await {
            kept.extend_from_slice(&piece.map_err(|e| self.broke_off(key, &e))?);
        }
        Ok(kept.freeze())
    }

    /// One ranged GET. A server that ignores `Range` sends the whole object: only the
    /// range is kept, read from the stream as it passes (never the whole object in memory).
    async fn get_range_once(&self, key: &str, range: Range<u64>) -> StoreResult<Bytes> {
        let full = self.full_key(key)?;
        let sent = self
            .client
            .get_object()
            .bucket(&self.bucket)
            .key(full)
            .range(format!("bytes={}-{}", range.start, range.end - 1))
            .send()
            .await;
        let out = match sent {
            Ok(out) => out,
            // 416: the object ends before the range starts.
            Err(e)
                if e.code() == Some("InvalidRange")
                    || e.raw_response().map(|r| r.status().as_u16()) == Some(416) =>
            {
                return Ok(Bytes::new())
            }
            Err(e) => return Err(self.error(key, e)),
        };
        let want = (range.end - range.start) as usize;
        if out.content_range().is_some() {
            let body = self.collect_body(key, out.body, out.content_length).await?;
            return Ok(if body.len() > want {
                body.slice(..want)
            } else {
                body
            });
        }
        let mut body = out.body;
        let mut at = 0u64;
        let mut kept = bytes::BytesMut::with_capacity(want);
        while kept.len() < want {
            let Some(piece) = body.next().await else {
                break;
            };
            let piece = piece.map_err(|e| self.broke_off(key, &e))?;
            let (start, end) = (at, at + piece.len() as u64);
            at = end;
            if end > range.start {
                let from = range.start.saturating_sub(start) as usize;
                let to = ((range.end.min(end)) - start) as usize;
                kept.extend_from_slice(&piece[from..to]);
            }
        }
        Ok(kept.freeze())
    }
}

#[async_trait]
impl ObjectStore for S3Store {
    async fn put(&self, key: &str, data: Bytes) -> StoreResult<()> {
        let full = self.full_key(key)?;
        let len = data.len() as u64;
        self.client
            .put_object()
            .bucket(&self.bucket)
            .key(full)
            .body(ByteStream::from(data))
            .customize()
            .config_override(self.upload_timeouts(len))
            .send()
            .await
            .map_err(|e| self.error(key, e))?;
        Ok(())
    }

    async fn put_file(&self, key: &str, path: &Path) -> StoreResult<()> {
        let size = tokio::fs::metadata(path)
            .await
            .map_err(|e| StoreError::Io {
                path: path.display().to_string(),
                source: e,
            })?
            .len();
        self.upload(key, &Upload::File(path), size).await
    }

    async fn put_body(&self, key: &str, body: Arc<dyn Body>) -> Option<StoreResult<()>> {
        let size = body.size();
        Some(self.upload(key, &Upload::Body(body), size).await)
    }

    async fn put_if_absent(&self, key: &str, data: Bytes) -> StoreResult<bool> {
        let full = self.full_key(key)?;
        if !self.no_conditional_put.load(Ordering::Relaxed) {
            let len = data.len() as u64;
            let sent = self
                .client
                .put_object()
                .bucket(&self.bucket)
                .key(&full)
                .if_none_match("*")
                .body(ByteStream::from(data.clone()))
                .customize()
                .config_override(self.upload_timeouts(len))
                .send()
                .await;
            match sent {
                Ok(_) => return Ok(true),
                Err(e) if is_precondition_failed(&e) => return Ok(false),
                Err(e) if is_not_implemented(&e) => {
                    tracing::info!(
                        store = %self.describe(),
                        "the server does not support conditional PUT; using HEAD then PUT"
                    );
                    self.no_conditional_put.store(true, Ordering::Relaxed);
                }
                Err(e) => return Err(self.error(key, e)),
            }
        }
        // Racy fallback, see the module comment.
        if self.head(key).await?.is_some() {
            return Ok(false);
        }
        self.put(key, data).await?;
        Ok(true)
    }

    async fn get(&self, key: &str) -> StoreResult<Bytes> {
        let full = self.full_key(key)?;
        let out = self
            .client
            .get_object()
            .bucket(&self.bucket)
            .key(full)
            .send()
            .await
            .map_err(|e| self.error(key, e))?;
        self.collect_body(key, out.body, out.content_length).await
    }

    async fn get_range(&self, key: &str, range: Range<u64>) -> StoreResult<Bytes> {
        if range.start >= range.end {
            // An empty range is not expressible as an HTTP Range; still report absence.
            return match self.head(key).await? {
                Some(_) => Ok(Bytes::new()),
                None => Err(StoreError::NotFound {
                    key: key.to_string(),
                }),
            };
        }
        // The SDK retries a request that failed; a body that broke off half-way (a cut
        // connection, a stall past the read timeout) is retried here, a few times with
        // backoff: the cache would otherwise see a short read and give up.
        let mut attempt = 1;
        loop {
            match self.get_range_once(key, range.clone()).await {
                Err(StoreError::Unreachable { detail })
                    if detail.contains(BROKE_OFF) && attempt < self.opts.max_attempts =>
                {
                    let wait = super::backoff::wait(
                        Duration::from_millis(100),
                        attempt,
                        Duration::from_secs(2),
                        None,
                    );
                    tracing::warn!(
                        key,
                        attempt,
                        wait_ms = wait.as_millis() as u64,
                        "{detail}: fetching the range again"
                    );
                    tokio::time::sleep(wait).await;
                    attempt += 1;
                }
                other => return other,
            }
        }
    }

    async fn head(&self, key: &str) -> StoreResult<Option<u64>> {
        let full = self.full_key(key)?;
        match self
            .client
            .head_object()
            .bucket(&self.bucket)
            .key(full)
            .send()
            .await
        {
            Ok(out) => Ok(Some(out.content_length().unwrap_or(0).max(0) as u64)),
            Err(e) => match self.error(key, e) {
                StoreError::NotFound { .. } => Ok(None),
                other => Err(other),
            },
        }
    }

    async fn list(&self, prefix: &str) -> StoreResult<Vec<String>> {
        let strip = if self.prefix.is_empty() {
            String::new()
        } else {
            format!("{}/", self.prefix)
        };
        let full_prefix = format!("{strip}{prefix}");
        let mut keys = Vec::new();
        let mut token: Option<String> = None;
        loop {
            let out = self
                .client
                .list_objects_v2()
                .bucket(&self.bucket)
                .prefix(&full_prefix)
                .set_continuation_token(token.take())
                .send()
                .await
                .map_err(|e| self.error(&format!("{prefix}*"), e))?;
            for obj in out.contents() {
                if let Some(k) = obj.key().and_then(|k| k.strip_prefix(&strip)) {
                    // Folder markers ("a/") made by other tools are not objects of ours.
                    if !k.is_empty() && !k.ends_with('/') {
                        keys.push(k.to_string());
                    }
                }
            }
            match (out.is_truncated(), out.next_continuation_token()) {
                (Some(true), Some(next)) => token = Some(next.to_string()),
                _ => break,
            }
        }
        keys.sort();
        Ok(keys)
    }

    async fn delete(&self, key: &str) -> StoreResult<()> {
        let full = self.full_key(key)?;
        match self
            .client
            .delete_object()
            .bucket(&self.bucket)
            .key(full)
            .send()
            .await
        {
            Ok(_) => Ok(()),
            Err(e) => match self.error(key, e) {
                StoreError::NotFound { .. } => Ok(()),
                other => Err(other),
            },
        }
    }

    /// If-None-Match, unless this server ignores it (then stat-then-write).
    fn creates_atomically(&self) -> bool {
        !self.no_conditional_put.load(Ordering::Relaxed)
    }

    fn describe(&self) -> String {
        let url = if self.prefix.is_empty() {
            format!("s3://{}", self.bucket)
        } else {
            format!("s3://{}/{}", self.bucket, self.prefix)
        };
        format!("{url} at {}", self.where_())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_split_into_bucket_and_prefix() {
        assert_eq!(parse_url("s3://b").unwrap(), ("b".into(), "".into()));
        assert_eq!(parse_url("s3://b/").unwrap(), ("b".into(), "".into()));
        assert_eq!(
            parse_url("s3://my-bucket/team/songfs/").unwrap(),
            ("my-bucket".into(), "team/songfs".into())
        );
    }

    #[test]
    fn bad_urls_say_what_is_wrong() {
        for (url, expect) in [
            ("s3://", "bucket name is missing"),
            ("s3:///x", "bucket name is missing"),
            ("http://b/x", "starts with s3://"),
            ("s3://b?x/y", "cannot appear in a bucket name"),
            ("s3://b/a/../c", "must not contain"),
        ] {
            let err = parse_url(url).unwrap_err().to_string();
            assert!(err.contains(expect), "{url}: {err}");
            assert!(err.contains(url), "{url}: {err}");
        }
    }
}
