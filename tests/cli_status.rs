//! `songfs status PATH` on a real mount and then with no daemon running: the states a
//! running mount reports (pinned, remote, cached, uploading, local-only) are what the
//! on-disk answer gives after the daemon is gone (killed with an upload still pending),
//! and the output says it comes from disk, not from a live mount. And a store that
//! refuses uploads is said by `songfs sync` and `status`, not hidden behind "waiting".

mod common;

use std::path::Path;
use std::time::Duration;

use common::mount::{bytes, run_ok, wait_until, Mount};

/// `songfs status --json PATH...` as {path relative to the mount: state}, plus each
/// entry's `live` flag (absent from the daemon's answer).
fn states(m: &Mount, paths: &[&Path]) -> Vec<(String, String, Option<bool>)> {
    let out = run_ok(m.songfs().args(["status", "--json"]).args(paths));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
    v.as_array()
        .expect("an array")
        .iter()
        .map(|f| {
            (
                f["path"].as_str().unwrap().to_string(),
                f["state"].as_str().unwrap().to_string(),
                f["live"].as_bool(),
            )
        })
        .collect()
}

#[test]
fn status_of_paths_answers_from_disk_when_no_daemon_runs() {
    let mut m = Mount::new();
    let album = m.path("album");
    std::fs::create_dir(&album).unwrap();
    std::fs::write(album.join("pinned.mp3"), bytes(1, 400_000)).unwrap();
    std::fs::write(album.join("evicted.mp3"), bytes(2, 300_000)).unwrap();
    std::fs::write(album.join("cached.mp3"), bytes(3, 200_000)).unwrap();
    // The app's Settings backup: matches the default local-only pattern.
    std::fs::write(album.join("songfactory_backup_2026-02-12.db"), b"secrets").unwrap();
    assert!(m.wait_uploads(Duration::from_secs(30)));
    run_ok(m.songfs().arg("pin").arg(album.join("pinned.mp3")));
    run_ok(m.songfs().arg("evict").arg(album.join("evicted.mp3")));

    // The store stops taking blobs (its blob folder replaced by a file): a new file
    // stays queued for upload.
    std::fs::rename(m.store.join("blobs"), m.store.join("blobs.away")).unwrap();
    std::fs::write(m.store.join("blobs"), b"not a folder").unwrap();
    std::fs::write(album.join("queued.mp3"), bytes(4, 100_000)).unwrap();
    assert!(
        wait_until(Duration::from_secs(10), || m.fresh_status()["daemon"]
            ["pending_uploads"]
            .as_u64()
            == Some(1)),
        "the new file is not queued: {}",
        m.status()
    );

    let want = vec![
        ("album/cached.mp3".to_string(), "cached".to_string()),
        ("album/evicted.mp3".into(), "remote".into()),
        ("album/pinned.mp3".into(), "pinned".into()),
        ("album/queued.mp3".into(), "uploading".into()),
        (
            "album/songfactory_backup_2026-02-12.db".into(),
            "local-only".into(),
        ),
    ];
    let live = states(&m, &[&album]);
    assert_eq!(
        live.iter()
            .map(|(p, s, _)| (p.clone(), s.clone()))
            .collect::<Vec<_>>(),
        want,
        "what the running mount says"
    );
    assert!(live.iter().all(|(_, _, l)| l.is_none()), "{live:?}");

    // The daemon dies with the upload pending (a crash, or the machine turned off).
    m.kill9();
    let disk = states(&m, &[&album]);
    assert_eq!(
        disk.iter()
            .map(|(p, s, _)| (p.clone(), s.clone()))
            .collect::<Vec<_>>(),
        want,
        "the same states, read from disk"
    );
    assert!(
        disk.iter().all(|(_, _, l)| *l == Some(false)),
        "marked as not live: {disk:?}"
    );
    // One file, for people: the answer says where it comes from and what it means.
    let human = run_ok(m.songfs().arg("status").arg(album.join("queued.mp3")));
    let human = String::from_utf8(human.stdout).unwrap();
    let mut lines = human.lines();
    let first = lines.next().unwrap();
    assert!(
        first.starts_with("No mount is running") && first.contains("mount.db"),
        "{human}"
    );
    let line = lines.next().unwrap();
    assert!(
        line.starts_with("uploading")
            && line.contains(&album.join("queued.mp3").display().to_string())
            && line.contains("resumes at the next mount"),
        "{human}"
    );
    assert_eq!(lines.next(), None, "{human}");

    // A path the namespace does not hold: a clear error naming it and what to do.
    let o = m
        .songfs()
        .arg("status")
        .arg(album.join("never-written.mp3"))
        .output()
        .unwrap();
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("album/never-written.mp3") && err.contains("songfs sync"),
        "{err}"
    );
    // A path outside the mount.
    let o = m.songfs().args(["status", "/etc/passwd"]).output().unwrap();
    assert!(!o.status.success());
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("not inside the mount"),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );

    // Asking changed nothing: the next mount resumes the upload once the store is back.
    std::fs::remove_file(m.store.join("blobs")).unwrap();
    std::fs::rename(m.store.join("blobs.away"), m.store.join("blobs")).unwrap();
    m.mount(); // cleans up the dead mount the crash left

    assert!(m.wait_uploads(Duration::from_secs(30)));
    let after = states(&m, &[&album.join("queued.mp3")]);
    assert_eq!(after[0].1, "cached", "{after:?}");
}

#[test]
fn status_of_paths_on_a_device_that_only_synced() {
    // A mounts and writes; the new device never mounts, it only runs `songfs sync`.
    let a = Mount::new();
    std::fs::create_dir(a.path("album")).unwrap();
    std::fs::write(a.path("album/x.mp3"), bytes(5, 50_000)).unwrap();
    assert!(a.wait_uploads(Duration::from_secs(30)));
    run_ok(a.songfs().arg("sync"));

    let home = common::temp_home();
    let songfs = || common::songfs(home.path());
    run_ok(songfs().args([
        "init",
        "--store",
        &format!("file://{}", a.store.display()),
        "--device-name",
        "fresh",
    ]));
    // Nothing synced yet: no namespace to answer from.
    let o = songfs().args(["status", "album/x.mp3"]).output().unwrap();
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("no namespace yet") && err.contains("songfs sync"),
        "{err}"
    );
    // After a sync the catalog holds A's file; with no mount point to place paths in,
    // they are taken relative to the library root.
    run_ok(songfs().arg("sync"));
    let out = run_ok(songfs().args(["status", "--json", "./album"]));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        v,
        serde_json::json!([{"path": "album/x.mp3", "size": 50_000, "state": "remote", "live": false}])
    );
    let o = songfs().args(["status", "album/a.mp3"]).output().unwrap();
    assert!(!o.status.success());
    assert!(
        String::from_utf8_lossy(&o.stderr).contains(" album/a.mp3: not in this device's copy"),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    let o = songfs()
        .args(["status", "/somewhere/a.mp3"])
        .output()
        .unwrap();
    assert!(!o.status.success());
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("never mounted"),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
}

/// A read-only bind mount of a folder, undone on drop (also when the test fails).
struct ReadOnly(std::path::PathBuf);

impl ReadOnly {
    fn bind(dir: &Path) -> ReadOnly {
        run_ok(
            std::process::Command::new("mount")
                .arg("--bind")
                .arg(dir)
                .arg(dir),
        );
        let ro = ReadOnly(dir.to_path_buf());
        run_ok(
            std::process::Command::new("mount")
                .args(["-o", "remount,bind,ro"])
                .arg(dir),
        );
        ro
    }
}

impl Drop for ReadOnly {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount").arg(&self.0).status();
    }
}

/// A store that refuses every upload (here: read-only, EROFS) is not a quiet "1 file(s)
/// wait for upload": `songfs sync` exits non-zero naming the reason, `status` shows it,
/// and once the store takes writes again the file goes up and the sync is clean.
#[test]
fn a_store_refusing_uploads_fails_the_sync_with_the_reason_and_loses_nothing() {
    let m = Mount::new();
    let ro = ReadOnly::bind(&m.store);
    let data = bytes(77, 200_000);
    std::fs::write(m.path("take.wav"), &data).unwrap();
    let mut last = serde_json::Value::Null;
    assert!(
        wait_until(Duration::from_secs(30), || {
            last = m.fresh_status();
            last["daemon"]["last_error"].is_string()
        }),
        "status never showed the failing upload: {last}"
    );
    assert!(
        last["daemon"]["pending_uploads"].as_u64() == Some(1),
        "{last}"
    );
    let out = m.songfs().arg("sync").output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success(),
        "the sync exited 0 while uploads fail: {err}"
    );
    assert!(
        err.contains("1 file(s) cannot be uploaded") && err.contains("Read-only file system"),
        "the reason is named: {err}"
    );
    drop(ro);
    assert!(
        m.wait_uploads(Duration::from_secs(60)),
        "the upload did not go once the store took writes: {}",
        m.daemon_log()
    );
    let out = m.songfs().arg("sync").output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(std::fs::read(m.path("take.wav")).unwrap(), data);
    let hash = common::mount::sha256_hex(&data);
    assert!(m.store_blob(&hash).exists(), "the blob is in the store");
}
