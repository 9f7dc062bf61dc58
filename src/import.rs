//! Adopting an existing library (`songfs import`): copy an old audio folder, and the
//! app's cover art and CD files, into the mount with ordinary file copies (so the
//! filesystem hashes, caches and uploads them), then point every database value that
//! named an old file at its copy, in one transaction, and `download_dir` at the mount.
//!
//! Order of work: scan the old folders → copy each file (temp name, fsync, re-hash the
//! source to catch a file changed during the copy, rename, read the copy back and
//! compare hashes) → rewrite the database. A file is "verified" when the mount holds
//! exactly its bytes (copied now, or found identical from an earlier run); only
//! verified files get their database values rewritten. Re-running continues where an
//! interrupted run stopped and a finished import changes nothing.
//!
//! Never: delete or modify an old file, overwrite a different file already in the mount,
//! or rewrite a value whose file was not verified identical.

use std::collections::HashSet;
use std::io::{Read, Write};
use std::path::{Component, Path, PathBuf};
use std::time::Duration;

use rusqlite::{Connection, OptionalExtension, TransactionBehavior};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// Every column of the app's database (schema v5) that holds a file path (one list for
/// import and sync).
pub use crate::sync::schema::PATH_COLUMNS;

/// Where the app's own files go inside the mount.
pub const APP_DIR_IN_MOUNT: &str = ".songfactory";

/// Suffix of the temporary name a file is copied under before its rename.
const TEMP_SUFFIX: &str = ".songfs-import";

#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    #[error("{0} does not exist: give the folder that holds your old audio files (the app's download_dir, by default ~/Music/SongFactory)")]
    SourceMissing(PathBuf),
    #[error("{0} is not a folder: give the folder that holds your old audio files")]
    SourceNotDir(PathBuf),
    #[error("{source_dir} and the mount {mount} overlap: import from a folder outside the mount")]
    Overlap { source_dir: PathBuf, mount: PathBuf },
    #[error("the database {path} stayed locked for more than {secs} s (Song Factory is writing to it): try again, or close the app first")]
    DbLocked { path: PathBuf, secs: u64 },
    #[error("the database {path}: {source}")]
    Db {
        path: PathBuf,
        #[source]
        source: rusqlite::Error,
    },
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> ImportError + '_ {
    move |source| ImportError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// One old folder and where its files go in the mount.
#[derive(Debug, Clone, Serialize)]
pub struct Root {
    /// The old folder, absolute (as the database spells it).
    pub source: PathBuf,
    /// The same folder with symlinks resolved, when that differs (the database may use
    /// either spelling).
    #[serde(skip)]
    pub source_alias: Option<PathBuf>,
    /// Where its files go, inside the mount.
    pub target: PathBuf,
    /// Put before the first component of every relative path (`<device>_12.png`), for
    /// files whose names carry this machine's row ids.
    pub prefix: Option<String>,
}

impl Root {
    pub fn new(source: &Path, target: &Path, prefix: Option<String>) -> Root {
        let alias = std::fs::canonicalize(source).ok().filter(|c| c != source);
        Root {
            source: source.to_path_buf(),
            source_alias: alias,
            target: target.to_path_buf(),
            prefix,
        }
    }

    /// The path under this root's source that `old` names, relative, if any.
    fn relative<'a>(&self, old: &'a Path) -> Option<&'a Path> {
        let rel = old.strip_prefix(&self.source).ok().or_else(|| {
            self.source_alias
                .as_ref()
                .and_then(|a| old.strip_prefix(a).ok())
        })?;
        // Only plain names below the root: "a/../../etc" must not map anywhere.
        let plain = rel.components().all(|c| matches!(c, Component::Normal(_)));
        (plain && !rel.as_os_str().is_empty()).then_some(rel)
    }

    /// Where the file `old` (under this root's source) goes in the mount.
    pub fn map(&self, old: &Path) -> Option<PathBuf> {
        let rel = self.relative(old)?;
        Some(self.target.join(self.prefixed(rel)))
    }

    fn prefixed(&self, rel: &Path) -> PathBuf {
        let Some(prefix) = &self.prefix else {
            return rel.to_path_buf();
        };
        let mut parts = rel.components();
        let first = parts
            .next()
            .map(|c| c.as_os_str().to_string_lossy().into_owned());
        let mut out = PathBuf::from(format!("{prefix}_{}", first.unwrap_or_default()));
        let rest = parts.as_path();
        if !rest.as_os_str().is_empty() {
            out.push(rest);
        }
        out
    }
}

/// The roots of a usual import: the audio folder into the mount's top, and the app's
/// `cover_art/` and `cd_projects/` (those that exist) into `<mount>/.songfactory/`, their
/// names prefixed with `device_tag` so no machine's `12.png` replaces another's.
pub fn default_roots(
    audio: &Path,
    app_dir: Option<&Path>,
    mount: &Path,
    device_tag: &str,
) -> Vec<Root> {
    let mut roots = vec![Root::new(audio, mount, None)];
    if let Some(app) = app_dir {
        for sub in ["cover_art", "cd_projects"] {
            let dir = app.join(sub);
            if dir.is_dir() {
                let target = mount.join(APP_DIR_IN_MOUNT).join(sub);
                roots.push(Root::new(&dir, &target, Some(device_tag.to_string())));
            }
        }
    }
    roots
}

/// A name for this device safe inside a file name: `<name>-<first 8 of its id>` (the
/// name for people, the id so two devices both called "laptop" still differ).
pub fn device_tag(device_name: &str, device_id: &str) -> String {
    let name: String = device_name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' {
                c
            } else {
                '-'
            }
        })
        .collect();
    let id: String = device_id.chars().take(8).collect();
    format!("{}-{id}", name.trim_matches('-'))
}

/// One file to adopt.
#[derive(Debug, Clone)]
pub struct FileJob {
    pub source: PathBuf,
    pub dest: PathBuf,
    pub size: u64,
}

/// What happened to one file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Copied now and read back identical.
    Copied,
    /// The mount already holds the same bytes at this path.
    Identical,
    /// Dry run: would be copied.
    WouldCopy,
    /// Not adopted; the reason says why and what to do.
    Problem(String),
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct FileProblem {
    pub source: PathBuf,
    pub dest: PathBuf,
    pub reason: String,
}

/// Every regular file under the roots (symlinked files followed, symlinked folders not),
/// with where it goes. Files matching `local_only` (the app's database backups) are
/// returned apart: they stay where they are.
pub fn scan(
    roots: &[Root],
    local_only: &[glob::Pattern],
) -> Result<(Vec<FileJob>, Vec<PathBuf>), ImportError> {
    let mut jobs = Vec::new();
    let mut kept = Vec::new();
    for root in roots {
        scan_dir(root, &root.source, local_only, &mut jobs, &mut kept)?;
    }
    Ok((jobs, kept))
}

/// Name order, depth first: the copy order (and the progress) is predictable.
fn scan_dir(
    root: &Root,
    dir: &Path,
    local_only: &[glob::Pattern],
    jobs: &mut Vec<FileJob>,
    kept: &mut Vec<PathBuf>,
) -> Result<(), ImportError> {
    let mut entries: Vec<_> = std::fs::read_dir(dir)
        .map_err(io_err(dir))?
        .collect::<Result<_, _>>()
        .map_err(io_err(dir))?;
    entries.sort_by_key(|e| e.file_name());
    for entry in entries {
        let path = entry.path();
        let name = entry.file_name().to_string_lossy().into_owned();
        let ft = entry.file_type().map_err(io_err(&path))?;
        if ft.is_dir() {
            scan_dir(root, &path, local_only, jobs, kept)?;
            continue;
        }
        let meta = match std::fs::metadata(&path) {
            Ok(m) if m.is_file() => m,
            Ok(_) => {
                tracing::info!(path = %path.display(), "not a regular file; skipped");
                continue;
            }
            Err(e) => {
                tracing::warn!(path = %path.display(), error = %e, "dangling link; skipped");
                continue;
            }
        };
        if name.ends_with(TEMP_SUFFIX) {
            continue;
        }
        if local_only.iter().any(|p| p.matches(&name)) {
            kept.push(path);
            continue;
        }
        let Some(dest) = root.map(&path) else {
            continue;
        };
        jobs.push(FileJob {
            source: path,
            dest,
            size: meta.len(),
        });
    }
    Ok(())
}

/// SHA-256 of a file's bytes, hex (the whole-file hash only: no chunk hashes needed here).
fn hash_path(path: &Path) -> std::io::Result<String> {
    let mut h = Sha256::new();
    crate::content::read_blocks(path, |block| h.update(block))?;
    Ok(hex::encode(h.finalize()))
}

fn temp_path(dest: &Path) -> PathBuf {
    let name = dest.file_name().unwrap_or_default().to_string_lossy();
    dest.with_file_name(format!(".{name}{TEMP_SUFFIX}"))
}

/// Size and modification time: a cheap "did the source change" check besides the hash.
fn stamp(m: &std::fs::Metadata) -> (u64, Option<std::time::SystemTime>) {
    (m.len(), m.modified().ok())
}

/// Adopts one file. `Err` only for what stops the whole import (an I/O error on the
/// mount); a file that cannot be adopted is an `Outcome::Problem`. `progress` gets the
/// number of source bytes read for the copy.
pub fn import_file(
    job: &FileJob,
    dry_run: bool,
    progress: &dyn Fn(u64),
) -> Result<Outcome, ImportError> {
    let src = &job.source;
    let dest = &job.dest;
    match std::fs::symlink_metadata(dest) {
        Ok(m) => {
            if !m.is_file() {
                return Ok(Outcome::Problem(format!(
                    "{} is already in the mount and is not a file: move it away and import again",
                    dest.display()
                )));
            }
            let src_hash = hash_path(src).map_err(io_err(src))?;
            if m.len() == job.size && hash_path(dest).map_err(io_err(dest))? == src_hash {
                progress(job.size);
                return Ok(Outcome::Identical);
            }
            return Ok(Outcome::Problem(format!(
                "a different file is already in the mount at {}: it was left alone and this file not copied (rename one of them and import again)",
                dest.display()
            )));
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(io_err(dest)(e)),
    }
    if dry_run {
        progress(job.size);
        return Ok(Outcome::WouldCopy);
    }
    let parent = dest.parent().unwrap_or(Path::new("/"));
    std::fs::create_dir_all(parent).map_err(io_err(parent))?;
    let before = std::fs::metadata(src).map_err(io_err(src))?;
    let tmp = temp_path(dest);
    let copied_hash = match copy_hashing(src, &tmp, progress) {
        Ok(h) => h,
        Err(e) => {
            let _ = std::fs::remove_file(&tmp);
            return Err(e);
        }
    };
    // A file the app (or anything) wrote while we read it: the copy may be a mix of old
    // and new bytes. Drop it; the next run copies the finished file.
    let after = std::fs::metadata(src).map_err(io_err(src))?;
    let again = hash_path(src).map_err(io_err(src))?;
    if stamp(&before) != stamp(&after) || again != copied_hash {
        let _ = std::fs::remove_file(&tmp);
        return Ok(Outcome::Problem(format!(
            "{} changed while it was being copied: not imported; run `songfs import` again once nothing writes to it",
            src.display()
        )));
    }
    if let Ok(mtime) = before.modified() {
        // Keep the old date (file browsers sort by it); the mount may not store it.
        if let Err(e) = std::fs::File::options()
            .write(true)
            .open(&tmp)
            .and_then(|f| f.set_modified(mtime))
        {
            tracing::debug!(path = %tmp.display(), error = %e, "could not keep the modification time");
        }
    }
    if dest.exists() {
        // Something else created the file during our copy: never replace it.
        let _ = std::fs::remove_file(&tmp);
        return Ok(Outcome::Problem(format!(
            "{} appeared in the mount during the copy: left alone; import again to compare",
            dest.display()
        )));
    }
    std::fs::rename(&tmp, dest).map_err(io_err(dest))?;
    let read_back = hash_path(dest).map_err(io_err(dest))?;
    if read_back != copied_hash {
        return Ok(Outcome::Problem(format!(
            "{} reads back different from {} after the copy: its database values were not changed; check the mount's log",
            dest.display(),
            src.display()
        )));
    }
    Ok(Outcome::Copied)
}

/// Copies `src` to a new file `tmp`, hashing what it read, and fsyncs the copy.
fn copy_hashing(src: &Path, tmp: &Path, progress: &dyn Fn(u64)) -> Result<String, ImportError> {
    let mut input = std::fs::File::open(src).map_err(io_err(src))?;
    let mut out = std::fs::File::create(tmp).map_err(io_err(tmp))?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = input.read(&mut buf).map_err(io_err(src))?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
        out.write_all(&buf[..n]).map_err(io_err(tmp))?;
        progress(n as u64);
    }
    out.sync_all().map_err(io_err(tmp))?;
    Ok(hex::encode(h.finalize()))
}

/// How the database paths map: through the roots, but only to files the mount is known
/// to hold identically.
pub struct PathMap<'a> {
    pub roots: &'a [Root],
    /// Destination paths that hold exactly their source's bytes (or will, in a dry run).
    pub verified: HashSet<PathBuf>,
}

/// What a database value means to the import.
#[derive(Debug, PartialEq, Eq)]
pub enum Lookup {
    /// Not inside any old folder: left alone.
    Outside,
    /// Its file was adopted: the new value.
    Mapped(PathBuf),
    /// Inside an old folder, but no such file there.
    Missing,
    /// The file exists but was not adopted (a problem listed with the files).
    NotImported,
}

impl PathMap<'_> {
    pub fn lookup(&self, value: &str) -> Lookup {
        let old = Path::new(value);
        for root in self.roots {
            let Some(dest) = root.map(old) else { continue };
            if self.verified.contains(&dest) {
                return Lookup::Mapped(dest);
            }
            return if old.is_file() {
                Lookup::NotImported
            } else {
                Lookup::Missing
            };
        }
        Lookup::Outside
    }
}

/// One database value that changes.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct DbChange {
    pub table: String,
    pub column: String,
    /// The row's id (for `config`, the key's row is named by `column`).
    pub id: i64,
    pub old: String,
    pub new: String,
}

/// One database value that named an old file but is left as it is.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct DbSkip {
    pub table: String,
    pub column: String,
    pub id: i64,
    pub path: String,
    /// `missing` (no such file) or `not imported` (see the file problems).
    pub reason: String,
}

#[derive(Debug, Default, Serialize)]
pub struct DbReport {
    pub changes: Vec<DbChange>,
    pub skipped: Vec<DbSkip>,
    /// `config.download_dir` before, when it changes (None: it was unset).
    pub download_dir_was: Option<Option<String>>,
}

/// Opens the app database for the rewrite: waits up to `busy` for the app's writers.
pub fn open_db(path: &Path, busy: Duration) -> Result<Connection, ImportError> {
    let db_err = |source| ImportError::Db {
        path: path.to_path_buf(),
        source,
    };
    if !path.is_file() {
        return Err(ImportError::Io {
            path: path.to_path_buf(),
            source: std::io::Error::new(
                std::io::ErrorKind::NotFound,
                "no such database: pass --db with the path of songfactory.db",
            ),
        });
    }
    let conn = Connection::open_with_flags(path, rusqlite::OpenFlags::SQLITE_OPEN_READ_WRITE)
        .map_err(db_err)?;
    conn.busy_timeout(busy).map_err(db_err)?;
    Ok(conn)
}

fn is_busy(e: &rusqlite::Error) -> bool {
    matches!(
        e.sqlite_error_code(),
        Some(rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked)
    )
}

/// Rewrites every path column through `map` and sets `download_dir` to `mount`, in one
/// transaction taken for writing up front (so the values read are the values replaced).
/// With `dry_run` the transaction is rolled back: the report says what would change.
pub fn rewrite_db(
    conn: &mut Connection,
    db_path: &Path,
    busy: Duration,
    map: &PathMap,
    mount: &Path,
    dry_run: bool,
) -> Result<DbReport, ImportError> {
    let db_err = |source: rusqlite::Error| {
        if is_busy(&source) {
            ImportError::DbLocked {
                path: db_path.to_path_buf(),
                secs: busy.as_secs(),
            }
        } else {
            ImportError::Db {
                path: db_path.to_path_buf(),
                source,
            }
        }
    };
    let behavior = if dry_run {
        TransactionBehavior::Deferred
    } else {
        TransactionBehavior::Immediate
    };
    let tx = conn.transaction_with_behavior(behavior).map_err(db_err)?;
    let mut report = DbReport::default();
    for (table, column) in PATH_COLUMNS {
        if !has_column(&tx, table, column).map_err(db_err)? {
            tracing::warn!(
                table,
                column,
                "column not in this database (another schema version?); skipped"
            );
            continue;
        }
        let rows: Vec<(i64, String)> = {
            let mut stmt = tx
                .prepare(&format!(
                    "SELECT id, {column} FROM {table} WHERE {column} IS NOT NULL AND {column} != '' ORDER BY id"
                ))
                .map_err(db_err)?;
            let rows = stmt
                .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
                .map_err(db_err)?
                .collect::<Result<_, _>>()
                .map_err(db_err)?;
            rows
        };
        for (id, value) in rows {
            let skip = |reason: &str| DbSkip {
                table: table.to_string(),
                column: column.to_string(),
                id,
                path: value.clone(),
                reason: reason.into(),
            };
            match map.lookup(&value) {
                Lookup::Outside => {}
                Lookup::Missing => report.skipped.push(skip("missing")),
                Lookup::NotImported => report.skipped.push(skip("not imported")),
                Lookup::Mapped(new) => {
                    let new = new.to_string_lossy().into_owned();
                    if new == value {
                        continue;
                    }
                    tx.execute(
                        &format!(
                            "UPDATE {table} SET {column} = ?1 WHERE id = ?2 AND {column} = ?3"
                        ),
                        rusqlite::params![new, id, value],
                    )
                    .map_err(db_err)?;
                    report.changes.push(DbChange {
                        table: table.to_string(),
                        column: column.to_string(),
                        id,
                        old: value.clone(),
                        new,
                    });
                }
            }
        }
    }
    let mount_s = mount.to_string_lossy().into_owned();
    let was: Option<String> = tx
        .query_row(
            "SELECT value FROM config WHERE key = 'download_dir'",
            [],
            |r| r.get(0),
        )
        .optional()
        .map_err(db_err)?
        .flatten();
    if was.as_deref() != Some(mount_s.as_str()) {
        tx.execute(
            "INSERT INTO config (key, value) VALUES ('download_dir', ?1)
             ON CONFLICT(key) DO UPDATE SET value = excluded.value",
            [&mount_s],
        )
        .map_err(db_err)?;
        report.download_dir_was = Some(was);
    }
    if dry_run {
        tx.rollback().map_err(db_err)?;
    } else {
        tx.commit().map_err(db_err)?;
    }
    Ok(report)
}

fn has_column(conn: &Connection, table: &str, column: &str) -> rusqlite::Result<bool> {
    let mut stmt = conn.prepare(&format!("PRAGMA table_info({table})"))?;
    let names = stmt
        .query_map([], |r| r.get::<_, String>(1))?
        .collect::<Result<Vec<_>, _>>()?;
    Ok(names.iter().any(|n| n == column))
}

/// What to import and from where.
pub struct Options {
    pub roots: Vec<Root>,
    /// The mount's root (becomes `download_dir`).
    pub mount: PathBuf,
    pub db: PathBuf,
    pub dry_run: bool,
    pub busy_timeout: Duration,
    /// File names that stay where they are (the app's database backups).
    pub local_only: Vec<glob::Pattern>,
}

/// What an import did (or, dry, would do). `--json` prints it whole; a program (or a
/// test) reads it back as it is.
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct Summary {
    pub dry_run: bool,
    pub mount: PathBuf,
    pub files_copied: u64,
    pub files_identical: u64,
    pub bytes_copied: u64,
    /// Dry run: the files that would be copied (source → destination).
    pub would_copy: Vec<(PathBuf, PathBuf)>,
    pub files_kept_local: Vec<PathBuf>,
    pub problems: Vec<FileProblem>,
    pub db_values_rewritten: u64,
    pub db_changes: Vec<DbChange>,
    pub db_skipped: Vec<DbSkip>,
    pub download_dir_set: bool,
    /// The old folders; nothing in them was changed or removed.
    pub old_folders_left_in_place: Vec<PathBuf>,
}

/// Called with (bytes done so far, total bytes).
pub type Progress<'a> = &'a dyn Fn(u64, u64);

/// Checks the folders, adopts every file, rewrites the database.
pub fn run(opts: &Options, progress: Progress) -> Result<Summary, ImportError> {
    for root in &opts.roots {
        check_source(&root.source, &opts.mount)?;
    }
    let (jobs, kept) = scan(&opts.roots, &opts.local_only)?;
    let total: u64 = jobs.iter().map(|j| j.size).sum();
    let done = std::cell::Cell::new(0u64);
    let tick = |n: u64| {
        done.set(done.get() + n);
        progress(done.get(), total);
    };
    let mut s = Summary {
        dry_run: opts.dry_run,
        mount: opts.mount.clone(),
        files_kept_local: kept,
        old_folders_left_in_place: opts.roots.iter().map(|r| r.source.clone()).collect(),
        ..Summary::default()
    };
    let mut verified = HashSet::new();
    for job in &jobs {
        let start = done.get();
        let outcome = import_file(job, opts.dry_run, &tick)?;
        // Re-reads of the source count once.
        done.set(start + job.size);
        progress(done.get(), total);
        tracing::debug!(source = %job.source.display(), ?outcome, "file");
        match outcome {
            Outcome::Copied => {
                s.files_copied += 1;
                s.bytes_copied += job.size;
                verified.insert(job.dest.clone());
            }
            Outcome::Identical => {
                s.files_identical += 1;
                verified.insert(job.dest.clone());
            }
            Outcome::WouldCopy => {
                s.would_copy.push((job.source.clone(), job.dest.clone()));
                verified.insert(job.dest.clone());
            }
            Outcome::Problem(reason) => {
                tracing::warn!(source = %job.source.display(), %reason, "not imported");
                s.problems.push(FileProblem {
                    source: job.source.clone(),
                    dest: job.dest.clone(),
                    reason,
                });
            }
        }
    }
    let map = PathMap {
        roots: &opts.roots,
        verified,
    };
    let mut conn = open_db(&opts.db, opts.busy_timeout)?;
    let report = rewrite_db(
        &mut conn,
        &opts.db,
        opts.busy_timeout,
        &map,
        &opts.mount,
        opts.dry_run,
    )?;
    s.db_values_rewritten = report.changes.len() as u64;
    s.db_changes = report.changes;
    s.db_skipped = report.skipped;
    s.download_dir_set = report.download_dir_was.is_some();
    Ok(s)
}

/// The old folder exists, is a folder, and neither holds the mount nor lies inside it.
pub fn check_source(source: &Path, mount: &Path) -> Result<(), ImportError> {
    let meta = match std::fs::metadata(source) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(ImportError::SourceMissing(source.to_path_buf()))
        }
        Err(e) => return Err(io_err(source)(e)),
    };
    if !meta.is_dir() {
        return Err(ImportError::SourceNotDir(source.to_path_buf()));
    }
    let canon = std::fs::canonicalize(source).map_err(io_err(source))?;
    let mount_c = std::fs::canonicalize(mount).unwrap_or_else(|_| mount.to_path_buf());
    if canon.starts_with(&mount_c) || mount_c.starts_with(&canon) {
        return Err(ImportError::Overlap {
            source_dir: source.to_path_buf(),
            mount: mount.to_path_buf(),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const SCHEMA: &str = include_str!("../tests/fixtures/songfactory-v5.sql");

    #[test]
    fn map_keeps_relative_paths_and_prefixes_app_files() {
        let audio = Root::new(Path::new("/home/u/Music/SF"), Path::new("/mnt/a"), None);
        assert_eq!(
            audio.map(Path::new("/home/u/Music/SF/2026-02-12_x/x_v1.mp3")),
            Some(PathBuf::from("/mnt/a/2026-02-12_x/x_v1.mp3"))
        );
        // Component-wise: a sibling folder with a longer name is not inside.
        assert_eq!(audio.map(Path::new("/home/u/Music/SF2/x.mp3")), None);
        assert_eq!(audio.map(Path::new("/home/u/Music/SF")), None);
        assert_eq!(audio.map(Path::new("/home/u/Music/SF/../etc/passwd")), None);
        let cd = Root::new(
            Path::new("/home/u/.songfactory/cd_projects"),
            Path::new("/mnt/a/.songfactory/cd_projects"),
            Some("laptop-1234abcd".into()),
        );
        assert_eq!(
            cd.map(Path::new("/home/u/.songfactory/cd_projects/3/wav/01.wav")),
            Some(PathBuf::from(
                "/mnt/a/.songfactory/cd_projects/laptop-1234abcd_3/wav/01.wav"
            ))
        );
    }

    #[test]
    fn app_file_directly_under_its_root_gets_the_prefix() {
        let art = Root::new(
            Path::new("/h/.songfactory/cover_art"),
            Path::new("/m/.songfactory/cover_art"),
            Some("pc-00000000".into()),
        );
        let got = art
            .map(Path::new("/h/.songfactory/cover_art/12.png"))
            .unwrap();
        assert_eq!(
            got.as_os_str(),
            "/m/.songfactory/cover_art/pc-00000000_12.png"
        );
    }

    #[test]
    fn device_tag_is_file_name_safe_and_unique_per_id() {
        assert_eq!(
            device_tag("my laptop/2", "0123456789abcdef"),
            "my-laptop-2-01234567"
        );
        assert_ne!(device_tag("a", "11111111ff"), device_tag("a", "22222222ff"));
    }

    /// A v5 database with paths in every path column; the transaction rewrites exactly
    /// the verified ones, reports the missing one, and a dry run changes nothing.
    #[test]
    fn rewrite_changes_only_verified_paths_in_one_transaction() {
        let dir = tempfile::tempdir().unwrap();
        let old = dir.path().join("old");
        let mount = dir.path().join("mnt");
        std::fs::create_dir_all(old.join("s")).unwrap();
        std::fs::write(old.join("s/a.mp3"), b"a").unwrap();
        std::fs::write(old.join("s/unverified.mp3"), b"u").unwrap();
        let db = dir.path().join("songfactory.db");
        let conn = Connection::open(&db).unwrap();
        conn.execute_batch(SCHEMA).unwrap();
        let o = |n: &str| old.join(n).to_string_lossy().into_owned();
        conn.execute(
            "INSERT INTO songs (title, prompt, lyrics, file_path_1, file_path_2, file_path_vocals)
             VALUES ('t', 'p', 'l', ?1, ?2, '/elsewhere/x.mp3')",
            [o("s/a.mp3"), o("s/gone.mp3")],
        )
        .unwrap();
        conn.execute(
            "INSERT INTO cd_projects (name, cover_art_path) VALUES ('cd', ?1)",
            [o("s/unverified.mp3")],
        )
        .unwrap();
        conn.execute(
            "INSERT INTO cd_tracks (project_id, track_number, title, source_path, wav_path) VALUES (1, 1, 't', ?1, ?1)",
            [o("s/a.mp3")],
        )
        .unwrap();
        drop(conn);

        let roots = vec![Root::new(&old, &mount, None)];
        let map = PathMap {
            roots: &roots,
            verified: [mount.join("s/a.mp3")].into_iter().collect(),
        };
        let busy = Duration::from_secs(1);
        let snapshot = |c: &Connection| -> Vec<Option<String>> {
            c.query_row(
                "SELECT s.file_path_1, s.file_path_2, s.file_path_vocals, t.source_path, t.wav_path, p.cover_art_path,
                        (SELECT value FROM config WHERE key='download_dir')
                 FROM songs s, cd_tracks t, cd_projects p",
                [],
                |r| (0..7).map(|i| r.get(i)).collect(),
            )
            .unwrap()
        };
        let mut c = open_db(&db, busy).unwrap();
        let before = snapshot(&c);
        let dry = rewrite_db(&mut c, &db, busy, &map, &mount, true).unwrap();
        assert_eq!(dry.changes.len(), 3);
        assert_eq!(snapshot(&c), before, "a dry run changed the database");

        let r = rewrite_db(&mut c, &db, busy, &map, &mount, false).unwrap();
        assert_eq!(r.changes, dry.changes);
        let new_a = Some(mount.join("s/a.mp3").to_string_lossy().into_owned());
        assert_eq!(
            snapshot(&c),
            vec![
                new_a.clone(),
                Some(o("s/gone.mp3")),
                Some("/elsewhere/x.mp3".into()),
                new_a.clone(),
                new_a,
                Some(o("s/unverified.mp3")),
                Some(mount.to_string_lossy().into_owned()),
            ]
        );
        let reasons: Vec<(&str, &str)> = r
            .skipped
            .iter()
            .map(|s| (s.column.as_str(), s.reason.as_str()))
            .collect();
        assert_eq!(
            reasons,
            vec![
                ("file_path_2", "missing"),
                ("cover_art_path", "not imported")
            ]
        );
        assert_eq!(r.download_dir_was, Some(None));

        let again = rewrite_db(&mut c, &db, busy, &map, &mount, false).unwrap();
        assert!(again.changes.is_empty() && again.download_dir_was.is_none());
    }

    /// While another connection holds the write lock longer than the busy timeout, the
    /// rewrite fails with a "locked" error and changes nothing.
    #[test]
    fn locked_database_is_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("songfactory.db");
        let app = Connection::open(&db).unwrap();
        app.execute_batch(SCHEMA).unwrap();
        app.execute_batch("BEGIN IMMEDIATE; INSERT INTO config VALUES ('x', 'y');")
            .unwrap();
        let roots = vec![];
        let map = PathMap {
            roots: &roots,
            verified: HashSet::new(),
        };
        let busy = Duration::from_millis(200);
        let mut c = open_db(&db, busy).unwrap();
        let err = rewrite_db(&mut c, &db, busy, &map, dir.path(), false).unwrap_err();
        assert!(matches!(err, ImportError::DbLocked { .. }), "{err}");
        app.execute_batch("ROLLBACK").unwrap();
    }
}
