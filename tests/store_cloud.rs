//! The Google Drive and Dropbox stores against API-compatible fakes on 127.0.0.1
//! (tests/fakes/), reached through the transport's host rewrite: the whole store
//! contract on both, then what the providers do that a folder does not: ranged reads
//! that fetch only the range, throttling (429 + Retry-After) waited out with bounded
//! backoff, Drive's duplicate names, and a revoked sign-in that says what to do.

mod common;

use std::time::{Duration, Instant};

use bytes::Bytes;
use common::cloudfake::{CloudFake, Provider};
use common::contract::{pattern, Fixture};
use songfs::store::opendal_http::Throttle;
use songfs::store::StoreError;

async fn gdrive() -> Fixture {
    let fake = CloudFake::start(Provider::Gdrive);
    Fixture::new(fake.open_store("SongFactory")).keeping(fake)
}

async fn dropbox() -> Fixture {
    let fake = CloudFake::start(Provider::Dropbox);
    Fixture::new(fake.open_store("SongFactory")).keeping(fake)
}

contract_suite!(gdrive_store, gdrive);
contract_suite!(dropbox_store, dropbox);

const BOTH: [Provider; 2] = [Provider::Gdrive, Provider::Dropbox];

#[tokio::test]
async fn a_ranged_read_downloads_the_range_not_the_file() {
    for provider in BOTH {
        let fake = CloudFake::start(provider);
        let store = fake.open_store("SF");
        let data = pattern(3 << 20, 5);
        store
            .put("blobs/big", Bytes::from(data.clone()))
            .await
            .unwrap();
        let got = store
            .get_range("blobs/big", 2_000_000..2_000_100)
            .await
            .unwrap();
        assert_eq!(&got[..], &data[2_000_000..2_000_100], "{provider:?}");
        let downloads: Vec<_> = fake
            .requests()
            .into_iter()
            .filter(|r| r["range"].is_string())
            .collect();
        assert!(
            !downloads.is_empty(),
            "{provider:?}: no ranged request was made"
        );
        for r in &downloads {
            assert!(r["sent"].as_u64().unwrap() <= 100, "{provider:?}: sent {r}");
            assert_eq!(r["status"], 206, "{provider:?}: {r}");
        }
    }
}

#[tokio::test]
async fn throttled_calls_are_waited_out_with_bounded_backoff() {
    for provider in BOTH {
        let fake = CloudFake::start(provider);
        let store = fake.open_store("SF");
        store.put("k", Bytes::from_static(b"v")).await.unwrap();
        // The next three calls answer 429 with Retry-After: 1.
        fake.control("/_fake/throttle", r#"{"count": 3, "retry_after": 1}"#);
        let started = Instant::now();
        assert_eq!(&store.get("k").await.unwrap()[..], b"v", "{provider:?}");
        let waited = started.elapsed();
        // Three waits of 1 s plus up to half again of jitter each: not a tight loop,
        // not an unbounded one.
        assert!(
            waited >= Duration::from_secs(3),
            "{provider:?}: retried too fast: {waited:?}"
        );
        assert!(waited < Duration::from_secs(8), "{provider:?}: {waited:?}");
        let throttled = fake
            .requests()
            .iter()
            .filter(|r| r["status"] == 429)
            .count();
        assert_eq!(throttled, 3, "{provider:?}");
    }
}

/// Issue 9: a Drive or Dropbox account whose storage is used up gets the provider's own
/// answer (Drive: 403 `storageQuotaExceeded`, Dropbox: 409 `insufficient_space`); the
/// user is told the account is full and what to do, not that permission is missing,
/// and the same upload works once space is freed.
#[tokio::test]
async fn a_full_account_is_told_as_full_and_the_upload_works_once_space_is_freed() {
    for provider in BOTH {
        let fake = CloudFake::start(provider);
        let store = fake.open_store("SF");
        fake.control("/_fake/full", r#"{"full": true}"#);
        let err = store
            .put("blobs/k", Bytes::from_static(b"audio"))
            .await
            .unwrap_err();
        let text = err.to_string();
        assert!(
            !matches!(err, StoreError::Denied { .. }),
            "{provider:?}: a full account reported as denied: {text}"
        );
        assert!(
            text.contains("is full") && text.contains("free some space"),
            "{provider:?}: {text}"
        );
        fake.control("/_fake/full", r#"{"full": false}"#);
        store
            .put("blobs/k", Bytes::from_static(b"audio"))
            .await
            .unwrap();
        assert_eq!(&store.get("blobs/k").await.unwrap()[..], b"audio");
    }
}

/// Upload-session requests the fake saw (Drive's resumable PUTs, Dropbox's
/// upload_session calls), and the bytes they carried.
fn session_requests(fake: &CloudFake) -> Vec<serde_json::Value> {
    fake.requests()
        .into_iter()
        .filter(|r| {
            let path = r["path"].as_str().unwrap_or("");
            (r["method"] == "PUT" && path.starts_with("/upload/drive/"))
                || path.starts_with("/2/files/upload_session/")
        })
        .collect()
}

#[tokio::test]
async fn a_large_file_goes_up_in_chunks_and_a_lost_answer_resumes_instead_of_restarting() {
    let dir = tempfile::tempdir().unwrap();
    for provider in BOTH {
        let fake = CloudFake::start(provider);
        let store = fake.open_store("SF");
        // 2.5 chunks: the answer to the first chunk after the start is lost, then the
        // last one's (the file is already committed when that answer goes missing).
        // Dropbox's start carries the first chunk and is not counted by the fake.
        let size = 20 << 20;
        let data = pattern(size, 9);
        let file = dir.path().join(format!("{provider:?}.wav"));
        std::fs::write(&file, &data).unwrap();
        let lose = match provider {
            Provider::Gdrive => r#"{"chunks": [0, 2]}"#,
            Provider::Dropbox => r#"{"chunks": [0, 1]}"#,
        };
        fake.control("/_fake/lose", lose);
        store.put_file("blobs/sha256/ab/abcd", &file).await.unwrap();
        let got = store.get("blobs/sha256/ab/abcd").await.unwrap();
        assert_eq!(got.len(), size, "{provider:?}");
        assert!(got[..] == data[..], "{provider:?}: the bytes differ");
        let sessions = session_requests(&fake);
        let lost = sessions.iter().filter(|r| r["status"] == 0).count();
        assert_eq!(lost, 2, "{provider:?}: {sessions:?}");
        let sent: u64 = sessions
            .iter()
            .map(|r| r["received"].as_u64().unwrap())
            .sum();
        let biggest = sessions
            .iter()
            .map(|r| r["received"].as_u64().unwrap())
            .max()
            .unwrap();
        assert!(
            biggest <= 8 << 20,
            "{provider:?}: a request carried {biggest} bytes"
        );
        // Resumed: at most each lost chunk sent again, never the file from zero.
        assert!(
            sent >= size as u64 && sent <= size as u64 + 2 * (8 << 20),
            "{provider:?}: {sent} bytes sent for a {size}-byte file"
        );
        // One file under the name, listed once.
        assert_eq!(
            store.list("blobs/").await.unwrap(),
            vec!["blobs/sha256/ab/abcd"]
        );
        // An existing name is overwritten in place (Drive: the same file's content).
        let other = pattern(size - 5, 3);
        std::fs::write(&file, &other).unwrap();
        store.put_file("blobs/sha256/ab/abcd", &file).await.unwrap();
        assert!(store.get("blobs/sha256/ab/abcd").await.unwrap()[..] == other[..]);
        assert_eq!(
            store.list("blobs/").await.unwrap(),
            vec!["blobs/sha256/ab/abcd"]
        );
    }
}

#[tokio::test]
async fn a_file_over_dropboxs_single_upload_limit_arrives_whole() {
    // Dropbox (and the fake) refuse one upload over 150 MiB.
    let fake = CloudFake::start(Provider::Dropbox);
    let store = fake.open_store("SF");
    let size = (150 << 20) + 12345;
    let data = Bytes::from(pattern(size, 4));
    store.put("blobs/long-take", data.clone()).await.unwrap();
    assert_eq!(
        store.head("blobs/long-take").await.unwrap(),
        Some(size as u64)
    );
    let tail = store
        .get_range("blobs/long-take", size as u64 - 1000..size as u64)
        .await
        .unwrap();
    assert_eq!(&tail[..], &data[size - 1000..]);
    assert!(session_requests(&fake).len() >= 19);
}

#[tokio::test]
async fn a_full_account_fails_a_large_upload_as_full_and_keeps_nothing_half_written() {
    let dir = tempfile::tempdir().unwrap();
    for provider in BOTH {
        let fake = CloudFake::start(provider);
        let store = fake.open_store("SF");
        let file = dir.path().join("big.wav");
        std::fs::write(&file, pattern(12 << 20, 2)).unwrap();
        fake.control("/_fake/full", r#"{"full": true}"#);
        let err = store
            .put_file("blobs/big", &file)
            .await
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("is full") && err.contains("free some space"),
            "{provider:?}: {err}"
        );
        assert_eq!(store.head("blobs/big").await.unwrap(), None, "{provider:?}");
        fake.control("/_fake/full", r#"{"full": false}"#);
        store.put_file("blobs/big", &file).await.unwrap();
        assert_eq!(store.head("blobs/big").await.unwrap(), Some(12 << 20));
    }
}

#[tokio::test]
async fn throttling_past_the_bound_fails_as_transient_not_forever() {
    let fake = CloudFake::start(Provider::Dropbox);
    let store = fake.open_store_with(
        "SF",
        Throttle {
            max_attempts: 3,
            base_delay: Duration::from_millis(50),
            max_wait: Duration::from_millis(200),
        },
    );
    store.put("k", Bytes::from_static(b"v")).await.unwrap();
    fake.control("/_fake/throttle", r#"{"count": 100, "retry_after": 30}"#);
    let started = Instant::now();
    let err = store.get("k").await.unwrap_err();
    assert!(err.is_transient(), "{err:?}");
    assert!(
        err.to_string().contains("429") || err.to_string().contains("throttl"),
        "{err}"
    );
    // Retry-After 30 s is cut to max_wait: two waits of at most 200 ms.
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
    let throttled = fake
        .requests()
        .iter()
        .filter(|r| r["status"] == 429)
        .count();
    assert_eq!(throttled, 3, "tries past the bound");
}

#[tokio::test]
async fn drive_duplicate_names_list_once_and_read_whole() {
    let fake = CloudFake::start(Provider::Gdrive);
    let store = fake.open_store("SF");
    let data = Bytes::from(pattern(50_000, 7));
    let key = "blobs/sha256/ab/ab12";
    store.put(key, data.clone()).await.unwrap();
    // A second device uploaded the same blob at the same moment: two files, one name.
    fake.control("/_fake/duplicate", r#"{"name": "ab12"}"#);
    let store = fake.open_store("SF"); // a fresh process: no path cache
    assert_eq!(store.list("blobs/").await.unwrap(), vec![key]);
    assert_eq!(store.get(key).await.unwrap(), data);
    assert_eq!(store.head(key).await.unwrap(), Some(data.len() as u64));
}

#[tokio::test]
async fn a_revoked_sign_in_says_to_log_in_again() {
    for provider in BOTH {
        let fake = CloudFake::start(provider);
        let store = fake.open_store("SF");
        store.put("k", Bytes::from_static(b"v")).await.unwrap();
        fake.control("/_fake/revoke", "");
        let store = fake.open_store_revoked("SF");
        let err = store.get("k").await.unwrap_err();
        assert!(
            matches!(err, StoreError::Denied { .. }),
            "{provider:?}: {err:?}"
        );
        let text = err.to_string();
        assert!(
            text.contains(&format!("songfs login {}", provider.name())),
            "{text}"
        );
        assert!(!text.contains("rt-test"), "{text}");
    }
}

// ------------------------------------------------ sign-in, init, login --list, logout

fn songfs_for(fake: &CloudFake, home: &std::path::Path) -> std::process::Command {
    let mut c = common::songfs(home);
    c.env("SONGFS_KEYRING", "file")
        .env("SONGFS_API_REWRITE", fake.rewrite_env());
    c
}

/// Plays the browser: follows the printed sign-in address to the provider's consent
/// page (the fake says yes at once), then the redirect back to songfs's loopback port.
#[tokio::test]
async fn login_runs_pkce_through_the_loopback_redirect_and_init_uses_the_sign_in() {
    use std::io::BufRead;
    use std::process::Stdio;
    for provider in BOTH {
        let fake = CloudFake::start(provider);
        let home = common::temp_home();
        let name = provider.name();
        let mut login = songfs_for(&fake, home.path())
            .args([
                "login",
                name,
                "--no-browser",
                "--client-id",
                common::cloudfake::CLIENT_ID,
            ])
            .args(["--client-secret", common::cloudfake::CLIENT_SECRET])
            .stdin(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut stderr = std::io::BufReader::new(login.stderr.take().unwrap());
        let mut printed = String::new();
        let url = loop {
            let mut line = String::new();
            assert!(
                stderr.read_line(&mut line).unwrap() > 0,
                "no sign-in address: {printed}"
            );
            printed += &line;
            if let Some(u) = line.trim().strip_prefix("http") {
                break format!("http{u}");
            }
        };
        assert!(url.contains("code_challenge_method=S256"), "{url}");
        assert!(
            url.contains("redirect_uri=http%3A%2F%2F127.0.0.1%3A"),
            "{url}"
        );
        let browser = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap();
        let consent = browser.get(&url).send().await.unwrap();
        assert_eq!(
            consent.status(),
            302,
            "{provider:?}: {}",
            consent.text().await.unwrap()
        );
        let back = consent.headers()["location"].to_str().unwrap().to_string();
        assert!(back.starts_with("http://127.0.0.1:"), "{back}");
        let page = browser
            .get(&back)
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        assert!(page.contains("sign-in received"), "{page}");
        let status = tokio::task::spawn_blocking(move || login.wait())
            .await
            .unwrap()
            .unwrap();
        let mut rest = String::new();
        std::io::Read::read_to_string(&mut stderr, &mut rest).unwrap();
        printed += &rest;
        assert!(status.success(), "{provider:?} login failed: {printed}");
        assert!(printed.contains("signed in"), "{printed}");

        let list = songfs_for(&fake, home.path())
            .args(["login", "--list"])
            .output()
            .unwrap();
        assert!(
            String::from_utf8_lossy(&list.stdout).starts_with(name),
            "{list:?}"
        );

        // init reaches the provider with the filed sign-in alone.
        let url = format!("{name}://SongFactory");
        let init = songfs_for(&fake, home.path())
            .args(["init", "--store", &url, "--device-name", "desk"])
            .output()
            .unwrap();
        let init_text = String::from_utf8_lossy(&init.stderr).into_owned();
        assert!(init.status.success(), "{provider:?} init: {init_text}");
        let store = fake.open_store("SongFactory");
        songfs::store::format::check(store.as_ref()).await.unwrap();

        // The refresh token is in the credentials file only.
        let creds = std::fs::read_to_string(home.path().join("credentials.json")).unwrap();
        let token = creds
            .split("rt-")
            .nth(1)
            .map(|t| format!("rt-{}", &t[..t.find(['\\', '"']).unwrap()]))
            .expect("a refresh token filed");
        let creds_path = home.path().join("credentials.json");
        for f in common::files_under(home.path()) {
            if f == creds_path {
                continue;
            }
            let text = String::from_utf8_lossy(&std::fs::read(&f).unwrap()).into_owned();
            assert!(
                !text.contains(&token) && !text.contains(common::cloudfake::CLIENT_SECRET),
                "{} holds a secret",
                f.display()
            );
        }
        assert!(!printed.contains(&token) && !init_text.contains(&token));

        let out = songfs_for(&fake, home.path())
            .args(["logout", name])
            .output()
            .unwrap();
        assert!(out.status.success());
        let list = songfs_for(&fake, home.path())
            .args(["login", "--list"])
            .output()
            .unwrap();
        assert!(list.stdout.is_empty(), "{list:?}");
        let after = songfs_for(&fake, home.path())
            .args(["sync"])
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&after.stderr);
        assert!(
            !after.status.success() && text.contains(&format!("songfs login {name}")),
            "{text}"
        );
    }
}
