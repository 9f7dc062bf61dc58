//! songfs: Song Factory on several computers.
//!
//! Layers only call downward: `fs` → `cache` → `store`; `sync` → `store`.
//! `daemon` wires them together for `songfs mount`; `cli` parses and dispatches.

pub mod cache;
pub mod catalog;
pub mod cli;
pub mod config;
pub mod content;
pub mod daemon;
pub mod fs;
pub mod import;
pub mod store;
pub mod secrets;
pub mod sync;
pub mod uploader;
