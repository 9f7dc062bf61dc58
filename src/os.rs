//! What differs between operating systems, in one place, so every other module is
//! written once: positional file I/O, an exclusive lock on a file, the user's ids and
//! home directory, freeing a cached range (hole punching).
//!
//! Whether this build has the FUSE mount is decided once, by `build.rs` (the `fuse`
//! cfg, Linux only; `Cargo.toml` pulls `fuser` for the same targets). Everything
//! outside `fs/` and the mount daemon builds everywhere.
//!
//! Must never: change behaviour on Linux (each function is the call Linux used before).

use std::fs::File;
use std::io;
use std::path::PathBuf;

/// `read_exact_at` / `write_all_at` on every OS (Unix's `FileExt` names; on Windows
/// `seek_read`/`seek_write`, which also move the cursor: the callers never use it).
pub trait FileExt {
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize>;
    fn write_at(&self, buf: &[u8], offset: u64) -> io::Result<usize>;

    fn read_exact_at(&self, mut buf: &mut [u8], mut offset: u64) -> io::Result<()> {
        while !buf.is_empty() {
            match self.read_at(buf, offset) {
                Ok(0) => {
                    return Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "failed to fill whole buffer",
                    ))
                }
                Ok(n) => {
                    buf = &mut buf[n..];
                    offset += n as u64;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    fn write_all_at(&self, mut buf: &[u8], mut offset: u64) -> io::Result<()> {
        while !buf.is_empty() {
            match self.write_at(buf, offset) {
                Ok(0) => {
                    return Err(io::Error::new(
                        io::ErrorKind::WriteZero,
                        "failed to write whole buffer",
                    ))
                }
                Ok(n) => {
                    buf = &buf[n..];
                    offset += n as u64;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }
}

impl FileExt for File {
    #[cfg(unix)]
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize> {
        std::os::unix::fs::FileExt::read_at(self, buf, offset)
    }
    #[cfg(unix)]
    fn write_at(&self, buf: &[u8], offset: u64) -> io::Result<usize> {
        std::os::unix::fs::FileExt::write_at(self, buf, offset)
    }
    #[cfg(windows)]
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize> {
        std::os::windows::fs::FileExt::seek_read(self, buf, offset)
    }
    #[cfg(windows)]
    fn write_at(&self, buf: &[u8], offset: u64) -> io::Result<usize> {
        std::os::windows::fs::FileExt::seek_write(self, buf, offset)
    }
}

/// Blocks until this process holds the exclusive lock on `file` (released when the
/// file is closed). `flock` on Unix, `LockFileEx` on Windows (std's `File::lock`).
pub fn lock_exclusive(file: &File) -> io::Result<()> {
    #[cfg(unix)]
    {
        use std::os::fd::AsRawFd;
        // SAFETY: flock on a descriptor we own.
        let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX) };
        if rc != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }
    // std's File::lock needs Rust 1.89: a Windows build needs that toolchain (the
    // crate's rust-version, 1.85, holds for Linux and macOS).
    #[cfg(not(unix))]
    #[allow(clippy::incompatible_msrv)]
    file.lock()
}

/// This process's real user and group ids (0, 0 where the OS has none).
pub fn uid_gid() -> (u32, u32) {
    #[cfg(unix)]
    // SAFETY: getuid/getgid cannot fail and touch no memory.
    unsafe {
        (libc::getuid(), libc::getgid())
    }
    #[cfg(not(unix))]
    (0, 0)
}

/// True when running as root (Unix); never on other systems.
pub fn is_root() -> bool {
    #[cfg(unix)]
    // SAFETY: geteuid cannot fail.
    unsafe {
        libc::geteuid() == 0
    }
    #[cfg(not(unix))]
    false
}

/// The user's home directory: `$HOME` on Unix (else the passwd entry), the profile
/// folder on Windows.
pub fn home_dir() -> PathBuf {
    if let Some(h) = std::env::var_os("HOME") {
        return PathBuf::from(h);
    }
    #[cfg(unix)]
    // SAFETY: getpwuid returns a pointer into static storage or null.
    unsafe {
        let pw = libc::getpwuid(libc::getuid());
        if !pw.is_null() {
            let dir = std::ffi::CStr::from_ptr((*pw).pw_dir);
            return PathBuf::from(dir.to_string_lossy().into_owned());
        }
        PathBuf::from("/")
    }
    #[cfg(not(unix))]
    std::env::home_dir().unwrap_or_else(|| PathBuf::from("."))
}

/// Starts `cmd` in its own session (Unix `setsid`; a detached process on Windows), so
/// closing the terminal that started it does not stop it.
pub fn detach_from_terminal(cmd: &mut std::process::Command) {
    #[cfg(unix)]
    {
        use std::os::unix::process::CommandExt;
        // SAFETY: setsid is async-signal-safe, the only call made between fork and exec.
        unsafe {
            cmd.pre_exec(|| {
                libc::setsid();
                Ok(())
            });
        }
    }
    #[cfg(windows)]
    {
        use std::os::windows::process::CommandExt;
        const DETACHED_PROCESS: u32 = 0x0000_0008;
        const CREATE_NEW_PROCESS_GROUP: u32 = 0x0000_0200;
        cmd.creation_flags(DETACHED_PROCESS | CREATE_NEW_PROCESS_GROUP);
    }
}

/// Frees `len` bytes at `offset` of a cached file without changing its size (Linux
/// `fallocate` hole punching). Elsewhere it answers `Unsupported`: the space is then
/// freed when the whole file is evicted.
pub fn punch_hole(file: &File, offset: u64, len: u64) -> io::Result<()> {
    #[cfg(target_os = "linux")]
    {
        use std::os::fd::AsRawFd;
        // SAFETY: fallocate on an fd we own, with plain integer arguments.
        let rc = unsafe {
            libc::fallocate(
                file.as_raw_fd(),
                libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE,
                offset as libc::off_t,
                len as libc::off_t,
            )
        };
        if rc == 0 {
            Ok(())
        } else {
            Err(io::Error::last_os_error())
        }
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _ = (file, offset, len);
        Err(io::Error::new(
            io::ErrorKind::Unsupported,
            "hole punching is Linux-only",
        ))
    }
}

/// Whether a process of this number exists, where there is no /proc to read (Linux asks
/// /proc, see `daemon::process_alive`): `kill(pid, 0)` on Unix. Windows: assumed alive
/// (no process API without a Win32 crate); a cleanly stopped daemon removes its pid file,
/// so only one killed outright leaves a stale answer.
pub fn process_exists(pid: u32) -> bool {
    #[cfg(unix)]
    {
        // SAFETY: signal 0 only checks that the process exists; nothing is sent.
        let rc = unsafe { libc::kill(pid as libc::pid_t, 0) };
        rc == 0 || io::Error::last_os_error().raw_os_error() == Some(libc::EPERM)
    }
    #[cfg(not(unix))]
    {
        let _ = pid;
        true
    }
}

/// Whether some process holds `path` open for writing: Some(answer) where the OS tells
/// (Linux: every `/proc/<pid>/fd` link to the file, its `fdinfo` access mode; only the
/// processes this user may look at), None where it cannot be told. The folder mode waits
/// for such a file instead of taking it half-written.
pub fn open_for_writing(path: &std::path::Path) -> Option<bool> {
    #[cfg(target_os = "linux")]
    {
        let want = std::fs::canonicalize(path).ok()?;
        let procs = std::fs::read_dir("/proc").ok()?;
        for p in procs.flatten() {
            let pid = p.file_name();
            if !pid.to_string_lossy().bytes().all(|b| b.is_ascii_digit()) {
                continue;
            }
            let Ok(fds) = std::fs::read_dir(p.path().join("fd")) else {
                continue;
            };
            for fd in fds.flatten() {
                if std::fs::read_link(fd.path()).ok().as_deref() != Some(want.as_path()) {
                    continue;
                }
                let info = p.path().join("fdinfo").join(fd.file_name());
                let flags = std::fs::read_to_string(info).ok().and_then(|t| {
                    t.lines()
                        .find_map(|l| l.strip_prefix("flags:"))
                        .and_then(|v| u32::from_str_radix(v.trim(), 8).ok())
                });
                // O_ACCMODE: 1 = O_WRONLY, 2 = O_RDWR.
                if flags.is_some_and(|f| f & 0o3 != 0) {
                    return Some(true);
                }
            }
        }
        Some(false)
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _ = path;
        None
    }
}

/// Keeps the daemon's heap near what it holds (issue 15: RSS while reading 1 GiB cold).
/// glibc's defaults suit short programs, not a daemon streaming through buffers of
/// 256 KiB to 4 MiB on many threads: one arena per thread that ever allocated (up to
/// 8 per core), and an mmap threshold that grows to 32 MiB after the first large free,
/// so every later chunk buffer comes from an arena and stays there once freed.
/// Measured on a new device reading 1 GiB cold over S3: peak RSS 112.6 MiB by default,
/// 59.8 MiB with two arenas and the thresholds fixed at 128 KiB, RSS afterwards 112.6
/// vs 37.0 MiB, the read's time unchanged (6.79 vs 6.82 s).
/// The thresholds are now 4 MiB (mmap) and 16 MiB (trim): at 128 KiB every 1 MiB GET
/// body was a fresh mmap whose 256 pages faulted in one by one (page faults were 20-29 %
/// of the daemon's CPU in `perf` of a 256 MiB cold read). Daemon CPU for that read
/// 930-1070 -> 745-830 ms; a new device's peak RSS reading 1 GiB cold after its first
/// sync of a 5,003-file library (the peak reset in between) 71.5-78.4 -> 75.3-77.3 MiB.
/// One arena, not two: a freed block goes back to the arena it came from, so with two
/// the read path's 1 MiB GET bodies likely left a high-water mark of free space in each
/// (heaptrack: ~17 MiB live at the peak against 36-40 MiB of anonymous RSS).
/// The same probe (3 runs each, alternating binaries): peak 55.4-61.0 -> 46.9-47.8 MiB,
/// read time 4.4-5.1 vs 4.6-4.9 s, daemon CPU 2.5-3.1 vs 2.8-3.0 s.
/// Call before any thread starts.
pub fn bound_allocator() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only changes glibc's tuning parameters; these are documented ones.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 1);
        // Setting either threshold also turns off glibc's growing of them.
        libc::mallopt(libc::M_MMAP_THRESHOLD, 4 << 20);
        libc::mallopt(libc::M_TRIM_THRESHOLD, 16 << 20);
    }
}

/// Hands memory freed after a burst of work (a sync cycle that merged a whole library)
/// back to the OS. glibc keeps freed heap pages in its arenas (only the top of a heap
/// is trimmed on its own), so a daemon that once parsed 5,000 entries kept their pages
/// for the rest of its life; `malloc_trim` releases the free pages anywhere in them.
pub fn release_free_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only walks glibc's own arenas; 0 keeps no extra padding.
    unsafe {
        libc::malloc_trim(0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[cfg(target_os = "linux")]
    #[test]
    fn a_file_open_for_writing_is_told_apart_from_one_open_for_reading() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("x.wav");
        let w = File::create(&p).unwrap();
        assert_eq!(open_for_writing(&p), Some(true));
        drop(w);
        let _r = File::open(&p).unwrap();
        assert_eq!(open_for_writing(&p), Some(false));
    }

    #[test]
    fn positional_io_round_trips_and_reports_short_files() {
        let dir = tempfile::tempdir().unwrap();
        let f = std::fs::OpenOptions::new()
            .create(true)
            .truncate(true)
            .read(true)
            .write(true)
            .open(dir.path().join("f"))
            .unwrap();
        f.write_all_at(b"world", 6).unwrap();
        f.write_all_at(b"hello ", 0).unwrap();
        let mut buf = [0u8; 11];
        f.read_exact_at(&mut buf, 0).unwrap();
        assert_eq!(&buf, b"hello world");
        let err = f.read_exact_at(&mut [0u8; 4], 9).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::UnexpectedEof);
    }
}
