//! `songfs mount`, `unmount` and `status` from the command line: what they refuse and
//! how they say it, and that a mount comes up in the background and goes away cleanly.

mod common;

use std::process::Command;

use common::mount::{songfs_bin, Mount};

fn stderr_of(mut c: Command) -> String {
    let out = c.output().unwrap();
    assert!(!out.status.success(), "{c:?} should have failed");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn mount_refuses_bad_setups_with_a_clear_message() {
    let tmp = tempfile::tempdir().unwrap();
    // not set up
    let mut c = Command::new(songfs_bin());
    c.env("SONGFS_HOME", tmp.path().join("nohome"))
        .arg("mount")
        .arg(tmp.path());
    assert!(stderr_of(c).contains("songfs init"));

    let m = Mount::init_only(&[]);
    let mut c = m.songfs();
    c.arg("mount").arg(m.root().join("missing"));
    assert!(stderr_of(c).contains("mkdir -p"));

    std::fs::write(m.dir.join("stray.txt"), b"x").unwrap();
    let mut c = m.songfs();
    c.arg("mount").arg(&m.dir);
    let e = stderr_of(c);
    assert!(e.contains("not empty"), "{e}");
    std::fs::remove_file(m.dir.join("stray.txt")).unwrap();

    let mut c = m.songfs();
    c.arg("unmount").arg(&m.dir);
    assert!(stderr_of(c).contains("not mounted"));

    // The store folder is gone (a NAS or USB disk not attached): the mount comes up
    // offline and says why at once; nothing is created in the store's place.
    std::fs::rename(&m.store, m.root().join("store-away")).unwrap();
    let mut m = m;
    let out = m.mount_output();
    let e = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{e}");
    assert!(e.contains("warning") && e.contains("attached"), "{e}");
    let st = m.status();
    assert_eq!(st["daemon"]["store_reachable"], false, "{st}");
    assert!(
        st["daemon"]["offline_reason"]
            .as_str()
            .unwrap()
            .contains("attached"),
        "{st}"
    );
    assert!(
        !m.store.exists(),
        "a store was created in place of the missing one"
    );
}

#[test]
fn mount_runs_in_the_background_status_reports_it_and_unmount_stops_it() {
    let mut m = Mount::new();
    let s = m.status();
    assert_eq!(s["mounted"], true, "{s}");
    assert!(s["daemon"]["store_reachable"].as_bool().unwrap());
    std::fs::write(m.path("x.mp3"), b"abc").unwrap();

    // A second mount of the same home, or on a busy mountpoint, is refused.
    let mut c = m.songfs();
    c.arg("mount").arg(&m.dir);
    let e = stderr_of(c);
    assert!(e.contains("already"), "{e}");

    let human = m.songfs().arg("status").output().unwrap();
    let text = String::from_utf8_lossy(&human.stdout);
    assert!(text.contains("(mounted"), "{text}");
    assert!(text.contains("uploads:"), "{text}");

    // A program holding a file open keeps the mount: unmount says so and changes nothing.
    let held = std::fs::File::open(m.path("x.mp3")).unwrap();
    let mut c = m.songfs();
    c.arg("unmount").arg(&m.dir);
    let e = stderr_of(c);
    assert!(e.contains("busy"), "{e}");
    assert_eq!(std::fs::read(m.path("x.mp3")).unwrap(), b"abc");
    drop(held);

    m.unmount();
    assert_eq!(std::fs::read_dir(&m.dir).unwrap().count(), 0);
    let s = m.status();
    assert_eq!(s["mounted"], false, "{s}");
    assert_eq!(
        s["daemon"]["pending_uploads"], 0,
        "unmount drained the uploads"
    );
}

#[test]
fn sigterm_unmounts_cleanly_after_draining_uploads() {
    let mut m = Mount::new();
    let data = common::mount::bytes(77, 400_000);
    std::fs::write(m.path("late.mp3"), &data).unwrap();
    let pid = m.pid().unwrap();
    // SAFETY: kill(2) of the daemon this test started, by PID.
    unsafe { libc::kill(pid as i32, libc::SIGTERM) };
    assert!(
        common::mount::wait_until(std::time::Duration::from_secs(30), || {
            !common::mount::alive(pid)
        }),
        "the daemon ignored SIGTERM"
    );
    m.forget_daemon();
    // Unmounted, not dead: the folder is the empty directory again.
    assert_eq!(std::fs::read_dir(&m.dir).unwrap().count(), 0);
    assert_eq!(
        std::fs::read(m.store_blob(&common::mount::sha256_hex(&data))).unwrap(),
        data,
        "the upload was drained before exit"
    );
    assert!(!m.home.join("daemon.pid").exists());
}
