//! Convergence at the database level: three devices make random edits (the app's kinds:
//! field updates, status changes, inserts, deletes with cascades, tag sets, genre
//! edits) and sync in a random order; afterwards every device holds the same content.
//! Seeded, so a failure names the seed that reproduces it.

mod sync_util;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use sync_util::{assert_same, folder_store, Device};

fn random_id(d: &Device, rng: &mut StdRng, table: &str) -> Option<i64> {
    let n = d.count(&format!("SELECT COUNT(*) FROM {table}"));
    if n == 0 {
        return None;
    }
    Some(d.count(&format!(
        "SELECT id FROM {table} ORDER BY id LIMIT 1 OFFSET {}",
        rng.random_range(0..n)
    )))
}

fn random_edit(d: &Device, rng: &mut StdRng, step: usize) {
    let song = random_id(d, rng, "songs");
    let sql = match (rng.random_range(0..8), song) {
        (0, Some(s)) => format!("UPDATE songs SET notes = 'n{step}' WHERE id = {s}"),
        (1, Some(s)) => format!("UPDATE songs SET title = 't{step}', lyrics = 'l{step}' WHERE id = {s}"),
        (2, Some(s)) => {
            let st = ["draft", "queued", "processing", "submitted", "completed", "error"][rng.random_range(0..6)];
            format!("UPDATE songs SET status = '{st}' WHERE id = {s}")
        }
        (3, _) => format!(
            "INSERT INTO songs (title, prompt, lyrics, genre_id) VALUES ('new {step}', 'p', 'l', {})",
            rng.random_range(1..=25)
        ),
        (4, Some(s)) => format!("PRAGMA foreign_keys = ON; DELETE FROM songs WHERE id = {s}"),
        (5, Some(s)) => format!(
            "PRAGMA foreign_keys = ON; DELETE FROM song_tags WHERE song_id = {s};
             INSERT INTO song_tags (song_id, tag_id) VALUES ({s}, {}), ({s}, {})",
            rng.random_range(1..=3),
            rng.random_range(4..=6)
        ),
        (6, _) => format!(
            "UPDATE genres SET description = 'g{step}' WHERE id = {}",
            rng.random_range(1..=25)
        ),
        _ => format!(
            "INSERT OR IGNORE INTO tags (name) VALUES ('tag {}')",
            rng.random_range(0..4)
        ),
    };
    d.exec(&sql);
}

#[test]
fn three_devices_with_random_edits_and_sync_orders_converge() {
    for seed in [1u64, 2, 3] {
        let mut rng = StdRng::seed_from_u64(seed);
        let store = tempfile::tempdir().unwrap();
        let devs: Vec<Device> = (0..3)
            .map(|i| Device::new(folder_store(store.path()), &format!("d{i}"), true))
            .collect();
        for step in 0..40 {
            let d = &devs[rng.random_range(0..3)];
            if rng.random_bool(0.6) {
                random_edit(d, &mut rng, step);
            } else {
                d.sync();
            }
        }
        for _ in 0..2 {
            for d in &devs {
                d.sync();
            }
        }
        assert_same(&devs[0], &devs[1]);
        assert_same(&devs[1], &devs[2]);
        for d in &devs {
            assert!(d.count("SELECT COUNT(*) FROM genres") > 0, "seed {seed}");
        }
    }
}
