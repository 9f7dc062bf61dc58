//! What the real app and real users do to a database: rebuild tables, add columns,
//! restore backups, keep secrets in config; and what a shared store may hold: bad logs.

mod sync_util;

use std::io::Write;

use songfs::sync::cycle::Options;
use songfs::sync::SyncError;
use sync_util::{assert_same, files_under, folder_store, pair, settle, Device};

fn log_count(store: &std::path::Path) -> usize {
    files_under(store)
        .iter()
        .filter(|p| p.to_string_lossy().contains("/logs/"))
        .count()
}

#[test]
fn a_table_rebuild_is_not_mistaken_for_edits() {
    let (_s, a, b) = pair();
    settle(&a, &b);
    // The app's migration: create songs_new, copy, drop, rename.
    let ddl = a
        .text("SELECT sql FROM sqlite_master WHERE name = 'songs'")
        .unwrap();
    a.exec(&format!(
        "PRAGMA foreign_keys = OFF; BEGIN;
         {};
         INSERT INTO songs_new SELECT * FROM songs;
         DROP TABLE songs;
         ALTER TABLE songs_new RENAME TO songs;
         COMMIT;",
        ddl.replacen("CREATE TABLE songs", "CREATE TABLE songs_new", 1)
    ));
    let s = a.sync();
    assert!(s.sent.is_empty(), "a rebuild sent {:?}", s.sent);
    // Edits after the rebuild are still seen.
    a.exec("UPDATE songs SET title = 'after rebuild' WHERE id = 1");
    let s = a.sync();
    assert_eq!(s.sent["songs"].updated, 1);
    b.sync();
    assert_eq!(
        b.text("SELECT title FROM songs WHERE id = 1").unwrap(),
        "after rebuild"
    );
}

#[test]
fn an_added_column_sends_only_real_values_and_waits_for_the_other_side() {
    let (_s, a, b) = pair();
    settle(&a, &b);
    a.exec("ALTER TABLE songs ADD COLUMN mood TEXT DEFAULT 'calm'");
    let s = a.sync();
    assert!(
        s.sent.is_empty(),
        "defaults of a new column are not edits: {:?}",
        s.sent
    );
    a.exec("UPDATE songs SET mood = 'happy', notes = 'n' WHERE id = 1");
    let s = a.sync();
    assert_eq!(s.sent["songs"].updated, 1);
    // B has no such column yet: the rest applies, the value waits.
    let s = b.sync();
    assert!(s.errors.is_empty());
    assert_eq!(b.text("SELECT notes FROM songs WHERE id = 1").unwrap(), "n");
    b.exec("ALTER TABLE songs ADD COLUMN mood TEXT DEFAULT 'calm'");
    b.sync();
    assert_eq!(
        b.text("SELECT mood FROM songs WHERE id = 1").unwrap(),
        "happy"
    );
    assert_eq!(
        b.text("SELECT mood FROM songs WHERE id = 2").unwrap(),
        "calm"
    );
    let s = b.sync();
    assert!(s.sent.is_empty(), "{:?}", s.sent);
}

#[test]
fn a_restored_backup_is_detected_and_not_pushed_unless_accepted() {
    let (store, a, b) = pair();
    settle(&a, &b);
    let backup = a.dir.path().join("songfactory_backup.db");
    std::fs::copy(&a.db, &backup).unwrap();
    a.exec("UPDATE songs SET title = 'edited after the backup' WHERE id = 1");
    settle(&a, &b);
    // The user restores the backup by copying it over the live database.
    let _ = std::fs::remove_file(a.db.with_extension("db-wal"));
    let _ = std::fs::remove_file(a.db.with_extension("db-shm"));
    std::fs::copy(&backup, &a.db).unwrap();
    let before = log_count(store.path());
    let err = a.try_sync_with(Options::default()).unwrap_err();
    assert!(matches!(err, SyncError::RestoreDetected { .. }), "{err}");
    assert!(err.to_string().contains("--accept-restore"), "{err}");
    assert_eq!(log_count(store.path()), before, "nothing was sent");
    b.sync();
    assert_eq!(
        b.text("SELECT title FROM songs WHERE id = 1").unwrap(),
        "edited after the backup"
    );
    // Deliberately: the backup's contents become new edits.
    let s = a
        .try_sync_with(Options {
            accept_restore: true,
        })
        .unwrap();
    assert!(s.restore_accepted);
    assert_eq!(s.sent["songs"].updated, 1);
    b.sync();
    assert_ne!(
        b.text("SELECT title FROM songs WHERE id = 1").unwrap(),
        "edited after the backup"
    );
    assert_same(&a, &b);
    // And the next cycle is a normal one.
    a.sync();
}

#[test]
fn secrets_and_machine_local_config_never_reach_the_store() {
    let (store, a, b) = pair();
    a.exec(
        "INSERT INTO config (key, value) VALUES ('api_key', 'sk-PLANTED-SECRET-1'),
            ('lalals_password', 'PLANTED-SECRET-2'), ('download_dir', '/home/PLANTED-LOCAL'),
            ('ai_model', 'shared-model')",
    );
    b.exec("INSERT INTO config (key, value) VALUES ('api_key', 'desk-own-key')");
    settle(&a, &b);
    a.exec("UPDATE config SET value = 'sk-PLANTED-SECRET-3' WHERE key = 'api_key'");
    settle(&a, &b);
    for f in files_under(store.path()) {
        let bytes = std::fs::read(&f).unwrap();
        let text = String::from_utf8_lossy(&bytes);
        assert!(!text.contains("PLANTED"), "{} holds a secret", f.display());
        assert!(
            !text.contains("desk-own-key"),
            "{} holds a secret",
            f.display()
        );
    }
    assert_eq!(
        b.text("SELECT value FROM config WHERE key = 'ai_model'")
            .unwrap(),
        "shared-model"
    );
    assert_eq!(
        b.text("SELECT value FROM config WHERE key = 'api_key'")
            .unwrap(),
        "desk-own-key"
    );
    assert_eq!(
        b.count("SELECT COUNT(*) FROM config WHERE key = 'download_dir'"),
        0
    );
}

fn put(store: &std::path::Path, key: &str, body: &[u8]) {
    let p = store.join(key);
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    std::fs::File::create(p).unwrap().write_all(body).unwrap();
}

fn log_json(device: &str, version: u32, table: &str, column: &str, value: &str) -> String {
    format!(
        r#"{{"device_id":"{device}","sync_version":{version},"timestamp":"2026-02-10T12:00:00Z","seq":1,
            "changes":[{{"row":{{"table":"{table}","gid":"r:00ff"}},
                        "event":{{"Set":{{"column":"{column}","value":"{value}",
                                 "clock":{{"wall_ms":1,"counter":0,"device":"{device}"}},"replaces":[]}}}}}}]}}"#
    )
}

#[test]
fn bad_logs_are_refused_one_by_one_with_the_reason_and_the_rest_still_applies() {
    let (store, a, b) = pair();
    settle(&a, &b);
    let s = store.path();
    put(s, "logs/bad0/000000000001.json", b"this is not json");
    put(
        s,
        "logs/bad1/000000000001.json",
        log_json("bad1", 3, "songs", "title", "x").as_bytes(),
    );
    put(
        s,
        "logs/bad2/000000000001.json",
        log_json("bad2", 2, "nosuch", "title", "x").as_bytes(),
    );
    put(
        s,
        "logs/bad3/000000000001.json",
        log_json("bad3", 2, "songs", "title = 1; --", "x").as_bytes(),
    );
    put(
        s,
        "logs/bad4/000000000001.json",
        log_json("bad4", 2, "config", "value", "PWNED")
            .replace("r:00ff", "api_key")
            .as_bytes(),
    );
    // Over the size cap: a sparse file, never read.
    let big = s.join("logs/bad5/000000000001.json");
    std::fs::create_dir_all(big.parent().unwrap()).unwrap();
    std::fs::File::create(&big)
        .unwrap()
        .set_len(300 << 20)
        .unwrap();
    a.exec("UPDATE songs SET notes = 'good change' WHERE id = 2");
    let s = a.try_sync_with(Options::default()).unwrap();
    assert_eq!(s.errors.len(), 5, "{:?}", s.errors);
    let s = b.try_sync_with(Options::default()).unwrap();
    assert_eq!(
        b.text("SELECT notes FROM songs WHERE id = 2").unwrap(),
        "good change"
    );
    let errors = s.errors.join("\n");
    assert_eq!(s.errors.len(), 5, "{errors}");
    for (dev, why) in [
        ("bad0", "not valid JSON"),
        ("bad1", "sync_version 3"),
        ("bad2", "nosuch"),
        ("bad3", "not a plain name"),
        ("bad5", "size limit"),
    ] {
        assert!(
            s.errors
                .iter()
                .any(|e| e.contains(&format!("logs/{dev}/")) && e.contains(why)),
            "{dev}: {errors}"
        );
    }
    // A remote change of a secret key is never applied.
    assert_eq!(
        b.count("SELECT COUNT(*) FROM config WHERE value = 'PWNED'"),
        0
    );
    // Reported once; set aside and retried quietly afterwards.
    let s = b.try_sync_with(Options::default()).unwrap();
    assert!(s.errors.is_empty(), "{:?}", s.errors);
    assert_eq!(s.logs_applied, 0);
}

#[test]
fn a_new_device_joins_from_compacted_snapshots() {
    let store = tempfile::tempdir().unwrap();
    let a = Device::new(folder_store(store.path()), "a", true);
    let b = Device::new(folder_store(store.path()), "b", true);
    a.sync();
    b.sync();
    for i in 0..songfs::sync::changelog::COMPACT_AFTER_LOGS + 1 {
        a.exec(&format!(
            "UPDATE songs SET notes = 'edit {i}' WHERE id = {}",
            1 + i % 5
        ));
        if i == 3 {
            a.exec("INSERT INTO tags (name) VALUES ('late tag')");
        }
        a.sync();
        if i == 10 {
            b.sync();
        }
    }
    let a_id = &a.cfg.device_id;
    let files = files_under(store.path());
    assert!(
        files
            .iter()
            .any(|p| p.to_string_lossy().contains(&format!("snapshots/{a_id}/"))),
        "A's logs were compacted"
    );
    let a_logs = files
        .iter()
        .filter(|p| p.to_string_lossy().contains(&format!("logs/{a_id}/")))
        .count();
    assert!(a_logs < 5, "{a_logs} logs left");
    // C installs later than A and B, so its seeded rows carry other install times; its
    // first log (those rows at the zero clock) must reach A and B before all agree.
    let c = Device::new(folder_store(store.path()), "c", true);
    c.sync();
    b.sync();
    a.sync();
    c.sync();
    assert_same(&a, &c);
    assert_same(&a, &b);
    assert_eq!(
        c.count("SELECT COUNT(*) FROM tags WHERE name = 'late tag'"),
        1
    );
}
