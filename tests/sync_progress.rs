//! Progress of long work: a device catching up on the other devices' change logs reports
//! each one applied (library API), and `songfs sync` draws a bar from it on stderr only
//! when stderr is a terminal (a pseudo-terminal from util-linux `script` here), never in
//! piped or --json output; `songfs pin FOLDER` on a real mount draws one too. Devices use
//! the real v5 schema fixture and a folder store.

mod common;
mod sync_util;

use std::path::Path;
use std::process::{Command, Output};
use std::sync::{Arc, Mutex};

use songfs::sync::cycle::{self, Options};
use sync_util::{files_under, Device};

/// A makes edits `from..to`, syncing after each: one change log each.
fn edits(a: &Device, from: usize, to: usize) {
    for i in from..to {
        a.exec(&format!(
            "UPDATE songs SET notes = 'edit {i}' WHERE id = 1; \
             INSERT INTO genres (name, prompt_template) VALUES ('Progress {i}', 'p')"
        ));
        a.sync();
    }
}

/// `d` holds A's last `n` edits.
fn has_edits(d: &Device, n: usize) {
    assert_eq!(
        d.text("SELECT notes FROM songs WHERE id = 1").as_deref(),
        Some(format!("edit {}", n - 1).as_str())
    );
    assert_eq!(
        d.count("SELECT COUNT(*) FROM genres WHERE name LIKE 'Progress %'"),
        n as i64
    );
}

/// The change logs in the store, all of which a new device applies.
fn logs_in(store: &Path) -> usize {
    assert!(
        !store.join("snapshots").exists(),
        "no compaction expected at this size"
    );
    files_under(&store.join("logs")).len()
}

#[test]
fn catching_up_reports_each_remote_log() {
    let (store, a, b) = sync_util::pair();
    a.sync();
    edits(&a, 0, 4);
    let total = logs_in(store.path());
    assert!(total >= 5, "{total}");

    let calls = Arc::new(Mutex::new(Vec::new()));
    let seen = calls.clone();
    let progress = move |done: usize, total: usize| seen.lock().unwrap().push((done, total));
    let rt = tokio::runtime::Runtime::new().unwrap();
    let st = rt.block_on(songfs::store::open(&b.cfg.store)).unwrap();
    let sync = || {
        cycle::run_with_progress(
            &b.cfg,
            &b.home,
            st.clone(),
            rt.handle(),
            Options::default(),
            Some(&progress),
        )
        .unwrap()
    };
    let s = sync();
    assert!(s.errors.is_empty(), "{:?}", s.errors);
    assert_eq!(s.logs_applied, total);
    let got = calls.lock().unwrap().clone();
    let want: Vec<(usize, usize)> = (0..=total).map(|i| (i, total)).collect();
    assert_eq!(
        got, want,
        "0 first, then one step per log, ending at the total"
    );
    has_edits(&b, 4);

    // Nothing new: nothing reported (no bar for an ordinary cycle).
    calls.lock().unwrap().clear();
    sync();
    assert!(calls.lock().unwrap().is_empty());
}

/// `songfs ARGS` with this SONGFS_HOME and HOME on a pseudo-terminal: everything it
/// wrote, stdout and stderr mixed.
fn on_terminal_at(home: &Path, user_home: &Path, args: &str) -> Output {
    let cmd = format!("'{}' {args}", env!("CARGO_BIN_EXE_songfs"));
    let out = Command::new("script")
        .env("SONGFS_HOME", home)
        .env("HOME", user_home)
        .env_remove("RUST_LOG")
        .args(["-q", "-e", "-c", &cmd, "/dev/null"])
        .stdin(std::process::Stdio::null())
        .output()
        .expect("util-linux `script` runs a command on a pseudo-terminal: install util-linux");
    assert!(
        out.status.success(),
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn on_terminal(d: &Device, args: &str) -> Output {
    on_terminal_at(&d.home.root, d.dir.path(), args)
}

fn piped(d: &Device, args: &[&str]) -> Output {
    let out = Command::new(env!("CARGO_BIN_EXE_songfs"))
        .args(args)
        .env("SONGFS_HOME", &d.home.root)
        .env("HOME", d.dir.path())
        .env_remove("RUST_LOG")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

const BAR: &str = "applying other devices' changes";

#[test]
fn sync_draws_a_bar_on_a_terminal_only() {
    let store = tempfile::tempdir().unwrap();
    let a = Device::new(sync_util::folder_store(store.path()), "laptop", true);
    a.sync();
    edits(&a, 0, 3);

    // Piped: no bar anywhere, the summary alone on stdout.
    let b = Device::new(sync_util::folder_store(store.path()), "desk", true);
    let out = piped(&b, &["sync"]);
    let (so, se) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert!(
        so.starts_with("Synced: ") && so.lines().count() == 1,
        "{so}"
    );
    assert!(!so.contains(BAR) && !se.contains(BAR), "{so}\n{se}");

    // A new device on a terminal: the bar, counting A's and B's logs.
    let total = logs_in(store.path());
    let c = Device::new(sync_util::folder_store(store.path()), "studio", true);
    let out = on_terminal(&c, "sync");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains(BAR), "{text}");
    assert!(
        text.contains(&format!("/{total} change logs")),
        "the bar counts the {total} logs: {text}"
    );
    assert!(text.contains("Synced: "), "{text}");
    has_edits(&c, 3);

    // --json on a terminal: only the JSON lines, the summary last.
    edits(&a, 3, 6);
    let d = Device::new(sync_util::folder_store(store.path()), "spare", true);
    let out = on_terminal(&d, "sync --json");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(!text.contains(BAR), "{text}");
    let lines: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).expect("only JSON lines"))
        .collect();
    let v = lines.last().expect("a summary line");
    assert_eq!(v["type"], "summary", "{text}");
    assert!(
        v["logs_applied"].as_u64().unwrap() >= total as u64 + 3,
        "{v}"
    );
}

#[test]
fn pin_of_a_folder_draws_a_bar_on_a_terminal_only() {
    use common::mount::{bytes, run_ok, Mount};
    let m = Mount::new();
    let album = m.path("album");
    std::fs::create_dir(&album).unwrap();
    let sizes = [600_000, 700_000, 800_000];
    for (i, n) in sizes.iter().enumerate() {
        std::fs::write(album.join(format!("t{i}.mp3")), bytes(i as u64, *n)).unwrap();
    }
    assert!(m.wait_uploads(std::time::Duration::from_secs(30)));
    let total = indicatif::HumanBytes(sizes.iter().sum::<usize>() as u64).to_string();

    // Piped: the states on stdout, no bar on stderr.
    run_ok(m.songfs().arg("evict").arg(&album));
    let out = run_ok(m.songfs().env_remove("RUST_LOG").arg("pin").arg(&album));
    let (so, se) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert_eq!(
        so.lines().filter(|l| l.starts_with("pinned")).count(),
        3,
        "{so}"
    );
    assert!(!se.contains(&total) && !so.contains(&total), "{so}\n{se}");

    // On a terminal: a bar counting the folder's bytes.
    run_ok(m.songfs().arg("evict").arg(&album));
    let dir = m.root().join("user");
    std::fs::create_dir_all(&dir).unwrap();
    let out = on_terminal_at(&m.home, &dir, &format!("pin '{}'", album.display()));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains(&format!("/{total}")),
        "no bar over {total}: {text}"
    );
    assert_eq!(text.matches("pinned ").count(), 3, "{text}");
}
