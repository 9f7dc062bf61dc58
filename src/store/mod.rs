//! The store: where everything shared lives (an S3 bucket + prefix, a folder, a
//! WebDAV folder, or a folder in Google Drive or Dropbox).
//!
//! One async trait, several backends (`open` picks one by the URL's scheme). Keys are relative to the store root
//! (`blobs/sha256/ab/<hash>`, `logs/<device>/<seq>.json`, ...). Every object is written
//! so that a reader never sees half of it. This layer knows nothing of files, caches or
//! databases; it must never retry forever: callers bound their waits.

pub mod backoff;
pub mod body;
pub mod cloud;
pub mod encrypted;
pub mod faulty;
pub mod format;
pub mod identity;
pub mod local;
pub mod opendal_http;
pub mod opendal_store;
pub mod s3;
pub mod upload_session;
pub mod webdav;

use std::ops::Range;
use std::path::Path;
use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;

use crate::config::StoreConfig;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("{key}: not found in the store")]
    NotFound { key: String },
    #[error("the store is unreachable ({detail}): check the network or the endpoint, songfs retries later")]
    Unreachable { detail: String },
    /// `detail` says what was refused and what to do for this kind of store.
    #[error("the store refused access: {detail}")]
    Denied { detail: String },
    #[error("the bucket {bucket} does not exist: create it or fix the store URL")]
    NoSuchBucket { bucket: String },
    #[error("{path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("bad store URL {url}: {why}")]
    BadUrl { url: String, why: String },
    #[error(
        "{key}: refused, it does not authenticate under this store's key ({why}); it was not used"
    )]
    Unauthentic { key: String, why: String },
    #[error("{store} is encrypted and {why}")]
    Locked { store: String, why: String },
    #[error(
        "offline: the store at {store} is not the one this device was set up with (disk not \
         attached?): {why}. Nothing is written there; changes wait on this device and go out \
         once the right store is back"
    )]
    WrongStore { store: String, why: String },
    #[error("store error: {0}")]
    Other(String),
}

impl StoreError {
    /// Worth retrying later (network trouble), as opposed to a permanent refusal.
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            StoreError::Unreachable { .. } | StoreError::WrongStore { .. } | StoreError::Other(_)
        )
    }
}

pub type StoreResult<T> = Result<T, StoreError>;

#[async_trait]
pub trait ObjectStore: Send + Sync + 'static {
    /// Writes a whole object atomically (readers see the old one or the new one).
    async fn put(&self, key: &str, data: Bytes) -> StoreResult<()>;

    /// Writes a local file as an object; large files go up in parallel parts.
    async fn put_file(&self, key: &str, path: &Path) -> StoreResult<()>;

    /// Writes `body` as an object, streamed from it: no copy of it is made on disk.
    /// None where this store cannot (the caller writes a file for `put_file` instead).
    async fn put_body(&self, _key: &str, _body: Arc<dyn body::Body>) -> Option<StoreResult<()>> {
        None
    }

    /// Writes the object only if no object has that key. Returns false if one existed.
    async fn put_if_absent(&self, key: &str, data: Bytes) -> StoreResult<bool>;

    async fn get(&self, key: &str) -> StoreResult<Bytes>;

    /// Bytes `range` of the object; shorter only if the object is shorter.
    async fn get_range(&self, key: &str, range: Range<u64>) -> StoreResult<Bytes>;

    /// Size of the object, or None if absent.
    async fn head(&self, key: &str) -> StoreResult<Option<u64>>;

    /// All keys starting with `prefix`, sorted.
    async fn list(&self, prefix: &str) -> StoreResult<Vec<String>>;

    /// Removes the object; removing an absent object is not an error.
    async fn delete(&self, key: &str) -> StoreResult<()>;

    /// Human description for messages, e.g. `file:///srv/nas/songfs`.
    fn describe(&self) -> String;

    /// True when this store seals what it writes (`encrypted::EncryptedStore`).
    fn is_encrypted(&self) -> bool {
        false
    }

    /// True when `put_if_absent` is atomic (S3's If-None-Match, a folder's hard link):
    /// of two racing writers exactly one gets `true`. False where it is stat-then-write
    /// (`opendal_store.rs`): both may, and the later write is the one that stays.
    fn creates_atomically(&self) -> bool {
        true
    }
}

/// Opens this device's store, every write checked against the store id it recorded at
/// init (`identity.rs`). Everything that writes to the store on a device's behalf opens it
/// this way; `open` is for `init` and tests.
pub async fn open_checked(cfg: &crate::config::Config) -> StoreResult<Arc<identity::Checked>> {
    Ok(Arc::new(identity::Checked::new(
        open(&cfg.store).await?,
        cfg.store_id.clone(),
    )))
}

/// Opens the store a config names. Does not contact it (see `check_reachable`), unless
/// it is encrypted: then its key record is read and unwrapped (`encrypted::unlock`).
pub async fn open(cfg: &StoreConfig) -> StoreResult<Arc<dyn ObjectStore>> {
    let inner = open_unsealed(cfg).await?;
    if cfg.encrypted {
        return Ok(Arc::new(encrypted::unlock(inner, cfg).await?));
    }
    Ok(inner)
}

/// The store a config names as it is, without the encryption layer (init, passphrase).
pub async fn open_unsealed(cfg: &StoreConfig) -> StoreResult<Arc<dyn ObjectStore>> {
    if let Some(path) = cfg.url.strip_prefix("file://") {
        if !path.starts_with('/') {
            return Err(StoreError::BadUrl {
                url: cfg.url.clone(),
                why: "a folder store needs an absolute path, e.g. file:///srv/nas/songfs".into(),
            });
        }
        return Ok(Arc::new(local::LocalStore::attached(path)));
    }
    if cfg.url.starts_with("s3://") {
        let opts = s3::S3Options {
            credentials: s3_keys(cfg)?,
            ..s3::S3Options::default()
        };
        let store = s3::S3Store::open(cfg, opts).await?;
        return Ok(Arc::new(store));
    }
    if webdav::is_webdav_url(&cfg.url) {
        let parsed = webdav::parse_url(&cfg.url)?;
        let password = match webdav::account_for(&parsed) {
            Some(account) => secret(&account)?,
            None => None,
        };
        let transport = opendal_http::SongfsTransport::from_env();
        return Ok(Arc::new(webdav::open(&cfg.url, password, transport)?));
    }
    if let Some(provider) = cloud::provider_of(&cfg.url) {
        let grant = crate::secrets::grant::load(provider).map_err(|e| StoreError::Denied {
            detail: e.to_string(),
        })?;
        let transport = opendal_http::SongfsTransport::from_env();
        return Ok(Arc::new(cloud::open(&cfg.url, grant, transport)?));
    }
    Err(StoreError::BadUrl {
        url: webdav::redact(&cfg.url),
        why: "expected file:///absolute/folder, s3://bucket/prefix, webdav(s)://host/folder, gdrive://Folder or dropbox://Folder"
            .into(),
    })
}

/// The keyring account of the S3 keys `songfs init` filed for this store.
pub fn s3_account(cfg: &StoreConfig) -> String {
    match &cfg.s3_endpoint {
        Some(ep) => format!("s3:{}@{ep}", cfg.url),
        None => format!("s3:{}", cfg.url),
    }
}

/// The S3 keys filed for this store (`{"access_key_id", "secret_access_key"}`), or
/// None: then the AWS credential chain supplies them, as before.
fn s3_keys(cfg: &StoreConfig) -> StoreResult<Option<(String, String)>> {
    let Some(json) = secret(&s3_account(cfg))? else {
        return Ok(None);
    };
    let keys: S3Keys = serde_json::from_str(&json).map_err(|_| StoreError::Denied {
        detail: format!(
            "the S3 keys in the keyring for {} are damaged: run `songfs init --force` with --s3-access-key again",
            cfg.url
        ),
    })?;
    Ok(Some((keys.access_key_id, keys.secret_access_key)))
}

/// S3 keys as filed in the keyring.
#[derive(serde::Serialize, serde::Deserialize)]
pub struct S3Keys {
    pub access_key_id: String,
    pub secret_access_key: String,
}

fn secret(account: &str) -> StoreResult<Option<String>> {
    crate::secrets::get(crate::secrets::SERVICE, account).map_err(|e| StoreError::Denied {
        detail: e.to_string(),
    })
}
