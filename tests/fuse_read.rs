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
