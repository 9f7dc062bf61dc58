//! Credentials (OAuth refresh tokens, S3 secret keys, WebDAV passwords, passphrases):
//! get, set and delete by service + account, in the system keyring.
//!
//! The keyring is the OS's own: Secret Service on Linux (over D-Bus), Keychain on
//! macOS, Credential Manager on Windows, all through `keyring-core` and its per-OS
//! store crates. Where none answers (a headless server without a session bus), a
//! file only the user can read (`$SONGFS_HOME/credentials.json`, mode 0600) holds
//! them instead, and songfs says so when it first writes one there.
//! `SONGFS_KEYRING=file` chooses the file outright (tests, servers that want it).
//!
//! This module must never print, log or return a secret in an error message, and
//! never write one anywhere but the keyring or that file.

mod file;
pub mod grant;
mod kernel;

use std::sync::{Arc, Mutex, OnceLock};

use keyring_core::{CredentialStore, Entry};

/// The service name songfs's own credentials are filed under.
pub const SERVICE: &str = "songfs";
/// `SONGFS_KEYRING`: `system` (default: the OS keyring, else the file) or `file`.
pub const BACKEND_ENV: &str = "SONGFS_KEYRING";

#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    #[error("the system keyring refused to {op} the credential {account:?}: {why} (unlock the keyring, or set SONGFS_KEYRING=file to keep credentials in a file only you can read)")]
    Keyring {
        op: &'static str,
        account: String,
        why: String,
    },
    #[error("{path}: {why}")]
    File { path: String, why: String },
    /// A secret that must never be written to disk (a store passphrase) found no keyring.
    #[error("cannot {op} {account:?}: {why}, and a store passphrase is never written to disk (unlock the system keyring, or give it in a file named by SONGFS_PASSPHRASE_FILE to every songfs command)")]
    NoDisk {
        op: &'static str,
        account: String,
        why: String,
    },
}

pub type SecretResult<T> = Result<T, SecretError>;

/// Where a credential went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Location {
    Keyring,
    File,
    /// The kernel's user keyring (Linux): until reboot, never on disk.
    Session,
}

impl Location {
    pub fn describe(self) -> &'static str {
        match self {
            Location::Keyring => "the system keyring",
            Location::File => "the credentials file (no system keyring)",
            Location::Session => "the kernel's user keyring until reboot (no system keyring)",
        }
    }
}

/// Where a secret goes when the system keyring does not answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fallback {
    /// Sign-ins and keys, which must outlive a reboot: the 0600 credentials file.
    File,
    /// A store passphrase, never written to disk: the kernel's user keyring.
    Session,
}

/// The secret filed under `service`/`account`, if any.
pub fn get(service: &str, account: &str) -> SecretResult<Option<String>> {
    get_in(Fallback::File, service, account)
}

/// Files `secret` under `service`/`account`, replacing what was there.
pub fn set(service: &str, account: &str, secret: &str) -> SecretResult<Location> {
    set_in(Fallback::File, service, account, secret)
}

/// Removes the secret under `service`/`account`; true if there was one.
pub fn delete(service: &str, account: &str) -> SecretResult<bool> {
    delete_in(Fallback::File, service, account)
}

/// A store passphrase: as [`get`], but never from a file.
pub fn get_passphrase(account: &str) -> SecretResult<Option<String>> {
    get_in(Fallback::Session, SERVICE, account)
}

/// A store passphrase: as [`set`], but never to a file (the kernel's user keyring instead).
pub fn set_passphrase(account: &str, secret: &str) -> SecretResult<Location> {
    set_in(Fallback::Session, SERVICE, account, secret)
}

/// A store passphrase: as [`delete`], in the keyring and the kernel's user keyring.
pub fn delete_passphrase(account: &str) -> SecretResult<bool> {
    delete_in(Fallback::Session, SERVICE, account)
}

fn get_in(fallback: Fallback, service: &str, account: &str) -> SecretResult<Option<String>> {
    if let Some(store) = keyring() {
        match on_own_thread(|| Entry::new_in_store(&store, service, account)?.get_password()) {
            Ok(secret) => return Ok(Some(secret)),
            Err(keyring_core::Error::NoEntry) => {}
            Err(e) if unreachable(&e) => tracing::debug!(error = %e, "keyring unreachable"),
            Err(e) => return Err(keyring_error("read", account, e)),
        }
    }
    // Also where a keyring that answers now did not when the secret was saved.
    match fallback {
        Fallback::File => file::get(service, account),
        Fallback::Session => kernel::get(service, account),
    }
}

fn set_in(
    fallback: Fallback,
    service: &str,
    account: &str,
    secret: &str,
) -> SecretResult<Location> {
    if let Some(store) = keyring() {
        let owned = secret.to_string();
        match on_own_thread(move || {
            Entry::new_in_store(&store, service, account)?.set_password(&owned)
        }) {
            Ok(()) => {
                // A copy from a time without keyring would shadow nothing, but must go.
                delete_fallback(fallback, service, account)?;
                return Ok(Location::Keyring);
            }
            Err(e) if unreachable(&e) && fallback == Fallback::File => {
                tell_once_about_the_file(&e.to_string())
            }
            Err(e) if unreachable(&e) => tracing::debug!(error = %e, "keyring unreachable"),
            Err(e) => return Err(keyring_error("store", account, e)),
        }
    } else if fallback == Fallback::File && std::env::var(BACKEND_ENV).as_deref() != Ok("file") {
        tell_once_about_the_file("no keyring for this OS");
    }
    match fallback {
        Fallback::File => file::set(service, account, secret).map(|()| Location::File),
        Fallback::Session => kernel::set(service, account, secret).map(|()| Location::Session),
    }
}

fn delete_in(fallback: Fallback, service: &str, account: &str) -> SecretResult<bool> {
    let mut found = false;
    if let Some(store) = keyring() {
        match on_own_thread(|| Entry::new_in_store(&store, service, account)?.delete_credential()) {
            Ok(()) => found = true,
            Err(keyring_core::Error::NoEntry) => {}
            Err(e) if unreachable(&e) => {}
            Err(e) => return Err(keyring_error("delete", account, e)),
        }
    }
    Ok(delete_fallback(fallback, service, account)? || found)
}

fn delete_fallback(fallback: Fallback, service: &str, account: &str) -> SecretResult<bool> {
    match fallback {
        Fallback::File => file::delete(service, account),
        Fallback::Session => kernel::delete(service, account),
    }
}

/// Replaces the keyring songfs uses (unit tests hand in `keyring_core::mock`).
pub fn use_store(store: Arc<CredentialStore>) {
    *chosen().lock().expect("keyring choice lock") = Some(Some(store));
}

fn chosen() -> &'static Mutex<Option<Option<Arc<CredentialStore>>>> {
    static CHOSEN: OnceLock<Mutex<Option<Option<Arc<CredentialStore>>>>> = OnceLock::new();
    CHOSEN.get_or_init(|| Mutex::new(None))
}

/// The OS keyring, or None when the file is to be used.
fn keyring() -> Option<Arc<CredentialStore>> {
    let mut chosen = chosen().lock().expect("keyring choice lock");
    chosen
        .get_or_insert_with(|| {
            if std::env::var(BACKEND_ENV).as_deref() == Ok("file") {
                return None;
            }
            match on_own_thread(os_store) {
                Ok(store) => Some(store),
                Err(e) => {
                    tracing::debug!(error = %e, "no system keyring");
                    None
                }
            }
        })
        .clone()
}

#[cfg(target_os = "linux")]
fn os_store() -> keyring_core::Result<Arc<CredentialStore>> {
    Ok(zbus_secret_service_keyring_store::Store::new()?)
}
#[cfg(target_os = "macos")]
fn os_store() -> keyring_core::Result<Arc<CredentialStore>> {
    Ok(apple_native_keyring_store::keychain::Store::new()?)
}
#[cfg(target_os = "windows")]
fn os_store() -> keyring_core::Result<Arc<CredentialStore>> {
    Ok(windows_native_keyring_store::Store::new()?)
}
#[cfg(not(any(target_os = "linux", target_os = "macos", target_os = "windows")))]
fn os_store() -> keyring_core::Result<Arc<CredentialStore>> {
    Err(keyring_core::Error::NoDefaultStore)
}

/// Runs a keyring call on a thread of its own: the Secret Service client blocks on
/// its own async runtime, which must not run inside the caller's tokio runtime.
fn on_own_thread<T: Send>(
    f: impl FnOnce() -> keyring_core::Result<T> + Send,
) -> keyring_core::Result<T> {
    std::thread::scope(|s| {
        s.spawn(f).join().unwrap_or_else(|_| {
            Err(keyring_core::Error::PlatformFailure(
                "the keyring client panicked".into(),
            ))
        })
    })
}

/// The keyring is not there at all (no session bus, no daemon), as opposed to a
/// keyring that answered and refused.
fn unreachable(e: &keyring_core::Error) -> bool {
    use keyring_core::Error as E;
    match e {
        E::NoDefaultStore | E::NotSupportedByStore(_) => true,
        E::PlatformFailure(p) | E::NoStorageAccess(p) => {
            let text = p.to_string().to_lowercase();
            [
                "connect",
                "no such file",
                "address",
                "bus",
                "not provided",
                "serviceunknown",
            ]
            .iter()
            .any(|w| text.contains(w))
        }
        _ => false,
    }
}

fn keyring_error(op: &'static str, account: &str, e: keyring_core::Error) -> SecretError {
    // keyring_core's errors name the failure, never the secret.
    SecretError::Keyring {
        op,
        account: account.to_string(),
        why: e.to_string(),
    }
}

fn tell_once_about_the_file(why: &str) {
    static TOLD: OnceLock<()> = OnceLock::new();
    TOLD.get_or_init(|| {
        let path = file::path();
        tracing::warn!(path = %path.display(), why, "no system keyring: credentials go to a file");
        eprintln!(
            "songfs: no system keyring is reachable ({why}); keeping credentials in {} (readable only by you)",
            path.display()
        );
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One test: the keyring choice is process-wide.
    #[test]
    fn the_mock_keyring_stores_reads_and_deletes_and_errors_name_no_secret() {
        let dir = tempfile::tempdir().unwrap();
        std::env::set_var("SONGFS_HOME", dir.path());
        let mock = keyring_core::mock::Store::new().unwrap();
        use_store(mock);
        assert_eq!(get(SERVICE, "gdrive").unwrap(), None);
        assert_eq!(
            set(SERVICE, "gdrive", "tok-SECRET-1").unwrap(),
            Location::Keyring
        );
        assert_eq!(
            get(SERVICE, "gdrive").unwrap().as_deref(),
            Some("tok-SECRET-1")
        );
        assert_eq!(get("another-service", "gdrive").unwrap(), None);
        set(SERVICE, "gdrive", "tok-SECRET-2").unwrap();
        assert_eq!(
            get(SERVICE, "gdrive").unwrap().as_deref(),
            Some("tok-SECRET-2")
        );
        assert!(delete(SERVICE, "gdrive").unwrap());
        assert!(!delete(SERVICE, "gdrive").unwrap());
        assert_eq!(get(SERVICE, "gdrive").unwrap(), None);
        // Nothing reached the fallback file while the keyring answered.
        assert!(!file::path().exists());

        // A keyring that refuses (locked) is an error that says what to do.
        let entry = Entry::new_in_store(&keyring().unwrap(), SERVICE, "locked").unwrap();
        entry.set_password("pw-SECRET-3").unwrap();
        let cred: &keyring_core::mock::Cred = entry.as_any().downcast_ref().unwrap();
        cred.set_error(keyring_core::Error::NoStorageAccess(
            "the keyring is locked".into(),
        ));
        let err = get(SERVICE, "locked").unwrap_err().to_string();
        assert!(
            err.contains("locked") && err.contains("SONGFS_KEYRING"),
            "{err}"
        );
        assert!(!err.contains("pw-SECRET-3"), "{err}");
    }
}
