//! The namespace on its own (no mount): names, hard links, renames, the upgrade of an
//! older database, and the path view the sync uses.

use std::path::Path;
use std::time::Duration;

use super::*;

fn open(dir: &Path) -> Catalog {
    Catalog::open(&dir.join("state.db"), 1000, 1000).unwrap()
}

#[test]
fn entries_survive_reopen_with_their_attributes() {
    let d = tempfile::tempdir().unwrap();
    let c = open(d.path());
    let a = c
        .create(ROOT_INO, "a", Kind::Dir, 0o755, 1, 2, None, false)
        .unwrap();
    let f = c
        .create(a.ino, "f.mp3", Kind::File, 0o600, 1, 2, Some("00"), false)
        .unwrap();
    c.set_content(f.ino, Some("ab"), 42, 7, false).unwrap();
    drop(c);
    let c = open(d.path());
    let f2 = c.lookup(a.ino, "f.mp3").unwrap();
    assert_eq!(f2.ino, f.ino);
    assert_eq!(f2.hash.as_deref(), Some("ab"));
    assert_eq!(
        (f2.size, f2.mtime_ns, f2.mode, f2.uid, f2.gid),
        (42, 7, 0o600, 1, 2)
    );
    assert_eq!(c.path_of(f.ino).unwrap(), "a/f.mp3");
    assert_eq!(c.children(ROOT_INO).unwrap().len(), 1);
}

#[test]
fn rename_replaces_files_and_empty_dirs_but_not_full_ones() {
    let d = tempfile::tempdir().unwrap();
    let c = open(d.path());
    let f = |n: &str| {
        c.create(ROOT_INO, n, Kind::File, 0o644, 0, 0, Some("h"), false)
            .unwrap()
    };
    let tmp = f("tmpXYZ");
    let old = f("song.mp3");
    let replaced = c
        .rename(
            ROOT_INO,
            "tmpXYZ",
            ROOT_INO,
            "song.mp3",
            RenameMode::default(),
        )
        .unwrap();
    assert_eq!(replaced.unwrap().ino, old.ino);
    assert_eq!(c.lookup(ROOT_INO, "song.mp3").unwrap().ino, tmp.ino);
    assert!(matches!(
        c.lookup(ROOT_INO, "tmpXYZ"),
        Err(CatalogError::NotFound)
    ));

    let d1 = c
        .create(ROOT_INO, "d1", Kind::Dir, 0o755, 0, 0, None, false)
        .unwrap();
    let d2 = c
        .create(ROOT_INO, "d2", Kind::Dir, 0o755, 0, 0, None, false)
        .unwrap();
    c.create(d2.ino, "x", Kind::File, 0o644, 0, 0, None, false)
        .unwrap();
    let e = c.rename(ROOT_INO, "d1", ROOT_INO, "d2", RenameMode::default());
    assert!(matches!(e, Err(CatalogError::NotEmpty)));
    let e = c.rename(ROOT_INO, "song.mp3", ROOT_INO, "d1", RenameMode::default());
    assert!(matches!(e, Err(CatalogError::IsDir)));
    let e = c.rename(ROOT_INO, "d2", d2.ino, "inner", RenameMode::default());
    assert!(matches!(e, Err(CatalogError::IntoItself)));
    c.rename(ROOT_INO, "d2", ROOT_INO, "d1", RenameMode::default())
        .unwrap();
    assert_eq!(c.lookup(ROOT_INO, "d1").unwrap().ino, d2.ino);
    assert!(c.get(d1.ino).is_err());
    assert_eq!(
        c.path_of(c.lookup(d2.ino, "x").unwrap().ino).unwrap(),
        "d1/x"
    );
}

#[test]
fn the_sync_applies_remote_files_by_path() {
    let d = tempfile::tempdir().unwrap();
    let c = open(d.path());
    let n = c
        .upsert_file("2026-02-10_song/stems/v.mp3", "h1", 10, 5, 0o644)
        .unwrap();
    assert_eq!(c.path_of(n.ino).unwrap(), "2026-02-10_song/stems/v.mp3");
    assert_eq!(c.resolve("2026-02-10_song/stems").unwrap().uid, 1000);
    let n2 = c
        .upsert_file("2026-02-10_song/stems/v.mp3", "h2", 20, 6, 0o600)
        .unwrap();
    assert_eq!(
        (n2.ino, n2.hash.as_deref(), n2.size, n2.mode),
        (n.ino, Some("h2"), 20, 0o600)
    );
    c.create(
        ROOT_INO,
        "songfactory_backup_1.db",
        Kind::File,
        0o600,
        0,
        0,
        None,
        true,
    )
    .unwrap();
    let files = c.files();
    assert_eq!(files.len(), 1, "local-only files are not listed");
    assert_eq!(files[0].0, "2026-02-10_song/stems/v.mp3");
    assert!(matches!(
        c.upsert_file("2026-02-10_song", "h", 1, 1, 0o644),
        Err(CatalogError::IsDir)
    ));
    assert_eq!(
        c.remove_file("2026-02-10_song/stems/v.mp3")
            .unwrap()
            .unwrap()
            .ino,
        n.ino
    );
    assert!(c
        .remove_file("2026-02-10_song/stems/v.mp3")
        .unwrap()
        .is_none());
}

#[test]
fn changes_made_by_another_connection_show_up_after_the_refresh_interval() {
    let d = tempfile::tempdir().unwrap();
    let a = open(d.path());
    let b = open(d.path());
    a.create(ROOT_INO, "mine", Kind::File, 0o644, 0, 0, None, false)
        .unwrap();
    b.upsert_file("synced/x.mp3", "h", 3, 1, 0o644).unwrap();
    std::thread::sleep(REFRESH_INTERVAL + Duration::from_millis(100));
    assert_eq!(
        a.resolve("synced/x.mp3").unwrap().hash.as_deref(),
        Some("h")
    );
    assert!(b.lookup(ROOT_INO, "mine").is_ok());
    // Our own changes never cause a reload that could lose them.
    let f = a.lookup(ROOT_INO, "mine").unwrap();
    a.set_content(f.ino, Some("h2"), 9, 2, false).unwrap();
    assert_eq!(a.get(f.ino).unwrap().size, 9);
}

#[test]
fn rmdir_refuses_full_dirs_and_unlink_refuses_dirs() {
    let d = tempfile::tempdir().unwrap();
    let c = open(d.path());
    let dir = c
        .create(ROOT_INO, "d", Kind::Dir, 0o755, 0, 0, None, false)
        .unwrap();
    c.create(dir.ino, "f", Kind::File, 0o644, 0, 0, None, false)
        .unwrap();
    assert!(matches!(
        c.rmdir(ROOT_INO, "d"),
        Err(CatalogError::NotEmpty)
    ));
    assert!(matches!(c.unlink(ROOT_INO, "d"), Err(CatalogError::IsDir)));
    assert!(matches!(c.rmdir(dir.ino, "f"), Err(CatalogError::NotDir)));
    c.unlink(dir.ino, "f").unwrap();
    c.rmdir(ROOT_INO, "d").unwrap();
    assert!(c.children(ROOT_INO).unwrap().is_empty());
    assert!(matches!(
        c.create(ROOT_INO, "a/b", Kind::File, 0, 0, 0, None, false),
        Err(CatalogError::InvalidName(_))
    ));
    assert!(matches!(
        c.create(ROOT_INO, &"x".repeat(300), Kind::File, 0, 0, 0, None, false),
        Err(CatalogError::NameTooLong(300))
    ));
}

fn file(c: &Catalog, parent: u64, name: &str) -> Node {
    c.create(parent, name, Kind::File, 0o644, 0, 0, Some("h"), false)
        .unwrap()
}

#[test]
fn hard_links_share_one_inode_until_the_last_name_goes() {
    let d = tempfile::tempdir().unwrap();
    let c = open(d.path());
    let dir = c
        .create(ROOT_INO, "d", Kind::Dir, 0o755, 0, 0, None, false)
        .unwrap();
    let a = file(&c, ROOT_INO, "a");
    let b = c.link(a.ino, dir.ino, "b").unwrap();
    assert_eq!((b.ino, b.nlink, b.name.as_str()), (a.ino, 2, "b"));
    assert_eq!(c.lookup(ROOT_INO, "a").unwrap().nlink, 2);
    let paths: Vec<String> = c.files().into_iter().map(|(p, _)| p).collect();
    assert_eq!(paths, ["a", "d/b"], "both names travel, as two paths");
    assert!(matches!(
        c.link(dir.ino, ROOT_INO, "dl"),
        Err(CatalogError::LinkDir)
    ));
    assert!(matches!(
        c.link(a.ino, ROOT_INO, "a"),
        Err(CatalogError::Exists(_))
    ));
    // Removing the first name leaves the inode under the other, also after a reopen.
    let gone = c.unlink(ROOT_INO, "a").unwrap();
    assert_eq!(gone.nlink, 1);
    drop(c);
    let c = open(d.path());
    let b = c.lookup(dir.ino, "b").unwrap();
    assert_eq!((b.ino, b.nlink), (a.ino, 1));
    assert_eq!(c.path_of(a.ino).unwrap(), "d/b");
    assert_eq!(c.unlink(dir.ino, "b").unwrap().nlink, 0);
    assert!(c.get(a.ino).is_err());
}

#[test]
fn rename_between_hard_links_of_one_inode_changes_nothing() {
    let d = tempfile::tempdir().unwrap();
    let c = open(d.path());
    let a = file(&c, ROOT_INO, "a");
    c.link(a.ino, ROOT_INO, "b").unwrap();
    assert!(c
        .rename(ROOT_INO, "a", ROOT_INO, "b", RenameMode::default())
        .unwrap()
        .is_none());
    assert_eq!(c.children(ROOT_INO).unwrap().len(), 2);
    // A second name renamed over another file replaces it; the inode keeps both counts.
    let x = file(&c, ROOT_INO, "x");
    let replaced = c
        .rename(ROOT_INO, "b", ROOT_INO, "x", RenameMode::default())
        .unwrap()
        .unwrap();
    assert_eq!((replaced.ino, replaced.nlink), (x.ino, 0));
    let names: Vec<(String, u64)> = c
        .children(ROOT_INO)
        .unwrap()
        .into_iter()
        .map(|n| (n.name, n.ino))
        .collect();
    assert_eq!(names, [("a".to_string(), a.ino), ("x".to_string(), a.ino)]);
}

#[test]
fn directory_link_counts_follow_subdirectories() {
    let d = tempfile::tempdir().unwrap();
    let c = open(d.path());
    let mk = |p: u64, n: &str| c.create(p, n, Kind::Dir, 0o755, 0, 0, None, false).unwrap();
    let a = mk(ROOT_INO, "a");
    mk(a.ino, "s1");
    let s2 = mk(a.ino, "s2");
    assert_eq!(c.get(a.ino).unwrap().nlink, 4);
    let b = mk(ROOT_INO, "b");
    c.rename(a.ino, "s2", b.ino, "s2", RenameMode::default())
        .unwrap();
    assert_eq!(
        (c.get(a.ino).unwrap().nlink, c.get(b.ino).unwrap().nlink),
        (3, 3)
    );
    c.rmdir(b.ino, "s2").unwrap();
    assert!(c.get(s2.ino).is_err());
    drop(c);
    let c = open(d.path());
    assert_eq!(c.get(ROOT_INO).unwrap().nlink, 4);
    assert_eq!(c.get(b.ino).unwrap().nlink, 2);
}

#[test]
fn symlinks_and_special_files_keep_what_makes_them() {
    let d = tempfile::tempdir().unwrap();
    let c = open(d.path());
    let l = c
        .create_node(
            ROOT_INO,
            "l",
            Kind::Symlink,
            &NewNode {
                mode: 0o777,
                target: Some("../x/y"),
                ..NewNode::default()
            },
        )
        .unwrap();
    let p = c
        .create_node(
            ROOT_INO,
            "p",
            Kind::Fifo,
            &NewNode {
                mode: 0o600,
                ..NewNode::default()
            },
        )
        .unwrap();
    let dev = c
        .create_node(
            ROOT_INO,
            "null",
            Kind::CharDev,
            &NewNode {
                mode: 0o666,
                rdev: libc::makedev(1, 3) as u32,
                ..NewNode::default()
            },
        )
        .unwrap();
    drop(c);
    let c = open(d.path());
    let l2 = c.get(l.ino).unwrap();
    assert_eq!((l2.kind, l2.size), (Kind::Symlink, 6));
    assert_eq!(c.readlink(l.ino).unwrap(), "../x/y");
    assert!(matches!(c.readlink(p.ino), Err(CatalogError::NotSymlink)));
    assert!(c.get(p.ino).unwrap().local_only, "FIFOs never sync");
    assert_eq!(c.get(dev.ino).unwrap().rdev, libc::makedev(1, 3) as u32);
    let synced: Vec<String> = c.files().into_iter().map(|(p, _)| p).collect();
    assert_eq!(
        synced,
        vec!["l"],
        "the symlink syncs, the FIFO and device never do"
    );
}

#[test]
fn a_setgid_directory_gives_new_entries_its_group() {
    let d = tempfile::tempdir().unwrap();
    let c = open(d.path());
    let g = c
        .create(ROOT_INO, "g", Kind::Dir, 0o2775, 0, 50, None, false)
        .unwrap();
    let f = c
        .create(g.ino, "f", Kind::File, 0o644, 7, 7, None, false)
        .unwrap();
    let sub = c
        .create(g.ino, "s", Kind::Dir, 0o755, 7, 7, None, false)
        .unwrap();
    assert_eq!((f.uid, f.gid, f.mode), (7, 50, 0o644));
    assert_eq!((sub.gid, sub.mode), (50, 0o2755));
}

#[test]
fn atime_is_kept_apart_from_mtime_with_nanoseconds() {
    let d = tempfile::tempdir().unwrap();
    let c = open(d.path());
    let f = file(&c, ROOT_INO, "f");
    let before = c.get(f.ino).unwrap().ctime_ns;
    let n = c
        .set_attr(
            f.ino,
            AttrChange {
                atime_ns: Some(1_950_000_000_123_456_789),
                mtime_ns: Some(-1_900_000_000_000_000_001),
                ..AttrChange::default()
            },
        )
        .unwrap();
    assert_eq!(
        (n.atime_ns, n.mtime_ns),
        (1_950_000_000_123_456_789, -1_900_000_000_000_000_001)
    );
    assert!(n.ctime_ns >= before);
    drop(c);
    let c = open(d.path());
    assert_eq!(c.get(f.ino).unwrap().atime_ns, 1_950_000_000_123_456_789);
}

#[test]
fn a_namespace_written_before_node_types_is_upgraded_in_place() {
    let d = tempfile::tempdir().unwrap();
    let path = d.path().join("state.db");
    {
        let db = open_db(&path).unwrap();
        db.execute_batch(
            "CREATE TABLE ns_inodes(
                ino INTEGER PRIMARY KEY, parent INTEGER NOT NULL, name TEXT NOT NULL,
                kind TEXT NOT NULL CHECK (kind IN ('dir', 'file')), hash TEXT,
                size INTEGER NOT NULL DEFAULT 0, mtime_ns INTEGER NOT NULL,
                ctime_ns INTEGER NOT NULL, mode INTEGER NOT NULL, uid INTEGER NOT NULL,
                gid INTEGER NOT NULL, local_only INTEGER NOT NULL DEFAULT 0);
             CREATE UNIQUE INDEX ns_inodes_by_name ON ns_inodes(parent, name);
             CREATE TABLE ns_meta(id INTEGER PRIMARY KEY CHECK (id = 1), version INTEGER NOT NULL);
             INSERT INTO ns_meta VALUES (1, 0);
             CREATE TRIGGER ns_bump_insert AFTER INSERT ON ns_inodes
                 BEGIN UPDATE ns_meta SET version = version + 1 WHERE id = 1; END;
             INSERT INTO ns_inodes VALUES (1, 0, '', 'dir', NULL, 0, 5, 5, 493, 0, 0, 0);
             INSERT INTO ns_inodes VALUES (2, 1, 'song.mp3', 'file', 'ab', 3, 77, 78, 420, 0, 0, 0);",
        )
        .unwrap();
    }
    let c = Catalog::open(&path, 0, 0).unwrap();
    let f = c.lookup(ROOT_INO, "song.mp3").unwrap();
    assert_eq!(
        (f.ino, f.hash.as_deref(), f.size, f.mtime_ns, f.atime_ns),
        (2, Some("ab"), 3, 77, 77)
    );
    c.create_node(
        ROOT_INO,
        "l",
        Kind::Symlink,
        &NewNode {
            target: Some("song.mp3"),
            ..NewNode::default()
        },
    )
    .unwrap();
    c.link(2, ROOT_INO, "again.mp3").unwrap();
    drop(c);
    let c = Catalog::open(&path, 0, 0).unwrap();
    assert_eq!(c.children(ROOT_INO).unwrap().len(), 3);
}

#[test]
fn long_names_are_enametoolong_everywhere() {
    let d = tempfile::tempdir().unwrap();
    let c = open(d.path());
    let long = "x".repeat(256);
    for e in [
        c.lookup(ROOT_INO, &long).unwrap_err(),
        c.unlink(ROOT_INO, &long).unwrap_err(),
        c.rmdir(ROOT_INO, &long).unwrap_err(),
        c.rename(ROOT_INO, &long, ROOT_INO, "a", RenameMode::default())
            .unwrap_err(),
    ] {
        assert_eq!(e.errno(), libc::ENAMETOOLONG);
    }
    assert!(c
        .lookup(ROOT_INO, &"x".repeat(255))
        .is_err_and(|e| e.errno() == libc::ENOENT));
}

/// Another device's file arrives whole: a reader at any moment (the folder mode's pass
/// runs beside the sync) sees it absent or complete, never with its hash and size 0.
/// Before the fix such a pass placed a 0-byte file and recorded it under the real hash.
#[test]
fn a_file_put_from_a_path_is_never_seen_half_made() {
    let d = tempfile::tempdir().unwrap();
    let c = open(d.path());
    let done = std::sync::atomic::AtomicBool::new(false);
    std::thread::scope(|s| {
        let reader = s.spawn(|| {
            let mut looks = 0u64;
            while !done.load(std::sync::atomic::Ordering::SeqCst) {
                for (path, n) in c.files() {
                    assert_eq!(n.size, 100, "{path} seen with size {}", n.size);
                }
                looks += 1;
            }
            looks
        });
        for i in 0..500 {
            c.upsert_file(&format!("song{}/take{i}.wav", i % 20), "h", 100, 7, 0o644)
                .unwrap();
        }
        done.store(true, std::sync::atomic::Ordering::SeqCst);
        assert!(reader.join().unwrap() > 0, "the reader looked");
    });
    assert_eq!(c.files().len(), 500);
}

/// The sync puts symlinks by path like files: a link replaces a file at its name and a
/// file a link, a folder at the name is never removed for either, and `files()` lists
/// links beside files.
#[test]
fn symlinks_put_by_path_replace_files_and_files_replace_them() {
    let d = tempfile::tempdir().unwrap();
    let c = open(d.path());
    c.upsert_file("a/song.wav", "h", 10, 5, 0o644).unwrap();
    let l = c.upsert_symlink("a/song.wav", "../b/x.wav", 9).unwrap();
    assert_eq!((l.kind, l.mtime_ns), (Kind::Symlink, 9));
    assert_eq!(c.readlink(l.ino).unwrap(), "../b/x.wav");
    let again = c.upsert_symlink("a/song.wav", "../b/x.wav", 9).unwrap();
    assert_eq!(again.ino, l.ino, "the same link again changes nothing");
    let l2 = c.upsert_symlink("a/song.wav", "/abs/y", 11).unwrap();
    assert_eq!(c.readlink(l2.ino).unwrap(), "/abs/y");
    let f = c.upsert_file("a/song.wav", "h2", 20, 12, 0o600).unwrap();
    assert_eq!(
        (f.kind, f.hash.as_deref(), f.size),
        (Kind::File, Some("h2"), 20)
    );
    c.upsert_symlink("new/dir/link", "target", 1).unwrap();
    let listed: Vec<(String, Kind)> = c.files().into_iter().map(|(p, n)| (p, n.kind)).collect();
    assert_eq!(
        listed,
        vec![
            ("a/song.wav".to_string(), Kind::File),
            ("new/dir/link".to_string(), Kind::Symlink)
        ]
    );
    assert!(matches!(
        c.upsert_symlink("new/dir", "x", 1),
        Err(CatalogError::IsDir)
    ));
    assert!(c.resolve("new/dir").unwrap().is_dir(), "the folder stays");
}
