//! `adobe-credential-operator login`: signs a user in for an `oauthWebApp` credential and writes
//! the refresh token that starts the operator's chain into the Secret the credential names.
//!
//! The browser gets IMS's consent page with a PKCE S256 challenge and a random `state`; the
//! redirect comes back to a local HTTPS endpoint ([`callback`]) or is pasted. The code is redeemed
//! with the verifier, and the refresh token goes into a manifest on standard output, into a new
//! file (`--output`) or, with `--apply`, into the cluster. Once the code is redeemed the token
//! exists nowhere else: if its destination fails, the manifest is kept in a new private file
//! ([`private_file`]). Tokens are shown by fingerprint only: what the terminal shows is prompts
//! and a summary on standard error.

mod callback;
mod private_file;

use std::fmt::Display;
use std::io::Write;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context as _, anyhow, bail, ensure};
use base64::Engine;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Patch, PatchParams};
use kube::{Api, ResourceExt};
use reqwest::Url;
use serde_json::json;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, BufReader};

use crate::check::granted_scopes;
use crate::crd::OAuthWebApp;
use crate::credential_input::CredentialInput;
use crate::error::{Error, MAX_MESSAGE, kube_summary, one_line};
use crate::flows::web_app::SignIn;
use crate::names::LOGIN_FIELD_MANAGER;
use crate::secret_value::SecretValue;
use crate::time_format::rfc3339;
use crate::token::TokenClient;

/// How the redirect after the sign-in reaches the command.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Receive {
    /// On a local HTTPS endpoint at the redirect URI.
    Callback,
    /// Pasted into standard input.
    Paste,
}

/// Where the Secret with the refresh token goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Destination {
    /// Its manifest on standard output.
    Stdout,
    /// Its manifest in a new file, mode 0600.
    File(PathBuf),
    /// Into the cluster (server-side apply of its one key).
    Cluster,
}

pub struct Login {
    pub input: CredentialInput,
    pub redirect_uri: Url,
    pub receive: Receive,
    pub timeout: Duration,
    pub destination: Destination,
}

/// Longest pasted line: a redirect URL with a code and a state is far shorter.
const MAX_PASTED: u64 = 16 * 1024;

/// Signs the user in and writes the refresh token; `out` gets the manifest, `say` the prompts.
pub async fn run(
    mut login: Login,
    tokens: &TokenClient,
    out: &mut impl Write,
    say: &mut impl Write,
) -> anyhow::Result<()> {
    let cred = login.input.credential.clone();
    let (namespace, name) = (cred.namespace().unwrap_or_default(), cred.name_any());
    let spec = cred.spec.oauth_web_app.as_ref().ok_or_else(|| {
        anyhow!("AdobeCredential {namespace}/{name} has no oauthWebApp block: login is for user authentication")
    })?;
    ensure!(
        login.redirect_uri.scheme() == "https",
        "the redirect URI must be https (Adobe requires it, even for localhost)"
    );
    if let Destination::File(path) = &login.destination {
        // Said before the sign-in: once the code is redeemed, a refused file costs a detour.
        ensure!(
            std::fs::symlink_metadata(path).is_err(),
            "{} exists: --output writes a new file only (mode 0600, never over a file or through a link): remove it or name another",
            path.display()
        );
    }
    let client = login.input.reader().client(&spec.client_secret_ref).await.map_err(as_status)?;
    let sign_in = SignIn::new();
    let url = sign_in.authorize_url(tokens, spec, &client.client_id, login.redirect_uri.as_str()).map_err(as_status)?;
    let code = receive_code(&login, &url, &sign_in.state, say).await?;
    let minted = sign_in.redeem(tokens, spec, &client, &code).await.map_err(as_status)?;
    let refresh_token = minted.refresh_token.as_ref().ok_or_else(|| anyhow!("IMS returned no refresh token"))?;
    let scopes = granted_scopes(&minted.access_token).map(|s| s.join(", ")).unwrap_or_else(|| "unknown".into());
    // Until the token is delivered, a failing standard error must not stop the delivery: the
    // lines said before it are best effort.
    let _ = writeln!(
        say,
        "Signed in: access token {} valid until {} (granted scopes: {scopes}).",
        minted.access_token.fingerprint(),
        rfc3339(minted.expires_at)
    );
    deliver(&login, &namespace, spec, refresh_token, out, say).await
}
/// The authorization code of this sign-in: from the browser's redirect to the local endpoint, or
/// from the address the user pastes.
async fn receive_code(login: &Login, url: &Url, state: &str, say: &mut impl Write) -> anyhow::Result<SecretValue> {
    let waiting = format!("no sign-in within {}s", login.timeout.as_secs());
    let code = match login.receive {
        Receive::Callback => {
            // Listening before the address is shown: a quick browser finds the endpoint.
            let callback = callback::Callback::bind(&login.redirect_uri).await?;
            writeln!(say, "Open this address in a browser and sign in as the user the operator acts for:\n\n{url}\n")?;
            writeln!(
                say,
                "The browser comes back to {} with a certificate made for this sign-in (SHA-256 {}): accept it once.",
                login.redirect_uri, callback.fingerprint
            )?;
            tokio::time::timeout(login.timeout, callback.code(state)).await.context(waiting)??
        }
        Receive::Paste => {
            writeln!(say, "Open this address in a browser and sign in as the user the operator acts for:\n\n{url}\n")?;
            writeln!(say, "Then paste the address the browser was sent to (it starts with {}):", login.redirect_uri)?;
            tokio::time::timeout(login.timeout, pasted_code(state)).await.context(waiting)??
        }
    };
    Ok(code)
}

/// Puts the Secret with `refresh_token` where the user asked: the cluster, a new file, or
/// standard output. Where that fails after the code was redeemed, the token is kept in a file.
async fn deliver(
    login: &Login,
    namespace: &str,
    spec: &OAuthWebApp,
    refresh_token: &SecretValue,
    out: &mut impl Write,
    say: &mut impl Write,
) -> anyhow::Result<()> {
    let secret = refresh_token_secret(namespace, spec, refresh_token);
    let manifest = serde_yaml::to_string(&secret)?;
    let (secret_name, key) = (&spec.refresh_token_ref.name, &spec.refresh_token_ref.key);
    let what =
        format!("Secret {namespace}/{secret_name} with refresh token {} in key {key}", refresh_token.fingerprint());
    let keep = || private_file::keep(namespace, secret_name, manifest.as_bytes());
    match &login.destination {
        // Kept before the write, which may hang or be interrupted; removed once it is done.
        Destination::Cluster => apply_in_cluster(login, namespace, spec, refresh_token, &secret, keep(), say).await?,
        Destination::File(path) => {
            if let Err(error) = private_file::write_new(path, manifest.as_bytes()) {
                return Err(failed(&format!("writing {}", path.display()), error, &keep()));
            }
            writeln!(
                say,
                "Wrote {what} into {} (mode 0600): apply it with `kubectl apply --server-side -f {0}`, then delete the file.",
                path.display()
            )?;
        }
        Destination::Stdout => {
            // A pipe whose reader is gone (`| kubectl …` that did not start) fails here.
            if let Err(error) = out.write_all(manifest.as_bytes()).and_then(|()| out.flush()) {
                return Err(failed("printing the manifest", error, &keep()));
            }
            writeln!(say, "Printed {what}: apply it with `kubectl apply --server-side -f`.")?;
        }
    }
    Ok(())
}

/// Applies `secret`, the refresh token's Secret, in the cluster. `kept` is the file holding the
/// token meanwhile (or why there is none): named in the error if the write fails, removed once
/// it succeeded.
async fn apply_in_cluster(
    login: &Login,
    namespace: &str,
    spec: &OAuthWebApp,
    refresh_token: &SecretValue,
    secret: &serde_json::Value,
    kept: Result<PathBuf, String>,
    say: &mut impl Write,
) -> anyhow::Result<()> {
    let (secret_name, key) = (&spec.refresh_token_ref.name, &spec.refresh_token_ref.key);
    let _ = match &kept {
        Ok(path) => writeln!(
            say,
            "Keeping refresh token {} in {} (mode 0600) until Secret {namespace}/{secret_name} is written.",
            refresh_token.fingerprint(),
            path.display()
        ),
        Err(why) => writeln!(say, "Cannot keep the refresh token in a file ({why}); writing the Secret."),
    };
    let applied = match login.input.client.clone() {
        Some(client) => Api::<Secret>::namespaced(client, namespace)
            .patch(secret_name, &PatchParams::apply(LOGIN_FIELD_MANAGER).force(), &Patch::Apply(secret))
            .await
            .map_err(|error| kube_summary(&error)),
        None => Err("no cluster connection".to_owned()),
    };
    if let Err(error) = applied {
        return Err(failed(&format!("writing Secret {namespace}/{secret_name}"), error, &kept));
    }
    writeln!(
        say,
        "Wrote refresh token {} into Secret {namespace}/{secret_name}, key {key}: the operator starts a new chain from it.",
        refresh_token.fingerprint()
    )?;
    if let Ok(path) = kept
        && let Err(err) = std::fs::remove_file(&path)
    {
        writeln!(say, "Remove {} yourself ({err}): it holds the refresh token.", path.display())?;
    }
    Ok(())
}

/// The error of a destination that failed after the code was redeemed: what failed, why, and
/// where the refresh token is now.
fn failed(what: &str, cause: impl Display, kept: &Result<PathBuf, String>) -> anyhow::Error {
    match kept {
        Ok(path) => anyhow!(
            "{what}: {cause}; the refresh token is kept in {} (mode 0600): apply it with `kubectl apply --server-side -f {0}` once the cause is fixed, then delete the file",
            path.display()
        ),
        Err(why) => anyhow!(
            "{what}: {cause}; the refresh token could not be kept in a file either ({why}) and is lost: sign in again"
        ),
    }
}

/// An error of the operator's own, said as status would say it.
fn as_status(error: Error) -> anyhow::Error {
    anyhow!("{}: {}", error.reason(), one_line(&error.to_string(), MAX_MESSAGE))
}

/// The user's Secret with the refresh token in the key the credential reads (base64, as the API
/// stores it). Only this key is applied: other keys of an existing Secret stay.
fn refresh_token_secret(namespace: &str, spec: &OAuthWebApp, refresh_token: &SecretValue) -> serde_json::Value {
    let encoded = base64::engine::general_purpose::STANDARD.encode(refresh_token.expose());
    json!({
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": { "name": spec.refresh_token_ref.name, "namespace": namespace },
        "data": { spec.refresh_token_ref.key.clone(): encoded },
    })
}

/// Why the address the browser was sent to gives no code.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum Refusal {
    /// A redirect of another sign-in (or forged): it is not this sign-in's to end.
    #[error(
        "the address does not belong to this sign-in (its state parameter differs): open the address this command printed"
    )]
    OtherSignIn,
    #[error("IMS refused the sign-in: {error}: {description}")]
    Ims { error: String, description: String },
    #[error("the address carries neither a code nor an error")]
    NoCode,
}

/// The code of this sign-in's redirect, from its query string.
fn authorization_response(query: &str, state: &str) -> Result<SecretValue, Refusal> {
    let param = |name: &str| {
        form_urlencoded::parse(query.as_bytes()).find(|(key, _)| key == name).map(|(_, value)| value.into_owned())
    };
    if param("state").as_deref() != Some(state) {
        return Err(Refusal::OtherSignIn);
    }
    if let Some(error) = param("error") {
        // IMS's words, but shown to a person: one bounded line.
        let description = param("error_description").unwrap_or_default();
        return Err(Refusal::Ims { error: one_line(&error, 100), description: one_line(&description, 300) });
    }
    param("code").filter(|code| !code.is_empty()).map(SecretValue::new).ok_or(Refusal::NoCode)
}

/// Reads the address the browser was sent to (or just its query) from standard input.
async fn pasted_code(state: &str) -> anyhow::Result<SecretValue> {
    let mut line = String::new();
    BufReader::new(tokio::io::stdin().take(MAX_PASTED)).read_line(&mut line).await.context("reading the address")?;
    let line = line.trim();
    if line.is_empty() {
        bail!("nothing was pasted");
    }
    let without_fragment = line.split('#').next().unwrap_or_default();
    let query = without_fragment.split_once('?').map_or(without_fragment, |(_, query)| query);
    Ok(authorization_response(query, state)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_this_sign_ins_redirect_gives_its_code() {
        assert_eq!(authorization_response("code=c-1&state=st", "st").map(|c| c.expose().to_owned()), Ok("c-1".into()));
        assert_eq!(authorization_response("code=c-1&state=other", "st").unwrap_err(), Refusal::OtherSignIn);
        assert_eq!(authorization_response("code=c-1", "st").unwrap_err(), Refusal::OtherSignIn);
        assert_eq!(authorization_response("state=st", "st").unwrap_err(), Refusal::NoCode);
        let refused = authorization_response("error=access_denied&error_description=user+said+no&state=st", "st");
        assert_eq!(
            refused.unwrap_err().to_string(),
            "IMS refused the sign-in: access_denied: user said no",
            "IMS's error is said on one line"
        );
        let long = format!("error=x&error_description={}%0Aline&state=st", "d".repeat(1000));
        let Err(Refusal::Ims { description, .. }) = authorization_response(&long, "st") else { panic!("refusal") };
        assert!(description.chars().count() <= 301 && !description.contains('\n'));
    }

    #[test]
    fn the_secret_holds_only_the_refresh_token_key() {
        let spec: OAuthWebApp = serde_json::from_value(json!({
            "clientSecretRef": { "name": "web" },
            "refreshTokenRef": { "name": "user-token", "key": "rt" },
            "scopes": ["openid", "offline_access"],
        }))
        .expect("spec");
        let secret = refresh_token_secret("team-a", &spec, &SecretValue::new("rt-1"));
        assert_eq!(secret["metadata"], json!({ "name": "user-token", "namespace": "team-a" }));
        assert_eq!(secret["data"], json!({ "rt": "cnQtMQ==" }));
    }
}
