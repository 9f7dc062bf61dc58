//! Where a device's passphrase of its encrypted store comes from: the file a script
//! names (`$SONGFS_PASSPHRASE_FILE`), else the keyring entry kept when it last opened
//! the store. Kept through the one keyring module (`crate::secrets`): the system
//! keyring (Secret Service, Keychain, Credential Manager), else on Linux the kernel's
//! user keyring; never config.json, the credentials file, a log or the store.

use zeroize::Zeroizing;

use crate::secrets::{self, Location, SecretResult};

/// Scripts give the passphrase in a file named by this variable instead of a prompt.
pub const PASSPHRASE_FILE_ENV: &str = "SONGFS_PASSPHRASE_FILE";

/// The keyring account of this device's passphrase of the store at `store_url`: one
/// per songfs home, so two homes of one user (two test devices) never share it.
pub fn passphrase_account(store_url: &str) -> String {
    device_account("store-passphrase", store_url)
}

/// `kind/<this songfs home>/<store_url>`: a keyring account of this device for the store.
pub fn device_account(kind: &str, store_url: &str) -> String {
    let home = crate::config::Home::from_env().root;
    let home = std::path::absolute(&home).unwrap_or(home);
    format!("{kind}/{}/{store_url}", home.display())
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
    secrets::get_passphrase(&passphrase_account(store_url))
        .map(|p| p.map(Zeroizing::new))
        .map_err(|e| e.to_string())
}

/// Keeps the passphrase that opened `store_url` for this device's next commands.
pub fn keep_passphrase(store_url: &str, passphrase: &str) -> SecretResult<Location> {
    secrets::set_passphrase(&passphrase_account(store_url), passphrase)
}

/// Forgets the passphrase kept for `store_url`, and the key derived from it; true if a
/// passphrase was kept.
pub fn forget_passphrase(store_url: &str) -> SecretResult<bool> {
    super::kept_key::forget(store_url)?;
    secrets::delete_passphrase(&passphrase_account(store_url))
}
