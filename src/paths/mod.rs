//! Paths on every OS, as pure functions (no file system, no host OS assumed: the style
//! is a parameter, so Linux CI tests the Windows and macOS rules).
//!
//! - `library.rs`: a database path inside the library travels relative, with `/`, and
//!   becomes a native path under the receiving machine's library root
//!   (`C:\Users\ana\SongFactory\audio\...`, `/Users/ana/SongFactory/audio/...`).
//! - `names.rs`: file names another OS cannot hold (Windows: `:`, `?`, trailing dots,
//!   `CON`...) get a reversible local spelling, and names that differ only by case or
//!   Unicode normalisation (macOS, Windows) get distinct local names; no file is lost.
//!   The rule is doc/PATHS.md.
//!
//! Must never: touch the disk, or map two store names to one local name.

pub mod library;
pub mod names;

/// How a machine spells paths.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Style {
    /// Linux: `/`-separated, case- and normalisation-sensitive names.
    Linux,
    /// macOS (APFS default): `/`-separated; names equal when they differ only by case or
    /// Unicode normalisation (é as one code point or e + accent).
    MacOs,
    /// Windows (NTFS): `\` (or `/`) separated, drive letters, case-insensitive, and
    /// characters and names it cannot hold.
    Windows,
}

impl Style {
    /// This machine's style.
    pub const HOST: Style = if cfg!(windows) {
        Style::Windows
    } else if cfg!(target_os = "macos") {
        Style::MacOs
    } else {
        Style::Linux
    };

    pub fn separator(self) -> char {
        match self {
            Style::Windows => '\\',
            _ => '/',
        }
    }

    /// Names that this style's file system treats as one (case, normalisation).
    pub fn folds_names(self) -> bool {
        self != Style::Linux
    }
}
