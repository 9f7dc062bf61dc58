//! Chunk roots by blob hash (`BlobInfo::chunk_root`): what binds a blob's chunk-hash
//! record (`<blob>.chunks` in the store) to the name that points at the blob. Written
//! where the chunk hashes are known for sure (a file committed here, an entry received
//! from another device, which carries the root beside the hash); read before a record
//! fetched from the store is trusted and when this device exports an entry.
//! Must never be filled from a record fetched from the store (that would trust what it
//! is meant to check).

use rusqlite::{params, OptionalExtension};

use super::node::CatalogResult;
use super::Catalog;

pub(super) const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS ns_chunk_roots(
    hash TEXT PRIMARY KEY,
    root TEXT NOT NULL
);
";

impl Catalog {
    /// Records the chunk root of a blob. A blob hash has one true root, so the first
    /// recorded stays (a later different claim is the one that lies).
    pub fn set_chunk_root(&self, hash: &str, root: &str) -> CatalogResult<()> {
        self.inner
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .db
            .execute(
                "INSERT OR IGNORE INTO ns_chunk_roots(hash, root) VALUES (?1, ?2)",
                params![hash, root],
            )?;
        Ok(())
    }

    /// The chunk root recorded for a blob, if any (entries from before roots travelled
    /// have none).
    pub fn chunk_root(&self, hash: &str) -> CatalogResult<Option<String>> {
        Ok(self
            .inner
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .db
            .query_row(
                "SELECT root FROM ns_chunk_roots WHERE hash = ?1",
                params![hash],
                |r| r.get(0),
            )
            .optional()?)
    }
}
