//! Row identity across devices: colliding rowids, references that stay attached,
//! lore_presets.lore_ids, rows that are the same thing on both sides, cascades, the
//! blocked delete, invariants, paths inside the mount.

mod sync_util;

use sync_util::{assert_same, pair, settle};

/// Both devices create a song (SQLite gives both id 30), each with a tag, a distribution
/// and a CD track. After the sync both songs exist on both, and every child row points
/// at the right one.
#[test]
fn rows_created_offline_with_the_same_id_stay_two_rows_with_their_children() {
    let (_s, a, b) = pair();
    settle(&a, &b);
    for (d, who) in [(&a, "laptop"), (&b, "desk")] {
        d.exec(&format!(
            "INSERT INTO songs (title, prompt, lyrics, genre_id) VALUES ('Song of {who}', 'p', 'l', 3);
             INSERT INTO song_tags (song_id, tag_id) VALUES (last_insert_rowid(), 1);
             INSERT INTO distributions (song_id, songwriter, notes)
                 SELECT id, 'me', 'dist of {who}' FROM songs WHERE title = 'Song of {who}';
             INSERT INTO cd_projects (name) VALUES ('CD of {who}');
             INSERT INTO cd_tracks (project_id, song_id, track_number, title, source_path)
                 SELECT (SELECT id FROM cd_projects WHERE name = 'CD of {who}'), id, 1, 'track of {who}', '/x.mp3'
                 FROM songs WHERE title = 'Song of {who}';"
        ));
        assert_eq!(d.count("SELECT MAX(id) FROM songs"), 30);
    }
    settle(&a, &b);
    for d in [&a, &b] {
        assert_eq!(d.count("SELECT COUNT(*) FROM songs"), 31);
        for who in ["laptop", "desk"] {
            assert_eq!(
                d.text(&format!(
                    "SELECT s.title FROM distributions d JOIN songs s ON s.id = d.song_id WHERE d.notes = 'dist of {who}'"
                ))
                .unwrap(),
                format!("Song of {who}")
            );
            assert_eq!(
                d.text(&format!(
                    "SELECT s.title FROM cd_tracks t JOIN songs s ON s.id = t.song_id
                     JOIN cd_projects p ON p.id = t.project_id
                     WHERE t.title = 'track of {who}' AND p.name = 'CD of {who}'"
                ))
                .unwrap(),
                format!("Song of {who}")
            );
            assert_eq!(
                d.count(&format!(
                    "SELECT COUNT(*) FROM song_tags st JOIN songs s ON s.id = st.song_id
                     JOIN tags t ON t.id = st.tag_id WHERE s.title = 'Song of {who}' AND t.name = 'Favorite'"
                )),
                1
            );
        }
        // The app must never be handed an id below the largest one.
        for t in ["songs", "distributions", "cd_projects", "cd_tracks"] {
            assert!(
                d.count(&format!(
                    "SELECT seq FROM sqlite_sequence WHERE name = '{t}'"
                )) >= d.count(&format!("SELECT MAX(id) FROM {t}")),
                "sqlite_sequence of {t}"
            );
        }
    }
    // The origin keeps its id; the other side got a fresh one.
    assert_eq!(
        a.count("SELECT id FROM songs WHERE title = 'Song of laptop'"),
        30
    );
    assert_eq!(
        b.count("SELECT id FROM songs WHERE title = 'Song of desk'"),
        30
    );
    assert_same(&a, &b);
}

#[test]
fn rows_with_the_same_unique_name_or_task_id_are_merged_not_duplicated() {
    let (_s, a, b) = pair();
    settle(&a, &b);
    a.exec("INSERT INTO tags (name, color) VALUES ('Summer', '#111111');
            INSERT INTO songs (title, prompt, lyrics, task_id) VALUES ('Imported', 'p', 'l', 'task-42')");
    b.exec("INSERT INTO tags (name, color) VALUES ('Summer', '#222222');
            INSERT INTO songs (title, prompt, lyrics, task_id, notes) VALUES ('Imported', 'p', 'l', 'task-42', 'n')");
    settle(&a, &b);
    b.sync();
    for d in [&a, &b] {
        assert_eq!(
            d.count("SELECT COUNT(*) FROM tags WHERE name = 'Summer'"),
            1
        );
        assert_eq!(
            d.count("SELECT COUNT(*) FROM songs WHERE task_id = 'task-42'"),
            1
        );
    }
    assert_same(&a, &b);
}

#[test]
fn lore_preset_ids_follow_their_lore_entries_across_colliding_ids() {
    let (_s, a, b) = pair();
    settle(&a, &b);
    // Both create lore 17 and 18; A's preset names its own two.
    a.exec(
        "INSERT INTO lore (title, content) VALUES ('A one', 'x'), ('A two', 'y');
            INSERT INTO lore_presets (name, lore_ids) VALUES ('A preset', '[1, 17, 18]')",
    );
    b.exec("INSERT INTO lore (title, content) VALUES ('B one', 'x'), ('B two', 'y')");
    b.sync();
    a.sync();
    b.sync();
    let ids = b
        .text("SELECT lore_ids FROM lore_presets WHERE name = 'A preset'")
        .unwrap();
    let ids: Vec<i64> = serde_json::from_str(&ids).unwrap();
    let mut titles: Vec<String> = ids
        .iter()
        .map(|i| {
            b.text(&format!("SELECT title FROM lore WHERE id = {i}"))
                .unwrap()
        })
        .collect();
    titles.sort();
    let first = a.text("SELECT title FROM lore WHERE id = 1").unwrap();
    let mut want = vec!["A one".to_string(), "A two".to_string(), first];
    want.sort();
    assert_eq!(titles, want);
    assert_ne!(ids, vec![1, 17, 18], "B's own 17 and 18 are other entries");
    assert_same(&a, &b);
}

#[test]
fn deleting_a_song_removes_its_tags_and_distributions_everywhere() {
    let (_s, a, b) = pair();
    a.exec(
        "INSERT INTO song_tags (song_id, tag_id) VALUES (4, 1), (4, 2);
            INSERT INTO distributions (song_id, songwriter) VALUES (4, 'me')",
    );
    settle(&a, &b);
    assert_eq!(
        b.count("SELECT COUNT(*) FROM song_tags WHERE song_id = 4"),
        2
    );
    // The app deletes with foreign keys on: SQLite cascades.
    a.exec("PRAGMA foreign_keys = ON; DELETE FROM songs WHERE id = 4");
    settle(&a, &b);
    for d in [&a, &b] {
        assert_eq!(d.count("SELECT COUNT(*) FROM songs WHERE id = 4"), 0);
        assert_eq!(
            d.count("SELECT COUNT(*) FROM song_tags WHERE song_id = 4"),
            0
        );
        assert_eq!(
            d.count("SELECT COUNT(*) FROM distributions WHERE song_id = 4"),
            0
        );
    }
    assert_same(&a, &b);
}

#[test]
fn setting_a_songs_tags_deletes_and_reinserts_them_without_losing_any() {
    let (_s, a, b) = pair();
    a.exec("INSERT INTO song_tags (song_id, tag_id) VALUES (6, 1), (6, 2)");
    settle(&a, &b);
    // The app's set_song_tags: delete all, insert the new set.
    a.exec(
        "BEGIN; DELETE FROM song_tags WHERE song_id = 6;
            INSERT INTO song_tags (song_id, tag_id) VALUES (6, 2), (6, 3); COMMIT;",
    );
    settle(&a, &b);
    for d in [&a, &b] {
        assert_eq!(
            d.text("SELECT group_concat(tag_id) FROM (SELECT tag_id FROM song_tags WHERE song_id = 6 ORDER BY tag_id)")
                .unwrap(),
            "2,3"
        );
    }
}

#[test]
fn a_remote_delete_blocked_by_a_cd_track_still_applies_and_clears_the_reference() {
    let (_s, a, b) = pair();
    settle(&a, &b);
    b.exec(
        "INSERT INTO cd_projects (name) VALUES ('Mix');
            INSERT INTO cd_tracks (project_id, song_id, track_number, title, source_path)
            VALUES (1, 9, 1, 'uses song 9', '/x.mp3')",
    );
    a.exec("DELETE FROM songs WHERE id = 9");
    a.sync();
    let s = b.sync();
    assert_eq!(s.received["songs"].deleted, 1, "{s:?}");
    assert_eq!(b.count("SELECT COUNT(*) FROM songs WHERE id = 9"), 0);
    assert_eq!(
        b.count("SELECT COUNT(*) FROM cd_tracks WHERE song_id IS NULL"),
        1
    );
    let c = b.conflicts();
    assert!(
        c.iter()
            .any(|c| c["kind"] == "reference" && c["table"] == "cd_tracks"),
        "{c:?}"
    );
    settle(&a, &b);
    assert_same(&a, &b);
}

#[test]
fn dangling_references_already_in_the_database_do_not_stop_a_sync() {
    let (_s, a, b) = pair();
    // The app's workers write without foreign keys.
    a.exec(
        "PRAGMA foreign_keys = OFF; INSERT INTO song_tags (song_id, tag_id) VALUES (999, 1);
            INSERT INTO songs (title, prompt, lyrics, genre_id) VALUES ('Orphan', 'p', 'l', 777)",
    );
    settle(&a, &b);
    assert_eq!(
        b.count("SELECT COUNT(*) FROM songs WHERE title = 'Orphan' AND genre_id IS NULL"),
        1
    );
}

#[test]
fn two_devices_making_different_artists_default_end_with_one_default() {
    let (_s, a, b) = pair();
    a.exec(
        "INSERT INTO artists (name) VALUES ('Second'); INSERT INTO artists (name) VALUES ('Third')",
    );
    settle(&a, &b);
    // Each makes another artist the default without seeing the other's choice.
    a.exec("UPDATE artists SET is_default = (name = 'Second')");
    a.sync();
    std::thread::sleep(std::time::Duration::from_millis(5));
    b.exec("UPDATE artists SET is_default = (name = 'Third')");
    settle(&b, &a);
    for d in [&a, &b] {
        assert_eq!(
            d.count("SELECT COUNT(*) FROM artists WHERE is_default = 1"),
            1
        );
        // The most recent "make default" wins.
        assert_eq!(
            d.text("SELECT name FROM artists WHERE is_default = 1")
                .unwrap(),
            "Third"
        );
    }
    assert!(
        b.conflicts().iter().any(|c| c["kind"] == "invariant"),
        "{:?}",
        b.conflicts()
    );
    assert_same(&a, &b);
}

#[test]
fn cd_track_numbers_stay_one_to_n_after_concurrent_inserts() {
    let (_s, a, b) = pair();
    a.exec("INSERT INTO cd_projects (name) VALUES ('Album');
            INSERT INTO cd_tracks (project_id, track_number, title, source_path) VALUES (1, 1, 't1', '/1')");
    settle(&a, &b);
    a.exec("INSERT INTO cd_tracks (project_id, track_number, title, source_path) VALUES (1, 2, 'from A', '/a')");
    b.exec("INSERT INTO cd_tracks (project_id, track_number, title, source_path) VALUES (1, 2, 'from B', '/b')");
    settle(&a, &b);
    b.sync();
    for d in [&a, &b] {
        assert_eq!(
            d.text("SELECT group_concat(track_number) FROM (SELECT track_number FROM cd_tracks ORDER BY track_number)")
                .unwrap(),
            "1,2,3"
        );
    }
    assert_same(&a, &b);
}

#[test]
fn paths_inside_the_mount_travel_relative_and_land_under_the_local_mount() {
    let (store, a, b) = pair();
    a.exec(
        "UPDATE songs SET file_path_1 = '/mnt/laptop/audio/2026-02-12_song/song_v1.mp3',
                              file_path_2 = '/home/me/elsewhere.mp3' WHERE id = 2",
    );
    settle(&a, &b);
    assert_eq!(
        b.text("SELECT file_path_1 FROM songs WHERE id = 2")
            .unwrap(),
        "/mnt/desk/audio/2026-02-12_song/song_v1.mp3"
    );
    assert_eq!(
        b.text("SELECT file_path_2 FROM songs WHERE id = 2")
            .unwrap(),
        "/home/me/elsewhere.mp3"
    );
    let logs: String = sync_util::files_under(store.path())
        .iter()
        .filter(|p| p.to_string_lossy().contains("/logs/"))
        .map(|p| std::fs::read_to_string(p).unwrap())
        .collect();
    assert!(logs.contains(r#"{"$mount":"2026-02-12_song/song_v1.mp3"}"#));
    // Not sent back as B's own edit.
    let s = b.sync();
    assert!(s.sent.is_empty(), "{s:?}");
}

#[test]
fn a_deleted_song_brought_back_by_a_newer_edit_returns_with_its_tags() {
    let (_s, a, b) = pair();
    a.exec("INSERT INTO song_tags (song_id, tag_id) VALUES (11, 1), (11, 5)");
    settle(&a, &b);
    a.exec("PRAGMA foreign_keys = ON; DELETE FROM songs WHERE id = 11");
    a.sync();
    std::thread::sleep(std::time::Duration::from_millis(5));
    // B had not seen the delete: its later edit wins, the song comes back whole.
    b.exec("UPDATE songs SET notes = 'still wanted' WHERE id = 11");
    settle(&b, &a);
    for d in [&a, &b] {
        assert_eq!(
            d.text("SELECT notes FROM songs WHERE id = 11").unwrap(),
            "still wanted"
        );
        assert_eq!(
            d.count("SELECT COUNT(*) FROM song_tags WHERE song_id = 11"),
            2
        );
    }
    assert_same(&a, &b);
}

/// Two installs used apart for weeks before songfs joins them: each edited some of the
/// seeded songs (the app bumps `updated_at`) and created its own. Edits on one side win
/// over the other side's untouched seed values, whichever device syncs first; a song
/// both edited keeps the later edit and logs the other; both new songs stay.
#[test]
fn two_databases_used_apart_before_their_first_sync_keep_each_sides_edits() {
    let store = tempfile::tempdir().unwrap();
    let mut devices = Vec::new();
    for (name, installed) in [
        ("laptop", "2026-01-01 10:00:00"),
        ("desk", "2026-03-01 09:00:00"),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("songfactory.db");
        sync_util::make_db(&db, true);
        let c = rusqlite::Connection::open(&db).unwrap();
        c.execute(
            "UPDATE songs SET created_at = ?1, updated_at = ?1",
            [installed],
        )
        .unwrap();
        devices.push((name, dir, db, c));
    }
    // The laptop, in February (its edits are older than the desk's install).
    devices[0].3.execute_batch(
        "UPDATE songs SET lyrics = 'laptop lyrics', updated_at = '2026-02-01 12:00:00' WHERE id = 3;
         UPDATE songs SET notes = 'laptop notes', updated_at = '2026-02-02 12:00:00' WHERE id = 7;
         INSERT INTO songs (title, prompt, lyrics) VALUES ('Only on the laptop', 'p', 'l');",
    )
    .unwrap();
    // The desk, in March.
    devices[1].3.execute_batch(
        "UPDATE songs SET notes = 'desk notes', updated_at = '2026-03-05 12:00:00' WHERE id = 5;
         UPDATE songs SET lyrics = 'desk lyrics', updated_at = '2026-03-06 12:00:00' WHERE id = 7;
         INSERT INTO songs (title, prompt, lyrics) VALUES ('Only on the desk', 'p', 'l');",
    )
    .unwrap();
    let [a, b]: [sync_util::Device; 2] = devices
        .into_iter()
        .map(|(name, dir, db, c)| {
            drop(c);
            sync_util::Device::with_db(sync_util::folder_store(store.path()), name, dir, db)
        })
        .collect::<Vec<_>>()
        .try_into()
        .ok()
        .unwrap();
    // The desk (the later install, whose seed rows are newer) syncs first.
    settle(&b, &a);
    assert_same(&a, &b);
    for d in [&a, &b] {
        let song = |id: i64, col: &str| d.text(&format!("SELECT {col} FROM songs WHERE id = {id}"));
        assert_eq!(
            song(3, "lyrics").as_deref(),
            Some("laptop lyrics"),
            "{}",
            d.cfg.device_name
        );
        assert_eq!(
            song(5, "notes").as_deref(),
            Some("desk notes"),
            "{}",
            d.cfg.device_name
        );
        assert_eq!(
            song(7, "lyrics").as_deref(),
            Some("desk lyrics"),
            "{}",
            d.cfg.device_name
        );
        assert_eq!(d.count("SELECT COUNT(*) FROM songs"), 31);
        assert_eq!(
            d.count("SELECT COUNT(*) FROM songs WHERE title LIKE 'Only on the %'"),
            2
        );
    }
    // Song 7 was edited on both sides: the later (desk) row won, the laptop's notes were
    // logged with both versions, not silently dropped.
    let logged: Vec<serde_json::Value> = a.conflicts().into_iter().chain(b.conflicts()).collect();
    assert!(
        logged
            .iter()
            .any(|c| c.to_string().contains("laptop notes")),
        "the losing pre-sync edit is in the conflicts log: {logged:?}"
    );
    assert!(
        !logged.iter().any(
            |c| c.to_string().contains("laptop lyrics") || c.to_string().contains("desk notes")
        ),
        "an edit beating an untouched seed value is not a conflict: {logged:?}"
    );
}

/// The app replacing a row by name (`INSERT OR REPLACE` gives it a new rowid) edits the
/// same preset everywhere; it must not turn into a delete and a second row whose UNIQUE
/// name clashes on the other device (the preset used to vanish there).
#[test]
fn a_row_replaced_under_a_new_rowid_stays_one_row_everywhere() {
    let (_s, a, b) = pair();
    a.exec("INSERT OR REPLACE INTO lore_presets (name, lore_ids) VALUES ('Night set', '[1, 13]')");
    settle(&a, &b);
    a.exec("INSERT OR REPLACE INTO lore_presets (name, lore_ids) VALUES ('Night set', '[1, 7]')");
    assert_eq!(
        a.count("SELECT id FROM lore_presets WHERE name = 'Night set'"),
        2
    );
    settle(&a, &b);
    assert_eq!(
        b.text("SELECT lore_ids FROM lore_presets WHERE name = 'Night set'")
            .map(|t| t.replace(' ', "")),
        Some("[1,7]".to_string())
    );
    assert!(a.conflicts().is_empty() && b.conflicts().is_empty());
    assert_same(&a, &b);
}

/// A CD track that names a song can reach a device before the song does (device C reads
/// the track maker's log first). The reference is written once the song arrives; it used
/// to stay NULL there for good, while the other devices had it.
#[test]
fn a_reference_that_arrives_before_its_row_resolves_when_the_row_arrives() {
    let store = tempfile::tempdir().unwrap();
    // Logs are read in device-id order: the track maker must come first.
    let [track_maker, song_maker] = sync_util::in_log_order(store.path());
    song_maker.exec("INSERT INTO songs (title, prompt, lyrics) VALUES ('Arrives late', 'p', 'l')");
    song_maker.sync();
    track_maker.sync();
    track_maker.exec(
        "INSERT INTO cd_projects (name) VALUES ('Early CD');
         INSERT INTO cd_tracks (project_id, song_id, track_number, title, source_path)
         SELECT p.id, s.id, 1, 'late track', '/x.mp3' FROM cd_projects p, songs s
         WHERE p.name = 'Early CD' AND s.title = 'Arrives late'",
    );
    track_maker.sync();
    let c = sync_util::Device::new(sync_util::folder_store(store.path()), "z", true);
    c.sync();
    c.sync();
    assert_eq!(
        c.text(
            "SELECT s.title FROM cd_tracks t JOIN songs s ON s.id = t.song_id WHERE t.title = 'late track'"
        )
        .as_deref(),
        Some("Arrives late")
    );
    // The track maker reads C's first log too (C's copies of the seeded rows carry C's
    // install time, which can fall in another second).
    track_maker.sync();
    assert_same(&c, &track_maker);
}

/// A row that had to take another id here (its origin's id was taken) is edited and then
/// deleted on its origin device, and both logs reach this device in one sync: the delete
/// applies here too. (songfs used to remember the origin's id as the row's content after
/// the edit, took the difference for a local edit when the delete came, and kept the row
/// while every other device deleted it.)
#[test]
fn a_row_moved_to_another_id_follows_its_origins_edit_and_delete() {
    let (_s, a, b) = pair();
    settle(&a, &b);
    a.exec("INSERT INTO songs (title, prompt, lyrics) VALUES ('Mine', 'p', 'l')");
    b.exec("INSERT INTO songs (title, prompt, lyrics) VALUES ('Theirs', 'p', 'l')");
    settle(&b, &a);
    assert_eq!(a.count("SELECT id FROM songs WHERE title = 'Theirs'"), 31);
    b.exec("UPDATE songs SET notes = 'edited at home' WHERE title = 'Theirs'");
    b.sync();
    b.exec("PRAGMA foreign_keys = ON; DELETE FROM songs WHERE title = 'Theirs'");
    b.sync();
    a.sync();
    assert_eq!(
        a.count("SELECT COUNT(*) FROM songs WHERE title = 'Theirs'"),
        0
    );
    assert_same(&a, &b);
}

/// One device renames a tag to a name the other device gives a new tag meanwhile (UNIQUE
/// names, different rows): both tags stay on both devices, the newer one shown as
/// "Metal (2)", with its song attached. (The other device's tag used to be refused by the
/// UNIQUE constraint and missing there for good.)
#[test]
fn a_rename_onto_a_name_created_elsewhere_keeps_both_rows() {
    let (_s, a, b) = pair();
    a.exec("INSERT INTO tags (name) VALUES ('Rock')");
    settle(&a, &b);
    a.exec("UPDATE tags SET name = 'Metal' WHERE name = 'Rock'");
    b.exec(
        "INSERT INTO tags (name, color) VALUES ('Metal', '#000000');
         INSERT INTO song_tags (song_id, tag_id) SELECT 4, id FROM tags WHERE name = 'Metal'",
    );
    settle(&a, &b);
    b.sync();
    for d in [&a, &b] {
        assert_eq!(
            d.count("SELECT COUNT(*) FROM tags WHERE name IN ('Metal', 'Metal (2)')"),
            2,
            "{}",
            d.cfg.device_name
        );
        assert_eq!(
            d.text("SELECT color FROM tags WHERE name = 'Metal (2)'")
                .as_deref(),
            Some("#000000"),
            "the newer tag is the renamed one on {}",
            d.cfg.device_name
        );
        assert_eq!(
            d.count(
                "SELECT COUNT(*) FROM song_tags st JOIN tags t ON t.id = st.tag_id
                 WHERE st.song_id = 4 AND t.name = 'Metal (2)'"
            ),
            1
        );
    }
    assert_same(&a, &b);
}

/// The default-artist invariant clears a default here; once later edits make that artist
/// the only default again, it is the default here too. (A correction was written locally
/// and never undone, because that artist's row itself had not changed: every device but
/// one ended with no default artist at all.)
#[test]
fn a_default_cleared_by_the_invariant_returns_when_it_is_the_only_one_again() {
    let store = tempfile::tempdir().unwrap();
    let [a, b, c] = ["a", "b", "c"]
        .map(|n| sync_util::Device::new(sync_util::folder_store(store.path()), n, true));
    let make_default = |d: &sync_util::Device, name: &str| {
        d.exec(&format!(
            "INSERT OR IGNORE INTO artists (name) VALUES ('{name}');
             UPDATE artists SET is_default = 0;
             UPDATE artists SET is_default = 1 WHERE name = '{name}'"
        ))
    };
    make_default(&a, "Night Owl");
    make_default(&b, "Day Lark");
    b.sync(); // Day Lark's default is sent first ...
              // ... and C adds Night Owl too (not as default), after A made it the default.
    c.exec("INSERT INTO artists (name) VALUES ('Night Owl')");
    for _ in 0..2 {
        for d in [&a, &c, &b] {
            d.sync();
        }
    }
    for d in [&a, &b, &c] {
        assert_eq!(
            d.text("SELECT name FROM artists WHERE is_default = 1")
                .as_deref(),
            Some("Day Lark"),
            "on {}",
            d.cfg.device_name
        );
    }
    assert_same(&a, &b);
    assert_same(&b, &c);
}

/// A third device receives, in one sync, a new tag "Live" and another device's rename of
/// "Favorite" to "Live": the rename has to wait until the new tag has made way as
/// "Live (2)" (one batch, rows renamed in a chain). It used to be refused by the UNIQUE
/// constraint there, leaving "Favorite" on that device only.
#[test]
fn renames_that_free_a_name_for_each_other_apply_in_one_batch() {
    let store = tempfile::tempdir().unwrap();
    // Logs are read in device-id order: the new tag's log first.
    let [creator, renamer] = sync_util::in_log_order(store.path());
    creator.exec("INSERT INTO tags (name) VALUES ('Live')");
    creator.sync();
    renamer.exec("UPDATE tags SET name = 'Live' WHERE name = 'Favorite'");
    renamer.sync();
    let third = sync_util::Device::new(sync_util::folder_store(store.path()), "z", true);
    third.sync();
    creator.sync();
    renamer.sync();
    for d in [&creator, &renamer, &third] {
        assert_eq!(
            d.count("SELECT COUNT(*) FROM tags WHERE name IN ('Live', 'Live (2)', 'Favorite')"),
            2,
            "on {}",
            d.cfg.device_name
        );
        assert!(d.conflicts().iter().all(|c| c["kind"] != "unique"));
    }
    assert_same(&creator, &third);
    assert_same(&renamer, &third);
}

/// A tag shown as "Live (2)" because another device renamed a tag to "Live" gets its name
/// back when this device renames that other tag away: the correction ends with the local
/// edit, here too (no remote log would come to recompute it on this device).
#[test]
fn a_name_freed_by_a_local_rename_goes_back_to_the_row_moved_off_it() {
    let (_s, a, b) = pair();
    settle(&a, &b);
    b.exec("UPDATE tags SET name = 'Live' WHERE name = 'Favorite'");
    a.exec("INSERT INTO tags (name, color) VALUES ('Live', '#123456')");
    b.sync();
    a.sync();
    assert_eq!(
        a.text("SELECT name FROM tags WHERE color = '#123456'")
            .as_deref(),
        Some("Live (2)")
    );
    a.exec("UPDATE tags SET name = 'Gold' WHERE name = 'Live'");
    settle(&a, &b);
    for d in [&a, &b] {
        assert_eq!(
            d.text("SELECT name FROM tags WHERE color = '#123456'")
                .as_deref(),
            Some("Live"),
            "on {}",
            d.cfg.device_name
        );
    }
    assert_same(&a, &b);
}

/// A device that reads another device's edit of a row before the log that created it
/// (logs are read in device-id order) waits for the creation instead of writing a row
/// of just the edited fields. Such a partial row took defaults for everything else (or
/// failed a NOT NULL constraint), and its name could stand in the way of real rows.
#[test]
fn an_edit_read_before_its_rows_creation_waits_for_it() {
    let store = tempfile::tempdir().unwrap();
    let [editor, creator] = sync_util::in_log_order(store.path());
    creator.exec("INSERT INTO tags (name, color) VALUES ('Blue', '#0000FF')");
    creator.sync();
    editor.sync();
    editor.exec("UPDATE tags SET color = '#000080' WHERE name = 'Blue'");
    editor.sync();
    let third = sync_util::Device::new(sync_util::folder_store(store.path()), "z", true);
    third.sync();
    assert_eq!(
        third
            .text("SELECT color FROM tags WHERE name = 'Blue'")
            .as_deref(),
        Some("#000080")
    );
    assert!(third.conflicts().is_empty(), "{:?}", third.conflicts());
    creator.sync();
    assert_same(&creator, &third);
}
