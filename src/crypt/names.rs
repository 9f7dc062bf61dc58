//! Stored names in an encrypted store (doc/FORMAT.md §3): a blob's plaintext SHA-256
//! never reaches the store; its name there is an HMAC-SHA256 under the names subkey,
//! so devices that share the key still dedup, and nobody without it can test whether a
//! known file is stored. Every other key keeps its name (device ids are random).

use hmac::{Hmac, Mac};
use sha2::Sha256;

use super::keys::SecretKey;

const BLOB_PREFIX: &str = "blobs/sha256/";
pub const SEALED_BLOB_PREFIX: &str = "blobs/hmac/";
const DOMAIN: &[u8] = b"songfs sfe1 blob\0";

/// Hex HMAC-SHA256(names key, "songfs sfe1 blob\0" || SHA-256 of the plaintext).
pub fn blob_mac(names: &SecretKey, sha256_hex: &str) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(names.bytes()).expect("HMAC takes any key length");
    mac.update(DOMAIN);
    mac.update(sha256_hex.as_bytes());
    hex::encode(mac.finalize().into_bytes())
}

/// The name in the store of the logical key `key`: `blobs/sha256/ab/<sha>[.chunks]`
/// becomes `blobs/hmac/cd/<mac>[.chunks]`; anything else is unchanged.
pub fn stored_key(names: &SecretKey, key: &str) -> String {
    let Some(rest) = key.strip_prefix(BLOB_PREFIX) else {
        return key.to_string();
    };
    let Some((_, file)) = rest.split_once('/') else {
        return key.to_string();
    };
    let (hash, suffix) = match file.split_once('.') {
        Some((h, s)) => (h, format!(".{s}")),
        None => (file, String::new()),
    };
    if !crate::content::is_valid_hash(hash) {
        return key.to_string();
    }
    let mac = blob_mac(names, hash);
    format!("{SEALED_BLOB_PREFIX}{}/{mac}{suffix}", &mac[..2])
}

/// True for a logical key whose object is a blob or its chunk record (immutable).
pub fn is_blob_key(key: &str) -> bool {
    key.starts_with(BLOB_PREFIX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blob_keys_are_renamed_and_others_kept() {
        let k = SecretKey([1; 32]);
        let sha = "ab".repeat(32);
        let blob = stored_key(&k, &format!("blobs/sha256/ab/{sha}"));
        let side = stored_key(&k, &format!("blobs/sha256/ab/{sha}.chunks"));
        assert!(
            blob.starts_with("blobs/hmac/") && !blob.contains(&sha),
            "{blob}"
        );
        assert_eq!(side, format!("{blob}.chunks"));
        assert_eq!(
            stored_key(&k, "logs/d/000000000001.json"),
            "logs/d/000000000001.json"
        );
        assert_ne!(
            stored_key(&SecretKey([2; 32]), &format!("blobs/sha256/ab/{sha}")),
            blob
        );
    }
}
