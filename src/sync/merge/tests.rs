//! Unit tests of the merge rules, one scenario each.

use super::*;
use serde_json::json;

fn hlc(wall_ms: u64, device: &str) -> Hlc {
    Hlc {
        wall_ms,
        counter: 0,
        device: device.into(),
    }
}

fn set(column: &str, value: Value, clock: &Hlc, replaces: &[&Hlc]) -> Event {
    Event::Set {
        column: column.into(),
        value,
        clock: clock.clone(),
        replaces: replaces.iter().map(|c| (*c).clone()).collect(),
    }
}

fn song_status(row: &RowState) -> Value {
    row.fields(&Rules::default(), "songs")["status"].clone()
}

#[test]
fn concurrent_statuses_resolve_to_the_higher_rung_regardless_of_time() {
    let base = hlc(1, "a");
    let mut row = RowState::default();
    row.apply(&set("status", json!("draft"), &base, &[]));
    row.apply(&set("status", json!("completed"), &hlc(5, "a"), &[&base]));
    row.apply(&set("status", json!("queued"), &hlc(9, "b"), &[&base]));
    assert_eq!(song_status(&row), json!("completed"));
    let conflicts = row.conflicts(&Rules::default(), "songs");
    assert_eq!(conflicts.len(), 1);
    assert_eq!(conflicts[0].lost, json!("queued"));
    assert_eq!(conflicts[0].kept, json!("completed"));
}

#[test]
fn a_seeded_songs_status_lowered_on_one_device_beats_the_other_devices_seed_copies() {
    // Every device holds the seeded song as `completed` from before its first sync.
    let (a0, b0, c0) = (Hlc::zero("a"), Hlc::zero("b"), Hlc::zero("c"));
    let mut row = RowState::default();
    for base in [&a0, &b0, &c0] {
        row.apply(&set("status", json!("completed"), base, &[]));
    }
    // Device a re-queues it, knowing only its own copy.
    row.apply(&set("status", json!("queued"), &hlc(9, "a"), &[&a0]));
    assert_eq!(song_status(&row), json!("queued"));
    assert!(row.conflicts(&Rules::default(), "songs").is_empty());
}

#[test]
fn concurrent_equal_values_are_not_conflicts() {
    let mut row = RowState::default();
    row.apply(&set("title", json!("same"), &hlc(5, "a"), &[]));
    row.apply(&set("title", json!("same"), &hlc(6, "b"), &[]));
    assert_eq!(row.concurrent("title").len(), 2);
    assert!(row.conflicts(&Rules::default(), "songs").is_empty());
}

#[test]
fn a_status_set_after_seeing_the_other_wins_as_an_ordinary_edit() {
    let mut row = RowState::default();
    let completed = hlc(5, "a");
    row.apply(&set("status", json!("completed"), &completed, &[]));
    // A user re-queues the song after seeing it completed.
    row.apply(&set("status", json!("queued"), &hlc(9, "b"), &[&completed]));
    assert_eq!(song_status(&row), json!("queued"));
    assert!(row.conflicts(&Rules::default(), "songs").is_empty());
}

#[test]
fn values_off_the_ladder_fall_back_to_last_writer_wins() {
    let mut row = RowState::default();
    row.apply(&set("status", json!("completed"), &hlc(5, "a"), &[]));
    row.apply(&set("status", json!("error"), &hlc(9, "b"), &[]));
    assert_eq!(song_status(&row), json!("error"));
    // The same column of a table without a ladder is plain LWW too.
    let fields = row.fields(&Rules::default(), "genres");
    assert_eq!(fields["status"], json!("error"));
}

#[test]
fn an_old_version_arriving_late_stays_superseded() {
    let a = hlc(1, "a");
    let b = hlc(2, "b");
    let c = hlc(3, "c");
    let events = [
        set("title", json!("A"), &a, &[]),
        set("title", json!("B"), &b, &[&a]),
        set("title", json!("C"), &c, &[&b]),
    ];
    for order in [
        [0, 1, 2],
        [2, 1, 0],
        [2, 0, 1],
        [1, 2, 0],
        [0, 2, 1],
        [1, 0, 2],
    ] {
        let mut row = RowState::default();
        for i in order {
            row.apply(&events[i]);
        }
        assert_eq!(row.concurrent("title"), vec![c.clone()], "order {order:?}");
        assert_eq!(row.fields(&Rules::default(), "songs")["title"], json!("C"));
    }
}

#[test]
fn an_old_version_never_resurfaces_while_a_log_in_between_is_missing() {
    // Device a writes A; b, having A, writes B; c, having both, writes C.
    let mut on_b = RowState::default();
    let a = set("title", json!("A"), &hlc(1, "a"), &[]);
    on_b.apply(&a);
    let b = Event::Set {
        column: "title".into(),
        value: json!("B"),
        clock: hlc(2, "b"),
        replaces: on_b.frontier("title"),
    };
    let mut on_c = on_b.clone();
    on_c.apply(&b);
    let c = Event::Set {
        column: "title".into(),
        value: json!("C"),
        clock: hlc(3, "c"),
        replaces: on_c.frontier("title"),
    };
    // Device d gets a's and c's logs, not yet b's.
    let mut on_d = RowState::default();
    on_d.apply(&c);
    on_d.apply(&a);
    assert_eq!(on_d.concurrent("title"), vec![hlc(3, "c")]);
    assert_eq!(on_c.frontier("title"), vec![hlc(1, "a"), hlc(2, "b")]);
}

#[test]
fn a_later_write_from_the_same_device_supersedes_its_earlier_one() {
    let mut row = RowState::default();
    // The earlier write reached the writer only through the later one: no `replaces` needed.
    row.apply(&set("status", json!("completed"), &hlc(9, "a"), &[]));
    row.apply(&set("status", json!("submitted"), &hlc(5, "a"), &[]));
    assert_eq!(row.concurrent("status"), vec![hlc(9, "a")]);
}

#[test]
fn many_edits_keep_one_version_per_device() {
    let mut row = RowState::default();
    let mut previous: Vec<Hlc> = Vec::new();
    for i in 0..1000u64 {
        let device = if i % 2 == 0 { "a" } else { "b" };
        let clock = hlc(i, device);
        row.apply(&Event::Set {
            column: "title".into(),
            value: json!(i),
            clock: clock.clone(),
            replaces: previous.clone(),
        });
        previous = row.frontier("title");
    }
    let json = serde_json::to_string(&row).unwrap();
    assert!(json.len() < 400, "state grew: {json}");
    assert_eq!(row.fields(&Rules::default(), "songs")["title"], json!(999));
}

#[test]
fn applying_an_event_twice_changes_nothing_the_second_time() {
    let mut row = RowState::default();
    let events = [
        set("title", json!("x"), &hlc(1, "a"), &[]),
        Event::Live { clock: hlc(0, "a") },
        Event::Delete {
            clock: hlc(2, "b"),
            cascade_of: None,
        },
        Event::Delete {
            clock: hlc(3, "b"),
            cascade_of: Some(RowId::new("songs", "p")),
        },
    ];
    for event in &events {
        assert!(row.apply(event));
        assert!(!row.apply(event));
    }
}

#[test]
fn equal_clocks_with_different_values_pick_the_same_value_in_any_order() {
    let clock = hlc(1, "a");
    let x = set("title", json!("x"), &clock, &[]);
    let y = set("title", json!("y"), &clock, &[]);
    let mut one = RowState::default();
    one.apply(&x);
    one.apply(&y);
    let mut two = RowState::default();
    two.apply(&y);
    two.apply(&x);
    assert_eq!(one, two);
}

#[test]
fn replaced_clocks_not_below_the_event_are_ignored() {
    let mut row = RowState::default();
    row.apply(&set("title", json!("x"), &hlc(5, "a"), &[&hlc(9, "b")]));
    row.apply(&set("title", json!("y"), &hlc(9, "b"), &[]));
    assert_eq!(row.concurrent("title"), vec![hlc(5, "a"), hlc(9, "b")]);
}

fn change(row: &RowId, event: Event) -> Change {
    Change {
        row: row.clone(),
        event,
    }
}

#[test]
fn a_delete_wins_over_an_older_edit_and_loses_to_a_newer_one() {
    let song = RowId::new("songs", "s1");
    let mut state = MergeState::default();
    state.apply(&change(&song, Event::Live { clock: hlc(1, "a") }));
    state.apply(&change(
        &song,
        set("title", json!("old"), &hlc(2, "b"), &[]),
    ));
    state.apply(&change(
        &song,
        Event::Delete {
            clock: hlc(3, "a"),
            cascade_of: None,
        },
    ));
    assert!(!state.is_alive(&song));
    assert_eq!(state.resolve(&Rules::default(), &song), None);
    assert_eq!(state.delete_conflict(&song), None);

    state.apply(&change(&song, set("genre", json!(4), &hlc(4, "b"), &[])));
    assert!(state.is_alive(&song));
    // It comes back whole: the field set before the delete is still there.
    let resolved = state.resolve(&Rules::default(), &song).unwrap();
    assert_eq!(resolved["title"], json!("old"));
    assert_eq!(resolved["genre"], json!(4));
    assert_eq!(
        state.delete_conflict(&song),
        Some(DeleteConflict {
            delete_clock: hlc(3, "a"),
            edit_clock: hlc(4, "b"),
        })
    );
}

#[test]
fn a_recreated_row_is_not_a_delete_conflict() {
    let song = RowId::new("songs", "s1");
    let mut state = MergeState::default();
    state.apply(&change(&song, Event::Live { clock: hlc(1, "a") }));
    state.apply(&change(
        &song,
        Event::Delete {
            clock: hlc(2, "a"),
            cascade_of: None,
        },
    ));
    state.apply(&change(&song, Event::Live { clock: hlc(3, "a") }));
    state.apply(&change(&song, set("title", json!("t"), &hlc(3, "a"), &[])));
    assert!(state.is_alive(&song));
    assert_eq!(state.delete_conflict(&song), None);
}

#[test]
fn cascaded_children_come_back_with_their_parent_but_not_after_their_own_delete() {
    let project = RowId::new("cd_projects", "p");
    let kept = RowId::new("cd_tracks", "t1");
    let removed = RowId::new("cd_tracks", "t2");
    let mut state = MergeState::default();
    for row in [&project, &kept, &removed] {
        state.apply(&change(row, Event::Live { clock: hlc(1, "a") }));
    }
    state.apply(&change(
        &kept,
        set("title", json!("one"), &hlc(1, "a"), &[]),
    ));
    // Device b removes track 2 itself, then device a deletes the project with its tracks.
    state.apply(&change(
        &removed,
        Event::Delete {
            clock: hlc(2, "b"),
            cascade_of: None,
        },
    ));
    for row in [&project, &kept, &removed] {
        let cascade_of = (*row != project).then(|| project.clone());
        state.apply(&change(
            row,
            Event::Delete {
                clock: hlc(5, "a"),
                cascade_of,
            },
        ));
    }
    assert!(!state.is_alive(&project));
    assert!(!state.is_alive(&kept));
    // Device c renamed the project later, without seeing the delete: the project wins, whole.
    state.apply(&change(
        &project,
        set("name", json!("CD"), &hlc(7, "c"), &[]),
    ));
    assert!(state.is_alive(&project));
    assert!(state.is_alive(&kept));
    assert_eq!(
        state.resolve(&Rules::default(), &kept).unwrap()["title"],
        json!("one")
    );
    assert!(!state.is_alive(&removed));
}

#[test]
fn a_child_stays_dead_when_its_parent_came_back_and_was_deleted_again() {
    let project = RowId::new("cd_projects", "p");
    let track = RowId::new("cd_tracks", "t");
    let mut state = MergeState::default();
    for row in [&project, &track] {
        state.apply(&change(row, Event::Live { clock: hlc(1, "a") }));
    }
    state.apply(&change(
        &project,
        Event::Delete {
            clock: hlc(5, "a"),
            cascade_of: None,
        },
    ));
    state.apply(&change(
        &track,
        Event::Delete {
            clock: hlc(5, "a"),
            cascade_of: Some(project.clone()),
        },
    ));
    state.apply(&change(
        &project,
        set("name", json!("n"), &hlc(7, "b"), &[]),
    ));
    assert!(state.is_alive(&track));
    // Deleted again by a device that did not hold the track (so no new cascade event for it).
    state.apply(&change(
        &project,
        Event::Delete {
            clock: hlc(9, "c"),
            cascade_of: None,
        },
    ));
    assert!(!state.is_alive(&project));
    assert!(!state.is_alive(&track));
}

#[test]
fn a_child_stays_dead_while_any_cascading_parent_is_dead() {
    let song = RowId::new("songs", "s");
    let tag = RowId::new("tags", "t");
    let link = RowId::new("song_tags", "s+t");
    let mut state = MergeState::default();
    for row in [&song, &tag, &link] {
        state.apply(&change(row, Event::Live { clock: hlc(1, "a") }));
    }
    for (parent, at) in [(&song, 3), (&tag, 4)] {
        state.apply(&change(
            parent,
            Event::Delete {
                clock: hlc(at, "a"),
                cascade_of: None,
            },
        ));
        state.apply(&change(
            &link,
            Event::Delete {
                clock: hlc(at, "a"),
                cascade_of: Some(parent.clone()),
            },
        ));
    }
    state.apply(&change(&song, set("title", json!("x"), &hlc(9, "b"), &[])));
    assert!(state.is_alive(&song));
    assert!(!state.is_alive(&link), "its tag is still deleted");
}

#[test]
fn unknown_and_never_created_rows_are_not_alive() {
    let state = MergeState::default();
    assert!(!state.is_alive(&RowId::new("songs", "nope")));
    let mut state = MergeState::default();
    let only_deleted = RowId::new("songs", "d");
    state.apply(&change(
        &only_deleted,
        Event::Delete {
            clock: hlc(1, "a"),
            cascade_of: None,
        },
    ));
    assert!(!state.is_alive(&only_deleted));
}

#[test]
fn state_round_trips_through_json() {
    let mut state = MergeState::default();
    let child = RowId::new("distributions", "d");
    state.apply(&change(&child, Event::Live { clock: hlc(1, "a") }));
    state.apply(&change(
        &child,
        set("status", json!("ready"), &hlc(2, "a"), &[]),
    ));
    state.apply(&change(
        &child,
        Event::Delete {
            clock: hlc(3, "b"),
            cascade_of: Some(RowId::new("songs", "s")),
        },
    ));
    let text = serde_json::to_string(&state).unwrap();
    let back: MergeState = serde_json::from_str(&text).unwrap();
    assert_eq!(back, state);
    let row_text = serde_json::to_string(&state.rows[&child]).unwrap();
    let row_back: RowState = serde_json::from_str(&row_text).unwrap();
    assert_eq!(row_back, state.rows[&child]);
}

#[test]
fn a_field_cleared_to_null_stays_null_after_a_json_round_trip() {
    let row = RowId::new("songs", "s");
    let rules = Rules::default();
    let mut state = MergeState::default();
    state.apply(&change(&row, Event::Live { clock: hlc(1, "a") }));
    state.apply(&change(&row, set("genre_id", json!(3), &hlc(2, "a"), &[])));
    let three = hlc(2, "a");
    state.apply(&change(
        &row,
        set("genre_id", Value::Null, &hlc(3, "a"), &[&three]),
    ));
    let back: MergeState = serde_json::from_str(&serde_json::to_string(&state).unwrap()).unwrap();
    assert_eq!(back, state);
    assert_eq!(back.resolve(&rules, &row).unwrap()["genre_id"], Value::Null);
}

#[test]
fn table_lists_only_that_tables_rows() {
    let mut state = MergeState::default();
    for id in [
        RowId::new("song", "x"),
        RowId::new("songs", "a"),
        RowId::new("songs", "b"),
        RowId::new("songs_x", "c"),
    ] {
        state.apply(&change(&id, Event::Live { clock: hlc(1, "a") }));
    }
    let gids: Vec<&str> = state
        .table("songs")
        .map(|(id, _)| id.gid.as_str())
        .collect();
    assert_eq!(gids, ["a", "b"]);
}

#[test]
fn default_rules_know_both_ladders() {
    let rules = Rules::default();
    assert_eq!(rules.ladder("songs", "status"), Some(SONG_STATUS_LADDER));
    assert_eq!(
        rules.ladder("distributions", "status"),
        Some(DISTRIBUTION_STATUS_LADDER)
    );
    assert_eq!(rules.ladder("songs", "title"), None);
    assert_eq!(Rules::none().ladder("songs", "status"), None);
}
