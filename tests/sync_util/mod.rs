//! Devices for DB sync tests: each has its own SONGFS_HOME (state.db, config) and its own
//! Song Factory database made from the real v5 schema fixture (+ the first-launch seed
//! rows), all sharing one store (a folder, or S3).
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rusqlite::Connection;
use songfs::config::{Config, Home, StoreConfig};
use songfs::sync::cycle::{self, Options, Summary};
use songfs::sync::SyncError;

pub const SCHEMA_SQL: &str = include_str!("../fixtures/songfactory-v5.sql");
pub const SEED_SQL: &str = include_str!("../fixtures/seed-rows.sql");

/// A database as a fresh install leaves it (`seeded`: after the app's first launch).
pub fn make_db(path: &Path, seeded: bool) {
    let c = Connection::open(path).unwrap();
    c.execute_batch(SCHEMA_SQL).unwrap();
    if seeded {
        c.execute_batch(SEED_SQL).unwrap();
    }
}

pub struct Device {
    pub dir: tempfile::TempDir,
    pub cfg: Config,
    pub home: Home,
    pub db: PathBuf,
}

pub fn folder_store(dir: &Path) -> StoreConfig {
    StoreConfig {
        url: format!("file://{}", dir.display()),
        s3_endpoint: None,
        s3_region: None,
        encrypted: false,
    }
}

impl Device {
    /// A device with a fresh (seeded) database, set up like `songfs init --db`.
    pub fn new(store: StoreConfig, name: &str, seeded: bool) -> Device {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("songfactory.db");
        make_db(&db, seeded);
        Device::with_db(store, name, dir, db)
    }

    pub fn with_db(store: StoreConfig, name: &str, dir: tempfile::TempDir, db: PathBuf) -> Device {
        let home = Home::at(dir.path().join("songfs"));
        let mut cfg = Config::new(store, name.to_string());
        cfg.db_path = Some(db.clone());
        cfg.conflicts_log = Some(dir.path().join("sync_conflicts.log"));
        cfg.mount_point = Some(PathBuf::from(format!("/mnt/{name}/audio")));
        // The store's format record and its id, as `songfs init` writes and records them
        // (the `songfs` binary refuses a store without them).
        let rt = tokio::runtime::Runtime::new().unwrap();
        cfg.store_id = rt
            .block_on(songfs::store::format::ensure(&cfg))
            .unwrap()
            .store_id;
        cfg.save(&home).unwrap();
        songfs::sync::snapshot_on_init(&cfg, &home).unwrap();
        Device { dir, cfg, home, db }
    }

    pub fn try_sync_with(&self, opts: Options) -> Result<Summary, SyncError> {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let store = rt.block_on(songfs::store::open(&self.cfg.store)).unwrap();
        let store: Arc<dyn songfs::store::ObjectStore> = store;
        cycle::run(&self.cfg, &self.home, store, rt.handle(), opts)
    }

    pub fn sync(&self) -> Summary {
        let s = self
            .try_sync_with(Options::default())
            .unwrap_or_else(|e| panic!("sync of {} failed: {e}", self.cfg.device_name));
        assert!(
            s.errors.is_empty(),
            "{}: {:?}",
            self.cfg.device_name,
            s.errors
        );
        s
    }

    pub fn conn(&self) -> Connection {
        let c = Connection::open(&self.db).unwrap();
        c.busy_timeout(std::time::Duration::from_secs(5)).unwrap();
        c
    }

    pub fn exec(&self, sql: &str) {
        self.conn().execute_batch(sql).unwrap();
    }

    pub fn count(&self, sql: &str) -> i64 {
        self.conn().query_row(sql, [], |r| r.get(0)).unwrap()
    }

    pub fn text(&self, sql: &str) -> Option<String> {
        self.conn().query_row(sql, [], |r| r.get(0)).unwrap()
    }

    pub fn conflicts(&self) -> Vec<serde_json::Value> {
        let p = self.cfg.conflicts_log_path();
        std::fs::read_to_string(p)
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }

    /// The database's content by identity: rowids left out, references shown as the
    /// referenced row's name/title, timestamps kept.
    pub fn content(&self) -> BTreeMap<String, Vec<String>> {
        content_of(&self.conn())
    }
}

fn label(c: &Connection, table: &str, id: Option<i64>) -> String {
    let Some(id) = id else {
        return "NULL".into();
    };
    let col = match table {
        "songs" | "lore" => "title",
        _ => "name",
    };
    c.query_row(
        &format!("SELECT {col} FROM {table} WHERE id = ?1"),
        [id],
        |r| r.get::<_, String>(0),
    )
    .unwrap_or_else(|_| format!("<dangling {table} {id}>"))
}

pub fn content_of(c: &Connection) -> BTreeMap<String, Vec<String>> {
    let refs: &[(&str, &str, &str)] = &[
        ("songs", "genre_id", "genres"),
        ("distributions", "song_id", "songs"),
        ("cd_tracks", "project_id", "cd_projects"),
        ("cd_tracks", "song_id", "songs"),
        ("song_tags", "song_id", "songs"),
        ("song_tags", "tag_id", "tags"),
    ];
    let mut out = BTreeMap::new();
    for table in [
        "config",
        "artists",
        "tags",
        "genres",
        "lore",
        "lore_presets",
        "cd_projects",
        "songs",
        "distributions",
        "cd_tracks",
        "song_tags",
    ] {
        // Secrets and machine-local config keys differ between devices by design.
        let private: Vec<String> = songfs::config::SECRET_CONFIG_KEYS
            .iter()
            .chain(songfs::config::LOCAL_CONFIG_KEYS)
            .map(|k| format!("'{k}'"))
            .collect();
        let sql = if table == "config" {
            format!(
                "SELECT * FROM config WHERE key NOT IN ({})",
                private.join(",")
            )
        } else {
            format!("SELECT * FROM {table}")
        };
        let mut stmt = c.prepare(&sql).unwrap();
        let names: Vec<String> = stmt.column_names().map(|s| s.to_string()).collect();
        let mut rows = stmt.query([]).unwrap();
        let mut lines = Vec::new();
        while let Some(r) = rows.next().unwrap() {
            let mut obj = BTreeMap::new();
            for (i, n) in names.iter().enumerate() {
                if n == "id" {
                    continue;
                }
                let v: rusqlite::types::Value = r.get(i).unwrap();
                let shown = match refs.iter().find(|(t, col, _)| *t == table && col == n) {
                    Some((_, _, target)) => {
                        let id = match v {
                            rusqlite::types::Value::Integer(i) => Some(i),
                            _ => None,
                        };
                        label(c, target, id)
                    }
                    None if table == "lore_presets" && n == "lore_ids" => {
                        let text = match v {
                            rusqlite::types::Value::Text(t) => t,
                            other => format!("{other:?}"),
                        };
                        let ids: Vec<i64> = serde_json::from_str(&text).unwrap_or_default();
                        let mut titles: Vec<String> =
                            ids.iter().map(|i| label(c, "lore", Some(*i))).collect();
                        titles.sort();
                        titles.join("|")
                    }
                    None => format!("{v:?}"),
                };
                obj.insert(n.clone(), shown);
            }
            lines.push(serde_json::to_string(&obj).unwrap());
        }
        lines.sort();
        out.insert(table.to_string(), lines);
    }
    out
}

/// Every file under `dir`, recursively.
pub fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else {
                out.push(p);
            }
        }
    }
    out
}

/// Asserts two devices hold the same content, table by table.
pub fn assert_same(a: &Device, b: &Device) {
    let (ca, cb) = (a.content(), b.content());
    for (t, rows) in &ca {
        assert_eq!(
            rows, &cb[t],
            "table {t} differs between {} and {}",
            a.cfg.device_name, b.cfg.device_name
        );
    }
}

/// Two seeded devices, "laptop" and "desk", sharing one folder store (kept alive by the
/// returned TempDir).
pub fn pair() -> (tempfile::TempDir, Device, Device) {
    let store = tempfile::tempdir().unwrap();
    let a = Device::new(folder_store(store.path()), "laptop", true);
    let b = Device::new(folder_store(store.path()), "desk", true);
    (store, a, b)
}

/// Two seeded devices on one folder store, in the order other devices read their logs
/// (by device id): for tests where which log arrives first matters.
pub fn in_log_order(store: &Path) -> [Device; 2] {
    let mut devs = ["x", "y"].map(|n| Device::new(folder_store(store), n, true));
    devs.sort_by(|p, q| p.cfg.device_id.cmp(&q.cfg.device_id));
    devs
}

/// Syncs until both have each other's changes (A, B, A).
pub fn settle(a: &Device, b: &Device) {
    a.sync();
    b.sync();
    a.sync();
}
