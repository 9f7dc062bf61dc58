//! The HTTP transport under every OpenDAL store (WebDAV, Google Drive, Dropbox):
//! bounded connection times, the providers' rate limits honoured, and provider hosts
//! rewritten where a test (or a private gateway) answers for them.
//!
//! Throttling (HTTP 429, 503, and Drive's 403 `rateLimitExceeded`) is waited out here,
//! where status and headers are still visible: `Retry-After` when the server sends it,
//! else exponential backoff, always with random jitter so two devices do not retry in
//! step. The waits are bounded (`Throttle::max_attempts`, `Throttle::max_wait`); after
//! that the throttled answer goes up as an error the caller retries next cycle. This
//! module must never retry anything but throttling (a dead network fails at once) and
//! never log a request's headers (they carry tokens).

use std::time::Duration;

use bytes::Bytes;
use opendal::{Buffer, HttpBody, HttpTransport};
use opendal_http_transport_reqwest::ReqwestTransport;

/// `SONGFS_API_REWRITE="https://www.googleapis.com=http://127.0.0.1:8080,…"`: requests
/// whose URL starts with the left side go to the right side instead.
pub const REWRITE_ENV: &str = "SONGFS_API_REWRITE";

/// How throttled requests are waited out.
#[derive(Debug, Clone)]
pub struct Throttle {
    /// Tries of one request, the first included.
    pub max_attempts: u32,
    /// First backoff when the server names no `Retry-After`; doubles each time.
    pub base_delay: Duration,
    /// Longest single wait (a larger `Retry-After` is cut to this).
    pub max_wait: Duration,
}

impl Default for Throttle {
    fn default() -> Throttle {
        Throttle {
            max_attempts: 8,
            base_delay: Duration::from_millis(500),
            max_wait: Duration::from_secs(60),
        }
    }
}

#[derive(Clone)]
pub struct SongfsTransport {
    inner: ReqwestTransport,
    rewrites: Vec<(String, String)>,
    throttle: Throttle,
}

impl SongfsTransport {
    /// The transport songfs uses: rewrites from `SONGFS_API_REWRITE`, default throttle.
    pub fn from_env() -> SongfsTransport {
        let rewrites = std::env::var(REWRITE_ENV)
            .map(|v| parse_rewrites(&v))
            .unwrap_or_default();
        SongfsTransport::new(rewrites, Throttle::default())
    }

    pub fn new(rewrites: Vec<(String, String)>, throttle: Throttle) -> SongfsTransport {
        let client = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(5))
            // No whole-request timeout: a large upload may take long. A stalled read
            // still ends, through the read timeout.
            .read_timeout(Duration::from_secs(60))
            .build()
            .expect("a reqwest client with timeouts builds");
        SongfsTransport {
            inner: ReqwestTransport::new(client),
            rewrites,
            throttle,
        }
    }

    /// `url` as this transport would send it (for clients outside OpenDAL: sign-in).
    pub fn rewrite_str(&self, url: &str) -> String {
        self.rewrites
            .iter()
            .find_map(|(from, to)| {
                url.strip_prefix(from.as_str())
                    .map(|rest| format!("{to}{rest}"))
            })
            .unwrap_or_else(|| url.to_string())
    }

    fn rewrite(&self, uri: &http::Uri) -> Option<http::Uri> {
        let text = uri.to_string();
        self.rewrites.iter().find_map(|(from, to)| {
            text.strip_prefix(from.as_str())
                .and_then(|rest| format!("{to}{rest}").parse().ok())
        })
    }
}

/// `a=b,c=d` → [(a, b), (c, d)]; entries without `=` are ignored.
pub fn parse_rewrites(spec: &str) -> Vec<(String, String)> {
    spec.split(',')
        .filter_map(|pair| pair.split_once('='))
        .map(|(a, b)| {
            (
                a.trim().trim_end_matches('/').to_string(),
                b.trim().trim_end_matches('/').to_string(),
            )
        })
        .collect()
}

impl HttpTransport for SongfsTransport {
    async fn fetch(&self, req: http::Request<Buffer>) -> opendal::Result<http::Response<HttpBody>> {
        let (mut parts, body) = req.into_parts();
        if let Some(uri) = self.rewrite(&parts.uri) {
            parts.uri = uri;
        }
        let mut attempt = 1;
        loop {
            let req = http::Request::from_parts(parts.clone(), body.clone());
            let resp = self.inner.fetch(req).await?;
            let (resp, throttled) = classify(resp).await?;
            if !throttled || attempt >= self.throttle.max_attempts {
                return Ok(resp);
            }
            let wait = self.wait_for(attempt, resp.headers());
            tracing::info!(
                status = resp.status().as_u16(),
                host = parts.uri.host().unwrap_or(""),
                attempt,
                wait_ms = wait.as_millis() as u64,
                "the storage provider asks songfs to slow down; waiting"
            );
            drop(resp);
            tokio::time::sleep(wait).await;
            attempt += 1;
        }
    }
}

impl SongfsTransport {
    /// The wait before try `attempt + 1`: the server's `Retry-After` or exponential
    /// backoff, plus up to half of it again at random, never above `max_wait`.
    fn wait_for(&self, attempt: u32, headers: &http::HeaderMap) -> Duration {
        super::backoff::wait(
            self.throttle.base_delay,
            attempt,
            self.throttle.max_wait,
            retry_after(headers),
        )
    }
}

/// `Retry-After: <seconds>` (the HTTP-date form is rare from APIs and is ignored).
fn retry_after(headers: &http::HeaderMap) -> Option<Duration> {
    headers
        .get(http::header::RETRY_AFTER)?
        .to_str()
        .ok()?
        .trim()
        .parse::<f64>()
        .ok()
        .filter(|s| s.is_finite() && *s >= 0.0)
        .map(Duration::from_secs_f64)
}

/// Whether the response says "slow down". A 403's small body is read to tell Drive's
/// rate-limit refusals from a real one, and put back.
async fn classify(
    resp: http::Response<HttpBody>,
) -> opendal::Result<(http::Response<HttpBody>, bool)> {
    let status = resp.status().as_u16();
    match status {
        429 | 503 => Ok((resp, true)),
        403 => {
            let (parts, mut body) = resp.into_parts();
            let bytes = body.to_buffer().await?.to_bytes();
            let throttled = is_rate_limit_body(&bytes);
            let len = bytes.len() as u64;
            let body = HttpBody::new(futures::stream::iter([Ok(Buffer::from(bytes))]), Some(len));
            Ok((http::Response::from_parts(parts, body), throttled))
        }
        _ => Ok((resp, false)),
    }
}

fn is_rate_limit_body(body: &Bytes) -> bool {
    let text = String::from_utf8_lossy(body);
    text.contains("rateLimitExceeded") || text.contains("userRateLimitExceeded")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rewrites_parse_and_apply_to_the_prefix_only() {
        let t = SongfsTransport::new(
            parse_rewrites("https://www.googleapis.com/=http://127.0.0.1:9/, junk"),
            Throttle::default(),
        );
        let uri: http::Uri = "https://www.googleapis.com/drive/v3/files?q=x"
            .parse()
            .unwrap();
        assert_eq!(
            t.rewrite(&uri).unwrap().to_string(),
            "http://127.0.0.1:9/drive/v3/files?q=x"
        );
        let other: http::Uri = "https://api.dropboxapi.com/2/files".parse().unwrap();
        assert!(t.rewrite(&other).is_none());
    }

    #[test]
    fn waits_follow_retry_after_or_back_off_with_bounded_jitter() {
        let t = SongfsTransport::new(
            vec![],
            Throttle {
                max_attempts: 5,
                base_delay: Duration::from_millis(100),
                max_wait: Duration::from_secs(3),
            },
        );
        let mut h = http::HeaderMap::new();
        for attempt in 1..=4 {
            let w = t.wait_for(attempt, &h);
            let base = Duration::from_millis(100 << (attempt - 1));
            assert!(w >= base && w <= base.mul_f64(1.5), "{attempt}: {w:?}");
        }
        h.insert(http::header::RETRY_AFTER, "2".parse().unwrap());
        let w = t.wait_for(1, &h);
        assert!(
            w >= Duration::from_secs(2) && w <= Duration::from_secs(3),
            "{w:?}"
        );
        h.insert(http::header::RETRY_AFTER, "600".parse().unwrap());
        assert_eq!(t.wait_for(1, &h), Duration::from_secs(3));
        // Jitter: ten waits are not all the same.
        let waits: std::collections::HashSet<_> = (0..10)
            .map(|_| t.wait_for(2, &http::HeaderMap::new()))
            .collect();
        assert!(waits.len() > 1);
    }

    #[test]
    fn drive_rate_limit_bodies_are_recognised() {
        assert!(is_rate_limit_body(&Bytes::from_static(
            br#"{"error":{"errors":[{"reason":"userRateLimitExceeded"}],"code":403}}"#
        )));
        assert!(!is_rate_limit_body(&Bytes::from_static(
            br#"{"error":{"errors":[{"reason":"insufficientPermissions"}]}}"#
        )));
    }
}
