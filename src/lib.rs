//! songfs: Song Factory on several computers.
//!
//! Layers only call downward: `fs` → `cache` → `store`; `sync` → `store`.
//! `daemon` wires them together for `songfs mount` (FUSE, or `folder` mode: a plain
//! folder kept in step, no driver); `cli` parses and dispatches.
//! `fs` (the FUSE mount) exists only where build.rs sets the `fuse` cfg (Linux); `os`
//! holds what differs between operating systems.

pub mod cache;
pub mod catalog;
pub mod cli;
pub mod config;
pub mod content;
pub mod crypt;
pub mod daemon;
pub mod db;
pub mod folder;
#[cfg(fuse)]
pub mod fs;
pub mod import;
pub mod os;
pub mod paths;
pub mod secrets;
pub mod store;
pub mod sync;
pub mod uploader;
