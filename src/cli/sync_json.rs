//! `songfs sync --json`: a stream of JSON objects, one per line, for the app's "Sync Now"
//! button and background worker. Progress lines while the cycle runs, then exactly one
//! last line: the summary (or the error). The format, with its schema version, is
//! doc/SYNC-JSON.md; change it only together with that page and `SCHEMA_VERSION`.
//!
//! Must never: print anything else on stdout, print a line after the last one, or
//! hold a line back (each is flushed as it is written).

use std::collections::BTreeMap;
use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering};

use serde::Serialize;

use crate::daemon::sync_loop::{ns_line, CycleReport};
use crate::sync::cycle::Summary;
use crate::sync::namespace::NsSummary;
use crate::sync::words::{self, WordCounts};

/// Bumped when a field changes meaning or goes away (new fields may appear without it).
pub const SCHEMA_VERSION: u32 = 1;

/// What the cycle is doing.
#[derive(Debug, Clone, Copy, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Phase {
    /// The running mount runs the cycle; no detail until it ends.
    Mount,
    /// The file list (which files exist, renames, deletes) is synced.
    Files,
    /// This device's database edits are captured and sent.
    Send,
    /// The other devices' change logs are applied: `done` of `total` change logs.
    Receive,
}

#[derive(Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum Line<'a> {
    Progress {
        v: u32,
        phase: Phase,
        done: Option<usize>,
        total: Option<usize>,
    },
    Summary(&'a SummaryLine),
    Error {
        v: u32,
        message: &'a str,
    },
}

/// The last line of a sync that ran.
#[derive(Debug, Default, Serialize)]
pub struct SummaryLine {
    pub v: u32,
    /// False when something could not be synced (`errors` says what); the exit code is 1.
    pub ok: bool,
    /// "5 songs updated, 2 new, 1 conflict": what to show the user.
    pub message: String,
    /// Rows changed here by the other devices, by the app's word ("songs", "CD projects").
    pub received: BTreeMap<String, WordCounts>,
    /// This device's edits sent, by the app's word.
    pub sent: BTreeMap<String, WordCounts>,
    pub conflicts: usize,
    pub logs_sent: usize,
    pub logs_applied: usize,
    pub restore_accepted: bool,
    /// The file list's part (None when it did not run).
    pub namespace: Option<NsSummary>,
    pub errors: Vec<String>,
    /// Set when the running mount ran the cycle: its number and times.
    pub cycle_number: Option<u64>,
    pub started_at: Option<String>,
    pub finished_at: Option<String>,
}

impl SummaryLine {
    /// From a cycle run here: the file list's part (if it ran) and the database's.
    pub fn new(ns: Option<NsSummary>, db: Option<&Summary>) -> SummaryLine {
        let mut line = SummaryLine {
            v: SCHEMA_VERSION,
            ..SummaryLine::default()
        };
        if let Some(s) = db {
            line.message = words::message(s);
            line.received = words::by_word(&s.received);
            line.sent = words::by_word(&s.sent);
            line.conflicts = s.conflicts;
            line.logs_sent = s.logs_sent;
            line.logs_applied = s.logs_applied;
            line.restore_accepted = s.restore_accepted;
            line.errors.extend(s.errors.iter().cloned());
        }
        if let Some(n) = &ns {
            if db.is_none() {
                line.message = ns_line(n);
            }
            line.errors.extend(n.errors.iter().cloned());
        }
        line.namespace = ns;
        line.ok = line.errors.is_empty();
        line
    }

    /// From the running mount's cycle report.
    pub fn from_report(r: &CycleReport) -> SummaryLine {
        let db: Option<Summary> = r
            .database
            .as_ref()
            .and_then(|v| serde_json::from_value(v.clone()).ok());
        let mut line = SummaryLine::new(r.namespace.clone(), db.as_ref());
        if let Some(e) = &r.error {
            line.ok = false;
            if line.errors.is_empty() {
                line.errors.push(e.clone());
            }
        }
        if line.message.is_empty() {
            line.message = r.summary.clone();
        }
        line.cycle_number = Some(r.cycle_number);
        line.started_at = Some(r.started_at.clone());
        line.finished_at = Some(r.finished_at.clone());
        line
    }
}

/// Writes the stream to stdout.
#[derive(Default)]
pub struct JsonStream {
    ended: AtomicBool,
}

impl JsonStream {
    pub fn progress(&self, phase: Phase, done: Option<usize>, total: Option<usize>) {
        self.write(&Line::Progress {
            v: SCHEMA_VERSION,
            phase,
            done,
            total,
        });
    }

    /// The last line.
    pub fn summary(&self, s: &SummaryLine) {
        self.write(&Line::Summary(s));
        self.ended.store(true, Ordering::SeqCst);
    }

    /// The last line of a sync that failed, unless a summary already ended the stream.
    pub fn error(&self, message: &str) {
        if !self.ended.load(Ordering::SeqCst) {
            self.write(&Line::Error {
                v: SCHEMA_VERSION,
                message,
            });
            self.ended.store(true, Ordering::SeqCst);
        }
    }

    fn write(&self, line: &Line<'_>) {
        let mut text = serde_json::to_string(line).expect("encodes");
        text.push('\n');
        let mut out = std::io::stdout().lock();
        // The app may have stopped reading; the sync goes on regardless.
        let _ = out.write_all(text.as_bytes()).and_then(|_| out.flush());
    }
}
