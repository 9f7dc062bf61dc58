//! Encryption at rest, format SFE1 (doc/FORMAT.md): pure functions over bytes and keys.
//!
//! `keys` holds the master key and its passphrase wrap (Argon2id + AES-256-GCM), `names`
//! turns a blob's plaintext hash into a keyed name, `chunks` seals and opens one object
//! in authenticated 64 KiB chunks, `passphrase` finds a device's passphrase (a script's
//! file, else the keyring through `crate::secrets`), `kept_key` keeps the key Argon2id
//! derived from it beside it, so opening the store again costs no second derivation. Nothing here does store I/O (that is `store::encrypted`), prints, or logs a
//! secret: keys are zeroized on drop and never formatted.

pub mod chunks;
pub mod kept_key;
pub mod keys;
pub mod names;
pub mod passphrase;

/// Why an object or a key record did not open.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CryptError {
    #[error("not an SFE1 object ({0})")]
    NotSealed(String),
    #[error("chunk {chunk} does not authenticate (altered, truncated, reordered, or moved from another object)")]
    Unauthentic { chunk: u64 },
    #[error("the object is {got} bytes but its header says {want}: truncated or padded")]
    BadLength { got: u64, want: u64 },
    #[error("the passphrase is wrong (or the key record was altered)")]
    WrongPassphrase,
    #[error("bad key record: {0}")]
    BadKeyRecord(String),
}
