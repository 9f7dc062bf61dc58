//! Two machines, one store: two `$SONGFS_HOME`s and two real FUSE mounts at the SAME path,
//! each in its own mount namespace (`unshare -m --propagation private` runs each daemon in
//! the foreground; the test enters a machine's namespace with `nsenter` for its file
//! operations), sharing a real S3 server (s3s-fs) on 127.0.0.1, each with its own Song
//! Factory database from the real v5 schema fixture.

mod common;
#[path = "sync_util/mod.rs"]
mod sync_util;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::mount::{bytes, sha256_hex, wait_until};
use common::s3server::S3Server;

struct Machine {
    name: String,
    home: PathBuf,
    db: PathBuf,
    user_home: PathBuf,
    env: Vec<(String, String)>,
    daemon: Option<Child>,
    _dir: tempfile::TempDir,
}

impl Machine {
    fn new(s3: &S3Server, prefix: &str, name: &str) -> Machine {
        let dir = tempfile::Builder::new()
            .prefix(&format!("songfs-{name}-"))
            .tempdir()
            .unwrap();
        let home = dir.path().join("songfs");
        let user_home = dir.path().join("user");
        std::fs::create_dir_all(&user_home).unwrap();
        let db = dir.path().join("songfactory.db");
        sync_util::make_db(&db, true);
        let m = Machine {
            name: name.into(),
            home,
            db,
            user_home,
            env: s3.env(),
            daemon: None,
            _dir: dir,
        };
        run_ok(m.songfs().args([
            "init",
            "--store",
            &s3.url(prefix),
            "--s3-endpoint",
            &s3.endpoint(),
            "--device-name",
            name,
            "--db",
            m.db.to_str().unwrap(),
        ]));
        m
    }

    fn songfs(&self) -> Command {
        let mut c = Command::new(common::songfs_bin());
        c.env("SONGFS_HOME", &self.home)
            .env("HOME", &self.user_home)
            .env("RUST_LOG", "songfs=info,warn")
            .env_remove("AWS_SESSION_TOKEN")
            .env_remove("AWS_PROFILE")
            .envs(self.env.iter().map(|(k, v)| (k, v)));
        c
    }

    /// Starts the daemon in a private mount namespace and waits for its mount.
    fn start(&mut self, mnt: &Path, args: &[&str]) {
        let log = std::fs::File::create(self.home.join("test-daemon.log")).unwrap();
        let mut c = Command::new("unshare");
        c.args(["-m", "--propagation", "private"])
            .arg(common::songfs_bin())
            .arg("mount")
            .arg(mnt)
            .arg("--foreground")
            .args(args)
            .env("SONGFS_HOME", &self.home)
            .env("HOME", &self.user_home)
            .env("RUST_LOG", "songfs=info,warn")
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log);
        self.daemon = Some(c.spawn().expect("unshare songfs mount"));
        let want = format!(" {} ", mnt.display());
        let up = wait_until(Duration::from_secs(30), || {
            self.sh("cat /proc/self/mountinfo").status.success()
                && String::from_utf8_lossy(&self.sh("cat /proc/self/mountinfo").stdout)
                    .lines()
                    .any(|l| l.contains(&want) && l.contains("fuse"))
                && self.home.join("daemon.sock").exists()
        });
        assert!(
            up,
            "{}: the mount did not come up: {}",
            self.name,
            self.log()
        );
    }

    fn pid(&self) -> u32 {
        self.daemon.as_ref().expect("daemon running").id()
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.home.join("test-daemon.log")).unwrap_or_default()
    }

    /// A shell command inside this machine's mount namespace.
    fn sh(&self, script: &str) -> Output {
        Command::new("nsenter")
            .args([
                "-t",
                &self.pid().to_string(),
                "-m",
                "--",
                "sh",
                "-c",
                script,
            ])
            .output()
            .expect("nsenter")
    }

    fn sh_ok(&self, script: &str) -> Vec<u8> {
        let o = self.sh(script);
        assert!(
            o.status.success(),
            "{}: `{script}` failed: {}",
            self.name,
            String::from_utf8_lossy(&o.stderr)
        );
        o.stdout
    }

    /// The app's way of writing audio: mkstemp in the target folder, write, mode 0600,
    /// rename over the target.
    fn app_write(&self, path: &Path, data: &[u8]) {
        let dir = path.parent().unwrap().display().to_string();
        let script = format!(
            "mkdir -p '{dir}' && t=$(mktemp -p '{dir}' tmpXXXXXXXX) && cat > \"$t\" && chmod 600 \"$t\" && mv \"$t\" '{}'",
            path.display()
        );
        let mut child = Command::new("nsenter")
            .args([
                "-t",
                &self.pid().to_string(),
                "-m",
                "--",
                "sh",
                "-c",
                &script,
            ])
            .stdin(Stdio::piped())
            .spawn()
            .unwrap();
        use std::io::Write;
        child.stdin.take().unwrap().write_all(data).unwrap();
        assert!(
            child.wait().unwrap().success(),
            "app_write {}",
            path.display()
        );
    }

    fn read(&self, path: &Path) -> Vec<u8> {
        self.sh_ok(&format!("cat '{}'", path.display()))
    }

    fn exists(&self, path: &Path) -> bool {
        self.sh(&format!("test -e '{}'", path.display()))
            .status
            .success()
    }

    fn state(&self, path: &Path) -> String {
        let out = self.sh_ok(&format!(
            "getfattr --only-values -n user.songfs.state '{}'",
            path.display()
        ));
        String::from_utf8_lossy(&out).trim().to_string()
    }

    /// `songfs sync --json` (the daemon runs the cycle) until nothing waits for upload.
    fn sync(&self) -> serde_json::Value {
        let mut last = serde_json::Value::Null;
        for _ in 0..40 {
            let out = run_ok(self.songfs().args(["sync", "--json"]));
            last = summary_line(&out.stdout);
            if last["namespace"]["waiting_for_upload"].as_u64() == Some(0) {
                return last;
            }
            std::thread::sleep(Duration::from_millis(250));
        }
        panic!("{}: uploads never finished: {last}", self.name);
    }

    fn status(&self) -> serde_json::Value {
        let out = run_ok(self.songfs().args(["status", "--json"]));
        serde_json::from_slice(&out.stdout).unwrap()
    }

    fn db_text(&self, sql: &str) -> Option<String> {
        let c = rusqlite::Connection::open(&self.db).unwrap();
        c.query_row(sql, [], |r| r.get(0)).unwrap()
    }

    fn stop(&mut self) {
        if let Some(mut child) = self.daemon.take() {
            // SAFETY: kill(2) of the daemon this test started, by its PID.
            unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
            let deadline = Instant::now() + Duration::from_secs(60);
            while Instant::now() < deadline {
                if child.try_wait().ok().flatten().is_some() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = child.kill();
            let _ = child.wait();
            panic!("{}: the daemon did not stop on SIGTERM", self.name);
        }
    }
}

impl Drop for Machine {
    fn drop(&mut self) {
        if let Some(mut child) = self.daemon.take() {
            // SAFETY: as in stop().
            unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
            let deadline = Instant::now() + Duration::from_secs(20);
            while Instant::now() < deadline && child.try_wait().ok().flatten().is_none() {
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn run_ok(c: &mut Command) -> Output {
    let o = c.output().expect("run songfs");
    assert!(
        o.status.success(),
        "{c:?} failed: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    o
}

/// One mount path for both machines (each sees only its own mount there).
fn shared_mountpoint() -> (tempfile::TempDir, PathBuf) {
    let d = tempfile::Builder::new()
        .prefix("songfs-two-")
        .tempdir()
        .unwrap();
    let mnt = d.path().join("SongFactory");
    std::fs::create_dir_all(&mnt).unwrap();
    (d, mnt)
}

fn conflict_copies(m: &Machine, mnt: &Path) -> Vec<String> {
    let out = m.sh_ok(&format!(
        "cd '{}' && find .conflicts ! -type d 2>/dev/null || true",
        mnt.display()
    ));
    let mut v: Vec<String> = String::from_utf8_lossy(&out)
        .lines()
        .map(str::to_string)
        .collect();
    v.sort();
    v
}

/// The last line of `songfs sync --json`'s stream (doc/SYNC-JSON.md): the summary.
fn summary_line(stdout: &[u8]) -> serde_json::Value {
    let text = String::from_utf8_lossy(stdout);
    let last = text.lines().last().expect("sync --json wrote lines");
    let v: serde_json::Value = serde_json::from_str(last).expect("sync --json is JSON lines");
    assert_eq!(v["type"], "summary", "{text}");
    v
}

#[test]
fn two_machines_same_paths_lazy_reads_renames_deletes_conflicts_pin_evict() {
    let s3 = S3Server::start();
    let (_d, mnt) = shared_mountpoint();
    let mut a = Machine::new(&s3, "lib", "desk");
    let mut b = Machine::new(&s3, "lib", "laptop");
    // Long interval: this test drives the cycles itself with `songfs sync`.
    a.start(&mnt, &["--sync-interval", "3600"]);
    b.start(&mnt, &["--sync-interval", "3600", "--cache-size", "2M"]);
    assert!(
        !b.exists(&mnt.join("2026-02-12_song")),
        "separate namespaces"
    );

    // A: the app writes a render and stores its path in the database.
    let song = mnt.join("2026-02-12_song/song_v1.mp3");
    let audio = bytes(1, 900_000);
    a.app_write(&song, &audio);
    let conn = rusqlite::Connection::open(&a.db).unwrap();
    conn.execute(
        "UPDATE songs SET file_path_1 = ?1 WHERE id = 1",
        [song.to_str().unwrap()],
    )
    .unwrap();
    drop(conn);
    // The app's Settings backup (a full copy of the database) stays on A.
    let backup = mnt.join("songfactory_backup_2026-02-12.db");
    a.app_write(&backup, b"SQLite format 3\0 secrets");
    let ra = a.sync();
    assert_eq!(ra["namespace"]["sent_files"], 1, "{ra}");
    let rb = b.sync();
    assert_eq!(rb["namespace"]["received_files"], 1, "{rb}");

    // B: the identical path in its database, the file there, bytes fetched only on read.
    assert_eq!(
        b.db_text("SELECT file_path_1 FROM songs WHERE id = 1")
            .as_deref(),
        Some(song.to_str().unwrap())
    );
    assert!(
        !b.exists(&backup),
        "a local-only file reached another machine"
    );
    assert_eq!(a.state(&backup), "local-only");
    let st = run_ok(a.songfs().arg("status"));
    let text = String::from_utf8_lossy(&st.stdout).into_owned();
    assert!(
        text.contains("1 file(s) stay on this machine only"),
        "{text}"
    );
    assert_eq!(
        b.state(&song),
        "remote",
        "nothing downloaded before the read"
    );
    let got = b.read(&song);
    assert_eq!(sha256_hex(&got), sha256_hex(&audio));
    assert_ne!(b.state(&song), "remote");
    assert!(
        wait_until(Duration::from_secs(10), || a.state(&song) == "cached"),
        "uploaded on A, so cached (not uploading): {}",
        a.state(&song)
    );

    // A folder renamed on B is renamed on A (its files move, the old folder goes away).
    let moved = mnt.join("2026-02-13_song/song_v1.mp3");
    b.sh_ok(&format!(
        "mv '{}' '{}'",
        song.parent().unwrap().display(),
        moved.parent().unwrap().display()
    ));
    b.sync();
    a.sync();
    assert!(!a.exists(&song));
    assert!(!a.exists(song.parent().unwrap()));
    assert_eq!(sha256_hex(&a.read(&moved)), sha256_hex(&audio));

    // Delete on A reaches B, and B's kernel forgets the entry it just looked up (the
    // sync invalidates it; the 2 s attribute TTL has not run out).
    assert!(b.exists(&moved), "B sees the file it renamed");
    a.sh_ok(&format!("rm '{}'", moved.display()));
    a.sync();
    b.sync();
    // An empty folder made on A appears on B; removed on A, it goes on B.
    let empty = mnt.join("new album/disc 1");
    a.sh_ok(&format!("mkdir -p '{}'", empty.display()));
    a.sync();
    b.sync();
    assert!(b
        .sh(&format!("test -d '{}'", empty.display()))
        .status
        .success());
    a.sh_ok(&format!("rm -r '{}'", mnt.join("new album").display()));
    a.sync();
    b.sync();
    assert!(!b.exists(&mnt.join("new album")));
    assert!(!b.exists(&moved));

    // Both write one name without seeing each other: the later keeps the name, the other
    // is a conflict copy under .conflicts/ on both machines, and the conflict is logged.
    let both = mnt.join("mix/take.wav");
    let va = bytes(2, 300_000);
    let vb = bytes(3, 310_000);
    a.app_write(&both, &va);
    b.app_write(&both, &vb);
    a.sync();
    std::thread::sleep(Duration::from_millis(20));
    b.sync(); // B's version is captured later: it wins
    a.sync();
    b.sync();
    for m in [&a, &b] {
        assert_eq!(sha256_hex(&m.read(&both)), sha256_hex(&vb), "{}", m.name);
        let copies = conflict_copies(m, &mnt);
        assert_eq!(copies.len(), 1, "{}: {copies:?}", m.name);
        assert!(
            copies[0].starts_with(".conflicts/mix/take (from desk ") && copies[0].ends_with(".wav"),
            "{}",
            copies[0]
        );
        assert_eq!(
            sha256_hex(&m.read(&mnt.join(&copies[0]))),
            sha256_hex(&va),
            "the losing version is kept whole"
        );
        assert!(m.status()["conflicts_not_looked_at"].as_u64().unwrap() >= 1);
        let conflicts = run_ok(m.songfs().args(["conflicts", "--json"]));
        let list: serde_json::Value = serde_json::from_slice(&conflicts.stdout).unwrap();
        assert!(
            list.as_array()
                .unwrap()
                .iter()
                .any(|r| r["kind"] == "file" && r["row"] == "mix/take.wav"),
            "{list}"
        );
        assert_eq!(m.status()["conflict_copies"], 1);
        assert_eq!(
            m.status()["conflicts_not_looked_at"],
            0,
            "`songfs conflicts` looked"
        );
    }
    // No copy of a copy, however often they sync.
    a.sync();
    b.sync();
    assert_eq!(conflict_copies(&a, &mnt).len(), 1);

    // Restore on A: the copy goes back, the current version becomes a copy.
    let copy = mnt.join(&conflict_copies(&a, &mnt)[0]);
    let o = Command::new("nsenter")
        .args(["-t", &a.pid().to_string(), "-m", "--"])
        .arg(common::songfs_bin())
        .arg("restore")
        .arg(&copy)
        .env("SONGFS_HOME", &a.home)
        .env("HOME", &a.user_home)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(sha256_hex(&a.read(&both)), sha256_hex(&va));
    a.sync();
    b.sync();
    assert_eq!(
        sha256_hex(&b.read(&both)),
        sha256_hex(&va),
        "the restore reached B"
    );

    // Pin / evict on B: pinned files stay, evicted ones go back to remote; the 2 MiB
    // cache limit holds while reading more than that.
    let files: Vec<PathBuf> = (0..6).map(|i| mnt.join(format!("many/f{i}.mp3"))).collect();
    for (i, f) in files.iter().enumerate() {
        a.app_write(f, &bytes(10 + i as u64, 600_000));
    }
    a.sync();
    b.sync();
    let pin = run_ok(b.songfs().arg("pin").arg(&files[0]));
    assert!(String::from_utf8_lossy(&pin.stdout).contains("pinned"));
    assert_eq!(b.state(&files[0]), "pinned");
    for f in &files[1..] {
        assert_eq!(b.read(f).len(), 600_000);
    }
    assert_eq!(
        b.state(&files[0]),
        "pinned",
        "a pinned file is never evicted"
    );
    let st = b.status();
    let used = st["daemon"]["cache_bytes"].as_u64().unwrap();
    let pinned = st["daemon"]["cache_pinned_bytes"].as_u64().unwrap();
    assert!(
        used - pinned <= 2 * 1024 * 1024,
        "evictable bytes {used}-{pinned} over the 2 MiB limit: {st}"
    );
    run_ok(b.songfs().arg("evict").arg(&files[0]));
    assert_eq!(b.state(&files[0]), "remote");
    assert_eq!(
        b.read(&files[0]).len(),
        600_000,
        "an evicted file reads again"
    );
    let states = run_ok(b.songfs().args(["status", "--json"]).arg(mnt.join("many")));
    let states: serde_json::Value = serde_json::from_slice(&states.stdout).unwrap();
    assert_eq!(states.as_array().unwrap().len(), 6, "{states}");
    // A whole folder, recursively: every file downloaded and kept, then let go.
    let out = run_ok(b.songfs().args(["pin", "--json"]).arg(mnt.join("many")));
    let pinned: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let pinned = pinned.as_array().unwrap();
    assert_eq!(pinned.len(), 6);
    assert!(pinned.iter().all(|f| f["state"] == "pinned"), "{pinned:?}");
    for f in &files {
        assert_eq!(b.state(f), "pinned");
    }
    run_ok(b.songfs().arg("unpin").arg(mnt.join("many")));
    assert_ne!(b.state(&files[5]), "pinned");

    // Changed while its previous content uploads (the sequences that lost data in
    // rclone's writeback): truncated, renamed over, deleted. Every machine ends with what
    // the user last left.
    let race = mnt.join("race");
    a.sh_ok(&format!(
        "mkdir -p '{r}' && head -c 4000000 /dev/urandom > '{r}/t.wav' && : > '{r}/t.wav' \
         && head -c 3000000 /dev/urandom > '{r}/final.mp3' \
         && head -c 4000000 /dev/urandom > '{r}/tmp1' && mv '{r}/tmp1' '{r}/final.mp3' \
         && head -c 4000000 /dev/urandom > '{r}/gone.mp3' && rm '{r}/gone.mp3'",
        r = race.display()
    ));
    let final_on_a = sha256_hex(&a.read(&race.join("final.mp3")));
    a.sync();
    b.sync();
    let listing =
        String::from_utf8_lossy(&b.sh_ok(&format!("ls '{}'", race.display()))).into_owned();
    let mut names: Vec<&str> = listing.lines().collect();
    names.sort();
    assert_eq!(names, vec!["final.mp3", "t.wav"]);
    assert_eq!(b.read(&race.join("t.wav")).len(), 0);
    assert_eq!(sha256_hex(&b.read(&race.join("final.mp3"))), final_on_a);

    // Written just before unmount (no cycle in between): the last cycle at unmount,
    // after the uploads drained, sends it.
    let last = mnt.join("last/written_at_exit.mp3");
    let last_data = bytes(31, 500_000);
    a.app_write(&last, &last_data);
    a.stop();
    b.sync();
    assert_eq!(sha256_hex(&b.read(&last)), sha256_hex(&last_data));
    b.stop();
}

#[test]
fn the_daemon_syncs_by_itself_and_songfs_sync_never_runs_a_second_cycle() {
    let s3 = S3Server::start();
    let (_d, mnt) = shared_mountpoint();
    let mut a = Machine::new(&s3, "loop", "desk");
    let mut b = Machine::new(&s3, "loop", "laptop");
    a.start(&mnt, &["--sync-interval", "1"]);
    b.start(&mnt, &["--sync-interval", "1"]);
    let f = mnt.join("auto/x.mp3");
    let data = bytes(7, 100_000);
    a.app_write(&f, &data);
    assert!(
        wait_until(Duration::from_secs(30), || b.exists(&f)),
        "B never saw A's file without a manual sync: {}",
        b.log()
    );
    assert_eq!(sha256_hex(&b.read(&f)), sha256_hex(&data));
    assert!(
        wait_until(Duration::from_secs(10), || a.status()["sync_cycles"]
            .as_u64()
            .is_some_and(|n| n >= 2)),
        "the loop did not run again by itself"
    );

    // Two `songfs sync` at once while the daemon runs: the daemon runs each cycle, one
    // after the other (never overlapping, never a second process cycle).
    let spawn = || {
        a.songfs()
            .args(["sync", "--json"])
            .stdout(Stdio::piped())
            .spawn()
            .unwrap()
    };
    let (p1, p2) = (spawn(), spawn());
    let r: Vec<serde_json::Value> = [p1, p2]
        .into_iter()
        .map(|p| {
            let o = p.wait_with_output().unwrap();
            assert!(o.status.success());
            summary_line(&o.stdout)
        })
        .collect();
    let n0 = r[0]["cycle_number"].as_u64().unwrap();
    let n1 = r[1]["cycle_number"].as_u64().unwrap();
    assert_ne!(n0, n1, "two requests, two cycles of the daemon");
    let (first, second) = if n0 < n1 {
        (&r[0], &r[1])
    } else {
        (&r[1], &r[0])
    };
    let t = |v: &serde_json::Value, k: &str| {
        chrono::DateTime::parse_from_rfc3339(v[k].as_str().unwrap()).unwrap()
    };
    assert!(
        t(second, "started_at") >= t(first, "finished_at"),
        "cycles overlapped: {first} / {second}"
    );
    // The daemon's count includes them: they were its cycles, not the CLI's.
    assert!(wait_until(Duration::from_secs(10), || a.status()
        ["sync_cycles"]
        .as_u64()
        .is_some_and(|n| n >= n0.max(n1))));

    // SIGTERM: the last cycle runs, the mount goes, within a bounded time.
    let started = Instant::now();
    a.stop();
    b.stop();
    assert!(started.elapsed() < Duration::from_secs(60));

    // Without a daemon, `songfs sync` runs the cycle itself (namespace and database).
    let out = run_ok(b.songfs().args(["sync", "--json"]));
    let v = summary_line(&out.stdout);
    assert!(v.get("received").is_some(), "the database summary: {v}");
}

/// A machine that mounts elsewhere (another user name, another folder) gets the same
/// files, and database paths re-rooted at its own mount.
#[test]
fn a_machine_mounting_elsewhere_gets_paths_rerooted() {
    let s3 = S3Server::start();
    let (_da, mnt_a) = shared_mountpoint();
    let d = tempfile::Builder::new()
        .prefix("songfs-elsewhere-")
        .tempdir()
        .unwrap();
    let mnt_b = d.path().join("home/other/Music/Songs");
    std::fs::create_dir_all(&mnt_b).unwrap();
    let mut a = Machine::new(&s3, "reroot", "desk");
    let mut b = Machine::new(&s3, "reroot", "laptop");
    a.start(&mnt_a, &["--sync-interval", "3600"]);
    b.start(&mnt_b, &["--sync-interval", "3600"]);
    let rel = "2026-02-12_song/song_vocals.mp3";
    let data = bytes(21, 200_000);
    a.app_write(&mnt_a.join(rel), &data);
    let conn = rusqlite::Connection::open(&a.db).unwrap();
    conn.execute(
        "UPDATE songs SET file_path_vocals = ?1 WHERE id = 2",
        [mnt_a.join(rel).to_str().unwrap()],
    )
    .unwrap();
    drop(conn);
    a.sync();
    b.sync();
    let on_b = b
        .db_text("SELECT file_path_vocals FROM songs WHERE id = 2")
        .expect("the path arrived");
    assert_eq!(on_b, mnt_b.join(rel).to_str().unwrap());
    assert_eq!(sha256_hex(&b.read(Path::new(&on_b))), sha256_hex(&data));
    a.stop();
    b.stop();
}

/// Symlinks travel as namespace entries (target verbatim, relative or absolute) and a
/// chmod as the file's mode; a retarget, a rename, a delete and a file replaced by a link
/// follow. (issue 12)
#[test]
fn a_symlink_and_a_chmod_made_on_a_arrive_on_b() {
    let s3 = S3Server::start();
    let (_d, mnt) = shared_mountpoint();
    let mut a = Machine::new(&s3, "links", "desk");
    let mut b = Machine::new(&s3, "links", "laptop");
    a.start(&mnt, &["--sync-interval", "3600"]);
    b.start(&mnt, &["--sync-interval", "3600"]);
    let m = mnt.display();
    let data = bytes(12, 300_000);
    a.app_write(&mnt.join("take/x.wav"), &data);
    a.sh_ok(&format!(
        "cd '{m}' && chmod 755 take/x.wav && ln -s take/x.wav latest.wav \
         && ln -s ../take/x.wav take/self.wav && ln -s /etc/hostname abs \
         && printf old > swap && ln -s x.wav take/dangling-later"
    ));
    a.sync();
    let v = b.sync();
    assert!(
        v["namespace"]["received_files"].as_u64().unwrap() >= 5,
        "B received the file and four links: {v}"
    );
    let readlink = |m: &Machine, p: &str| {
        String::from_utf8_lossy(&m.sh_ok(&format!("readlink '{}'", mnt.join(p).display())))
            .trim()
            .to_string()
    };
    assert_eq!(readlink(&b, "latest.wav"), "take/x.wav");
    assert_eq!(readlink(&b, "take/self.wav"), "../take/x.wav");
    assert_eq!(
        readlink(&b, "abs"),
        "/etc/hostname",
        "absolute kept verbatim"
    );
    assert_eq!(readlink(&b, "take/dangling-later"), "x.wav");
    assert_eq!(
        sha256_hex(&b.read(&mnt.join("latest.wav"))),
        sha256_hex(&data),
        "reading through B's link gives A's bytes"
    );
    let lstat = |m: &Machine, p: &str| {
        String::from_utf8_lossy(&m.sh_ok(&format!("stat -c '%F %a' '{}'", mnt.join(p).display())))
            .trim()
            .to_string()
    };
    assert_eq!(
        lstat(&b, "take/x.wav"),
        "regular file 755",
        "A's chmod arrived"
    );
    assert_eq!(lstat(&b, "latest.wav"), "symbolic link 777");

    // Later changes on A: chmod again, retarget a link, delete one, rename one, replace
    // a file by a link.
    a.sh_ok(&format!(
        "cd '{m}' && chmod 640 take/x.wav && ln -sfn take/y.wav latest.wav && rm abs \
         && mv take/self.wav take/me.wav && rm swap && ln -s take swap"
    ));
    a.sync();
    b.sync();
    assert_eq!(lstat(&b, "take/x.wav"), "regular file 640");
    assert_eq!(readlink(&b, "latest.wav"), "take/y.wav", "retarget arrived");
    let is_link = |m: &Machine, p: &str| {
        m.sh(&format!("test -L '{}'", mnt.join(p).display()))
            .status
            .success()
    };
    assert!(!is_link(&b, "abs"), "the deleted link is gone");
    assert_eq!(
        readlink(&b, "take/me.wav"),
        "../take/x.wav",
        "rename arrived"
    );
    assert!(
        !is_link(&b, "take/self.wav"),
        "the old name of the renamed link is gone"
    );
    assert_eq!(readlink(&b, "swap"), "take", "a file replaced by a link");
    assert_eq!(
        String::from_utf8_lossy(&b.sh_ok(&format!("ls '{}'", mnt.join("swap/").display())))
            .split_whitespace()
            .collect::<Vec<_>>(),
        vec!["dangling-later", "me.wav", "x.wav"],
        "B's kernel follows the link into the folder"
    );

    // And back: a link made on B arrives on A, and nothing was left as a conflict.
    b.sh_ok(&format!("cd '{m}' && ln -s me.wav take/back"));
    b.sync();
    a.sync();
    assert_eq!(readlink(&a, "take/back"), "me.wav");
    assert!(conflict_copies(&a, &mnt).is_empty(), "no conflict copies");
    assert!(conflict_copies(&b, &mnt).is_empty(), "no conflict copies");
    a.stop();
    b.stop();
}

/// Names that tools trip over travel as they are, each its own file: the NFC and NFD
/// spellings of one word (two names on Linux, never merged), emoji, a name of exactly
/// 255 bytes (ASCII and two-byte letters), spaces, a newline, leading dashes, and a tree
/// 50 folders deep. A rename and a delete of one of the twin spellings leave the other
/// alone. (issue 13)
#[test]
fn odd_names_and_a_50_level_tree_travel_between_machines_unmerged() {
    let s3 = S3Server::start();
    let (_d, mnt) = shared_mountpoint();
    let mut a = Machine::new(&s3, "names", "desk");
    let mut b = Machine::new(&s3, "names", "laptop");
    a.start(&mnt, &["--sync-interval", "3600"]);
    b.start(&mnt, &["--sync-interval", "3600"]);
    let deep: String = (1..=50).map(|i| format!("d{i:02}/")).collect();
    let names: Vec<String> = vec![
        "caf\u{e9}.wav".into(),
        "cafe\u{301}.wav".into(),
        "\u{1f3b5} song \u{1f3a4}.wav".into(),
        format!("{}.wav", "n".repeat(251)),
        format!("{}x.wav", "\u{fc}".repeat(125)),
        "  two  spaces .wav".into(),
        "line\nbreak.wav".into(),
        "-rf.wav".into(),
        "--help".into(),
        "a:b\\c 'q' \"dq\".wav".into(),
        format!("{deep}deep.wav"),
    ];
    for n in &names {
        assert!(n.rsplit('/').next().unwrap().len() <= 255, "{n:?}");
    }
    let put = |m: &Machine, rel: &str, data: &[u8]| {
        let mut child = Command::new("nsenter")
            .args(["-t", &m.pid().to_string(), "-m", "--", "sh", "-c"])
            .arg("mkdir -p \"$(dirname \"$1\")\" && cat > \"$1\"")
            .arg("sh")
            .arg(mnt.join(rel))
            .stdin(Stdio::piped())
            .spawn()
            .unwrap();
        use std::io::Write;
        child.stdin.take().unwrap().write_all(data).unwrap();
        assert!(child.wait().unwrap().success(), "writing {rel:?}");
    };
    let tree = |m: &Machine| -> std::collections::BTreeMap<String, String> {
        // Every file below the mount with the SHA-256 of its bytes, NUL-separated so a
        // newline in a name cannot split it.
        let out = m.sh_ok(&format!(
            "cd '{}' && find . -type f -print0 | xargs -0 -r sha256sum -z --",
            mnt.display()
        ));
        out.split(|&c| c == 0)
            .filter(|l| !l.is_empty())
            .map(|l| {
                let l = String::from_utf8(l.to_vec()).unwrap();
                let (hash, path) = l.split_once("  ").unwrap();
                (path.trim_start_matches("./").to_string(), hash.to_string())
            })
            .collect()
    };
    let mut want = std::collections::BTreeMap::new();
    for (i, n) in names.iter().enumerate() {
        let data = bytes(40 + i as u64, 1000 + i * 37);
        put(&a, n, &data);
        want.insert(n.clone(), sha256_hex(&data));
    }
    assert_eq!(tree(&a), want, "A's own mount keeps every name apart");
    a.sync();
    b.sync();
    assert_eq!(
        tree(&b),
        want,
        "B has every name, byte for byte, none merged"
    );

    // B renames the NFD twin and deletes the NFC one: A follows, nothing else moves.
    let (nfc, nfd) = (&names[0], &names[1]);
    b.sh_ok(&format!(
        "cd '{}' && mv 'cafe\u{301}.wav' 'renamed cafe\u{301}.wav' && rm 'caf\u{e9}.wav'",
        mnt.display()
    ));
    let h = want.remove(nfd).unwrap();
    want.insert(format!("renamed {nfd}"), h);
    want.remove(nfc);
    b.sync();
    a.sync();
    assert_eq!(
        tree(&a),
        want,
        "the rename and the delete touched only their name"
    );
    assert!(conflict_copies(&a, &mnt).is_empty() && conflict_copies(&b, &mnt).is_empty());
    a.stop();
    b.stop();
}
