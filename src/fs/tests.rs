//! The filesystem logic without FUSE: a real cache and uploader over a folder store in
//! a temp dir, driven through `SongFs` the way the shim drives it.

use std::sync::Arc;
use std::time::Duration;

use super::filesystem::{FsOptions, SetAttr, SongFs, EMPTY_HASH};
use crate::cache::Cache;
use crate::catalog::{Catalog, RenameMode, ROOT_INO};
use crate::content::hash_bytes;
use crate::store::local::LocalStore;
use crate::store::ObjectStore;
use crate::uploader::Uploader;

struct World {
    fs: SongFs,
    cache: Arc<Cache>,
    uploader: Uploader,
    dir: tempfile::TempDir,
}

fn world() -> World {
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn ObjectStore> = Arc::new(LocalStore::new(dir.path().join("store")));
    let db = dir.path().join("state.db");
    let cache = Cache::open(
        &dir.path().join("cache"),
        &db,
        64 << 20,
        store.clone(),
        Duration::from_secs(2),
    )
    .unwrap();
    let uploader = Uploader::start(cache.clone(), store);
    let fs = start_fs(dir.path(), &cache);
    World {
        fs,
        cache,
        uploader,
        dir,
    }
}

/// A `SongFs` over the namespace and cache in `dir`, as a daemon start opens it.
fn start_fs(dir: &std::path::Path, cache: &Arc<Cache>) -> SongFs {
    let catalog = Arc::new(Catalog::open(&dir.join("state.db"), 1000, 1000).unwrap());
    SongFs::new(
        catalog,
        cache.clone(),
        FsOptions {
            local_dir: dir.join("local"),
            rescue_dir: dir.join("lost+found"),
            local_only_patterns: vec![glob::Pattern::new("songfactory_backup_*.db").unwrap()],
        },
    )
    .unwrap()
}

/// Reads a whole file through a fresh handle, fetching what is not local.
async fn read_all(fs: &SongFs, ino: u64) -> Vec<u8> {
    let o = fs.open(ino, false).unwrap();
    let size = fs.getattr(ino).unwrap().size;
    let mut out = Vec::new();
    while (out.len() as u64) < size {
        let off = out.len() as u64;
        let piece = match fs.read(o.fh, off, 1 << 20).unwrap() {
            Some(b) => b,
            None => fs.read_fetch(o.fh, off, 1 << 20).await.unwrap().to_vec(),
        };
        assert!(!piece.is_empty(), "short read at {off}");
        out.extend_from_slice(&piece);
    }
    fs.release(o.fh).unwrap();
    out
}

#[tokio::test(flavor = "multi_thread")]
async fn a_written_file_commits_at_release_not_at_close_and_reads_back_through_a_new_handle() {
    let w = world();
    let (node, o) =
        w.fs.create(ROOT_INO, "a.mp3", 0o600, 1000, 1000, true)
            .unwrap();
    assert_eq!(node.hash.as_deref(), Some(EMPTY_HASH));
    let data: Vec<u8> = (0..700_000u32).map(|i| (i % 251) as u8).collect();
    for (i, piece) in data.chunks(100_000).enumerate() {
        assert_eq!(
            w.fs.write(o.fh, (i * 100_000) as u64, piece).unwrap(),
            Some(piece.len() as u32)
        );
    }
    // Uncommitted bytes are visible (size and content) before the flush.
    assert_eq!(w.fs.getattr(node.ino).unwrap().size, 700_000);
    // close() does not wait for the hash: the bytes stay staged, shown as they are.
    w.fs.flush(o.fh).unwrap();
    let closed = w.fs.getattr(node.ino).unwrap();
    assert_eq!(closed.size, 700_000);
    assert_eq!(
        closed.hash.as_deref(),
        Some(EMPTY_HASH),
        "not committed at close"
    );
    assert!(w.fs.has_unsaved_writes(node.ino));
    w.fs.release(o.fh).unwrap();
    let committed = w.fs.getattr(node.ino).unwrap();
    assert_eq!(committed.hash, Some(hash_bytes(&data).hash));
    assert!(w.cache.complete_path(&hash_bytes(&data).hash).is_some());
    assert!(!w.fs.has_unsaved_writes(node.ino));
    assert_eq!(read_all(&w.fs, node.ino).await, data);
    assert!(w.uploader.drain(Duration::from_secs(10)).await);
}

#[tokio::test(flavor = "multi_thread")]
async fn modifying_a_file_whose_blob_is_only_in_the_store_fetches_it_first() {
    let w = world();
    let data: Vec<u8> = (0..600_000u32).map(|i| (i * 7 % 253) as u8).collect();
    let (node, o) =
        w.fs.create(ROOT_INO, "b.wav", 0o644, 1000, 1000, true)
            .unwrap();
    w.fs.write(o.fh, 0, &data).unwrap();
    w.fs.release(o.fh).unwrap();
    let hash = hash_bytes(&data).hash;
    assert!(w.uploader.drain(Duration::from_secs(10)).await);
    assert!(
        w.cache.evict(&hash).unwrap(),
        "an uploaded blob is evictable"
    );
    assert!(w.cache.complete_path(&hash).is_none());

    let o = w.fs.open(node.ino, true).unwrap();
    assert_eq!(
        w.fs.write(o.fh, 4, b"RIFF").unwrap(),
        None,
        "needs the content first"
    );
    w.fs.prepare_staging(node.ino).await.unwrap();
    assert_eq!(w.fs.write(o.fh, 4, b"RIFF").unwrap(), Some(4));
    w.fs.release(o.fh).unwrap();
    let mut expect = data.clone();
    expect[4..8].copy_from_slice(b"RIFF");
    assert_eq!(read_all(&w.fs, node.ino).await, expect);
}

#[tokio::test(flavor = "multi_thread")]
async fn truncate_without_a_handle_commits_at_once() {
    let w = world();
    let (node, o) = w.fs.create(ROOT_INO, "c", 0o644, 1000, 1000, true).unwrap();
    w.fs.write(o.fh, 0, b"0123456789").unwrap();
    w.fs.release(o.fh).unwrap();
    let a = SetAttr {
        size: Some(4),
        ..SetAttr::default()
    };
    let n = w.fs.setattr(node.ino, a).unwrap().unwrap();
    assert_eq!(n.size, 4);
    assert_eq!(n.hash, Some(hash_bytes(b"0123").hash));
    let n =
        w.fs.setattr(
            node.ino,
            SetAttr {
                size: Some(0),
                ..SetAttr::default()
            },
        )
        .unwrap()
        .unwrap();
    assert_eq!((n.size, n.hash.as_deref()), (0, Some(EMPTY_HASH)));
}

#[tokio::test(flavor = "multi_thread")]
async fn local_only_files_are_never_queued_and_move_when_renamed() {
    let w = world();
    let secret = b"api_key=sk-123".repeat(1000);
    let (node, o) =
        w.fs.create(ROOT_INO, "songfactory_backup_1.db", 0o600, 1000, 1000, true)
            .unwrap();
    assert!(node.local_only);
    w.fs.write(o.fh, 0, &secret).unwrap();
    w.fs.release(o.fh).unwrap();
    assert_eq!(w.uploader.pending().0, 0, "nothing queued for upload");
    assert!(w.cache.complete_path(&hash_bytes(&secret).hash).is_none());
    assert_eq!(
        std::fs::read(w.dir.path().join("local").join(node.ino.to_string())).unwrap(),
        secret
    );
    assert_eq!(read_all(&w.fs, node.ino).await, secret);

    // Renamed to an ordinary name: it becomes a synced file.
    w.fs.rename(
        ROOT_INO,
        "songfactory_backup_1.db",
        ROOT_INO,
        "notes.db",
        RenameMode::default(),
    )
    .unwrap();
    let n = w.fs.getattr(node.ino).unwrap();
    assert!(!n.local_only);
    assert_eq!(n.hash, Some(hash_bytes(&secret).hash));
    assert_eq!(read_all(&w.fs, node.ino).await, secret);
    assert!(w.uploader.drain(Duration::from_secs(10)).await);
}

#[tokio::test(flavor = "multi_thread")]
async fn bytes_written_to_an_unlinked_open_file_are_dropped_at_close() {
    let w = world();
    let (node, o) =
        w.fs.create(ROOT_INO, "tmp", 0o600, 1000, 1000, true)
            .unwrap();
    w.fs.write(o.fh, 0, b"scratch").unwrap();
    w.fs.unlink(ROOT_INO, "tmp").unwrap();
    // Still readable through the open handle.
    assert_eq!(w.fs.read(o.fh, 0, 100).unwrap().unwrap(), b"scratch");
    w.fs.release(o.fh).unwrap();
    assert!(w.fs.getattr(node.ino).is_err());
    assert_eq!(w.uploader.pending().0, 0);
    let staged = std::fs::read_dir(w.cache.staging_dir()).unwrap().count();
    assert_eq!(staged, 0, "no staging file left behind");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_file_closed_but_not_committed_when_songfs_died_is_committed_at_the_next_start() {
    let w = world();
    let (node, o) =
        w.fs.create(ROOT_INO, "c.wav", 0o644, 1000, 1000, true)
            .unwrap();
    let data: Vec<u8> = (0..3_000_000u32).map(|i| (i % 241) as u8).collect();
    w.fs.write(o.fh, 0, &data).unwrap();
    let (gone, og) =
        w.fs.create(ROOT_INO, "d.wav", 0o644, 1000, 1000, true)
            .unwrap();
    w.fs.write(og.fh, 0, b"removed before the start").unwrap();
    w.fs.flush(o.fh).unwrap();
    w.fs.flush(og.fh).unwrap();
    // kill -9 here: the release never came. The next start moves the staging folder's
    // leftovers to lost+found (`rescue_leftovers`), then commits the closed ones.
    for e in std::fs::read_dir(w.cache.staging_dir()).unwrap() {
        let name = e.unwrap().file_name().into_string().unwrap();
        assert!(name.starts_with("fsc-"), "closed files are marked: {name}");
    }
    w.fs.catalog().unlink(ROOT_INO, "d.wav").unwrap();
    assert_eq!(
        w.fs.catalog().get(node.ino).unwrap().hash.as_deref(),
        Some(EMPTY_HASH)
    );

    let restarted = start_fs(w.dir.path(), &w.cache);
    let rescue = w.dir.path().join("lost+found");
    let n = restarted.getattr(node.ino).unwrap();
    assert_eq!(n.hash, Some(hash_bytes(&data).hash));
    assert_eq!(n.size, data.len() as u64);
    assert_eq!(read_all(&restarted, node.ino).await, data);
    let left: Vec<String> = std::fs::read_dir(&rescue)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert_eq!(
        left.len(),
        1,
        "only the unlinked file's bytes stay aside: {left:?}"
    );
    assert!(left[0].contains(&format!("-{}-", gone.ino)), "{left:?}");
    // The first instance "died": the restart took its staging files.
    drop(w.fs);
}
