//! The command line: one file per group of subcommands; this file parses, sets up
//! logging and turns errors into one clear line on stderr and a non-zero exit code.

pub mod conflicts;
pub mod files;
pub mod folder;
pub mod generate;
pub mod import;
pub mod init;
pub mod init_secrets;
pub mod login;
pub mod mount;
pub mod ondisk;
pub mod passphrase;
pub mod status;
pub mod sync;
pub mod sync_json;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "songfs", version, about = "Song Factory on several computers")]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand)]
pub enum Command {
    /// Set up this device: the store, a device id, optionally the app database.
    Init(init::InitArgs),
    /// Mount the audio library (returns once mounted; --foreground to stay attached).
    Mount(mount::MountArgs),
    /// Unmount a songfs mount (finishes pending work first).
    Unmount(mount::UnmountArgs),
    /// Device, store, cache, uploads, last sync.
    Status(status::StatusArgs),
    /// One sync cycle of the app database (and the namespace).
    Sync(sync::SyncArgs),
    /// Conflicts the sync resolved and the copies kept under .conflicts/ (--restore COPY).
    ///
    /// Newest first; a file conflict names its conflict copy by its full path, and every
    /// copy still waiting under <mount>/.conflicts/ is listed. `--restore COPY` puts one
    /// back in its place; the version there now is kept as a conflict copy.
    Conflicts(conflicts::ConflictsArgs),
    /// Copy an existing audio folder into the mount and point the database at it.
    Import(import::ImportArgs),
    /// Keep files (or whole folders) on this machine: download them now, never evict.
    Pin(files::PathsArgs),
    /// Stop keeping files on this machine (they stay cached until space is needed).
    Unpin(files::PathsArgs),
    /// Free the local copy of uploaded files (they download again when read).
    Evict(files::PathsArgs),
    /// The same as `songfs conflicts --restore COPY`.
    ///
    /// Puts a conflict copy (under <mount>/.conflicts/) back in its place; the version
    /// there now is kept as a conflict copy.
    Restore(conflicts::RestoreArgs),
    /// The passphrase of an encrypted store: `change` it, or `enter` the one another device set.
    Passphrase(passphrase::PassphraseArgs),
    /// Sign in to Google Drive or Dropbox in the browser (--list: where songfs is signed in).
    Login(login::LoginArgs),
    /// Forget the sign-in to a provider on this machine.
    Logout(login::LogoutArgs),
    /// Print shell completions (e.g. `songfs completions bash > /etc/bash_completion.d/songfs`).
    Completions(generate::CompletionsArgs),
    /// Write the man pages (songfs.1, songfs-mount.1, ...) into a directory.
    #[command(hide = true)]
    Man(generate::ManArgs),
}

/// Exit codes: 0 success, 1 failure, 2 bad usage (clap's).
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging();
    let result = match cli.command {
        Command::Init(a) => init::run(a),
        Command::Mount(a) => mount::run_mount(a),
        Command::Unmount(a) => mount::run_unmount(a),
        Command::Status(a) => status::run_status(a),
        Command::Sync(a) => sync::run_sync(a),
        Command::Conflicts(a) => conflicts::run(a),
        Command::Import(a) => import::run(a),
        Command::Pin(a) => files::run_pin(a),
        Command::Unpin(a) => files::run_unpin(a),
        Command::Evict(a) => files::run_evict(a),
        Command::Restore(a) => conflicts::run_restore(a),
        Command::Passphrase(a) => passphrase::run(a),
        Command::Login(a) => login::run_login(a),
        Command::Logout(a) => login::run_logout(a),
        Command::Completions(a) => generate::run_completions(a),
        Command::Man(a) => generate::run_man(a),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("songfs: {}", error_line(&e));
            ExitCode::FAILURE
        }
    }
}

/// The error and its causes on one line: "what failed: why".
pub fn error_line(e: &anyhow::Error) -> String {
    let mut parts: Vec<String> = Vec::new();
    for cause in e.chain() {
        let s = cause.to_string();
        if !parts.iter().any(|p| p.contains(&s)) {
            parts.push(s);
        }
    }
    parts.join(": ")
}

/// Diagnostics go to stderr, filtered by RUST_LOG (default: warnings).
pub fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
}

/// A tokio runtime for one command.
pub fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?)
}
