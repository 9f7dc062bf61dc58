//! Decides once whether this build has the FUSE mount: the `fuse` cfg, set for Linux
//! targets (the same targets `Cargo.toml` pulls `fuser` for). macOS (macFUSE is a kernel
//! extension that fuser supports only in name) and Windows get everything else: stores,
//! cache, sync, folder mode.

fn main() {
    println!("cargo::rustc-check-cfg=cfg(fuse)");
    if std::env::var("CARGO_CFG_TARGET_OS").as_deref() == Ok("linux") {
        println!("cargo::rustc-cfg=fuse");
    }
    println!("cargo::rerun-if-changed=build.rs");
}
