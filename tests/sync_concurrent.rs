//! The app keeps running while songfs syncs: a writer thread (5 s busy timeout, WAL, one
//! commit per call, like the app) inserts and updates rows in a loop while a large
//! remote log is applied. No write is lost and the writer never sees "database is locked".

mod sync_util;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use sync_util::{assert_same, folder_store, Device};

#[test]
fn the_app_writing_during_a_sync_loses_nothing_and_is_never_locked_out() {
    let store = tempfile::tempdir().unwrap();
    let a = Device::new(folder_store(store.path()), "laptop", true);
    let b = Device::new(folder_store(store.path()), "desk", true);
    a.sync();
    b.sync();
    // A large change on A: 3,000 new songs and an edit of every seeded one.
    a.exec(
        "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 3000)
         INSERT INTO songs (title, prompt, lyrics, genre_id, status)
         SELECT 'bulk ' || i, 'prompt ' || i, printf('%.500c', 'x'), 1 + i % 25, 'completed' FROM n;
         UPDATE songs SET notes = 'touched by laptop' WHERE id <= 29;",
    );
    a.sync();

    let stop = Arc::new(AtomicBool::new(false));
    let db = b.db.clone();
    let writer_stop = stop.clone();
    let writer = std::thread::spawn(move || {
        let c = rusqlite::Connection::open(&db).unwrap();
        c.busy_timeout(Duration::from_secs(5)).unwrap();
        c.pragma_update(None, "journal_mode", "WAL").unwrap();
        let mut errors = Vec::new();
        let mut written = 0;
        while !writer_stop.load(Ordering::Relaxed) || written < 50 {
            written += 1;
            let r = c
                .execute(
                    "INSERT INTO songs (title, prompt, lyrics) VALUES (?1, 'p', 'l')",
                    [format!("written by the app {written}")],
                )
                .and_then(|_| {
                    c.execute(
                        "UPDATE songs SET notes = ?1 WHERE id = 10",
                        [format!("app note {written}")],
                    )
                });
            if let Err(e) = r {
                errors.push(e.to_string());
            }
            std::thread::sleep(Duration::from_millis(2));
        }
        (written, errors)
    });
    // Several cycles while the app writes: the big log, then the app's own edits.
    let s = b.sync();
    assert_eq!(s.received["songs"].new, 3000, "{s:?}");
    b.sync();
    stop.store(true, Ordering::Relaxed);
    let (written, errors) = writer.join().unwrap();
    assert!(errors.is_empty(), "the app saw errors: {errors:?}");
    b.sync();
    a.sync();
    for d in [&a, &b] {
        assert_eq!(
            d.count("SELECT COUNT(*) FROM songs WHERE title LIKE 'written by the app %'"),
            written
        );
        assert_eq!(
            d.count("SELECT COUNT(*) FROM songs WHERE title LIKE 'bulk %'"),
            3000
        );
        assert_eq!(
            d.text("SELECT notes FROM songs WHERE id = 10").unwrap(),
            format!("app note {written}"),
            "the app's last edit wins"
        );
    }
    assert_same(&a, &b);
}
