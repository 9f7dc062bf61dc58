//! Applying many remote entries without a disk flush for each.
//!
//! Every catalog change is its own transaction, and with `synchronous = FULL` each
//! commit waits for an fsync of the WAL. A new device's first sync of a 5,003-file
//! library made about 10,000 of them (an entry and its chunk root per file): 3.5-3.8 s
//! before the files showed, most of it in fsync. During a `Relaxed` span the catalog's
//! connection commits with `synchronous = NORMAL`: each commit is still atomic and in the
//! WAL file before it returns, so a kill -9 of the daemon loses nothing (the kernel holds
//! the written pages); only a power cut could take back the span's last commits.
//! `durable` then fsyncs the WAL once, which makes every commit of the span durable
//! together, and the caller records the batch as applied only after that, so after a
//! power cut the sync replays it (applying is idempotent) instead of believing it done.
//! FUSE operations that commit during the span get the same guarantee as the sync's, as
//! on ext4, where metadata reaches the disk with the next journal commit unless fsync'd.

use super::{Catalog, CatalogError, CatalogResult};

/// A span of relaxed commits; dropped without `durable` (an error on the way), the
/// connection goes back to `FULL` and nothing claims the span's commits are on disk.
pub struct Relaxed<'c> {
    catalog: &'c Catalog,
    back: bool,
}

impl Catalog {
    pub fn relax_commits(&self) -> CatalogResult<Relaxed<'_>> {
        self.set_synchronous("NORMAL")?;
        Ok(Relaxed {
            catalog: self,
            back: false,
        })
    }

    fn set_synchronous(&self, level: &str) -> CatalogResult<()> {
        let ix = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        ix.db.pragma_update(None, "synchronous", level)?;
        Ok(())
    }

    /// The WAL file of the catalog's database (SQLite's naming: the path plus `-wal`).
    fn wal_path(&self) -> Option<std::path::PathBuf> {
        let ix = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        ix.db
            .path()
            .filter(|p| !p.is_empty())
            .map(|p| format!("{p}-wal").into())
    }
}

impl Relaxed<'_> {
    /// Back to `FULL`, and every commit of the span on disk.
    pub fn durable(mut self) -> CatalogResult<()> {
        self.back = true;
        self.catalog.set_synchronous("FULL")?;
        let Some(wal) = self.catalog.wal_path() else {
            return Ok(()); // an in-memory database: nothing to flush
        };
        match std::fs::File::open(&wal) {
            Ok(f) => f
                .sync_all()
                .map_err(|e| CatalogError::Flush(wal.clone(), e)),
            // Checkpointed and removed meanwhile: its frames are in the database file,
            // which the checkpoint synced.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(CatalogError::Flush(wal, e)),
        }
    }
}

impl Drop for Relaxed<'_> {
    fn drop(&mut self) {
        if !self.back {
            if let Err(e) = self.catalog.set_synchronous("FULL") {
                tracing::warn!(error = %e, "cannot set the catalog's commits back to FULL");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::{Catalog, Kind, ROOT_INO};

    fn synchronous(c: &Catalog) -> i64 {
        let ix = c.inner.lock().unwrap();
        ix.db
            .query_row("PRAGMA synchronous", [], |r| r.get(0))
            .unwrap()
    }

    const NORMAL: i64 = 1;
    const FULL: i64 = 2;

    #[test]
    fn a_relaxed_span_commits_each_change_and_ends_back_at_full() {
        let d = tempfile::tempdir().unwrap();
        let db = d.path().join("mount.db");
        let c = Catalog::open(&db, 1000, 1000).unwrap();
        assert_eq!(synchronous(&c), FULL);
        let relaxed = c.relax_commits().unwrap();
        assert_eq!(synchronous(&c), NORMAL);
        c.create(
            ROOT_INO,
            "a.mp3",
            Kind::File,
            0o644,
            1,
            1,
            Some("aa"),
            false,
        )
        .unwrap();
        // Committed (not held in an open transaction): another connection sees it.
        let other = rusqlite::Connection::open(&db).unwrap();
        let seen: i64 = other
            .query_row(
                "SELECT count(*) FROM ns_inodes WHERE name = 'a.mp3'",
                [],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(seen, 1);
        relaxed.durable().unwrap();
        assert_eq!(synchronous(&c), FULL);
    }

    #[test]
    fn a_span_given_up_on_the_way_still_ends_back_at_full() {
        let d = tempfile::tempdir().unwrap();
        let c = Catalog::open(&d.path().join("mount.db"), 1000, 1000).unwrap();
        {
            let _relaxed = c.relax_commits().unwrap();
            assert_eq!(synchronous(&c), NORMAL);
        }
        assert_eq!(synchronous(&c), FULL);
    }
}
