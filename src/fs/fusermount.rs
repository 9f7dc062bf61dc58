//! Mounting as a non-root user through the setuid helper `fusermount3`, the way libfuse
//! does: fusermount3 opens /dev/fuse, mounts it, and hands the open descriptor back over
//! a Unix socket (`_FUSE_COMMFD`). This works where /dev/fuse itself is not readable by
//! the user (fuser's own fallback needs it to be). Unmount is `fusermount3 -u`.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Stdio};

/// Mounts `/dev/fuse` on `mountpoint` with `options` (comma-separated, as in
/// `fusermount3 -o`) and returns the FUSE device descriptor to serve.
pub fn mount(mountpoint: &Path, options: &str) -> io::Result<OwnedFd> {
    let (child_end, our_end) = UnixStream::pair()?;
    let child_fd = child_end.as_raw_fd();
    let mut cmd = Command::new("fusermount3");
    cmd.arg("-o")
        .arg(options)
        .arg("--")
        .arg(mountpoint)
        .env("_FUSE_COMMFD", child_fd.to_string())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    // SAFETY: only fcntl (async-signal-safe) between fork and exec: keep the socket
    // open across exec so fusermount3 can send the descriptor on it.
    unsafe {
        cmd.pre_exec(move || {
            let flags = libc::fcntl(child_fd, libc::F_GETFD);
            if flags < 0 || libc::fcntl(child_fd, libc::F_SETFD, flags & !libc::FD_CLOEXEC) < 0 {
                return Err(io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let child = cmd.spawn().map_err(|e| {
        io::Error::new(
            e.kind(),
            format!("cannot run fusermount3 ({e}): install it with `sudo apt install fuse3`"),
        )
    })?;
    drop(child_end);
    let received = receive_fd(&our_end);
    let out = child.wait_with_output()?;
    match received {
        Ok(fd) => Ok(fd),
        Err(e) => {
            let why = String::from_utf8_lossy(&out.stderr).trim().to_string();
            Err(io::Error::other(if why.is_empty() {
                format!("fusermount3 failed: {e}")
            } else {
                why
            }))
        }
    }
}

/// Receives one descriptor sent with SCM_RIGHTS.
fn receive_fd(sock: &UnixStream) -> io::Result<OwnedFd> {
    let mut byte = [0u8; 1];
    let mut iov = libc::iovec {
        iov_base: byte.as_mut_ptr() as *mut libc::c_void,
        iov_len: 1,
    };
    // Room for one cmsghdr carrying one int, aligned.
    let mut cbuf = [0u64; 8];
    // SAFETY: msghdr is plain data; every pointer in it points into live locals above.
    unsafe {
        let mut msg: libc::msghdr = std::mem::zeroed();
        msg.msg_iov = &mut iov;
        msg.msg_iovlen = 1;
        msg.msg_control = cbuf.as_mut_ptr() as *mut libc::c_void;
        msg.msg_controllen = std::mem::size_of_val(&cbuf) as _;
        let n = loop {
            let n = libc::recvmsg(sock.as_raw_fd(), &mut msg, 0);
            if n < 0 && io::Error::last_os_error().kind() == io::ErrorKind::Interrupted {
                continue;
            }
            break n;
        };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "fusermount3 sent no descriptor",
            ));
        }
        let cmsg = libc::CMSG_FIRSTHDR(&msg);
        if cmsg.is_null()
            || (*cmsg).cmsg_level != libc::SOL_SOCKET
            || (*cmsg).cmsg_type != libc::SCM_RIGHTS
        {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "fusermount3 answered without a descriptor",
            ));
        }
        let fd = std::ptr::read_unaligned(libc::CMSG_DATA(cmsg) as *const libc::c_int);
        if fd < 0 {
            return Err(io::Error::new(io::ErrorKind::InvalidData, "bad descriptor"));
        }
        Ok(OwnedFd::from_raw_fd(fd))
    }
}

/// `fusermount3 -u` (lazy if `lazy`): detaches the mount; the session then ends.
pub fn unmount(mountpoint: &Path, lazy: bool) -> io::Result<()> {
    let mut cmd = Command::new("fusermount3");
    cmd.arg("-u");
    if lazy {
        cmd.arg("-z");
    }
    let out = cmd.arg("--").arg(mountpoint).output()?;
    if out.status.success() {
        Ok(())
    } else {
        Err(io::Error::other(
            String::from_utf8_lossy(&out.stderr).trim().to_string(),
        ))
    }
}
