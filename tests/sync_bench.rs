//! Benchmark (ignored; run optimized):
//! `cargo test --release --test sync_bench -- --ignored --nocapture`
//! A 10,000-song database on a folder store: the first sync of a device that holds it,
//! a new device joining, then 100 changed rows end to end (capture + upload on one
//! device, download + merge + apply on the other) — the target is under 1 s.

mod sync_util;

use std::time::Instant;

use sync_util::{folder_store, make_db, Device};

#[test]
#[ignore]
fn ten_thousand_songs_hundred_changes_end_to_end() {
    let store = tempfile::tempdir().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("songfactory.db");
    make_db(&db, true);
    rusqlite::Connection::open(&db)
        .unwrap()
        .execute_batch(
            "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 10000)
             INSERT INTO songs (title, prompt, lyrics, genre_id, status, task_id, file_path_1, duration_seconds)
             SELECT 'song ' || i, 'a prompt for song ' || i, printf('%.1200c', 'l'), 1 + i % 25,
                    'completed', 'task-' || i, '/mnt/a/audio/2026-01-01_song/song_' || i || '_v1.mp3', 180.5 FROM n;
             INSERT INTO song_tags (song_id, tag_id) SELECT id, 1 + id % 6 FROM songs;",
        )
        .unwrap();
    let t = Instant::now();
    let a = Device::with_db(folder_store(store.path()), "a", dir, db);
    let first_capture = t.elapsed();
    let t = Instant::now();
    a.sync();
    let first_upload = t.elapsed();
    let b = Device::new(folder_store(store.path()), "b", true);
    let t = Instant::now();
    b.sync();
    let join = t.elapsed();
    assert_eq!(b.count("SELECT COUNT(*) FROM songs"), 10_029);
    a.sync();

    a.exec(
        "UPDATE songs SET notes = 'edited ' || id, status = 'queued' WHERE id % 100 = 7 AND id <= 10000;",
    );
    let changed = a.count("SELECT COUNT(*) FROM songs WHERE notes LIKE 'edited %'");
    assert_eq!(changed, 100);
    let t = Instant::now();
    let sa = a.sync();
    let send = t.elapsed();
    let t = Instant::now();
    let sb = b.sync();
    let receive = t.elapsed();
    assert_eq!(sa.sent["songs"].updated, 100);
    assert_eq!(sb.received["songs"].updated, 100);
    eprintln!(
        "10,000 songs: first capture {first_capture:?}, first sync {first_upload:?}, \
         new device joins {join:?}; 100 changed rows: send {send:?} + receive {receive:?} = {:?}",
        send + receive
    );
    if !cfg!(debug_assertions) {
        assert!(send + receive < std::time::Duration::from_secs(1));
    }
}
