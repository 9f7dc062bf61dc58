//! The SFE1 format (doc/FORMAT.md) against fixed vectors written by an independent
//! implementation (tests/fixtures/sfe1/reference.py, Python `cryptography`), so a change
//! that would make existing stores unreadable fails here; then properties: ranged reads
//! equal the plaintext slice, and every alteration of a sealed object is detected.

use proptest::prelude::*;
use songfs::crypt::chunks::{self, Header, CHUNK, HEADER_LEN, SEALED_CHUNK, TAG_LEN};
use songfs::crypt::keys::{KdfParams, KeyRecord, MasterKey, SecretKey};
use songfs::crypt::{names, CryptError};

fn fixture(name: &str) -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/sfe1")
        .join(name)
}

fn vectors() -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(fixture("vectors.json")).unwrap()).unwrap()
}

fn hex32(v: &serde_json::Value) -> [u8; 32] {
    hex::decode(v.as_str().unwrap())
        .unwrap()
        .try_into()
        .unwrap()
}

fn kat_key() -> MasterKey {
    MasterKey::from_bytes(hex32(&vectors()["master_key"]))
}

fn objects_key() -> SecretKey {
    kat_key().subkeys().objects
}

/// Deterministic, non-repeating-looking content.
fn content(n: usize) -> Vec<u8> {
    (0..n).map(|i| (i * 7 % 251) as u8).collect()
}

#[test]
fn known_answer_the_passphrase_wrap_matches_the_reference() {
    let v = vectors();
    let pass = v["passphrase"].as_str().unwrap();
    for which in ["record_weak", "record_default"] {
        let want: KeyRecord = serde_json::from_value(v[which].clone()).unwrap();
        let kdf = KdfParams::with(
            want.kdf.m_kib,
            want.kdf.t,
            want.kdf.p,
            want.kdf.salt.clone(),
        );
        let nonce: [u8; 12] = hex::decode(&want.nonce).unwrap().try_into().unwrap();
        let got = KeyRecord::wrap_with(&kat_key(), pass, kdf, nonce).unwrap();
        assert_eq!(got, want, "{which}");
        let mk = want.unwrap(pass).unwrap();
        assert_eq!(
            mk.subkeys().objects.bytes(),
            kat_key().subkeys().objects.bytes()
        );
        assert_eq!(
            want.unwrap("Correct horse battery staple").unwrap_err(),
            CryptError::WrongPassphrase
        );
    }
}

#[test]
fn known_answer_subkeys_names_and_a_sealed_object_match_the_reference() {
    let v = vectors();
    let sub = kat_key().subkeys();
    assert_eq!(
        hex::encode(sub.names.bytes()),
        v["names_key"].as_str().unwrap()
    );
    assert_eq!(
        hex::encode(sub.objects.bytes()),
        v["objects_key"].as_str().unwrap()
    );

    let plain = content(2 * CHUNK as usize + 100);
    let sha = songfs::content::hash_bytes(&plain).hash;
    assert_eq!(sha, v["plain_sha256"].as_str().unwrap());
    let name = names::stored_key(&sub.names, &songfs::content::blob_key(&sha));
    assert_eq!(name, v["blob_name"].as_str().unwrap());

    let header = Header {
        salt: hex32(&v["object_salt"]),
        plain_len: plain.len() as u64,
    };
    let sealed = chunks::seal_with(&sub.objects, &name, &plain, header);
    let want = std::fs::read(fixture("object.sfe1")).unwrap();
    assert!(
        sealed == want,
        "sealed bytes differ from tests/fixtures/sfe1/object.sfe1"
    );
    assert_eq!(chunks::open(&sub.objects, &name, &want).unwrap(), plain);

    let empty_name = v["empty_name"].as_str().unwrap();
    let empty = chunks::seal_with(
        &sub.objects,
        empty_name,
        b"",
        Header {
            salt: [0; 32],
            plain_len: 0,
        },
    );
    assert_eq!(hex::encode(&empty), v["empty_sealed"].as_str().unwrap());
    assert_eq!(chunks::open(&sub.objects, empty_name, &empty).unwrap(), b"");
}

/// Sizes at and around chunk edges, and some in between.
fn sizes() -> impl Strategy<Value = usize> {
    prop_oneof![
        (0u64..4, -2i64..=2).prop_map(|(k, d)| (k * CHUNK).saturating_add_signed(d) as usize),
        0usize..(4 * CHUNK as usize),
    ]
}

fn open_range(
    key: &SecretKey,
    name: &str,
    sealed: &[u8],
    range: std::ops::Range<u64>,
) -> Result<Vec<u8>, CryptError> {
    let header = Header::parse(sealed)?;
    let span = chunks::span(&header, range);
    let c = chunks::ObjectCipher::new(key, name, header);
    let end = (span.sealed.end as usize).min(sealed.len());
    let start = (span.sealed.start as usize).min(end);
    c.open_span(&span, bytes::BytesMut::from(&sealed[start..end]))
        .map(|b| b.to_vec())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    #[test]
    fn a_ranged_read_equals_the_plaintext_slice(size in sizes(), a in any::<u64>(), b in any::<u64>()) {
        let key = objects_key();
        let plain = content(size);
        let sealed = chunks::seal(&key, "blobs/hmac/aa/x", &plain);
        prop_assert_eq!(sealed.len() as u64, Header::parse(&sealed).unwrap().sealed_len());
        prop_assert_eq!(chunks::plain_len_of(sealed.len() as u64), Some(size as u64));
        let n = size as u64 + 1;
        let (a, b) = (a % n, b % n);
        let (a, b) = (a.min(b), a.max(b));
        let got = open_range(&key, "blobs/hmac/aa/x", &sealed, a..b).unwrap();
        prop_assert_eq!(&got[..], &plain[a as usize..b as usize]);
        prop_assert_eq!(chunks::open(&key, "blobs/hmac/aa/x", &sealed).unwrap(), plain);
    }

    #[test]
    fn truncation_at_or_near_a_chunk_boundary_is_detected(size in sizes(), cut in 0u64..5, d in -1i64..=1) {
        let key = objects_key();
        let sealed = chunks::seal(&key, "logs/d/1.json", &content(size));
        let at = ((HEADER_LEN + cut * SEALED_CHUNK).saturating_add_signed(d) as usize)
            .min(sealed.len() - 1);
        let short = &sealed[..at];
        prop_assert!(chunks::open(&key, "logs/d/1.json", short).is_err());
        // Also with the header's length rewritten to what the shorter object would say.
        if at >= HEADER_LEN as usize {
            if let Some(len) = chunks::plain_len_of(at as u64) {
                let mut forged = short.to_vec();
                forged[40..48].copy_from_slice(&len.to_le_bytes());
                prop_assert!(chunks::open(&key, "logs/d/1.json", &forged).is_err());
            }
        }
    }
}

#[test]
fn every_single_bit_flip_of_a_small_object_is_detected() {
    let key = objects_key();
    for size in [0usize, 1, 100] {
        let sealed = chunks::seal(&key, "snapshots/d/1.json", &content(size));
        for bit in 0..sealed.len() * 8 {
            let mut bad = sealed.clone();
            bad[bit / 8] ^= 1 << (bit % 8);
            assert!(
                chunks::open(&key, "snapshots/d/1.json", &bad).is_err(),
                "size {size}: flipping bit {bit} went unnoticed"
            );
        }
    }
}

#[test]
fn a_flip_anywhere_in_a_two_chunk_object_fails_only_the_ranges_touching_it() {
    let key = objects_key();
    let name = "blobs/hmac/bb/y";
    let plain = content(CHUNK as usize + 100);
    let sealed = chunks::seal(&key, name, &plain);
    let second = HEADER_LEN + SEALED_CHUNK;
    for at in 0..sealed.len() {
        let mut bad = sealed.clone();
        bad[at] ^= 1 << (at % 8);
        assert!(chunks::open(&key, name, &bad).is_err(), "byte {at}");
        if at < HEADER_LEN as usize {
            continue;
        }
        let in_first = (at as u64) < second;
        let (hit, other) = if in_first {
            (0..10, CHUNK..CHUNK + 10)
        } else {
            (CHUNK..CHUNK + 10, 0..10)
        };
        assert!(open_range(&key, name, &bad, hit).is_err(), "byte {at}");
        let o = open_range(&key, name, &bad, other.clone()).unwrap();
        assert_eq!(o, &plain[other.start as usize..other.end as usize]);
    }
}

#[test]
fn swapped_or_reordered_chunks_are_detected() {
    let key = objects_key();
    let name = "blobs/hmac/cc/z";
    let sealed = chunks::seal(&key, name, &content(3 * CHUNK as usize));
    let c = |i: u64| {
        (HEADER_LEN + i * SEALED_CHUNK) as usize..(HEADER_LEN + (i + 1) * SEALED_CHUNK) as usize
    };
    let mut swapped = sealed[..HEADER_LEN as usize].to_vec();
    for i in [1, 0, 2] {
        swapped.extend_from_slice(&sealed[c(i)]);
    }
    assert_eq!(
        chunks::open(&key, name, &swapped).unwrap_err(),
        CryptError::Unauthentic { chunk: 0 }
    );
    // The last chunk moved forward (flag mismatch) fails too.
    let mut last_first = sealed[..HEADER_LEN as usize].to_vec();
    for i in [2, 1, 0] {
        last_first.extend_from_slice(&sealed[c(i)]);
    }
    assert!(chunks::open(&key, name, &last_first).is_err());
    // A tag alone moved between chunks.
    let mut tags = sealed.clone();
    let t0 = c(0).end - TAG_LEN as usize..c(0).end;
    let t1 = c(1).end - TAG_LEN as usize..c(1).end;
    let (a, b) = (sealed[t0.clone()].to_vec(), sealed[t1.clone()].to_vec());
    tags[t0].copy_from_slice(&b);
    tags[t1].copy_from_slice(&a);
    assert!(chunks::open(&key, name, &tags).is_err());
}

#[test]
fn an_object_under_another_name_or_key_does_not_open() {
    let sub = kat_key().subkeys();
    let plain = content(5000);
    let sha = songfs::content::hash_bytes(&plain).hash;
    let name = names::stored_key(&sub.names, &songfs::content::blob_key(&sha));
    let other = names::stored_key(&sub.names, &songfs::content::blob_key(&"0".repeat(64)));
    let sealed = chunks::seal(&sub.objects, &name, &plain);
    assert_eq!(chunks::open(&sub.objects, &name, &sealed).unwrap(), plain);
    assert_eq!(
        chunks::open(&sub.objects, &other, &sealed).unwrap_err(),
        CryptError::Unauthentic { chunk: 0 }
    );
    assert!(chunks::open(&sub.objects, "logs/a/000000000002.json", &sealed).is_err());
    let stranger = MasterKey::generate().subkeys();
    assert!(chunks::open(&stranger.objects, &name, &sealed).is_err());
    assert!(matches!(
        chunks::open(&sub.objects, &name, br#"{"changes": []}"#),
        Err(CryptError::NotSealed(_))
    ));
}

// ------------------------------------------------------------ the encrypted store

mod common;
#[path = "sync_util/mod.rs"]
mod sync_util;

use std::ops::Range;
use std::path::Path;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use bytes::Bytes;
use common::mount::{run_ok, wait_until, Mount};
use common::s3server::S3Server;
use songfs::store::encrypted::EncryptedStore;
use songfs::store::{local::LocalStore, ObjectStore, StoreError, StoreResult};

/// An inner store that remembers the byte ranges asked of it.
struct Recording {
    inner: Arc<dyn ObjectStore>,
    ranges: Mutex<Vec<Range<u64>>>,
    gets: Mutex<u64>,
}

#[async_trait]
impl ObjectStore for Recording {
    async fn put(&self, key: &str, data: Bytes) -> StoreResult<()> {
        self.inner.put(key, data).await
    }
    async fn put_file(&self, key: &str, path: &Path) -> StoreResult<()> {
        self.inner.put_file(key, path).await
    }
    async fn put_if_absent(&self, key: &str, data: Bytes) -> StoreResult<bool> {
        self.inner.put_if_absent(key, data).await
    }
    async fn get(&self, key: &str) -> StoreResult<Bytes> {
        *self.gets.lock().unwrap() += 1;
        self.inner.get(key).await
    }
    async fn get_range(&self, key: &str, range: Range<u64>) -> StoreResult<Bytes> {
        self.ranges.lock().unwrap().push(range.clone());
        self.inner.get_range(key, range).await
    }
    async fn head(&self, key: &str) -> StoreResult<Option<u64>> {
        self.inner.head(key).await
    }
    async fn list(&self, prefix: &str) -> StoreResult<Vec<String>> {
        self.inner.list(prefix).await
    }
    async fn delete(&self, key: &str) -> StoreResult<()> {
        self.inner.delete(key).await
    }
    fn describe(&self) -> String {
        self.inner.describe()
    }
}

fn blob_of(plain: &[u8]) -> String {
    songfs::content::blob_key(&songfs::content::hash_bytes(plain).hash)
}

/// Every 32-byte window of `needle` that occurs anywhere in `hay`.
fn shares_a_window(hay: &[u8], needle: &[u8]) -> bool {
    let windows: std::collections::HashSet<&[u8]> = needle.windows(32).step_by(7).collect();
    hay.windows(32).any(|w| windows.contains(w))
}

async fn contract(inner: Arc<dyn ObjectStore>, scratch: &Path) {
    let mk = MasterKey::generate();
    let store = EncryptedStore::new(inner.clone(), &mk, scratch.to_path_buf());
    let plain = content(3 * CHUNK as usize + 5);
    let key = blob_of(&plain);
    let file = scratch.join("upload.bin");
    std::fs::create_dir_all(scratch).unwrap();
    std::fs::write(&file, &plain).unwrap();
    store.put_file(&key, &file).await.unwrap();
    assert_eq!(store.head(&key).await.unwrap(), Some(plain.len() as u64));
    assert_eq!(&store.get(&key).await.unwrap()[..], &plain[..]);
    for r in [
        0..1,
        CHUNK - 3..CHUNK + 3,
        2 * CHUNK..3 * CHUNK,
        3 * CHUNK..3 * CHUNK + 5,
        10..plain.len() as u64 + 100,
    ] {
        let got = store.get_range(&key, r.clone()).await.unwrap();
        let end = (r.end as usize).min(plain.len());
        assert_eq!(&got[..], &plain[r.start as usize..end], "{r:?}");
    }
    // The inner store holds the blob under its keyed name only, sealed.
    let stored = store.stored_name(&key);
    assert!(inner.head(&key).await.unwrap().is_none());
    let sealed = inner.get(&stored).await.unwrap();
    assert!(!shares_a_window(&sealed, &plain));
    assert!(!stored.contains(&key[key.rfind('/').unwrap() + 1..]));
    // Logs keep their names but are sealed; put_if_absent keeps the first.
    let log = br#"{"device_id":"d","changes":[{"lyrics":"Moonlight over Lisbon"}]}"#;
    assert!(store
        .put_if_absent("logs/d/000000000001.json", Bytes::from_static(log))
        .await
        .unwrap());
    assert!(!store
        .put_if_absent("logs/d/000000000001.json", Bytes::from_static(b"{}"))
        .await
        .unwrap());
    assert_eq!(
        &store.get("logs/d/000000000001.json").await.unwrap()[..],
        log
    );
    let raw = inner.get("logs/d/000000000001.json").await.unwrap();
    assert!(!raw.windows(9).any(|w| w == b"Moonlight"));
    assert_eq!(
        store.list("logs/").await.unwrap(),
        vec!["logs/d/000000000001.json".to_string()]
    );
    assert!(matches!(
        store.get("logs/d/000000000009.json").await,
        Err(StoreError::NotFound { key }) if key == "logs/d/000000000009.json"
    ));
    // Another key (a stranger's store, or a wrong master key) opens nothing.
    let stranger = EncryptedStore::new(inner.clone(), &MasterKey::generate(), scratch.into());
    assert!(matches!(
        stranger.get("logs/d/000000000001.json").await,
        Err(StoreError::Unauthentic { .. })
    ));
    store.delete(&key).await.unwrap();
    assert!(inner.head(&stored).await.unwrap().is_none());
}

#[tokio::test]
async fn encrypted_store_contract_over_the_folder_store() {
    let dir = tempfile::tempdir().unwrap();
    let inner: Arc<dyn ObjectStore> = Arc::new(LocalStore::new(dir.path().join("store")));
    contract(inner, &dir.path().join("scratch")).await;
}

#[tokio::test]
async fn encrypted_store_contract_over_s3() {
    let server = S3Server::start();
    let dir = tempfile::tempdir().unwrap();
    contract(server.open_store("enc").await, dir.path()).await;
}

#[tokio::test]
async fn a_ranged_read_fetches_and_opens_only_the_chunks_it_covers() {
    let dir = tempfile::tempdir().unwrap();
    let rec = Arc::new(Recording {
        inner: Arc::new(LocalStore::new(dir.path().join("store"))),
        ranges: Mutex::new(Vec::new()),
        gets: Mutex::new(0),
    });
    let store = EncryptedStore::new(rec.clone(), &MasterKey::generate(), dir.path().join("s"));
    let plain = content(8 * CHUNK as usize);
    let key = blob_of(&plain);
    store.put(&key, Bytes::from(plain.clone())).await.unwrap();
    let got = store
        .get_range(&key, 5 * CHUNK + 100..5 * CHUNK + 200)
        .await
        .unwrap();
    assert_eq!(
        &got[..],
        &plain[5 * CHUNK as usize + 100..5 * CHUNK as usize + 200]
    );
    assert_eq!(*rec.gets.lock().unwrap(), 0, "no whole-object GET");
    let chunk5 = HEADER_LEN + 5 * SEALED_CHUNK..HEADER_LEN + 6 * SEALED_CHUNK;
    let asked = rec.ranges.lock().unwrap().clone();
    assert!(
        asked.iter().all(|r| *r == (0..HEADER_LEN) || *r == chunk5),
        "asked {asked:?}"
    );
    assert_eq!(store.opened_chunks(), 1);
    // The header is remembered for a blob: the next read asks for its chunks only.
    rec.ranges.lock().unwrap().clear();
    store
        .get_range(&key, 7 * CHUNK..7 * CHUNK + 1)
        .await
        .unwrap();
    let asked = rec.ranges.lock().unwrap().clone();
    assert_eq!(
        asked,
        vec![HEADER_LEN + 7 * SEALED_CHUNK..HEADER_LEN + 8 * SEALED_CHUNK]
    );
}

/// The first read of a file starts at its first chunk: header and chunks come in one
/// request (one round trip, no tiny header-only answer), and it still opens.
#[tokio::test]
async fn a_read_from_the_start_is_one_request_for_header_and_chunks() {
    let dir = tempfile::tempdir().unwrap();
    let rec = Arc::new(Recording {
        inner: Arc::new(LocalStore::new(dir.path().join("store"))),
        ranges: Mutex::new(Vec::new()),
        gets: Mutex::new(0),
    });
    let mk = MasterKey::generate();
    let writer = EncryptedStore::new(rec.clone(), &mk, dir.path().join("w"));
    let plain = content(3 * CHUNK as usize + 7);
    let key = blob_of(&plain);
    writer.put(&key, Bytes::from(plain.clone())).await.unwrap();
    // A new device: nothing remembered.
    let reader = EncryptedStore::new(rec.clone(), &mk, dir.path().join("r"));
    rec.ranges.lock().unwrap().clear();
    let got = reader.get_range(&key, 0..CHUNK + 10).await.unwrap();
    assert_eq!(&got[..], &plain[..CHUNK as usize + 10]);
    assert_eq!(
        rec.ranges.lock().unwrap().clone(),
        vec![0..HEADER_LEN + 2 * SEALED_CHUNK]
    );
    // A range ending past the object (its last chunk is short) reads to its end.
    let reader = EncryptedStore::new(rec.clone(), &mk, dir.path().join("r2"));
    let got = reader.get_range(&key, 0..4 * CHUNK).await.unwrap();
    assert_eq!(&got[..], &plain[..]);
}

/// Rewrites the sealed file of `key` in the folder store under `root`.
fn alter(root: &Path, stored: &str, f: impl FnOnce(&mut Vec<u8>)) {
    let p = root.join(stored);
    let mut b = std::fs::read(&p).unwrap();
    f(&mut b);
    std::fs::write(&p, b).unwrap();
}

#[tokio::test]
async fn altered_truncated_swapped_and_moved_objects_are_refused_with_their_key() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("store");
    let inner: Arc<dyn ObjectStore> = Arc::new(LocalStore::new(&root));
    let store = EncryptedStore::new(inner.clone(), &MasterKey::generate(), dir.path().join("s"));
    let plain = content(3 * CHUNK as usize + 10);
    let key = blob_of(&plain);
    let stored = store.stored_name(&key);
    let fresh = || async { store.put(&key, Bytes::from(plain.clone())).await.unwrap() };
    let refused = |r: StoreResult<Bytes>| match r {
        Err(StoreError::Unauthentic { key: k, .. }) => k == key,
        other => panic!("expected a refusal, got {:?}", other.map(|b| b.len())),
    };
    let c = |i: u64| (HEADER_LEN + i * SEALED_CHUNK) as usize;

    // One flipped bit in chunk 1: whole reads and ranges touching chunk 1 fail, others don't.
    fresh().await;
    alter(&root, &stored, |b| b[c(1) + 77] ^= 0x10);
    assert!(refused(store.get(&key).await));
    assert!(refused(store.get_range(&key, CHUNK + 5..CHUNK + 6).await));
    assert!(refused(store.get_range(&key, 10..CHUNK + 1).await));
    assert_eq!(
        &store.get_range(&key, 0..CHUNK).await.unwrap()[..],
        &plain[..CHUNK as usize]
    );
    assert!(store.get_range(&key, 2 * CHUNK..3 * CHUNK).await.is_ok());

    // Truncated at a chunk boundary (the last chunk dropped).
    fresh().await;
    alter(&root, &stored, |b| b.truncate(c(3)));
    assert!(refused(store.get(&key).await));
    assert!(refused(
        store.get_range(&key, 2 * CHUNK..3 * CHUNK + 10).await
    ));

    // Chunks 0 and 1 swapped.
    fresh().await;
    alter(&root, &stored, |b| {
        let one = b[c(1)..c(2)].to_vec();
        let zero = b[c(0)..c(1)].to_vec();
        b[c(0)..c(1)].copy_from_slice(&one);
        b[c(1)..c(2)].copy_from_slice(&zero);
    });
    assert!(refused(store.get(&key).await));
    assert!(refused(store.get_range(&key, 0..10).await));

    // A valid sealed blob moved under another blob's name.
    let other = content(1000);
    let other_key = blob_of(&other);
    store.put(&other_key, Bytes::from(other)).await.unwrap();
    fresh().await;
    let theirs = root.join(store.stored_name(&other_key));
    std::fs::copy(root.join(&stored), &theirs).unwrap();
    assert!(matches!(
        store.get(&other_key).await,
        Err(StoreError::Unauthentic { key: k, .. }) if k == other_key
    ));

    // A change log written by someone with store access but not the key.
    let forged = br#"{"device_id":"d","sync_version":1,"changes":[]}"#;
    inner
        .put("logs/d/000000000001.json", Bytes::from_static(forged))
        .await
        .unwrap();
    let err = store.get("logs/d/000000000001.json").await.unwrap_err();
    assert!(
        err.to_string().contains("logs/d/000000000001.json") && err.to_string().contains("refused"),
        "{err}"
    );
}

// ------------------------------------------------------------ through the binary

const PASSPHRASE: &str = "correct horse battery staple 7f3a";
const WEAK_KDF: (&str, &str) = ("SONGFS_TEST_WEAK_KDF", "1");

/// A file holding `pass` (for SONGFS_PASSPHRASE_FILE), in `dir`.
fn pass_file(dir: &Path, name: &str, pass: &str) -> String {
    let p = dir.join(name);
    std::fs::write(&p, format!("{pass}\n")).unwrap();
    p.display().to_string()
}

/// Every file under `dir`, with its bytes.
fn all_files(dir: &Path) -> Vec<(std::path::PathBuf, Vec<u8>)> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else if let Ok(b) = std::fs::read(&p) {
                out.push((p, b));
            }
        }
    }
    out.sort();
    out
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

/// The passphrase appears in none of these files (config, logs, state, store).
fn assert_passphrase_nowhere(dirs: &[&Path], outputs: &[&[u8]]) {
    for d in dirs {
        for (p, b) in all_files(d) {
            assert!(
                !contains(&b, PASSPHRASE.as_bytes()),
                "the passphrase is in {}",
                p.display()
            );
        }
    }
    for o in outputs {
        assert!(
            !contains(o, PASSPHRASE.as_bytes()),
            "the passphrase is in command output"
        );
    }
}

#[test]
fn init_encrypt_a_wrong_passphrase_and_a_passphrase_change() {
    let tmp = tempfile::tempdir().unwrap();
    let right = pass_file(tmp.path(), "right", PASSPHRASE);
    let wrong = pass_file(tmp.path(), "wrong", "not the passphrase at all");
    let a = Mount::init_with(
        None,
        &["--encrypt"],
        &[WEAK_KDF, ("SONGFS_PASSPHRASE_FILE", &right)],
        &[],
    );
    let url = format!("file://{}", a.store.display());
    let record: serde_json::Value =
        serde_json::from_slice(&std::fs::read(a.store.join("songfs.json")).unwrap()).unwrap();
    assert_eq!(record["encryption"]["format"], "SFE1");
    assert_eq!(record["encryption"]["kdf"]["algorithm"], "argon2id");
    let cfg: serde_json::Value =
        serde_json::from_slice(&std::fs::read(a.home.join("config.json")).unwrap()).unwrap();
    assert_eq!(cfg["store"]["encrypted"], true);

    // A second device with the wrong passphrase: one clear line, non-zero, nothing written.
    let b_home = tmp.path().join("b");
    let out = common::songfs(&b_home)
        .args(["init", "--store", &url, "--device-name", "b"])
        .env("SONGFS_PASSPHRASE_FILE", &wrong)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(err.contains("wrong passphrase"), "{err}");
    assert!(!b_home.join("config.json").exists());
    // The right one: the device joins; the keyring keeps it (no file needed afterwards).
    let joined = run_ok(
        common::songfs(&b_home)
            .args(["init", "--store", &url, "--device-name", "b"])
            .env("SONGFS_PASSPHRASE_FILE", &right),
    );
    let status = run_ok(common::songfs(&b_home).args(["sync"]));

    // The passphrase changes on device A: only songfs.json is rewritten.
    let before = all_files(&a.store);
    let newer = pass_file(tmp.path(), "newer", "a brand new passphrase 91");
    let mut a = a;
    a.set_env("SONGFS_PASSPHRASE_FILE", None);
    let change = run_ok(
        a.songfs()
            .args(["passphrase", "change"])
            .env("SONGFS_NEW_PASSPHRASE_FILE", &newer),
    );
    let after = all_files(&a.store);
    let changed: Vec<_> = before
        .iter()
        .zip(&after)
        .filter(|(x, y)| x != y)
        .map(|(x, _)| x.0.file_name().unwrap().to_string_lossy().to_string())
        .collect();
    assert_eq!(before.len(), after.len());
    assert_eq!(changed, vec!["songfs.json".to_string()]);
    // A still works from its keyring; B's kept passphrase no longer opens the store: it
    // says so in one line and asks for the new one, which then works.
    run_ok(a.songfs().args(["sync"]));
    let out = common::songfs(&b_home).args(["sync"]).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(err.contains("songfs passphrase enter"), "{err}");
    run_ok(
        common::songfs(&b_home)
            .args(["passphrase", "enter"])
            .env("SONGFS_PASSPHRASE_FILE", &newer),
    );
    run_ok(common::songfs(&b_home).args(["sync"]));
    assert_passphrase_nowhere(
        &[&a.home, &b_home, &a.store],
        &[
            &out.stderr,
            &joined.stderr,
            &status.stderr,
            &change.stderr,
            &change.stdout,
        ],
    );
}

/// The sealed blob objects of a folder store, largest first.
fn sealed_blobs(store: &Path) -> Vec<std::path::PathBuf> {
    let mut v: Vec<_> = all_files(&store.join("blobs/hmac"))
        .into_iter()
        .filter(|(p, _)| p.extension().is_none())
        .map(|(p, b)| (b.len(), p))
        .collect();
    v.sort();
    v.into_iter().rev().map(|(_, p)| p).collect()
}

#[test]
fn a_mount_over_an_encrypted_store_reads_back_and_refuses_an_altered_blob() {
    let tmp = tempfile::tempdir().unwrap();
    let right = pass_file(tmp.path(), "right", PASSPHRASE);
    let mut m = Mount::init_with(
        None,
        &["--encrypt"],
        &[WEAK_KDF, ("SONGFS_PASSPHRASE_FILE", &right)],
        &[],
    );
    // The mount gets the passphrase from the keyring.
    m.set_env("SONGFS_PASSPHRASE_FILE", None);
    m.mount();
    let audio = common::mount::bytes(7, 5 * CHUNK as usize + 123);
    std::fs::create_dir_all(m.path("Moonlight Sessions")).unwrap();
    std::fs::write(m.path("Moonlight Sessions/take-three.wav"), &audio).unwrap();
    m.empty_cache();
    assert_eq!(
        std::fs::read(m.path("Moonlight Sessions/take-three.wav")).unwrap(),
        audio
    );
    for (p, b) in all_files(&m.store) {
        assert!(!shares_a_window(&b, &audio), "audio in {}", p.display());
        assert!(
            !contains(&b, b"take-three") && !contains(&b, b"Moonlight"),
            "{}",
            p.display()
        );
    }
    assert!(all_files(&m.store)
        .iter()
        .all(|(p, _)| !p.to_string_lossy().contains("sha256")));

    // One byte of the blob altered in the store: EIO, logged with the key, not cached.
    let blob = sealed_blobs(&m.store)[0].clone();
    let good = std::fs::read(&blob).unwrap();
    let mut bad = good.clone();
    bad[HEADER_LEN as usize + 2 * SEALED_CHUNK as usize + 9] ^= 1;
    std::fs::write(&blob, &bad).unwrap();
    m.empty_cache();
    let err = std::fs::read(m.path("Moonlight Sessions/take-three.wav")).unwrap_err();
    assert_eq!(err.raw_os_error(), Some(libc::EIO), "{err}");
    assert!(
        wait_until(std::time::Duration::from_secs(5), || m
            .daemon_log()
            .contains("refused")),
        "{}",
        m.daemon_log()
    );
    // Restored, the same mount reads it: nothing of the bad copy was kept.
    std::fs::write(&blob, &good).unwrap();
    assert_eq!(
        std::fs::read(m.path("Moonlight Sessions/take-three.wav")).unwrap(),
        audio
    );
}

/// `songfs sync --json` until the namespace has nothing waiting for upload; the last line.
fn settle(m: &Mount) -> serde_json::Value {
    let mut last = serde_json::Value::Null;
    for _ in 0..60 {
        let out = m.songfs().args(["sync", "--json"]).output().unwrap();
        let text = String::from_utf8_lossy(&out.stdout).to_string();
        last = text
            .lines()
            .rev()
            .find_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .unwrap_or(serde_json::Value::Null);
        if last["namespace"]["waiting_for_upload"].as_u64() == Some(0) {
            return last;
        }
        std::thread::sleep(std::time::Duration::from_millis(250));
    }
    panic!("uploads never finished: {last}");
}

fn db_text(db: &Path, sql: &str) -> String {
    rusqlite::Connection::open(db)
        .unwrap()
        .query_row(sql, [], |r| r.get(0))
        .unwrap()
}

#[test]
fn two_devices_on_an_encrypted_folder_store_sync_files_and_the_database_and_refuse_a_forged_log() {
    two_devices_end_to_end(None);
}

#[test]
fn two_devices_on_an_encrypted_s3_store_sync_files_and_the_database_and_refuse_a_forged_log() {
    let s3 = S3Server::start();
    two_devices_end_to_end(Some(&s3));
}

/// Two devices on one encrypted store (a folder store, or S3 when `s3` is given): files and
/// the database travel, nothing readable is in the store, a forged log is refused.
fn strs(v: &[String]) -> Vec<&str> {
    v.iter().map(String::as_str).collect()
}

fn two_devices_end_to_end(s3: Option<&S3Server>) {
    let tmp = tempfile::tempdir().unwrap();
    let right = pass_file(tmp.path(), "right", PASSPHRASE);
    let (db_a, db_b) = (tmp.path().join("a.db"), tmp.path().join("b.db"));
    sync_util::make_db(&db_a, true);
    sync_util::make_db(&db_b, true);
    let mut env: Vec<(String, String)> = s3.map(|s| s.env()).unwrap_or_default();
    env.push((WEAK_KDF.0.into(), WEAK_KDF.1.into()));
    env.push(("SONGFS_PASSPHRASE_FILE".into(), right.clone()));
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let endpoint = s3.map(|s| s.endpoint());
    let init_args = |db: &Path, encrypt: bool| -> Vec<String> {
        let mut v = vec!["--db".to_string(), db.display().to_string()];
        if encrypt {
            v.push("--encrypt".into());
        }
        if let Some(e) = &endpoint {
            v.extend(["--s3-endpoint".to_string(), e.clone()]);
        }
        v
    };
    let s3_url = s3.map(|s| s.url("two"));
    let mut a = Mount::init_with(s3_url.as_deref(), &strs(&init_args(&db_a, true)), &env, &[]);
    a.set_env("SONGFS_PASSPHRASE_FILE", None);
    a.mount();
    let audio = common::mount::bytes(11, 3 * CHUNK as usize + 999);
    std::fs::create_dir_all(a.path("Lisbon Demos")).unwrap();
    std::fs::write(a.path("Lisbon Demos/harbour-mix.wav"), &audio).unwrap();
    rusqlite::Connection::open(&db_a)
        .unwrap()
        .execute_batch(
            "UPDATE songs SET title = 'Moonlight over Lisbon', \
             lyrics = 'Saudade in the harbour light' WHERE id = 1",
        )
        .unwrap();
    settle(&a);

    let url = s3_url
        .clone()
        .unwrap_or_else(|| format!("file://{}", a.store.display()));
    let mut b = Mount::init_with(Some(&url), &strs(&init_args(&db_b, false)), &env, &[]);
    b.set_env("SONGFS_PASSPHRASE_FILE", None);
    b.mount();
    settle(&b);
    assert_eq!(
        db_text(&db_b, "SELECT title FROM songs WHERE id = 1"),
        "Moonlight over Lisbon"
    );
    assert!(wait_until(std::time::Duration::from_secs(10), || b
        .path("Lisbon Demos/harbour-mix.wav")
        .exists()));
    assert_eq!(
        std::fs::read(b.path("Lisbon Demos/harbour-mix.wav")).unwrap(),
        audio
    );

    // Nothing readable in any object of the store (for S3: every file of the server's).
    let store_files = s3.map(|s| s.data_dir()).unwrap_or_else(|| a.store.clone());
    let objects = all_files(&store_files);
    assert!(objects.len() > 5, "{} objects", objects.len());
    for (p, bytes) in objects {
        for word in [
            &b"Moonlight"[..],
            b"Saudade",
            b"harbour-mix",
            b"Lisbon Demos",
            b"songs",
        ] {
            assert!(
                !contains(&bytes, word),
                "{:?} in {}",
                String::from_utf8_lossy(word),
                p.display()
            );
        }
        assert!(!shares_a_window(&bytes, &audio), "audio in {}", p.display());
    }

    // Someone with write access to the store but not the key drops in a change log, under
    // A's device id, that would rename the song: B refuses it by name and applies nothing
    // from it, and A's next real change still comes through.
    let cfg_a: serde_json::Value =
        serde_json::from_slice(&std::fs::read(a.home.join("config.json")).unwrap()).unwrap();
    let device_a = cfg_a["device_id"].as_str().unwrap().to_string();
    let forged_key = format!("logs/{device_a}/000000000900.json");
    let forged = format!(r#"{{"device_id":"{device_a}","sync_version":1,"seq":900,"changes":[]}}"#);
    match s3 {
        None => std::fs::write(a.store.join(&forged_key), &forged).unwrap(),
        Some(s) => tokio::runtime::Runtime::new().unwrap().block_on(async {
            let raw = s.open_store("two").await;
            raw.put(&forged_key, Bytes::from(forged.clone()))
                .await
                .unwrap();
        }),
    }
    rusqlite::Connection::open(&db_a)
        .unwrap()
        .execute_batch("UPDATE songs SET lyrics = 'A second verse' WHERE id = 1")
        .unwrap();
    settle(&a);
    let out = b.songfs().args(["sync"]).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&forged_key) && err.contains("refused"),
        "{err}"
    );
    assert_eq!(
        db_text(&db_b, "SELECT lyrics FROM songs WHERE id = 1"),
        "A second verse"
    );
    assert_eq!(
        db_text(&db_b, "SELECT title FROM songs WHERE id = 1"),
        "Moonlight over Lisbon"
    );
    assert_passphrase_nowhere(
        &[&a.home, &b.home, &store_files],
        &[&out.stdout, &out.stderr],
    );
}

#[test]
fn an_encrypted_s3_mount_started_while_the_store_is_down_comes_up_offline() {
    let tmp = tempfile::tempdir().unwrap();
    let right = pass_file(tmp.path(), "right", PASSPHRASE);
    let mut s3 = S3Server::start();
    let mut env: Vec<(String, String)> = s3.env();
    env.push((WEAK_KDF.0.into(), WEAK_KDF.1.into()));
    env.push(("SONGFS_PASSPHRASE_FILE".into(), right.clone()));
    let env_ref: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let endpoint = s3.endpoint();
    let mut m = Mount::init_with(
        Some(&s3.url("enc")),
        &["--encrypt", "--s3-endpoint", &endpoint],
        &env_ref,
        &["--fetch-timeout", "1"],
    );
    m.set_env("SONGFS_PASSPHRASE_FILE", None);
    m.mount();
    std::fs::write(m.path("a.wav"), b"before the outage").unwrap();
    m.unmount();
    s3.stop();
    m.mount();
    let s = m.status();
    assert_eq!(s["store_encrypted"], true, "{s}");
    assert_eq!(s["daemon"]["store_reachable"], false, "{s}");
    assert_eq!(
        std::fs::read(m.path("a.wav")).unwrap(),
        b"before the outage"
    );
    std::fs::write(m.path("b.wav"), b"written offline").unwrap();
    s3.restart();
    assert!(m.wait_uploads(std::time::Duration::from_secs(60)));
    let objects = all_files(&s3.data_dir());
    assert!(objects
        .iter()
        .all(|(_, b)| !contains(b, b"written offline")));
    assert!(objects
        .iter()
        .any(|(p, _)| p.to_string_lossy().contains("blobs/hmac")));
}

/// After a reboot (the kernel keyring emptied) or `songfs passphrase forget`, `songfs mount`
/// on a terminal asks for the passphrase and comes up; off a terminal it fails saying what
/// to run, and mounts nothing.
#[test]
fn a_mount_without_a_kept_passphrase_asks_on_a_terminal_and_says_what_to_run_off_one() {
    let tmp = tempfile::tempdir().unwrap();
    let right = pass_file(tmp.path(), "right", PASSPHRASE);
    let mut a = Mount::init_with(
        None,
        &["--encrypt"],
        &[WEAK_KDF, ("SONGFS_PASSPHRASE_FILE", &right)],
        &[],
    );
    a.set_env("SONGFS_PASSPHRASE_FILE", None);
    a.mount();
    std::fs::write(a.path("take.wav"), b"a take kept in the store").unwrap();
    a.unmount();
    let forget = run_ok(a.songfs().args(["passphrase", "forget"]));
    assert!(
        String::from_utf8_lossy(&forget.stderr).contains("forgot the passphrase"),
        "{}",
        String::from_utf8_lossy(&forget.stderr)
    );

    // Off a terminal: one clear failure, nothing mounted.
    let out = a.mount_output();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "mounted without a passphrase: {err}");
    assert!(err.contains("songfs passphrase enter"), "{err}");
    assert!(!songfs::cli::mount::is_mounted(&a.dir));

    // On a terminal (util-linux `script` gives it a pseudo-terminal; the passphrase is
    // typed into it): asked once, then mounted, and the kept passphrase serves later runs.
    let cmd = format!(
        "'{}' mount '{}'",
        common::songfs_bin().display(),
        a.dir.display()
    );
    let mut typed = std::process::Command::new("script");
    typed
        .args(["-q", "-e", "-c", &cmd, "/dev/null"])
        .env("SONGFS_HOME", &a.home)
        .env(WEAK_KDF.0, WEAK_KDF.1)
        .env_remove("SONGFS_PASSPHRASE_FILE")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let mut child = typed.spawn().unwrap();
    use std::io::Write;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(format!("{PASSPHRASE}\n").as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    a.adopt_daemon();
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "mount on a terminal failed: {text}");
    assert!(text.contains("Passphrase of"), "not asked: {text}");
    assert_eq!(
        std::fs::read(a.path("take.wav")).unwrap(),
        b"a take kept in the store"
    );
    a.unmount();
    a.mount();
}
