//! Extended attributes through a real mount: `user.songfs.state` is read and listed,
//! other `user.` names do not exist (ENODATA), and the namespaces the mount has nothing
//! in (`security.*`, `system.*` ACLs) are not supported (EOPNOTSUPP), so `ls -l` stops
//! asking for them after the first file instead of costing two round trips per file.

mod common;

use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use common::mount::{wait_until, Mount};

/// `lgetxattr(path, name)`: the value, or the errno.
fn get(path: &Path, name: &str) -> Result<Vec<u8>, i32> {
    let p = CString::new(path.as_os_str().as_bytes()).unwrap();
    let n = CString::new(name).unwrap();
    let mut buf = vec![0u8; 256];
    // SAFETY: valid C strings and a buffer of the length given.
    let r = unsafe { libc::lgetxattr(p.as_ptr(), n.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
    if r < 0 {
        return Err(std::io::Error::last_os_error().raw_os_error().unwrap());
    }
    buf.truncate(r as usize);
    Ok(buf)
}

/// `llistxattr(path)`: the names.
fn list(path: &Path) -> Vec<String> {
    let p = CString::new(path.as_os_str().as_bytes()).unwrap();
    let mut buf = vec![0u8; 1024];
    // SAFETY: a valid C string and a buffer of the length given.
    let r = unsafe { libc::llistxattr(p.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
    assert!(r >= 0, "llistxattr: {}", std::io::Error::last_os_error());
    buf[..r as usize]
        .split(|b| *b == 0)
        .filter(|s| !s.is_empty())
        .map(|s| String::from_utf8(s.to_vec()).unwrap())
        .collect()
}

const STATES: &[&str] = &[
    "remote",
    "partial",
    "cached",
    "pinned",
    "uploading",
    "local-only",
];

#[test]
fn the_state_attribute_is_answered_and_foreign_namespaces_are_not_supported() {
    let m = Mount::new();
    let f = m.path("take.mp3");
    std::fs::write(&f, b"some audio").unwrap();
    std::fs::create_dir(m.path("album")).unwrap();

    let state = String::from_utf8(get(&f, "user.songfs.state").unwrap()).unwrap();
    assert!(STATES.contains(&state.as_str()), "{state:?}");
    assert!(
        wait_until(Duration::from_secs(20), || get(&f, "user.songfs.state")
            == Ok(b"cached".to_vec())),
        "a written file never became `cached` once uploaded"
    );
    assert_eq!(list(&f), ["user.songfs.state"]);
    // The command line users are told about (README).
    let out = Command::new("getfattr")
        .args(["--only-values", "-n", "user.songfs.state"])
        .arg(&f)
        .output()
        .expect("getfattr (package attr) is installed");
    assert!(out.status.success(), "{out:?}");
    assert_eq!(out.stdout, b"cached");

    // Folders have no state; other user names do not exist.
    assert_eq!(
        get(&m.path("album"), "user.songfs.state"),
        Err(libc::ENODATA)
    );
    assert!(list(&m.path("album")).is_empty());
    assert_eq!(get(&f, "user.songfs.other"), Err(libc::ENODATA));
    // Labels, ACLs, capabilities: not supported, on files and folders alike.
    for p in [f.clone(), m.path("album")] {
        for name in [
            "security.selinux",
            "security.capability",
            "system.posix_acl_access",
            "system.posix_acl_default",
        ] {
            assert_eq!(get(&p, name), Err(libc::EOPNOTSUPP), "{name} of {p:?}");
        }
    }
    // Missing files are still ENOENT, whatever the name.
    assert_eq!(
        get(&m.path("missing.mp3"), "security.selinux"),
        Err(libc::ENOENT)
    );
}

/// What `ls -l` asks: with ENODATA for `security.selinux` and `system.posix_acl_access`
/// it asked both for every file; with EOPNOTSUPP it asks each once for the whole mount.
#[test]
fn ls_l_asks_for_labels_and_acls_once_not_per_file() {
    if Command::new("strace").arg("-V").output().is_err() {
        eprintln!("strace is not installed: this test cannot count ls's requests; skipped");
        return;
    }
    let m = Mount::new();
    std::fs::create_dir(m.path("many")).unwrap();
    for i in 0..200 {
        std::fs::write(m.path(&format!("many/take_{i:03}.mp3")), b"x").unwrap();
    }
    let trace = m.root().join("ls.strace");
    let out = Command::new("strace")
        .args(["-f", "-qq", "-e", "trace=getxattr,lgetxattr", "-o"])
        .arg(&trace)
        .args(["ls", "-l"])
        .arg(m.path("many"))
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    assert_eq!(
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter(|l| l.contains("take_"))
            .count(),
        200
    );
    let calls = std::fs::read_to_string(&trace).unwrap();
    let n = calls.lines().filter(|l| l.contains("xattr(")).count();
    assert!(
        n <= 4,
        "ls -l of 200 files made {n} xattr calls into the mount:\n{}",
        calls.lines().take(6).collect::<Vec<_>>().join("\n")
    );
}
