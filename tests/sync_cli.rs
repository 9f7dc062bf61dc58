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

/// Two `songfs sync` of one home at once, no daemon running (a scheduled sync and the
/// app's "Sync Now"): they take turns on `sync.lock`, both succeed, and every edit is
/// sent once: the other device receives each new song once, with no conflict.
#[test]
fn two_syncs_of_one_home_at_once_take_turns_and_send_each_edit_once() {
    let store = tempfile::tempdir().unwrap();
    let a = machine(store.path(), "laptop");
    let b = machine(store.path(), "desk");
    ok(songfs(&a, &["sync"]));
    ok(songfs(&b, &["sync"]));
    for round in 0..3 {
        exec(
            &a,
            &format!(
                "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 400)
                 INSERT INTO songs (title, prompt, lyrics) SELECT 'twin {round} ' || i, 'p', 'l' FROM n;
                 UPDATE songs SET notes = 'round {round}' WHERE id = 2;"
            ),
        );
        let spawn = || {
            Command::new(env!("CARGO_BIN_EXE_songfs"))
                .args(["sync", "--json"])
                .env("SONGFS_HOME", a.home.path().join("songfs"))
                .env("HOME", a.home.path())
                .env_remove("RUST_LOG")
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap()
        };
        let (first, second) = (spawn(), spawn());
        let sent: i64 = [first, second]
            .into_iter()
            .map(|child| {
                let out = ok(child.wait_with_output().unwrap());
                let summary: serde_json::Value =
                    serde_json::from_str(out.lines().last().unwrap()).unwrap();
                let songs = &summary["sent"]["songs"];
                songs["new"].as_i64().unwrap_or(0) + songs["updated"].as_i64().unwrap_or(0)
            })
            .sum();
        assert_eq!(sent, 401, "round {round}: each edit sent by one of the two");
        let json: serde_json::Value =
            serde_json::from_str(ok(songfs(&b, &["sync", "--json"])).lines().last().unwrap())
                .unwrap();
        assert_eq!(
            json["received"]["songs"]["new"], 400,
            "round {round}: {json}"
        );
        assert_eq!(json["conflicts"], 0, "round {round}: {json}");
    }
    let c = rusqlite::Connection::open(&b.db).unwrap();
    let (twins, distinct): (i64, i64) = c
        .query_row(
            "SELECT COUNT(*), COUNT(DISTINCT title) FROM songs WHERE title LIKE 'twin %'",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .unwrap();
    assert_eq!((twins, distinct), (1200, 1200), "each song arrived once");
    let notes: String = c
        .query_row("SELECT notes FROM songs WHERE id = 2", [], |r| r.get(0))
        .unwrap();
    assert_eq!(notes, "round 2");
}
