//! `songfs init`: make the device id, record the store, check the store is reachable,
//! write the store's format record (`songfs.json`) if it is new.

use std::path::PathBuf;

use anyhow::Context;
use clap::Args;

use crate::config::{Config, Home, StoreConfig};

#[derive(Args)]
pub struct InitArgs {
    /// file:///absolute/folder, s3://bucket/prefix or webdav(s)://[user@]host/folder
    #[arg(long)]
    pub store: String,
    /// S3 access key id to use instead of the AWS credential chain (its secret key is
    /// read from stdin with --password-stdin and kept in the system keyring).
    #[arg(long)]
    pub s3_access_key: Option<String>,
    /// Read the store's secret (WebDAV password, S3 secret key) from stdin's first
    /// line and keep it in the system keyring, never in config.json.
    #[arg(long)]
    pub password_stdin: bool,
    /// S3 endpoint override, e.g. http://127.0.0.1:9000
    #[arg(long)]
    pub s3_endpoint: Option<String>,
    #[arg(long)]
    pub s3_region: Option<String>,
    /// The Song Factory database to sync (takes its first snapshot).
    #[arg(long)]
    pub db: Option<PathBuf>,
    /// A name for this machine, shown to the others (default: the host name).
    #[arg(long)]
    pub device_name: Option<String>,
    /// Cache size in bytes (suffixes K, M, G accepted).
    #[arg(long, value_parser = parse_size)]
    pub cache_size: Option<u64>,
    /// Replace an existing configuration (keeps the device id, unless another writer
    /// took this device's change-log slots: then it moves to a fresh one, see below).
    #[arg(long)]
    pub force: bool,
    /// Encrypt a new store (asks for a passphrase twice; scripts: SONGFS_PASSPHRASE_FILE).
    /// A store that is already encrypted is detected and its passphrase asked for.
    #[arg(long)]
    pub encrypt: bool,
    /// With --force: move this device to a fresh device id. For a copy of ~/.songfs (or a
    /// restored backup of it) that shares its id with another device: changes not sent
    /// yet go out under the new id, and the old id's logs are read like another device's.
    #[arg(long, requires = "force")]
    pub new_device_id: bool,
}

pub fn parse_size(s: &str) -> Result<u64, String> {
    let s = s.trim();
    let (num, mult) = match s.chars().last() {
        Some('K' | 'k') => (&s[..s.len() - 1], 1u64 << 10),
        Some('M' | 'm') => (&s[..s.len() - 1], 1 << 20),
        Some('G' | 'g') => (&s[..s.len() - 1], 1 << 30),
        Some('T' | 't') => (&s[..s.len() - 1], 1 << 40),
        _ => (s, 1),
    };
    num.trim()
        .parse::<u64>()
        .map(|n| n * mult)
        .map_err(|_| format!("{s:?} is not a size: use bytes or a number with K, M, G or T"))
}

pub fn run(a: InitArgs) -> anyhow::Result<()> {
    let home = Home::from_env();
    let store_cfg = StoreConfig {
        url: a.store.clone(),
        s3_endpoint: a.s3_endpoint.clone(),
        s3_region: a.s3_region.clone(),
        encrypted: false,
    };
    let mut known_encrypted = false;
    let mut cfg = match Config::load(&home) {
        Ok(existing)
            if !a.force
                && StoreConfig {
                    encrypted: false,
                    ..existing.store.clone()
                } != store_cfg =>
        {
            anyhow::bail!(
                "{} is already set up for the store {}: pass --force to switch stores",
                home.root.display(),
                existing.store.url
            )
        }
        Ok(mut existing) => {
            known_encrypted = existing.store.encrypted && existing.store.url == store_cfg.url;
            existing.store = store_cfg;
            existing
        }
        Err(_) => Config::new(store_cfg, a.device_name.clone().unwrap_or_else(hostname)),
    };
    if let Some(n) = a.device_name {
        cfg.device_name = n;
    }
    if let Some(c) = a.cache_size {
        cfg.cache_size = c;
    }
    if let Some(db) = &a.db {
        let db = std::fs::canonicalize(db)
            .with_context(|| format!("the database {} does not exist: check the path (the app keeps it at ~/.songfactory/songfactory.db)", db.display()))?;
        cfg.db_path = Some(db);
    }
    if let Some(path) = cfg.store.url.strip_prefix("file://") {
        // A new folder store is made here, and only here: the daemon never makes a
        // missing store folder (it is a disk not attached).
        std::fs::create_dir_all(path)
            .with_context(|| format!("cannot create the store folder {path}"))?;
    }
    // The store's password or keys go into the keyring first (opening the store needs
    // them), and come out again if the store refuses.
    let filed = super::init_secrets::file_store_secret(
        &cfg.store,
        &super::init_secrets::StoreSecretArgs {
            s3_access_key: a.s3_access_key.as_deref(),
            password_stdin: a.password_stdin,
        },
    )?;
    let rt = super::runtime()?;
    let format = match rt.block_on(super::passphrase::set_up_store(
        &cfg.store,
        a.encrypt,
        known_encrypted,
    )) {
        Ok(f) => f,
        Err(e) => {
            if let Some(f) = filed {
                f.undo();
            }
            return Err(e);
        }
    };
    cfg.store.encrypted = format.encryption.is_some();
    cfg.store_id = format.store_id;
    let taken = crate::sync::slot_taken(&home)?;
    if a.new_device_id || taken.is_some() {
        let old = cfg.device_id.clone();
        cfg.device_id = crate::config::new_device_id();
        let requeued = crate::sync::move_to_new_device_id(&home)?;
        eprintln!(
            "songfs: this device moves from id {old} to {}{}; {requeued} unsent change log(s) \
             go out under the new id at the next sync",
            cfg.device_id,
            taken
                .map(|k| format!(" (another writer took {k})"))
                .unwrap_or_default()
        );
    }
    cfg.save(&home)?;
    crate::sync::snapshot_on_init(&cfg, &home)?;
    eprintln!(
        "songfs: device {} ({}) set up with store {}",
        cfg.device_name, cfg.device_id, cfg.store.url
    );
    Ok(())
}

fn hostname() -> String {
    std::fs::read_to_string("/etc/hostname")
        .map(|s| s.trim().to_string())
        .ok()
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "this-machine".into())
}
