//! The DB sync through a real S3 server (s3s-fs on 127.0.0.1, started and killed by the
//! harness): three devices, colliding ids, a delete, a secret that must not reach the
//! bucket. (One test per binary: the AWS credentials are process environment.)

mod common;
mod sync_util;

use common::s3server::S3Server;
use sync_util::{assert_same, files_under, Device};

#[test]
fn three_devices_sync_through_a_real_s3_server() {
    let server = S3Server::start();
    for (k, v) in server.env() {
        std::env::set_var(k, v);
    }
    std::env::remove_var("AWS_SESSION_TOKEN");
    std::env::remove_var("AWS_PROFILE");
    let a = Device::new(server.store_config("lib"), "a", true);
    let b = Device::new(server.store_config("lib"), "b", true);
    let c = Device::new(server.store_config("lib"), "c", true);
    a.exec(
        "INSERT INTO songs (title, prompt, lyrics) VALUES ('A new', 'p', 'l');
         INSERT INTO song_tags (song_id, tag_id) VALUES (30, 2);
         INSERT INTO config (key, value) VALUES ('api_key', 'sk-S3-PLANTED-SECRET');",
    );
    b.exec("INSERT INTO songs (title, prompt, lyrics) VALUES ('B new', 'p', 'l'); DELETE FROM songs WHERE id = 12;");
    c.exec("UPDATE songs SET status = 'queued' WHERE id = 1");
    for d in [&a, &b, &c, &a, &b] {
        d.sync();
    }
    assert_same(&a, &b);
    assert_same(&b, &c);
    for d in [&a, &b, &c] {
        assert_eq!(d.count("SELECT COUNT(*) FROM songs"), 30);
        assert_eq!(
            d.count(
                "SELECT COUNT(*) FROM song_tags st JOIN songs s ON s.id = st.song_id
                 WHERE s.title = 'A new' AND st.tag_id = 2"
            ),
            1
        );
    }
    let objects = files_under(&server.data_dir());
    assert!(objects
        .iter()
        .any(|p| p.to_string_lossy().contains("/logs/")));
    for f in objects {
        let text = String::from_utf8_lossy(&std::fs::read(&f).unwrap()).into_owned();
        assert!(
            !text.contains("S3-PLANTED"),
            "{} holds the secret",
            f.display()
        );
    }
}
