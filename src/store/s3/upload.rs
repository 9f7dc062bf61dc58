//! Uploads to S3: a file or a `Body` (the sealed form of a file, produced as it is
//! sent) goes up in one PUT, or past `multipart_threshold` in parts sent in parallel.
//!
//! Every part's body can be made again from its source, so the SDK's retries resend
//! it; a body is produced in 1 MiB frames on the blocking pool, the next one while the
//! current one is sent, so a part in flight holds about 2 MiB, not the whole part.
//! A failed multipart upload is aborted (its parts would cost storage until then).

use std::future::Future;
use std::io;
use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};

use aws_sdk_s3::primitives::{ByteStream, Length};
use aws_sdk_s3::types::{CompletedMultipartUpload, CompletedPart};
use aws_smithy_types::body::SdkBody;
use bytes::Bytes;
use futures::{StreamExt, TryStreamExt};
use http_body::{Frame, SizeHint};

use super::errors::root_cause;
use super::{S3Store, MAX_PARTS};
use crate::store::body::Body;
use crate::store::{StoreError, StoreResult};

/// What an upload sends.
pub(super) enum Upload<'a> {
    File(&'a Path),
    Body(Arc<dyn Body>),
}

/// Bytes a body's stream produces at a time.
const FRAME: u64 = 1 << 20;

impl Upload<'_> {
    /// Bytes `offset..offset + len` as a request body the SDK can resend.
    async fn part(&self, offset: u64, len: u64) -> StoreResult<ByteStream> {
        match self {
            Upload::File(path) => ByteStream::read_from()
                .path(path)
                .offset(offset)
                .length(Length::Exact(len))
                .build()
                .await
                .map_err(|e| StoreError::Io {
                    path: path.display().to_string(),
                    source: io::Error::other(e),
                }),
            Upload::Body(body) => {
                let body = body.clone();
                Ok(ByteStream::new(SdkBody::retryable(move || {
                    SdkBody::from_body_1_x(BodyRange::new(body.clone(), offset, len))
                })))
            }
        }
    }
}

impl S3Store {
    /// Sends `source` (`size` bytes) as `key`.
    pub(super) async fn upload(
        &self,
        key: &str,
        source: &Upload<'_>,
        size: u64,
    ) -> StoreResult<()> {
        let full = self.full_key(key)?;
        if size > self.opts.multipart_threshold {
            return self.put_multipart(key, &full, source, size).await;
        }
        self.client
            .put_object()
            .bucket(&self.bucket)
            .key(full)
            .content_length(size as i64)
            .body(source.part(0, size).await?)
            .customize()
            .config_override(self.upload_timeouts(size))
            .send()
            .await
            .map_err(|e| self.error(key, e))?;
        Ok(())
    }

    async fn put_multipart(
        &self,
        key: &str,
        full: &str,
        source: &Upload<'_>,
        size: u64,
    ) -> StoreResult<()> {
        let part_size = self.opts.part_size.max(size.div_ceil(MAX_PARTS));
        let created = self
            .client
            .create_multipart_upload()
            .bucket(&self.bucket)
            .key(full)
            .send()
            .await
            .map_err(|e| self.error(key, e))?;
        let upload_id = created
            .upload_id()
            .ok_or_else(|| StoreError::Other(format!("{}: no upload id for {key}", self.where_())))?
            .to_string();
        let result = self
            .upload_parts(key, full, source, size, part_size, &upload_id)
            .await;
        let completed = match result {
            Ok(parts) => self
                .client
                .complete_multipart_upload()
                .bucket(&self.bucket)
                .key(full)
                .upload_id(&upload_id)
                .multipart_upload(
                    CompletedMultipartUpload::builder()
                        .set_parts(Some(parts))
                        .build(),
                )
                .send()
                .await
                .map(|_| ())
                .map_err(|e| self.error(key, e)),
            Err(e) => Err(e),
        };
        if let Err(e) = completed {
            // Abandoned parts cost storage until aborted; a failed abort is only logged
            // because the upload failed anyway (a bucket lifecycle rule cleans up later).
            if let Err(abort) = self
                .client
                .abort_multipart_upload()
                .bucket(&self.bucket)
                .key(full)
                .upload_id(&upload_id)
                .send()
                .await
            {
                tracing::warn!(key, upload_id, error = %root_cause(&abort), "could not abort a failed multipart upload");
            }
            return Err(e);
        }
        Ok(())
    }

    async fn upload_parts(
        &self,
        key: &str,
        full: &str,
        source: &Upload<'_>,
        size: u64,
        part_size: u64,
        upload_id: &str,
    ) -> StoreResult<Vec<CompletedPart>> {
        let count = size.div_ceil(part_size);
        let mut parts: Vec<CompletedPart> = futures::stream::iter(0..count)
            .map(|i| async move {
                let offset = i * part_size;
                let len = part_size.min(size - offset);
                let body = source.part(offset, len).await?;
                let number = i as i32 + 1;
                let out = self
                    .client
                    .upload_part()
                    .bucket(&self.bucket)
                    .key(full)
                    .upload_id(upload_id)
                    .part_number(number)
                    .content_length(len as i64)
                    .body(body)
                    .customize()
                    .config_override(self.upload_timeouts(len))
                    .send()
                    .await
                    .map_err(|e| self.error(key, e))?;
                Ok::<_, StoreError>(
                    CompletedPart::builder()
                        .set_e_tag(out.e_tag().map(str::to_string))
                        .part_number(number)
                        .build(),
                )
            })
            .buffer_unordered(self.opts.part_concurrency)
            .try_collect()
            .await?;
        parts.sort_by_key(|p| p.part_number());
        Ok(parts)
    }
}

/// Bytes `at..end` of a body as an HTTP body: frames read on the blocking pool, the
/// next one started as soon as the current one is handed over.
struct BodyRange {
    body: Arc<dyn Body>,
    at: u64,
    end: u64,
    /// Bytes not handed over yet (the exact size hint the request's length needs).
    left: u64,
    next: Option<tokio::task::JoinHandle<io::Result<Bytes>>>,
}

impl BodyRange {
    fn new(body: Arc<dyn Body>, at: u64, len: u64) -> BodyRange {
        let mut r = BodyRange {
            body,
            at,
            end: at + len,
            left: len,
            next: None,
        };
        r.read_next();
        r
    }

    /// Starts reading the frame at `at`, if any is left.
    fn read_next(&mut self) {
        if self.at >= self.end {
            return;
        }
        let (body, at) = (self.body.clone(), self.at);
        let n = FRAME.min(self.end - at);
        self.at += n;
        self.next = Some(tokio::task::spawn_blocking(move || {
            let mut buf = vec![0u8; n as usize];
            body.read_at(at, &mut buf)?;
            Ok(Bytes::from(buf))
        }));
    }
}

impl Drop for BodyRange {
    fn drop(&mut self) {
        if let Some(task) = self.next.take() {
            task.abort();
        }
    }
}

impl http_body::Body for BodyRange {
    type Data = Bytes;
    type Error = io::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, io::Error>>> {
        let Some(task) = self.next.as_mut() else {
            return Poll::Ready(None);
        };
        let read = ready!(Pin::new(task).poll(cx));
        self.next = None;
        let frame = read
            .map_err(|e| io::Error::other(format!("reading the upload's body: {e}")))
            .and_then(|r| r);
        if let Ok(b) = &frame {
            self.left -= b.len() as u64;
            self.read_next();
        }
        Poll::Ready(Some(frame.map(Frame::data)))
    }

    fn is_end_stream(&self) -> bool {
        self.next.is_none()
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::with_exact(self.left)
    }
}
