//! Credentials handed to songfs on the command line: the WebDAV password or S3 secret
//! key `songfs init` takes (`--password-stdin`, `--s3-access-key`), filed in the
//! keyring before the store is first contacted and put back as they were if that
//! contact fails.
//!
//! A secret is read from stdin only (never from an argument, which `ps` shows) and
//! must never be printed, logged or written to config.json.

use std::io::BufRead;

use anyhow::{bail, Context};

use crate::config::StoreConfig;
use crate::secrets::{self, Location, SERVICE};
use crate::store::{self, webdav};

/// What `init` was given to reach its store.
pub struct StoreSecretArgs<'a> {
    pub s3_access_key: Option<&'a str>,
    pub password_stdin: bool,
}

/// A keyring entry as it was before `init` replaced it, to put back on failure.
pub struct Filed {
    account: String,
    before: Option<String>,
}

impl Filed {
    /// Puts the previous secret back (the store did not accept the new one).
    pub fn undo(self) {
        let result = match &self.before {
            Some(old) => secrets::set(SERVICE, &self.account, old).map(|_| ()),
            None => secrets::delete(SERVICE, &self.account).map(|_| ()),
        };
        if let Err(e) = result {
            tracing::warn!(error = %e, "could not restore the previous credential");
        }
    }
}

/// Files the store's secret in the keyring when `init` was given one; returns the
/// previous state for `Filed::undo`. Fails with what to do when the store needs a
/// secret that was neither given nor filed before.
pub fn file_store_secret(cfg: &StoreConfig, a: &StoreSecretArgs) -> anyhow::Result<Option<Filed>> {
    if webdav::is_webdav_url(&cfg.url) {
        if a.s3_access_key.is_some() {
            bail!("--s3-access-key is for s3:// stores; a WebDAV store takes --password-stdin");
        }
        let parsed = webdav::parse_url(&cfg.url)?;
        let Some(account) = webdav::account_for(&parsed) else {
            if a.password_stdin {
                bail!(
                    "a password needs a user: put it in the URL, e.g. webdavs://me@{}",
                    parsed.endpoint.split("://").nth(1).unwrap_or("host")
                );
            }
            return Ok(None);
        };
        if !a.password_stdin {
            if secrets::get(SERVICE, &account)?.is_none() {
                bail!(
                    "no password is filed for {account}: pipe it in, e.g. `read -rs PW; printf %s \"$PW\" | songfs init --store {} --password-stdin`",
                    cfg.url
                );
            }
            return Ok(None);
        }
        let password = read_secret_line("the WebDAV password")?;
        return file(&account, &password).map(Some);
    }
    if cfg.url.starts_with("s3://") {
        let Some(key_id) = a.s3_access_key else {
            if a.password_stdin {
                bail!("--password-stdin with an s3:// store reads the secret key of --s3-access-key KEY_ID: name the key id too");
            }
            // The AWS credential chain, as before.
            return Ok(None);
        };
        if !a.password_stdin {
            bail!("--s3-access-key needs its secret key on stdin: add --password-stdin and pipe the secret in");
        }
        let secret = read_secret_line("the S3 secret key")?;
        let keys = store::S3Keys {
            access_key_id: key_id.to_string(),
            secret_access_key: secret,
        };
        let json = serde_json::to_string(&keys).expect("two strings serialise");
        return file(&store::s3_account(cfg), &json).map(Some);
    }
    if a.s3_access_key.is_some() || a.password_stdin {
        bail!(
            "{} needs no credentials: drop --s3-access-key/--password-stdin",
            cfg.url
        );
    }
    Ok(None)
}

fn file(account: &str, secret: &str) -> anyhow::Result<Filed> {
    let before = secrets::get(SERVICE, account)?;
    let at = secrets::set(SERVICE, account, secret)?;
    tracing::info!(
        account,
        keyring = matches!(at, Location::Keyring),
        "credential filed"
    );
    Ok(Filed {
        account: account.to_string(),
        before,
    })
}

/// The first line of stdin, without its line end; empty is refused.
fn read_secret_line(what: &str) -> anyhow::Result<String> {
    let mut line = String::new();
    std::io::stdin()
        .lock()
        .read_line(&mut line)
        .with_context(|| format!("cannot read {what} from stdin"))?;
    let secret = line.trim_end_matches(['\n', '\r']).to_string();
    if secret.is_empty() {
        bail!("{what} on stdin was empty: pipe it in, e.g. `printf %s \"$SECRET\" | songfs init … --password-stdin`");
    }
    Ok(secret)
}
