//! Folder mode, the driverless sibling of `fs/` (`songfs mount --folder DIR`, for macOS,
//! Windows and Linux without FUSE): a plain folder kept in step with the catalog, which
//! the same namespace sync keeps in step with the other devices. The daemon
//! (`daemon/folder.rs`) runs the same store, cache, uploader and sync loop as the mount;
//! only this front end differs.
//!
//! `scan.rs` looks at the folder, `settle.rs` decides when a file the app writes is
//! complete, `manifest.rs` remembers what the folder held at the last pass (so a local
//! edit is told from a remote one), `place.rs` puts a downloaded file under its real name
//! atomically, `spelling.rs` says which local file stands for which store path (names
//! another OS cannot hold, case and normalisation twins), `reconcile.rs` is one pass both
//! ways, `watch.rs` decides when passes run.
//!
//! Must never: leave a half file under a real name, take a file still being written, or
//! overwrite a file changed here that the catalog has not taken yet.

pub mod manifest;
pub mod place;
pub mod reconcile;
pub mod scan;
pub mod settle;
pub mod spelling;
pub mod watch;
