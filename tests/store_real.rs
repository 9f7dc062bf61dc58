//! The Google Drive and Dropbox stores against a real account: opt-in, never in CI
//! (they are `#[ignore]`d and need a sign-in). Each contract check runs in a fresh
//! folder under the one named, then a 20 MiB upload goes through an upload session.
//!
//! ```sh
//! songfs login gdrive --client-id ID --client-secret SECRET
//! SONGFS_REAL_GDRIVE=gdrive://songfs-test cargo test --test store_real -- --ignored gdrive
//! songfs login dropbox --client-id ID
//! SONGFS_REAL_DROPBOX=dropbox://songfs-test cargo test --test store_real -- --ignored dropbox
//! ```
//!
//! The folders they make (`<folder>/run-<random>-<check>`) are left for you to look at
//! and delete.

mod common;

use std::sync::Arc;

use common::contract::{self, pattern};
use songfs::secrets::grant;
use songfs::store::opendal_http::SongfsTransport;
use songfs::store::{cloud, ObjectStore};

fn store(provider: &str, run: &str, check: &str) -> Arc<dyn ObjectStore> {
    let var = format!("SONGFS_REAL_{}", provider.to_uppercase());
    let base = std::env::var(&var).unwrap_or_else(|_| {
        panic!("set {var} to a test folder, e.g. {var}={provider}://songfs-test, after `songfs login {provider}`")
    });
    let url = format!("{}/{run}-{check}", base.trim_end_matches('/'));
    let grant = grant::load(provider).expect("the keyring answers");
    Arc::new(cloud::open(&url, grant, SongfsTransport::from_env()).expect("the store opens"))
}

async fn whole_contract(provider: &str) {
    let run = format!("run-{}", hex::encode(rand::random::<[u8; 4]>()));
    macro_rules! check {
        ($($name:ident),*) => {$(
            eprintln!("{provider}: {}", stringify!($name));
            contract::$name(store(provider, &run, stringify!($name)).as_ref()).await;
        )*};
    }
    check!(
        put_then_get_round_trips,
        get_range_clamps_at_the_end,
        head_tells_absent_from_present,
        list_returns_keys_under_a_prefix_relative_and_sorted,
        list_pages_through_more_than_1000_keys,
        delete_is_idempotent,
        put_if_absent_writes_once,
        put_file_uploads_large_files_in_parts,
        missing_objects_are_not_found,
        format_record_is_created_on_a_fresh_store,
        two_writers_of_one_blob_leave_one_readable_blob
    );
    // Above 8 MiB the upload goes through the provider's upload session.
    let s = store(provider, &run, "session");
    let data = pattern(20 << 20, 7);
    let file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(file.path(), &data).unwrap();
    s.put_file("blobs/big", file.path()).await.unwrap();
    assert_eq!(s.head("blobs/big").await.unwrap(), Some(data.len() as u64));
    assert!(s.get("blobs/big").await.unwrap()[..] == data[..]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs a Google Drive sign-in and SONGFS_REAL_GDRIVE"]
async fn gdrive_real_account_passes_the_store_contract() {
    whole_contract("gdrive").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs a Dropbox sign-in and SONGFS_REAL_DROPBOX"]
async fn dropbox_real_account_passes_the_store_contract() {
    whole_contract("dropbox").await;
}
