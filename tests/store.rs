//! The store contract, run against both backends: the folder store and S3 (a real
//! s3s-fs server on 127.0.0.1).

mod common;

use common::s3server::S3Server;

#[test]
fn s3_server_starts_accepts_connections_and_restarts_on_the_same_port() {
    let mut server = S3Server::start();
    assert!(server.data_dir().join(server.bucket()).is_dir());
    let port = server.port();
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    assert!(std::net::TcpStream::connect(addr).is_ok());
    server.stop();
    assert!(
        std::net::TcpStream::connect(addr).is_err(),
        "stopped server still answers"
    );
    server.restart();
    assert_eq!(server.port(), port);
    assert!(std::net::TcpStream::connect(addr).is_ok());
}

/// The harness's keys, bucket and endpoint work for a plain aws-sdk-s3 client.
#[tokio::test]
async fn s3_server_serves_its_bucket_with_the_test_keys() {
    use aws_sdk_s3::config::{BehaviorVersion, Credentials, Region};
    let server = S3Server::start();
    let conf = aws_sdk_s3::Config::builder()
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
        .build();
    let client = aws_sdk_s3::Client::from_conf(conf);
    client
        .put_object()
        .bucket(server.bucket())
        .key("hello/world.txt")
        .body(aws_sdk_s3::primitives::ByteStream::from_static(b"hi"))
        .send()
        .await
        .expect("put");
    let got = client
        .get_object()
        .bucket(server.bucket())
        .key("hello/world.txt")
        .send()
        .await
        .expect("get");
    let body = got.body.collect().await.unwrap().into_bytes();
    assert_eq!(&body[..], b"hi");
    assert!(server
        .data_dir()
        .join(server.bucket())
        .join("hello/world.txt")
        .is_file());
}
