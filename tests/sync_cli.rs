//! The user's commands, run as the real binary: `songfs init --db`, `songfs sync
//! [--json]`, `songfs conflicts [--json]`, and the one-line failure of a restored backup.

mod sync_util;

use std::path::Path;
use std::process::{Command, Output};

struct Machine {
    home: tempfile::TempDir,
    db: std::path::PathBuf,
}

fn songfs(m: &Machine, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_songfs"))
        .args(args)
        .env("SONGFS_HOME", m.home.path().join("songfs"))
        .env("HOME", m.home.path())
        .env_remove("RUST_LOG")
        .output()
        .unwrap()
}

fn ok(o: Output) -> String {
    assert!(
        o.status.success(),
        "stdout: {}\nstderr: {}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8(o.stdout).unwrap()
}

fn machine(store: &Path, name: &str) -> Machine {
    let home = tempfile::tempdir().unwrap();
    let db = home.path().join("songfactory.db");
    sync_util::make_db(&db, true);
    let m = Machine { home, db };
    let url = format!("file://{}", store.display());
    ok(songfs(
        &m,
        &[
            "init",
            "--store",
            &url,
            "--db",
            m.db.to_str().unwrap(),
            "--device-name",
            name,
        ],
    ));
    m
}

fn exec(m: &Machine, sql: &str) {
    rusqlite::Connection::open(&m.db)
        .unwrap()
        .execute_batch(sql)
        .unwrap();
}

#[test]
fn sync_and_conflicts_commands_report_what_happened() {
    let store = tempfile::tempdir().unwrap();
    let a = machine(store.path(), "laptop");
    let b = machine(store.path(), "desk");
    ok(songfs(&a, &["sync"]));
    ok(songfs(&b, &["sync"]));
    exec(&a, "UPDATE songs SET title = 'cli edit' WHERE id = 1; INSERT INTO genres (name, prompt_template) VALUES ('Zydeco Test', 'p')");
    let line = ok(songfs(&a, &["sync"]));
    assert!(
        line.starts_with("Synced: ") && line.contains("local changes sent"),
        "{line}"
    );
    let json: serde_json::Value =
        serde_json::from_str(ok(songfs(&b, &["sync", "--json"])).lines().last().unwrap()).unwrap();
    assert_eq!(json["received"]["songs"]["updated"], 1, "{json}");
    assert_eq!(json["received"]["genres"]["new"], 1, "{json}");
    assert_eq!(json["conflicts"], 0, "{}", ok(songfs(&b, &["conflicts"])));
    // A concurrent edit of one field on both.
    exec(&a, "UPDATE songs SET notes = 'from laptop' WHERE id = 3");
    exec(&b, "UPDATE songs SET notes = 'from desk' WHERE id = 3");
    ok(songfs(&a, &["sync"]));
    std::thread::sleep(std::time::Duration::from_millis(5));
    let line = ok(songfs(&b, &["sync"]));
    assert!(line.contains("1 conflict"), "{line}");
    let list: serde_json::Value =
        serde_json::from_str(&ok(songfs(&b, &["conflicts", "--json"]))).unwrap();
    assert_eq!(list.as_array().unwrap().len(), 1, "{list}");
    assert_eq!(list[0]["column"], "notes");
    let human = ok(songfs(&b, &["conflicts"]));
    assert!(
        human.contains("songs/") && human.contains("from laptop") && human.contains("from desk"),
        "{human}"
    );
    // The default conflicts log is the app's logs folder.
    assert!(b
        .home
        .path()
        .join(".songfactory/logs/sync_conflicts.log")
        .exists());
    // The app DB carries the seed's sync keys.
    let c = rusqlite::Connection::open(&b.db).unwrap();
    let provider: String = c
        .query_row(
            "SELECT value FROM sync_metadata WHERE key = 'sync_provider'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(provider, "songfs");
}

#[test]
fn a_restored_database_fails_with_one_clear_line() {
    let store = tempfile::tempdir().unwrap();
    let a = machine(store.path(), "laptop");
    ok(songfs(&a, &["sync"]));
    let backup = a.home.path().join("backup.db");
    std::fs::copy(&a.db, &backup).unwrap();
    exec(&a, "UPDATE songs SET title = 'x' WHERE id = 1");
    ok(songfs(&a, &["sync"]));
    std::fs::copy(&backup, &a.db).unwrap();
    let o = songfs(&a, &["sync"]);
    assert!(!o.status.success());
    let err = String::from_utf8(o.stderr).unwrap();
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(
        err.contains("restored") && err.contains("--accept-restore"),
        "{err}"
    );
    ok(songfs(&a, &["sync", "--accept-restore"]));
    ok(songfs(&a, &["sync"]));
}
