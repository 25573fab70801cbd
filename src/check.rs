//! `adobe-credential-operator check`: mints once for an AdobeCredential manifest, with its Secrets
//! from files or the cluster, and prints what the target Secret would hold, the expiry and the
//! granted scopes; a failure prints the reason and message the operator would write to status.
//! Nothing is written anywhere, and the token is masked unless asked for.

use std::collections::BTreeMap;
use std::io::Write;

use base64::Engine;
use jiff::Timestamp;
use kube::ResourceExt;

use crate::crd::AdobeCredential;
use crate::credential_input::CredentialInput;
use crate::error::{Error, MAX_MESSAGE, one_line};
use crate::flows::{self, Flow};
use crate::secret_value::SecretValue;
use crate::source::SecretReader;
use crate::target::{self, StoredToken};
use crate::time_format::rfc3339;
use crate::token::TokenClient;

/// Mints once and reports; returns whether a token was minted.
pub async fn run(
    mut input: CredentialInput,
    show_token: bool,
    tokens: &TokenClient,
    out: &mut impl Write,
) -> anyhow::Result<bool> {
    let cred = input.credential.clone();
    writeln!(out, "credential {}/{}", cred.namespace().unwrap_or_default(), cred.name_any())?;
    match mint(&cred, &mut input.reader(), tokens).await {
        Ok((flow, token)) => {
            report_token(&cred, flow.as_ref(), &token, show_token, out)?;
            Ok(true)
        }
        Err(error) => {
            writeln!(out, "Ready=False reason={}: {}", error.reason(), one_line(&error.to_string(), MAX_MESSAGE))?;
            Ok(false)
        }
    }
}

async fn mint(
    cred: &AdobeCredential,
    reader: &mut SecretReader<'_>,
    tokens: &TokenClient,
) -> Result<(Box<dyn Flow>, StoredToken), Error> {
    let spec = flows::of(&cred.spec).ok_or(Error::NoFlow)?;
    if spec.mint_spends_inputs() {
        return Err(Error::CheckWouldSpendInputs { flow: spec.name() });
    }
    let flow = spec.resolve(reader).await?;
    let minted = flow.mint(tokens, None).await?;
    let token = StoredToken {
        access_token: minted.access_token,
        token_type: minted.token_type,
        issued_at: minted.issued_at,
        expires_at: minted.expires_at,
        revision: flow.revision(),
        client_secret_key: Some(minted.client_secret_key),
    };
    Ok((flow, token))
}

fn report_token(
    cred: &AdobeCredential,
    flow: &dyn Flow,
    token: &StoredToken,
    show_token: bool,
    out: &mut impl Write,
) -> anyhow::Result<()> {
    let left = token.expires_at.duration_since(Timestamp::now());
    writeln!(out, "flow {}: token {} minted", flow.name(), token.fingerprint())?;
    writeln!(out, "expires at {} (in {}s)", rfc3339(token.expires_at), left.as_secs().max(0))?;
    match granted_scopes(&token.access_token) {
        Some(scopes) => writeln!(out, "granted scopes: {}", scopes.join(", "))?,
        None => writeln!(out, "granted scopes: unknown (the token is not a JWT with a scope claim)")?,
    }
    let data = target::render_data(cred, token, flow)?;
    writeln!(out, "target Secret {:?} would hold:", cred.target_name())?;
    for (key, value) in masked(&data, &token.access_token, show_token) {
        writeln!(out, "  {key}: {value}")?;
    }
    Ok(())
}

/// The target's keys, with every value that holds the token masked unless `show_token`.
fn masked(data: &BTreeMap<String, String>, token: &SecretValue, show_token: bool) -> Vec<(String, String)> {
    data.iter()
        .map(|(key, value)| {
            let hidden = !show_token && value.contains(token.expose());
            let shown = if hidden {
                format!("<{} bytes with the token {}>", value.len(), token.fingerprint())
            } else {
                value.clone()
            };
            (key.clone(), shown)
        })
        .collect()
}

/// The `scope` claim of a JWT access token (IMS separates scopes with commas), unverified: for
/// display only.
pub fn granted_scopes(token: &SecretValue) -> Option<Vec<String>> {
    let payload = token.expose().split('.').nth(1)?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(payload.trim_end_matches('=')).ok()?;
    let claims: serde_json::Value = serde_json::from_slice(&bytes).ok()?;
    let scope = claims.get("scope")?.as_str()?;
    Some(scope.split([',', ' ']).filter(|s| !s.is_empty()).map(str::to_owned).collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::source::CredentialName;

    fn jwt(claims: &serde_json::Value) -> SecretValue {
        let b64 = |v: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v);
        SecretValue::new(format!("{}.{}.sig", b64(b"{\"alg\":\"HS256\"}"), b64(claims.to_string().as_bytes())))
    }

    #[test]
    fn scopes_come_from_the_token_claims() {
        let token = jwt(&serde_json::json!({ "scope": "openid,AdobeID,firefly_api" }));
        assert_eq!(granted_scopes(&token), Some(vec!["openid".into(), "AdobeID".into(), "firefly_api".into()]));
        assert_eq!(granted_scopes(&SecretValue::new("opaque-token")), None);
        assert_eq!(granted_scopes(&jwt(&serde_json::json!({ "sub": "x" }))), None);
    }

    #[tokio::test]
    async fn a_flow_whose_mint_spends_its_inputs_is_refused_before_any_request() {
        let cred: AdobeCredential = serde_json::from_value(serde_json::json!({
            "apiVersion": "credentials.adobe-operator.io/v1alpha1", "kind": "AdobeCredential",
            "metadata": { "name": "user", "namespace": "team-a" },
            "spec": { "oauthWebApp": {
                "clientSecretRef": { "name": "web" },
                "refreshTokenRef": { "name": "user-token" },
                "scopes": ["openid", "AdobeID", "offline_access"],
            } },
        }))
        .expect("credential");
        let tokens = TokenClient::new(crate::token::TokenClientConfig {
            allowed_hosts: crate::token::HostAllowlist::new(["*.adobelogin.com"]),
            extra_ca_pem: None,
            request_timeout: std::time::Duration::from_secs(1),
        })
        .expect("client");
        let mut reader = SecretReader::with(Vec::new(), None, CredentialName::of(&cred));
        let error = mint(&cred, &mut reader, &tokens).await.expect_err("refused");
        assert_eq!(error.reason(), "CheckWouldSpendInputs");
    }

    #[test]
    fn every_value_holding_the_token_is_masked() {
        let token = SecretValue::new("eyJ.secret.sig");
        let data = BTreeMap::from([
            ("access_token".to_string(), "eyJ.secret.sig".to_string()),
            ("authorization".to_string(), "Bearer eyJ.secret.sig".to_string()),
            ("client_id".to_string(), "abc".to_string()),
        ]);
        let shown = masked(&data, &token, false);
        assert!(shown.iter().all(|(_, v)| !v.contains("eyJ.secret.sig")), "{shown:?}");
        assert_eq!(shown[2].1, "abc");
        assert!(masked(&data, &token, true).iter().any(|(_, v)| v == "eyJ.secret.sig"));
    }
}
