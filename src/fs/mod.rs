//! The mount: a FUSE filesystem over the namespace (`catalog`) and the blob cache.
//!
//! `filesystem.rs` holds the namespace operations and the handles, `read.rs` the read
//! path, `nodes.rs` symlinks, hard links and special files,
//! `write.rs` the write path (staging, commit), `staging.rs` one file's uncommitted bytes, `fuse.rs` the thin
//! fuser shim, `error.rs` the one error type at the boundary. Layers call downward only:
//! fs → catalog and cache; never the store directly.

pub mod error;
pub mod filesystem;
pub mod fuse;
pub mod fuse_types;
pub mod fusermount;
pub mod nodes;
pub mod passthrough;
pub mod read;
pub mod staging;
pub mod statfs;
pub mod write;
pub mod xattr;

pub use error::{FsError, FsResult};
pub use filesystem::{FsOptions, SongFs};
pub use fuse::FuseAdapter;

#[cfg(test)]
mod tests;
