//! The passphrase of an encrypted store (doc/FORMAT.md §2) as the user meets it:
//! `songfs init --encrypt` makes the key record, `init` on another device joins it,
//! `songfs passphrase change` rewrites the key record (`songfs.json`) and nothing else,
//! `songfs passphrase enter` gives this device the passphrase another device changed.
//!
//! A passphrase comes from the terminal (no echo) or, for scripts, from the file named
//! by `$SONGFS_PASSPHRASE_FILE` (`$SONGFS_NEW_PASSPHRASE_FILE` for the new one of a
//! change). Once it opens the store it goes to the system keyring and nowhere else:
//! never to config.json, a log, the store or the terminal.

use std::sync::Arc;

use anyhow::{bail, Context};
use clap::{Args, Subcommand};
use zeroize::Zeroizing;

use crate::config::{Config, Home, StoreConfig};
use crate::crypt::keys::{KeyRecord, MasterKey};
use crate::crypt::passphrase::{self as source, PASSPHRASE_FILE_ENV};
use crate::crypt::CryptError;
use crate::store::format::{self, StoreFormat, FORMAT_KEY};
use crate::store::{encrypted, ObjectStore};

/// Scripts give the new passphrase of `songfs passphrase change` in this file.
pub const NEW_PASSPHRASE_FILE_ENV: &str = "SONGFS_NEW_PASSPHRASE_FILE";

#[derive(Args)]
pub struct PassphraseArgs {
    #[command(subcommand)]
    pub command: PassphraseCommand,
}

#[derive(Subcommand)]
pub enum PassphraseCommand {
    /// Change the passphrase of the encrypted store (rewrites only its key record).
    Change,
    /// Give this device the store's passphrase (after it was changed on another device,
    /// or forgotten here).
    Enter,
    /// Forget the passphrase this device keeps (before lending the computer, say): the
    /// next command that opens the store asks for it again.
    Forget,
}

pub fn run(a: PassphraseArgs) -> anyhow::Result<()> {
    let home = Home::from_env();
    let cfg = Config::load(&home)?;
    if !cfg.store.encrypted {
        bail!(
            "the store {} is not encrypted: there is no passphrase to change or enter",
            cfg.store.url
        );
    }
    if let PassphraseCommand::Forget = a.command {
        let forgotten = source::forget_passphrase(&cfg.store.url)?;
        eprintln!(
            "songfs: {} {}",
            if forgotten {
                "forgot the passphrase of"
            } else {
                "this device kept no passphrase for"
            },
            cfg.store.url
        );
        return Ok(());
    }
    let rt = super::runtime()?;
    rt.block_on(async {
        let inner = crate::store::open_unsealed(&cfg.store).await?;
        match a.command {
            PassphraseCommand::Forget => unreachable!("handled above"),
            PassphraseCommand::Change => change(&cfg.store, inner).await,
            PassphraseCommand::Enter => {
                join(&cfg.store, inner.as_ref()).await?;
                eprintln!(
                    "songfs: the passphrase opens {}; kept in the keyring",
                    cfg.store.url
                );
                Ok(())
            }
        }
    })
}

/// For `mount`: a device that keeps no passphrase (the kernel's keyring is emptied by a
/// reboot, or it was forgotten) asks for it on the terminal, as `passphrase enter` does,
/// instead of failing. Off a terminal the mount fails later with what to run.
pub fn ask_if_missing(cfg: &Config) -> anyhow::Result<()> {
    use std::io::IsTerminal;
    if !cfg.store.encrypted
        || !std::io::stdin().is_terminal()
        || source::stored_passphrase(&cfg.store.url)
            .map_err(anyhow::Error::msg)?
            .is_some()
    {
        return Ok(());
    }
    super::runtime()?.block_on(async {
        let inner = crate::store::open_unsealed(&cfg.store).await?;
        join(&cfg.store, inner.as_ref()).await
    })
}

/// For `init`: sets the store up (a new store gets its format record, encrypted if
/// `encrypt`), or joins an existing encrypted one. Returns the store's format record.
/// `known_encrypted`: this device already uses the store encrypted.
pub async fn set_up_store(
    store: &StoreConfig,
    encrypt: bool,
    known_encrypted: bool,
) -> anyhow::Result<StoreFormat> {
    let inner = crate::store::open_unsealed(store).await?;
    let existing = format::read(inner.as_ref())
        .await
        .with_context(|| format!("cannot use the store {}", inner.describe()))?;
    match existing {
        Some(f) if f.encryption.is_some() => {
            join(store, inner.as_ref()).await?;
            Ok(f)
        }
        Some(_) if known_encrypted => bail!(
            "{}/{FORMAT_KEY} says the store is not encrypted, but this device set it up encrypted: \
             refusing to use it (someone may have replaced {FORMAT_KEY}); restore it from another device",
            inner.describe()
        ),
        Some(_) if encrypt => bail!(
            "{} already holds an unencrypted songfs store: --encrypt works only on a new, empty store \
             (encrypting an existing one is not supported)",
            inner.describe()
        ),
        Some(_) => format::check(inner.as_ref()).await,
        None if encrypt => {
            if !inner.list("").await?.is_empty() {
                bail!(
                    "{} is not empty but holds no {FORMAT_KEY}: --encrypt needs a new, empty store",
                    inner.describe()
                );
            }
            create(store, inner.clone()).await?;
            format::read(inner.as_ref())
                .await?
                .with_context(|| format!("{FORMAT_KEY} vanished from {}", inner.describe()))
        }
        None => format::ensure_in(inner.as_ref()).await,
    }
}

/// A new encrypted store: a random master key wrapped by a new passphrase.
async fn create(store: &StoreConfig, inner: Arc<dyn ObjectStore>) -> anyhow::Result<()> {
    let passphrase = new_passphrase(PASSPHRASE_FILE_ENV)?;
    let mk = MasterKey::generate();
    let record = wrap(mk, passphrase.clone()).await?;
    let written = inner
        .put_if_absent(
            FORMAT_KEY,
            StoreFormat::new(Some(record.clone())).to_bytes(),
        )
        .await
        .with_context(|| format!("cannot use the store {}", inner.describe()))?;
    format::settle_created(inner.as_ref()).await;
    let stayed = format::read(inner.as_ref()).await?;
    if !written || stayed.and_then(|f| f.encryption).map(|r| r.wrapped) != Some(record.wrapped) {
        // Another device made the store meanwhile: join it instead.
        return join(store, inner.as_ref()).await;
    }
    keep(store, &passphrase);
    eprintln!(
        "songfs: {} is encrypted; keep the passphrase safe: without it nothing in the store can be read",
        inner.describe()
    );
    Ok(())
}

/// Checks the passphrase (the script's file, else asked once) against the store's key
/// record, then keeps it in the keyring.
async fn join(store: &StoreConfig, inner: &dyn ObjectStore) -> anyhow::Result<()> {
    let record = encrypted::key_record(inner).await?;
    let passphrase = match source::passphrase_from_file().map_err(anyhow::Error::msg)? {
        Some(p) => p,
        None => ask(&format!("Passphrase of {}: ", inner.describe()))?,
    };
    open_record(store, &record, passphrase.clone(), inner).await?;
    keep(store, &passphrase);
    Ok(())
}

/// `songfs passphrase change`: the current passphrase (kept, or asked), a new one
/// (asked twice), a new key record with the same master key. Nothing else is written.
async fn change(store: &StoreConfig, inner: Arc<dyn ObjectStore>) -> anyhow::Result<()> {
    let Some(mut f) = format::read(inner.as_ref()).await? else {
        bail!(
            "{} holds no {FORMAT_KEY}: it is not a songfs store",
            inner.describe()
        );
    };
    let Some(record) = f.encryption.clone() else {
        bail!(
            "{}/{FORMAT_KEY} says the store is not encrypted",
            inner.describe()
        );
    };
    let current = match source::stored_passphrase(&store.url).map_err(anyhow::Error::msg)? {
        Some(p) => p,
        None => ask(&format!("Current passphrase of {}: ", inner.describe()))?,
    };
    let mk = open_record(store, &record, current, inner.as_ref()).await?;
    let new = new_passphrase(NEW_PASSPHRASE_FILE_ENV)?;
    f.encryption = Some(wrap(mk, new.clone()).await?);
    inner
        .put(FORMAT_KEY, f.to_bytes())
        .await
        .with_context(|| format!("cannot write the new key record to {}", inner.describe()))?;
    keep(store, &new);
    eprintln!(
        "songfs: passphrase of {} changed; other devices ask for the new one (`songfs passphrase enter`)",
        inner.describe()
    );
    Ok(())
}

async fn open_record(
    store: &StoreConfig,
    record: &KeyRecord,
    passphrase: Zeroizing<String>,
    inner: &dyn ObjectStore,
) -> anyhow::Result<MasterKey> {
    match encrypted::open_record(&store.url, record.clone(), passphrase).await? {
        Ok(mk) => Ok(mk),
        Err(CryptError::WrongPassphrase) => bail!(
            "wrong passphrase for {} (nothing was changed)",
            inner.describe()
        ),
        Err(e) => bail!("cannot open the key record of {}: {e}", inner.describe()),
    }
}

async fn wrap(mk: MasterKey, passphrase: Zeroizing<String>) -> anyhow::Result<KeyRecord> {
    Ok(tokio::task::spawn_blocking(move || KeyRecord::wrap(&mk, &passphrase)).await??)
}

/// Keeps the passphrase in the keyring; without one, scripts keep giving the file.
fn keep(store: &StoreConfig, passphrase: &str) {
    match source::keep_passphrase(&store.url, passphrase) {
        Ok(at) => tracing::info!(kept_in = at.describe(), "passphrase kept"),
        Err(e) => eprintln!("songfs: the passphrase was not kept: {e}"),
    }
}

/// A new passphrase: from the file `env` names, else asked twice.
fn new_passphrase(env: &str) -> anyhow::Result<Zeroizing<String>> {
    let from_file = source::passphrase_from_file_in(env).map_err(anyhow::Error::msg)?;
    let p = match from_file {
        Some(p) => p,
        None => {
            let first = ask("New passphrase: ")?;
            let second = ask("The same passphrase again: ")?;
            if *first != *second {
                bail!("the two passphrases differ: nothing was changed, try again");
            }
            first
        }
    };
    if p.chars().count() < 8 {
        bail!("the passphrase is shorter than 8 characters: choose a longer one (nothing was changed)");
    }
    Ok(p)
}

/// Asks on the terminal without echo.
fn ask(prompt: &str) -> anyhow::Result<Zeroizing<String>> {
    let p = rpassword::prompt_password(prompt).map(Zeroizing::new).map_err(|e| {
        anyhow::anyhow!(
            "cannot ask for the passphrase ({e}): run on a terminal, or set {PASSPHRASE_FILE_ENV} to a file holding it"
        )
    })?;
    if p.is_empty() {
        bail!("no passphrase given: nothing was changed");
    }
    Ok(p)
}
