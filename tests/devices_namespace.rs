//! Namespace sync between two devices sharing one folder store, on real catalogs
//! (`state.db`) without a mount: propagation of create / replace / rename / delete,
//! export only after upload, conflict copies, local-only files, and the write sequences
//! that lose data in other tools (upload racing truncate / rename-over / delete).

use std::sync::Arc;

use bytes::Bytes;
use songfs::catalog::Catalog;
use songfs::config::{Config, StoreConfig};
use songfs::content;
use songfs::store::{self, ObjectStore};
use songfs::sync::conflicts;
use songfs::sync::namespace::{NamespaceSync, NsSummary, CONFLICTS_DIR};

struct Device {
    cfg: Config,
    dir: tempfile::TempDir,
    catalog: Catalog,
}

struct World {
    rt: tokio::runtime::Runtime,
    store: Arc<dyn ObjectStore>,
    _store_dir: tempfile::TempDir,
}

impl World {
    fn new() -> World {
        let rt = tokio::runtime::Runtime::new().unwrap();
        let store_dir = tempfile::tempdir().unwrap();
        let sc = StoreConfig {
            url: format!("file://{}", store_dir.path().display()),
            s3_endpoint: None,
            s3_region: None,
            encrypted: false,
        };
        let store = rt.block_on(store::open(&sc)).unwrap();
        World {
            rt,
            store,
            _store_dir: store_dir,
        }
    }

    fn device(&self, name: &str) -> Device {
        let dir = tempfile::tempdir().unwrap();
        let mut cfg = Config::new(
            StoreConfig {
                url: "file:///unused".into(),
                s3_endpoint: None,
                s3_region: None,
                encrypted: false,
            },
            name.into(),
        );
        cfg.conflicts_log = Some(dir.path().join("conflicts.log"));
        let catalog = Catalog::open(&dir.path().join("state.db"), 1000, 1000).unwrap();
        Device { cfg, dir, catalog }
    }

    fn sync(&self, d: &Device) -> NsSummary {
        let mut ns = NamespaceSync::open(
            &d.cfg,
            &d.dir.path().join("state.db"),
            &d.catalog,
            self.store.clone(),
            self.rt.handle().clone(),
        )
        .unwrap();
        let (s, _) = ns.cycle().unwrap();
        assert!(s.errors.is_empty(), "{:?}", s.errors);
        s
    }

    /// Puts a blob and then its chunk-hash sidecar in the store, as the uploader does.
    fn upload(&self, data: &[u8]) {
        let info = content::hash_bytes(data);
        self.rt
            .block_on(
                self.store
                    .put(&content::blob_key(&info.hash), Bytes::copy_from_slice(data)),
            )
            .unwrap();
        self.rt
            .block_on(self.store.put(
                &content::chunks_key(&info.hash),
                Bytes::from(serde_json::to_vec(&info).unwrap()),
            ))
            .unwrap();
    }
}

/// Writes `data` at `path` in the device's namespace (not uploaded yet).
fn write(d: &Device, path: &str, data: &[u8]) -> String {
    let h = content::hash_bytes(data).hash;
    d.catalog
        .upsert_file(
            path,
            &h,
            data.len() as u64,
            songfs::catalog::now_ns(),
            0o600,
        )
        .unwrap();
    h
}

fn hash_at(d: &Device, path: &str) -> Option<String> {
    d.catalog.resolve(path).ok().and_then(|n| n.hash)
}

fn paths(d: &Device) -> Vec<String> {
    d.catalog.files().into_iter().map(|(p, _)| p).collect()
}

#[test]
fn files_move_between_devices_only_once_uploaded() {
    let w = World::new();
    let (a, b) = (w.device("desk"), w.device("laptop"));
    let h = write(&a, "2026-02-12_song/song_v1.mp3", b"v1 bytes");
    let s = w.sync(&a);
    assert_eq!(
        (s.sent_files, s.waiting_for_upload),
        (0, 1),
        "not uploaded: not exported"
    );
    w.sync(&b);
    assert!(paths(&b).is_empty());

    w.upload(b"v1 bytes");
    assert_eq!(w.sync(&a).sent_files, 1);
    let s = w.sync(&b);
    assert_eq!(s.received_files, 1);
    let n = b.catalog.resolve("2026-02-12_song/song_v1.mp3").unwrap();
    assert_eq!(
        (n.hash.as_deref(), n.size, n.mode),
        (Some(h.as_str()), 8, 0o600)
    );
    // B exports nothing back (what it received is not its own edit, folders included).
    let s = w.sync(&b);
    assert_eq!((s.sent_files, s.sent_deletes, s.sent_dirs), (0, 0, 0));

    // Rename on B = delete + create; A follows, and the old folder goes away.
    b.catalog
        .upsert_file("2026-02-12_song2/renamed.mp3", &h, 8, 5, 0o600)
        .unwrap();
    b.catalog
        .remove_file("2026-02-12_song/song_v1.mp3")
        .unwrap();
    let s = w.sync(&b);
    assert_eq!((s.sent_files, s.sent_deletes), (1, 1));
    w.sync(&a);
    assert_eq!(paths(&a), vec!["2026-02-12_song2/renamed.mp3".to_string()]);
    assert!(
        a.catalog.resolve("2026-02-12_song").unwrap().is_dir(),
        "B kept the emptied folder, so does A"
    );
    // B removes the folder, and makes an empty one: A follows both.
    b.catalog
        .rmdir(songfs::catalog::ROOT_INO, "2026-02-12_song")
        .unwrap();
    songfs::sync::namespace::ensure_dirs(&b.catalog, "empty/inner").unwrap();
    assert_eq!(w.sync(&b).sent_dirs, 3);
    // One removed, "empty/inner" made with its parent in one step.
    assert_eq!(w.sync(&a).received_dirs, 2);
    assert!(a.catalog.resolve("2026-02-12_song").is_err());
    assert!(a.catalog.resolve("empty/inner").unwrap().is_dir());

    // Delete on A reaches B.
    a.catalog
        .remove_file("2026-02-12_song2/renamed.mp3")
        .unwrap();
    w.sync(&a);
    assert_eq!(w.sync(&b).received_deletes, 1);
    assert!(paths(&b).is_empty());
}

/// "desk" and then "laptop" write s/song.mp3 without seeing each other's version; the
/// laptop has synced (exported its later version, then seen the desk's: a conflict).
/// Returns both devices and both hashes.
fn written_on_both(w: &World) -> (Device, Device, String, String) {
    let (a, b) = (w.device("desk"), w.device("laptop"));
    w.upload(b"from desk");
    w.upload(b"from laptop");
    let ha = write(&a, "s/song.mp3", b"from desk");
    w.sync(&a);
    std::thread::sleep(std::time::Duration::from_millis(5));
    let hb = write(&b, "s/song.mp3", b"from laptop");
    w.sync(&b);
    (a, b, ha, hb)
}

#[test]
fn concurrent_writes_keep_the_later_and_a_conflict_copy_on_both() {
    let w = World::new();
    let (a, b, ha, hb) = written_on_both(&w);
    w.sync(&a);
    w.sync(&b);
    w.sync(&a);
    for d in [&a, &b] {
        assert_eq!(
            hash_at(d, "s/song.mp3").as_deref(),
            Some(hb.as_str()),
            "later wins"
        );
        let copies: Vec<String> = paths(d)
            .into_iter()
            .filter(|p| p.starts_with(CONFLICTS_DIR))
            .collect();
        assert_eq!(copies.len(), 1, "{copies:?}");
        assert!(
            copies[0].starts_with(".conflicts/s/song (from desk ") && copies[0].ends_with(".mp3"),
            "{}",
            copies[0]
        );
        assert_eq!(hash_at(d, &copies[0]).as_deref(), Some(ha.as_str()));
        let (records, _) = conflicts::read_newest_first(&d.cfg.conflicts_log_path()).unwrap();
        assert!(records
            .iter()
            .any(|r| r.kind == "file" && r.row == "s/song.mp3"));
    }
    // Later syncs make no new copies (never a copy of a copy).
    w.sync(&a);
    w.sync(&b);
    assert_eq!(paths(&a), paths(&b));
    assert_eq!(paths(&a).len(), 2);
}

/// Every device derives the same conflict copy; none exports it. So a restore done on one
/// device right after the conflict appeared (before any further sync) is final: the copy
/// does not come back from another device's export of it, and the restored bytes win.
#[test]
fn a_conflict_copy_restored_right_away_does_not_come_back() {
    let w = World::new();
    let (a, b, ha, _) = written_on_both(&w);
    w.sync(&a);
    let copy = paths(&a)
        .into_iter()
        .find(|p| p.starts_with(CONFLICTS_DIR))
        .expect("A derived the copy");
    // What `songfs conflicts --restore` does: the copy's bytes back at the name.
    let n = a.catalog.resolve(&copy).unwrap();
    a.catalog.remove_file(&copy).unwrap();
    a.catalog
        .upsert_file(
            "s/song.mp3",
            n.hash.as_deref().unwrap(),
            n.size,
            songfs::catalog::now_ns(),
            0o600,
        )
        .unwrap();
    for _ in 0..2 {
        w.sync(&a);
        w.sync(&b);
    }
    for d in [&a, &b] {
        assert_eq!(
            hash_at(d, "s/song.mp3").as_deref(),
            Some(ha.as_str()),
            "restored bytes keep the name on {}",
            d.cfg.device_name
        );
        assert!(
            !paths(d).contains(&copy),
            "the restored copy came back on {}: {:?}",
            d.cfg.device_name,
            paths(d)
        );
    }
}

#[test]
fn a_local_write_still_uploading_keeps_the_name() {
    let w = World::new();
    let (a, b) = (w.device("desk"), w.device("laptop"));
    w.upload(b"one");
    write(&a, "x.wav", b"one");
    w.sync(&a);
    w.sync(&b);
    // A replaces x.wav; B writes it too, but B's bytes are not uploaded yet.
    w.upload(b"two from desk");
    let h2 = write(&a, "x.wav", b"two from desk");
    w.sync(&a);
    let hb = write(&b, "x.wav", b"three from laptop");
    let s = w.sync(&b);
    assert_eq!(s.waiting_for_upload, 1);
    assert_eq!(
        hash_at(&b, "x.wav").as_deref(),
        Some(hb.as_str()),
        "local write kept"
    );
    let copy = paths(&b)
        .into_iter()
        .find(|p| p.starts_with(CONFLICTS_DIR))
        .expect("the remote version kept as a copy");
    assert_eq!(hash_at(&b, &copy).as_deref(), Some(h2.as_str()));
    // Once uploaded, B's write wins everywhere, and A gets the copy of its own version.
    w.upload(b"three from laptop");
    w.sync(&b);
    w.sync(&a);
    assert_eq!(hash_at(&a, "x.wav").as_deref(), Some(hb.as_str()));
    assert_eq!(hash_at(&a, &copy).as_deref(), Some(h2.as_str()));
}

#[test]
fn local_only_files_never_leave_and_are_never_replaced() {
    let w = World::new();
    let (a, b) = (w.device("desk"), w.device("laptop"));
    let root = a.catalog.get(songfs::catalog::ROOT_INO).unwrap();
    a.catalog
        .create(
            root.ino,
            "songfactory_backup_2026-02-12.db",
            songfs::catalog::Kind::File,
            0o600,
            0,
            0,
            None,
            true,
        )
        .unwrap();
    let s = w.sync(&a);
    assert_eq!((s.sent_files, s.logs_sent), (0, 0));
    w.sync(&b);
    assert!(b
        .catalog
        .resolve("songfactory_backup_2026-02-12.db")
        .is_err());
}

/// The sequences that lost data in rclone's writeback (#4293, #4763): a file changed,
/// renamed over or deleted while its previous content is uploading ends, on every device,
/// as the user last left it.
#[test]
fn upload_racing_truncate_rename_and_delete_ends_with_the_last_state() {
    let w = World::new();
    let (a, b) = (w.device("desk"), w.device("laptop"));
    // Truncated while uploading: the first content never exported, the empty file is.
    write(&a, "t.mp3", b"long content being uploaded");
    w.sync(&a);
    write(&a, "t.mp3", b"");
    // Renamed over while uploading: tmp → final; the tmp name never exists remotely.
    write(&a, "final.mp3", b"old final");
    w.upload(b"old final");
    w.sync(&a);
    write(&a, "tmp123", b"new final");
    w.sync(&a); // tmp123 still uploading: not exported
    let h_new = a.catalog.resolve("tmp123").unwrap().hash.unwrap();
    a.catalog
        .rename(
            songfs::catalog::ROOT_INO,
            "tmp123",
            songfs::catalog::ROOT_INO,
            "final.mp3",
            Default::default(),
        )
        .unwrap();
    // Deleted while uploading: never appears anywhere.
    write(&a, "gone.mp3", b"deleted before upload");
    w.sync(&a);
    a.catalog.remove_file("gone.mp3").unwrap();
    w.upload(b"long content being uploaded");
    w.upload(b"new final");
    w.upload(b"deleted before upload");
    w.sync(&a);
    w.sync(&b);
    for d in [&a, &b] {
        assert_eq!(paths(d), vec!["final.mp3".to_string(), "t.mp3".to_string()]);
        assert_eq!(d.catalog.resolve("t.mp3").unwrap().size, 0);
        assert_eq!(hash_at(d, "final.mp3"), Some(h_new.clone()));
    }
    assert!(b.catalog.resolve("tmp123").is_err());
}

/// A delete on one device and an edit on the other, neither seeing the other: the later
/// wins; if that is the delete, the edited version is kept as a conflict copy.
#[test]
fn a_delete_never_silently_drops_a_concurrent_edit() {
    let w = World::new();
    let (a, b) = (w.device("desk"), w.device("laptop"));
    w.upload(b"first");
    write(&a, "d/f.mp3", b"first");
    w.sync(&a);
    w.sync(&b);
    // B edits, A deletes later: the delete wins, B's edit survives as a copy.
    w.upload(b"edited on laptop");
    let edited = write(&b, "d/f.mp3", b"edited on laptop");
    w.sync(&b);
    std::thread::sleep(std::time::Duration::from_millis(5));
    // A has not pulled B's log when it deletes (its capture runs before its pull).
    a.catalog.remove_file("d/f.mp3").unwrap();
    w.sync(&a);
    w.sync(&b);
    for d in [&a, &b] {
        assert!(
            d.catalog.resolve("d/f.mp3").is_err(),
            "the later delete wins"
        );
        let copies: Vec<String> = paths(d)
            .into_iter()
            .filter(|p| p.starts_with(CONFLICTS_DIR))
            .collect();
        assert_eq!(copies.len(), 1, "{copies:?}");
        assert_eq!(hash_at(d, &copies[0]).as_deref(), Some(edited.as_str()));
    }
    // The other order: A deletes first, B edits later without seeing it: B's edit wins.
    w.upload(b"again");
    write(&a, "e.mp3", b"again");
    w.sync(&a);
    w.sync(&b);
    a.catalog.remove_file("e.mp3").unwrap();
    w.sync(&a);
    std::thread::sleep(std::time::Duration::from_millis(5));
    w.upload(b"newer edit");
    let newer = write(&b, "e.mp3", b"newer edit");
    // B has not pulled A's delete yet when it edits (its capture runs before its pull).
    w.sync(&b);
    w.sync(&a);
    for d in [&a, &b] {
        assert_eq!(
            hash_at(d, "e.mp3").as_deref(),
            Some(newer.as_str()),
            "later edit wins"
        );
    }
}

/// A file on one device where the other has a folder of that name: the folder stays,
/// the file is kept as a conflict copy, and later cycles go on (no stall).
#[test]
fn a_file_where_a_folder_is_becomes_a_copy_and_sync_goes_on() {
    let w = World::new();
    let (a, b) = (w.device("desk"), w.device("laptop"));
    w.upload(b"a file");
    w.upload(b"inside");
    let h = write(&a, "album", b"a file");
    write(&b, "album/track.mp3", b"inside");
    w.sync(&a);
    w.sync(&b);
    assert!(b.catalog.resolve("album").unwrap().is_dir());
    let copy = paths(&b)
        .into_iter()
        .find(|p| p.starts_with(CONFLICTS_DIR))
        .expect("the file kept as a copy");
    assert_eq!(hash_at(&b, &copy).as_deref(), Some(h.as_str()));
    // Later changes still flow.
    w.upload(b"later");
    write(&a, "later.mp3", b"later");
    w.sync(&a);
    assert_eq!(w.sync(&b).received_files, 1);
}

/// A crash after remote changes reached the catalog but before the sync's bookkeeping
/// was committed: the next cycle replays the log first and sends nothing as its own.
#[test]
fn a_crash_mid_apply_is_finished_not_sent_back() {
    let w = World::new();
    let (a, b) = (w.device("desk"), w.device("laptop"));
    w.upload(b"remote file");
    write(&a, "r.mp3", b"remote file");
    w.sync(&a);
    w.sync(&b);
    assert!(b.catalog.resolve("r.mp3").is_ok());
    // Undo B's bookkeeping of that apply, leaving the catalog as it is, as a crash
    // between the two would.
    let db = rusqlite::Connection::open(b.dir.path().join("state.db")).unwrap();
    db.execute_batch(
        "DELETE FROM nsync_shadow; DELETE FROM nsync_rows; DELETE FROM nsync_cursors;
         INSERT INTO nsync_meta(key, value) VALUES ('applying', 'x')
         ON CONFLICT(key) DO UPDATE SET value = excluded.value;",
    )
    .unwrap();
    drop(db);
    let s = w.sync(&b);
    assert_eq!(
        (s.sent_files, s.sent_deletes, s.logs_sent),
        (0, 0, 0),
        "{s:?}"
    );
    let s = w.sync(&b);
    assert_eq!((s.sent_files, s.logs_sent), (0, 0), "{s:?}");
    assert!(b.catalog.resolve("r.mp3").is_ok());
}

/// A file open for writing (unsaved bytes in the mount) is never replaced underneath
/// by a remote version: that version is kept as a conflict copy.
#[test]
fn a_file_being_written_is_not_replaced_underneath() {
    let w = World::new();
    let (a, b) = (w.device("desk"), w.device("laptop"));
    w.upload(b"v1");
    let h1 = write(&a, "open.wav", b"v1");
    w.sync(&a);
    w.sync(&b);
    w.upload(b"v2 from desk");
    let h2 = write(&a, "open.wav", b"v2 from desk");
    w.sync(&a);
    let ino = b.catalog.resolve("open.wav").unwrap().ino;
    let busy = move |i: u64| i == ino;
    let mut ns = NamespaceSync::open(
        &b.cfg,
        &b.dir.path().join("state.db"),
        &b.catalog,
        w.store.clone(),
        w.rt.handle().clone(),
    )
    .unwrap()
    .with_busy(&busy);
    let (s, _) = ns.cycle().unwrap();
    assert_eq!(s.conflict_copies, 1, "{s:?}");
    assert_eq!(hash_at(&b, "open.wav").as_deref(), Some(h1.as_str()));
    let copy = paths(&b)
        .into_iter()
        .find(|p| p.starts_with(CONFLICTS_DIR))
        .unwrap();
    assert_eq!(hash_at(&b, &copy).as_deref(), Some(h2.as_str()));
    // The write ends without changing the bytes: this device's version still wins
    // everywhere at the next cycles (the machines never stay different).
    drop(ns);
    w.sync(&b);
    w.sync(&a);
    assert_eq!(hash_at(&a, "open.wav").as_deref(), Some(h1.as_str()));
    assert_eq!(hash_at(&a, &copy).as_deref(), Some(h2.as_str()));
}

/// How long namespace cycles take for a 5,000-file library on a folder store:
/// `cargo test --release --test devices_namespace -- --ignored --nocapture`.
#[test]
#[ignore]
fn bench_namespace_cycles_5000_files() {
    let w = World::new();
    let (a, b) = (w.device("desk"), w.device("laptop"));
    for i in 0..5000u32 {
        let data = i.to_le_bytes();
        w.upload(&data);
        write(&a, &format!("d{}/song_{i}.mp3", i % 100), &data);
    }
    let t = std::time::Instant::now();
    let s = w.sync(&a);
    let first_export = t.elapsed();
    assert_eq!(s.sent_files, 5000);
    let t = std::time::Instant::now();
    let s = w.sync(&b);
    let first_import = t.elapsed();
    assert_eq!(s.received_files, 5000);
    let t = std::time::Instant::now();
    let s = w.sync(&a);
    let idle = t.elapsed();
    assert_eq!(s.sent_files, 0);
    eprintln!(
        "5000 files: first export {first_export:?}, first import on the other device {first_import:?}, idle cycle {idle:?}"
    );
}

/// A file still being written is not exported (its bytes are not final): the app's
/// temporary file never appears on another machine.
#[test]
fn files_being_written_are_not_exported() {
    let w = World::new();
    let (a, b) = (w.device("desk"), w.device("laptop"));
    write(&a, "tmpABC123", b"");
    let ino = a.catalog.resolve("tmpABC123").unwrap().ino;
    let busy = move |i: u64| i == ino;
    let mut ns = NamespaceSync::open(
        &a.cfg,
        &a.dir.path().join("state.db"),
        &a.catalog,
        w.store.clone(),
        w.rt.handle().clone(),
    )
    .unwrap()
    .with_busy(&busy);
    let (s, _) = ns.cycle().unwrap();
    assert_eq!((s.sent_files, s.being_written), (0, 1), "{s:?}");
    drop(ns);
    w.sync(&b);
    assert!(paths(&b).is_empty());
}

/// A device's logs are folded into a snapshot once they pile up; a device that was
/// half-way and a brand-new one both end with the same files.
#[test]
fn logs_are_compacted_and_late_devices_catch_up() {
    let w = World::new();
    let (a, b) = (w.device("desk"), w.device("laptop"));
    for i in 0..40u32 {
        let data = format!("file {i}");
        w.upload(data.as_bytes());
        write(&a, &format!("f/{i}.mp3"), data.as_bytes());
        if i % 3 == 0 && i > 0 {
            a.catalog.remove_file(&format!("f/{}.mp3", i - 1)).unwrap();
        }
        w.sync(&a);
        if i == 10 {
            w.sync(&b);
        }
    }
    let logs =
        w.rt.block_on(w.store.list(&format!("ns/logs/{}/", a.cfg.device_id)))
            .unwrap();
    let snaps =
        w.rt.block_on(w.store.list(&format!("ns/snapshots/{}/", a.cfg.device_id)))
            .unwrap();
    assert!(logs.len() < 32, "{} logs left", logs.len());
    assert_eq!(snaps.len(), 1);
    let c = w.device("new");
    w.sync(&b);
    w.sync(&c);
    assert_eq!(paths(&b), paths(&a));
    assert_eq!(paths(&c), paths(&a));
    assert_eq!(paths(&a).len(), 27);
}
