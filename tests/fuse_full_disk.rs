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
