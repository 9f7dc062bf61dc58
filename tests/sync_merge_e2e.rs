//! The merge rules end to end: real v5 databases on two or three devices sharing one
//! folder store, synced with the real cycle.

mod sync_util;

use sync_util::{assert_same, folder_store, pair, settle, Device};

#[test]
fn two_seeded_installs_end_with_one_copy_of_each_seeded_row() {
    let (_s, a, b) = pair();
    settle(&a, &b);
    for d in [&a, &b] {
        assert_eq!(d.count("SELECT COUNT(*) FROM songs"), 29);
        assert_eq!(d.count("SELECT COUNT(*) FROM genres"), 25);
        assert_eq!(d.count("SELECT COUNT(*) FROM lore"), 16);
        assert_eq!(d.count("SELECT COUNT(*) FROM tags"), 6);
        assert_eq!(d.count("SELECT COUNT(*) FROM artists"), 1);
        assert_eq!(
            d.count("SELECT COUNT(*) FROM artists WHERE is_default = 1"),
            1
        );
    }
    assert_same(&a, &b);
    // Nothing is left to send or receive.
    let s = a.sync();
    assert!(s.received.is_empty() && s.sent.is_empty(), "{s:?}");
    assert_eq!(s.conflicts, 0);
}

#[test]
fn edits_of_different_fields_of_one_row_both_survive() {
    let (_s, a, b) = pair();
    settle(&a, &b);
    a.exec("UPDATE songs SET title = 'Renamed on laptop' WHERE id = 3");
    b.exec("UPDATE songs SET lyrics = 'new lyrics from desk' WHERE id = 3");
    settle(&a, &b);
    for d in [&a, &b] {
        assert_eq!(
            d.text("SELECT title FROM songs WHERE id = 3").unwrap(),
            "Renamed on laptop"
        );
        assert_eq!(
            d.text("SELECT lyrics FROM songs WHERE id = 3").unwrap(),
            "new lyrics from desk"
        );
    }
    assert_same(&a, &b);
    assert!(a.conflicts().is_empty() && b.conflicts().is_empty());
}

#[test]
fn concurrent_edits_of_one_field_last_writer_wins_and_are_logged() {
    let (_s, a, b) = pair();
    settle(&a, &b);
    a.exec("UPDATE songs SET notes = 'laptop notes' WHERE id = 5");
    a.sync();
    std::thread::sleep(std::time::Duration::from_millis(5));
    // B has not seen A's edit (it has not synced since).
    b.exec("UPDATE songs SET notes = 'desk notes' WHERE id = 5");
    let s = b.sync();
    assert_eq!(s.conflicts, 1, "{s:?}");
    a.sync();
    for d in [&a, &b] {
        assert_eq!(
            d.text("SELECT notes FROM songs WHERE id = 5").unwrap(),
            "desk notes"
        );
    }
    let c = b.conflicts();
    assert_eq!(c.len(), 1);
    assert_eq!(c[0]["kind"], "field");
    assert_eq!(c[0]["column"], "notes");
    assert_eq!(c[0]["kept"], "desk notes");
    assert_eq!(c[0]["lost"], "laptop notes");
    assert_same(&a, &b);
}

#[test]
fn an_edit_made_after_seeing_another_wins_even_with_an_older_wall_clock() {
    let (_s, a, b) = pair();
    settle(&a, &b);
    a.exec("UPDATE genres SET description = 'first' WHERE id = 2");
    settle(&a, &b);
    b.exec("UPDATE genres SET description = 'second, after seeing first' WHERE id = 2");
    settle(&a, &b);
    for d in [&a, &b] {
        assert_eq!(
            d.text("SELECT description FROM genres WHERE id = 2")
                .unwrap(),
            "second, after seeing first"
        );
    }
    assert!(
        a.conflicts().is_empty() && b.conflicts().is_empty(),
        "{:?} {:?}",
        a.conflicts(),
        b.conflicts()
    );
}

#[test]
fn concurrent_status_changes_the_higher_status_wins() {
    let (_s, a, b) = pair();
    a.exec(
        "INSERT INTO songs (title, prompt, lyrics, status) VALUES ('Ladder', 'p', 'l', 'draft')",
    );
    settle(&a, &b);
    a.exec("UPDATE songs SET status = 'processing' WHERE title = 'Ladder'");
    a.sync();
    std::thread::sleep(std::time::Duration::from_millis(5));
    // Later in time, but without seeing 'processing': the ladder decides.
    b.exec("UPDATE songs SET status = 'queued' WHERE title = 'Ladder'");
    settle(&b, &a);
    for d in [&a, &b] {
        assert_eq!(
            d.text("SELECT status FROM songs WHERE title = 'Ladder'")
                .unwrap(),
            "processing"
        );
    }
    // A re-queue after seeing it wins as an ordinary later edit.
    b.exec("UPDATE songs SET status = 'queued' WHERE title = 'Ladder'");
    settle(&b, &a);
    for d in [&a, &b] {
        assert_eq!(
            d.text("SELECT status FROM songs WHERE title = 'Ladder'")
                .unwrap(),
            "queued"
        );
    }
}

#[test]
fn a_delete_wins_over_an_older_edit_and_loses_to_a_newer_one() {
    let (_s, a, b) = pair();
    settle(&a, &b);
    // Older edit on B, then a delete on A: the delete wins.
    b.exec("UPDATE songs SET notes = 'old edit' WHERE id = 7");
    b.sync();
    std::thread::sleep(std::time::Duration::from_millis(5));
    a.exec("DELETE FROM songs WHERE id = 7");
    settle(&a, &b);
    for d in [&a, &b] {
        assert_eq!(d.count("SELECT COUNT(*) FROM songs WHERE id = 7"), 0);
    }
    // A delete on A, then a newer edit on B that had not seen it: the row comes back whole.
    a.exec("DELETE FROM songs WHERE id = 8");
    a.sync();
    std::thread::sleep(std::time::Duration::from_millis(5));
    b.exec("UPDATE songs SET notes = 'newer edit' WHERE id = 8");
    settle(&b, &a);
    for d in [&a, &b] {
        assert_eq!(
            d.text("SELECT notes FROM songs WHERE id = 8").unwrap(),
            "newer edit"
        );
        assert_eq!(
            d.count("SELECT COUNT(*) FROM songs WHERE id = 8 AND lyrics <> ''"),
            1
        );
    }
    assert_same(&a, &b);
    assert!(
        a.conflicts()
            .iter()
            .chain(b.conflicts().iter())
            .any(|c| c["kind"] == "delete"),
        "delete vs edit is logged"
    );
}

#[test]
fn three_devices_converge() {
    let store = tempfile::tempdir().unwrap();
    let a = Device::new(folder_store(store.path()), "a", true);
    let b = Device::new(folder_store(store.path()), "b", true);
    let c = Device::new(folder_store(store.path()), "c", true);
    a.exec("UPDATE songs SET title = 'A title' WHERE id = 1; INSERT INTO tags (name) VALUES ('From A')");
    b.exec("UPDATE songs SET title = 'B title' WHERE id = 1; DELETE FROM songs WHERE id = 2");
    c.exec("UPDATE lore SET content = 'C content' WHERE id = 1; INSERT INTO tags (name) VALUES ('From C')");
    for d in [&c, &b, &a, &c, &b] {
        d.sync();
    }
    assert_same(&a, &b);
    assert_same(&b, &c);
    assert_eq!(a.count("SELECT COUNT(*) FROM tags"), 8);
    assert_eq!(a.count("SELECT COUNT(*) FROM songs"), 28);
}
