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
    c.open_span(&span, &sealed[start..end])
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
