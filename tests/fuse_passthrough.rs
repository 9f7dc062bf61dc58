//! FUSE passthrough through a real mount (the tests run as root, so the daemon may
//! register backing files): a cached file is read by the kernel with no request reaching
//! songfs, and everything the kernel's one-backing-per-inode rule could break still
//! works — a writer beside a passthrough reader, mmap, rename over an open file, bytes
//! written through a writer's shared mmap.

mod common;

use std::io::{Read, Seek, SeekFrom, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::FileExt;
use std::sync::mpsc;
use std::time::Duration;

use common::mount::{bytes, wait_until, Mount};

const MIB: usize = 1 << 20;

fn drop_page_cache() {
    std::fs::write("/proc/sys/vm/drop_caches", "3").expect("drop the page cache (root)");
}

/// A file written through the mount and uploaded: its blob is complete and clean in the
/// cache, the kind passthrough serves.
fn cached_file(m: &Mount, name: &str, seed: u64, len: usize) -> Vec<u8> {
    let data = bytes(seed, len);
    std::fs::write(m.path(name), &data).unwrap();
    assert!(
        m.wait_uploads(Duration::from_secs(30)),
        "upload never finished"
    );
    data
}

/// Stops the daemon (SIGSTOP) for as long as it lives; continues it on drop, also when
/// the test fails.
struct Stopped(i32);

impl Stopped {
    fn new(m: &Mount) -> Stopped {
        let pid = m.pid().expect("daemon running") as i32;
        // SAFETY: kill(2) of the daemon this test started, by PID.
        unsafe { libc::kill(pid, libc::SIGSTOP) };
        Stopped(pid)
    }
}

impl Drop for Stopped {
    fn drop(&mut self) {
        // SAFETY: as above.
        unsafe { libc::kill(self.0, libc::SIGCONT) };
    }
}

/// Opens `name`, stops the daemon, reads the whole file on a thread: Some(bytes) if the
/// read finished within `wait` with songfs unable to answer anything.
/// (`len` bytes with pread: std's `read_to_end` asks for the size with a statx that
/// FUSE forwards to songfs, which is not a read.)
fn read_with_daemon_stopped(m: &Mount, name: &str, len: usize, wait: Duration) -> Option<Vec<u8>> {
    drop_page_cache();
    let f = std::fs::File::open(m.path(name)).unwrap();
    let stopped = Stopped::new(m);
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut buf = vec![0u8; len];
        let r = f.read_exact_at(&mut buf, 0).map(|_| buf);
        let _ = tx.send(r);
    });
    let got = rx.recv_timeout(wait).ok();
    drop(stopped);
    if got.is_none() {
        // The read finishes once the daemon runs again; wait so the file is not busy.
        let late = rx.recv_timeout(Duration::from_secs(30));
        assert!(late.is_ok(), "the read never finished after SIGCONT");
    }
    got.map(|r| r.expect("read"))
}

#[test]
fn a_cached_file_is_read_by_the_kernel_with_songfs_stopped() {
    let m = Mount::new();
    let data = cached_file(&m, "song.wav", 1, 8 * MIB + 17);
    let got = read_with_daemon_stopped(&m, "song.wav", data.len(), Duration::from_secs(10))
        .expect("the read of a cached file waited for songfs: passthrough is not in use");
    assert!(got == data, "passthrough read returned other bytes");
}

#[test]
fn with_passthrough_off_the_same_read_waits_for_songfs() {
    // The check above can fail: without passthrough every read is a request to songfs.
    let mut m = Mount::init_only(&[]);
    m.set_env("SONGFS_PASSTHROUGH", Some("off"));
    m.mount();
    let data = cached_file(&m, "song.wav", 2, 2 * MIB);
    let got = read_with_daemon_stopped(&m, "song.wav", data.len(), Duration::from_secs(2));
    assert!(
        got.is_none(),
        "a read finished with songfs stopped and passthrough off"
    );
    assert!(std::fs::read(m.path("song.wav")).unwrap() == data);
}

#[test]
fn a_writer_beside_a_passthrough_reader_commits_and_later_opens_see_its_bytes() {
    let m = Mount::new();
    let old = cached_file(&m, "take.wav", 3, 3 * MIB);
    let reader = std::fs::File::open(m.path("take.wav")).unwrap();
    let mut head = vec![0u8; 4096];
    reader.read_exact_at(&mut head, 0).unwrap();
    assert!(head == old[..4096]);

    // The kernel refuses a plain open beside a passthrough one (EIO): this one works.
    let mut writer = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(m.path("take.wav"))
        .expect("open for writing beside a passthrough reader");
    writer.seek(SeekFrom::Start(MIB as u64)).unwrap();
    writer.write_all(b"NEW BYTES").unwrap();
    // Read-your-writes through the writer's own handle (its reads come to songfs).
    let mut mine = vec![0u8; 9];
    writer.read_exact_at(&mut mine, MIB as u64).unwrap();
    assert_eq!(&mine, b"NEW BYTES");
    drop(writer);

    let mut new = old.clone();
    new[MIB..MIB + 9].copy_from_slice(b"NEW BYTES");
    // An open after the commit sees the new content, while the old reader is open…
    assert!(std::fs::read(m.path("take.wav")).unwrap() == new);
    // …and the old reader still reads the content it opened, whole and unmixed.
    let mut all = Vec::new();
    (&reader).read_to_end(&mut all).unwrap();
    let mut rest = vec![0u8; old.len()];
    reader.read_exact_at(&mut rest, 0).unwrap();
    assert!(
        rest == old,
        "the passthrough reader saw a mix of old and new bytes"
    );
    drop(reader);

    // With every handle closed, a new open (passthrough again) reads the new content.
    assert!(std::fs::read(m.path("take.wav")).unwrap() == new);
    assert!(m.wait_uploads(Duration::from_secs(30)));
    let got = read_with_daemon_stopped(&m, "take.wav", new.len(), Duration::from_secs(10))
        .expect("the committed file is cached: passthrough again");
    assert!(got == new);
}

#[test]
fn mmap_of_a_passthrough_file_and_a_rename_over_it_while_open() {
    let m = Mount::new();
    let old = cached_file(&m, "a.wav", 4, 2 * MIB + 5);
    let f = std::fs::File::open(m.path("a.wav")).unwrap();
    // SAFETY: a private read-only mapping of a file this test owns, unmapped below.
    let p = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            old.len(),
            libc::PROT_READ,
            libc::MAP_SHARED,
            f.as_raw_fd(),
            0,
        )
    };
    assert_ne!(p, libc::MAP_FAILED, "mmap of a passthrough file");
    // SAFETY: the mapping is old.len() bytes long.
    let mapped = unsafe { std::slice::from_raw_parts(p as *const u8, old.len()) };
    assert!(mapped == &old[..]);

    // Replace it the way editors save: write a new file, rename it over the old name.
    let replacement = bytes(5, MIB + 3);
    std::fs::write(m.path("a.wav.tmp"), &replacement).unwrap();
    std::fs::rename(m.path("a.wav.tmp"), m.path("a.wav")).unwrap();
    assert!(std::fs::read(m.path("a.wav")).unwrap() == replacement);
    // The open file is the old one, as on any POSIX filesystem.
    assert!(mapped == &old[..]);
    let mut again = vec![0u8; old.len()];
    f.read_exact_at(&mut again, 0).unwrap();
    assert!(again == old);
    // SAFETY: unmapping the mapping made above.
    unsafe { libc::munmap(p, old.len()) };
}

#[test]
fn bytes_a_writer_puts_through_a_shared_mmap_beside_a_passthrough_reader_are_kept() {
    let m = Mount::new();
    let old = cached_file(&m, "b.wav", 6, MIB);
    let reader = std::fs::File::open(m.path("b.wav")).unwrap();
    let writer = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(m.path("b.wav"))
        .unwrap();
    // SAFETY: a shared writable mapping of a file this test owns, unmapped below.
    let p = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            old.len(),
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_SHARED,
            writer.as_raw_fd(),
            0,
        )
    };
    assert_ne!(
        p,
        libc::MAP_FAILED,
        "writable mmap beside a passthrough reader"
    );
    // SAFETY: the mapping is old.len() bytes long and writable.
    unsafe { std::ptr::copy_nonoverlapping(b"MAPPED".as_ptr(), p as *mut u8, 6) };
    // SAFETY: flushing and unmapping the mapping made above.
    unsafe {
        libc::msync(p, old.len(), libc::MS_SYNC);
        libc::munmap(p, old.len());
    }
    drop(writer);
    drop(reader);

    let mut new = old.clone();
    new[..6].copy_from_slice(b"MAPPED");
    assert!(
        wait_until(Duration::from_secs(10), || std::fs::read(m.path("b.wav"))
            .is_ok_and(|b| b == new)),
        "the bytes written through the mapping were lost"
    );
    // They came the passthrough way (into the cache's copy), not as FUSE writes.
    assert!(
        wait_until(Duration::from_secs(5), || m.daemon_log().contains(
            "through a shared mmap beside a passthrough reader: committed"
        )),
        "the mapping did not write the backing file; this test did not test passthrough"
    );
    // And the new content reaches the store like any write.
    assert!(m.wait_uploads(Duration::from_secs(30)));
    assert!(m.store_blob(&common::mount::sha256_hex(&new)).exists());
    // The old content is still readable from the store, unchanged, by its hash.
    let old_blob = m.store_blob(&common::mount::sha256_hex(&old));
    assert!(std::fs::read(old_blob).unwrap() == old);
}
