//! Room to free room: a few MiB kept in a file beside state.db, given up when the disk is
//! so full that SQLite cannot write the change that would free space (an `rm` or `rmdir`
//! through the mount; without this it fails with EIO exactly when the user needs it). The
//! reserve is made again once there is room. Only removals may use it: a write that fills
//! the disk must fail as it does today.

use std::io::Write;
use std::path::{Path, PathBuf};

/// Enough for many removals' WAL pages.
const RESERVE_BYTES: usize = 4 << 20;

pub(super) struct Reserve {
    path: PathBuf,
}

impl Reserve {
    /// The reserve beside `state_db`, made now if there is room.
    pub(super) fn beside(state_db: &Path) -> Reserve {
        let r = Reserve {
            path: state_db.with_file_name("space-reserve"),
        };
        r.refill();
        r
    }

    /// Makes the reserve if it is missing and the disk has room (quietly not, if not).
    pub(super) fn refill(&self) {
        if std::fs::metadata(&self.path).is_ok_and(|m| m.len() == RESERVE_BYTES as u64) {
            return;
        }
        // Real bytes, not a sparse file: the filesystem allocates (or refuses) them at
        // write time, so the room exists once this succeeds.
        let made = std::fs::File::create(&self.path)
            .and_then(|mut f| f.write_all(&vec![0u8; RESERVE_BYTES]));
        if made.is_err() {
            let _ = std::fs::remove_file(&self.path);
        }
    }

    /// Gives the reserve up; true if there was one to give.
    pub(super) fn release(&self) -> bool {
        let freed = std::fs::remove_file(&self.path).is_ok();
        if freed {
            tracing::warn!(
                path = %self.path.display(),
                "the disk holding songfs's state is full: the space reserve was used so a \
                 removal could go through; free space on that disk"
            );
        }
        freed
    }
}

/// True for SQLite's "database or disk is full".
pub(super) fn is_disk_full(e: &super::CatalogError) -> bool {
    matches!(
        e,
        super::CatalogError::Db(rusqlite::Error::SqliteFailure(f, _))
            if f.code == rusqlite::ErrorCode::DiskFull
    )
}
