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

/// Unmounts a folder the test mounted some other way than through `Mount` (the
/// second mountpoint, whichever daemon won).
struct LazyUnmount(std::path::PathBuf);

impl Drop for LazyUnmount {
    fn drop(&mut self) {
        let _ = Command::new("fusermount3")
            .arg("-u")
            .arg("-z")
            .arg(&self.0)
            .output();
    }
}

/// Two `songfs mount` of one SONGFS_HOME at the same instant (two mountpoints): the
/// home's lock lets one daemon in; the other exits non-zero naming the winner's pid, and
/// `status` names the winner while it runs. Before the lock both mounted (3 of 3 tries).
#[test]
fn two_mounts_of_one_home_at_the_same_instant_one_wins() {
    for attempt in 0..3 {
        let mut m = Mount::init_only(&[]);
        let other = m.root().join("mnt2");
        std::fs::create_dir_all(&other).unwrap();
        let _guard = LazyUnmount(other.clone());
        let spawn = |dir: &std::path::Path| {
            let mut c = m.songfs();
            c.arg("mount")
                .arg(dir)
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped());
            c.spawn().unwrap()
        };
        let (a, b) = (spawn(&m.dir), spawn(&other));
        let (a, b) = (a.wait_with_output().unwrap(), b.wait_with_output().unwrap());
        let winner = m.adopt_daemon();
        let says = |o: &std::process::Output| String::from_utf8_lossy(&o.stderr).into_owned();
        let won = [&a, &b].iter().filter(|o| o.status.success()).count();
        assert_eq!(
            won,
            1,
            "attempt {attempt}: exactly one mount must win\nA: {}\nB: {}",
            says(&a),
            says(&b)
        );
        let winner = winner.expect("the winner wrote its pid");
        let (won_out, lost_out) = if a.status.success() {
            (&a, &b)
        } else {
            (&b, &a)
        };
        assert!(
            says(won_out).contains(&format!("daemon pid {winner}")),
            "attempt {attempt}: the winner names its own daemon: {}",
            says(won_out)
        );
        assert!(
            says(lost_out).contains(&format!(
                "another songfs daemon (pid {winner}) is already running"
            )),
            "attempt {attempt}: the loser must name the daemon that runs: {}",
            says(lost_out)
        );
        let live: Vec<_> = [&m.dir, &other]
            .into_iter()
            .filter(|d| songfs::cli::mount::is_mounted(d))
            .collect();
        assert_eq!(live.len(), 1, "attempt {attempt}: one mountpoint is live");
        // A status refreshed after both returned, then again later: the winner, mounted.
        for _ in 0..2 {
            let st = m.fresh_status();
            assert_eq!(st["mounted"], true, "attempt {attempt}: {st}");
            assert_eq!(st["daemon_pid"], winner, "attempt {attempt}: {st}");
        }
        m.dir = live[0].clone();
        m.unmount();
    }
}
