//! `songfs login gdrive|dropbox`, `songfs login --list`, `songfs logout PROVIDER`:
//! the OAuth 2 sign-in (authorization code + PKCE, RFC 7636) with a loopback redirect
//! on 127.0.0.1 (RFC 8252), run by the `oauth2` crate; the refresh token goes to the
//! keyring (`secrets::grant`), where the Drive and Dropbox stores find it.
//!
//! The browser is opened where there is one; the URL is always printed, and on a
//! machine without a browser (reached over ssh) the user opens it elsewhere and pastes
//! the address the browser ended on (or just its code) here.
//!
//! This module must never print or log a token or the client secret.

use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::mpsc;
use std::time::Duration;

use anyhow::{anyhow, bail, Context};
use clap::Args;
use oauth2::basic::BasicClient;
use oauth2::{
    AuthUrl, AuthorizationCode, ClientId, ClientSecret, CsrfToken, PkceCodeChallenge, RedirectUrl,
    Scope, TokenResponse, TokenUrl,
};

use crate::secrets::grant::{self, Grant, PROVIDERS};
use crate::store::cloud;
use crate::store::opendal_http::SongfsTransport;

/// How long `login` waits for the browser to come back.
const WAIT_FOR_BROWSER: Duration = Duration::from_secs(300);

#[derive(Args)]
pub struct LoginArgs {
    /// gdrive or dropbox
    #[arg(required_unless_present = "list")]
    pub provider: Option<String>,
    /// List the providers songfs is signed in to.
    #[arg(long, conflicts_with = "provider")]
    pub list: bool,
    /// The OAuth client id of your app registration (README: "Signing in");
    /// or SONGFS_GDRIVE_CLIENT_ID / SONGFS_DROPBOX_CLIENT_ID.
    #[arg(long)]
    pub client_id: Option<String>,
    /// The client secret Google issues with a desktop client id (kept in the keyring);
    /// or SONGFS_GDRIVE_CLIENT_SECRET.
    #[arg(long)]
    pub client_secret: Option<String>,
    /// Print the sign-in address only; do not open a browser.
    #[arg(long)]
    pub no_browser: bool,
}

#[derive(Args)]
pub struct LogoutArgs {
    /// gdrive or dropbox
    pub provider: String,
}

/// Where a provider signs in.
struct ProviderEndpoints {
    auth_url: &'static str,
    token_url: &'static str,
    scopes: &'static [&'static str],
    /// Asks for a refresh token (offline access).
    extra: &'static [(&'static str, &'static str)],
}

fn endpoints(provider: &str) -> ProviderEndpoints {
    match provider {
        "gdrive" => ProviderEndpoints {
            auth_url: "https://accounts.google.com/o/oauth2/v2/auth",
            token_url: "https://oauth2.googleapis.com/token",
            // Only the files songfs itself creates: it never sees the rest of the Drive.
            scopes: &["https://www.googleapis.com/auth/drive.file"],
            extra: &[("access_type", "offline"), ("prompt", "consent")],
        },
        _ => ProviderEndpoints {
            auth_url: "https://www.dropbox.com/oauth2/authorize",
            token_url: "https://api.dropboxapi.com/oauth2/token",
            scopes: &[],
            extra: &[("token_access_type", "offline")],
        },
    }
}

fn check_provider(p: &str) -> anyhow::Result<&'static str> {
    PROVIDERS
        .iter()
        .find(|k| **k == p)
        .copied()
        .ok_or_else(|| anyhow!("unknown provider {p:?}: songfs signs in to gdrive or dropbox"))
}

pub fn run_login(a: LoginArgs) -> anyhow::Result<()> {
    if a.list {
        return list();
    }
    let provider = check_provider(a.provider.as_deref().unwrap_or_default())?;
    let env_name = |what: &str| format!("SONGFS_{}_{what}", provider.to_uppercase());
    let client_id = a
        .client_id
        .or_else(|| std::env::var(env_name("CLIENT_ID")).ok())
        .ok_or_else(|| {
            anyhow!(
                "no OAuth client id for {}: register one (README, \"Signing in\") and pass --client-id",
                cloud::display_name(provider)
            )
        })?;
    let client_secret = a
        .client_secret
        .or_else(|| std::env::var(env_name("CLIENT_SECRET")).ok());
    if provider == "gdrive" && client_secret.is_none() {
        bail!(
            "Google issues a client secret with a desktop client id: pass it with --client-secret"
        );
    }
    let rt = super::runtime()?;
    let refresh_token = rt.block_on(sign_in(
        provider,
        &client_id,
        client_secret.as_deref(),
        !a.no_browser,
    ))?;
    let g = Grant {
        refresh_token,
        client_id,
        client_secret,
        signed_in: Some(chrono::Utc::now().to_rfc3339()),
    };
    let at = grant::save(provider, &g)?;
    let place = at.describe();
    eprintln!(
        "songfs: signed in to {}; the sign-in is kept in {place}. Next: songfs init --store {provider}://SongFactory",
        cloud::display_name(provider)
    );
    Ok(())
}

pub fn run_logout(a: LogoutArgs) -> anyhow::Result<()> {
    let provider = check_provider(&a.provider)?;
    if grant::delete(provider)? {
        eprintln!(
            "songfs: signed out of {} (the sign-in was removed from this machine)",
            cloud::display_name(provider)
        );
    } else {
        eprintln!("songfs: not signed in to {}", cloud::display_name(provider));
    }
    Ok(())
}

fn list() -> anyhow::Result<()> {
    let mut any = false;
    for p in PROVIDERS {
        if let Some(g) = grant::load(p)? {
            any = true;
            println!(
                "{p}\t{}\tsigned in {}",
                cloud::display_name(p),
                g.signed_in.as_deref().unwrap_or("(unknown)")
            );
        }
    }
    if !any {
        eprintln!("songfs: not signed in anywhere (songfs login gdrive|dropbox)");
    }
    Ok(())
}

/// The whole consent: the URL out, the code back, the code traded for tokens.
async fn sign_in(
    provider: &str,
    client_id: &str,
    client_secret: Option<&str>,
    open_browser: bool,
) -> anyhow::Result<String> {
    let transport = SongfsTransport::from_env();
    let ep = endpoints(provider);
    let listener = TcpListener::bind("127.0.0.1:0")
        .context("cannot listen on 127.0.0.1 for the sign-in redirect")?;
    let redirect = format!("http://127.0.0.1:{}/", listener.local_addr()?.port());
    let mut client = BasicClient::new(ClientId::new(client_id.to_string()))
        .set_auth_uri(AuthUrl::new(transport.rewrite_str(ep.auth_url))?)
        .set_token_uri(TokenUrl::new(transport.rewrite_str(ep.token_url))?)
        .set_redirect_uri(RedirectUrl::new(redirect)?);
    if let Some(s) = client_secret {
        client = client.set_client_secret(ClientSecret::new(s.to_string()));
    }
    let (challenge, verifier) = PkceCodeChallenge::new_random_sha256();
    let mut req = client
        .authorize_url(CsrfToken::new_random)
        .set_pkce_challenge(challenge);
    for s in ep.scopes {
        req = req.add_scope(Scope::new(s.to_string()));
    }
    for (k, v) in ep.extra {
        req = req.add_extra_param(*k, *v);
    }
    let (url, state) = req.url();
    eprintln!(
        "songfs: sign in to {} in your browser:\n\n  {url}\n",
        cloud::display_name(provider)
    );
    eprintln!("songfs: on a machine without a browser, open it elsewhere and paste here the address the browser ends on.");
    if open_browser {
        open_in_browser(url.as_str());
    }
    let code = tokio::task::spawn_blocking(move || wait_for_code(listener, state.secret()))
        .await
        .context("the sign-in wait stopped")??;
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(30))
        .build()?;
    let send = |request: oauth2::HttpRequest| {
        let http = http.clone();
        async move {
            let (parts, body) = request.into_parts();
            let resp = http
                .request(parts.method, parts.uri.to_string())
                .headers(parts.headers)
                .body(body)
                .send()
                .await?;
            let mut out = http::Response::builder().status(resp.status());
            for (k, v) in resp.headers() {
                out = out.header(k, v);
            }
            let bytes = resp.bytes().await?;
            Ok::<_, reqwest::Error>(out.body(bytes.to_vec()).expect("a response from its parts"))
        }
    };
    let token = client
        .exchange_code(AuthorizationCode::new(code))
        .set_pkce_verifier(verifier)
        .request_async(&send)
        .await
        .map_err(|e| {
            anyhow!(
                "{} refused the sign-in code ({}): run `songfs login {provider}` again",
                cloud::display_name(provider),
                token_error(&e)
            )
        })?;
    token
        .refresh_token()
        .map(|t| t.secret().clone())
        .ok_or_else(|| anyhow!("{} gave no refresh token (offline access was refused): run `songfs login {provider}` again", cloud::display_name(provider)))
}

/// What went wrong with the token request, without any token in it.
fn token_error<E: std::error::Error>(
    e: &oauth2::RequestTokenError<E, oauth2::basic::BasicErrorResponse>,
) -> String {
    match e {
        oauth2::RequestTokenError::ServerResponse(r) => r.error().to_string(),
        oauth2::RequestTokenError::Request(r) => format!("no answer: {r}"),
        other => other.to_string().chars().take(200).collect(),
    }
}

/// The code, from the browser's redirect to the loopback address or from a pasted
/// address (or bare code) on stdin, whichever comes first; the state must match.
fn wait_for_code(listener: TcpListener, state: &str) -> anyhow::Result<String> {
    let (tx, rx) = mpsc::channel::<String>();
    let from_browser = tx.clone();
    std::thread::spawn(move || {
        for conn in listener.incoming().flatten() {
            if let Some(target) = answer_redirect(conn) {
                let _ = from_browser.send(target);
                return;
            }
        }
    });
    std::thread::spawn(move || {
        let mut line = String::new();
        if std::io::stdin().lock().read_line(&mut line).unwrap_or(0) > 0 && !line.trim().is_empty()
        {
            let _ = tx.send(line.trim().to_string());
        }
    });
    let got = rx.recv_timeout(WAIT_FOR_BROWSER).map_err(|_| {
        anyhow!(
            "no sign-in within {} minutes: run `songfs login` again",
            WAIT_FOR_BROWSER.as_secs() / 60
        )
    })?;
    code_from(&got, state)
}

/// Reads one HTTP request on the loopback address; answers it and returns its target
/// (`/?code=…&state=…`) when it carries a code or an error.
fn answer_redirect(mut conn: TcpStream) -> Option<String> {
    conn.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
    let mut first = String::new();
    let mut reader = BufReader::new(conn.try_clone().ok()?);
    reader.read_line(&mut first).ok()?;
    let target = first.split_whitespace().nth(1)?.to_string();
    let done = target.contains("code=") || target.contains("error=");
    let body = if done {
        "<html><body><h2>songfs: sign-in received.</h2>You can close this tab.</body></html>"
    } else {
        "<html><body>songfs is waiting for the sign-in.</body></html>"
    };
    let _ = write!(
        conn,
        "HTTP/1.1 200 OK\r\nContent-Type: text/html; charset=utf-8\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    done.then_some(target)
}

/// The code in a redirect target or pasted address; a bare code is taken as is.
fn code_from(got: &str, state: &str) -> anyhow::Result<String> {
    let Some((_, query)) = got.split_once('?') else {
        return Ok(got.to_string());
    };
    let pairs: std::collections::HashMap<String, String> =
        url::form_urlencoded::parse(query.as_bytes())
            .into_owned()
            .collect();
    if let Some(err) = pairs.get("error") {
        bail!("the sign-in was refused in the browser ({err}): run `songfs login` again and allow access");
    }
    if pairs.get("state").map(String::as_str) != Some(state) {
        bail!("the sign-in answer does not belong to this login (state mismatch): run `songfs login` again");
    }
    pairs.get("code").cloned().ok_or_else(|| {
        anyhow!("the address has no sign-in code: paste the whole address the browser ended on")
    })
}

/// Opens `url` in the desktop's browser, where there is a desktop. Hand-written: three
/// OS commands; failure is fine (the URL is printed).
fn open_in_browser(url: &str) {
    let cmd: Option<(&str, Vec<&str>)> = if cfg!(target_os = "macos") {
        Some(("open", vec![url]))
    } else if cfg!(windows) {
        Some(("rundll32", vec!["url.dll,FileProtocolHandler", url]))
    } else if std::env::var_os("DISPLAY").is_some() || std::env::var_os("WAYLAND_DISPLAY").is_some()
    {
        Some(("xdg-open", vec![url]))
    } else {
        None
    };
    if let Some((prog, args)) = cmd {
        let _ = std::process::Command::new(prog)
            .args(args)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_come_from_redirects_pasted_addresses_or_bare() {
        assert_eq!(code_from("/?code=abc&state=s1", "s1").unwrap(), "abc");
        assert_eq!(
            code_from("http://127.0.0.1:5/?state=s1&code=x%2Fy", "s1").unwrap(),
            "x/y"
        );
        assert_eq!(code_from("4/0AbCd", "s1").unwrap(), "4/0AbCd");
        assert!(code_from("/?code=abc&state=other", "s1")
            .unwrap_err()
            .to_string()
            .contains("state"));
        assert!(code_from("/?error=access_denied&state=s1", "s1")
            .unwrap_err()
            .to_string()
            .contains("access_denied"));
    }
}
