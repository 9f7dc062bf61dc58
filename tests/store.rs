//! The store contract (tests/common/contract.rs) run against the folder store and S3
//! (a real s3s-fs server on 127.0.0.1, one per test). Then what only S3 has (bucket,
//! keys, endpoint errors), the fault-injecting wrapper, and `songfs init` against S3.

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::contract::{pattern, Fixture, TEST_PART};
use common::s3server::{self, S3Server};
use songfs::config::StoreConfig;
use songfs::store::faulty::FaultyStore;
use songfs::store::s3::{S3Options, S3Store};
use songfs::store::{local::LocalStore, ObjectStore, StoreError};

/// Multipart settings small enough for a test file of a few parts.
const TEST_THRESHOLD: u64 = 6 * 1024 * 1024;

async fn folder() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    Fixture::new(Arc::new(LocalStore::new(dir.path().join("store")))).keeping(dir)
}

fn test_options() -> S3Options {
    S3Options {
        credentials: Some((s3server::ACCESS_KEY.into(), s3server::SECRET_KEY.into())),
        multipart_threshold: TEST_THRESHOLD,
        part_size: TEST_PART,
        ..S3Options::default()
    }
}

async fn s3() -> Fixture {
    let server = S3Server::start();
    // A prefix, so every test also checks that keys come back relative to it.
    let store = S3Store::open(&server.store_config("team/songfs"), test_options())
        .await
        .unwrap();
    Fixture::new(Arc::new(store)).keeping(server)
}

contract_suite!(folder_store, folder);
contract_suite!(s3_store, s3);

// ---------------------------------------------------------------- S3 only

#[tokio::test]
async fn s3_keys_live_under_the_prefix_in_the_bucket() {
    let server = S3Server::start();
    let store = S3Store::open(&server.store_config("team/songfs"), test_options())
        .await
        .unwrap();
    store
        .put("logs/a/1.json", Bytes::from_static(b"{}"))
        .await
        .unwrap();
    let on_disk = server
        .data_dir()
        .join(server.bucket())
        .join("team/songfs/logs/a/1.json");
    assert_eq!(std::fs::read(on_disk).unwrap(), b"{}");
    assert_eq!(
        store.describe(),
        format!(
            "s3://{}/team/songfs at {}",
            server.bucket(),
            server.endpoint()
        )
    );
    // A store on the bucket root sees the prefixed key whole.
    let root = S3Store::open(&server.store_config(""), test_options())
        .await
        .unwrap();
    assert_eq!(
        root.list("").await.unwrap(),
        vec!["team/songfs/logs/a/1.json"]
    );
}

#[tokio::test]
async fn s3_wrong_bucket_is_no_such_bucket() {
    let server = S3Server::start();
    let mut cfg = server.store_config("p");
    cfg.url = "s3://no-such-bucket/p".into();
    let store = S3Store::open(&cfg, test_options()).await.unwrap();
    // (s3s-fs answers a GET in a missing bucket with NoSuchKey, so only the listing
    // can tell; AWS says NoSuchBucket to both.)
    let err = store.list("").await.unwrap_err();
    match &err {
        StoreError::NoSuchBucket { bucket } => assert!(bucket.contains("no-such-bucket")),
        other => panic!("expected NoSuchBucket, got {other:?}"),
    }
    assert!(
        err.to_string().contains("create it or fix the store URL"),
        "{err}"
    );
    assert!(!err.is_transient());
}

#[tokio::test]
async fn s3_bad_credentials_are_denied() {
    let server = S3Server::start();
    let opts = S3Options {
        credentials: Some((s3server::ACCESS_KEY.into(), "wrong-secret".into())),
        ..test_options()
    };
    let store = S3Store::open(&server.store_config("p"), opts)
        .await
        .unwrap();
    let unknown_key = S3Options {
        credentials: Some(("nobody".into(), "nothing".into())),
        ..test_options()
    };
    let stranger = S3Store::open(&server.store_config("p"), unknown_key)
        .await
        .unwrap();
    for err in [
        store.put("x", Bytes::from_static(b"1")).await.unwrap_err(),
        store.get("x").await.unwrap_err(),
        store.list("").await.unwrap_err(),
        store.head("x").await.unwrap_err(),
        stranger.get("x").await.unwrap_err(),
    ] {
        assert!(
            matches!(err, StoreError::Denied { .. }),
            "expected Denied, got {err:?}"
        );
        assert!(err.to_string().contains("AWS_ACCESS_KEY_ID"), "{err}");
        assert!(!err.is_transient());
    }
}

#[tokio::test]
async fn s3_dead_endpoint_is_unreachable_within_seconds() {
    let cfg = StoreConfig {
        url: "s3://bucket/p".into(),
        s3_endpoint: Some(format!("http://127.0.0.1:{}", s3server::free_port())),
        s3_region: None,
        encrypted: false,
    };
    let store = S3Store::open(&cfg, test_options()).await.unwrap();
    let started = Instant::now();
    let err = store.get("x").await.unwrap_err();
    let elapsed = started.elapsed();
    assert!(matches!(err, StoreError::Unreachable { .. }), "{err:?}");
    assert!(err.is_transient());
    assert!(err.to_string().contains("127.0.0.1"), "{err}");
    assert!(elapsed < Duration::from_secs(5), "took {elapsed:?}");
}

/// A server that accepts connections and never answers: the first-byte timeout ends it.
#[tokio::test]
async fn s3_silent_endpoint_times_out() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let hold = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((sock, _)) = listener.accept().await {
            held.push(sock);
        }
    });
    let cfg = StoreConfig {
        url: "s3://bucket/p".into(),
        s3_endpoint: Some(format!("http://127.0.0.1:{port}")),
        s3_region: None,
        encrypted: false,
    };
    let opts = S3Options {
        first_byte_timeout: Duration::from_millis(500),
        max_attempts: 2,
        ..test_options()
    };
    let store = S3Store::open(&cfg, opts).await.unwrap();
    let started = Instant::now();
    let err = store.get_range("x", 0..65536).await.unwrap_err();
    let elapsed = started.elapsed();
    hold.abort();
    assert!(matches!(err, StoreError::Unreachable { .. }), "{err:?}");
    assert!(elapsed < Duration::from_secs(4), "took {elapsed:?}");
}

#[tokio::test]
async fn s3_store_going_offline_and_back() {
    let mut server = S3Server::start();
    let store = server.open_store("p").await;
    store.put("k", Bytes::from_static(b"v")).await.unwrap();
    server.stop();
    let started = Instant::now();
    let err = store.get("k").await.unwrap_err();
    assert!(matches!(err, StoreError::Unreachable { .. }), "{err:?}");
    assert!(started.elapsed() < Duration::from_secs(5));
    server.restart();
    assert_eq!(&store.get("k").await.unwrap()[..], b"v");
}

// ---------------------------------------------------------------- fault wrapper

#[tokio::test]
async fn faulty_store_counts_requests_and_goes_offline() {
    let f = folder().await;
    let faulty = FaultyStore::new(f.store.clone());
    faulty.put("a", Bytes::from_static(b"abc")).await.unwrap();
    assert_eq!(&faulty.get_range("a", 0..2).await.unwrap()[..], b"ab");
    faulty.get("a").await.unwrap();
    let counts = faulty.counts();
    assert_eq!((counts.puts, counts.get_ranges, counts.gets), (1, 1, 1));

    faulty.set_offline_delay(Duration::from_millis(200));
    faulty.set_offline(true);
    let started = Instant::now();
    let err = faulty.get("a").await.unwrap_err();
    assert!(matches!(err, StoreError::Unreachable { .. }), "{err:?}");
    assert!(started.elapsed() >= Duration::from_millis(200));
    assert!(faulty.put("b", Bytes::new()).await.is_err());
    assert_eq!(
        f.store.head("b").await.unwrap(),
        None,
        "an offline put reached the store"
    );

    faulty.set_offline(false);
    assert_eq!(&faulty.get("a").await.unwrap()[..], b"abc");
    assert_eq!(faulty.counts().gets, 3);
    faulty.reset_counts();
    assert_eq!(faulty.counts().total(), 0);
}

// ---------------------------------------------------------------- songfs init

#[test]
fn init_with_an_s3_store_writes_the_format_record() {
    let server = S3Server::start();
    let home = common::temp_home();
    let mut cmd = common::songfs(home.path());
    server.apply_env(&mut cmd);
    let out = cmd
        .args([
            "init",
            "--store",
            &server.url("lib"),
            "--s3-endpoint",
            &server.endpoint(),
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "init failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let record = server
        .data_dir()
        .join(server.bucket())
        .join("lib/songfs.json");
    let json: serde_json::Value = serde_json::from_slice(&std::fs::read(record).unwrap()).unwrap();
    assert_eq!(json["format_version"], 1);
    let config = std::fs::read_to_string(home.path().join("config.json")).unwrap();
    assert!(config.contains(&server.endpoint()), "{config}");
}

#[test]
fn init_against_a_dead_endpoint_fails_with_one_clear_line() {
    let server = S3Server::start();
    let home = common::temp_home();
    let mut cmd = common::songfs(home.path());
    server.apply_env(&mut cmd);
    let dead = format!("http://127.0.0.1:{}", s3server::free_port());
    let started = Instant::now();
    let out = cmd
        .args([
            "init",
            "--store",
            "s3://songfs-test/lib",
            "--s3-endpoint",
            &dead,
        ])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "took {:?}",
        started.elapsed()
    );
    assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
    assert!(
        stderr.contains("unreachable") && stderr.contains(&dead),
        "{stderr}"
    );
    assert!(
        !home.path().join("config.json").exists(),
        "config written for a dead store"
    );
}

#[test]
fn init_with_wrong_keys_says_to_check_credentials() {
    let server = S3Server::start();
    let home = common::temp_home();
    let mut cmd = common::songfs(home.path());
    server.apply_env(&mut cmd);
    let out = cmd
        .env("AWS_SECRET_ACCESS_KEY", "wrong")
        .args([
            "init",
            "--store",
            &server.url("lib"),
            "--s3-endpoint",
            &server.endpoint(),
        ])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(stderr.contains("AWS_ACCESS_KEY_ID"), "{stderr}");
}

/// The large-file path really is a multipart upload: S3 gives such an object an ETag
/// ending in "-<number of parts>".
#[tokio::test]
async fn s3_put_file_above_the_threshold_uses_parallel_parts() {
    use aws_sdk_s3::config::{BehaviorVersion, Credentials, Region};
    let server = S3Server::start();
    let store = S3Store::open(&server.store_config("p"), test_options())
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("big");
    std::fs::write(&path, pattern(3 * TEST_PART as usize + 1, 9)).unwrap();
    store.put_file("big", &path).await.unwrap();
    std::fs::write(
        dir.path().join("small"),
        pattern(TEST_THRESHOLD as usize, 9),
    )
    .unwrap();
    store
        .put_file("small", &dir.path().join("small"))
        .await
        .unwrap();

    let client = aws_sdk_s3::Client::from_conf(
        aws_sdk_s3::Config::builder()
            .behavior_version(BehaviorVersion::latest())
            .endpoint_url(server.endpoint())
            .force_path_style(true)
            .region(Region::new("us-east-1"))
            .credentials_provider(Credentials::new(
                server.access_key(),
                server.secret_key(),
                None,
                None,
                "test",
            ))
            .build(),
    );
    let etag = |key: &'static str| {
        let client = client.clone();
        let bucket = server.bucket().to_string();
        async move {
            let out = client
                .head_object()
                .bucket(bucket)
                .key(key)
                .send()
                .await
                .unwrap();
            out.e_tag().unwrap().trim_matches('"').to_string()
        }
    };
    assert!(
        etag("p/big").await.ends_with("-4"),
        "{}",
        etag("p/big").await
    );
    assert!(
        !etag("p/small").await.contains('-'),
        "a file at the threshold went multipart"
    );
}

#[test]
fn init_without_credentials_says_to_set_them() {
    let server = S3Server::start();
    let home = common::temp_home();
    let mut cmd = common::songfs(home.path());
    server.apply_env(&mut cmd);
    let started = Instant::now();
    let out = cmd
        .env_remove("AWS_ACCESS_KEY_ID")
        .env_remove("AWS_SECRET_ACCESS_KEY")
        .args([
            "init",
            "--store",
            &server.url("lib"),
            "--s3-endpoint",
            &server.endpoint(),
        ])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(started.elapsed() < Duration::from_secs(10));
    assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
    assert!(stderr.contains("no AWS credentials"), "{stderr}");
    assert!(stderr.contains("AWS_ACCESS_KEY_ID"), "{stderr}");
}

/// A TCP relay to `upstream` that cuts a connection once its client has sent more
/// than `limit` bytes, the first `cuts` times: large uploads (multipart parts) fail,
/// small requests pass.
async fn relay_cutting_large_requests(
    upstream: u16,
    limit: usize,
    cuts: usize,
) -> (u16, tokio::task::JoinHandle<()>) {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let cut = Arc::new(AtomicUsize::new(0));
    let task = tokio::spawn(async move {
        while let Ok((mut client, _)) = listener.accept().await {
            let cut = cut.clone();
            tokio::spawn(async move {
                let Ok(mut server) = tokio::net::TcpStream::connect(("127.0.0.1", upstream)).await
                else {
                    return;
                };
                let (mut client_r, mut client_w) = client.split();
                let (mut server_r, mut server_w) = server.split();
                let up = async {
                    let (mut sent, mut spared) = (0, false);
                    let mut buf = vec![0u8; 64 * 1024];
                    loop {
                        let n = client_r.read(&mut buf).await.unwrap_or(0);
                        sent += n;
                        if n == 0 {
                            return;
                        }
                        if sent > limit && !spared {
                            if cut.fetch_add(1, Ordering::SeqCst) < cuts {
                                return; // dropping both sockets resets the connection
                            }
                            spared = true;
                        }
                        if server_w.write_all(&buf[..n]).await.is_err() {
                            return;
                        }
                    }
                };
                let down = tokio::io::copy(&mut server_r, &mut client_w);
                tokio::select! {
                    _ = up => {}
                    _ = down => {}
                }
            });
        }
    });
    (port, task)
}

/// When parts cannot be uploaded, the multipart upload is aborted: the server keeps
/// no upload state (s3s-fs keeps `.upload_id-*` files in its root until an abort or a
/// completion removes them).
#[tokio::test]
async fn s3_failed_multipart_upload_is_aborted() {
    let server = S3Server::start();
    let (port, relay) = relay_cutting_large_requests(server.port(), 1024 * 1024, usize::MAX).await;
    let mut cfg = server.store_config("p");
    cfg.s3_endpoint = Some(format!("http://127.0.0.1:{port}"));
    let opts = S3Options {
        max_attempts: 2,
        ..test_options()
    };
    let store = S3Store::open(&cfg, opts).await.unwrap();
    // Small requests go through the relay.
    store.put("small", Bytes::from_static(b"ok")).await.unwrap();

    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("big");
    std::fs::write(&path, pattern(2 * TEST_PART as usize + 1, 5)).unwrap();
    let started = Instant::now();
    let err = store.put_file("big", &path).await.unwrap_err();
    assert!(err.is_transient(), "{err:?}");
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "took {:?}",
        started.elapsed()
    );
    relay.abort();

    assert_eq!(store.head("big").await.ok().flatten(), None);
    let leftovers: Vec<String> = std::fs::read_dir(server.data_dir())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with(".upload_id-"))
        .collect();
    assert!(leftovers.is_empty(), "upload not aborted: {leftovers:?}");
}

/// A streamed body whose request is cut midway is made again for the retry: the object
/// lands whole (the body read more than once), in one PUT and in parts.
#[tokio::test]
async fn s3_a_cut_body_upload_is_retried_with_the_body_made_again() {
    let server = S3Server::start();
    for (key, len) in [("one-put", 3 << 20), ("parts", 2 * TEST_PART as usize + 7)] {
        let (port, relay) = relay_cutting_large_requests(server.port(), 1024 * 1024, 1).await;
        let mut cfg = server.store_config("p");
        cfg.s3_endpoint = Some(format!("http://127.0.0.1:{port}"));
        let store = S3Store::open(&cfg, test_options()).await.unwrap();
        let body = common::contract::MemoryBody::new(pattern(len, 4));
        store.put_body(key, body.clone()).await.unwrap().unwrap();
        assert!(
            body.reads.load(std::sync::atomic::Ordering::Relaxed) > len as u64,
            "{key}: the body was not read again for a retry"
        );
        assert!(store.get(key).await.unwrap()[..] == body.data[..], "{key}");
        relay.abort();
    }
}

/// A TCP relay to `upstream` that plays a server without conditional writes: a request
/// carrying `If-None-Match` gets `501 NotImplemented` (and the connection closed);
/// everything else reaches the real server. Counts the refusals.
async fn relay_without_conditional_put(
    upstream: u16,
) -> (
    u16,
    Arc<std::sync::atomic::AtomicUsize>,
    tokio::task::JoinHandle<()>,
) {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let refused = Arc::new(AtomicUsize::new(0));
    let counter = refused.clone();
    let task = tokio::spawn(async move {
        while let Ok((mut client, _)) = listener.accept().await {
            let counter = counter.clone();
            tokio::spawn(async move {
                let Ok(mut server) = tokio::net::TcpStream::connect(("127.0.0.1", upstream)).await
                else {
                    return;
                };
                let (mut client_r, mut client_w) = client.split();
                let (mut server_r, mut server_w) = server.split();
                let up = async {
                    let mut buf = vec![0u8; 64 * 1024];
                    loop {
                        let n = client_r.read(&mut buf).await.unwrap_or(0);
                        if n == 0 {
                            return None;
                        }
                        let text = String::from_utf8_lossy(&buf[..n]).to_ascii_lowercase();
                        if text.contains("\r\nif-none-match:") {
                            return Some(());
                        }
                        if server_w.write_all(&buf[..n]).await.is_err() {
                            return None;
                        }
                    }
                };
                let down = tokio::io::copy(&mut server_r, &mut client_w);
                let refuse = tokio::select! {
                    r = up => r.is_some(),
                    _ = down => false,
                };
                if refuse {
                    counter.fetch_add(1, Ordering::SeqCst);
                    let body = "<?xml version=\"1.0\" encoding=\"UTF-8\"?><Error>\
                        <Code>NotImplemented</Code><Message>no conditional writes</Message></Error>";
                    let reply = format!(
                        "HTTP/1.1 501 Not Implemented\r\ncontent-type: application/xml\r\n\
                         content-length: {}\r\nconnection: close\r\n\r\n{body}",
                        body.len()
                    );
                    let _ = client_w.write_all(reply.as_bytes()).await;
                    let _ = client_w.shutdown().await;
                }
            });
        }
    });
    (port, refused, task)
}

/// A server that does not implement `If-None-Match` still gets put-if-absent semantics
/// (HEAD then PUT), and the store stops asking after the first refusal.
#[tokio::test]
async fn s3_put_if_absent_falls_back_when_conditional_put_is_not_implemented() {
    use std::sync::atomic::Ordering;
    let server = S3Server::start();
    let (port, refused, relay) = relay_without_conditional_put(server.port()).await;
    let mut cfg = server.store_config("p");
    cfg.s3_endpoint = Some(format!("http://127.0.0.1:{port}"));
    let store = S3Store::open(&cfg, test_options()).await.unwrap();

    assert!(store
        .put_if_absent("once", Bytes::from_static(b"first"))
        .await
        .unwrap());
    assert!(!store
        .put_if_absent("once", Bytes::from_static(b"second"))
        .await
        .unwrap());
    assert!(store
        .put_if_absent("other", Bytes::from_static(b"x"))
        .await
        .unwrap());
    assert_eq!(&store.get("once").await.unwrap()[..], b"first");
    assert_eq!(
        refused.load(Ordering::SeqCst),
        1,
        "conditional PUT tried again"
    );
    relay.abort();
}
