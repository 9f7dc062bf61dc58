//! `songfs conflicts [--json]`: what the sync resolved on its own, newest first, and the
//! conflict copies waiting under `<mount>/.conflicts/` with the path that puts each back;
//! `songfs conflicts --restore COPY` (also spelled `songfs restore COPY`): a conflict
//! copy back to its original place.
//!
//! A restore is done through the running mount (two renames), so it syncs like any
//! rename. Must never lose a version: the one in the way becomes a conflict copy itself.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use clap::Args;

use super::ondisk::{OnDisk, OnDiskError};
use crate::config::{Config, Home};
use crate::daemon::control;
use crate::sync::conflicts::{self, ConflictRecord};
use crate::sync::namespace::{conflict_copy_path, CONFLICTS_DIR};

#[derive(Args)]
pub struct ConflictsArgs {
    /// Machine-readable list (file conflicts carry `copy_path`, the copy's full path).
    #[arg(long, conflicts_with = "restore")]
    pub json: bool,
    /// Put this conflict copy (a file under `<mount>/.conflicts/`) back in its place; the
    /// version there now is kept as a conflict copy. Needs the mount running.
    #[arg(long, value_name = "COPY")]
    pub restore: Option<PathBuf>,
}

#[derive(Args)]
pub struct RestoreArgs {
    /// A conflict copy under `<mount>/.conflicts/`.
    pub copy: PathBuf,
}

pub fn run(a: ConflictsArgs) -> anyhow::Result<()> {
    match a.restore {
        Some(copy) => restore(&copy),
        None => list(a.json),
    }
}

/// `songfs restore COPY`: the same as `songfs conflicts --restore COPY`.
pub fn run_restore(a: RestoreArgs) -> anyhow::Result<()> {
    restore(&a.copy)
}

/// The conflict copies in this device's namespace (paths relative to the mount root).
fn copies_here(home: &Home) -> BTreeSet<String> {
    let found = OnDisk::load(home).and_then(|d| d.files_under(CONFLICTS_DIR));
    match found {
        Ok(files) => files.into_iter().map(|f| f.path).collect(),
        Err(OnDiskError::NotFound(_) | OnDiskError::NoState(_)) => BTreeSet::new(),
        Err(e) => {
            tracing::warn!(error = %e, "cannot list the conflict copies");
            BTreeSet::new()
        }
    }
}

/// The copy a file conflict record kept (relative to the mount root).
fn copy_of(r: &ConflictRecord) -> Option<&str> {
    (r.kind == "file")
        .then(|| r.lost.get("copy").and_then(|c| c.as_str()))
        .flatten()
}

fn list(json: bool) -> anyhow::Result<()> {
    let home = Home::from_env();
    let cfg = Config::load(&home)?;
    let path = cfg.conflicts_log_path();
    let (records, skipped) = conflicts::read_newest_first(&path)
        .with_context(|| format!("cannot read {}", path.display()))?;
    if skipped > 0 {
        tracing::warn!(skipped, path = %path.display(), "lines that are not conflict records were skipped");
    }
    // `songfs status` counts the conflicts logged since they were last looked at here.
    mark_conflicts_seen(&home, records.len());
    let mount = super::files::mount_point(&home, &cfg).ok();
    let shown = |rel: &str| match &mount {
        Some(m) => m.join(rel),
        None => PathBuf::from(rel),
    };
    let copies = copies_here(&home);
    if json {
        let out: Vec<serde_json::Value> = records
            .iter()
            .map(|r| {
                let mut v = serde_json::to_value(r).expect("a record encodes");
                if let (Some(c), Some(o)) = (copy_of(r), v.as_object_mut()) {
                    o.insert("copy_path".into(), serde_json::json!(shown(c)));
                    o.insert("copy_present".into(), copies.contains(c).into());
                }
                v
            })
            .collect();
        println!("{}", serde_json::to_string(&out)?);
        return Ok(());
    }
    if records.is_empty() && copies.is_empty() {
        println!("No conflicts.");
        return Ok(());
    }
    for r in &records {
        let col = r
            .column
            .as_deref()
            .map(|c| format!(".{c}"))
            .unwrap_or_default();
        let by = |d: &Option<String>| {
            d.as_ref()
                .map(|d| format!(" (from {d})"))
                .unwrap_or_default()
        };
        let (kept, lost) = if r.kind == "file" {
            (version(&r.kept), version(&r.lost))
        } else {
            (r.kept.to_string(), r.lost.to_string())
        };
        println!(
            "{}  {:<9} {}/{}{}  kept {}{}  lost {}{}\n    {}",
            r.at,
            r.kind,
            r.table,
            r.row,
            col,
            kept,
            by(&r.kept_by),
            lost,
            by(&r.lost_by),
            r.why
        );
        if let Some(c) = copy_of(r) {
            if copies.contains(c) {
                println!("    conflict copy: {}", shown(c).display());
            } else {
                println!(
                    "    conflict copy: {} (no longer there: restored or removed)",
                    shown(c).display()
                );
            }
        }
    }
    if !copies.is_empty() {
        if !records.is_empty() {
            println!();
        }
        println!(
            "{} conflict cop{} waiting; put one back with `songfs conflicts --restore PATH`:",
            copies.len(),
            if copies.len() == 1 { "y" } else { "ies" }
        );
        for c in &copies {
            println!("  {}", shown(c).display());
        }
        if mount.is_none() {
            println!("  (paths relative to the mount root: this device has never mounted)");
        }
    }
    Ok(())
}

/// A file version of a conflict record, short: "1.2 MiB, sha256 0a1b2c3d4e5f" or "deleted".
fn version(v: &serde_json::Value) -> String {
    match (
        v.get("size").and_then(|s| s.as_u64()),
        v.get("hash").and_then(|h| h.as_str()),
    ) {
        (Some(size), Some(hash)) => format!(
            "{}, sha256 {}",
            indicatif::HumanBytes(size),
            &hash[..hash.len().min(12)]
        ),
        _ if v.is_null() => "deleted".into(),
        _ => v.to_string(),
    }
}

/// The conflict copy goes back to its original place; the version there now becomes a
/// conflict copy itself (nothing is lost). Done through the mount, so it syncs like any
/// rename.
fn restore(copy: &Path) -> anyhow::Result<()> {
    let home = Home::from_env();
    let cfg = Config::load(&home)?;
    let mount = super::files::mount_point(&home, &cfg)?;
    if crate::daemon::running_pid(&home).is_none() {
        bail!(
            "no songfs mount is running for {}: a restore renames files in the mount; run `songfs mount {}` first",
            home.root.display(),
            mount.display()
        );
    }
    let rel = control::relative_to_mount(copy, &mount).map_err(anyhow::Error::msg)?;
    let original = original_of(&rel).with_context(|| {
        format!(
            "{} is not a conflict copy (those are under {}/{CONFLICTS_DIR}/ and named \"<name> (from <device> <date>).<ext>\"; `songfs conflicts` lists them)",
            copy.display(),
            mount.display()
        )
    })?;
    let copy_abs = mount.join(&rel);
    let orig_abs = mount.join(&original);
    if !copy_abs.is_file() {
        bail!(
            "{} does not exist (`songfs conflicts` lists the copies there are)",
            copy_abs.display()
        );
    }
    if orig_abs.exists() {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0);
        // A free name: never over another copy (the one being restored may carry the
        // same second in its name).
        let base = conflict_copy_path(&original, &cfg.device_name, now);
        let mut keep = mount.join(&base);
        let mut i = 2;
        while keep.exists() || keep == copy_abs {
            keep = mount.join(match base.rsplit_once('.') {
                Some((stem, ext)) if !stem.ends_with(CONFLICTS_DIR) => format!("{stem} {i}.{ext}"),
                _ => format!("{base} {i}"),
            });
            i += 1;
        }
        if let Some(d) = keep.parent() {
            std::fs::create_dir_all(d).with_context(|| format!("cannot create {}", d.display()))?;
        }
        std::fs::rename(&orig_abs, &keep).with_context(|| {
            format!(
                "cannot move {} aside to {}",
                orig_abs.display(),
                keep.display()
            )
        })?;
        println!("kept the current version as {}", keep.display());
    } else if let Some(d) = orig_abs.parent() {
        std::fs::create_dir_all(d).with_context(|| format!("cannot create {}", d.display()))?;
    }
    std::fs::rename(&copy_abs, &orig_abs).with_context(|| {
        format!(
            "cannot move {} to {}",
            copy_abs.display(),
            orig_abs.display()
        )
    })?;
    println!("restored {}", orig_abs.display());
    Ok(())
}

fn conflicts_seen_path(home: &Home) -> PathBuf {
    home.root.join("conflicts-seen")
}

/// Remembers how many conflict records `songfs conflicts` has shown.
pub fn mark_conflicts_seen(home: &Home, n: usize) {
    if let Err(e) = std::fs::write(conflicts_seen_path(home), n.to_string()) {
        tracing::warn!(error = %e, "cannot remember which conflicts were looked at");
    }
}

/// How many conflict records `songfs conflicts` has shown so far.
pub fn conflicts_seen(home: &Home) -> usize {
    std::fs::read_to_string(conflicts_seen_path(home))
        .ok()
        .and_then(|t| t.trim().parse().ok())
        .unwrap_or(0)
}

/// `.conflicts/a/b (from dev 2026-01-01 10-00-00).mp3` → `a/b.mp3`.
pub fn original_of(rel: &str) -> Option<String> {
    let inner = rel.strip_prefix(&format!("{CONFLICTS_DIR}/"))?;
    let (dir, file) = match inner.rsplit_once('/') {
        Some((d, f)) => (Some(d), f),
        None => (None, inner),
    };
    let at = file.rfind(" (from ")?;
    let close = at + file[at..].find(')')?;
    let mut rest = &file[close + 1..];
    // A second copy of the same version is "<name> (from …) 2.<ext>".
    if let Some(r) = rest.strip_prefix(' ') {
        let digits = r.bytes().take_while(u8::is_ascii_digit).count();
        if digits > 0 && (r.len() == digits || r.as_bytes()[digits] == b'.') {
            rest = &r[digits..];
        }
    }
    let name = format!("{}{rest}", &file[..at]);
    Some(match dir {
        Some(d) => format!("{d}/{name}"),
        None => name,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conflict_copies_name_their_original() {
        let c = conflict_copy_path("2026-02-12_song/song_v1.mp3", "laptop", 1_700_000_000_000);
        assert_eq!(
            original_of(&c).as_deref(),
            Some("2026-02-12_song/song_v1.mp3")
        );
        let c = conflict_copy_path("README", "laptop", 0);
        assert_eq!(original_of(&c).as_deref(), Some("README"));
        assert_eq!(
            original_of(".conflicts/a (from x 2026-01-01 00-00-00) 2.wav").as_deref(),
            Some("a.wav")
        );
        let c = conflict_copy_path("track 2.mp3", "x", 0);
        assert_eq!(original_of(&c).as_deref(), Some("track 2.mp3"));
        assert_eq!(original_of("a/b.mp3"), None);
    }

    #[test]
    fn file_versions_read_short() {
        let v = serde_json::json!({"hash": "0a1b2c3d4e5f6a7b", "size": 2048, "copy": "x"});
        assert_eq!(version(&v), "2.00 KiB, sha256 0a1b2c3d4e5f");
        assert_eq!(version(&serde_json::Value::Null), "deleted");
    }
}
