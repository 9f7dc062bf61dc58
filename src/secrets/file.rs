//! The keyring stand-in where no system keyring answers: `$SONGFS_HOME/credentials.json`,
//! created with mode 0600 (only this user reads it) and replaced atomically.
//!
//! It must never be created with wider permissions, even for an instant, and never be
//! read if someone else can read it (its mode is narrowed back first).

use std::collections::BTreeMap;
use std::io::Write;
use std::path::PathBuf;

use super::{SecretError, SecretResult};
use crate::config::Home;

pub fn path() -> PathBuf {
    Home::from_env().root.join("credentials.json")
}

fn key(service: &str, account: &str) -> String {
    format!("{service}/{account}")
}

fn file_error(why: impl std::fmt::Display) -> SecretError {
    SecretError::File {
        path: path().display().to_string(),
        why: why.to_string(),
    }
}

fn load() -> SecretResult<BTreeMap<String, String>> {
    let p = path();
    let meta = match std::fs::metadata(&p) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(BTreeMap::new()),
        Err(e) => return Err(file_error(e)),
    };
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        if meta.permissions().mode() & 0o077 != 0 {
            tracing::warn!(path = %p.display(), "credentials file was readable by others; narrowing it to 0600");
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600))
                .map_err(file_error)?;
        }
    }
    #[cfg(not(unix))]
    let _ = meta;
    let text = std::fs::read_to_string(&p).map_err(file_error)?;
    serde_json::from_str(&text).map_err(|e| {
        file_error(format!(
            "not a valid credentials file ({e}): remove it and sign in again"
        ))
    })
}

fn save(map: &BTreeMap<String, String>) -> SecretResult<()> {
    let p = path();
    let dir = p.parent().expect("the credentials file has a folder");
    std::fs::create_dir_all(dir).map_err(file_error)?;
    let tmp = p.with_extension(format!("tmp-{}", std::process::id()));
    let write = || -> std::io::Result<()> {
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create_new(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
        let mut f = options.open(&tmp)?;
        f.write_all(&serde_json::to_vec_pretty(map).expect("a map of strings serialises"))?;
        f.sync_all()?;
        std::fs::rename(&tmp, &p)
    };
    write().map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        file_error(e)
    })
}

pub fn get(service: &str, account: &str) -> SecretResult<Option<String>> {
    Ok(load()?.remove(&key(service, account)))
}

pub fn set(service: &str, account: &str, secret: &str) -> SecretResult<()> {
    let mut map = load()?;
    map.insert(key(service, account), secret.to_string());
    save(&map)
}

pub fn delete(service: &str, account: &str) -> SecretResult<bool> {
    if !path().exists() {
        return Ok(false);
    }
    let mut map = load()?;
    let found = map.remove(&key(service, account)).is_some();
    if found {
        save(&map)?;
    }
    Ok(found)
}
