//! Where a device keeps the passphrase of its encrypted store: the system keyring,
//! behind a small trait so the cloud-stores work (issue 9) can slot in its Secret
//! Service / Keychain / Credential Manager backends without touching the callers.
//!
//! Until then, on Linux this is the kernel's keyutils user keyring (`@u`, add_key(2) /
//! keyctl(2)): per user, readable only by that user, never on disk, gone at reboot
//! (the next mount asks again). A secret never goes to config.json, a log or the store.

use std::sync::Arc;

use zeroize::Zeroizing;

#[derive(Debug, thiserror::Error)]
#[error("the system keyring ({backend}) {what}: {detail}")]
pub struct KeyringError {
    pub backend: String,
    pub what: String,
    pub detail: String,
}

pub trait Keyring: Send + Sync {
    /// The secret stored for `account`, or None.
    fn get(&self, account: &str) -> Result<Option<Zeroizing<String>>, KeyringError>;
    /// Stores (or replaces) the secret for `account`.
    fn set(&self, account: &str, secret: &str) -> Result<(), KeyringError>;
    /// Forgets `account`; forgetting an absent one is not an error.
    fn delete(&self, account: &str) -> Result<(), KeyringError>;
    fn describe(&self) -> String;
}

/// Scripts give the passphrase in a file named by this variable instead of a prompt.
pub const PASSPHRASE_FILE_ENV: &str = "SONGFS_PASSPHRASE_FILE";

/// The keyring account of this device's passphrase of the store at `store_url`: one
/// per songfs home, so two homes of one user (two test devices) never share it.
pub fn passphrase_account(store_url: &str) -> String {
    let home = crate::config::Home::from_env().root;
    let home = std::path::absolute(&home).unwrap_or(home);
    format!("store-passphrase/{}/{store_url}", home.display())
}

/// The passphrase in `$SONGFS_PASSPHRASE_FILE` (its first line), if the variable is set.
pub fn passphrase_from_file() -> Result<Option<Zeroizing<String>>, String> {
    passphrase_from_file_in(PASSPHRASE_FILE_ENV)
}

/// The passphrase in the file the variable `env` names (its first line), if it is set.
pub fn passphrase_from_file_in(env: &str) -> Result<Option<Zeroizing<String>>, String> {
    let Some(path) = std::env::var_os(env) else {
        return Ok(None);
    };
    let text = Zeroizing::new(std::fs::read_to_string(&path).map_err(|e| {
        format!(
            "{env}={}: cannot read it ({e})",
            std::path::Path::new(&path).display()
        )
    })?);
    let line = text.lines().next().unwrap_or("");
    if line.is_empty() {
        return Err(format!(
            "{env}={}: the file is empty; put the passphrase on its first line",
            std::path::Path::new(&path).display()
        ));
    }
    Ok(Some(Zeroizing::new(line.to_string())))
}

/// The passphrase this device uses for `store_url`: `$SONGFS_PASSPHRASE_FILE` if set,
/// else the keyring's.
pub fn stored_passphrase(store_url: &str) -> Result<Option<Zeroizing<String>>, String> {
    if let Some(p) = passphrase_from_file()? {
        return Ok(Some(p));
    }
    system()
        .get(&passphrase_account(store_url))
        .map_err(|e| e.to_string())
}

/// This system's keyring.
pub fn system() -> Arc<dyn Keyring> {
    Arc::new(kernel::KernelKeyring)
}

#[cfg(target_os = "linux")]
mod kernel {
    use super::*;

    /// `KEY_SPEC_USER_KEYRING`: the keyring of the calling user.
    const USER_KEYRING: libc::c_long = -4;
    const KEYCTL_SEARCH: libc::c_long = 10;
    const KEYCTL_READ: libc::c_long = 11;
    const KEYCTL_INVALIDATE: libc::c_long = 21;

    pub struct KernelKeyring;

    fn description(account: &str) -> std::ffi::CString {
        std::ffi::CString::new(format!("songfs:{account}")).expect("account names have no NUL")
    }

    fn err(what: &str) -> KeyringError {
        KeyringError {
            backend: "kernel keyutils user keyring".into(),
            what: what.into(),
            detail: std::io::Error::last_os_error().to_string(),
        }
    }

    impl KernelKeyring {
        fn find(&self, account: &str) -> Result<Option<libc::c_long>, KeyringError> {
            let desc = description(account);
            // SAFETY: keyctl(KEYCTL_SEARCH) reads two NUL-terminated strings we own.
            let id = unsafe {
                libc::syscall(
                    libc::SYS_keyctl,
                    KEYCTL_SEARCH,
                    USER_KEYRING,
                    c"user".as_ptr(),
                    desc.as_ptr(),
                    0 as libc::c_long,
                )
            };
            if id >= 0 {
                return Ok(Some(id));
            }
            match std::io::Error::last_os_error().raw_os_error() {
                Some(libc::ENOKEY) | Some(libc::EKEYREVOKED) | Some(libc::EKEYEXPIRED) => Ok(None),
                _ => Err(err("cannot be searched")),
            }
        }
    }

    impl Keyring for KernelKeyring {
        fn get(&self, account: &str) -> Result<Option<Zeroizing<String>>, KeyringError> {
            let Some(id) = self.find(account)? else {
                return Ok(None);
            };
            let mut buf = Zeroizing::new(vec![0u8; 4096]);
            // SAFETY: the kernel writes at most `buf.len()` bytes into our buffer.
            let n = unsafe {
                libc::syscall(
                    libc::SYS_keyctl,
                    KEYCTL_READ,
                    id,
                    buf.as_mut_ptr(),
                    buf.len(),
                )
            };
            if n < 0 {
                return Err(err("cannot be read"));
            }
            let n = (n as usize).min(buf.len());
            let s = std::str::from_utf8(&buf[..n]).map_err(|_| KeyringError {
                backend: "kernel keyutils user keyring".into(),
                what: "holds a damaged entry".into(),
                detail: format!("songfs:{account} is not UTF-8"),
            })?;
            Ok(Some(Zeroizing::new(s.to_string())))
        }

        fn set(&self, account: &str, secret: &str) -> Result<(), KeyringError> {
            let desc = description(account);
            // SAFETY: add_key reads the type and description strings and `len` bytes of
            // the payload, all ours; an existing key of that description is updated.
            let id = unsafe {
                libc::syscall(
                    libc::SYS_add_key,
                    c"user".as_ptr(),
                    desc.as_ptr(),
                    secret.as_ptr(),
                    secret.len(),
                    USER_KEYRING,
                )
            };
            if id < 0 {
                return Err(err("refused the secret"));
            }
            Ok(())
        }

        fn delete(&self, account: &str) -> Result<(), KeyringError> {
            if let Some(id) = self.find(account)? {
                // SAFETY: invalidating a key we found by id; no memory is passed.
                if unsafe { libc::syscall(libc::SYS_keyctl, KEYCTL_INVALIDATE, id) } < 0 {
                    return Err(err("cannot forget the secret"));
                }
            }
            Ok(())
        }

        fn describe(&self) -> String {
            "kernel keyutils user keyring".into()
        }
    }
}

#[cfg(not(target_os = "linux"))]
mod kernel {
    use super::*;

    pub struct KernelKeyring;

    fn none() -> KeyringError {
        KeyringError {
            backend: "none".into(),
            what: "is not supported on this system yet".into(),
            detail: "set SONGFS_PASSPHRASE_FILE to a file holding the passphrase".into(),
        }
    }

    impl Keyring for KernelKeyring {
        fn get(&self, _: &str) -> Result<Option<Zeroizing<String>>, KeyringError> {
            Ok(None)
        }
        fn set(&self, _: &str, _: &str) -> Result<(), KeyringError> {
            Err(none())
        }
        fn delete(&self, _: &str) -> Result<(), KeyringError> {
            Ok(())
        }
        fn describe(&self) -> String {
            "none".into()
        }
    }
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use super::*;

    #[test]
    fn a_secret_is_stored_read_replaced_and_forgotten() {
        let k = system();
        let account = format!("test/{}", crate::config::new_device_id());
        assert!(k.get(&account).unwrap().is_none());
        k.set(&account, "first").unwrap();
        k.set(&account, "second").unwrap();
        assert_eq!(
            k.get(&account).unwrap().as_deref().map(|s| s.as_str()),
            Some("second")
        );
        k.delete(&account).unwrap();
        assert!(k.get(&account).unwrap().is_none());
        k.delete(&account).unwrap();
    }
}
