//! A store passphrase's stand-in where no system keyring answers, on Linux: the kernel's
//! keyutils user keyring (`@u`, add_key(2) / keyctl(2)). Per user, readable only by that
//! user, never on disk, gone at reboot (the next mount asks again). A passphrase never
//! goes to the credentials file: a copy on disk is what encryption at rest must not need.
//! Elsewhere there is no such keyring: scripts give the passphrase in a file each time.

use super::{SecretError, SecretResult};

#[cfg(target_os = "linux")]
mod linux {
    use super::*;

    const BACKEND: &str = "the kernel keyutils user keyring";

    /// `KEY_SPEC_USER_KEYRING`: the keyring of the calling user.
    const USER_KEYRING: libc::c_long = -4;
    const KEYCTL_SEARCH: libc::c_long = 10;
    const KEYCTL_READ: libc::c_long = 11;
    const KEYCTL_INVALIDATE: libc::c_long = 21;

    fn description(service: &str, account: &str) -> std::ffi::CString {
        // Accounts are songfs's own names (no NUL); a NUL would only make the search miss.
        std::ffi::CString::new(format!("{service}:{account}").replace('\0', "?"))
            .expect("NULs replaced")
    }

    fn refused(op: &'static str, account: &str) -> SecretError {
        SecretError::NoDisk {
            op,
            account: account.to_string(),
            why: format!("{BACKEND}: {}", std::io::Error::last_os_error()),
        }
    }

    fn find(service: &str, account: &str) -> SecretResult<Option<libc::c_long>> {
        let desc = description(service, account);
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
            _ => Err(refused("search for", account)),
        }
    }

    pub fn get(service: &str, account: &str) -> SecretResult<Option<String>> {
        let Some(id) = find(service, account)? else {
            return Ok(None);
        };
        let mut buf = zeroize::Zeroizing::new(vec![0u8; 4096]);
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
            return Err(refused("read", account));
        }
        let n = (n as usize).min(buf.len());
        match std::str::from_utf8(&buf[..n]) {
            Ok(s) => Ok(Some(s.to_string())),
            Err(_) => Err(SecretError::NoDisk {
                op: "read",
                account: account.to_string(),
                why: format!("{BACKEND} holds a damaged entry (not UTF-8)"),
            }),
        }
    }

    pub fn set(service: &str, account: &str, secret: &str) -> SecretResult<()> {
        let desc = description(service, account);
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
            return Err(refused("store", account));
        }
        Ok(())
    }

    pub fn delete(service: &str, account: &str) -> SecretResult<bool> {
        let Some(id) = find(service, account)? else {
            return Ok(false);
        };
        // SAFETY: invalidating a key we found by id; no memory is passed.
        if unsafe { libc::syscall(libc::SYS_keyctl, KEYCTL_INVALIDATE, id) } < 0 {
            return Err(refused("delete", account));
        }
        Ok(true)
    }
}

#[cfg(target_os = "linux")]
pub use linux::{delete, get, set};

#[cfg(not(target_os = "linux"))]
pub fn get(_: &str, _: &str) -> SecretResult<Option<String>> {
    Ok(None)
}

#[cfg(not(target_os = "linux"))]
pub fn set(_: &str, account: &str, _: &str) -> SecretResult<()> {
    Err(SecretError::NoDisk {
        op: "store",
        account: account.to_string(),
        why: "no system keyring answers".into(),
    })
}

#[cfg(not(target_os = "linux"))]
pub fn delete(_: &str, _: &str) -> SecretResult<bool> {
    Ok(false)
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    #[test]
    fn a_secret_is_stored_read_replaced_and_forgotten() {
        let account = format!("test/{}", crate::config::new_device_id());
        assert_eq!(super::get("songfs-test", &account).unwrap(), None);
        super::set("songfs-test", &account, "first").unwrap();
        super::set("songfs-test", &account, "second").unwrap();
        assert_eq!(
            super::get("songfs-test", &account).unwrap().as_deref(),
            Some("second")
        );
        assert!(super::delete("songfs-test", &account).unwrap());
        assert_eq!(super::get("songfs-test", &account).unwrap(), None);
        assert!(!super::delete("songfs-test", &account).unwrap());
    }
}
