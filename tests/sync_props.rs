//! Convergence of real databases, proved over random histories (proptest): three and four devices
//! on the real v5 schema make the app's kinds of edits (field updates, status ladders,
//! inserts whose ids collide, deletes with cascades, tag sets and renames, default-artist changes, lore
//! presets that name lore ids, CD tracks, distributions) and sync in random orders, with
//! logs re-delivered to a device that lost its cursors. After everyone syncs twice:
//! - every device holds the same content (rows compared by identity, references resolved);
//! - the invariants hold (one default artist, genres never empty, sqlite_sequence);
//! - no edit that should survive is missing: every song inserted and never deleted exists,
//!   and a field written once (no rival write, no delete) holds that value everywhere.
//!
//! The pure merge has its own 1,000-case property test (tests/merge_props.rs); this one
//! runs the whole path (capture, identity, logs, apply, invariants), so each case costs
//! real SQLite work (about 0.1 s of CPU a case).

mod sync_util;

use std::collections::{BTreeMap, BTreeSet};

use proptest::prelude::*;
use rusqlite::Connection;
use songfs::sync::merge::{DISTRIBUTION_STATUS_LADDER, SONG_STATUS_LADDER};
use sync_util::{assert_same, folder_store, Device};

#[derive(Debug, Clone)]
enum Op {
    /// An edit of the given kind on a device; `a` and `b` pick the target and the value.
    Edit {
        dev: usize,
        kind: u8,
        a: u8,
        b: u8,
    },
    Sync {
        dev: usize,
    },
    /// The device forgets how far it read every other device's logs: all of them arrive again.
    Redeliver {
        dev: usize,
    },
}

fn op(devices: usize) -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => (0..devices, 0..13u8, any::<u8>(), any::<u8>())
            .prop_map(|(dev, kind, a, b)| Op::Edit { dev, kind, a, b }),
        3 => (0..devices).prop_map(|dev| Op::Sync { dev }),
        1 => (0..devices).prop_map(|dev| Op::Redeliver { dev }),
    ]
}

/// What the history did, to check that nothing that should survive went missing.
#[derive(Default)]
struct Model {
    /// Songs inserted (by their unique prompt).
    inserted: BTreeSet<String>,
    /// Songs some device deleted (by prompt).
    deleted: BTreeSet<String>,
    /// Values written per (song prompt, column).
    writes: BTreeMap<(String, String), Vec<String>>,
}

fn nth_id(c: &Connection, table: &str, pick: u8) -> Option<i64> {
    let n: i64 = c
        .query_row(&format!("SELECT COUNT(*) FROM {table}"), [], |r| r.get(0))
        .unwrap();
    (n > 0).then(|| {
        c.query_row(
            &format!("SELECT id FROM {table} ORDER BY id LIMIT 1 OFFSET ?1"),
            [i64::from(pick) % n],
            |r| r.get(0),
        )
        .unwrap()
    })
}

fn prompt_of(c: &Connection, song: i64) -> String {
    c.query_row("SELECT prompt FROM songs WHERE id = ?1", [song], |r| {
        r.get(0)
    })
    .unwrap()
}

/// The song status ladder and one status off it (a failed generation).
fn song_status(pick: u8) -> &'static str {
    let n = SONG_STATUS_LADDER.len() + 1;
    SONG_STATUS_LADDER
        .get(usize::from(pick) % n)
        .copied()
        .unwrap_or("error")
}

/// One edit as the app makes it. `step` makes every written value unique.
fn edit(d: &Device, kind: u8, a: u8, b: u8, step: usize, model: &mut Model) {
    let c = d.conn();
    let c = &c;
    let exec = |sql: &str| c.execute_batch(sql).unwrap();
    let song = nth_id(c, "songs", a);
    let mut wrote = |song: i64, col: &str, v: String| {
        model
            .writes
            .entry((prompt_of(c, song), col.to_string()))
            .or_default()
            .push(v);
    };
    match (kind, song) {
        (0, Some(s)) => {
            wrote(s, "notes", format!("n{step}"));
            exec(&format!(
                "UPDATE songs SET notes = 'n{step}', updated_at = CURRENT_TIMESTAMP WHERE id = {s}"
            ));
        }
        (1, Some(s)) => {
            wrote(s, "title", format!("t{step}"));
            wrote(s, "lyrics", format!("l{step}"));
            exec(&format!(
                "UPDATE songs SET title = 't{step}', lyrics = 'l{step}' WHERE id = {s}"
            ));
        }
        (2, Some(s)) => {
            // A background worker: raw SQL, updated_at untouched.
            let st = song_status(b);
            wrote(s, "status", st.to_string());
            exec(&format!("UPDATE songs SET status = '{st}' WHERE id = {s}"));
        }
        (3, _) => {
            model.inserted.insert(format!("p{step}"));
            exec(&format!(
                "INSERT INTO songs (title, prompt, lyrics, genre_id) VALUES ('new {step}', 'p{step}', 'l', {});
                 INSERT INTO song_tags (song_id, tag_id) VALUES (last_insert_rowid(), {})",
                u32::from(b) % 25 + 1,
                u32::from(b) % 6 + 1
            ));
        }
        (4, Some(s)) => {
            model.deleted.insert(prompt_of(c, s));
            // The app deletes with foreign keys on; a CD track (no ON DELETE action) would
            // block it, so the app clears those first.
            exec(&format!(
                "UPDATE cd_tracks SET song_id = NULL WHERE song_id = {s};
                 PRAGMA foreign_keys = ON; DELETE FROM songs WHERE id = {s}"
            ));
        }
        (5, Some(s)) => exec(&format!(
            "DELETE FROM song_tags WHERE song_id = {s};
             INSERT INTO song_tags (song_id, tag_id) VALUES ({s}, {}), ({s}, {})",
            u32::from(b) % 3 + 1,
            u32::from(b) % 3 + 4
        )),
        (6, _) => exec(&format!(
            "UPDATE genres SET description = 'g{step}' WHERE id = {}",
            u32::from(a) % 25 + 1
        )),
        (7, _) => exec(&format!(
            "INSERT OR IGNORE INTO tags (name) VALUES ('tag {}')",
            b % 4
        )),
        (8, _) => {
            // Making an artist the default clears the others (one statement each, as the app).
            if b.is_multiple_of(2) {
                exec(&format!(
                    "INSERT OR IGNORE INTO artists (name) VALUES ('artist {}')",
                    b % 3
                ));
            }
            if let Some(x) = nth_id(c, "artists", a) {
                exec(&format!(
                    "UPDATE artists SET is_default = 0; UPDATE artists SET is_default = 1, updated_at = CURRENT_TIMESTAMP WHERE id = {x}"
                ));
            }
        }
        (9, Some(s)) => match nth_id(c, "distributions", b) {
            Some(x) if a.is_multiple_of(2) => exec(&format!(
                "UPDATE distributions SET status = '{}' WHERE id = {x}",
                DISTRIBUTION_STATUS_LADDER[usize::from(b) % DISTRIBUTION_STATUS_LADDER.len()]
            )),
            _ => exec(&format!(
                "INSERT INTO distributions (song_id, songwriter, notes) VALUES ({s}, 'me', 'd{step}')"
            )),
        },
        (10, _) => {
            exec(&format!(
                "INSERT INTO lore (title, content) VALUES ('lore {step}', 'c')"
            ));
            let (x, y) = (nth_id(c, "lore", a), nth_id(c, "lore", b));
            if let (Some(x), Some(y)) = (x, y) {
                exec(&format!(
                    "INSERT OR REPLACE INTO lore_presets (name, lore_ids) VALUES ('preset {}', '[{x}, {y}]')",
                    b % 3
                ));
            }
        }
        (11, Some(s)) => {
            if nth_id(c, "cd_projects", 0).is_none() || b.is_multiple_of(3) {
                exec(&format!("INSERT INTO cd_projects (name) VALUES ('cd {step}')"));
            }
            let p = nth_id(c, "cd_projects", a).expect("a project exists");
            exec(&format!(
                "INSERT INTO cd_tracks (project_id, song_id, track_number, title, source_path)
                 VALUES ({p}, {s}, (SELECT COUNT(*) + 1 FROM cd_tracks WHERE project_id = {p}),
                         'track {step}', '/mnt/audio/{step}.mp3')"
            ));
        }
        (12, _) => {
            // A rename, possibly onto a name another device gives a new tag meanwhile.
            if let Some(t) = nth_id(c, "tags", a) {
                exec(&format!(
                    "UPDATE OR IGNORE tags SET name = 'tag {}' WHERE id = {t}",
                    b % 4
                ));
            }
        }
        _ => {}
    }
}

fn forget_cursors(d: &Device) {
    let st = rusqlite::Connection::open(d.home.state_db_path()).unwrap();
    st.execute("DELETE FROM sync_cursors", []).unwrap();
}

/// Devices and store on tmpfs where there is one: this test is about what the merge
/// computes, and thousands of fsyncs on a shared disk would make it slow and noisy
/// (durability across crashes has its own tests).
fn use_tmpfs() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        if std::path::Path::new("/dev/shm").is_dir() {
            std::env::set_var("TMPDIR", "/dev/shm");
        }
    });
}

fn run_history(devices: usize, ops: &[Op]) -> Result<(), TestCaseError> {
    use_tmpfs();
    let store = tempfile::tempdir().unwrap();
    let devs: Vec<Device> = (0..devices)
        .map(|i| Device::new(folder_store(store.path()), &format!("d{i}"), true))
        .collect();
    let mut model = Model::default();
    for (step, op) in ops.iter().enumerate() {
        match *op {
            Op::Edit { dev, kind, a, b } => edit(&devs[dev], kind, a, b, step, &mut model),
            Op::Sync { dev } => {
                devs[dev].sync();
            }
            Op::Redeliver { dev } => forget_cursors(&devs[dev]),
        }
    }
    for _ in 0..2 {
        for d in &devs {
            d.sync();
        }
    }
    for pair in devs.windows(2) {
        assert_same(&pair[0], &pair[1]);
    }
    for d in &devs {
        let who = &d.cfg.device_name;
        prop_assert_eq!(
            d.count("SELECT COUNT(*) FROM artists WHERE is_default = 1"),
            1,
            "one default artist on {}",
            who
        );
        prop_assert!(
            d.count("SELECT COUNT(*) FROM genres") > 0,
            "genres on {}",
            who
        );
        for t in [
            "songs",
            "lore",
            "distributions",
            "cd_tracks",
            "artists",
            "tags",
        ] {
            let max = d.count(&format!("SELECT IFNULL(MAX(id), 0) FROM {t}"));
            let seq = d.count(&format!(
                "SELECT IFNULL((SELECT seq FROM sqlite_sequence WHERE name = '{t}'), 0)"
            ));
            prop_assert!(seq >= max, "sqlite_sequence of {} on {}", t, who);
        }
    }
    // Nothing that should survive is missing (checked on one device: all are equal).
    let d = &devs[0];
    for p in model.inserted.difference(&model.deleted) {
        prop_assert_eq!(
            d.count(&format!("SELECT COUNT(*) FROM songs WHERE prompt = '{p}'")),
            1,
            "song {} was inserted, never deleted",
            p
        );
    }
    for ((p, col), values) in &model.writes {
        if values.len() != 1 || model.deleted.contains(p) {
            continue;
        }
        // Never deleted, so the song must be there, holding its only write.
        let got = d
            .conn()
            .query_row(
                &format!("SELECT {col} FROM songs WHERE prompt = ?1"),
                [p],
                |r| r.get::<_, Option<String>>(0),
            )
            .map_err(|e| TestCaseError::fail(format!("song {p} written, never deleted: {e}")))?;
        prop_assert_eq!(
            got.as_deref(),
            Some(values[0].as_str()),
            "{} of song {}",
            col,
            p
        );
    }
    Ok(())
}

/// `SYNC_PROPTEST_CASES` overrides the case count of each property (e.g. 20 for a quick run).
fn cases(default: u32) -> u32 {
    std::env::var("SYNC_PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn config(cases: u32) -> ProptestConfig {
    ProptestConfig {
        cases,
        // Each shrink step replays a whole history: keep a failure's report prompt.
        max_shrink_iters: 200,
        ..ProptestConfig::default()
    }
}

// 600 + 400 cases: 1,000 histories through real databases in CI, in about a minute on two
// cores (the two properties run in parallel).
proptest! {
    #![proptest_config(config(cases(600)))]

    #[test]
    fn three_devices_converge_whatever_the_edits_and_sync_orders(ops in proptest::collection::vec(op(3), 1..30)) {
        run_history(3, &ops)?;
    }
}

proptest! {
    #![proptest_config(config(cases(400)))]

    #[test]
    fn four_devices_converge_whatever_the_edits_and_sync_orders(ops in proptest::collection::vec(op(4), 1..40)) {
        run_history(4, &ops)?;
    }
}

/// The history the four-device property found on 2026-12-03 (three devices rename tags onto
/// 'tag 2' / 'tag 3' while one adds 'tag 0'), replayed as a plain test so it runs on every change.
#[test]
fn concurrent_renames_onto_the_same_tag_names_converge() {
    let e = |dev, kind, a, b| Op::Edit { dev, kind, a, b };
    let ops = [
        e(1, 12, 188, 202),
        e(2, 12, 92, 235),
        e(1, 7, 0, 152),
        e(0, 12, 77, 90),
        Op::Sync { dev: 2 },
        e(1, 12, 117, 115),
    ];
    run_history(4, &ops).unwrap();
}
