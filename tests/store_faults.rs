//! A store that fails the way real ones do, met through a real mount: a fault-injecting
//! proxy (tests/common/faultproxy.rs) sits between the reading device's daemon and a real
//! S3 server (s3s-fs). Device A writes through its own mount straight to the server;
//! device B, with an empty cache, reads through the proxy, so every byte B serves crossed
//! the faults. Each test checks what the app would see: the right bytes, or EIO within
//! `--fetch-timeout`, never a short read, never a hang, nothing wrong cached.

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::faultproxy::{Fault, FaultProxy};
use common::mount::{run_ok, wait_until, Mount};
use common::s3server::S3Server;
use sha2::{Digest, Sha256};

const FETCH_TIMEOUT_SECS: u64 = 15;

struct Setup {
    s3: S3Server,
    proxy: FaultProxy,
    a: Mount,
    b: Mount,
}

/// A mounted on the server with `files` written and uploaded; B mounted through the
/// proxy, seeing them, its cache empty.
fn setup(files: &[(&str, &[u8])]) -> Setup {
    let s3 = S3Server::start();
    let mut a = Mount::with_s3(&s3, "lib", &[]);
    for (name, data) in files {
        std::fs::write(a.path(name), data).unwrap();
    }
    assert!(a.wait_uploads(Duration::from_secs(60)));
    run_ok(a.songfs().arg("sync"));
    let proxy = FaultProxy::start(s3.port());
    let env = s3.env();
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let fetch_timeout = FETCH_TIMEOUT_SECS.to_string();
    let mut b = Mount::init_with(
        Some(&s3.url("lib")),
        &["--s3-endpoint", &proxy.endpoint()],
        &env,
        &["--fetch-timeout", &fetch_timeout],
    );
    b.mount();
    for (name, _) in files {
        assert!(
            wait_until(Duration::from_secs(30), || b.path(name).exists()),
            "{name} never showed on device B"
        );
    }
    a.unmount();
    Setup { s3, proxy, a, b }
}

fn hex(data: &[u8]) -> String {
    Sha256::digest(data)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The store path of a blob's bytes (not its chunk record) as the proxy sees it.
fn blob_path(data: &[u8]) -> String {
    let h = hex(data);
    format!("/blobs/sha256/{}/{h}?", &h[..2])
}

fn random(seed: u64, len: usize) -> Vec<u8> {
    common::mount::bytes(seed, len)
}

fn describe(proxy: &FaultProxy) -> String {
    proxy
        .log()
        .iter()
        .map(|l| format!("{} {} {:?}", l.method, l.path, l.fault))
        .collect::<Vec<_>>()
        .join("\n")
}

fn read(path: &Path) -> std::io::Result<Vec<u8>> {
    std::fs::read(path)
}

#[test]
fn slowdown_503_and_500_answers_are_retried_and_the_read_gets_every_byte() {
    let song = random(1, 3 * 1024 * 1024 + 17);
    let t = setup(&[("song.wav", &song)]);
    t.proxy
        .add("GET", &blob_path(&song), Fault::Status(503, "SlowDown"), 1);
    t.proxy.add(
        "GET",
        &blob_path(&song),
        Fault::Status(500, "InternalError"),
        1,
    );
    let got = read(&t.b.path("song.wav")).unwrap();
    assert!(
        got == song,
        "wrong bytes; proxy saw:\n{}",
        describe(&t.proxy)
    );
    let gets = t.proxy.requests_to(&blob_path(&song));
    assert!(
        gets.iter().any(|l| l.fault.is_some()) && gets.iter().any(|l| l.fault.is_none()),
        "the faults were not met and retried:\n{}",
        describe(&t.proxy)
    );
}

#[test]
fn a_body_cut_half_way_is_fetched_again_and_never_served_short() {
    let song = random(2, 3 * 1024 * 1024 + 5);
    let t = setup(&[("song.wav", &song)]);
    t.proxy
        .add("GET", &blob_path(&song), Fault::CutBody(100_000), 2);
    let got = read(&t.b.path("song.wav"));
    assert!(
        matches!(&got, Ok(b) if *b == song),
        "{:?}; proxy saw:\n{}",
        got.as_ref().map(|b| b.len()),
        describe(&t.proxy)
    );
}

#[test]
fn a_stalled_body_is_given_up_and_fetched_again_within_the_fetch_timeout() {
    let song = random(3, 2 * 1024 * 1024 + 9);
    let t = setup(&[("song.wav", &song)]);
    t.proxy
        .add("GET", &blob_path(&song), Fault::Stall(64 * 1024), 1);
    let started = Instant::now();
    let got = read(&t.b.path("song.wav"));
    let took = started.elapsed();
    assert!(
        took < Duration::from_secs(FETCH_TIMEOUT_SECS + 5),
        "the read hung for {took:?}"
    );
    assert!(
        matches!(&got, Ok(b) if *b == song),
        "{:?} after {took:?}; proxy saw:\n{}",
        got.as_ref().map(|b| b.len()),
        describe(&t.proxy)
    );
}

#[test]
fn a_server_that_ignores_range_still_serves_the_right_bytes() {
    let song = random(4, 10 * 1024 * 1024 + 3);
    let t = setup(&[("song.wav", &song)]);
    let whole = Fault::WholeObject(std::sync::Arc::new(song.clone()));
    t.proxy
        .add("GET", &blob_path(&song), whole.clone(), usize::MAX);
    // The first bytes, as a player reads them, then the rest.
    use std::io::{Read, Seek, SeekFrom};
    let mut f = std::fs::File::open(t.b.path("song.wav")).unwrap();
    let mut head = vec![0u8; 64 * 1024];
    f.read_exact(&mut head).unwrap();
    assert!(head == song[..64 * 1024]);
    let mut tail = vec![0u8; 4096];
    f.seek(SeekFrom::Start(7 * 1024 * 1024 + 11)).unwrap();
    if let Err(e) = f.read_exact(&mut tail) {
        panic!("{e}; daemon log:\n{}", t.b.daemon_log());
    }
    assert!(tail == song[7 * 1024 * 1024 + 11..7 * 1024 * 1024 + 11 + 4096]);
    drop(f);
    assert!(read(&t.b.path("song.wav")).unwrap() == song);
    assert!(
        t.proxy
            .requests_to(&blob_path(&song))
            .iter()
            .all(|l| l.fault == Some(whole.clone())),
        "{}",
        describe(&t.proxy)
    );
}

#[test]
fn a_black_holed_store_gives_eio_within_the_fetch_timeout_and_the_mount_stays_responsive() {
    let song = random(5, 1024 * 1024 + 1);
    let t = setup(&[("song.wav", &song)]);
    t.proxy.add("", "", Fault::BlackHole, usize::MAX);
    let started = Instant::now();
    let got = read(&t.b.path("song.wav"));
    let took = started.elapsed();
    let err = got.expect_err("bytes from a black hole");
    assert_eq!(err.raw_os_error(), Some(libc::EIO), "{err}");
    assert!(
        took < Duration::from_secs(FETCH_TIMEOUT_SECS + 5),
        "EIO only after {took:?}; daemon log:\n{}",
        t.b.daemon_log()
    );
    // The rest of the mount does not wait on the store meanwhile.
    let started = Instant::now();
    std::fs::metadata(t.b.path("song.wav")).unwrap();
    std::fs::read_dir(t.b.path("")).unwrap().count();
    std::fs::write(
        t.b.path("offline-take.wav"),
        b"written while the store is gone",
    )
    .unwrap();
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
    // Nothing wrong was cached: once the store answers again, the read works (after the
    // two seconds in which a read of a blob that just timed out fails at once).
    t.proxy.heal();
    std::thread::sleep(Duration::from_millis(2500));
    assert!(read(&t.b.path("song.wav")).unwrap() == song);
    assert!(
        t.b.wait_uploads(Duration::from_secs(60)),
        "the offline write never went up"
    );
}

#[test]
fn a_put_cut_off_mid_upload_is_retried_and_the_blob_arrives_whole() {
    let t = setup(&[("seed.wav", b"a first file")]);
    let take = random(6, 5 * 1024 * 1024 + 123);
    t.proxy
        .add("PUT", &blob_path(&take)[..40], Fault::CutUpload(200_000), 2);
    std::fs::write(t.b.path("take.wav"), &take).unwrap();
    assert!(
        t.b.wait_uploads(Duration::from_secs(90)),
        "never uploaded; proxy saw:\n{}",
        describe(&t.proxy)
    );
    let h = hex(&take);
    let stored =
        t.s3.data_dir()
            .join(t.s3.bucket())
            .join("lib/blobs/sha256")
            .join(&h[..2])
            .join(&h);
    assert!(
        std::fs::read(&stored).unwrap() == take,
        "the stored blob differs"
    );
    assert!(
        t.proxy
            .log()
            .iter()
            .any(|l| l.method == "PUT" && matches!(l.fault, Some(Fault::CutUpload(_)))),
        "no upload was cut:\n{}",
        describe(&t.proxy)
    );
    drop(t.a);
}
