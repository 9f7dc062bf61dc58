//! `songfs sync --json` is a stream (doc/SYNC-JSON.md): read line by line while a new
//! device applies many change logs, progress arrives while the process still runs, the
//! summary in the app's words is the last line; a sync that cannot run ends with an
//! error line. The Python example of doc/ drives it from a worker thread.
//! Real v5 databases, a folder store.

mod sync_util;

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};

use sync_util::Device;

/// Change logs A leaves in the store for the new device to apply.
const LOGS: usize = 40;

fn songfs(d: &Device) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_songfs"));
    c.env("SONGFS_HOME", &d.home.root)
        .env("HOME", d.dir.path())
        .env_remove("RUST_LOG");
    c
}

/// A device A whose LOGS syncs each left one change log: every song's notes edited
/// (one per log) and a genre added in each.
fn busy_store() -> (tempfile::TempDir, Device) {
    let store = tempfile::tempdir().unwrap();
    let a = Device::new(sync_util::folder_store(store.path()), "laptop", true);
    a.sync();
    for i in 0..LOGS {
        a.exec(&format!(
            "UPDATE songs SET notes = 'edit {i}' WHERE id = {}; \
             INSERT INTO genres (name, prompt_template) VALUES ('Stream {i}', 'p')",
            i % 29 + 1
        ));
        a.sync();
    }
    (store, a)
}

fn parse(line: &str) -> serde_json::Value {
    let v: serde_json::Value = serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}"));
    assert_eq!(v["v"], 1, "schema version on every line: {line}");
    v
}

#[test]
fn progress_streams_while_the_sync_runs_and_the_summary_comes_last() {
    let (store, _a) = busy_store();
    let b = Device::new(sync_util::folder_store(store.path()), "desk", true);
    let mut child = songfs(&b)
        .args(["sync", "--json"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let out = BufReader::new(child.stdout.take().unwrap());
    let mut lines = Vec::new();
    let mut running_at_first_step = None;
    for line in out.lines() {
        let v = parse(&line.unwrap());
        if v["phase"] == "receive" && v["done"] == 1 && running_at_first_step.is_none() {
            // The first log applied of many: the process must still be running, or the
            // lines were held back until the end.
            running_at_first_step = Some(child.try_wait().unwrap().is_none());
        }
        lines.push(v);
    }
    let status = child.wait().unwrap();
    assert!(status.success(), "{status}");
    assert_eq!(
        running_at_first_step,
        Some(true),
        "progress arrived only after the sync ended: {lines:?}"
    );

    let phases: Vec<&str> = lines.iter().filter_map(|v| v["phase"].as_str()).collect();
    assert_eq!(phases[..2], ["files", "send"], "{phases:?}");
    let steps: Vec<(u64, u64)> = lines
        .iter()
        .filter(|v| v["phase"] == "receive")
        .map(|v| (v["done"].as_u64().unwrap(), v["total"].as_u64().unwrap()))
        .collect();
    let total = steps[0].1;
    // A's logs, some compacted into a snapshot: still many steps.
    assert!(total >= 5, "{total}");
    let want: Vec<(u64, u64)> = (0..=total).map(|i| (i, total)).collect();
    assert_eq!(
        steps, want,
        "0 first, one step per change log, up to the total"
    );

    let last = lines.last().unwrap();
    assert_eq!(last["type"], "summary", "{last}");
    assert_eq!(last["ok"], true);
    let songs = last["received"]["songs"]["updated"].as_u64().unwrap();
    assert!(songs >= 29, "every song was edited: {last}");
    assert_eq!(last["received"]["genres"]["new"], LOGS as u64, "{last}");
    let keys: Vec<&String> = last["received"].as_object().unwrap().keys().collect();
    assert!(
        keys.iter().all(|k| !k.contains('_')),
        "the app's words, not table names: {keys:?}"
    );
    let msg = last["message"].as_str().unwrap();
    assert!(
        msg.starts_with(&format!("{songs} songs updated"))
            && msg.contains(&format!(", {LOGS} new")),
        "{msg}"
    );
    assert_eq!(
        lines.iter().filter(|v| v["type"] == "summary").count(),
        1,
        "one summary"
    );
}

#[test]
fn a_sync_that_cannot_run_ends_with_an_error_line_and_exit_1() {
    // A machine not set up: no config.json in SONGFS_HOME.
    let home = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_songfs"))
        .args(["sync", "--json"])
        .env("SONGFS_HOME", home.path())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let text = String::from_utf8(out.stdout).unwrap();
    let last = parse(text.lines().last().expect("an error line"));
    assert_eq!(last["type"], "error", "{text}");
    assert!(
        last["message"].as_str().unwrap().contains("songfs init"),
        "says what to do: {last}"
    );
    assert!(
        text.lines().all(|l| parse(l)["type"] != "summary"),
        "{text}"
    );
}

fn python_example(d: &Device) -> std::process::Output {
    let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("doc/examples/sync_now.py");
    Command::new("python3")
        .arg(example)
        .env("SONGFS_BIN", env!("CARGO_BIN_EXE_songfs"))
        .env("SONGFS_HOME", &d.home.root)
        .env("HOME", d.dir.path())
        .env_remove("RUST_LOG")
        .output()
        .expect("python3 runs the example")
}

#[test]
fn the_python_example_shows_progress_and_the_summary() {
    let (store, _a) = busy_store();
    let b = Device::new(sync_util::folder_store(store.path()), "desk", true);
    let out = python_example(&b);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains("syncing: files"), "{text}");
    assert!(text.contains("syncing: receive 1/"), "{text}");
    assert!(
        text.contains("Synced: ") && text.contains(" songs updated"),
        "{text}"
    );
    assert!(text.contains(" updated, 0 new"), "{text}");
    // The sync really ran: B holds A's last edit.
    assert_eq!(
        b.count("SELECT COUNT(*) FROM genres WHERE name LIKE 'Stream %'"),
        LOGS as i64
    );

    // Nothing left: a second run says so and still exits 0.
    let again = python_example(&b);
    assert!(again.status.success());
    assert!(String::from_utf8_lossy(&again.stdout).contains("Synced: nothing new"));
}
