//! `songfs sync`, `songfs conflicts`. (Owned by the sync work; stub.)

use clap::Args;

#[derive(Args)]
pub struct SyncArgs {
    /// Machine-readable summary (the app's "Sync Now" button reads it).
    #[arg(long)]
    pub json: bool,
}

#[derive(Args)]
pub struct ConflictsArgs {
    #[arg(long)]
    pub json: bool,
}

pub fn run_sync(_a: SyncArgs) -> anyhow::Result<()> {
    anyhow::bail!("songfs sync is not built yet")
}
pub fn run_conflicts(_a: ConflictsArgs) -> anyhow::Result<()> {
    anyhow::bail!("songfs conflicts is not built yet")
}
