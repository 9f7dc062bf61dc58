//! An OAuth sign-in kept in the keyring: what `songfs login gdrive|dropbox` got from
//! the provider (the refresh token) and the app registration it was issued to (the
//! client id, and the client secret Google also issues to desktop apps), filed as one
//! JSON credential under the account `oauth:<provider>`.
//!
//! This module must never print or log a grant's fields; `Debug` shows none.

use super::{SecretError, SecretResult, SERVICE};

#[derive(Clone, serde::Serialize, serde::Deserialize, PartialEq, Eq)]
pub struct Grant {
    pub refresh_token: String,
    pub client_id: String,
    #[serde(default)]
    pub client_secret: Option<String>,
    /// When the sign-in happened (RFC 3339), for `login --list`.
    #[serde(default)]
    pub signed_in: Option<String>,
}

impl std::fmt::Debug for Grant {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Grant { .. }")
    }
}

/// The providers songfs signs in to.
pub const PROVIDERS: [&str; 2] = ["gdrive", "dropbox"];

fn account(provider: &str) -> String {
    format!("oauth:{provider}")
}

/// The sign-in filed for `provider`, if any.
pub fn load(provider: &str) -> SecretResult<Option<Grant>> {
    let Some(json) = super::get(SERVICE, &account(provider))? else {
        return Ok(None);
    };
    serde_json::from_str(&json)
        .map(Some)
        .map_err(|_| SecretError::File {
            path: format!("keyring entry {}", account(provider)),
            why: format!("the sign-in is damaged: run `songfs login {provider}` again"),
        })
}

pub fn save(provider: &str, grant: &Grant) -> SecretResult<super::Location> {
    let json = serde_json::to_string(grant).expect("a grant serialises");
    super::set(SERVICE, &account(provider), &json)
}

/// Forgets the sign-in; true if there was one.
pub fn delete(provider: &str) -> SecretResult<bool> {
    super::delete(SERVICE, &account(provider))
}
