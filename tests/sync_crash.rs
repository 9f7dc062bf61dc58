//! A crash between the app database's commit and songfs's own (the shadow update) must
//! not turn the applied remote changes into "local edits" sent back as this device's.
//! (Own test binary: the failpoint is a process-wide environment variable.)

mod sync_util;

use songfs::sync::cycle::Options;
use sync_util::{assert_same, files_under, pair};

/// The failpoint is process-wide: one test of this file at a time.
static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

#[test]
fn a_crash_after_applying_is_finished_on_the_next_start_without_echoing() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let (store, a, b) = pair();
    a.sync();
    b.sync();
    a.sync();
    a.exec(
        "UPDATE songs SET title = 'crash test' WHERE id = 1;
         INSERT INTO tags (name) VALUES ('crash tag');
         DELETE FROM songs WHERE id = 2;",
    );
    a.sync();
    let b_logs = |s: &std::path::Path| {
        files_under(s)
            .iter()
            .filter(|p| {
                p.to_string_lossy()
                    .contains(&format!("logs/{}/", b.cfg.device_id))
            })
            .count()
    };
    let before = b_logs(store.path());
    std::env::set_var("SONGFS_FAILPOINT", "apply-after-app-commit");
    let err = b.try_sync_with(Options::default()).unwrap_err();
    std::env::remove_var("SONGFS_FAILPOINT");
    assert!(err.to_string().contains("failpoint"), "{err}");
    // The app database already holds the remote changes ...
    assert_eq!(
        b.text("SELECT title FROM songs WHERE id = 1").unwrap(),
        "crash test"
    );
    // ... and the next cycle finishes the apply instead of sending them back.
    let s = b.sync();
    assert!(s.sent.is_empty(), "echoed as local edits: {:?}", s.sent);
    assert_eq!(b_logs(store.path()), before, "no log from B");
    assert_eq!(
        b.count("SELECT COUNT(*) FROM tags WHERE name = 'crash tag'"),
        1
    );
    assert_eq!(b.count("SELECT COUNT(*) FROM songs WHERE id = 2"), 0);
    a.sync();
    assert_same(&a, &b);
}

/// The app deletes a song while a cycle is merging a remote edit of it (here: the cycle
/// stopped between planning and writing, and the delete happens before the next start
/// finishes the write). The delete is the newer edit: it must stand and reach the others,
/// not be undone by the older remote edit.
#[test]
fn a_delete_made_while_a_remote_edit_is_being_applied_is_kept_and_sent() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let (_store, a, b) = pair();
    a.sync();
    b.sync();
    a.exec("UPDATE songs SET notes = 'edited on the laptop' WHERE id = 5");
    a.sync();
    std::env::set_var("SONGFS_FAILPOINT", "apply-before-app-commit");
    let err = b.try_sync_with(Options::default()).unwrap_err();
    std::env::remove_var("SONGFS_FAILPOINT");
    assert!(err.to_string().contains("failpoint"), "{err}");
    b.exec("PRAGMA foreign_keys = ON; DELETE FROM songs WHERE id = 5");
    let s = b.sync();
    assert_eq!(
        b.count("SELECT COUNT(*) FROM songs WHERE id = 5"),
        0,
        "undone on B"
    );
    assert_eq!(
        s.sent.get("songs").map(|c| c.deleted),
        Some(1),
        "{:?}",
        s.sent
    );
    a.sync();
    assert_eq!(
        a.count("SELECT COUNT(*) FROM songs WHERE id = 5"),
        0,
        "not sent to A"
    );
    assert_same(&a, &b);
}
