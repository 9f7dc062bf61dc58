//! Unlocking an encrypted store: its key record (from the store, else the copy kept at
//! the last unlock, so a mount comes up offline), the passphrase this device keeps, and
//! the master key they open.

use std::path::PathBuf;
use std::sync::Arc;

use zeroize::Zeroizing;

use super::EncryptedStore;
use crate::config::{Home, StoreConfig};
use crate::crypt::keys::{KeyRecord, MasterKey};
use crate::crypt::{kept_key, passphrase, CryptError};
use crate::store::format::{self, FORMAT_KEY};
use crate::store::{ObjectStore, StoreError, StoreResult};

/// Opens the encrypted store `inner` with the passphrase this device keeps for it.
pub async fn unlock(inner: Arc<dyn ObjectStore>, cfg: &StoreConfig) -> StoreResult<EncryptedStore> {
    let home = Home::from_env();
    let record = match key_record(inner.as_ref()).await {
        Ok(r) => {
            remember_record(&home, &r);
            r
        }
        // Store down or disk not attached: the copy kept at the last unlock lets the
        // mount come up offline (it is the wrapped key, useless without the passphrase).
        Err(e @ (StoreError::NotFound { .. } | StoreError::Unreachable { .. })) => {
            match remembered_record(&home) {
                Some(r) => {
                    tracing::warn!(store = %inner.describe(), error = %e, "key record not readable from the store: using the copy kept at the last unlock");
                    r
                }
                None => return Err(e),
            }
        }
        Err(e) => return Err(e),
    };
    let locked = |why: String| StoreError::Locked {
        store: inner.describe(),
        why,
    };
    let passphrase = passphrase::stored_passphrase(&cfg.url)
        .map_err(&locked)?
        .ok_or_else(|| {
            locked(format!(
                "this device keeps no passphrase for it: run `songfs passphrase enter` on a terminal \
                 (or set {}=FILE)",
                passphrase::PASSPHRASE_FILE_ENV
            ))
        })?;
    let master = open_record(&cfg.url, record, passphrase).await?.map_err(|e| match e {
        CryptError::WrongPassphrase => locked(
            "the passphrase this device keeps for it does not open it (changed on another device?): \
             run `songfs passphrase enter` to give the new one"
                .into(),
        ),
        e => locked(e.to_string()),
    })?;
    Ok(EncryptedStore::new(
        inner,
        &master,
        home.root.join("sealing"),
    ))
}

/// Where a device keeps the copy of its store's key record (not a secret).
fn record_copy(home: &Home) -> PathBuf {
    home.root.join("store-key.json")
}

fn remember_record(home: &Home, record: &KeyRecord) {
    let path = record_copy(home);
    let tmp = path.with_extension("json.tmp");
    let written = serde_json::to_vec_pretty(record)
        .map_err(std::io::Error::other)
        .and_then(|b| std::fs::write(&tmp, b))
        .and_then(|()| std::fs::rename(&tmp, &path));
    if let Err(e) = written {
        tracing::debug!(path = %path.display(), error = %e, "key record copy not kept");
    }
}

fn remembered_record(home: &Home) -> Option<KeyRecord> {
    serde_json::from_slice(&std::fs::read(record_copy(home)).ok()?).ok()
}

/// The key record in the store's `songfs.json`; an error if it has none.
pub async fn key_record(inner: &dyn ObjectStore) -> StoreResult<KeyRecord> {
    match format::read(inner).await? {
        Some(f) => f.encryption.ok_or_else(|| StoreError::Locked {
            store: inner.describe(),
            why: format!(
                "its {FORMAT_KEY} now says it is not: refusing to use it in the clear \
                 (someone may have replaced {FORMAT_KEY}; restore it from another device)"
            ),
        }),
        None => Err(StoreError::NotFound {
            key: FORMAT_KEY.into(),
        }),
    }
}

/// The master key `record` wraps, if `passphrase` opens it: with the key this device
/// derived from the passphrase before (`crypt::kept_key`), else by Argon2id, which is
/// slow on purpose (it runs on the blocking pool), keeping what it derived.
pub async fn open_record(
    store_url: &str,
    record: KeyRecord,
    passphrase: Zeroizing<String>,
) -> StoreResult<Result<MasterKey, CryptError>> {
    if let Some(kek) = kept_key::kept(store_url, &record, &passphrase) {
        if let Ok(mk) = record.unwrap_with(&kek) {
            return Ok(Ok(mk));
        }
    }
    let url = store_url.to_string();
    tokio::task::spawn_blocking(move || {
        let kek = record.kek(&passphrase)?;
        let mk = record.unwrap_with(&kek)?;
        kept_key::keep(&url, &record, &passphrase, &kek);
        Ok(mk)
    })
    .await
    .map_err(|e| StoreError::Other(format!("key derivation task failed: {e}")))
}
