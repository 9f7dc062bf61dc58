//! `songfs import`: an old library (sox-generated audio in nested folders, the app's cover
//! art and CD files, a real v5 database pointing at them) adopted into the mount.
//!
//! The tests named `*_folder_*` drive `songfs::import::run` into a plain folder (the copy,
//! dedup, resume and database logic without FUSE); `import_through_a_real_mount` runs the
//! real binary against a real mount.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use rusqlite::Connection;
use songfs::import::{self, Options, Summary};

const SCHEMA_SQL: &str = include_str!("fixtures/songfactory-v5.sql");
const SEED_SQL: &str = include_str!("fixtures/seed-rows.sql");
const TAG: &str = "testdev-0123abcd";

/// An old library: `music/` (the app's download_dir) and `app/` (~/.songfactory with the
/// database, cover_art/ and cd_projects/).
struct Library {
    _root: tempfile::TempDir,
    music: PathBuf,
    app: PathBuf,
    db: PathBuf,
    /// Every file that should be adopted (absolute, old location).
    files: Vec<PathBuf>,
    /// A file the database names that does not exist.
    missing: PathBuf,
}

fn sox(out: &Path, secs: &str, freq: &str) {
    std::fs::create_dir_all(out.parent().unwrap()).unwrap();
    let st = Command::new("sox")
        .args(["-n", "-r", "22050", "-c", "1"])
        .arg(out)
        .args(["synth", secs, "sine", freq])
        .status()
        .expect("sox is installed");
    assert!(st.success(), "sox failed for {}", out.display());
}

fn write(path: &Path, data: &[u8]) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, data).unwrap();
}

fn s(p: &Path) -> String {
    p.to_string_lossy().into_owned()
}

fn library() -> Library {
    let root = tempfile::Builder::new()
        .prefix("songfs-import-")
        .tempdir()
        .unwrap();
    let music = root.path().join("Music/SongFactory");
    let app = root.path().join("dot-songfactory");
    let song1 = music.join("2026-02-12_river_orchard");
    let v1 = song1.join("river_orchard_v1.mp3");
    let v2 = song1.join("river_orchard_v2.wav");
    let vocals = song1.join("stems/deep/river_orchard_vocals.wav");
    let other = music.join("2026-02-13_ember_silver/ember_silver_v1.mp3");
    sox(&v1, "1", "440");
    sox(&v2, "1.5", "330");
    sox(&vocals, "1", "220");
    sox(&other, "2", "550");
    let cover = app.join("cover_art/1.png");
    write(&cover, &common::mount::bytes(1, 40_000));
    let cd_wav = app.join("cd_projects/1/01.wav");
    sox(&cd_wav, "1", "660");
    let cd_art = app.join("cd_projects/1/art/cover.png");
    write(&cd_art, &common::mount::bytes(2, 10_000));
    // The app's Settings backup: a copy of the database, stays where it is.
    write(&music.join("songfactory_backup_2026-02-01.db"), b"secret");
    let missing = music.join("2026-02-14_gone/gone_v1.mp3");

    let db = app.join("songfactory.db");
    let c = Connection::open(&db).unwrap();
    c.execute_batch(SCHEMA_SQL).unwrap();
    c.execute_batch(SEED_SQL).unwrap();
    c.execute(
        "UPDATE songs SET file_path_1 = ?1, file_path_2 = ?2, file_path_vocals = ?3 WHERE id = 1",
        [s(&v1), s(&v2), s(&vocals)],
    )
    .unwrap();
    c.execute(
        "UPDATE songs SET file_path_1 = ?1 WHERE id = 2",
        [s(&other)],
    )
    .unwrap();
    c.execute(
        "UPDATE songs SET file_path_1 = ?1 WHERE id = 3",
        [s(&missing)],
    )
    .unwrap();
    c.execute(
        "UPDATE songs SET file_path_instrumental = '/srv/elsewhere/x.wav' WHERE id = 4",
        [],
    )
    .unwrap();
    c.execute(
        "INSERT INTO distributions (song_id, songwriter, cover_art_path) VALUES (1, 'me', ?1)",
        [s(&cover)],
    )
    .unwrap();
    c.execute(
        "INSERT INTO cd_projects (name, cover_art_path) VALUES ('First CD', ?1)",
        [s(&cd_art)],
    )
    .unwrap();
    c.execute(
        "INSERT INTO cd_tracks (project_id, song_id, track_number, title, source_path, wav_path)
         VALUES (1, 1, 1, 'River Orchard', ?1, ?2)",
        [s(&v1), s(&cd_wav)],
    )
    .unwrap();
    c.execute(
        "INSERT OR REPLACE INTO config (key, value) VALUES ('download_dir', ?1)",
        [s(&music)],
    )
    .unwrap();
    drop(c);
    Library {
        _root: root,
        music,
        app,
        db,
        files: vec![v1, v2, vocals, other, cover, cd_wav, cd_art],
        missing,
    }
}

impl Library {
    fn options(&self, mount: &Path, dry_run: bool) -> Options {
        Options {
            roots: import::default_roots(&self.music, Some(&self.app), mount, TAG),
            mount: mount.to_path_buf(),
            db: self.db.clone(),
            dry_run,
            busy_timeout: Duration::from_secs(5),
            local_only: vec![glob::Pattern::new("songfactory_backup_*.db").unwrap()],
        }
    }

    fn run(&self, mount: &Path, dry_run: bool) -> Summary {
        import::run(&self.options(mount, dry_run), &|_, _| {}).expect("import runs")
    }

    /// Where an old file is expected in the mount.
    fn expected(&self, mount: &Path, old: &Path) -> PathBuf {
        self.expected_as(mount, old, TAG)
    }

    /// Where an old file is expected in the mount of the device tagged `tag`.
    fn expected_as(&self, mount: &Path, old: &Path, tag: &str) -> PathBuf {
        if let Ok(rel) = old.strip_prefix(&self.music) {
            return mount.join(rel);
        }
        let rel = old.strip_prefix(&self.app).unwrap();
        let mut parts = rel.components();
        let sub = parts
            .next()
            .unwrap()
            .as_os_str()
            .to_string_lossy()
            .into_owned();
        let first = parts
            .next()
            .unwrap()
            .as_os_str()
            .to_string_lossy()
            .into_owned();
        let mut out = mount
            .join(".songfactory")
            .join(sub)
            .join(format!("{tag}_{first}"));
        if !parts.as_path().as_os_str().is_empty() {
            out.push(parts.as_path());
        }
        out
    }

    /// Every path value of the database, plus download_dir.
    fn paths(&self) -> Vec<(String, Option<String>)> {
        let c = Connection::open(&self.db).unwrap();
        let mut out = Vec::new();
        for (t, col) in import::PATH_COLUMNS {
            let mut st = c
                .prepare(&format!("SELECT id, {col} FROM {t} ORDER BY id"))
                .unwrap();
            let rows = st
                .query_map([], |r| {
                    Ok((format!("{t}.{col}/{}", r.get::<_, i64>(0)?), r.get(1)?))
                })
                .unwrap();
            out.extend(rows.map(Result::unwrap));
        }
        out.push((
            "download_dir".into(),
            c.query_row(
                "SELECT value FROM config WHERE key='download_dir'",
                [],
                |r| r.get(0),
            )
            .unwrap(),
        ));
        out
    }

    /// Every row of every table, as text: "nothing changed" means exactly this is equal.
    fn dump(&self) -> Vec<String> {
        let c = Connection::open(&self.db).unwrap();
        let tables: Vec<String> = c
            .prepare("SELECT name FROM sqlite_master WHERE type='table' ORDER BY name")
            .unwrap()
            .query_map([], |r| r.get(0))
            .unwrap()
            .map(Result::unwrap)
            .collect();
        let mut out = Vec::new();
        for t in tables {
            let mut st = c.prepare(&format!("SELECT * FROM \"{t}\"")).unwrap();
            let n = st.column_count();
            let rows = st
                .query_map([], |r| {
                    let vals: Vec<String> = (0..n)
                        .map(|i| format!("{:?}", r.get_ref(i).unwrap()))
                        .collect();
                    Ok(format!("{t}: {}", vals.join("|")))
                })
                .unwrap();
            out.extend(rows.map(Result::unwrap));
        }
        out
    }

    fn old_contents(&self) -> Vec<Vec<u8>> {
        self.files
            .iter()
            .map(|f| std::fs::read(f).unwrap())
            .collect()
    }
}

/// After an import every file reads back identical at its new place, every database value
/// that named an adopted file names the new place, the missing one is reported and left,
/// a value outside the old folders is left, download_dir is the mount; the old files are
/// untouched; the backup stays out.
fn assert_imported(lib: &Library, mount: &Path, tag: &str, old: &[Vec<u8>], sum: &Summary) {
    for (f, bytes) in lib.files.iter().zip(old) {
        let new = lib.expected_as(mount, f, tag);
        assert_eq!(
            &std::fs::read(&new).unwrap_or_else(|e| panic!("{}: {e}", new.display())),
            bytes,
            "{} differs from {}",
            new.display(),
            f.display()
        );
        assert_eq!(
            &std::fs::read(f).unwrap(),
            bytes,
            "old file {} changed",
            f.display()
        );
    }
    let paths = lib.paths();
    let get = |k: &str| {
        paths
            .iter()
            .find(|(n, _)| n == k)
            .unwrap_or_else(|| panic!("no {k}"))
            .1
            .clone()
    };
    let exp = |i: usize| Some(s(&lib.expected_as(mount, &lib.files[i], tag)));
    assert_eq!(get("songs.file_path_1/1"), exp(0));
    assert_eq!(get("songs.file_path_2/1"), exp(1));
    assert_eq!(get("songs.file_path_vocals/1"), exp(2));
    assert_eq!(get("songs.file_path_1/2"), exp(3));
    assert_eq!(get("distributions.cover_art_path/1"), exp(4));
    assert_eq!(get("cd_tracks.source_path/1"), exp(0));
    assert_eq!(get("cd_tracks.wav_path/1"), exp(5));
    assert_eq!(get("cd_projects.cover_art_path/1"), exp(6));
    assert_eq!(
        get("songs.file_path_1/3"),
        Some(s(&lib.missing)),
        "missing file rewritten"
    );
    assert_eq!(
        get("songs.file_path_instrumental/4"),
        Some("/srv/elsewhere/x.wav".into())
    );
    assert_eq!(get("download_dir"), Some(s(mount)));
    // Nothing else points into the old folders.
    for (k, v) in &paths {
        if let Some(v) = v {
            let old = v.starts_with(&s(&lib.music)) || v.starts_with(&s(&lib.app));
            assert!(
                !old || k == "songs.file_path_1/3",
                "{k} still points at {v}"
            );
        }
    }
    assert_eq!(sum.db_skipped.len(), 1, "{:?}", sum.db_skipped);
    assert_eq!(sum.db_skipped[0].path, s(&lib.missing));
    assert_eq!(sum.db_skipped[0].reason, "missing");
    assert!(!mount.join("songfactory_backup_2026-02-01.db").exists());
    assert_eq!(
        sum.files_kept_local,
        vec![lib.music.join("songfactory_backup_2026-02-01.db")]
    );
    assert!(sum.problems.is_empty(), "{:?}", sum.problems);
}

#[test]
fn import_into_a_folder_copies_rewrites_and_a_second_run_changes_nothing() {
    let lib = library();
    let target = tempfile::tempdir().unwrap();
    let mount = target.path();
    let old = lib.old_contents();
    let sum = lib.run(mount, false);
    assert_eq!(sum.files_copied, lib.files.len() as u64);
    assert_eq!(sum.files_identical, 0);
    let total: u64 = old.iter().map(|b| b.len() as u64).sum();
    assert_eq!(sum.bytes_copied, total);
    // 3 + 1 song paths, cover, 2 cd_tracks, cd art.
    assert_eq!(sum.db_values_rewritten, 8);
    assert!(sum.download_dir_set);
    assert_imported(&lib, mount, TAG, &old, &sum);

    let before = lib.dump();
    let again = lib.run(mount, false);
    assert_eq!(again.files_copied, 0);
    assert_eq!(again.files_identical, lib.files.len() as u64);
    assert_eq!(again.db_values_rewritten, 0);
    assert!(!again.download_dir_set);
    assert_eq!(lib.dump(), before, "a second import changed the database");
}

#[test]
fn dry_run_in_a_folder_lists_but_changes_nothing() {
    let lib = library();
    let target = tempfile::tempdir().unwrap();
    let before = lib.dump();
    let sum = lib.run(target.path(), true);
    assert_eq!(sum.would_copy.len(), lib.files.len());
    assert_eq!(sum.files_copied, 0);
    assert_eq!(sum.db_changes.len(), 8);
    assert!(sum
        .db_changes
        .iter()
        .all(|c| c.new.starts_with(&s(target.path()))));
    assert!(sum.download_dir_set);
    assert_eq!(lib.dump(), before, "a dry run changed the database");
    assert_eq!(
        std::fs::read_dir(target.path()).unwrap().count(),
        0,
        "a dry run wrote files"
    );
}

/// An import stopped half way (some files copied, a temp file left) continues: the
/// copied files count as identical, the rest are copied, the temp file is replaced.
#[test]
fn interrupted_import_into_a_folder_resumes() {
    let lib = library();
    let target = tempfile::tempdir().unwrap();
    let mount = target.path();
    let old = lib.old_contents();
    for f in &lib.files[..3] {
        let dest = lib.expected(mount, f);
        write(&dest, &std::fs::read(f).unwrap());
    }
    let half = lib.expected(mount, &lib.files[3]);
    let tmp = half.with_file_name(format!(
        ".{}.songfs-import",
        half.file_name().unwrap().to_string_lossy()
    ));
    write(&tmp, b"half a copy");
    let sum = lib.run(mount, false);
    assert_eq!(sum.files_identical, 3);
    assert_eq!(sum.files_copied, lib.files.len() as u64 - 3);
    assert!(!tmp.exists(), "the interrupted temp file is still there");
    assert_imported(&lib, mount, TAG, &old, &sum);
}

/// A different file already at the destination is left alone and its database values
/// keep pointing at the old file; the rest is imported.
#[test]
fn different_file_in_the_folder_is_left_alone() {
    let lib = library();
    let target = tempfile::tempdir().unwrap();
    let mount = target.path();
    let clash = lib.expected(mount, &lib.files[3]);
    write(&clash, b"another machine's song");
    let sum = lib.run(mount, false);
    assert_eq!(sum.problems.len(), 1, "{:?}", sum.problems);
    assert_eq!(sum.problems[0].source, lib.files[3]);
    assert_eq!(std::fs::read(&clash).unwrap(), b"another machine's song");
    let paths = lib.paths();
    let v = paths
        .iter()
        .find(|(k, _)| k == "songs.file_path_1/2")
        .unwrap();
    assert_eq!(v.1, Some(s(&lib.files[3])));
    assert!(sum
        .db_skipped
        .iter()
        .any(|k| k.path == s(&lib.files[3]) && k.reason == "not imported"));
    assert_eq!(sum.files_copied, lib.files.len() as u64 - 1);
}

/// A file written while it is copied (here: by the progress callback, which runs after
/// each block read from the first file) is not imported, its half-mixed copy is dropped,
/// and its database values are not rewritten.
#[test]
fn file_changed_during_copy_is_not_imported() {
    let lib = library();
    let target = tempfile::tempdir().unwrap();
    let opts = lib.options(target.path(), false);
    let first = lib.files[0].clone(); // river_orchard_v1.mp3: the first file in name order
    let changed = std::cell::Cell::new(false);
    let sum = import::run(&opts, &|_, _| {
        if !changed.get() {
            changed.set(true);
            std::fs::write(&first, b"rewritten by the app during the copy").unwrap();
        }
    })
    .unwrap();
    assert_eq!(sum.problems.len(), 1, "{:?}", sum.problems);
    assert_eq!(sum.problems[0].source, first);
    assert!(
        sum.problems[0]
            .reason
            .contains("changed while it was being copied"),
        "{}",
        sum.problems[0].reason
    );
    assert!(!sum.problems[0].dest.exists(), "a mixed copy was kept");
    let paths = lib.paths();
    for key in ["songs.file_path_1/1", "cd_tracks.source_path/1"] {
        let v = paths.iter().find(|(k, _)| k == key).unwrap();
        assert_eq!(v.1, Some(s(&first)), "{key} was rewritten");
    }
    assert_eq!(sum.files_copied, lib.files.len() as u64 - 1);
}

fn import_cmd(m: &common::mount::Mount, lib: &Library, extra: &[&str]) -> Command {
    let mut c = m.songfs();
    c.arg("import")
        .arg(&lib.music)
        .arg("--mount")
        .arg(&m.dir)
        .arg("--db")
        .arg(&lib.db)
        .args(extra);
    c
}

fn json_of(out: &std::process::Output) -> serde_json::Value {
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "not JSON ({e}): {}\nstderr: {}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    })
}

/// The real thing: `songfs import` through a live FUSE mount. A dry run first changes
/// nothing; the import copies everything and rewrites the database; every file reads back
/// identical through the mount and reaches the store; a second import changes nothing;
/// the old files are still there.
#[test]
fn import_through_a_real_mount() {
    let lib = library();
    let mut m = common::mount::Mount::new();
    let mount = std::fs::canonicalize(&m.dir).unwrap();
    let old = lib.old_contents();

    let before = lib.dump();
    let dry = json_of(&common::mount::run_ok(&mut import_cmd(
        &m,
        &lib,
        &["--dry-run", "--json"],
    )));
    assert_eq!(dry["would_copy"].as_array().unwrap().len(), lib.files.len());
    assert_eq!(dry["db_changes"].as_array().unwrap().len(), 8);
    assert_eq!(lib.dump(), before, "--dry-run changed the database");
    assert_eq!(
        std::fs::read_dir(&mount).unwrap().count(),
        0,
        "--dry-run wrote into the mount"
    );

    let out = common::mount::run_ok(&mut import_cmd(&m, &lib, &["--json"]));
    let j = json_of(&out);
    assert_eq!(j["files_copied"], lib.files.len() as u64, "{j}");
    assert_eq!(j["db_values_rewritten"], 8, "{j}");
    assert_eq!(j["download_dir_set"], true);
    // The binary's own summary, read back whole, is checked like the library call's.
    let sum: Summary = serde_json::from_value(j.clone()).unwrap();
    assert_eq!(sum.mount, mount);
    assert_eq!(
        sum.bytes_copied,
        old.iter().map(|b| b.len() as u64).sum::<u64>()
    );
    let cfg = songfs::config::Config::load(&songfs::config::Home::at(&m.home)).unwrap();
    let tag = import::device_tag(&cfg.device_name, &cfg.device_id);
    assert_imported(&lib, &mount, &tag, &old, &sum);

    // The bytes reach the store under their hash.
    assert!(
        m.wait_uploads(Duration::from_secs(60)),
        "uploads did not finish"
    );
    for bytes in &old {
        let blob = m.store_blob(&common::mount::sha256_hex(bytes));
        assert_eq!(&std::fs::read(&blob).unwrap(), bytes, "{}", blob.display());
    }

    let before = lib.dump();
    let again = json_of(&common::mount::run_ok(&mut import_cmd(
        &m,
        &lib,
        &["--json"],
    )));
    assert_eq!(again["files_copied"], 0, "{again}");
    assert_eq!(again["files_identical"], lib.files.len() as u64);
    assert_eq!(again["db_values_rewritten"], 0);
    assert_eq!(lib.dump(), before, "a second import changed the database");

    // Human output says where the old files are and what was left.
    let human = common::mount::run_ok(&mut import_cmd(&m, &lib, &[]));
    let text = String::from_utf8_lossy(&human.stdout);
    assert!(text.contains("old files were left in place"), "{text}");
    assert!(text.contains("(missing: no such file"), "{text}");
    m.unmount();
}

/// Clear errors, and nothing changed: the mount is not mounted, the old folder is missing.
#[test]
fn import_refuses_without_a_mount_or_a_source() {
    let lib = library();
    let m = common::mount::Mount::init_only(&[]);
    let before = lib.dump();
    let out = import_cmd(&m, &lib, &[]).output().unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("is not mounted") && err.contains("songfs mount"),
        "{err}"
    );
    assert_eq!(std::fs::read_dir(&m.dir).unwrap().count(), 0);

    let mut m = m;
    m.mount();
    let mut c = m.songfs();
    c.arg("import")
        .arg(lib.music.join("no-such-folder"))
        .arg("--mount")
        .arg(&m.dir)
        .arg("--db")
        .arg(&lib.db);
    let out = c.output().unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("no-such-folder") && err.contains("does not exist"),
        "{err}"
    );
    assert_eq!(lib.dump(), before);
    m.unmount();
}
