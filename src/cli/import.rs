//! `songfs import OLD_FOLDER [--mount DIR] [--db PATH] [--dry-run] [--json]`: adopts an
//! existing library into the mount (see `crate::import`), with a progress bar on a
//! terminal and a summary at the end. It refuses to run unless the mount is live, so
//! files never land in the empty folder under it.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context};
use clap::Args;

use crate::config::{home_dir, Config, Home};
use crate::import::{self, Options, Summary};

/// How long the rewrite waits for the app's writers before giving up.
const BUSY_TIMEOUT: Duration = Duration::from_secs(15);

#[derive(Args)]
pub struct ImportArgs {
    /// The old audio folder (the app's download_dir, by default ~/Music/SongFactory).
    pub source: PathBuf,
    /// The songfs mount to copy into (default: where `songfs mount` last mounted).
    #[arg(long)]
    pub mount: Option<PathBuf>,
    /// The Song Factory database (default: the one given to `songfs init --db`, else
    /// ~/.songfactory/songfactory.db). Its folder's cover_art/ and cd_projects/ are
    /// adopted too.
    #[arg(long)]
    pub db: Option<PathBuf>,
    /// List what would be copied and which database values would change; change nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Machine-readable summary.
    #[arg(long)]
    pub json: bool,
}

pub fn run(a: ImportArgs) -> anyhow::Result<()> {
    let home = Home::from_env();
    let cfg = Config::load(&home)?;
    let mount = match a.mount.clone().or_else(|| cfg.mount_point.clone()) {
        Some(m) => absolute(&m)?,
        None => bail!("no mount known: pass --mount DIR (where `songfs mount` put the library)"),
    };
    if !super::mount::is_mounted(&mount) {
        bail!(
            "{} is not mounted: run `songfs mount {}` first, then import",
            mount.display(),
            mount.display()
        );
    }
    // Not canonicalized: the database may spell the old folder through a symlink; the
    // import matches both spellings.
    let source = if a.source.is_absolute() {
        a.source.clone()
    } else {
        std::env::current_dir()?.join(&a.source)
    };
    let db = match a.db.clone().or_else(|| cfg.db_path.clone()) {
        Some(d) => absolute(&d)?,
        None => home_dir().join(".songfactory").join("songfactory.db"),
    };
    if !db.is_file() {
        bail!(
            "the Song Factory database {} does not exist: pass --db with the path of songfactory.db",
            db.display()
        );
    }
    let tag = import::device_tag(&cfg.device_name, &cfg.device_id);
    let roots = import::default_roots(&source, db.parent(), &mount, &tag);
    let local_only = cfg
        .local_only_patterns
        .iter()
        .filter_map(|p| glob::Pattern::new(p).ok())
        .collect();
    let opts = Options {
        roots,
        mount,
        db,
        dry_run: a.dry_run,
        busy_timeout: BUSY_TIMEOUT,
        local_only,
    };

    let bar =
        indicatif::ProgressBar::with_draw_target(None, indicatif::ProgressDrawTarget::stderr());
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "{msg} [{bar:30}] {bytes}/{total_bytes} ({bytes_per_sec}, {eta})",
        )
        .expect("valid template")
        .progress_chars("=> "),
    );
    bar.set_message(if a.dry_run { "checking" } else { "importing" });
    let summary = import::run(&opts, &|done, total| {
        bar.set_length(total);
        bar.set_position(done);
    });
    bar.finish_and_clear();
    let summary = summary.context("import failed (nothing in the old folders was changed)")?;

    if a.json {
        println!("{}", serde_json::to_string(&summary)?);
    } else {
        print!("{}", human(&summary));
    }
    if !summary.problems.is_empty() {
        bail!(
            "{} file(s) could not be imported (listed above); their database values were left unchanged: fix what is said and run `songfs import` again",
            summary.problems.len()
        );
    }
    Ok(())
}

fn absolute(p: &Path) -> anyhow::Result<PathBuf> {
    let abs = if p.is_absolute() {
        p.to_path_buf()
    } else {
        std::env::current_dir()?.join(p)
    };
    // Resolve symlinks where it exists, so the mount check and the values written match.
    Ok(std::fs::canonicalize(&abs).unwrap_or(abs))
}

/// The summary for people.
pub fn human(s: &Summary) -> String {
    let mut out = String::new();
    let mut line = |l: String| {
        out.push_str(&l);
        out.push('\n');
    };
    if s.dry_run {
        line("Dry run: nothing was changed.".into());
        for (from, to) in &s.would_copy {
            line(format!(
                "  would copy {} -> {}",
                from.display(),
                to.display()
            ));
        }
        for c in &s.db_changes {
            line(format!(
                "  would set {}.{} (id {}): {} -> {}",
                c.table, c.column, c.id, c.old, c.new
            ));
        }
        if s.download_dir_set {
            line(format!("  would set download_dir to {}", s.mount.display()));
        }
        line(format!(
            "{} file(s) to copy, {} already identical in the mount, {} database value(s) to rewrite.",
            s.would_copy.len(),
            s.files_identical,
            s.db_values_rewritten
        ));
    } else {
        line(format!(
            "Copied {} file(s) ({}), {} already identical in the mount; rewrote {} database value(s).",
            s.files_copied,
            indicatif::HumanBytes(s.bytes_copied),
            s.files_identical,
            s.db_values_rewritten
        ));
        if s.download_dir_set {
            line(format!("download_dir now points at {}.", s.mount.display()));
        }
    }
    for p in &s.problems {
        line(format!(
            "  NOT imported: {}: {}",
            p.source.display(),
            p.reason
        ));
    }
    for k in &s.db_skipped {
        line(format!(
            "  left unchanged: {}.{} (id {}) = {} ({})",
            k.table,
            k.column,
            k.id,
            k.path,
            match k.reason.as_str() {
                "missing" => "missing: no such file in the old folder",
                _ => "not imported: see above",
            }
        ));
    }
    for f in &s.files_kept_local {
        line(format!(
            "  kept out of the mount (a local-only file, e.g. a database backup): {}",
            f.display()
        ));
    }
    if !s.dry_run {
        let dirs: Vec<String> = s
            .old_folders_left_in_place
            .iter()
            .map(|d| d.display().to_string())
            .collect();
        line(format!(
            "The old files were left in place ({}); delete them yourself once you are happy.",
            dirs.join(", ")
        ));
    }
    out
}
