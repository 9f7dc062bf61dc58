//! POSIX node types and timestamps on a real mount: symlinks, hard links, FIFOs and
//! utimensat, compared with what ext4 does (pjdfstest covers the errno cases).

mod common;

use std::fs;
use std::io::{Read, Write};
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};

use common::mount::Mount;

#[test]
fn symlinks_hard_links_fifos_and_times_behave_as_on_ext4() {
    let m = Mount::new();
    let d = &m.dir;
    fs::write(d.join("a.txt"), b"one").unwrap();

    // Symlinks: relative and absolute targets kept verbatim, lstat sees the link.
    std::os::unix::fs::symlink("a.txt", d.join("rel")).unwrap();
    std::os::unix::fs::symlink("/etc/hostname", d.join("abs")).unwrap();
    assert_eq!(
        fs::read_link(d.join("rel")).unwrap().to_str(),
        Some("a.txt")
    );
    assert_eq!(
        fs::read_link(d.join("abs")).unwrap().to_str(),
        Some("/etc/hostname")
    );
    assert!(fs::symlink_metadata(d.join("rel"))
        .unwrap()
        .file_type()
        .is_symlink());
    assert_eq!(fs::read(d.join("rel")).unwrap(), b"one");
    fs::rename(d.join("rel"), d.join("rel2")).unwrap();
    assert_eq!(
        fs::read_link(d.join("rel2")).unwrap().to_str(),
        Some("a.txt")
    );
    fs::remove_file(d.join("rel2")).unwrap();
    assert!(d.join("a.txt").exists(), "deleting a link keeps its target");

    // Hard links: one inode, both counts, writes seen through both names.
    fs::hard_link(d.join("a.txt"), d.join("b.txt")).unwrap();
    let (ma, mb) = (
        fs::metadata(d.join("a.txt")).unwrap(),
        fs::metadata(d.join("b.txt")).unwrap(),
    );
    assert_eq!((ma.ino(), ma.nlink(), mb.nlink()), (mb.ino(), 2, 2));
    fs::OpenOptions::new()
        .append(true)
        .open(d.join("b.txt"))
        .unwrap()
        .write_all(b" two")
        .unwrap();
    assert_eq!(fs::read(d.join("a.txt")).unwrap(), b"one two");
    fs::remove_file(d.join("a.txt")).unwrap();
    assert_eq!(fs::read(d.join("b.txt")).unwrap(), b"one two");
    assert_eq!(fs::metadata(d.join("b.txt")).unwrap().nlink(), 1);

    // A FIFO carries bytes between two processes on this machine.
    let fifo = d.join("pipe");
    let c = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
    // SAFETY: a valid C string and mode.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
    let writer = {
        let fifo = fifo.clone();
        std::thread::spawn(move || fs::write(fifo, b"through the pipe").unwrap())
    };
    let mut got = String::new();
    fs::File::open(&fifo)
        .unwrap()
        .read_to_string(&mut got)
        .unwrap();
    writer.join().unwrap();
    assert_eq!(got, "through the pipe");
    let out = m
        .songfs()
        .args(["status", "pipe"])
        .current_dir(d)
        .output()
        .unwrap();
    let text =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    assert!(text.contains("local-only"), "status of a FIFO: {text}");

    // Times: atime apart from mtime, nanoseconds, and the far future.
    let f = d.join("b.txt");
    let c = std::ffi::CString::new(f.to_str().unwrap()).unwrap();
    let times = [
        libc::timespec {
            tv_sec: 1_950_000_000,
            tv_nsec: 123_456_789,
        },
        libc::timespec {
            tv_sec: 4_294_967_296,
            tv_nsec: 1,
        },
    ];
    // SAFETY: valid path and two timespecs.
    assert_eq!(
        unsafe { libc::utimensat(libc::AT_FDCWD, c.as_ptr(), times.as_ptr(), 0) },
        0
    );
    let md = fs::metadata(&f).unwrap();
    assert_eq!((md.atime(), md.atime_nsec()), (1_950_000_000, 123_456_789));
    assert_eq!((md.mtime(), md.mtime_nsec()), (4_294_967_296, 1));
    let omit_atime = [
        libc::timespec {
            tv_sec: 0,
            tv_nsec: libc::UTIME_OMIT,
        },
        libc::timespec {
            tv_sec: 1_900_000_000,
            tv_nsec: 0,
        },
    ];
    // SAFETY: as above.
    assert_eq!(
        unsafe { libc::utimensat(libc::AT_FDCWD, c.as_ptr(), omit_atime.as_ptr(), 0) },
        0
    );
    let md = fs::metadata(&f).unwrap();
    assert_eq!((md.atime(), md.mtime()), (1_950_000_000, 1_900_000_000));

    // ftruncate moves ctime at once, before the close.
    let before =
        fs::metadata(&f).unwrap().ctime_nsec() + fs::metadata(&f).unwrap().ctime() * 1_000_000_000;
    std::thread::sleep(std::time::Duration::from_millis(20));
    let h = fs::OpenOptions::new().write(true).open(&f).unwrap();
    h.set_len(3).unwrap();
    let md = h.metadata().unwrap();
    assert!(md.ctime() * 1_000_000_000 + md.ctime_nsec() > before);
    drop(h);

    // Everything but the FIFO's bytes survives a remount.
    fs::set_permissions(&f, fs::Permissions::from_mode(0o640)).unwrap();
    let mut m = m;
    m.unmount();
    m.mount();
    let d = &m.dir;
    assert_eq!(
        fs::read_link(d.join("abs")).unwrap().to_str(),
        Some("/etc/hostname")
    );
    assert!(fs::symlink_metadata(d.join("pipe"))
        .unwrap()
        .file_type()
        .is_fifo());
    assert_eq!(
        fs::metadata(d.join("b.txt")).unwrap().mode() & 0o7777,
        0o640
    );
    assert_eq!(
        fs::metadata(d.join("b.txt")).unwrap().atime(),
        1_950_000_000
    );
}

/// fallocate(2) as on ext4: reserving grows the file with zeros, KEEP_SIZE leaves the size,
/// a punched hole reads back as zeros and keeps the size; the result is what is committed
/// (read again from the store after the cache is emptied).
#[test]
fn fallocate_reserves_and_punches_holes_like_ext4() {
    use std::os::fd::AsRawFd;
    let mut m = Mount::new();
    let p = m.path("take.wav");
    fs::write(&p, vec![7u8; 10_000]).unwrap();
    let f = fs::OpenOptions::new().write(true).open(&p).unwrap();
    let fd = f.as_raw_fd();
    // SAFETY: fallocate on an open descriptor, plain integers.
    let falloc = |mode: i32, off: i64, len: i64| unsafe { libc::fallocate(fd, mode, off, len) };
    assert_eq!(
        falloc(0, 8_000, 8_000),
        0,
        "{}",
        std::io::Error::last_os_error()
    );
    assert_eq!(f.metadata().unwrap().len(), 16_000);
    assert_eq!(falloc(libc::FALLOC_FL_KEEP_SIZE, 0, 50_000), 0);
    assert_eq!(f.metadata().unwrap().len(), 16_000, "KEEP_SIZE keeps it");
    let punch = libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE;
    assert_eq!(falloc(punch, 1_000, 2_000), 0);
    drop(f);
    let mut want = vec![7u8; 10_000];
    want[1_000..3_000].fill(0);
    want.resize(16_000, 0);
    assert_eq!(fs::read(&p).unwrap(), want);
    assert!(m.wait_uploads(std::time::Duration::from_secs(30)));
    m.empty_cache();
    assert_eq!(fs::read(&p).unwrap(), want, "as committed and uploaded");
}

/// What a file, symlink or directory is, as the tools that copy trees preserve it: type,
/// mode, size and link count of files, mtime, link target, content hash. (Not extended
/// attributes: the mount stores none of its own and answers ENOTSUP, which cp -a and tar
/// skip quietly; see doc/SEMANTICS.md.)
fn describe_tree(dir: &std::path::Path) -> String {
    let sh = |script: &str| {
        let out = std::process::Command::new("sh")
            .arg("-c")
            .arg(script)
            .current_dir(dir)
            .output()
            .unwrap();
        assert!(out.status.success(), "{script}: {out:?}");
        String::from_utf8(out.stdout).unwrap()
    };
    let mut s = sh("find . -mindepth 1 -type f -printf '%y %m %s %n %T@ %p\\n' | sort");
    s += &sh("find . -mindepth 1 ! -type f -printf '%y %m %T@ %l %p\\n' | sort");
    s += &sh("find . -type f -exec sha256sum {} + | sort -k2");
    s
}

/// A library copied in and out with `cp -a`, `rsync -aH` and `tar` comes back the same:
/// modes, times, symlinks (dangling ones too), hard links and bytes.
#[test]
fn cp_a_rsync_and_tar_round_trip_a_tree_unchanged() {
    let m = Mount::new();
    let work = tempfile::tempdir().unwrap();
    let src = work.path().join("src");
    let build = format!(
        "set -e; mkdir -p {s}/album/disc1 {s}/empty; cd {s}
         head -c 300000 /dev/urandom > album/disc1/01.wav; printf 'lyrics' > album/words.txt
         : > album/zero; chmod 640 album/words.txt; chmod 755 album/disc1/01.wav
         ln album/disc1/01.wav album/same-take.wav; ln -s disc1/01.wav album/latest
         ln -s /nowhere/at/all dangling
         touch -h -d '2024-02-29 12:34:56.789' album/latest dangling
         touch -d '2021-06-01 08:00:00.5' album/disc1/01.wav album/words.txt album/zero album/disc1 album empty",
        s = src.display()
    );
    assert!(std::process::Command::new("sh")
        .args(["-c", &build])
        .status()
        .unwrap()
        .success());
    let want = describe_tree(&src);
    assert!(
        want.lines()
            .any(|l| l.starts_with("f 755 300000 2 ") && l.ends_with("same-take.wav")),
        "a hard link pair: {want}"
    );

    let run = |script: String| {
        let out = std::process::Command::new("sh")
            .args(["-c", &format!("set -e; {script}")])
            .output()
            .unwrap();
        assert!(out.status.success(), "{script}: {out:?}");
    };
    let (mnt, out) = (m.dir.clone(), work.path().join("out"));
    let (src, mnt, out) = (src.display(), mnt.display(), out.display());
    run(format!("mkdir {mnt}/cp && cp -a {src}/. {mnt}/cp/"));
    assert_eq!(describe_tree(&m.path("cp")), want, "cp -a into the mount");
    run(format!(
        "rsync -aH {src}/ {mnt}/rs/ && rsync -aH {mnt}/rs/ {out}-rs/"
    ));
    assert_eq!(
        describe_tree(&m.path("rs")),
        want,
        "rsync -aH into the mount"
    );
    assert_eq!(
        describe_tree(work.path().join("out-rs").as_path()),
        want,
        "and out again"
    );
    // pax format: GNU tar's default keeps whole seconds only.
    run(format!(
        "mkdir {mnt}/tar {out}-tar; tar --format=posix -C {src} -cf - . | tar -C {mnt}/tar -xpf -
         tar --format=posix -C {mnt}/tar -cf - . | tar -C {out}-tar -xpf -"
    ));
    assert_eq!(describe_tree(&m.path("tar")), want, "tar into the mount");
    assert_eq!(
        describe_tree(work.path().join("out-tar").as_path()),
        want,
        "and out again"
    );
}
