//! `songfs mount`, `unmount`, `status`. (Owned by the mount work; stub.)

use clap::Args;
use std::path::PathBuf;

#[derive(Args)]
pub struct MountArgs {
    /// Where to mount, e.g. ~/SongFactory/audio.
    pub mountpoint: PathBuf,
    /// Stay attached to the terminal.
    #[arg(long)]
    pub foreground: bool,
}

#[derive(Args)]
pub struct UnmountArgs {
    pub mountpoint: PathBuf,
}

#[derive(Args)]
pub struct StatusArgs {
    /// Machine-readable output.
    #[arg(long)]
    pub json: bool,
}

pub fn run_mount(_a: MountArgs) -> anyhow::Result<()> {
    anyhow::bail!("songfs mount is not built yet")
}
pub fn run_unmount(_a: UnmountArgs) -> anyhow::Result<()> {
    anyhow::bail!("songfs unmount is not built yet")
}
pub fn run_status(_a: StatusArgs) -> anyhow::Result<()> {
    anyhow::bail!("songfs status is not built yet")
}
