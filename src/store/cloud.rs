//! Google Drive and Dropbox stores: a folder in the user's Drive or Dropbox, through
//! OpenDAL's `gdrive` and `dropbox` services, signed in with the grant
//! `songfs login` filed in the keyring (OpenDAL turns the refresh token into access
//! tokens and renews them before they expire).
//!
//! `gdrive://SongFactory` and `dropbox://SongFactory` name the folder (nested folders:
//! `gdrive://Music/SongFactory`). Uploads on both are atomic (a reader sees the old
//! file or the new one), so no temporary name is needed; large ones go up in the
//! providers' resumable upload sessions (`upload_session`).
//!
//! This module only builds the operator; the store behaviour is `opendal_store`'s.
//! It must never put a token into an error message.

use opendal::services::{Dropbox, Gdrive};
use opendal::{HttpTransporter, OperationContext, Operator};

use super::opendal_http::SongfsTransport;
use super::opendal_store::{OpendalStore, ServiceTraits};
use super::upload_session::UploadSessions;
use super::{StoreError, StoreResult};
use crate::secrets::grant::Grant;

/// The provider a cloud store URL names, or None for another kind of URL.
pub fn provider_of(url: &str) -> Option<&'static str> {
    if url.starts_with("gdrive://") {
        Some("gdrive")
    } else if url.starts_with("dropbox://") {
        Some("dropbox")
    } else {
        None
    }
}

/// The provider's name for people.
pub fn display_name(provider: &str) -> &'static str {
    match provider {
        "gdrive" => "Google Drive",
        _ => "Dropbox",
    }
}

/// `/SongFactory/` for `gdrive://SongFactory`.
pub fn folder_of(url: &str) -> StoreResult<String> {
    let provider = provider_of(url).expect("a cloud URL");
    let rest = &url[provider.len() + 3..];
    let folder = rest.trim_matches('/');
    let bad = |why: String| StoreError::BadUrl {
        url: url.to_string(),
        why,
    };
    if folder.is_empty() {
        return Err(bad(format!(
            "name a folder for songfs, e.g. {provider}://SongFactory (the whole drive is not used)"
        )));
    }
    if folder
        .split('/')
        .any(|c| c.is_empty() || c == "." || c == "..")
    {
        return Err(bad(
            "the folder must not contain empty parts, '.' or '..'".into()
        ));
    }
    Ok(format!("/{folder}/"))
}

/// Opens the store with the grant filed for its provider. Does not contact it.
pub fn open(
    url: &str,
    grant: Option<Grant>,
    transport: SongfsTransport,
) -> StoreResult<OpendalStore> {
    let provider = provider_of(url).expect("a cloud URL");
    let name = display_name(provider);
    let root = folder_of(url)?;
    let login = format!("run `songfs login {provider}`");
    let Some(grant) = grant else {
        return Err(StoreError::Denied {
            detail: format!("songfs is not signed in to {name}: {login}"),
        });
    };
    let secret = grant.client_secret.clone().unwrap_or_default();
    let sessions = UploadSessions::new(provider, &root, grant.clone(), transport.clone());
    let op = match provider {
        "gdrive" => Operator::new(
            Gdrive::default()
                .root(&root)
                .refresh_token(&grant.refresh_token)
                .client_id(&grant.client_id)
                .client_secret(&secret),
        ),
        _ => Operator::new(
            Dropbox::default()
                .root(&root)
                .refresh_token(&grant.refresh_token)
                .client_id(&grant.client_id)
                .client_secret(&secret),
        ),
    }
    .map_err(|e| StoreError::BadUrl {
        url: url.to_string(),
        why: e.kind().to_string(),
    })?
    .with_context(OperationContext::new().with_http_transport(HttpTransporter::new(transport)));
    Ok(OpendalStore::new(
        op,
        url.to_string(),
        ServiceTraits {
            name,
            put_via_rename: false,
            // OpenDAL's Dropbox lister names entries of a recursive listing by their
            // last path component only: walk the folders one by one instead.
            recursive_list: provider == "gdrive",
            denied_hint: format!("the sign-in has expired or was revoked: {login}"),
        },
    )
    .with_upload_sessions(sessions))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cloud_urls_name_a_folder() {
        assert_eq!(provider_of("gdrive://SongFactory"), Some("gdrive"));
        assert_eq!(provider_of("dropbox://A/B/"), Some("dropbox"));
        assert_eq!(provider_of("s3://b"), None);
        assert_eq!(folder_of("gdrive://SongFactory").unwrap(), "/SongFactory/");
        assert_eq!(folder_of("dropbox://Music/SF/").unwrap(), "/Music/SF/");
        for bad in [
            "gdrive://",
            "dropbox:///",
            "gdrive://a//b",
            "gdrive://a/../b",
        ] {
            assert!(folder_of(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn without_a_sign_in_the_error_says_to_log_in() {
        let err = open("dropbox://SF", None, SongfsTransport::from_env())
            .err()
            .unwrap();
        assert!(err.to_string().contains("songfs login dropbox"), "{err}");
    }
}
