//! Folder mode (`songfs mount --folder DIR`) against a real FUSE mount of another device
//! on one folder store: the real `songfs` binary on both sides, real daemons, real
//! `songfs sync` cycles. Writes travel both ways (the app's mkstemp + rename included),
//! renames and deletes too, a conflict keeps the losing version under `.conflicts/` on
//! both sides, a file being written slowly is not taken until closed and settled, and a
//! kill -9 of the folder daemon mid-download leaves no half file under the real name;
//! the same writes and a rename on S3 (s3s-fs on 127.0.0.1); names another system's
//! rules spell differently; database paths re-rooted between the mount and the folder;
//! symlinks both ways, kinds changing under one name, nothing written through a link.

mod common;
mod sync_util;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use common::mount::{alive, bytes, run_ok, songfs_bin, wait_until, Mount};
use common::s3server::S3Server;

/// A device in folder mode on an existing folder store; its daemon is killed (by PID)
/// when dropped, also after a panic.
struct FolderDevice {
    home: PathBuf,
    dir: PathBuf,
    pid: Option<u32>,
    /// Environment for every `songfs` run (the S3 server's credentials).
    env: Vec<(String, String)>,
    _root: tempfile::TempDir,
}

impl FolderDevice {
    fn on_folder_store(store: &Path, name: &str) -> FolderDevice {
        let url = format!("file://{}", store.display());
        FolderDevice::init(&["--store", &url, "--device-name", name], Vec::new())
    }

    /// Another device on the S3 store `prefix` of `s3`.
    fn on_s3(s3: &S3Server, prefix: &str, name: &str) -> FolderDevice {
        let (url, endpoint) = (s3.url(prefix), s3.endpoint());
        FolderDevice::init(
            &[
                "--store",
                &url,
                "--s3-endpoint",
                &endpoint,
                "--device-name",
                name,
            ],
            s3.env(),
        )
    }

    fn init(init_args: &[&str], env: Vec<(String, String)>) -> FolderDevice {
        let root = tempfile::Builder::new()
            .prefix("songfs-folder-test-")
            .tempdir()
            .unwrap();
        let home = root.path().join("home");
        let dir = root.path().join("audio");
        std::fs::create_dir_all(&dir).unwrap();
        let d = FolderDevice {
            home,
            dir,
            pid: None,
            env,
            _root: root,
        };
        run_ok(d.songfs().arg("init").args(init_args));
        d
    }

    fn songfs(&self) -> Command {
        let mut c = Command::new(songfs_bin());
        c.env("SONGFS_HOME", &self.home)
            .env("RUST_LOG", "songfs=debug,warn")
            .envs(self.env.iter().map(|(k, v)| (k, v)));
        c
    }

    fn start(&mut self) {
        self.start_with(&[]);
    }

    /// Starts the folder daemon with extra `songfs mount` arguments.
    fn start_with(&mut self, args: &[&str]) {
        run_ok(
            self.songfs()
                .arg("mount")
                .arg("--folder")
                .arg(&self.dir)
                .args(args),
        );
        self.pid = std::fs::read_to_string(self.home.join("daemon.pid"))
            .ok()
            .and_then(|s| s.trim().parse().ok());
        assert!(self.pid.is_some(), "the folder daemon wrote no pid file");
    }

    fn stop(&mut self) {
        run_ok(self.songfs().arg("unmount").arg(&self.dir));
        if let Some(pid) = self.pid.take() {
            assert!(wait_until(Duration::from_secs(30), || !alive(pid)));
        }
    }

    fn kill9(&mut self) {
        let pid = self.pid.take().expect("daemon running");
        // SAFETY: kill(2) of the daemon this test started, by PID.
        unsafe { libc::kill(pid as i32, libc::SIGKILL) };
        assert!(wait_until(Duration::from_secs(10), || !alive(pid)));
    }

    fn path(&self, rel: &str) -> PathBuf {
        self.dir.join(rel)
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.home.join("logs/daemon.log")).unwrap_or_default()
    }
}

impl Drop for FolderDevice {
    fn drop(&mut self) {
        if let Some(pid) = self.pid.take() {
            if alive(pid) {
                // SAFETY: kill(2) of the daemon this test started, by PID.
                unsafe { libc::kill(pid as i32, libc::SIGKILL) };
            }
        }
        if std::thread::panicking() {
            eprintln!("--- folder daemon log ---\n{}", self.log());
        }
    }
}

/// A mounted device and a folder-mode device sharing one folder store.
/// The store's temp folder is the third part: it lives as long as the test.
fn two_devices() -> (Mount, FolderDevice, tempfile::TempDir) {
    let store = tempfile::Builder::new()
        .prefix("songfs-folder-store-")
        .tempdir()
        .unwrap();
    let mount = Mount::on_folder_store(store.path(), "laptop");
    let mut folder = FolderDevice::on_folder_store(store.path(), "desktop");
    folder.start();
    (mount, folder, store)
}

/// Sync cycles on both sides, one after the other, until `done` holds (the folder side
/// first: what settled there is taken before its cycle).
fn sync_until(m: &Mount, f: &FolderDevice, what: &str, mut done: impl FnMut() -> bool) {
    let ok = wait_until(Duration::from_secs(45), || {
        run_ok(f.songfs().arg("sync"));
        run_ok(m.songfs().arg("sync"));
        run_ok(f.songfs().arg("sync"));
        done()
    });
    assert!(ok, "{what}: not reached within 45 s");
}

fn read(p: &Path) -> Option<Vec<u8>> {
    std::fs::read(p).ok()
}

/// What the app does: write a temporary file beside, then rename it into place.
fn mkstemp_rename(target: &Path, data: &[u8]) {
    let dir = target.parent().unwrap();
    std::fs::create_dir_all(dir).unwrap();
    let tmp = dir.join("tmpq8x_2kfa");
    std::fs::write(&tmp, data).unwrap();
    std::fs::rename(&tmp, target).unwrap();
}

fn conflict_copies(root: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let mut out = Vec::new();
    let mut stack = vec![root.join(".conflicts")];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else {
                let data = std::fs::read(&p).unwrap();
                out.push((p, data));
            }
        }
    }
    out
}

#[test]
fn writes_renames_and_deletes_travel_both_ways() {
    let (m, f, _store) = two_devices();

    // The app's write on the folder side arrives in the mount.
    let song = bytes(1, 300_000);
    mkstemp_rename(&f.path("2026-02-12_x/x_v1.mp3"), &song);
    sync_until(&m, &f, "folder → mount", || {
        read(&m.path("2026-02-12_x/x_v1.mp3")).as_deref() == Some(&song[..])
    });
    assert!(
        !m.path("2026-02-12_x/tmpq8x_2kfa").exists(),
        "the app's temporary name must never travel"
    );

    // A write through the mount arrives in the folder, whole, with its folder.
    let take = bytes(2, 200_000);
    std::fs::create_dir_all(m.path("2026-03-01_y")).unwrap();
    std::fs::write(m.path("2026-03-01_y/y_take1.wav"), &take).unwrap();
    sync_until(&m, &f, "mount → folder", || {
        read(&f.path("2026-03-01_y/y_take1.wav")).as_deref() == Some(&take[..])
    });

    // A rename on the folder side: the new name arrives, the old one goes.
    std::fs::rename(
        f.path("2026-02-12_x/x_v1.mp3"),
        f.path("2026-02-12_x/x_v2.mp3"),
    )
    .unwrap();
    sync_until(&m, &f, "rename folder → mount", || {
        read(&m.path("2026-02-12_x/x_v2.mp3")).as_deref() == Some(&song[..])
            && !m.path("2026-02-12_x/x_v1.mp3").exists()
    });

    // A rename in the mount, then a delete there, reach the folder.
    std::fs::rename(
        m.path("2026-03-01_y/y_take1.wav"),
        m.path("2026-03-01_y/y_final.wav"),
    )
    .unwrap();
    sync_until(&m, &f, "rename mount → folder", || {
        read(&f.path("2026-03-01_y/y_final.wav")).as_deref() == Some(&take[..])
            && !f.path("2026-03-01_y/y_take1.wav").exists()
    });
    std::fs::remove_file(m.path("2026-03-01_y/y_final.wav")).unwrap();
    sync_until(&m, &f, "delete mount → folder", || {
        !f.path("2026-03-01_y/y_final.wav").exists()
    });

    // A delete on the folder side reaches the mount.
    std::fs::remove_file(f.path("2026-02-12_x/x_v2.mp3")).unwrap();
    sync_until(&m, &f, "delete folder → mount", || {
        !m.path("2026-02-12_x/x_v2.mp3").exists()
    });

    // The app's database backups stay on the folder's machine.
    std::fs::write(f.path("songfactory_backup_20260301.db"), b"a backup").unwrap();
    std::thread::sleep(Duration::from_secs(3));
    run_ok(f.songfs().arg("sync"));
    run_ok(m.songfs().arg("sync"));
    assert!(!m.path("songfactory_backup_20260301.db").exists());
    assert!(f.path("songfactory_backup_20260301.db").exists());

    let status = run_ok(f.songfs().args(["status", "--json"]));
    let status: serde_json::Value = serde_json::from_slice(&status.stdout).unwrap();
    assert_eq!(status["folder_mode"], true, "{status}");
    assert_eq!(status["mounted"], true, "{status}");
}

#[test]
fn a_conflict_keeps_the_losing_version_under_conflicts_on_both_sides() {
    let (m, mut f, _store) = two_devices();
    let first = bytes(3, 50_000);
    std::fs::create_dir_all(m.path("album")).unwrap();
    std::fs::write(m.path("album/song.mp3"), &first).unwrap();
    sync_until(&m, &f, "the first version everywhere", || {
        read(&f.path("album/song.mp3")).as_deref() == Some(&first[..])
    });

    // Both edit before either syncs.
    let here = bytes(4, 60_000);
    let there = bytes(5, 70_000);
    mkstemp_rename(&f.path("album/song.mp3"), &here);
    std::fs::write(m.path("album/song.mp3"), &there).unwrap();
    // The folder's edit settles and is taken (notification, then a second look).
    std::thread::sleep(Duration::from_secs(3));

    sync_until(&m, &f, "one conflict copy on both sides", || {
        let (cf, cm) = (conflict_copies(&f.dir), conflict_copies(&m.dir));
        cf.len() == 1 && cm.len() == 1
    });
    let at_name_f = read(&f.path("album/song.mp3")).unwrap();
    let at_name_m = read(&m.path("album/song.mp3")).unwrap();
    assert_eq!(
        at_name_f, at_name_m,
        "both sides keep the same version at the name"
    );
    let copy_f = &conflict_copies(&f.dir)[0].1;
    let copy_m = &conflict_copies(&m.dir)[0].1;
    assert_eq!(copy_f, copy_m);
    let mut versions = vec![at_name_f, copy_f.clone()];
    versions.sort();
    let mut want = vec![here, there];
    want.sort();
    assert_eq!(versions, want, "neither edit is lost");
    f.stop();
}

#[test]
fn a_slowly_written_file_is_taken_only_once_closed_and_settled() {
    let (m, f, _store) = two_devices();
    let data = bytes(6, 400_000);
    let path = f.path("slow/recording.wav");
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    let mut w = std::fs::File::create(&path).unwrap();
    w.write_all(&data[..100_000]).unwrap();
    w.flush().unwrap();
    // Longer than the settle time, with the writer still holding the file open.
    for _ in 0..3 {
        std::thread::sleep(Duration::from_millis(1200));
        run_ok(f.songfs().arg("sync"));
        run_ok(m.songfs().arg("sync"));
        assert!(
            !m.path("slow/recording.wav").exists(),
            "a file still open for writing was taken"
        );
    }
    w.write_all(&data[100_000..]).unwrap();
    drop(w);
    sync_until(&m, &f, "the whole recording", || {
        m.path("slow/recording.wav").exists()
    });
    assert_eq!(
        read(&m.path("slow/recording.wav")).unwrap(),
        data,
        "only the whole file travels"
    );
}

#[test]
fn kill9_mid_download_leaves_no_half_file_and_the_restart_finishes() {
    let (m, mut f, _store) = two_devices();
    let big = bytes(7, 96 << 20);
    std::fs::write(m.path("big.wav"), &big).unwrap();
    assert!(m.wait_uploads(Duration::from_secs(60)), "upload of big.wav");
    run_ok(m.songfs().arg("sync"));

    // The folder's cycle downloads it; kill the daemon while the bytes are placed.
    let mut syncing = f.songfs().arg("sync").spawn().unwrap();
    let part = f.path(".songfs-part-big.wav");
    let real = f.path("big.wav");
    let caught = wait_until(Duration::from_secs(60), || part.exists() || real.exists());
    assert!(caught, "the download never started");
    let caught_mid_way = part.exists();
    f.kill9();
    let _ = syncing.wait();
    if let Ok(meta) = std::fs::metadata(&real) {
        // The rename came first: then it must be the whole file.
        assert_eq!(
            meta.len(),
            big.len() as u64,
            "a half file under the real name"
        );
    }
    eprintln!("killed mid-download: {caught_mid_way}");

    f.start();
    if caught_mid_way {
        // Cleared before anything else runs (the restart's own download may already be
        // writing a new temporary file).
        assert!(
            f.log()
                .contains("removed downloads a stopped daemon left half-done count=1"),
            "the restart must clear the half download it left"
        );
    }
    sync_until(&m, &f, "the download after the restart", || real.exists());
    assert_eq!(read(&real).unwrap(), big);
    assert!(!part.exists());
}

#[test]
fn on_s3_writes_and_a_rename_travel_both_ways() {
    let s3 = S3Server::start();
    let m = Mount::with_s3(&s3, "library", &[]);
    let mut f = FolderDevice::on_s3(&s3, "library", "desktop");
    f.start();

    let song = bytes(8, 250_000);
    mkstemp_rename(&f.path("2026-04-01_z/z_v1.mp3"), &song);
    sync_until(&m, &f, "folder → mount on S3", || {
        read(&m.path("2026-04-01_z/z_v1.mp3")).as_deref() == Some(&song[..])
    });
    let take = bytes(9, 150_000);
    std::fs::write(m.path("2026-04-01_z/z_take.wav"), &take).unwrap();
    sync_until(&m, &f, "mount → folder on S3", || {
        read(&f.path("2026-04-01_z/z_take.wav")).as_deref() == Some(&take[..])
    });
    std::fs::rename(
        f.path("2026-04-01_z/z_take.wav"),
        f.path("2026-04-01_z/z_keep.wav"),
    )
    .unwrap();
    sync_until(&m, &f, "rename folder → mount on S3", || {
        read(&m.path("2026-04-01_z/z_keep.wav")).as_deref() == Some(&take[..])
            && !m.path("2026-04-01_z/z_take.wav").exists()
    });
    f.stop();
}

/// The files directly in `dir`, by name.
fn names_in(dir: &Path) -> std::collections::BTreeMap<String, Vec<u8>> {
    std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| e.path().is_file())
        .map(|e| {
            let data = std::fs::read(e.path()).unwrap();
            (e.file_name().into_string().unwrap(), data)
        })
        .collect()
}

#[test]
fn twins_by_case_or_normalisation_each_keep_a_file_where_the_folder_folds_names() {
    let store = tempfile::tempdir().unwrap();
    let m = Mount::on_folder_store(store.path(), "laptop");
    let mut f = FolderDevice::on_folder_store(store.path(), "mac");
    // The macOS rules (names equal by case or normalisation are one file), on Linux.
    f.start_with(&["--names", "macos"]);
    let (nfc, nfd) = ("Caf\u{e9}.wav", "Cafe\u{301}.wav");
    let take = |n: u64| bytes(100 + n, 50_000 + n as usize);
    std::fs::create_dir_all(m.path("Album")).unwrap();
    for (i, name) in ["Take.wav", "take.wav", nfc, nfd].iter().enumerate() {
        std::fs::write(m.path(&format!("Album/{name}")), take(i as u64)).unwrap();
    }
    // First in byte order keeps the name; the twin gets " (2)".
    let expected: std::collections::BTreeMap<String, Vec<u8>> = [
        ("Take.wav".to_string(), take(0)),
        ("take (2).wav".to_string(), take(1)),
        ("Caf\u{e9} (2).wav".to_string(), take(2)),
        (nfd.to_string(), take(3)),
    ]
    .into();
    sync_until(&m, &f, "four twins placed", || {
        names_in(&f.path("Album")) == expected
    });

    // An edit of the suffixed file goes back to the store name it stands for.
    let edited = bytes(200, 60_000);
    mkstemp_rename(&f.path("Album/take (2).wav"), &edited);
    sync_until(&m, &f, "the edit of take (2).wav", || {
        read(&m.path("Album/take.wav")).as_deref() == Some(&edited[..])
    });
    assert_eq!(
        read(&m.path("Album/Take.wav")),
        Some(take(0)),
        "its twin is left alone"
    );

    // A delete here removes only the one it stands for.
    std::fs::remove_file(f.path("Album/Take.wav")).unwrap();
    sync_until(&m, &f, "the delete of Take.wav", || {
        !m.path("Album/Take.wav").exists()
    });
    assert_eq!(read(&m.path("Album/take.wav")), Some(edited.clone()));

    // A third twin arriving later renames nothing already in the folder.
    let third = bytes(300, 70_000);
    std::fs::write(m.path("Album/TAKE.wav"), &third).unwrap();
    sync_until(&m, &f, "TAKE.wav placed", || {
        read(&f.path("Album/TAKE.wav")).as_deref() == Some(&third[..])
    });
    assert_eq!(read(&f.path("Album/take (2).wav")), Some(edited.clone()));

    // A rename of the suffixed file renames the store name it stands for.
    std::fs::rename(f.path("Album/take (2).wav"), f.path("Album/renamed.wav")).unwrap();
    sync_until(&m, &f, "the rename", || {
        read(&m.path("Album/renamed.wav")).as_deref() == Some(&edited[..])
            && !m.path("Album/take.wav").exists()
    });
    let mut on_mount: Vec<String> = names_in(&m.path("Album")).into_keys().collect();
    on_mount.sort();
    let mut want = vec![
        "TAKE.wav".to_string(),
        nfc.to_string(),
        nfd.to_string(),
        "renamed.wav".to_string(),
    ];
    want.sort();
    assert_eq!(on_mount, want, "nothing lost, nothing merged");
    assert!(conflict_copies(m.root()).is_empty() && conflict_copies(&f.dir).is_empty());
    f.stop();
}

#[test]
fn names_windows_cannot_hold_get_look_alikes_and_travel_back() {
    let store = tempfile::tempdir().unwrap();
    let m = Mount::on_folder_store(store.path(), "laptop");
    let mut f = FolderDevice::on_folder_store(store.path(), "pc");
    // The Windows rules (an exFAT disk, say), on Linux.
    f.start_with(&["--names", "windows"]);
    let song = bytes(400, 40_000);
    std::fs::create_dir_all(m.path("Demos: 2026")).unwrap();
    std::fs::write(m.path("Demos: 2026/Intro? take 2.mp3"), &song).unwrap();
    std::fs::write(m.path("Demos: 2026/CON.txt"), b"notes").unwrap();
    sync_until(&m, &f, "look-alike names placed", || {
        read(&f.path("Demos\u{ff1a} 2026/Intro\u{ff1f} take 2.mp3")).as_deref() == Some(&song[..])
            && read(&f.path("Demos\u{ff1a} 2026/\u{ff23}ON.txt")).as_deref() == Some(&b"notes"[..])
    });
    // A file the user makes there with a look-alike is read back as the character.
    let new = bytes(401, 30_000);
    mkstemp_rename(&f.path("Demos\u{ff1a} 2026/What\u{ff1f}.mp3"), &new);
    let edited = bytes(402, 41_000);
    mkstemp_rename(
        &f.path("Demos\u{ff1a} 2026/Intro\u{ff1f} take 2.mp3"),
        &edited,
    );
    sync_until(&m, &f, "back in the store's spelling", || {
        read(&m.path("Demos: 2026/What?.mp3")).as_deref() == Some(&new[..])
            && read(&m.path("Demos: 2026/Intro? take 2.mp3")).as_deref() == Some(&edited[..])
    });
    assert_eq!(names_in(&m.path("Demos: 2026")).len(), 3, "no file doubled");
    f.stop();
}

fn db_text(db: &Path, sql: &str) -> Option<String> {
    rusqlite::Connection::open(db)
        .unwrap()
        .query_row(sql, [], |r| r.get(0))
        .ok()
}

fn set_path(db: &Path, column: &str, id: i64, path: &Path) {
    rusqlite::Connection::open(db)
        .unwrap()
        .execute(
            &format!("UPDATE songs SET {column} = ?1 WHERE id = ?2"),
            rusqlite::params![path.to_str().unwrap(), id],
        )
        .unwrap();
}

/// The app's database on each device names files by absolute path: a path inside the
/// mount arrives as the same file inside the folder, wherever each sits, and back.
#[test]
fn database_paths_are_rerooted_between_the_mount_and_the_folder() {
    let store = tempfile::tempdir().unwrap();
    let url = format!("file://{}", store.path().display());
    let dbs = tempfile::tempdir().unwrap();
    let (db_m, db_f) = (dbs.path().join("laptop.db"), dbs.path().join("desktop.db"));
    sync_util::make_db(&db_m, true);
    sync_util::make_db(&db_f, true);
    let mut m = Mount::init_with(Some(&url), &["--db", db_m.to_str().unwrap()], &[], &[]);
    m.mount();
    let mut f = FolderDevice::init(
        &[
            "--store",
            &url,
            "--device-name",
            "desktop",
            "--db",
            db_f.to_str().unwrap(),
        ],
        Vec::new(),
    );
    f.start();
    assert_ne!(m.path(""), f.path(""), "two different roots");

    let rel = "2026-02-12_song/song_vocals.mp3";
    let vocals = bytes(500, 120_000);
    std::fs::create_dir_all(m.path("2026-02-12_song")).unwrap();
    std::fs::write(m.path(rel), &vocals).unwrap();
    set_path(&db_m, "file_path_vocals", 2, &m.path(rel));
    sync_until(&m, &f, "mount path → folder path", || {
        db_text(&db_f, "SELECT file_path_vocals FROM songs WHERE id = 2").as_deref()
            == f.path(rel).to_str()
            && read(&f.path(rel)).as_deref() == Some(&vocals[..])
    });

    let rel2 = "2026-03-01_other/other_v1.mp3";
    let take = bytes(501, 90_000);
    mkstemp_rename(&f.path(rel2), &take);
    set_path(&db_f, "file_path_instrumental", 3, &f.path(rel2));
    sync_until(&m, &f, "folder path → mount path", || {
        db_text(
            &db_m,
            "SELECT file_path_instrumental FROM songs WHERE id = 3",
        )
        .as_deref()
            == m.path(rel2).to_str()
            && read(&m.path(rel2)).as_deref() == Some(&take[..])
    });
    f.stop();
}

fn link_of(p: &Path) -> Option<PathBuf> {
    std::fs::read_link(p).ok()
}

#[test]
fn symlinks_travel_between_the_mount_and_the_folder_and_nothing_lands_outside() {
    let (m, f, _store) = two_devices();
    let outside = tempfile::tempdir().unwrap();
    let take = bytes(7, 100_000);
    std::fs::create_dir_all(m.path("album")).unwrap();
    std::fs::write(m.path("album/x.mp3"), &take).unwrap();
    let link = |target: &str, at: PathBuf| std::os::unix::fs::symlink(target, at).unwrap();
    link("x.mp3", m.path("album/latest"));
    link("nowhere.wav", m.path("album/dangling"));
    let out = outside.path().to_str().unwrap().to_string();
    link(&out, m.path("album/stems"));

    // Links from the mount are placed as links, targets verbatim, never followed.
    sync_until(&m, &f, "links mount → folder", || {
        link_of(&f.path("album/latest")) == Some("x.mp3".into())
            && link_of(&f.path("album/dangling")) == Some("nowhere.wav".into())
            && link_of(&f.path("album/stems")) == Some(PathBuf::from(&out))
    });
    assert!(
        read(&f.path("album/latest")).as_ref() == Some(&take),
        "read through the link"
    );

    // Links made, retargeted and deleted in the folder travel to the mount.
    let v2 = bytes(8, 50_000);
    std::fs::write(f.path("album/x_v2.mp3"), &v2).unwrap();
    link("x.mp3", f.path("album/first"));
    std::fs::remove_file(f.path("album/latest")).unwrap();
    link("x_v2.mp3", f.path("album/latest"));
    std::fs::remove_file(f.path("album/dangling")).unwrap();
    sync_until(&m, &f, "links folder → mount", || {
        link_of(&m.path("album/first")) == Some("x.mp3".into())
            && link_of(&m.path("album/latest")) == Some("x_v2.mp3".into())
            && !m.path("album/dangling").exists()
            && std::fs::symlink_metadata(m.path("album/dangling")).is_err()
            && read(&m.path("album/x_v2.mp3")).as_deref() == Some(&v2[..])
    });
    assert!(
        read(&m.path("album/latest")) == Some(v2),
        "read through the link"
    );

    // The link to a folder outside becomes a real folder in the mount, with a file in
    // it: the folder side removes its link and makes a folder; nothing is written into
    // the folder the link pointed to.
    std::fs::remove_file(m.path("album/stems")).unwrap();
    std::fs::create_dir(m.path("album/stems")).unwrap();
    let stem = bytes(9, 30_000);
    std::fs::write(m.path("album/stems/drums.wav"), &stem).unwrap();
    // A file replaced by a link in the mount arrives as a link.
    std::fs::remove_file(m.path("album/x_v2.mp3")).unwrap();
    link("x.mp3", m.path("album/x_v2.mp3"));
    std::fs::remove_file(m.path("album/first")).unwrap();
    sync_until(&m, &f, "kinds changed in the mount", || {
        read(&f.path("album/stems/drums.wav")).as_deref() == Some(&stem[..])
            && link_of(&f.path("album/x_v2.mp3")) == Some("x.mp3".into())
            && std::fs::symlink_metadata(f.path("album/first")).is_err()
    });
    assert!(std::fs::symlink_metadata(f.path("album/stems"))
        .unwrap()
        .is_dir());
    let leaked: Vec<_> = std::fs::read_dir(outside.path()).unwrap().collect();
    assert!(leaked.is_empty(), "written outside the folder: {leaked:?}");
    // The latest link now points at a link: both sides read the first take through it.
    assert!(read(&f.path("album/latest")).as_ref() == Some(&take));
    assert!(read(&m.path("album/latest")) == Some(take));
    assert!(conflict_copies(&f.dir).is_empty(), "no conflicts expected");
}
