//! Reads through a real mount: lazy reads of files whose bytes are only in the store,
//! a seek to the end of a cold file, a corrupt blob (EIO, never cached), and the cache
//! limit holding while files larger than it are read.

mod common;

use std::io::{Read, Seek, SeekFrom};
use std::os::unix::fs::FileExt;
use std::time::Duration;

use common::mount::{bytes, sha256_hex, wait_until, Mount};

fn cache_bytes(m: &Mount) -> u64 {
    m.fresh_status()["daemon"]["cache_bytes"]
        .as_u64()
        .expect("status has cache_bytes")
}

#[test]
fn cold_file_reads_come_from_the_store_and_a_seek_to_the_end_fetches_only_the_end() {
    let mut m = Mount::new();
    let small = bytes(11, 900_000);
    let big = bytes(12, 8 * 1024 * 1024 + 123);
    std::fs::write(m.path("small.mp3"), &small).unwrap();
    std::fs::write(m.path("big.wav"), &big).unwrap();
    m.empty_cache();
    assert!(m.store_blob(&sha256_hex(&big)).exists());

    // Seek to the end of the cold big file: only the last chunk(s) are fetched.
    let f = std::fs::File::open(m.path("big.wav")).unwrap();
    let mut tail = vec![0u8; 4096];
    let off = big.len() as u64 - 4096;
    f.read_exact_at(&mut tail, off).unwrap();
    assert_eq!(tail, big[off as usize..]);
    assert!(
        wait_until(Duration::from_secs(5), || cache_bytes(&m) > 0),
        "status never showed the fetched chunk"
    );
    let fetched = cache_bytes(&m);
    assert!(
        fetched <= 2 * 1024 * 1024,
        "reading 4 KiB at the end fetched {fetched} bytes of an 8 MiB file"
    );

    // Whole-file reads of cold files return the right bytes.
    assert_eq!(std::fs::read(m.path("small.mp3")).unwrap(), small);
    let mut f = std::fs::File::open(m.path("big.wav")).unwrap();
    f.seek(SeekFrom::Start(3_000_000)).unwrap();
    let mut mid = vec![0u8; 500_000];
    f.read_exact(&mut mid).unwrap();
    assert_eq!(mid, big[3_000_000..3_500_000]);
    assert_eq!(std::fs::read(m.path("big.wav")).unwrap(), big);
}

#[test]
fn a_corrupt_blob_in_the_store_is_an_eio_and_is_never_cached() {
    let mut m = Mount::new();
    let data = bytes(21, 1_000_000);
    std::fs::write(m.path("song.mp3"), &data).unwrap();
    m.empty_cache();
    let blob = m.store_blob(&sha256_hex(&data));
    let mut raw = std::fs::read(&blob).unwrap();
    raw[600_000] ^= 0xff; // inside the third 256 KiB chunk
    std::fs::write(&blob, &raw).unwrap();

    let e = std::fs::read(m.path("song.mp3")).unwrap_err();
    assert_eq!(e.raw_os_error(), Some(libc::EIO), "{e}");
    // The intact first chunk still reads; the corrupt one fails again (not cached).
    let f = std::fs::File::open(m.path("song.mp3")).unwrap();
    let mut head = vec![0u8; 4096];
    f.read_exact_at(&mut head, 0).unwrap();
    assert_eq!(head, data[..4096]);
    let mut bad = vec![0u8; 4096];
    let e = f.read_exact_at(&mut bad, 600_000).unwrap_err();
    assert_eq!(e.raw_os_error(), Some(libc::EIO));

    // Repairing the store makes the file readable: nothing bad was kept.
    std::fs::write(&blob, &data).unwrap();
    assert_eq!(std::fs::read(m.path("song.mp3")).unwrap(), data);
}

#[test]
fn the_cache_limit_holds_while_files_larger_than_it_are_read() {
    let limit = 2 * 1024 * 1024;
    let mut m = Mount::with_args(&["--cache-size", "2M"]);
    let files: Vec<Vec<u8>> = (0..3).map(|i| bytes(30 + i, 3 * 1024 * 1024 + 5)).collect();
    for (i, d) in files.iter().enumerate() {
        std::fs::write(m.path(&format!("f{i}.wav")), d).unwrap();
    }
    m.empty_cache();
    for _ in 0..2 {
        for (i, d) in files.iter().enumerate() {
            assert_eq!(&std::fs::read(m.path(&format!("f{i}.wav"))).unwrap(), d);
            assert!(
                wait_until(Duration::from_secs(5), || cache_bytes(&m) <= limit),
                "cache holds {} bytes, limit {limit}",
                cache_bytes(&m)
            );
        }
    }
    let s = m.status();
    assert_eq!(s["daemon"]["cache_limit"].as_u64(), Some(limit));
}

/// Issue 13: a blob altered in the store together with its chunk-hash record rewritten
/// to match. A second device with an empty cache must refuse the record before serving a
/// byte (its chunk root travels in the namespace entry): EIO from the first byte on,
/// nothing cached, the record's key in the log. Before, the first chunks were served
/// and `sha256sum` exited 0 with the wrong hash. An untouched file beside it reads.
#[test]
fn a_chunk_record_rewritten_to_match_altered_bytes_is_refused_before_a_byte_is_served() {
    let a = Mount::new();
    let data = bytes(31, 1_000_000);
    let fine = bytes(32, 700_000);
    std::fs::write(a.path("song.mp3"), &data).unwrap();
    std::fs::write(a.path("fine.mp3"), &fine).unwrap();
    assert!(a.wait_uploads(Duration::from_secs(30)));
    common::mount::run_ok(a.songfs().arg("sync"));

    // The second device has the entries (and their chunk roots) but nothing cached; the
    // store is altered after they arrived (an entry arriving with a lying record is
    // refused at arrival: sync_transport's hostile-entries test).
    let b = Mount::on_folder_store(&a.store, "laptop");
    assert!(
        wait_until(Duration::from_secs(20), || b.path("song.mp3").exists()),
        "the entry never reached the second device"
    );
    let hash = sha256_hex(&data);
    let blob = a.store_blob(&hash);
    let mut raw = std::fs::read(&blob).unwrap();
    raw[600_000] ^= 0xff; // inside the third 256 KiB chunk
    std::fs::write(&blob, &raw).unwrap();
    let record = blob.with_file_name(format!("{hash}.chunks"));
    let mut info: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&record).unwrap()).unwrap();
    let chunk = 256 * 1024;
    info["chunks"][2] = sha256_hex(&raw[2 * chunk..3 * chunk]).into();
    std::fs::write(&record, serde_json::to_vec(&info).unwrap()).unwrap();

    assert_eq!(std::fs::read(b.path("fine.mp3")).unwrap(), fine);
    let f = std::fs::File::open(b.path("song.mp3")).unwrap();
    let mut head = vec![0u8; 4096];
    let e = f.read_exact_at(&mut head, 0).unwrap_err();
    assert_eq!(
        e.raw_os_error(),
        Some(libc::EIO),
        "the first byte was served: {e}"
    );
    let e = std::fs::read(b.path("song.mp3")).unwrap_err();
    assert_eq!(e.raw_os_error(), Some(libc::EIO), "{e}");
    let cached = b.fresh_status()["daemon"]["cache_bytes"].as_u64().unwrap();
    assert!(
        cached <= fine.len() as u64,
        "{cached} bytes cached: only fine.mp3 may be"
    );
    let key = format!("blobs/sha256/{}/{hash}.chunks", &hash[..2]);
    let log = b.daemon_log();
    assert!(
        log.contains(&key) && log.contains("does not match the chunk root"),
        "the log does not name {key}:\n{}",
        b.daemon_log()
    );
}
