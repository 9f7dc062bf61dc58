//! `kill -9` of a real `songfs sync` process (the built binary, its own SONGFS_HOME) at
//! varied moments of a big cycle, then a rerun to completion:
//! - while it applies another device's big batch: the rerun finishes the apply, the
//!   databases end equal by content, every kill left both SQLite files intact and each
//!   remote log either not applied at all or applied whole, the device never sends the
//!   remote changes back as its own, and a second sync on both is a no-op;
//! - while it exports its own big batch: the other device receives every edit exactly
//!   once (one row per inserted song, each edit in exactly one log);
//! - between stamping the app database with the cycle's marker and remembering it: the
//!   next run does not take the database for a restored backup.
//!
//! `tests/sync_crash.rs` stops the cycle at named points inside the library; this file
//! kills the whole process wherever it is. Some kills come at fixed times after the
//! start; the others when the test sees the process reach a step (its apply plan in
//! state.db, the batch in the app database, its log in the store). To hit a gap between
//! two commits every time, the test takes the write lock of the database of the second
//! commit once the first is seen, so the process waits right there, and kills it.
//! Every test prints where each kill landed and what it left behind, and asserts that
//! the gaps it aims at were hit.

mod sync_util;

use std::collections::{BTreeMap, BTreeSet};
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use rusqlite::Connection;
use serde_json::Value;
use sync_util::{assert_same, files_under, folder_store, Device};

/// Songs the batch inserts, and songs of an earlier round it updates: 1,500 rows, about
/// 15,000 field changes, a couple of seconds of work for a debug-profile `songfs sync`,
/// which the kills interrupt at several points (more rows only make the test slower).
const NEW_SONGS: usize = 1000;
const UPDATED_SONGS: usize = 500;
/// Songs of the earlier round the batch deletes, and new songs it tags.
const DELETED_SONGS: usize = 100;
const TAGGED_SONGS: usize = NEW_SONGS / 10;
/// Songs the second, smaller batch inserts.
const MORE_SONGS: usize = 300;

/// `songfs sync` of `d`, run as the user would: its own SONGFS_HOME and HOME.
fn sync_cmd(d: &Device, json: bool) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_songfs"));
    c.arg("sync");
    if json {
        c.arg("--json");
    }
    c.env("SONGFS_HOME", &d.home.root)
        .env("HOME", d.dir.path())
        .env("RUST_LOG", "songfs=info")
        .env_remove("SONGFS_FAILPOINT");
    c
}

/// A full `songfs sync` that must succeed; returns its stdout.
fn cli_sync(d: &Device, json: bool) -> String {
    let o = sync_cmd(d, json).output().unwrap();
    assert!(
        o.status.success(),
        "songfs sync of {} failed: {}\n{}",
        d.cfg.device_name,
        o.status,
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8(o.stdout).unwrap()
}

/// When to kill an attempt.
enum KillAt<'a> {
    /// This long after the spawn.
    After(u64),
    /// As soon as `seen` says so (polled about every half millisecond): a moment chosen
    /// by what the process has done, not by the clock.
    When(&'a str, &'a dyn Fn() -> bool),
    /// When `seen`, the test takes the write lock of `lock`'s database, waits until
    /// `then` (at most 3 s) and kills. The process stops at its next write to that
    /// database (it waits out the lock, busy timeout 5 s), so a gap that ends with such a
    /// write is hit every time, not by luck.
    Hold {
        what: &'a str,
        lock: Lock,
        seen: &'a dyn Fn() -> bool,
        then: &'a dyn Fn() -> bool,
    },
}

/// Whose write lock a [`KillAt::Hold`] takes.
enum Lock {
    /// The app database.
    App,
    /// songfs's state.db.
    State,
}

/// How one attempt ended.
enum Attempt {
    /// SIGKILLed at `when`.
    Killed(String),
    /// It finished before the kill.
    Finished,
}

/// Starts `songfs sync` of `d` and kills it with SIGKILL at `at`.
fn attempt(d: &Device, at: &KillAt) -> Attempt {
    let log = d.dir.path().join("attempt.log");
    let mut child: Child = sync_cmd(d, false)
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let start = Instant::now();
    let mut lock = None;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            assert!(
                status.success(),
                "songfs sync of {} failed on its own: {status}\n{}",
                d.cfg.device_name,
                std::fs::read_to_string(&log).unwrap_or_default()
            );
            return Attempt::Finished;
        }
        let now = match at {
            KillAt::After(ms) => start.elapsed() >= Duration::from_millis(*ms),
            KillAt::When(_, seen) | KillAt::Hold { seen, .. } => {
                seen() || start.elapsed() > Duration::from_secs(60)
            }
        };
        if now {
            if let KillAt::Hold {
                then, lock: which, ..
            } = at
            {
                let path = match which {
                    Lock::App => d.db.clone(),
                    Lock::State => d.home.state_db_path(),
                };
                let c = Connection::open(path).unwrap();
                c.busy_timeout(Duration::from_secs(5)).unwrap();
                c.execute_batch("BEGIN IMMEDIATE").unwrap();
                lock = Some(c);
                let held = Instant::now();
                while !then() && held.elapsed() < Duration::from_secs(3) {
                    std::thread::sleep(Duration::from_micros(500));
                }
                // Let it reach the write it now waits for.
                std::thread::sleep(Duration::from_millis(20));
            }
            break;
        }
        std::thread::sleep(Duration::from_micros(500));
    }
    // Child::kill is SIGKILL on Unix.
    let _ = child.kill();
    let after = start.elapsed();
    let status = child.wait().unwrap();
    drop(lock); // rolls back
    if status.signal() != Some(libc::SIGKILL) {
        // It exited between the last look and the kill.
        assert!(
            status.success(),
            "{status}: {}",
            std::fs::read_to_string(&log).unwrap_or_default()
        );
        return Attempt::Finished;
    }
    Attempt::Killed(match at {
        KillAt::After(_) => format!("killed {after:?} after the start"),
        KillAt::When(what, _) => format!("killed {after:?} after the start, {what}"),
        KillAt::Hold { what, .. } => {
            format!("killed {after:?} after the start, {what}")
        }
    })
}

/// A number from a SQLite file, or None while it cannot be read.
fn peek(db: &Path, sql: &str) -> Option<i64> {
    Connection::open(db)
        .ok()?
        .query_row(sql, [], |r| r.get(0))
        .ok()
}

/// `PRAGMA integrity_check` of a SQLite file (the app's, or songfs's state.db).
fn assert_intact(db: &Path, after: &str) {
    let c = Connection::open(db).unwrap();
    let rows: Vec<String> = c
        .prepare("PRAGMA integrity_check")
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .map(|r| r.unwrap())
        .collect();
    assert_eq!(rows, ["ok"], "{} after {after}", db.display());
}

/// One change log (or snapshot) in the store, decoded loosely: the test reads the wire
/// format as JSON so it checks what is really in the store, not what the library thinks.
struct StoredLog {
    key: String,
    changes: Vec<Value>,
}

fn logs_of(store: &Path, device_id: &str) -> Vec<StoredLog> {
    let mut out: Vec<StoredLog> = files_under(store)
        .into_iter()
        .filter(|p| {
            let s = p.to_string_lossy();
            (s.contains(&format!("logs/{device_id}/"))
                || s.contains(&format!("snapshots/{device_id}/")))
                && s.ends_with(".json")
        })
        .map(|p| {
            let v: Value = serde_json::from_slice(&std::fs::read(&p).unwrap()).unwrap();
            StoredLog {
                key: p
                    .strip_prefix(store)
                    .unwrap()
                    .to_string_lossy()
                    .into_owned(),
                changes: v["changes"].as_array().cloned().unwrap_or_default(),
            }
        })
        .collect();
    out.sort_by(|a, b| a.key.cmp(&b.key));
    out
}

fn row_of(change: &Value) -> (String, String) {
    (
        change["row"]["table"].as_str().unwrap().to_string(),
        change["row"]["gid"].as_str().unwrap().to_string(),
    )
}

/// The values a log sets for `songs.<column>`.
fn song_values(log: &StoredLog, column: &str) -> Vec<String> {
    log.changes
        .iter()
        .filter(|c| c["row"]["table"] == "songs" && c["event"]["Set"]["column"] == column)
        .filter_map(|c| c["event"]["Set"]["value"].as_str().map(String::from))
        .collect()
}

fn titles_like(d: &Device, pattern: &str) -> BTreeSet<String> {
    let c = d.conn();
    let mut stmt = c
        .prepare("SELECT title FROM songs WHERE title LIKE ?1")
        .unwrap();
    let titles = stmt
        .query_map([pattern], |r| r.get(0))
        .unwrap()
        .map(|r| r.unwrap())
        .collect();
    titles
}

/// Inserts `n` songs titled `<prefix> <i>` in one transaction (as the app's importer
/// would, minus the per-row commit).
fn insert_songs(d: &Device, prefix: &str, n: usize) {
    let mut c = d.conn();
    let tx = c.transaction().unwrap();
    {
        let mut ins = tx
            .prepare(
                "INSERT INTO songs (title, genre_id, prompt, lyrics, status, notes, task_id, music_style)
                 VALUES (?1, (SELECT id FROM genres ORDER BY id LIMIT 1 OFFSET ?2), ?3, ?4, 'completed', ?5, ?6, 'kill test')",
            )
            .unwrap();
        for i in 0..n {
            ins.execute(rusqlite::params![
                format!("{prefix} {i}"),
                (i % 20) as i64,
                format!("prompt {prefix} {i}"),
                format!("lyrics of {prefix} {i}\nsecond line"),
                format!("notes {prefix} {i}"),
                format!("task-{prefix}-{i}").replace(' ', "-"),
            ])
            .unwrap();
        }
    }
    tx.commit().unwrap();
}

/// Songs linked to the tag 'kill tag'.
fn tagged(d: &Device) -> usize {
    d.count(
        "SELECT COUNT(*) FROM song_tags st JOIN tags t ON t.id = st.tag_id
         WHERE t.name = 'kill tag'",
    ) as usize
}

fn assert_no_conflicts(d: &Device) {
    let c = d.conflicts();
    assert!(
        c.is_empty(),
        "{} logged conflicts: {:?}",
        d.cfg.device_name,
        &c[..c.len().min(3)]
    );
}

/// Two seeded devices on one folder store, synced with each other.
fn setup() -> (tempfile::TempDir, Device, Device) {
    let store = tempfile::tempdir().unwrap();
    let a = Device::new(folder_store(store.path()), "laptop", true);
    let b = Device::new(folder_store(store.path()), "desk", true);
    a.sync();
    cli_sync(&b, false);
    a.sync();
    (store, a, b)
}

/// Runs the attempts of `plan` in turn (until one finishes on its own), checks the
/// databases after every kill (`check` gets the kill's description), then reruns
/// `songfs sync` to completion. Returns a line per kill: when, and the state it left
/// (`state`).
fn kill_then_finish(
    d: &Device,
    plan: &[KillAt],
    state: impl Fn() -> String,
    mut check: impl FnMut(&str),
) -> Vec<String> {
    let mut kills = Vec::new();
    for at in plan {
        match attempt(d, at) {
            Attempt::Finished => break,
            Attempt::Killed(when) => {
                let what = format!("{when}; left: {}", state());
                assert_intact(&d.db, &what);
                assert_intact(&d.home.state_db_path(), &what);
                check(&what);
                kills.push(what);
            }
        }
    }
    cli_sync(d, false);
    assert!(
        !kills.is_empty(),
        "every attempt finished before its kill: nothing was tested"
    );
    eprintln!(
        "{} killed {} time(s): {kills:#?}",
        d.cfg.device_name,
        kills.len()
    );
    kills
}

#[test]
fn killed_while_applying_a_big_batch_finishes_on_rerun_without_echo() {
    let (store, a, b) = setup();
    // Round 0: songs B has, for A to update or delete in the batch.
    insert_songs(&a, "kill base", UPDATED_SONGS);
    insert_songs(&a, "kill gone", DELETED_SONGS);
    a.sync();
    cli_sync(&b, false);
    assert_eq!(titles_like(&b, "kill base %").len(), UPDATED_SONGS);
    assert_eq!(titles_like(&b, "kill gone %").len(), DELETED_SONGS);
    let b_logs_before: BTreeSet<String> = logs_of(store.path(), &b.cfg.device_id)
        .into_iter()
        .map(|l| l.key)
        .collect();
    let a_logs_before: BTreeSet<String> = logs_of(store.path(), &a.cfg.device_id)
        .into_iter()
        .map(|l| l.key)
        .collect();

    // The batch: 500 updates of three fields each, 1,000 inserts, 100 deletes, and a
    // new tag on every tenth new song (rows that reference rows of the same batch).
    a.exec(
        "UPDATE songs SET title = replace(title, 'kill base', 'kill upd'),
                          notes = 'updated ' || id, status = 'submitted'
         WHERE title LIKE 'kill base %'",
    );
    insert_songs(&a, "kill new", NEW_SONGS);
    a.exec(
        "DELETE FROM songs WHERE title LIKE 'kill gone %';
         INSERT INTO tags (name) VALUES ('kill tag');
         INSERT INTO song_tags (song_id, tag_id)
           SELECT s.id, t.id FROM songs s, tags t
           WHERE t.name = 'kill tag' AND s.title LIKE 'kill new %0';",
    );
    assert_eq!(tagged(&a), TAGGED_SONGS);
    a.sync();
    let batch: Vec<StoredLog> = logs_of(store.path(), &a.cfg.device_id)
        .into_iter()
        .filter(|l| !a_logs_before.contains(&l.key))
        .collect();
    // One log (far under MAX_CHANGES_PER_LOG): all of it or none of it may be applied.
    assert_eq!(batch.len(), 1, "A's batch should be one log");
    let mut batch_rows: BTreeSet<(String, String)> = batch
        .iter()
        .flat_map(|l| l.changes.iter().map(row_of))
        .collect();
    // The titles each of A's logs sets: after every kill, B must hold, of each log,
    // all of them or none, and a later log only once the earlier ones are in.
    let titles_per_log: Vec<BTreeSet<String>> = batch
        .iter()
        .map(|l| song_values(l, "title").into_iter().collect())
        .collect();
    assert_eq!(
        titles_per_log.iter().map(|t| t.len()).sum::<usize>(),
        NEW_SONGS + UPDATED_SONGS
    );

    let check = |what: &str| {
        let have = titles_like(&b, "kill %");
        let mut earlier_all = true;
        for (i, titles) in titles_per_log.iter().enumerate() {
            let n = titles.intersection(&have).count();
            assert!(
                n == 0 || n == titles.len(),
                "{what}: {n} of the {} titles of A's log {} applied",
                titles.len(),
                batch[i].key
            );
            assert!(
                n == 0 || earlier_all,
                "{what}: {} applied before an earlier log",
                batch[i].key
            );
            earlier_all &= n == titles.len();
        }
        // An updated row is whole: its three new fields together or none of them.
        let c = b.conn();
        let torn: i64 = c
            .query_row(
                "SELECT COUNT(*) FROM songs WHERE title LIKE 'kill upd %'
                   AND (notes NOT LIKE 'updated %' OR status <> 'submitted')
                 OR title LIKE 'kill base %' AND (notes LIKE 'updated %' OR status = 'submitted')",
                [],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(torn, 0, "{what}: half-updated rows");
        // The deletes and the tag links go with the rest of the log.
        let state = (
            titles_like(&b, "kill new %").len(),
            titles_like(&b, "kill gone %").len(),
            tagged(&b),
        );
        assert!(
            state == (0, DELETED_SONGS, 0) || state == (NEW_SONGS, 0, TAGGED_SONGS),
            "{what}: (new songs, songs to delete, tagged songs) = {state:?}"
        );
    };
    let state_db = b.home.state_db_path();
    let intents = || peek(&state_db, "SELECT COUNT(*) FROM sync_intent");
    let applied = || titles_like(&b, "kill new %").len();
    let plan_stored = || intents().unwrap_or(0) > 0;
    let plan = [
        KillAt::After(15),
        KillAt::After(60),
        // songfs's apply is two steps (apply.rs): its plan ("intents") is stored in
        // state.db, then written to the app database, then cleared. This batch is
        // stopped in the first gap, the next batch in the second.
        KillAt::Hold {
            what: "with the apply plan in state.db, the app database not yet written",
            lock: Lock::App,
            seen: &plan_stored,
            then: &|| true,
        },
        // Most likely while that run finishes the interrupted apply.
        KillAt::After(150),
    ];
    let state = || {
        format!(
            "{}/{NEW_SONGS} of A's new songs in B's app database, {} pending intent(s)",
            applied(),
            intents().map_or("?".into(), |n| n.to_string())
        )
    };
    let mut in_gap = false;
    kill_then_finish(&b, &plan, state, |what| {
        check(what);
        in_gap |= applied() == 0 && intents().unwrap_or(0) > 0;
    });
    assert!(
        in_gap,
        "no kill between storing the plan and writing the app database"
    );

    assert_eq!(titles_like(&b, "kill new %").len(), NEW_SONGS);
    assert_eq!(titles_like(&b, "kill upd %").len(), UPDATED_SONGS);
    assert_eq!(titles_like(&b, "kill gone %").len(), 0);
    assert_eq!(tagged(&b), TAGGED_SONGS);
    assert_same(&a, &b);
    assert_no_conflicts(&b);

    // A second, smaller batch, stopped in the apply's second gap: after the app
    // database commit, before state.db's.
    let a_logs_before: BTreeSet<String> = logs_of(store.path(), &a.cfg.device_id)
        .into_iter()
        .map(|l| l.key)
        .collect();
    insert_songs(&a, "kill more", MORE_SONGS);
    a.exec("UPDATE songs SET notes = 'second ' || id WHERE title LIKE 'kill new %0'");
    a.sync();
    let batch: Vec<StoredLog> = logs_of(store.path(), &a.cfg.device_id)
        .into_iter()
        .filter(|l| !a_logs_before.contains(&l.key))
        .collect();
    assert_eq!(batch.len(), 1, "A's second batch should be one log");
    batch_rows.extend(batch.iter().flat_map(|l| l.changes.iter().map(row_of)));
    let second = || {
        (
            titles_like(&b, "kill more %").len(),
            b.count("SELECT COUNT(*) FROM songs WHERE notes LIKE 'second %'") as usize,
        )
    };
    let second_visible = || {
        peek(
            &b.db,
            "SELECT EXISTS (SELECT 1 FROM songs WHERE title LIKE 'kill more %')",
        ) == Some(1)
    };
    let plan = [KillAt::Hold {
        what: "with the batch committed to the app database, not yet to state.db",
        lock: Lock::State,
        seen: &plan_stored,
        then: &second_visible,
    }];
    let state = || {
        format!(
            "(new songs, updated notes) = {:?} in B's app database, {} pending intent(s)",
            second(),
            intents().map_or("?".into(), |n| n.to_string())
        )
    };
    let mut in_gap = false;
    kill_then_finish(&b, &plan, state, |what| {
        let now = second();
        assert!(
            now == (0, 0) || now == (MORE_SONGS, TAGGED_SONGS),
            "{what}: half of the second batch applied"
        );
        in_gap |= now.0 == MORE_SONGS && intents().unwrap_or(0) > 0;
    });
    assert!(
        in_gap,
        "no kill between the app database's commit and state.db's"
    );
    assert_eq!(second(), (MORE_SONGS, TAGGED_SONGS));
    assert_same(&a, &b);
    assert_no_conflicts(&b);

    // B never sent A's rows back as its own edits.
    let echoed: Vec<(String, String, String)> = logs_of(store.path(), &b.cfg.device_id)
        .into_iter()
        .filter(|l| !b_logs_before.contains(&l.key))
        .flat_map(|l| {
            let key = l.key.clone();
            l.changes
                .iter()
                .map(row_of)
                .filter(|r| batch_rows.contains(r))
                .map(move |(t, g)| (key.clone(), t, g))
                .collect::<Vec<_>>()
        })
        .collect();
    assert!(
        echoed.is_empty(),
        "B re-exported {} change(s) of A's rows, e.g. {:?}",
        echoed.len(),
        &echoed[..echoed.len().min(3)]
    );

    // A second sync on both changes nothing and sends nothing.
    let before = b.content();
    let sa = a.sync();
    assert!(sa.sent.is_empty(), "A sent {:?}", sa.sent);
    assert!(sa.received.is_empty(), "A received {:?}", sa.received);
    let sb: Value = serde_json::from_str(cli_sync(&b, true).lines().last().unwrap()).unwrap();
    assert_eq!(sb["sent"], serde_json::json!({}), "{sb}");
    assert_eq!(sb["received"], serde_json::json!({}), "{sb}");
    assert_eq!(b.content(), before);
    assert_same(&a, &b);
}

#[test]
fn killed_while_exporting_its_own_batch_delivers_each_edit_exactly_once() {
    let (store, a, b) = setup();
    let b_logs_before: BTreeSet<String> = logs_of(store.path(), &b.cfg.device_id)
        .into_iter()
        .map(|l| l.key)
        .collect();
    let seeded = b.count("SELECT COUNT(*) FROM songs");
    insert_songs(&b, "kill mine", NEW_SONGS);
    b.exec("UPDATE songs SET notes = 'desk note ' || id WHERE title NOT LIKE 'kill %'");

    // What B has put in the store so far: never one edit twice.
    let sent_by_b = || -> (BTreeMap<String, usize>, BTreeMap<String, usize>) {
        let mut titles = BTreeMap::new();
        let mut notes = BTreeMap::new();
        for l in logs_of(store.path(), &b.cfg.device_id)
            .iter()
            .filter(|l| !b_logs_before.contains(&l.key))
        {
            for t in song_values(l, "title") {
                *titles.entry(t).or_insert(0) += 1;
            }
            for n in song_values(l, "notes")
                .into_iter()
                .filter(|n| n.starts_with("desk note "))
            {
                *notes.entry(n).or_insert(0) += 1;
            }
        }
        (titles, notes)
    };
    let check = |what: &str| {
        let (titles, notes) = sent_by_b();
        let twice: Vec<_> = titles
            .iter()
            .chain(&notes)
            .filter(|(_, n)| **n > 1)
            .collect();
        assert!(
            twice.is_empty(),
            "{what}: sent more than once: {:?}",
            &twice[..twice.len().min(3)]
        );
    };
    let state_db = b.home.state_db_path();
    let outbox = || peek(&state_db, "SELECT COUNT(*) FROM sync_outbox");
    // Polled: names only, nothing parsed.
    let log_dir = store.path().join("logs").join(&b.cfg.device_id);
    let logs_up = || {
        std::fs::read_dir(&log_dir).map_or(0, |d| {
            d.filter_map(|e| e.ok())
                .filter(|e| {
                    let name = e.file_name().to_string_lossy().into_owned();
                    name.ends_with(".json")
                        && !b_logs_before.contains(&format!("logs/{}/{name}", b.cfg.device_id))
                })
                .count()
        })
    };
    let captured = || outbox().unwrap_or(0) > 0;
    let numbered = || {
        peek(
            &state_db,
            "SELECT COUNT(*) FROM sync_outbox WHERE seq IS NOT NULL",
        )
        .unwrap_or(0)
            > 0
    };
    let uploaded = || logs_up() > 0;
    let plan = [
        KillAt::After(15),
        KillAt::After(60),
        // The captured batch waits in state.db's outbox, goes up with put-if-absent,
        // then leaves the outbox. Aim at both gaps.
        KillAt::When("once the batch was in the outbox", &captured),
        // The run after that one numbers the log (a state.db write), puts it, then
        // removes it from the outbox: stop it there.
        KillAt::Hold {
            what: "with B's log in the store, still in its outbox",
            lock: Lock::State,
            seen: &numbered,
            then: &uploaded,
        },
        KillAt::After(150),
    ];
    let state = || {
        format!(
            "{} new log(s) of B in the store, {} outbox entr(ies)",
            logs_up(),
            outbox().map_or("?".into(), |n| n.to_string())
        )
    };
    let mut gaps = BTreeSet::new();
    kill_then_finish(&b, &plan, state, |what| {
        check(what);
        match (logs_up(), outbox().unwrap_or(0) > 0) {
            (0, true) => gaps.insert("captured, not uploaded"),
            (1, true) => gaps.insert("uploaded, still in the outbox"),
            _ => false,
        };
    });
    assert_eq!(gaps.len(), 2, "gaps hit: {gaps:?}");

    // In the store: each of B's edits exactly once.
    let (titles, notes) = sent_by_b();
    assert_eq!(titles.len(), NEW_SONGS, "songs B sent");
    assert!(titles.values().all(|n| *n == 1));
    assert_eq!(notes.len() as i64, seeded, "notes B sent");
    assert!(notes.values().all(|n| *n == 1));

    // On A: each of B's songs once, each note edit applied.
    a.sync();
    let dup: i64 = a.count(
        "SELECT COUNT(*) FROM (SELECT title FROM songs WHERE title LIKE 'kill mine %'
                               GROUP BY title HAVING COUNT(*) <> 1)",
    );
    assert_eq!(dup, 0, "A holds some of B's songs twice");
    assert_eq!(titles_like(&a, "kill mine %").len(), NEW_SONGS);
    assert_eq!(
        a.count("SELECT COUNT(*) FROM songs WHERE notes LIKE 'desk note %'"),
        seeded
    );
    assert_same(&a, &b);
    assert_no_conflicts(&a);

    // A second sync on both changes nothing and sends nothing.
    let sb: Value = serde_json::from_str(cli_sync(&b, true).lines().last().unwrap()).unwrap();
    assert_eq!(sb["sent"], serde_json::json!({}), "{sb}");
    assert_eq!(sb["received"], serde_json::json!({}), "{sb}");
    let sa = a.sync();
    assert!(sa.sent.is_empty(), "A sent {:?}", sa.sent);
    assert!(sa.received.is_empty(), "A received {:?}", sa.received);
    assert_same(&a, &b);
}

/// A text value from a SQLite file, or None while it cannot be read.
fn peek_text(db: &Path, sql: &str) -> Option<String> {
    Connection::open(db)
        .ok()?
        .query_row(sql, [], |r| r.get(0))
        .ok()
}

/// A cycle ends by stamping the app database with a fresh marker (how a database
/// restored from a backup is recognised) and then remembering the marker in state.db. A
/// kill between the two must not make the next run refuse the database as restored, nor
/// lose or repeat the edit that cycle sent.
#[test]
fn killed_between_stamping_the_database_and_remembering_it_is_not_a_restore() {
    let (_store, a, b) = setup();
    let state_db = b.home.state_db_path();
    let meta = |key: &str| {
        peek_text(
            &state_db,
            &format!("SELECT value FROM sync_meta WHERE key = '{key}'"),
        )
    };
    let app_marker = || {
        peek_text(
            &b.db,
            "SELECT value FROM sync_metadata WHERE key = 'songfs_cycle'",
        )
    };
    // Until two kills landed in the gap (the test can be a little late to take the
    // lock when the process writes both quickly).
    let (mut in_gap, mut tries) = (0, 0);
    while in_gap < 2 && tries < 6 {
        let i = tries;
        tries += 1;
        b.exec(&format!(
            "UPDATE songs SET notes = 'stamp {i}' WHERE id = 1"
        ));
        // The cycle writes the new marker to state.db as pending first: from then on,
        // its next state.db write is the one that closes the gap.
        let pending_before = meta("pending_marker");
        let pending_changed = || meta("pending_marker") != pending_before;
        let stamped = || app_marker().is_some() && app_marker() == meta("pending_marker");
        let at = KillAt::Hold {
            what: "with the new marker in the app database, not yet in state.db",
            lock: Lock::State,
            seen: &pending_changed,
            then: &stamped,
        };
        if let Attempt::Killed(when) = attempt(&b, &at) {
            assert_intact(&b.db, &when);
            let pending = meta("pending_marker");
            if app_marker() == pending && meta("marker") != pending {
                in_gap += 1;
            }
        }
        // Whatever the kill left, the next run syncs (a restore would be refused).
        cli_sync(&b, false);
        a.sync();
        assert_eq!(
            a.text("SELECT notes FROM songs WHERE id = 1").as_deref(),
            Some(format!("stamp {i}").as_str())
        );
    }
    eprintln!("{in_gap} of {tries} kills landed between the two writes of the marker");
    assert!(in_gap > 0, "no kill landed in the gap: nothing was tested");
    assert_same(&a, &b);
    assert_no_conflicts(&a);
    assert_no_conflicts(&b);
}

/// B is killed with A's update of 50 songs planned in state.db but not yet written to
/// the app database; the app goes on working while songfs is down. Returns the pair.
fn killed_with_an_update_planned() -> (tempfile::TempDir, Device, Device) {
    let (store, a, b) = setup();
    insert_songs(&a, "kill base", 50);
    a.sync();
    cli_sync(&b, false);
    a.exec(
        "UPDATE songs SET notes = 'from A', status = 'submitted' WHERE title LIKE 'kill base %'",
    );
    a.sync();
    let state_db = b.home.state_db_path();
    let plan_stored = || peek(&state_db, "SELECT COUNT(*) FROM sync_intent").unwrap_or(0) > 0;
    // A small batch is written right after its plan is stored: hold the app database
    // from the start (the cycle only reads it before the apply) until the plan is there.
    let at = KillAt::Hold {
        what: "with the apply plan in state.db, the app database not yet written",
        lock: Lock::App,
        seen: &|| true,
        then: &plan_stored,
    };
    assert!(matches!(attempt(&b, &at), Attempt::Killed(_)));
    assert_eq!(
        b.count("SELECT COUNT(*) FROM songs WHERE notes = 'from A'"),
        0,
        "the kill came after the app database was written"
    );
    (store, a, b)
}

#[test]
fn edits_made_in_the_app_while_songfs_was_down_after_a_kill_win() {
    let (_store, a, b) = killed_with_an_update_planned();
    b.exec("UPDATE songs SET notes = 'from the user' WHERE title = 'kill base 8'");
    cli_sync(&b, false);
    a.sync();
    for d in [&a, &b] {
        let notes = |t: &str| d.text(&format!("SELECT notes FROM songs WHERE title = '{t}'"));
        assert_eq!(
            notes("kill base 8").as_deref(),
            Some("from the user"),
            "{}",
            d.cfg.device_name
        );
        assert_eq!(
            notes("kill base 9").as_deref(),
            Some("from A"),
            "{}",
            d.cfg.device_name
        );
        // A's other field of the row the user edited is kept.
        assert_eq!(
            d.count("SELECT COUNT(*) FROM songs WHERE title LIKE 'kill base %' AND status = 'submitted'"),
            50
        );
    }
    assert_same(&a, &b);
}

/// A song the user deleted in the app while songfs was down after a kill stays deleted.
/// The interrupted apply is finished at the next start from the intents stored before the
/// kill; `upsert` finds no live row although the shadow shows songfs had seen it: the user
/// deleted it since. (It used to re-insert it, and the user's delete was lost on every
/// device; now the shadow keeps the row and the next capture sends the delete, newer than
/// the remote edit.) The same path runs without
/// a crash when the app deletes a row between capture and apply (the next test).
#[test]
fn a_song_deleted_in_the_app_while_songfs_was_down_after_a_kill_stays_deleted() {
    let (_store, a, b) = killed_with_an_update_planned();
    b.exec("DELETE FROM songs WHERE title = 'kill base 7'");
    cli_sync(&b, false);
    a.sync();
    assert_stays_deleted(&a, &b, "kill base 7");
}

/// The same bug without a crash: the app deletes a song between the cycle's capture and
/// its apply (the test holds the app database's write lock from the start, deletes the
/// song in that transaction once the plan is stored, and lets the cycle go on).
#[test]
fn a_song_deleted_in_the_app_during_the_apply_stays_deleted() {
    let (_store, a, b) = setup();
    insert_songs(&a, "kill base", 50);
    a.sync();
    cli_sync(&b, false);
    a.exec("UPDATE songs SET notes = 'from A' WHERE title LIKE 'kill base %'");
    a.sync();
    let app = b.conn();
    app.execute_batch("BEGIN IMMEDIATE").unwrap();
    let mut child = sync_cmd(&b, false)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let state_db = b.home.state_db_path();
    let start = Instant::now();
    while peek(&state_db, "SELECT COUNT(*) FROM sync_intent").unwrap_or(0) == 0 {
        assert!(start.elapsed() < Duration::from_secs(4), "no plan stored");
        std::thread::sleep(Duration::from_micros(500));
    }
    app.execute_batch("DELETE FROM songs WHERE title = 'kill base 7'; COMMIT")
        .unwrap();
    assert!(child.wait().unwrap().success());
    cli_sync(&b, false);
    a.sync();
    assert_stays_deleted(&a, &b, "kill base 7");
}

/// The song the app deleted is gone on both devices, and they agree on everything else.
fn assert_stays_deleted(a: &Device, b: &Device, title: &str) {
    for d in [b, a] {
        assert_eq!(
            d.count(&format!(
                "SELECT COUNT(*) FROM songs WHERE title = '{title}'"
            )),
            0,
            "{}: the song deleted in the app came back",
            d.cfg.device_name
        );
    }
    assert_same(a, b);
}
