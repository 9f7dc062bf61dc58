//! A non-root user mounts songfs (through fusermount3) with its state under its own
//! home, writes a file the way the app does (Python: mkstemp in the target folder,
//! write, close, os.replace over the target) and reads it back.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use common::mount::{alive, run_ok, songfs_bin, wait_until};

/// A throwaway user, removed (with its mount and daemon) on drop.
struct TestUser {
    name: String,
    uid: u32,
    gid: u32,
    dir: PathBuf,
    /// /dev/fuse's mode before the test (restored on drop).
    fuse_mode: u32,
}

impl TestUser {
    fn create() -> TestUser {
        let name = format!("sfst{}", std::process::id());
        let dir = PathBuf::from(format!("/tmp/{name}"));
        let _ = std::fs::remove_dir_all(&dir);
        run_ok(
            Command::new("useradd")
                .args(["-M", "-d"])
                .arg(&dir)
                .args(["-s", "/bin/sh"])
                .arg(&name),
        );
        let id = |flag: &str| -> u32 {
            let out = run_ok(Command::new("id").arg(flag).arg(&name));
            String::from_utf8_lossy(&out.stdout).trim().parse().unwrap()
        };
        let (uid, gid) = (id("-u"), id("-g"));
        std::fs::create_dir_all(&dir).unwrap();
        std::os::unix::fs::chown(&dir, Some(uid), Some(gid)).unwrap();
        // Distributions ship /dev/fuse as 0666 (udev: KERNEL=="fuse", MODE="0666"), and
        // fusermount3 opens it as the calling user; this container has it 0600.
        let fuse_mode = std::fs::metadata("/dev/fuse").unwrap().permissions().mode() & 0o7777;
        std::fs::set_permissions("/dev/fuse", std::fs::Permissions::from_mode(0o666)).unwrap();
        TestUser {
            name,
            uid,
            gid,
            dir,
            fuse_mode,
        }
    }

    /// A command run as this user, with a clean environment.
    fn cmd(&self, prog: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut c = Command::new(prog);
        c.env_clear()
            .env("PATH", "/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin")
            .env("HOME", &self.dir)
            .env("SONGFS_HOME", self.dir.join(".songfs"))
            .env("RUST_LOG", "songfs=debug,warn")
            .current_dir(&self.dir)
            .uid(self.uid)
            .gid(self.gid);
        c
    }

    fn mnt(&self) -> PathBuf {
        self.dir.join("audio")
    }
}

impl Drop for TestUser {
    fn drop(&mut self) {
        let _ = Command::new("fusermount3")
            .arg("-u")
            .arg("-z")
            .arg(self.mnt())
            .output();
        if let Ok(pid) = std::fs::read_to_string(self.dir.join(".songfs/daemon.pid")) {
            if let Ok(pid) = pid.trim().parse::<u32>() {
                if alive(pid) {
                    // SAFETY: kill(2) of the daemon this test started, by PID.
                    unsafe { libc::kill(pid as i32, libc::SIGKILL) };
                }
            }
        }
        let _ = Command::new("userdel").arg(&self.name).output();
        let _ =
            std::fs::set_permissions("/dev/fuse", std::fs::Permissions::from_mode(self.fuse_mode));
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn ok(out: Output, what: &str) -> Output {
    assert!(
        out.status.success(),
        "{what} failed: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

const APP_WRITE: &str = r#"
import hashlib, os, sys, tempfile
folder, target = sys.argv[1], sys.argv[2]
data = os.urandom(600_000)
os.makedirs(folder, exist_ok=True)
fd, tmp = tempfile.mkstemp(dir=folder, suffix=".part")
with os.fdopen(fd, "wb") as f:
    f.write(data)
os.replace(tmp, os.path.join(folder, target))
st = os.stat(os.path.join(folder, target))
assert st.st_uid == os.getuid(), (st.st_uid, os.getuid())
assert (st.st_mode & 0o777) == 0o600, oct(st.st_mode)
with open(os.path.join(folder, target), "rb") as f:
    assert f.read() == data, "read-back differs"
assert sorted(os.listdir(folder)) == [target], os.listdir(folder)
print(hashlib.sha256(data).hexdigest())
"#;

#[test]
fn a_non_root_user_mounts_writes_like_the_app_and_reads_back() {
    let u = TestUser::create();
    // The test binary's folder may not be reachable by the user: give it a copy.
    let bin = u.dir.join("songfs");
    std::fs::copy(songfs_bin(), &bin).unwrap();
    std::fs::set_permissions(&bin, std::fs::Permissions::from_mode(0o755)).unwrap();
    let store = u.dir.join("store");
    for d in [&store, &u.mnt()] {
        std::fs::create_dir_all(d).unwrap();
        std::os::unix::fs::chown(d, Some(u.uid), Some(u.gid)).unwrap();
    }
    ok(
        u.cmd(&bin)
            .args(["init", "--store"])
            .arg(format!("file://{}", store.display()))
            .output()
            .unwrap(),
        "init as the user",
    );
    ok(
        u.cmd(&bin).arg("mount").arg(u.mnt()).output().unwrap(),
        "mount as the user",
    );

    let out = ok(
        u.cmd("/usr/bin/python3")
            .arg("-c")
            .arg(APP_WRITE)
            .arg(u.mnt().join("2026-02-10_song"))
            .arg("song_v1.mp3")
            .output()
            .unwrap(),
        "the app's write pattern as the user",
    );
    let hash = String::from_utf8_lossy(&out.stdout).trim().to_string();
    assert_eq!(hash.len(), 64);

    // Uploads finish and the daemon's state lives in the user's home.
    let blob = store.join("blobs/sha256").join(&hash[..2]).join(&hash);
    assert!(
        wait_until(Duration::from_secs(20), || blob.exists()),
        "the blob never reached the store"
    );
    assert_eq!(std::fs::metadata(&blob).unwrap().len(), 600_000);
    let state = u.dir.join(".songfs/state.db");
    assert!(state.exists());
    assert_eq!(
        std::os::unix::fs::MetadataExt::uid(&std::fs::metadata(&state).unwrap()),
        u.uid
    );
    let status = ok(
        u.cmd(&bin).args(["status", "--json"]).output().unwrap(),
        "status",
    );
    let v: serde_json::Value = serde_json::from_slice(&status.stdout).unwrap();
    assert_eq!(v["mounted"], true, "{v}");

    ok(
        u.cmd(&bin).arg("unmount").arg(u.mnt()).output().unwrap(),
        "unmount as the user",
    );
    assert!(!Path::new(&u.mnt().join("2026-02-10_song")).exists());
}
