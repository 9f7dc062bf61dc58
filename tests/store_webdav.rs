//! The WebDAV store against two real servers on 127.0.0.1, started and stopped per
//! test: `rclone serve webdav` and Apache httpd with mod_dav. The whole store
//! contract on both, then what a user must be told (wrong password 401, no write
//! permission 403, a full server 507, a server that is down), and `songfs init` with
//! a WebDAV store: the password goes to the keyring stand-in, never to config.json,
//! the logs or the store.

mod common;

use std::time::{Duration, Instant};

use bytes::Bytes;
use common::contract::Fixture;
use common::webdav::{Kind, WebdavServer, PASSWORD};
use songfs::store::opendal_http::SongfsTransport;
use songfs::store::{webdav, ObjectStore, StoreError};

async fn rclone() -> Fixture {
    let server = WebdavServer::start(Kind::Rclone);
    Fixture::new(server.open_store("team/songfs")).keeping(server)
}

async fn apache() -> Fixture {
    let server = WebdavServer::start(Kind::Apache);
    Fixture::new(server.open_store("team/songfs")).keeping(server)
}

contract_suite!(rclone_webdav, rclone);
contract_suite!(apache_webdav, apache);

#[tokio::test]
async fn objects_are_plain_files_under_the_folder_and_no_temporaries_stay() {
    for kind in [Kind::Rclone, Kind::Apache] {
        let server = WebdavServer::start(kind);
        let store = server.open_store("team/songfs");
        store
            .put("logs/a/1.json", Bytes::from_static(b"{}"))
            .await
            .unwrap();
        let on_disk = server.data_dir().join("team/songfs/logs/a/1.json");
        assert_eq!(std::fs::read(&on_disk).unwrap(), b"{}", "{kind:?}");
        let tmp = server.data_dir().join("team/songfs/.songfs-tmp");
        let left: Vec<_> = std::fs::read_dir(&tmp)
            .map(|d| d.map(|e| e.unwrap().file_name()).collect())
            .unwrap_or_default();
        assert!(left.is_empty(), "{kind:?}: temporaries left: {left:?}");
    }
}

#[tokio::test]
async fn a_wrong_password_is_denied_with_what_to_do_and_no_password_shown() {
    for kind in [Kind::Rclone, Kind::Apache] {
        let server = WebdavServer::start(kind);
        let store = server.open_store_as("x", Some("not-the-PLANTED-one"));
        let err = store.get("songfs.json").await.unwrap_err();
        assert!(
            matches!(err, StoreError::Denied { .. }),
            "{kind:?}: {err:?}"
        );
        let text = err.to_string();
        assert!(
            text.contains("401") && text.contains("--password-stdin"),
            "{text}"
        );
        assert!(!text.contains("PLANTED"), "{text}");
        // The advice is WebDAV's, not S3's.
        assert!(!text.contains("AWS_"), "{text}");
        // No password at all: the same answer.
        let err = server
            .open_store_as("x", None)
            .put("k", Bytes::from_static(b"v"))
            .await
            .unwrap_err();
        assert!(
            matches!(err, StoreError::Denied { .. }),
            "{kind:?}: {err:?}"
        );
    }
}

#[tokio::test]
async fn a_folder_without_write_permission_is_denied_403() {
    let server = WebdavServer::start(Kind::Apache);
    let store = server.open_store("readonly");
    let err = store
        .put("blobs/x", Bytes::from_static(b"v"))
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::Denied { .. }), "{err:?}");
    assert!(err.to_string().contains("403"), "{err}");
    // Reading is allowed there: a missing object is just not found.
    assert!(matches!(
        store.get("nothing").await.unwrap_err(),
        StoreError::NotFound { .. }
    ));
}

/// A server that answers every request with one status (a full Nextcloud answers 507).
async fn fixed_status_server(status: &'static str) -> (u16, tokio::task::JoinHandle<()>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let task = tokio::spawn(async move {
        while let Ok((mut conn, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut buf = vec![0u8; 64 * 1024];
                let _ = conn.read(&mut buf).await;
                let reply =
                    format!("HTTP/1.1 {status}\r\ncontent-length: 0\r\nconnection: close\r\n\r\n");
                let _ = conn.write_all(reply.as_bytes()).await;
                let _ = conn.shutdown().await;
            });
        }
    });
    (port, task)
}

#[tokio::test]
async fn a_full_server_says_so_and_is_retried_later() {
    let (port, task) = fixed_status_server("507 Insufficient Storage").await;
    let store = webdav::open(
        &format!("webdav://alice@127.0.0.1:{port}/songfs"),
        Some(PASSWORD.into()),
        SongfsTransport::from_env(),
    )
    .unwrap();
    let err = store
        .put("blobs/x", Bytes::from_static(b"v"))
        .await
        .unwrap_err();
    let text = err.to_string();
    assert!(text.contains("full") && text.contains("507"), "{text}");
    assert!(!text.contains(PASSWORD), "{text}");
    task.abort();
}

#[tokio::test]
async fn a_server_that_is_down_is_unreachable_within_seconds_and_back_after() {
    let mut server = WebdavServer::start(Kind::Rclone);
    let store = server.open_store("s");
    store.put("k", Bytes::from_static(b"v")).await.unwrap();
    server.stop();
    let started = Instant::now();
    let err = store.get("k").await.unwrap_err();
    assert!(err.is_transient(), "{err:?}");
    assert!(matches!(err, StoreError::Unreachable { .. }), "{err:?}");
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "{:?}",
        started.elapsed()
    );
    server.restart();
    assert_eq!(&store.get("k").await.unwrap()[..], b"v");
}

#[tokio::test]
async fn ranged_reads_fetch_only_the_range() {
    // A 4 MiB object, 16 bytes asked: the answer is 16 bytes (the server honoured
    // Range; had it not, the adapter would cut the body, so check the server log too).
    let server = WebdavServer::start(Kind::Apache);
    let store = server.open_store("r");
    let data = common::contract::pattern(4 << 20, 4);
    store.put("big", Bytes::from(data.clone())).await.unwrap();
    let got = store.get_range("big", 3_000_000..3_000_016).await.unwrap();
    assert_eq!(&got[..], &data[3_000_000..3_000_016]);
}

// ---------------------------------------------------------------- songfs init

fn init_cmd(home: &std::path::Path, url: &str) -> std::process::Command {
    let mut c = common::songfs(home);
    c.env("SONGFS_KEYRING", "file").args([
        "init",
        "--store",
        url,
        "--device-name",
        "desk",
        "--password-stdin",
    ]);
    c
}

#[test]
fn init_files_the_password_outside_config_logs_and_store() {
    let server = WebdavServer::start(Kind::Apache);
    let home = common::temp_home();
    let url = server.url("lib");
    let out = common::run_fed(&mut init_cmd(home.path(), &url), &format!("{PASSWORD}\n"));
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "init failed: {stderr}");
    assert!(
        stderr.contains("no system keyring") || stderr.contains("set up"),
        "{stderr}"
    );
    // The store got its format record, so the password worked.
    assert!(server.data_dir().join("lib/songfs.json").exists());
    // A second command finds the password without being given it.
    let status = common::songfs(home.path())
        .env("SONGFS_KEYRING", "file")
        .args(["status", "--json"])
        .output()
        .unwrap();
    let status_out = String::from_utf8_lossy(&status.stdout).into_owned()
        + &String::from_utf8_lossy(&status.stderr);
    // Everywhere but the credentials file: no password.
    let creds = home.path().join("credentials.json");
    assert!(creds.exists(), "the file stand-in holds the password");
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&creds).unwrap().permissions().mode();
        assert_eq!(mode & 0o077, 0, "credentials readable by others: {mode:o}");
    }
    for text in [
        stderr.clone(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        status_out,
    ] {
        assert!(!text.contains(PASSWORD), "printed: {text}");
    }
    for root in [home.path().to_path_buf(), server.data_dir()] {
        for f in common::files_under(&root) {
            if f == creds {
                continue;
            }
            let bytes = std::fs::read(&f).unwrap();
            assert!(
                !String::from_utf8_lossy(&bytes).contains(PASSWORD),
                "{} holds the password",
                f.display()
            );
        }
    }
}

#[test]
fn init_with_a_wrong_password_fails_in_one_line_and_files_nothing() {
    let server = WebdavServer::start(Kind::Rclone);
    let home = common::temp_home();
    let out = common::run_fed(
        &mut init_cmd(home.path(), &server.url("lib")),
        "wrong-PLANTED\n",
    );
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    let last = stderr.lines().last().unwrap_or("");
    assert!(
        last.contains("401") && last.contains("--password-stdin"),
        "{stderr}"
    );
    assert!(!stderr.contains("wrong-PLANTED"), "{stderr}");
    let creds = std::fs::read_to_string(home.path().join("credentials.json")).unwrap_or_default();
    assert!(
        !creds.contains("wrong-PLANTED"),
        "the refused password stayed filed"
    );
    assert!(!home.path().join("config.json").exists());
}

#[test]
fn init_without_a_password_for_a_user_says_how_to_give_one() {
    let server = WebdavServer::start(Kind::Rclone);
    let home = common::temp_home();
    let out = common::songfs(home.path())
        .env("SONGFS_KEYRING", "file")
        .args(["init", "--store", &server.url("lib")])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("--password-stdin"), "{stderr}");
}

// ---------------------------------------------------------------- two devices

/// Issue 9: two devices mounting one WebDAV library (rclone's server): a file written
/// through one mount is read on the other with an empty cache, and a rename and a
/// delete made there come back; the bytes sit in the server's folder, named by hash.
/// Each side's `songfs sync` (the app's "Sync Now") stands in for the sync interval.
#[test]
fn two_mounts_share_one_webdav_library() {
    use common::mount::{bytes, run_ok, sha256_hex, wait_until, Mount};
    let server = WebdavServer::start(Kind::Rclone);
    let url = server.url("library");
    let device = || {
        let mut m = Mount::init_fed(
            Some(&url),
            &["--password-stdin"],
            &[("SONGFS_KEYRING", "file")],
            &[],
            Some(&format!("{PASSWORD}\n")),
        );
        m.mount();
        m
    };
    let desk = device();
    let audio = bytes(9, 3 << 20);
    std::fs::create_dir_all(desk.path("2026-02-12_night")).unwrap();
    std::fs::write(desk.path("2026-02-12_night/night_v1.mp3"), &audio).unwrap();
    assert!(
        desk.wait_uploads(Duration::from_secs(30)),
        "desk never uploaded"
    );
    run_ok(desk.songfs().arg("sync"));
    let hash = sha256_hex(&audio);
    let blob = common::files_under(&server.data_dir().join("library"))
        .into_iter()
        .find(|p| p.to_string_lossy().contains(&hash));
    assert!(blob.is_some(), "blob {hash} not in the WebDAV folder");

    let mut laptop = device();
    let there = laptop.path("2026-02-12_night/night_v1.mp3");
    assert!(
        wait_until(Duration::from_secs(30), || there.exists()),
        "the file never reached the second device"
    );
    laptop.empty_cache();
    assert_eq!(
        std::fs::read(&there).unwrap(),
        audio,
        "bytes differ on the laptop"
    );

    std::fs::rename(&there, laptop.path("2026-02-12_night/night_final.mp3")).unwrap();
    std::fs::write(laptop.path("notes.txt"), b"from the laptop").unwrap();
    assert!(laptop.wait_uploads(Duration::from_secs(30)));
    run_ok(laptop.songfs().arg("sync"));
    run_ok(desk.songfs().arg("sync"));
    assert!(
        wait_until(Duration::from_secs(30), || {
            desk.path("2026-02-12_night/night_final.mp3").exists()
                && !desk.path("2026-02-12_night/night_v1.mp3").exists()
                && desk.path("notes.txt").exists()
        }),
        "the rename and the new file never came back to the desk"
    );
    std::fs::remove_file(desk.path("notes.txt")).unwrap();
    run_ok(desk.songfs().arg("sync"));
    run_ok(laptop.songfs().arg("sync"));
    assert!(
        wait_until(Duration::from_secs(30), || !laptop
            .path("notes.txt")
            .exists()),
        "the delete never reached the laptop"
    );
    assert_eq!(
        std::fs::read(desk.path("2026-02-12_night/night_final.mp3")).unwrap(),
        audio
    );
}

/// Issue 9: two devices' first `songfs init` on one empty WebDAV folder at the same
/// instant. WebDAV has no conditional create, so both may write a format record, each
/// with its own store id; both must end up with the one that stayed in the store, or
/// one of them would later be refused as writing into "another" store.
#[test]
fn two_inits_racing_on_an_empty_store_agree_on_one_store_id() {
    let server = WebdavServer::start(Kind::Apache);
    let url = server.url("raced");
    for round in 0..2 {
        let folder = format!("raced{round}");
        let url = url.replace("raced", &folder);
        let homes = [common::temp_home(), common::temp_home()];
        let children: Vec<_> = homes
            .iter()
            .map(|h| common::spawn_fed(&mut init_cmd(h.path(), &url), &format!("{PASSWORD}\n")))
            .collect();
        for child in children {
            let out = child.wait_with_output().unwrap();
            assert!(
                out.status.success(),
                "init failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        let record: serde_json::Value = serde_json::from_slice(
            &std::fs::read(server.data_dir().join(&folder).join("songfs.json")).unwrap(),
        )
        .unwrap();
        for h in &homes {
            let cfg: serde_json::Value =
                serde_json::from_slice(&std::fs::read(h.path().join("config.json")).unwrap())
                    .unwrap();
            assert_eq!(
                cfg["store_id"], record["store_id"],
                "round {round}: a device kept a store id the store does not have"
            );
        }
    }
}
