//! The key-encryption key a device derived from its passphrase, kept in the keyring
//! beside the passphrase (never on disk: the kernel's user keyring where no system
//! keyring answers), so a mount does not run Argon2id again (one lane, 64 MiB, three
//! passes: mount -> listed went 215.8 -> 64.1 ms on a small library, `bench/enc_ab.sh`).
//!
//! An entry serves only the key record it was derived for (a digest of the whole
//! record: a passphrase change anywhere makes a new record) and only the passphrase it
//! was derived from (an HMAC of the passphrase under the key itself): a wrong
//! passphrase still fails as it did, after the full derivation. Whoever can read the
//! entry holds the key it protects anyway, so the check tells them nothing more.

use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};

use super::keys::{KeyRecord, SecretKey};
use super::passphrase::device_account;
use crate::secrets::{self, SecretResult};

const ACCOUNT_KIND: &str = "store-kek";
const VERSION: &str = "sfe1-kek";
const CHECK_INFO: &[u8] = b"songfs sfe1 passphrase check\0";

/// The key this device keeps for `record`, if it was derived from `passphrase`.
pub fn kept(store_url: &str, record: &KeyRecord, passphrase: &str) -> Option<SecretKey> {
    let text = match secrets::get_passphrase(&device_account(ACCOUNT_KIND, store_url)) {
        Ok(t) => zeroize::Zeroizing::new(t?),
        Err(e) => {
            tracing::debug!(error = %e, "kept store key not readable: deriving it");
            return None;
        }
    };
    let mut parts = text.split(':');
    let (Some(VERSION), Some(id), Some(kek), Some(check), None) = (
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
    ) else {
        return None;
    };
    if id != record_id(record) {
        return None;
    }
    let kek = SecretKey(hex::decode(kek).ok()?.try_into().ok()?);
    let check = hex::decode(check).ok()?;
    checker(&kek, passphrase).verify_slice(&check).ok()?;
    Some(kek)
}

/// Keeps `kek`, derived from `passphrase` for `record`; a keyring that refuses only
/// costs the next mount a derivation.
pub fn keep(store_url: &str, record: &KeyRecord, passphrase: &str, kek: &SecretKey) {
    let check = checker(kek, passphrase).finalize().into_bytes();
    let text = zeroize::Zeroizing::new(format!(
        "{VERSION}:{}:{}:{}",
        record_id(record),
        hex::encode(kek.bytes()),
        hex::encode(check)
    ));
    if let Err(e) = secrets::set_passphrase(&device_account(ACCOUNT_KIND, store_url), &text) {
        tracing::debug!(error = %e, "store key not kept: the next mount derives it again");
    }
}

/// Forgets the key kept for `store_url`; true if one was kept.
pub fn forget(store_url: &str) -> SecretResult<bool> {
    secrets::delete_passphrase(&device_account(ACCOUNT_KIND, store_url))
}

fn record_id(record: &KeyRecord) -> String {
    let json = serde_json::to_vec(record).expect("a key record serializes");
    hex::encode(Sha256::digest(&json))
}

fn checker(kek: &SecretKey, passphrase: &str) -> Hmac<Sha256> {
    let mut mac = Hmac::<Sha256>::new_from_slice(kek.bytes()).expect("HMAC takes any key length");
    mac.update(CHECK_INFO);
    mac.update(passphrase.as_bytes());
    mac
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypt::keys::{KdfParams, MasterKey};

    /// One test: the keyring choice is process-wide.
    #[test]
    fn a_kept_key_serves_only_its_record_and_its_passphrase() {
        let dir = tempfile::tempdir().unwrap();
        std::env::set_var("SONGFS_HOME", dir.path());
        secrets::use_store(keyring_core::mock::Store::new().unwrap());
        let url = "s3://bucket/songs";
        let mk = MasterKey::generate();
        let kdf = KdfParams::with(64, 1, 1, "00112233445566778899aabbccddeeff".into());
        let record = KeyRecord::wrap_with(&mk, "right horse", kdf.clone(), [1; 12]).unwrap();
        assert!(kept(url, &record, "right horse").is_none());

        let kek = record.kek("right horse").unwrap();
        keep(url, &record, "right horse", &kek);
        let got = kept(url, &record, "right horse").expect("kept");
        assert_eq!(
            record.unwrap_with(&got).unwrap().subkeys().names.bytes(),
            mk.subkeys().names.bytes()
        );
        assert!(kept(url, &record, "wrong horse").is_none());
        assert!(kept("s3://bucket/other", &record, "right horse").is_none());
        // The passphrase changed (a new record, a new salt): the kept key is not used.
        let changed = KeyRecord::wrap_with(
            &mk,
            "right horse",
            KdfParams::with(64, 1, 1, "ffeeddccbbaa99887766554433221100".into()),
            [1; 12],
        )
        .unwrap();
        assert!(kept(url, &changed, "right horse").is_none());
        // The entry does not hold the passphrase.
        let text = secrets::get_passphrase(&device_account(ACCOUNT_KIND, url))
            .unwrap()
            .unwrap();
        assert!(!text.contains("horse"));
        assert!(forget(url).unwrap());
        assert!(kept(url, &record, "right horse").is_none());
    }
}
