//! Writes through a real mount: the app's mkstemp+rename pattern, random-offset writes
//! and truncates against a reference file, `cp -r`, `rsync -a`, `sox` patching a WAV
//! header, local-only backups, and content surviving a remount.

mod common;

use std::ffi::CString;
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::process::Command;
use std::time::Duration;

use common::mount::{bytes, run_ok, sha256_hex, Mount};

/// What the app does: mkstemp (O_CREAT|O_EXCL, 0600) in the target folder, write,
/// close, rename over the target.
fn app_write(dir: &std::path::Path, target: &str, data: &[u8]) {
    let template = CString::new(dir.join(".tmpXXXXXX").as_os_str().as_bytes()).unwrap();
    let mut raw = template.into_bytes_with_nul();
    // SAFETY: raw is a NUL-terminated template mkstemp may rewrite in place.
    let fd = unsafe { libc::mkstemp(raw.as_mut_ptr() as *mut libc::c_char) };
    assert!(fd >= 0, "mkstemp: {}", std::io::Error::last_os_error());
    raw.pop();
    let tmp = std::path::PathBuf::from(std::ffi::OsStr::from_bytes(&raw));
    // SAFETY: fd was just returned by mkstemp and is owned here.
    let mut f = unsafe { <std::fs::File as std::os::fd::FromRawFd>::from_raw_fd(fd) };
    for piece in data.chunks(64 * 1024) {
        f.write_all(piece).unwrap();
    }
    drop(f);
    std::fs::rename(&tmp, dir.join(target)).unwrap();
}

#[test]
fn app_pattern_mkstemp_then_rename_over_the_target_survives_remount() {
    let mut m = Mount::new();
    let folder = m.path("2026-02-10_my-song");
    std::fs::create_dir(&folder).unwrap();
    let v1 = bytes(1, 700_000);
    let v2 = bytes(2, 300_000);
    app_write(&folder, "my-song_v1.mp3", &v1);
    app_write(&folder, "my-song_v1.mp3", &v2); // replaces the first version
    app_write(&folder, "my-song_vocals.mp3", &v1);

    let target = folder.join("my-song_v1.mp3");
    assert_eq!(std::fs::read(&target).unwrap(), v2);
    let meta = std::fs::metadata(&target).unwrap();
    assert_eq!(meta.len(), v2.len() as u64);
    assert_eq!(
        meta.permissions().mode() & 0o777,
        0o600,
        "mkstemp's mode is kept"
    );
    assert_eq!(
        meta.uid(),
        unsafe { libc::getuid() },
        "the creator owns the file"
    );
    let mut names: Vec<String> = std::fs::read_dir(&folder)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(
        names,
        ["my-song_v1.mp3", "my-song_vocals.mp3"],
        "no temp file left"
    );

    assert!(
        m.wait_uploads(Duration::from_secs(20)),
        "uploads did not finish"
    );
    assert_eq!(std::fs::read(m.store_blob(&sha256_hex(&v2))).unwrap(), v2);
    assert_eq!(std::fs::read(m.store_blob(&sha256_hex(&v1))).unwrap(), v1);

    m.unmount();
    m.mount();
    assert_eq!(std::fs::read(&target).unwrap(), v2);
    assert_eq!(
        std::fs::read(folder.join("my-song_vocals.mp3")).unwrap(),
        v1
    );
}

#[test]
fn random_offset_writes_and_truncates_match_a_reference_file() {
    let m = Mount::new();
    let reference_path = m.root().join("reference");
    let mut reference = std::fs::OpenOptions::new()
        .create(true)
        .read(true)
        .write(true)
        .truncate(true)
        .open(&reference_path)
        .unwrap();
    let path = m.path("random.bin");
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .read(true)
        .write(true)
        .truncate(true)
        .open(&path)
        .unwrap();
    let mut seed = 7u64;
    let mut next = || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    for round in 0..6 {
        for step in 0..40 {
            let op = next() % 10;
            if op == 0 {
                let len = next() % 1_500_000;
                f.set_len(len).unwrap();
                reference.set_len(len).unwrap();
            } else {
                let off = next() % 1_200_000;
                let data = bytes(next(), (next() % 300_000) as usize + 1);
                for file in [&mut f, &mut reference] {
                    file.seek(SeekFrom::Start(off)).unwrap();
                    file.write_all(&data).unwrap();
                }
            }
            if step % 7 == 3 {
                // close() of a duplicate (as a forked child's exec does) flushes: the
                // bytes so far are committed and the next write stages again.
                use std::os::fd::AsRawFd;
                // SAFETY: dup of an fd we own; the duplicate is closed right away.
                unsafe { libc::close(libc::dup(f.as_raw_fd())) };
            }
            if step % 10 == 0 {
                // Read-your-writes on the same handle, before any close.
                let off = next() % 1_000_000;
                let mut a = vec![0u8; 100_000];
                let mut b = vec![0u8; 100_000];
                f.seek(SeekFrom::Start(off)).unwrap();
                reference.seek(SeekFrom::Start(off)).unwrap();
                let na = read_full(&mut f, &mut a);
                let nb = read_full(&mut reference, &mut b);
                assert_eq!(a[..na], b[..nb], "round {round} step {step}");
            }
        }
        f.sync_all().unwrap(); // fsync commits; the handle keeps writing afterwards
        assert_eq!(
            std::fs::read(&path).unwrap(),
            std::fs::read(&reference_path).unwrap(),
            "after fsync in round {round}"
        );
    }
    drop(f);
    assert_eq!(
        std::fs::read(&path).unwrap(),
        std::fs::read(&reference_path).unwrap()
    );
    // truncate(2) by path, without an open handle
    let len = std::fs::metadata(&path).unwrap().len() / 2;
    std::fs::OpenOptions::new()
        .write(true)
        .open(&path)
        .unwrap()
        .set_len(len)
        .unwrap();
    let expect = std::fs::read(&reference_path).unwrap()[..len as usize].to_vec();
    assert_eq!(std::fs::read(&path).unwrap(), expect);
}

fn read_full(f: &mut std::fs::File, buf: &mut [u8]) -> usize {
    let mut n = 0;
    while n < buf.len() {
        match f.read(&mut buf[n..]).unwrap() {
            0 => break,
            k => n += k,
        }
    }
    n
}

fn make_tree(root: &std::path::Path) {
    for d in 0..4 {
        let dir = root.join(format!("2026-02-1{d}_song-{d}")).join("stems");
        std::fs::create_dir_all(&dir).unwrap();
        for f in 0..5 {
            let data = bytes(d * 10 + f, (f as usize) * 37_000 + 11);
            std::fs::write(dir.join(format!("track {f}.mp3")), data).unwrap();
        }
        std::fs::write(dir.parent().unwrap().join("empty.txt"), b"").unwrap();
    }
}

#[test]
fn cp_r_then_diff_r_and_rsync_a_then_a_second_rsync_copies_nothing() {
    let m = Mount::new();
    let src = m.root().join("src");
    make_tree(&src);

    run_ok(Command::new("cp").arg("-r").arg(&src).arg(m.path("copied")));
    run_ok(
        Command::new("diff")
            .arg("-r")
            .arg(&src)
            .arg(m.path("copied")),
    );

    let mut rsync = Command::new("rsync");
    rsync
        .arg("-a")
        .arg(format!("{}/", src.display()))
        .arg(m.path("synced"));
    run_ok(&mut rsync);
    run_ok(
        Command::new("diff")
            .arg("-r")
            .arg(&src)
            .arg(m.path("synced")),
    );
    // rsync -a kept the mtimes: a second run finds nothing to transfer.
    let out = run_ok(
        Command::new("rsync")
            .arg("-a")
            .arg("--itemize-changes")
            .arg(format!("{}/", src.display()))
            .arg(m.path("synced")),
    );
    let changes = String::from_utf8_lossy(&out.stdout);
    assert!(
        changes.lines().all(|l| !l.starts_with(">f")),
        "second rsync re-sent files:\n{changes}"
    );
    let a = std::fs::metadata(src.join("2026-02-10_song-0/stems/track 1.mp3")).unwrap();
    let b = std::fs::metadata(m.path("synced/2026-02-10_song-0/stems/track 1.mp3")).unwrap();
    assert_eq!(a.mtime(), b.mtime());
}

#[test]
fn sox_writes_a_wav_that_soxi_reads_back() {
    let m = Mount::new();
    let wav = m.path("tone.wav");
    run_ok(
        Command::new("sox")
            .args(["-n", "-r", "8000", "-c", "1", "-b", "16"])
            .arg(&wav)
            .args(["synth", "1.5", "sine", "440"]),
    );
    let out = run_ok(Command::new("soxi").arg("-s").arg(&wav));
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "12000");
    let data = std::fs::read(&wav).unwrap();
    assert_eq!(&data[..4], b"RIFF");
    let riff_len = u32::from_le_bytes(data[4..8].try_into().unwrap()) as usize;
    assert_eq!(
        riff_len + 8,
        data.len(),
        "sox patched the header after writing"
    );
}

#[test]
fn namespace_operations_behave_like_a_local_disk() {
    let m = Mount::new();
    let a = m.path("a");
    std::fs::create_dir(&a).unwrap();
    std::fs::write(a.join("f"), b"hello").unwrap();
    let e = std::fs::remove_dir(&a).unwrap_err();
    assert_eq!(e.raw_os_error(), Some(libc::ENOTEMPTY));
    std::fs::create_dir(m.path("b")).unwrap();
    std::fs::rename(&a, m.path("b/moved")).unwrap();
    assert_eq!(std::fs::read(m.path("b/moved/f")).unwrap(), b"hello");
    assert!(!a.exists());
    std::fs::set_permissions(m.path("b/moved/f"), std::fs::Permissions::from_mode(0o640)).unwrap();
    assert_eq!(
        std::fs::metadata(m.path("b/moved/f"))
            .unwrap()
            .permissions()
            .mode()
            & 0o777,
        0o640
    );
    run_ok(
        Command::new("touch")
            .args(["-d", "2020-01-02 03:04:05 UTC"])
            .arg(m.path("b/moved/f")),
    );
    assert_eq!(
        std::fs::metadata(m.path("b/moved/f")).unwrap().mtime(),
        1577934245
    );
    let e = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(m.path("b/moved/f"))
        .unwrap_err();
    assert_eq!(e.kind(), std::io::ErrorKind::AlreadyExists);
    // rename a directory over an empty one
    std::fs::create_dir(m.path("empty")).unwrap();
    std::fs::rename(m.path("b"), m.path("empty")).unwrap();
    assert_eq!(std::fs::read(m.path("empty/moved/f")).unwrap(), b"hello");
    std::fs::remove_file(m.path("empty/moved/f")).unwrap();
    std::fs::remove_dir(m.path("empty/moved")).unwrap();
    std::fs::remove_dir(m.path("empty")).unwrap();
    assert_eq!(std::fs::read_dir(&m.dir).unwrap().count(), 0);
    // append
    let p = m.path("log.txt");
    for i in 0..3 {
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .create(true)
            .open(&p)
            .unwrap();
        writeln!(f, "line {i}").unwrap();
    }
    assert_eq!(
        std::fs::read_to_string(&p).unwrap(),
        "line 0\nline 1\nline 2\n"
    );
    let st = run_ok(Command::new("df").arg("-k").arg(&m.dir));
    assert!(String::from_utf8_lossy(&st.stdout).contains("songfs"));
}

#[test]
fn backups_of_the_app_database_stay_local_and_never_reach_the_store() {
    let mut m = Mount::new();
    let secret = b"SQLite format 3\0 api_key=sk-secret-123".repeat(1000);
    let backup = m.path("songfactory_backup_2026-02-10.db");
    std::fs::write(&backup, &secret).unwrap();
    std::fs::write(m.path("song.mp3"), bytes(5, 1000)).unwrap();
    assert!(m.wait_uploads(Duration::from_secs(20)));
    assert!(m.store_blob(&sha256_hex(&bytes(5, 1000))).exists());
    assert!(
        !m.store_blob(&sha256_hex(&secret)).exists(),
        "the backup reached the store"
    );
    let grep = Command::new("grep")
        .args(["-r", "-l", "sk-secret-123"])
        .arg(&m.store)
        .output()
        .unwrap();
    assert!(
        grep.stdout.is_empty(),
        "secret found in the store: {grep:?}"
    );
    m.unmount();
    m.mount();
    assert_eq!(std::fs::read(&backup).unwrap(), secret);
}

/// The app's Settings backup: SQLite's backup API writing a database (and its
/// journal) straight into the mount. It must work, and nothing of it may reach the
/// store or the cache.
#[test]
fn sqlite_writes_a_backup_database_on_the_mount_and_it_stays_local() {
    let m = Mount::new();
    let script = r#"
import sqlite3, sys
src = sqlite3.connect(":memory:")
src.executescript("create table config(key text primary key, value text);"
    "insert into config values('api_key', 'sk-SECRET-XYZ');"
    + "".join(f"insert into config values('k{i}', '{'v' * 200}');" for i in range(2000)))
dst = sqlite3.connect(sys.argv[1])
src.backup(dst)
dst.close()
c = sqlite3.connect(sys.argv[1])
assert c.execute("pragma integrity_check").fetchone()[0] == "ok"
print(c.execute("select value from config where key = 'api_key'").fetchone()[0])
"#;
    let out = run_ok(
        Command::new("/usr/bin/python3")
            .arg("-c")
            .arg(script)
            .arg(m.path("songfactory_backup_2026-02-10.db")),
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "sk-SECRET-XYZ");
    assert!(m.wait_uploads(Duration::from_secs(20)));
    for dir in [&m.store, &m.home.join("cache")] {
        let grep = Command::new("grep")
            .args(["-r", "-l", "sk-SECRET-XYZ"])
            .arg(dir)
            .output()
            .unwrap();
        assert!(
            grep.stdout.is_empty(),
            "secret found in {}: {grep:?}",
            dir.display()
        );
    }
    let names: Vec<String> = std::fs::read_dir(&m.dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(
        names,
        ["songfactory_backup_2026-02-10.db"],
        "journal removed"
    );
}

/// A file just created and still open for writing, with no byte written yet, is not
/// exported: other devices would get a 0-byte version of a file that is about to hold
/// a recording (seen: a folder-mode device placed an empty `big.wav` while the mount was
/// still writing it). It goes out whole after the close.
#[test]
fn a_file_open_for_writing_is_not_exported_even_before_its_first_write() {
    let m = Mount::new();
    let exported = |name: &str| {
        !Command::new("grep")
            .args(["-r", "-l", name])
            .arg(m.store.join("ns"))
            .output()
            .unwrap()
            .stdout
            .is_empty()
    };
    let mut f = std::fs::File::create(m.path("take-two.wav")).unwrap();
    run_ok(m.songfs().arg("sync"));
    assert!(
        !exported("take-two.wav"),
        "an empty file still open for writing was exported"
    );
    let data = bytes(8, 300_000);
    f.write_all(&data).unwrap();
    drop(f);
    assert!(m.wait_uploads(Duration::from_secs(20)));
    run_ok(m.songfs().arg("sync"));
    assert!(exported("take-two.wav"), "the closed file never went out");
}
