//! The WebDAV store: a folder on any WebDAV server (Nextcloud, ownCloud, a NAS, Apache
//! mod_dav, `rclone serve webdav` in front of any rclone remote), through OpenDAL.
//!
//! `webdav://[user@]host[:port]/path` speaks plain HTTP, `webdavs://…` HTTPS. The
//! password is never in the URL or the config: `songfs init` files it in the keyring
//! under the account `account_for(url)`. PUT on a WebDAV server is not atomic for
//! every server (a reader may see a file being written), so objects are written to a
//! temporary name and moved into place (`MOVE`, atomic on one server).
//!
//! This module only builds the operator; the store behaviour is `opendal_store`'s.

use opendal::services::Webdav;
use opendal::{HttpTransporter, OperationContext, Operator};

use super::opendal_http::SongfsTransport;
use super::opendal_store::{OpendalStore, ServiceTraits};
use super::{StoreError, StoreResult};

/// A WebDAV store URL taken apart.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WebdavUrl {
    /// `http://host:port` or `https://host:port`.
    pub endpoint: String,
    /// The folder on the server, `/songfs` (never empty: `/` at least).
    pub root: String,
    pub user: Option<String>,
}

pub fn is_webdav_url(url: &str) -> bool {
    url.starts_with("webdav://") || url.starts_with("webdavs://")
}

pub fn parse_url(url: &str) -> StoreResult<WebdavUrl> {
    let bad = |why: &str| StoreError::BadUrl {
        url: redact(url),
        why: why.to_string(),
    };
    // Before parsing: the URL parser folds `a/../b` into `b` silently.
    let after_host = url.split_once("://").map_or("", |(_, r)| r);
    if after_host
        .split(['/', '?', '#'])
        .skip(1)
        .any(|c| c == "." || c == "..")
    {
        return Err(bad("the folder must not contain '.' or '..'"));
    }
    let parsed = url::Url::parse(url).map_err(|e| {
        bad(&format!(
            "{e}: a WebDAV store URL looks like webdavs://user@cloud.example.com/remote.php/dav/files/user/SongFactory"
        ))
    })?;
    let http = match parsed.scheme() {
        "webdav" => "http",
        "webdavs" => "https",
        _ => {
            return Err(bad(
                "a WebDAV store URL starts with webdav:// or webdavs://",
            ))
        }
    };
    if parsed.password().is_some() {
        return Err(bad(
            "leave the password out of the URL: `songfs init` asks for it and keeps it in the keyring",
        ));
    }
    let host = parsed.host_str().filter(|h| !h.is_empty()).ok_or_else(|| {
        bad("the server name is missing, e.g. webdavs://cloud.example.com/SongFactory")
    })?;
    let endpoint = match parsed.port() {
        Some(p) => format!("{http}://{host}:{p}"),
        None => format!("{http}://{host}"),
    };
    let root = parsed.path().trim_end_matches('/');
    let user = Some(parsed.username())
        .filter(|u| !u.is_empty())
        .map(|u| {
            percent_decode(u).ok_or_else(|| bad("the user name is not valid percent-encoded UTF-8"))
        })
        .transpose()?;
    Ok(WebdavUrl {
        endpoint,
        root: if root.is_empty() {
            "/".into()
        } else {
            root.into()
        },
        user,
    })
}

/// The URL with any password in it replaced by `***` (for messages).
pub fn redact(url: &str) -> String {
    let Some(start) = url.find("://").map(|i| i + 3) else {
        return url.to_string();
    };
    let end = url[start..].find('/').map_or(url.len(), |i| start + i);
    match url[start..end].rfind('@') {
        Some(at) => match url[start..start + at].find(':') {
            Some(colon) => format!("{}***{}", &url[..start + colon + 1], &url[start + at..]),
            None => url.to_string(),
        },
        None => url.to_string(),
    }
}

fn percent_decode(s: &str) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = s.get(i + 1..i + 3)?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// The keyring account of the password for this store's user and server.
pub fn account_for(url: &WebdavUrl) -> Option<String> {
    url.user
        .as_ref()
        .map(|u| format!("webdav:{u}@{}", url.endpoint))
}

/// Opens the store with the password given (None: no authentication, or the user has
/// none filed). Does not contact the server.
pub fn open(
    url: &str,
    password: Option<String>,
    transport: SongfsTransport,
) -> StoreResult<OpendalStore> {
    let parsed = parse_url(url)?;
    let mut builder = Webdav::default()
        .endpoint(&parsed.endpoint)
        .root(&parsed.root);
    if let Some(user) = &parsed.user {
        builder = builder.username(user);
        if let Some(pw) = &password {
            builder = builder.password(pw);
        }
    }
    let op = Operator::new(builder)
        .map_err(|e| StoreError::BadUrl {
            url: url.to_string(),
            why: e.to_string(),
        })?
        .with_context(OperationContext::new().with_http_transport(HttpTransporter::new(transport)));
    let denied_hint = match &parsed.user {
        Some(_) => format!(
            "check the user name and run `songfs init --store {url} --force --password-stdin` to file the right password"
        ),
        None => format!("the server wants a user: put it in the URL, e.g. webdavs://me@{}", parsed.endpoint.split("://").nth(1).unwrap_or("host")),
    };
    Ok(OpendalStore::new(
        op,
        url.to_string(),
        ServiceTraits {
            name: "WebDAV",
            put_via_rename: true,
            recursive_list: true,
            denied_hint,
        },
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_name_endpoint_folder_and_user() {
        let u =
            parse_url("webdavs://me%40home@cloud.example.com/remote.php/dav/files/me/SF/").unwrap();
        assert_eq!(u.endpoint, "https://cloud.example.com");
        assert_eq!(u.root, "/remote.php/dav/files/me/SF");
        assert_eq!(u.user.as_deref(), Some("me@home"));
        assert_eq!(
            account_for(&u).as_deref(),
            Some("webdav:me@home@https://cloud.example.com")
        );
        let plain = parse_url("webdav://127.0.0.1:8080").unwrap();
        assert_eq!(plain.endpoint, "http://127.0.0.1:8080");
        assert_eq!(plain.root, "/");
        assert_eq!(plain.user, None);
        assert_eq!(account_for(&plain), None);
    }

    #[test]
    fn bad_urls_say_what_is_wrong() {
        for (url, says) in [
            ("webdav://me:pw@host/x", "password"),
            ("http://host/x", "webdav://"),
            ("webdav:///x", "server name"),
            ("webdav://host/a/../b", "'..'"),
        ] {
            let err = parse_url(url).unwrap_err().to_string();
            assert!(err.contains(says), "{url}: {err}");
            assert!(!err.contains("pw@"), "{err}");
        }
    }
}
