//! A full `$SONGFS_HOME` (cache, staging and state.db on one small tmpfs) under a real
//! mount: the writer gets ENOSPC or EIO, every file closed before stays intact, a failed
//! save never replaces a file's content with a part of it (or with nothing), space can be
//! freed through the mount while the disk is full, and everything works again once there
//! is room.

mod common;

use std::io::Write;
use std::path::Path;
use std::time::Duration;

use common::mount::{bytes, sha256_hex, Mount};

/// A small tmpfs for one test, unmounted on drop (also when the test fails).
struct SmallDisk(tempfile::TempDir);

impl SmallDisk {
    fn new(bytes: u64) -> SmallDisk {
        let dir = tempfile::tempdir().unwrap();
        common::mount::run_ok(
            std::process::Command::new("mount")
                .args(["-t", "tmpfs", "-o", &format!("size={bytes}"), "tmpfs"])
                .arg(dir.path()),
        );
        SmallDisk(dir)
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg(self.0.path())
            .status();
    }
}

/// Fills the disk holding `dir` to its last block; returns the filler to remove later.
fn fill(dir: &Path) -> std::path::PathBuf {
    let filler = dir.join("filler");
    let mut f = std::fs::File::create(&filler).unwrap();
    let block = vec![7u8; 64 * 1024];
    while f.write_all(&block).is_ok() {}
    let small = vec![7u8; 512];
    while f.write_all(&small).is_ok() {}
    filler
}

fn save(path: &Path, data: &[u8]) -> std::io::Result<()> {
    let mut f = std::fs::File::create(path)?;
    f.write_all(data)?;
    f.sync_all()?;
    Ok(())
}

#[test]
fn a_full_home_refuses_the_write_keeps_every_earlier_file_and_recovers() {
    let disk = SmallDisk::new(64 << 20);
    let home = disk.0.path().join("home");
    let mut m = Mount::with_home(&home, &["--cache-size", "8M"]);
    let kept = bytes(1, 2 << 20);
    let old = bytes(2, 300_000);
    save(&m.path("kept.wav"), &kept).unwrap();
    save(&m.path("old.wav"), &old).unwrap();
    std::fs::write(m.path("gone.wav"), b"to be removed while full").unwrap();
    assert!(
        m.wait_uploads(Duration::from_secs(30)),
        "{}",
        m.daemon_log()
    );

    let filler = fill(disk.0.path());
    let big = bytes(3, 16 << 20);
    let full = |e: &std::io::Error| matches!(e.raw_os_error(), Some(libc::ENOSPC | libc::EIO));
    let err = save(&m.path("new.wav"), &big).expect_err("a 16 MiB save onto a full disk");
    assert!(full(&err), "ENOSPC or EIO, not {err}");
    match std::fs::read(m.path("new.wav")) {
        Ok(got) => assert!(
            got.is_empty(),
            "no part of a failed save is kept ({} bytes)",
            got.len()
        ),
        Err(e) => assert_eq!(e.kind(), std::io::ErrorKind::NotFound),
    }
    let err = save(&m.path("old.wav"), &big).expect_err("overwriting onto a full disk");
    assert!(full(&err), "ENOSPC or EIO, not {err}");
    assert_eq!(
        sha256_hex(&std::fs::read(m.path("old.wav")).unwrap()),
        sha256_hex(&old),
        "a failed save keeps the file's earlier content whole"
    );
    std::fs::remove_file(m.path("gone.wav")).expect("rm works while the disk is full");
    assert_eq!(
        sha256_hex(&std::fs::read(m.path("kept.wav")).unwrap()),
        sha256_hex(&kept)
    );

    // Room again: writes work, and everything above survives a remount.
    std::fs::remove_file(&filler).unwrap();
    save(&m.path("after.wav"), &big).unwrap();
    assert!(
        m.wait_uploads(Duration::from_secs(60)),
        "{}",
        m.daemon_log()
    );
    m.unmount();
    m.mount();
    assert!(
        !m.path("gone.wav").exists(),
        "the removal made while full was kept"
    );
    for (name, data) in [("old.wav", &old), ("kept.wav", &kept), ("after.wav", &big)] {
        assert_eq!(
            sha256_hex(&std::fs::read(m.path(name)).unwrap()),
            sha256_hex(data),
            "{name} after the remount"
        );
    }
    m.unmount();
}

/// Names of the files under `dir`, recursively, that start with `prefix`.
fn leftovers(dir: &Path, prefix: &str) -> Vec<String> {
    let mut found = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).unwrap().flatten() {
            let path = entry.path();
            if path.is_dir() {
                stack.push(path);
            } else if entry.file_name().to_string_lossy().starts_with(prefix) {
                found.push(path.display().to_string());
            }
        }
    }
    found
}

#[test]
fn a_full_folder_store_holds_uploads_back_and_sends_every_one_once_there_is_room() {
    let disk = SmallDisk::new(16 << 20);
    let store = disk.0.path().join("store");
    let mut a = Mount::init_on_folder_store(&store, "studio");
    a.mount();
    let filler = fill(disk.0.path());
    let takes: Vec<(String, Vec<u8>)> = (0..3)
        .map(|i| (format!("take{i}.wav"), bytes(40 + i, 2 << 20)))
        .collect();
    for (name, data) in &takes {
        save(&a.path(name), data).expect("the mount takes writes while the store is full");
    }
    let mut last = serde_json::Value::Null;
    assert!(
        common::mount::wait_until(Duration::from_secs(30), || {
            last = a.fresh_status();
            last["daemon"]["last_error"]
                .as_str()
                .is_some_and(|e| e.contains("No space left"))
        }),
        "status never named the full store: {last}"
    );
    assert_eq!(
        last["daemon"]["pending_uploads"].as_u64(),
        Some(3),
        "{last}"
    );
    let out = a.songfs().arg("sync").output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "sync exited 0 with a full store");
    assert!(err.contains("No space left"), "the reason is named: {err}");
    assert!(
        leftovers(&store, ".tmp-").is_empty(),
        "a failed upload leaves no partial object: {:?}",
        leftovers(&store, ".tmp-")
    );
    for (name, data) in &takes {
        assert_eq!(
            sha256_hex(&std::fs::read(a.path(name)).unwrap()),
            sha256_hex(data),
            "{name} reads back whole while it waits"
        );
    }

    // Room again: the uploads go by themselves, and another device reads every take.
    std::fs::remove_file(&filler).unwrap();
    assert!(
        a.wait_uploads(Duration::from_secs(90)),
        "the uploads did not go once the store had room: {}",
        a.daemon_log()
    );
    run_sync(&a);
    for (_, data) in &takes {
        let hash = sha256_hex(data);
        assert_eq!(
            sha256_hex(&std::fs::read(a.store_blob(&hash)).unwrap()),
            hash,
            "the stored blob is whole"
        );
    }
    let b = Mount::on_folder_store(&store, "laptop");
    run_sync(&b);
    for (name, data) in &takes {
        assert_eq!(
            sha256_hex(&std::fs::read(b.path(name)).unwrap()),
            sha256_hex(data),
            "{name} on the other device"
        );
    }
    drop(b);
    a.unmount();
}

fn run_sync(m: &Mount) {
    let out = m.songfs().arg("sync").output().unwrap();
    assert!(
        out.status.success(),
        "sync failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}
