//! What S3 and the AWS SDK say when a request fails, turned into `StoreError`s that name
//! what failed and what to do (one line each: the SDK's chains span many).

use aws_sdk_s3::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};

use super::S3Store;
use crate::store::{ObjectStore, StoreError};

/// What to do when S3 refuses the keys (other stores say their own).
const S3_KEYS_HINT: &str = "check the credentials (`songfs init --force --s3-access-key KEY_ID --password-stdin`, AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY or ~/.aws)";

impl S3Store {
    /// Turns an SDK error into a StoreError that names what failed and what to do.
    pub(super) fn error<E>(
        &self,
        key: &str,
        err: SdkError<E, aws_sdk_s3::config::http::HttpResponse>,
    ) -> StoreError
    where
        E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    {
        let status = err.raw_response().map(|r| r.status().as_u16());
        let code = err.code().unwrap_or("").to_string();
        let message = err.message().unwrap_or("").to_string();
        if let SdkError::DispatchFailure(_)
        | SdkError::TimeoutError(_)
        | SdkError::ConstructionFailure(_) = &err
        {
            let chain = DisplayErrorContext(&err).to_string();
            if chain.contains("credentials") {
                // The chain lists every provider it tried, over many lines: log that,
                // keep the error to one line.
                tracing::debug!(store = %self.describe(), error = %chain, "no AWS credentials");
                return StoreError::Denied {
                    detail: format!(
                        "no AWS credentials found for {}: {S3_KEYS_HINT}",
                        self.where_()
                    ),
                };
            }
            let cause = one_line(&root_cause(&err));
            return match &err {
                SdkError::ConstructionFailure(_) => {
                    StoreError::Other(format!("cannot build a request for {key}: {cause}"))
                }
                _ => StoreError::Unreachable {
                    detail: format!("{}: {cause}", self.where_()),
                },
            };
        }
        if let SdkError::ResponseError(_) = &err {
            return StoreError::Unreachable {
                detail: format!(
                    "{} sent a broken response ({})",
                    self.where_(),
                    one_line(&root_cause(&err))
                ),
            };
        }
        let said = one_line(&if message.is_empty() {
            code.clone()
        } else {
            format!("{code}: {message}")
        });
        match (code.as_str(), status) {
            ("NoSuchBucket", _) => StoreError::NoSuchBucket {
                bucket: format!("{} at {}", self.bucket, self.where_()),
            },
            ("NoSuchKey" | "NotFound", _) | (_, Some(404)) => StoreError::NotFound {
                key: key.to_string(),
            },
            ("InvalidAccessKeyId" | "SignatureDoesNotMatch" | "AccessDenied", _)
            | (_, Some(401 | 403)) => StoreError::Denied {
                detail: format!(
                    "{} answered {} for {key}: {S3_KEYS_HINT}",
                    self.where_(),
                    if said.is_empty() {
                        "403 Forbidden".into()
                    } else {
                        said
                    }
                ),
            },
            ("InvalidBucketName", _) => StoreError::BadUrl {
                url: format!("s3://{}", self.bucket),
                why: format!(
                    "{} rejects this bucket name: use 3-63 lowercase letters, digits, '-' or '.'",
                    self.where_()
                ),
            },
            ("PermanentRedirect" | "AuthorizationHeaderMalformed", _) | (_, Some(301)) => {
                StoreError::Other(format!(
                    "the bucket {} is in another region than {} ({said}): set --s3-region",
                    self.bucket, self.region
                ))
            }
            _ => StoreError::Other(format!(
                "{} answered {} for {key}{}",
                self.where_(),
                status.map(|s| s.to_string()).unwrap_or_default(),
                if said.is_empty() {
                    String::new()
                } else {
                    format!(" ({said})")
                }
            )),
        }
    }

    pub(super) fn broke_off(&self, key: &str, e: &(dyn std::error::Error + 'static)) -> StoreError {
        StoreError::Unreachable {
            detail: format!(
                "{}: reading {key} {BROKE_OFF} ({})",
                self.where_(),
                root_cause(e)
            ),
        }
    }
}

pub(super) fn is_precondition_failed<E: ProvideErrorMetadata>(
    err: &SdkError<E, aws_sdk_s3::config::http::HttpResponse>,
) -> bool {
    err.code() == Some("PreconditionFailed")
        || err.raw_response().map(|r| r.status().as_u16()) == Some(412)
}

pub(super) fn is_not_implemented<E: ProvideErrorMetadata>(
    err: &SdkError<E, aws_sdk_s3::config::http::HttpResponse>,
) -> bool {
    err.code() == Some("NotImplemented")
        || err.raw_response().map(|r| r.status().as_u16()) == Some(501)
}

/// What a body read that failed half-way says (retried by `get_range`).
pub(super) const BROKE_OFF: &str = "broke off";

/// Texts from servers and credential providers may span lines; our messages are one.
fn one_line(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// The innermost cause of an error: the part that says what actually happened.
pub(super) fn root_cause(err: &(dyn std::error::Error + 'static)) -> String {
    let mut cur = err;
    while let Some(next) = cur.source() {
        cur = next;
    }
    cur.to_string()
}
