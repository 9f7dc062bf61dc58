//! The master key of an encrypted store and its passphrase wrap (doc/FORMAT.md §2).
//!
//! A store has one random 32-byte master key. It is kept in the store only wrapped:
//! AES-256-GCM under a key-encryption key that Argon2id derives from the passphrase with
//! the parameters and salt stored beside it, so changing the passphrase rewrites the
//! wrap and nothing else. Subkeys for names and objects come from HKDF-SHA256 of the
//! master key. This module must never print, log or serialize a key in the clear.

use hkdf::Hkdf;
use ring::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_256_GCM};
use serde::{Deserialize, Serialize};
use sha2::Sha256;
use zeroize::{Zeroize, ZeroizeOnDrop, Zeroizing};

use super::CryptError;

/// Set (to anything) only by tests: new key records use Argon2id with 64 KiB and one
/// pass instead of 64 MiB and three, so a test suite does not spend seconds per unlock.
/// Reading always uses the parameters stored in the record.
pub const WEAK_KDF_ENV: &str = "SONGFS_TEST_WEAK_KDF";

/// Associated data of the wrap: ties the ciphertext to its purpose and format.
const WRAP_AAD: &[u8] = b"songfs sfe1 master key";
const INFO_NAMES: &[u8] = b"songfs sfe1 names";
const INFO_OBJECTS: &[u8] = b"songfs sfe1 objects";

/// 32 secret bytes, wiped when dropped, never `Debug`-printed.
#[derive(Clone, Zeroize, ZeroizeOnDrop)]
pub struct SecretKey(pub(crate) [u8; 32]);

impl SecretKey {
    pub fn bytes(&self) -> &[u8; 32] {
        &self.0
    }
}

impl std::fmt::Debug for SecretKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SecretKey(..)")
    }
}

/// The store's master key.
#[derive(Clone, Debug)]
pub struct MasterKey(SecretKey);

/// The keys the store decorator works with, derived from the master key.
#[derive(Clone, Debug)]
pub struct Subkeys {
    /// HMAC key for blob names.
    pub names: SecretKey,
    /// HKDF input for every object's own key.
    pub objects: SecretKey,
}

impl MasterKey {
    pub fn generate() -> MasterKey {
        MasterKey(SecretKey(rand::random()))
    }

    pub fn from_bytes(bytes: [u8; 32]) -> MasterKey {
        MasterKey(SecretKey(bytes))
    }

    pub fn subkeys(&self) -> Subkeys {
        let hk = Hkdf::<Sha256>::new(None, self.0.bytes());
        let expand = |info: &[u8]| {
            let mut k = [0u8; 32];
            hk.expand(info, &mut k)
                .expect("32 bytes is a valid HKDF-SHA256 length");
            SecretKey(k)
        };
        Subkeys {
            names: expand(INFO_NAMES),
            objects: expand(INFO_OBJECTS),
        }
    }
}

/// Argon2id parameters, stored in the key record so a reader derives the same key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KdfParams {
    /// Always "argon2id" in format 1.
    pub algorithm: String,
    /// Memory in KiB.
    pub m_kib: u32,
    /// Passes.
    pub t: u32,
    /// Lanes.
    pub p: u32,
    /// 16 random bytes, hex.
    pub salt: String,
}

impl KdfParams {
    /// Parameters for a new record: RFC 9106's second recommendation (64 MiB, 3 passes)
    /// with one lane, or the weak test parameters when `WEAK_KDF_ENV` is set.
    pub fn for_new_record() -> KdfParams {
        let salt = hex::encode(rand::random::<[u8; 16]>());
        if std::env::var_os(WEAK_KDF_ENV).is_some() {
            tracing::warn!(
                "{WEAK_KDF_ENV} is set: the passphrase wrap uses test-only Argon2 parameters"
            );
            return KdfParams::with(64, 1, 1, salt);
        }
        KdfParams::with(64 * 1024, 3, 1, salt)
    }

    pub fn with(m_kib: u32, t: u32, p: u32, salt: String) -> KdfParams {
        KdfParams {
            algorithm: "argon2id".into(),
            m_kib,
            t,
            p,
            salt,
        }
    }

    /// The key-encryption key for `passphrase`.
    pub fn derive(&self, passphrase: &str) -> Result<SecretKey, CryptError> {
        if self.algorithm != "argon2id" {
            return Err(CryptError::BadKeyRecord(format!(
                "unknown key derivation {:?}",
                self.algorithm
            )));
        }
        let salt = hex::decode(&self.salt)
            .map_err(|e| CryptError::BadKeyRecord(format!("salt is not hex: {e}")))?;
        let params = argon2::Params::new(self.m_kib, self.t, self.p, Some(32))
            .map_err(|e| CryptError::BadKeyRecord(format!("Argon2 parameters: {e}")))?;
        let argon =
            argon2::Argon2::new(argon2::Algorithm::Argon2id, argon2::Version::V0x13, params);
        let mut kek = [0u8; 32];
        argon
            .hash_password_into(passphrase.as_bytes(), &salt, &mut kek)
            .map_err(|e| CryptError::BadKeyRecord(format!("Argon2: {e}")))?;
        Ok(SecretKey(kek))
    }
}

/// The wrapped master key, as stored in `songfs.json` under `encryption`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyRecord {
    /// "SFE1".
    pub format: String,
    pub kdf: KdfParams,
    /// 12 random bytes, hex.
    pub nonce: String,
    /// AES-256-GCM(kek, nonce, master key, aad = "songfs sfe1 master key"): 48 bytes, hex.
    pub wrapped: String,
}

pub const FORMAT_NAME: &str = "SFE1";

/// AES-256-GCM under the key-encryption key.
fn wrap_cipher(kek: &SecretKey) -> LessSafeKey {
    LessSafeKey::new(UnboundKey::new(&AES_256_GCM, kek.bytes()).expect("a 32-byte AES-256 key"))
}

impl KeyRecord {
    /// Wraps `mk` under `passphrase` with fresh parameters and a fresh nonce.
    pub fn wrap(mk: &MasterKey, passphrase: &str) -> Result<KeyRecord, CryptError> {
        KeyRecord::wrap_with(mk, passphrase, KdfParams::for_new_record(), rand::random())
    }

    /// Wraps with given parameters and nonce (known-answer tests).
    pub fn wrap_with(
        mk: &MasterKey,
        passphrase: &str,
        kdf: KdfParams,
        nonce: [u8; 12],
    ) -> Result<KeyRecord, CryptError> {
        let kek = kdf.derive(passphrase)?;
        let mut wrapped = mk.0.bytes().to_vec();
        wrap_cipher(&kek)
            .seal_in_place_append_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(WRAP_AAD),
                &mut wrapped,
            )
            .expect("AES-GCM encrypts 32 bytes");
        Ok(KeyRecord {
            format: FORMAT_NAME.into(),
            kdf,
            nonce: hex::encode(nonce),
            wrapped: hex::encode(wrapped),
        })
    }

    /// The master key, if `passphrase` is the one the record was wrapped with.
    pub fn unwrap(&self, passphrase: &str) -> Result<MasterKey, CryptError> {
        self.unwrap_with(&self.kek(passphrase)?)
    }

    /// The key-encryption key `passphrase` gives under this record's parameters (Argon2id:
    /// slow on purpose), after checking the record's shape, so a malformed record fails
    /// before the derivation.
    pub fn kek(&self, passphrase: &str) -> Result<SecretKey, CryptError> {
        self.parts()?;
        self.kdf.derive(passphrase)
    }

    /// The master key, if `kek` is the key-encryption key of the record's wrap (one
    /// this device derived from the passphrase before: `crypt::kept_key`).
    pub fn unwrap_with(&self, kek: &SecretKey) -> Result<MasterKey, CryptError> {
        let (nonce, wrapped) = self.parts()?;
        let mut buf = Zeroizing::new(wrapped);
        let plain = wrap_cipher(kek)
            .open_in_place(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(WRAP_AAD),
                &mut buf,
            )
            .map_err(|_| CryptError::WrongPassphrase)?;
        let mut mk = [0u8; 32];
        mk.copy_from_slice(plain);
        Ok(MasterKey::from_bytes(mk))
    }

    /// The wrap's nonce and ciphertext, checked.
    fn parts(&self) -> Result<([u8; 12], Vec<u8>), CryptError> {
        if self.format != FORMAT_NAME {
            return Err(CryptError::BadKeyRecord(format!(
                "format {:?}, this songfs knows {FORMAT_NAME}",
                self.format
            )));
        }
        let nonce = hex::decode(&self.nonce)
            .ok()
            .and_then(|n| <[u8; 12]>::try_from(n).ok())
            .ok_or_else(|| CryptError::BadKeyRecord("nonce is not 12 hex bytes".into()))?;
        let wrapped = hex::decode(&self.wrapped)
            .ok()
            .filter(|w| w.len() == 48)
            .ok_or_else(|| CryptError::BadKeyRecord("wrapped key is not 48 hex bytes".into()))?;
        Ok((nonce, wrapped))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_right_passphrase_unwraps_and_a_wrong_one_does_not() {
        let mk = MasterKey::generate();
        let kdf = KdfParams::with(64, 1, 1, "00112233445566778899aabbccddeeff".into());
        let rec = KeyRecord::wrap_with(&mk, "right", kdf, [7; 12]).unwrap();
        let back = rec.unwrap("right").unwrap();
        assert_eq!(back.0.bytes(), mk.0.bytes());
        assert_eq!(
            rec.unwrap("wrong").unwrap_err(),
            CryptError::WrongPassphrase
        );
        let mut altered = rec.clone();
        altered.kdf.t = 2;
        assert_eq!(
            altered.unwrap("right").unwrap_err(),
            CryptError::WrongPassphrase
        );
    }

    #[test]
    fn keys_never_show_in_debug_output() {
        let mk = MasterKey::from_bytes([0xab; 32]);
        let shown = format!("{mk:?} {:?}", mk.subkeys());
        assert!(
            !shown.contains("ab, ab") && !shown.contains("171"),
            "{shown}"
        );
    }
}
