//! The mount against a real S3 server (s3s-fs on 127.0.0.1) that goes away: cached
//! files keep reading, uncached reads fail with EIO within the fetch timeout (never
//! hang), writes still succeed and upload once the server is back; a mount started
//! while the server is down comes up offline.

mod common;

use std::time::{Duration, Instant};

use common::mount::{bytes, sha256_hex, Mount};
use common::s3server::S3Server;

#[test]
fn offline_reads_are_bounded_writes_queue_and_upload_when_the_store_returns() {
    let mut s3 = S3Server::start();
    let mut m = Mount::with_s3(&s3, "lib", &["--fetch-timeout", "2"]);
    let cached = bytes(41, 700_000);
    let remote = bytes(42, 900_000);
    std::fs::write(m.path("cached.mp3"), &cached).unwrap();
    std::fs::write(m.path("remote.mp3"), &remote).unwrap();
    m.empty_cache(); // both now live only in S3
    assert_eq!(std::fs::read(m.path("cached.mp3")).unwrap(), cached); // fetched, cached

    s3.stop();
    let t = Instant::now();
    assert_eq!(std::fs::read(m.path("cached.mp3")).unwrap(), cached);
    assert!(
        t.elapsed() < Duration::from_secs(1),
        "cached read waited for the store"
    );
    let t = Instant::now();
    let e = std::fs::read(m.path("remote.mp3")).unwrap_err();
    assert_eq!(e.raw_os_error(), Some(libc::EIO), "{e}");
    assert!(
        t.elapsed() < Duration::from_secs(10),
        "uncached read took {:?} with a 2 s fetch timeout",
        t.elapsed()
    );
    let written = bytes(43, 300_000);
    std::fs::write(m.path("new.mp3"), &written).unwrap();
    assert_eq!(std::fs::read(m.path("new.mp3")).unwrap(), written);
    std::thread::sleep(Duration::from_millis(1500));
    assert!(
        m.status()["daemon"]["pending_uploads"]
            .as_u64()
            .unwrap_or(0)
            >= 1,
        "the offline write is not queued"
    );

    s3.restart();
    assert!(
        m.wait_uploads(Duration::from_secs(60)),
        "uploads did not resume"
    );
    assert_eq!(
        std::fs::read(m.store_blob(&sha256_hex(&written))).unwrap(),
        written
    );
    assert_eq!(std::fs::read(m.path("remote.mp3")).unwrap(), remote);
}

#[test]
fn a_mount_started_while_the_store_is_down_comes_up_offline() {
    let mut s3 = S3Server::start();
    let mut m = Mount::with_s3(&s3, "", &["--fetch-timeout", "1"]);
    std::fs::write(m.path("a.mp3"), b"before").unwrap();
    m.unmount();
    s3.stop();
    m.mount();
    let s = m.status();
    assert_eq!(s["mounted"], true);
    assert_eq!(s["daemon"]["store_reachable"], false, "{s}");
    assert_eq!(std::fs::read(m.path("a.mp3")).unwrap(), b"before");
    std::fs::write(m.path("b.mp3"), b"offline").unwrap();
    s3.restart();
    assert!(m.wait_uploads(Duration::from_secs(60)));
    assert_eq!(
        std::fs::read(m.store_blob(&sha256_hex(b"offline"))).unwrap(),
        b"offline"
    );
}
