//! `songfs conflicts` lists a file conflict with its copy's full path, and
//! `songfs conflicts --restore COPY` puts the copy back (the version in the way becomes a
//! copy, nothing is lost); `songfs restore COPY` still does the same. Two real mounts
//! (two SONGFS_HOMEs, two folders) share one folder store.

mod common;

use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::Duration;

use common::mount::{bytes, run_ok, Mount};

fn stdout(o: Output) -> String {
    String::from_utf8(o.stdout).unwrap()
}

/// The conflict copies under `<mount>/.conflicts/s/`.
fn copies(m: &Mount) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(m.path(".conflicts/s"))
        .map(|d| d.map(|e| e.unwrap().path()).collect())
        .unwrap_or_default();
    v.sort();
    v
}

fn sync(m: &Mount) {
    run_ok(m.songfs().arg("sync"));
}

fn write(m: &Mount, rel: &str, data: &[u8]) {
    let p = m.path(rel);
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    std::fs::write(&p, data).unwrap();
    assert!(
        m.wait_uploads(Duration::from_secs(30)),
        "{rel} not uploaded"
    );
}

fn read(p: &Path) -> Vec<u8> {
    std::fs::read(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

#[test]
fn conflicts_lists_file_copies_and_restores_them() {
    let mut a = Mount::new();
    // B: its own home and mount, on A's store.
    let mut b = Mount::init_only(&[]);
    run_ok(b.songfs().args([
        "init",
        "--force",
        "--store",
        &format!("file://{}", a.store.display()),
        "--device-name",
        "laptop",
    ]));
    b.store = a.store.clone();
    b.mount();

    let va = bytes(1, 300_000);
    let vb = bytes(2, 250_000);
    write(&a, "s/song.mp3", &va);
    write(&b, "s/song.mp3", &vb);
    sync(&a);
    std::thread::sleep(Duration::from_millis(20));
    sync(&b); // B's version is captured later: it keeps the name
    sync(&a);
    sync(&b);
    // Both made the same copy and each sends it once; let those cross before the
    // restore (a copy deleted before its own export went out comes back from the
    // other device's export: reported as a namespace sync limitation).
    sync(&a);
    sync(&b);
    assert_eq!(read(&a.path("s/song.mp3")), vb);
    let kept = copies(&a);
    assert_eq!(kept.len(), 1, "{kept:?}");
    let copy = kept[0].clone();
    assert_eq!(read(&copy), va, "A's version is kept whole");

    // The listing names the copy by its full path in this mount.
    let human = stdout(run_ok(a.songfs().arg("conflicts")));
    assert!(
        human.contains("file      ns/s/song.mp3")
            && human.contains(&format!("conflict copy: {}", copy.display())),
        "{human}"
    );
    assert!(
        human.contains(
            "1 conflict copy waiting; put one back with `songfs conflicts --restore PATH`"
        ) && human.contains(&format!("\n  {}\n", copy.display())),
        "{human}"
    );
    let json: serde_json::Value =
        serde_json::from_str(&stdout(run_ok(a.songfs().args(["conflicts", "--json"])))).unwrap();
    let rec = json
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["kind"] == "file" && r["row"] == "s/song.mp3")
        .unwrap_or_else(|| panic!("no file record: {json}"));
    assert_eq!(rec["copy_path"], copy.display().to_string(), "{rec}");
    assert_eq!(rec["copy_present"], true, "{rec}");

    // Bad input: not a conflict copy, a copy that is not there. Nothing moves.
    let o = a
        .songfs()
        .arg("conflicts")
        .arg("--restore")
        .arg(a.path("s/song.mp3"))
        .output()
        .unwrap();
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("is not a conflict copy") && err.contains("songfs conflicts"),
        "{err}"
    );
    let o = a
        .songfs()
        .arg("conflicts")
        .arg("--restore")
        .arg(a.path(".conflicts/s/song (from nobody 2020-01-01 00-00-00).mp3"))
        .output()
        .unwrap();
    assert!(!o.status.success());
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("does not exist"),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert_eq!(read(&a.path("s/song.mp3")), vb);

    // Restore: A's version takes the name again; B's is kept as a copy.
    let out = stdout(run_ok(
        a.songfs().arg("conflicts").arg("--restore").arg(&copy),
    ));
    assert!(
        out.contains(&format!("restored {}", a.path("s/song.mp3").display())),
        "{out}"
    );
    assert_eq!(read(&a.path("s/song.mp3")), va);
    let now = copies(&a);
    assert_eq!(now.len(), 1, "{now:?}");
    assert_ne!(now[0], copy);
    assert_eq!(read(&now[0]), vb, "the version that was in the way is kept");
    sync(&a);
    sync(&b);
    assert_eq!(read(&b.path("s/song.mp3")), va, "the restore reached B");
    // The record's copy is gone now; the listing says so and shows the new one.
    let human = stdout(run_ok(a.songfs().arg("conflicts")));
    assert!(
        human.contains(&format!(
            "conflict copy: {} (no longer there: restored or removed)",
            copy.display()
        )) && human.contains(&format!("\n  {}\n", now[0].display())),
        "{human}"
    );

    // `songfs restore` is the same command under its old name.
    run_ok(a.songfs().arg("restore").arg(&now[0]));
    assert_eq!(read(&a.path("s/song.mp3")), vb);
    assert_eq!(copies(&a).len(), 1);

    // Without a running mount, a restore says what to do.
    let left = copies(&a)[0].clone();
    a.unmount();
    let o = a
        .songfs()
        .arg("conflicts")
        .arg("--restore")
        .arg(&left)
        .output()
        .unwrap();
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("no songfs mount is running") && err.contains("songfs mount"),
        "{err}"
    );
    // The listing still works from disk.
    let human = stdout(run_ok(a.songfs().arg("conflicts")));
    assert!(
        human.contains(&format!("\n  {}\n", left.display())),
        "{human}"
    );
}
