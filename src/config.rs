//! Where songfs keeps its state, and the per-device configuration.
//!
//! `$SONGFS_HOME` (default `~/.songfs`) holds `config.json` (written by `songfs init`),
//! `state.db` (namespace, cache index, upload queue, sync state) and `cache/`.
//! The device id is made once, at init, and never changes: change logs are keyed by it.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use serde::{Deserialize, Serialize};

/// Default bound of the local blob cache (evictable bytes).
pub const DEFAULT_CACHE_SIZE: u64 = 10 * 1024 * 1024 * 1024;

/// Config keys of the app that hold secrets (the app's own list).
pub const SECRET_CONFIG_KEYS: &[&str] = &[
    "api_key",
    "musicgpt_api_key",
    "lalals_password",
    "dk_password",
    "segmind_api_key",
];

/// Config keys of the app that describe this machine only.
pub const LOCAL_CONFIG_KEYS: &[&str] = &[
    "browser_path",
    "download_dir",
    "sync_folder",
    "use_xvfb",
    "headless",
    "last_import_at",
    "last_export_at",
    "auto_import_on_startup",
    "auto_export_enabled",
];

/// Files that live in the mount but never reach the store (the app's Settings backup
/// is a full copy of the database, secrets included).
pub const LOCAL_ONLY_PATTERNS: &[&str] = &["songfactory_backup_*.db"];

/// Where the shared data lives.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct StoreConfig {
    /// `file:///srv/nas/songfs` or `s3://bucket/prefix`.
    pub url: String,
    /// S3 endpoint override (MinIO, a NAS, a test server), e.g. `http://127.0.0.1:9000`.
    #[serde(default)]
    pub s3_endpoint: Option<String>,
    /// S3 region; defaults to the AWS credential chain's region, else `us-east-1`.
    #[serde(default)]
    pub s3_region: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Config {
    pub device_id: String,
    pub device_name: String,
    pub store: StoreConfig,
    /// Bytes of evictable data the cache may hold.
    #[serde(default = "default_cache_size")]
    pub cache_size: u64,
    /// How long an uncached read waits for the store before failing with EIO.
    #[serde(default = "default_fetch_timeout_secs")]
    pub fetch_timeout_secs: u64,
    /// The Song Factory database this device syncs (`init --db`).
    #[serde(default)]
    pub db_path: Option<PathBuf>,
    /// Where the mount sits on this machine (paths in the database are relative to it
    /// inside change logs).
    #[serde(default)]
    pub mount_point: Option<PathBuf>,
    /// Seconds between sync cycles of the daemon.
    #[serde(default = "default_sync_interval_secs")]
    pub sync_interval_secs: u64,
    /// Extra config keys that are secrets (added to `SECRET_CONFIG_KEYS`).
    #[serde(default)]
    pub secret_config_keys: Vec<String>,
    /// Config keys that stay on this machine (default: `LOCAL_CONFIG_KEYS`).
    #[serde(default = "default_local_config_keys")]
    pub local_config_keys: Vec<String>,
    /// Glob patterns (file names) that stay local (default: `LOCAL_ONLY_PATTERNS`).
    #[serde(default = "default_local_only_patterns")]
    pub local_only_patterns: Vec<String>,
    /// The conflicts log (default `~/.songfactory/logs/sync_conflicts.log`).
    #[serde(default)]
    pub conflicts_log: Option<PathBuf>,
}

fn default_cache_size() -> u64 {
    DEFAULT_CACHE_SIZE
}
fn default_fetch_timeout_secs() -> u64 {
    5
}
fn default_sync_interval_secs() -> u64 {
    60
}
fn default_local_config_keys() -> Vec<String> {
    LOCAL_CONFIG_KEYS.iter().map(|s| s.to_string()).collect()
}
fn default_local_only_patterns() -> Vec<String> {
    LOCAL_ONLY_PATTERNS.iter().map(|s| s.to_string()).collect()
}

impl Config {
    /// A fresh configuration with a new random device id.
    pub fn new(store: StoreConfig, device_name: String) -> Config {
        Config {
            device_id: new_device_id(),
            device_name,
            store,
            cache_size: DEFAULT_CACHE_SIZE,
            fetch_timeout_secs: default_fetch_timeout_secs(),
            db_path: None,
            mount_point: None,
            sync_interval_secs: default_sync_interval_secs(),
            secret_config_keys: Vec::new(),
            local_config_keys: default_local_config_keys(),
            local_only_patterns: default_local_only_patterns(),
            conflicts_log: None,
        }
    }

    /// Every config key that must never leave this machine.
    pub fn private_config_keys(&self) -> Vec<String> {
        let mut keys: Vec<String> = SECRET_CONFIG_KEYS.iter().map(|s| s.to_string()).collect();
        keys.extend(self.secret_config_keys.iter().cloned());
        keys.extend(self.local_config_keys.iter().cloned());
        keys.sort();
        keys.dedup();
        keys
    }

    /// True when a file of this name lives in the mount but never reaches the store.
    pub fn is_local_only(&self, file_name: &str) -> bool {
        self.local_only_patterns.iter().any(|p| {
            glob::Pattern::new(p)
                .map(|p| p.matches(file_name))
                .unwrap_or(false)
        })
    }

    pub fn conflicts_log_path(&self) -> PathBuf {
        self.conflicts_log.clone().unwrap_or_else(|| {
            home_dir()
                .join(".songfactory")
                .join("logs")
                .join("sync_conflicts.log")
        })
    }

    pub fn load(home: &Home) -> anyhow::Result<Config> {
        let path = home.config_path();
        let text = match std::fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => bail!(
                "songfs is not set up in {}: run `songfs init --store file:///path/to/folder` \
                 (or set SONGFS_HOME to the right folder)",
                home.root.display()
            ),
            Err(e) => return Err(e).with_context(|| format!("cannot read {}", path.display())),
        };
        serde_json::from_str(&text).with_context(|| {
            format!(
                "{} is not a valid songfs config: fix it or run `songfs init` again",
                path.display()
            )
        })
    }

    /// Written to a temp file and renamed, so a crash never leaves half a config.
    pub fn save(&self, home: &Home) -> anyhow::Result<()> {
        std::fs::create_dir_all(&home.root)
            .with_context(|| format!("cannot create {}", home.root.display()))?;
        let path = home.config_path();
        let tmp = path.with_extension("json.tmp");
        std::fs::write(&tmp, serde_json::to_vec_pretty(self)?)
            .with_context(|| format!("cannot write {}", tmp.display()))?;
        std::fs::rename(&tmp, &path).with_context(|| format!("cannot write {}", path.display()))?;
        Ok(())
    }
}

/// The state directory of this device.
#[derive(Debug, Clone)]
pub struct Home {
    pub root: PathBuf,
}

impl Home {
    /// `$SONGFS_HOME`, else `~/.songfs`.
    pub fn from_env() -> Home {
        let root = std::env::var_os("SONGFS_HOME")
            .map(PathBuf::from)
            .unwrap_or_else(|| home_dir().join(".songfs"));
        Home { root }
    }

    pub fn at(root: impl AsRef<Path>) -> Home {
        Home {
            root: root.as_ref().to_path_buf(),
        }
    }

    pub fn config_path(&self) -> PathBuf {
        self.root.join("config.json")
    }
    pub fn state_db_path(&self) -> PathBuf {
        self.root.join("state.db")
    }
    pub fn cache_dir(&self) -> PathBuf {
        self.root.join("cache")
    }
    pub fn log_dir(&self) -> PathBuf {
        self.root.join("logs")
    }
}

/// The user's home directory (see `os::home_dir`).
pub fn home_dir() -> PathBuf {
    crate::os::home_dir()
}

/// 128 random bits, hex: unique without coordination.
pub fn new_device_id() -> String {
    let bytes: [u8; 16] = rand::random();
    hex::encode(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn save_then_load_round_trips_and_ids_differ() {
        let dir = tempfile::tempdir().unwrap();
        let home = Home::at(dir.path());
        let store = StoreConfig {
            url: "file:///tmp/x".into(),
            s3_endpoint: None,
            s3_region: None,
        };
        let a = Config::new(store.clone(), "desk".into());
        a.save(&home).unwrap();
        let b = Config::load(&home).unwrap();
        assert_eq!(a.device_id, b.device_id);
        assert_eq!(b.store, store);
        assert_ne!(a.device_id, Config::new(store, "x".into()).device_id);
    }

    #[test]
    fn missing_config_says_what_to_do() {
        let dir = tempfile::tempdir().unwrap();
        let err = Config::load(&Home::at(dir.path())).unwrap_err().to_string();
        assert!(err.contains("songfs init"), "{err}");
    }

    #[test]
    fn backups_stay_local_and_secrets_are_private() {
        let c = Config::new(
            StoreConfig {
                url: "file:///x".into(),
                s3_endpoint: None,
                s3_region: None,
            },
            "d".into(),
        );
        assert!(c.is_local_only("songfactory_backup_2026-02-10.db"));
        assert!(!c.is_local_only("song_v1.mp3"));
        let keys = c.private_config_keys();
        assert!(keys.contains(&"api_key".to_string()));
        assert!(keys.contains(&"download_dir".to_string()));
    }
}
