//! The store contract: the checks every backend must pass (folder, S3, WebDAV, ...),
//! written once. A test file names its backends with `contract_suite!`:
//!
//! ```ignore
//! contract_suite!(folder_store, folder_fixture);   // async fn folder_fixture() -> Fixture
//! ```
//!
//! `put_if_absent` is checked for what every backend guarantees without a conditional
//! create: a second call on an existing key reports it and leaves the first content.

use std::sync::Arc;

use bytes::Bytes;
use futures::StreamExt;
use songfs::store::body::Body;
use songfs::store::{format, ObjectStore, StoreError};

/// A store under test and whatever keeps it alive (a temp folder, a server process).
pub struct Fixture {
    pub store: Arc<dyn ObjectStore>,
    pub keep: Vec<Box<dyn std::any::Any>>,
}

impl Fixture {
    pub fn new(store: Arc<dyn ObjectStore>) -> Fixture {
        Fixture {
            store,
            keep: Vec::new(),
        }
    }
    pub fn keeping(mut self, thing: impl std::any::Any) -> Fixture {
        self.keep.push(Box::new(thing));
        self
    }
}

/// The multipart part size the S3 fixture uses (a ranged read crosses its boundary).
pub const TEST_PART: u64 = 5 * 1024 * 1024;

/// One `#[tokio::test]` per contract check for the backend `$fixture` makes.
#[macro_export]
macro_rules! contract_suite {
    ($backend:ident, $fixture:ident) => {
        $crate::contract_suite!(@ $backend, $fixture;
            put_then_get_round_trips,
            get_range_clamps_at_the_end,
            head_tells_absent_from_present,
            list_returns_keys_under_a_prefix_relative_and_sorted,
            list_pages_through_more_than_1000_keys,
            delete_is_idempotent,
            put_if_absent_writes_once,
            put_file_uploads_large_files_in_parts,
            put_body_streams_what_the_body_makes,
            missing_objects_are_not_found,
            format_record_is_created_on_a_fresh_store,
            two_writers_of_one_blob_leave_one_readable_blob,
        );
    };
    (@ $backend:ident, $fixture:ident; $($check:ident),* $(,)?) => {
        mod $backend {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $check() {
                    let f = super::$fixture().await;
                    $crate::common::contract::$check(f.store.as_ref()).await
                }
            )*
        }
    };
}

pub fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed) ^ (i >> 11) as u8)
        .collect()
}

pub async fn put_then_get_round_trips(store: &dyn ObjectStore) {
    let data = Bytes::from(pattern(300_000, 1));
    store
        .put("blobs/sha256/ab/abc", data.clone())
        .await
        .unwrap();
    assert_eq!(store.get("blobs/sha256/ab/abc").await.unwrap(), data);
    // Overwrite replaces the whole object.
    store
        .put("blobs/sha256/ab/abc", Bytes::from_static(b"short"))
        .await
        .unwrap();
    assert_eq!(
        &store.get("blobs/sha256/ab/abc").await.unwrap()[..],
        b"short"
    );
    // Empty objects exist and are empty.
    store.put("empty", Bytes::new()).await.unwrap();
    assert_eq!(store.get("empty").await.unwrap().len(), 0);
    assert_eq!(store.head("empty").await.unwrap(), Some(0));
}

pub async fn get_range_clamps_at_the_end(store: &dyn ObjectStore) {
    let data = pattern(1000, 2);
    store.put("r", Bytes::from(data.clone())).await.unwrap();
    assert_eq!(
        &store.get_range("r", 10..20).await.unwrap()[..],
        &data[10..20]
    );
    assert_eq!(&store.get_range("r", 0..1000).await.unwrap()[..], &data[..]);
    // A range crossing the end is cut at the end.
    assert_eq!(
        &store.get_range("r", 990..5000).await.unwrap()[..],
        &data[990..]
    );
    // A range past the end, or an empty one, is empty.
    assert!(store.get_range("r", 1000..1010).await.unwrap().is_empty());
    assert!(store.get_range("r", 5000..6000).await.unwrap().is_empty());
    assert!(store.get_range("r", 5..5).await.unwrap().is_empty());
}

pub async fn head_tells_absent_from_present(store: &dyn ObjectStore) {
    assert_eq!(store.head("logs/dev1/1.json").await.unwrap(), None);
    store
        .put("logs/dev1/1.json", Bytes::from_static(b"{}"))
        .await
        .unwrap();
    assert_eq!(store.head("logs/dev1/1.json").await.unwrap(), Some(2));
    assert_eq!(store.head("logs/dev1/2.json").await.unwrap(), None);
}

pub async fn list_returns_keys_under_a_prefix_relative_and_sorted(store: &dyn ObjectStore) {
    for key in [
        "logs/b/2.json",
        "logs/a/1.json",
        "logs/a/10.json",
        "logs/a/2.json",
        "logsx/other",
        "devices/a.json",
    ] {
        store.put(key, Bytes::from_static(b"x")).await.unwrap();
    }
    assert_eq!(
        store.list("logs/a/").await.unwrap(),
        vec!["logs/a/1.json", "logs/a/10.json", "logs/a/2.json"]
    );
    assert_eq!(
        store.list("logs/").await.unwrap(),
        vec![
            "logs/a/1.json",
            "logs/a/10.json",
            "logs/a/2.json",
            "logs/b/2.json"
        ]
    );
    // A prefix that is not a folder boundary matches like a string prefix.
    assert_eq!(store.list("logs").await.unwrap().len(), 5);
    assert_eq!(store.list("").await.unwrap().len(), 6);
    assert!(store.list("nothing/").await.unwrap().is_empty());
}

pub async fn list_pages_through_more_than_1000_keys(store: &dyn ObjectStore) {
    const N: usize = 1100;
    futures::stream::iter(0..N)
        .map(|i| async move {
            store
                .put(&format!("many/{i:05}"), Bytes::from_static(b"k"))
                .await
        })
        .buffer_unordered(16)
        .for_each(|r| async { r.unwrap() })
        .await;
    let keys = store.list("many/").await.unwrap();
    let expected: Vec<String> = (0..N).map(|i| format!("many/{i:05}")).collect();
    assert_eq!(keys, expected);
}

pub async fn delete_is_idempotent(store: &dyn ObjectStore) {
    store.put("d/x", Bytes::from_static(b"1")).await.unwrap();
    store.delete("d/x").await.unwrap();
    assert_eq!(store.head("d/x").await.unwrap(), None);
    store.delete("d/x").await.unwrap();
    store.delete("d/never-existed").await.unwrap();
}

pub async fn put_if_absent_writes_once(store: &dyn ObjectStore) {
    assert!(store
        .put_if_absent("once", Bytes::from_static(b"first"))
        .await
        .unwrap());
    assert!(!store
        .put_if_absent("once", Bytes::from_static(b"second"))
        .await
        .unwrap());
    assert_eq!(&store.get("once").await.unwrap()[..], b"first");
}

pub async fn put_file_uploads_large_files_in_parts(store: &dyn ObjectStore) {
    let dir = tempfile::tempdir().unwrap();
    // Three parts of 5 MiB, 5 MiB and 2 MiB + 3 bytes on S3 (threshold 6 MiB).
    let data = pattern(12 * 1024 * 1024 + 3, 3);
    let path = dir.path().join("big.wav");
    std::fs::write(&path, &data).unwrap();
    store.put_file("blobs/big", &path).await.unwrap();
    assert_eq!(
        store.head("blobs/big").await.unwrap(),
        Some(data.len() as u64)
    );
    let got = store.get("blobs/big").await.unwrap();
    assert!(got[..] == data[..], "large file came back different");
    // A range across the first part boundary.
    let b = TEST_PART as usize;
    let across = store
        .get_range("blobs/big", (b - 10) as u64..(b + 10) as u64)
        .await
        .unwrap();
    assert_eq!(&across[..], &data[b - 10..b + 10]);
    // A small file takes the single-PUT path.
    let small = dir.path().join("small");
    std::fs::write(&small, b"tiny").unwrap();
    store.put_file("blobs/small", &small).await.unwrap();
    assert_eq!(&store.get("blobs/small").await.unwrap()[..], b"tiny");
    // A missing source file is an I/O error naming it.
    let err = store
        .put_file("blobs/x", &dir.path().join("gone"))
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::Io { .. }), "{err:?}");
    assert!(err.to_string().contains("gone"), "{err}");
}

/// A body made in memory, counting how often it was read (a retry reads it again).
pub struct MemoryBody {
    pub data: Vec<u8>,
    pub reads: std::sync::atomic::AtomicU64,
}

impl MemoryBody {
    pub fn new(data: Vec<u8>) -> Arc<MemoryBody> {
        Arc::new(MemoryBody {
            data,
            reads: Default::default(),
        })
    }
}

impl Body for MemoryBody {
    fn size(&self) -> u64 {
        self.data.len() as u64
    }
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> std::io::Result<()> {
        self.reads
            .fetch_add(buf.len() as u64, std::sync::atomic::Ordering::Relaxed);
        buf.copy_from_slice(&self.data[offset as usize..offset as usize + buf.len()]);
        Ok(())
    }
    fn describe(&self) -> String {
        "memory".into()
    }
}

/// A store that streams bodies stores what they make, small or in parts; one that
/// cannot says so and writes nothing.
pub async fn put_body_streams_what_the_body_makes(store: &dyn ObjectStore) {
    let big = MemoryBody::new(pattern(12 * 1024 * 1024 + 5, 8));
    match store.put_body("blobs/streamed", big.clone()).await {
        None => {
            assert_eq!(store.head("blobs/streamed").await.unwrap(), None);
            return;
        }
        Some(done) => done.unwrap(),
    }
    let got = store.get("blobs/streamed").await.unwrap();
    assert!(
        got[..] == big.data[..],
        "a streamed body came back different"
    );
    let small = MemoryBody::new(b"tiny body".to_vec());
    store
        .put_body("blobs/tiny", small.clone())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(&store.get("blobs/tiny").await.unwrap()[..], b"tiny body");
}

pub async fn missing_objects_are_not_found(store: &dyn ObjectStore) {
    for err in [
        store.get("blobs/sha256/00/missing").await.unwrap_err(),
        store
            .get_range("blobs/sha256/00/missing", 0..10)
            .await
            .unwrap_err(),
        store
            .get_range("blobs/sha256/00/missing", 3..3)
            .await
            .unwrap_err(),
    ] {
        match &err {
            StoreError::NotFound { key } => assert_eq!(key, "blobs/sha256/00/missing"),
            other => panic!("expected NotFound, got {other:?}"),
        }
        assert!(!err.is_transient());
    }
}

pub async fn format_record_is_created_on_a_fresh_store(store: &dyn ObjectStore) {
    assert!(
        format::check(store).await.is_err(),
        "an empty store is not a songfs store"
    );
    format::ensure_in(store).await.unwrap();
    let first = store.get(format::FORMAT_KEY).await.unwrap();
    // A second device's init keeps the record the first one wrote.
    format::ensure_in(store).await.unwrap();
    assert_eq!(store.get(format::FORMAT_KEY).await.unwrap(), first);
    format::check(store).await.unwrap();
}

/// Two devices upload the same content-addressed blob at the same moment (no
/// conditional create anywhere): afterwards the key lists once and reads back whole.
pub async fn two_writers_of_one_blob_leave_one_readable_blob(store: &dyn ObjectStore) {
    let data = Bytes::from(pattern(200_000, 9));
    let key = "blobs/sha256/9f/9f00same";
    let (a, b) = tokio::join!(
        store.put_if_absent(key, data.clone()),
        store.put_if_absent(key, data.clone())
    );
    assert!(a.unwrap() || b.unwrap(), "neither writer wrote");
    assert_eq!(store.list("blobs/sha256/9f/").await.unwrap(), vec![key]);
    assert_eq!(store.get(key).await.unwrap(), data);
    assert_eq!(store.head(key).await.unwrap(), Some(data.len() as u64));
}
