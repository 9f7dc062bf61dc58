//! `songfs.json` at the store root: the store's format version, so a build never
//! misreads a store written by a newer one, its id, so a device never writes into a
//! store that is not its own (`identity.rs`), and, for an encrypted store, its key
//! record (the master key wrapped by the passphrase, doc/FORMAT.md §2). The only object
//! an encrypted store keeps in the clear.

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use super::{ObjectStore, StoreError, StoreResult};
use crate::config::Config;
use crate::crypt::keys::KeyRecord;

pub const FORMAT_KEY: &str = "songfs.json";
pub const FORMAT_VERSION: u32 = 1;

#[derive(Debug, Serialize, Deserialize)]
pub struct StoreFormat {
    pub format_version: u32,
    pub created_at: String,
    /// Made once, at the store's first `songfs init`; every device records it and writes
    /// only to a store that carries it (`identity.rs`). None in stores made before.
    #[serde(default)]
    pub store_id: Option<String>,
    /// None: objects are stored in the clear. Some: every other object is sealed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub encryption: Option<KeyRecord>,
}

impl StoreFormat {
    pub fn new(encryption: Option<KeyRecord>) -> StoreFormat {
        StoreFormat {
            format_version: FORMAT_VERSION,
            created_at: chrono::Utc::now().to_rfc3339(),
            store_id: Some(crate::config::new_device_id()),
            encryption,
        }
    }

    pub fn to_bytes(&self) -> Bytes {
        Bytes::from(serde_json::to_vec_pretty(self).expect("a format record always encodes"))
    }
}

/// The store's format record, None if it has none yet (a new store). Fails on a record
/// this build cannot read.
pub async fn read(store: &dyn ObjectStore) -> StoreResult<Option<StoreFormat>> {
    let raw = match store.get(FORMAT_KEY).await {
        Ok(b) => b,
        Err(StoreError::NotFound { .. }) => return Ok(None),
        Err(e) => return Err(e),
    };
    let format: StoreFormat = serde_json::from_slice(&raw).map_err(|e| {
        StoreError::Other(format!(
            "{}/{FORMAT_KEY} is damaged or of a newer songfs ({e}): upgrade songfs, or restore it from a backup",
            store.describe()
        ))
    })?;
    if format.format_version != FORMAT_VERSION {
        return Err(StoreError::Other(format!(
            "{} has store format {} but this songfs understands only {FORMAT_VERSION}: upgrade songfs",
            store.describe(),
            format.format_version
        )));
    }
    Ok(Some(format))
}

/// Reads the store's format record, writing a new one if the store is empty; fails if
/// the store is unreachable or was written by an unknown version. Returns the record.
pub async fn ensure(cfg: &Config) -> anyhow::Result<StoreFormat> {
    let store = super::open(&cfg.store).await?;
    ensure_in(store.as_ref()).await
}

pub async fn ensure_in(store: &dyn ObjectStore) -> anyhow::Result<StoreFormat> {
    let created = store
        .put_if_absent(FORMAT_KEY, StoreFormat::new(None).to_bytes())
        .await
        .map_err(|e| anyhow::anyhow!("cannot use the store {}: {e}", store.describe()))?;
    if created {
        settle_created(store).await;
    }
    check(store).await
}

/// How long a device that wrote the format record where creating is not atomic waits
/// before reading it back. Two devices' first `init` on one empty Drive/Dropbox/WebDAV
/// folder may both see no record and both write one, each with its own store id; the
/// stat-to-write gap is one request, so after this pause the later record is in place
/// and both devices adopt it (what `check` reads back), never each its own.
const CREATE_SETTLE: std::time::Duration = std::time::Duration::from_secs(2);

/// Waits out a racing creator of the format record (see `CREATE_SETTLE`).
pub async fn settle_created(store: &dyn ObjectStore) {
    if !store.creates_atomically() {
        tokio::time::sleep(CREATE_SETTLE).await;
    }
}

/// Fails unless the store holds a format record this build understands, and the store
/// was opened the way the record says (sealed or in the clear); returns it.
pub async fn check(store: &dyn ObjectStore) -> anyhow::Result<StoreFormat> {
    let format = read(store)
        .await
        .map_err(|e| anyhow::anyhow!("cannot use the store {}: {e}", store.describe()))?;
    let Some(format) = format else {
        anyhow::bail!(
            "{} is not a songfs store (no {FORMAT_KEY}): run `songfs init` with this store first",
            store.describe()
        )
    };
    match (format.encryption.is_some(), store.is_encrypted()) {
        (true, false) => anyhow::bail!(
            "{} is encrypted: run `songfs init --store URL` again on this device to give it the passphrase",
            store.describe()
        ),
        (false, true) => anyhow::bail!(
            "{}/{FORMAT_KEY} says the store is not encrypted, but this device set it up encrypted: \
             refusing to use it (someone may have replaced {FORMAT_KEY}); restore it from another device",
            store.describe()
        ),
        _ => Ok(format),
    }
}
