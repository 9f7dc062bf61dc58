//! The code path of bench/library.sh (a library of 50,000 files in 5,000 folders), at a
//! size CI can run: 2,000 files in 200 folders written through one real mount, a new
//! device whose first sync must list every one of them, then 100 changed files that
//! must all arrive on it with their new bytes. Not timed (the benchmark measures); the
//! times are printed for the record.

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::mount::{bytes, run_ok, Mount};

const FOLDERS: usize = 200;
const PER_FOLDER: usize = 10;

fn file(song: usize, take: usize) -> String {
    format!("2026-01-01_song_{song:05}/song_{song:05}_v{take}.mp3")
}

fn files_under(dir: &Path) -> usize {
    let mut n = 0;
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let e = e.unwrap();
            if e.file_type().unwrap().is_dir() {
                stack.push(e.path());
            } else {
                n += 1;
            }
        }
    }
    n
}

#[test]
fn a_new_device_lists_a_2000_file_library_and_then_gets_100_changes() {
    let mut a = Mount::new();
    for song in 0..FOLDERS {
        std::fs::create_dir(a.path(&format!("2026-01-01_song_{song:05}"))).unwrap();
        for take in 0..PER_FOLDER {
            let seed = (song * PER_FOLDER + take) as u64;
            std::fs::write(a.path(&file(song, take)), bytes(seed, 1024)).unwrap();
        }
    }
    assert!(
        a.wait_uploads(Duration::from_secs(120)),
        "uploads of 2,000 files"
    );
    run_ok(a.songfs().arg("sync"));

    let t = Instant::now();
    let mut b = Mount::init_on_folder_store(&a.store, "laptop");
    b.mount();
    run_ok(b.songfs().arg("sync"));
    eprintln!(
        "new device: mount + first sync of 2,000 files: {:?}",
        t.elapsed()
    );
    assert_eq!(
        files_under(&b.dir),
        FOLDERS * PER_FOLDER,
        "every file listed"
    );
    assert_eq!(
        std::fs::read_dir(&b.dir)
            .unwrap()
            .filter(|e| !e
                .as_ref()
                .unwrap()
                .file_name()
                .to_string_lossy()
                .starts_with('.'))
            .count(),
        FOLDERS,
        "every folder listed"
    );
    let last = file(FOLDERS - 1, PER_FOLDER - 1);
    assert_eq!(
        std::fs::read(b.path(&last)).unwrap(),
        bytes((FOLDERS * PER_FOLDER - 1) as u64, 1024)
    );

    // 100 changes on a: one take of half the songs gets new bytes.
    let changed: Vec<(String, Vec<u8>)> = (0..100)
        .map(|i| (file(i * 2, 0), bytes(1_000_000 + i as u64, 2048)))
        .collect();
    for (path, data) in &changed {
        std::fs::write(a.path(path), data).unwrap();
    }
    assert!(
        a.wait_uploads(Duration::from_secs(60)),
        "uploads of 100 changes"
    );
    run_ok(a.songfs().arg("sync"));
    let t = Instant::now();
    run_ok(b.songfs().arg("sync"));
    eprintln!("the other device's sync of 100 changes: {:?}", t.elapsed());
    for (path, data) in &changed {
        assert_eq!(&std::fs::read(b.path(path)).unwrap(), data, "{path} on b");
    }
    assert_eq!(
        files_under(&b.dir),
        FOLDERS * PER_FOLDER,
        "nothing added or lost"
    );
    b.unmount();
    a.unmount();
}
