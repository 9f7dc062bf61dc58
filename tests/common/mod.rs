//! Shared helpers for integration tests (`mod common;` in a test file).
//!
//! `s3server` runs a real S3 server; this file finds the `songfs` binary and makes
//! throwaway state folders. Helpers here never touch anything outside temp dirs.
#![allow(dead_code)] // each test file uses a different subset

pub mod cloudfake;
pub mod contract;
pub mod faultproxy;
pub mod mount;
pub mod s3server;
pub mod webdav;

use std::path::PathBuf;
use std::process::Command;

/// The `songfs` binary cargo built for this test run, or the one `SONGFS_TEST_BIN` names:
/// to run a test against another build (showing a regression test fails on an old one).
pub fn songfs_bin() -> PathBuf {
    std::env::var_os("SONGFS_TEST_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_songfs")))
}

/// A fresh, empty SONGFS_HOME (removed when the value is dropped).
pub fn temp_home() -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix("songfs-home-")
        .tempdir()
        .expect("temp SONGFS_HOME")
}

/// `songfs` with SONGFS_HOME set to `home` and logs limited to warnings.
pub fn songfs(home: &std::path::Path) -> Command {
    let mut cmd = Command::new(songfs_bin());
    cmd.env("SONGFS_HOME", home).env("RUST_LOG", "warn");
    cmd
}

/// Starts `cmd` with `input` on its stdin (`--password-stdin`), stdout and stderr
/// captured: wait for it with `wait_with_output`.
pub fn spawn_fed(cmd: &mut Command, input: &str) -> std::process::Child {
    use std::io::Write;
    use std::process::Stdio;
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    // Dropped at the end of the statement: the child sees end of input.
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.as_bytes())
        .unwrap();
    child
}

/// Runs `cmd` with `input` on its stdin; its output, whatever its exit status.
pub fn run_fed(cmd: &mut Command, input: &str) -> std::process::Output {
    spawn_fed(cmd, input).wait_with_output().unwrap()
}

/// Every file under `root` (recursively), for the tests that grep for secrets.
pub fn files_under(root: &std::path::Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in entries.flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else {
                out.push(p);
            }
        }
    }
    out
}
