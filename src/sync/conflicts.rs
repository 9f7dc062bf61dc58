//! The conflicts log: what the sync resolved on its own, with both versions, one JSON
//! object per line (`Config::conflicts_log_path()`, by default
//! `~/.songfactory/logs/sync_conflicts.log`).
//!
//! Must never lose a line already written (append only) or fail a sync because the log
//! cannot be written (that is logged as a warning instead).

use std::io::Write;
use std::path::Path;

use serde::{Deserialize, Serialize};

use super::merge::Value;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ConflictRecord {
    /// When this device resolved it (UTC, RFC 3339).
    pub at: String,
    /// `field` (two concurrent edits), `delete` (delete vs edit), `invariant` (a rule
    /// across rows restored), `reference` (a reference cleared), `unique` (a name clash).
    pub kind: String,
    pub table: String,
    /// The row's global id.
    pub row: String,
    /// The row's local id here, when it has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub local_id: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub column: Option<String>,
    pub kept: Value,
    pub lost: Value,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kept_by: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lost_by: Option<String>,
    pub why: String,
}

pub fn append(path: &Path, records: &[ConflictRecord]) {
    if records.is_empty() {
        return;
    }
    let result = (|| -> std::io::Result<()> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)?;
        let mut buf = Vec::new();
        for r in records {
            serde_json::to_writer(&mut buf, r)?;
            buf.push(b'\n');
        }
        f.write_all(&buf)
    })();
    if let Err(e) = result {
        tracing::warn!(path = %path.display(), error = %e, "cannot write the conflicts log");
    }
}

/// Every record, newest first. Lines that are not records are skipped (and counted).
pub fn read_newest_first(path: &Path) -> std::io::Result<(Vec<ConflictRecord>, usize)> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok((Vec::new(), 0)),
        Err(e) => return Err(e),
    };
    let mut out = Vec::new();
    let mut skipped = 0;
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        match serde_json::from_str(line) {
            Ok(r) => out.push(r),
            Err(_) => skipped += 1,
        }
    }
    out.reverse();
    Ok((out, skipped))
}
