//! `songfs completions SHELL` and `songfs man DIR`: shell completions and man pages
//! generated from the command-line definition itself (clap_complete, clap_mangen), so
//! they never drift from the real options. The Debian package ships both
//! (scripts/package-deb).
//!
//! Must never: write anywhere but stdout (completions) or the directory it is given.

use std::path::PathBuf;

use anyhow::Context;
use clap::{Args, CommandFactory};
use clap_complete::Shell;

#[derive(Args)]
pub struct CompletionsArgs {
    /// bash, zsh, fish, elvish or powershell.
    pub shell: Shell,
}

#[derive(Args)]
pub struct ManArgs {
    /// Directory to write songfs.1 and one page per subcommand (songfs-mount.1, ...) into.
    pub dir: PathBuf,
}

pub fn run_completions(a: CompletionsArgs) -> anyhow::Result<()> {
    let mut cmd = super::Cli::command();
    clap_complete::generate(a.shell, &mut cmd, "songfs", &mut std::io::stdout());
    Ok(())
}

pub fn run_man(a: ManArgs) -> anyhow::Result<()> {
    std::fs::create_dir_all(&a.dir)
        .with_context(|| format!("cannot create {}", a.dir.display()))?;
    clap_mangen::generate_to(super::Cli::command(), &a.dir)
        .with_context(|| format!("cannot write the man pages into {}", a.dir.display()))?;
    Ok(())
}
