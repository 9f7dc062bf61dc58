//! `songfs.json` at the store root: the store's format version, so a build never
//! misreads a store written by a newer one, and its id, so a device never writes into a
//! store that is not its own (`identity.rs`). Room is left for encryption parameters.

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use super::{ObjectStore, StoreError};
use crate::config::Config;

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
    /// None: objects are stored in the clear. A later version records its cipher here.
    #[serde(default)]
    pub encryption: Option<serde_json::Value>,
}

/// Reads the store's format record, writing a new one if the store is empty; fails if
/// the store is unreachable or was written by an unknown version. Returns the record.
pub async fn ensure(cfg: &Config) -> anyhow::Result<StoreFormat> {
    let store = super::open(&cfg.store).await?;
    ensure_in(store.as_ref()).await
}

pub async fn ensure_in(store: &dyn ObjectStore) -> anyhow::Result<StoreFormat> {
    let fresh = StoreFormat {
        format_version: FORMAT_VERSION,
        created_at: chrono::Utc::now().to_rfc3339(),
        store_id: Some(crate::config::new_device_id()),
        encryption: None,
    };
    store
        .put_if_absent(FORMAT_KEY, Bytes::from(serde_json::to_vec_pretty(&fresh)?))
        .await
        .map_err(|e| anyhow::anyhow!("cannot use the store {}: {e}", store.describe()))?;
    check(store).await
}

/// Fails unless the store holds a format record this build understands; returns it.
pub async fn check(store: &dyn ObjectStore) -> anyhow::Result<StoreFormat> {
    let raw = match store.get(FORMAT_KEY).await {
        Ok(b) => b,
        Err(StoreError::NotFound { .. }) => anyhow::bail!(
            "{} is not a songfs store (no {FORMAT_KEY}): run `songfs init` with this store first",
            store.describe()
        ),
        Err(e) => anyhow::bail!("cannot use the store {}: {e}", store.describe()),
    };
    let format: StoreFormat = serde_json::from_slice(&raw).map_err(|e| {
        anyhow::anyhow!(
            "{}/{FORMAT_KEY} is damaged ({e}): restore it from a backup",
            store.describe()
        )
    })?;
    if format.format_version != FORMAT_VERSION {
        anyhow::bail!(
            "{} has store format {} but this songfs understands only {FORMAT_VERSION}: upgrade songfs",
            store.describe(),
            format.format_version
        );
    }
    if format.encryption.is_some() {
        anyhow::bail!(
            "{} is encrypted, which this songfs cannot read: upgrade songfs",
            store.describe()
        );
    }
    Ok(format)
}
