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
