//! Adobe IMS: client credentials and service account JWT exchange.

mod common;

use std::{sync::LazyLock, time::Duration};

use common::{jwt_payload, keys, mint, post_form, status_and_json, unix_now};
use fake_token_server::test_keys::RsaKeyPair;
use fake_token_server::{AdobeClient, EndpointKind, Error, FakeTokenServer, Outcome, ServiceAccount, StatusCode};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};

const ORG: &str = "12345@AdobeOrg";
const TECH_ACCOUNT: &str = "ABCDEF@techacct.adobe.com";

// Key generation is slow, so every test shares these two.
static KEY: LazyLock<RsaKeyPair> = LazyLock::new(RsaKeyPair::generate);
static OTHER_KEY: LazyLock<RsaKeyPair> = LazyLock::new(RsaKeyPair::generate);

async fn server_with_client(client: AdobeClient) -> FakeTokenServer {
    let server = FakeTokenServer::start().await.expect("server starts");
    server.register_adobe_client(client).expect("client registers");
    server
}

fn assert_adobe_error(status: StatusCode, body: &Value, want_status: StatusCode, error: &str) {
    assert_eq!(status, want_status, "body: {body}");
    assert_eq!(keys(body), ["error", "error_description"], "body: {body}");
    assert_eq!(body["error"], error, "body: {body}");
}

#[tokio::test]
async fn client_credentials_issues_distinct_jwts_with_documented_units_on_every_version() {
    let server =
        server_with_client(AdobeClient::new("s2s", "secret").with_token_lifetime(Duration::from_secs(3))).await;
    let mut tokens = Vec::new();
    for version in ["v2", "v3", "v4"] {
        let before = unix_now();
        let response = post_form(
            &format!("{}/ims/token/{version}", server.url()),
            &[
                ("grant_type", "client_credentials"),
                ("client_id", "s2s"),
                ("client_secret", "secret"),
                ("scope", "openid,AdobeID"),
            ],
        )
        .await;
        let debug_id = response.headers().get("x-debug-id").cloned();
        let (status, body) = status_and_json(response).await;
        assert_eq!(status, StatusCode::OK, "{version}: {body}");
        assert!(debug_id.is_some(), "{version}: x-debug-id header");
        assert_eq!(keys(&body), ["access_token", "expires_in", "token_type"]);
        assert_eq!(body["token_type"], "bearer");
        assert_eq!(body["expires_in"], 3, "seconds");

        let token = body["access_token"].as_str().expect("string token");
        let payload = jwt_payload(token);
        assert_eq!(payload["type"], "access_token");
        assert_eq!(payload["client_id"], "s2s");
        assert_eq!(payload["scope"], "AdobeID,openid");
        assert_eq!(payload["expires_in"], "3000", "a millisecond string");
        let created_at: u128 =
            payload["created_at"].as_str().expect("created_at is a string").parse().expect("created_at is a number");
        assert!(created_at >= before.as_millis() && created_at <= unix_now().as_millis());
        assert!(payload["id"].is_string());
        tokens.push(token.to_owned());
    }
    assert_eq!(server.issued_tokens("s2s"), tokens);
    tokens.dedup();
    assert_eq!(tokens.len(), 3, "every mint yields a new token");
    assert_eq!(server.mint_count("s2s"), 3);
}

#[tokio::test]
async fn tiny_lifetimes_still_report_at_least_one_unit() {
    let server =
        server_with_client(AdobeClient::new("s2s", "secret").with_token_lifetime(Duration::from_millis(300))).await;
    let (status, body) = status_and_json(mint(server.url(), "s2s", "secret", "openid").await).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["expires_in"], 1);
    let payload = jwt_payload(body["access_token"].as_str().expect("token"));
    assert_eq!(payload["expires_in"], "300");
}

#[tokio::test]
async fn client_credentials_refusals_match_ims() {
    let server = server_with_client(AdobeClient::new("s2s", "secret").with_scopes(["openid", "AdobeID"])).await;
    let url = format!("{}/ims/token/v3", server.url());
    let base =
        [("grant_type", "client_credentials"), ("client_id", "s2s"), ("client_secret", "secret"), ("scope", "openid")];
    let with = |name: &str, value: Option<&'static str>| -> Vec<(&'static str, &'static str)> {
        base.iter()
            .filter_map(|(n, v)| if *n == name { value.map(|value| (*n, value)) } else { Some((*n, *v)) })
            .collect()
    };
    let cases = [
        (with("client_secret", Some("wrong")), "invalid_client", Some("invalid client_secret parameter")),
        (with("client_id", Some("nobody")), "invalid_client", Some("invalid client_id parameter")),
        (with("scope", Some("openid,firefly_api")), "invalid_scope", None),
        (with("grant_type", Some("password")), "unsupported_grant_type", None),
        (with("grant_type", None), "unsupported_grant_type", None),
        (with("client_secret", None), "invalid_request", None),
        (with("client_id", None), "invalid_request", None),
        (with("scope", None), "invalid_request", None),
    ];
    for (form, error, description) in cases {
        let response = post_form(&url, &form).await;
        assert!(response.headers().contains_key("x-debug-id"));
        let (status, body) = status_and_json(response).await;
        assert_adobe_error(status, &body, StatusCode::BAD_REQUEST, error);
        if let Some(description) = description {
            assert_eq!(body["error_description"], description);
        }
    }

    // The same fields as JSON are not accepted: IMS only reads form bodies.
    let response = common::http()
        .post(&url)
        .json(&json!({"grant_type": "client_credentials", "client_id": "s2s",
                      "client_secret": "secret", "scope": "openid"}))
        .send()
        .await
        .expect("sent");
    let (status, body) = status_and_json(response).await;
    assert_adobe_error(status, &body, StatusCode::BAD_REQUEST, "invalid_request");
    assert_eq!(server.mint_count("s2s"), 0);
}

#[tokio::test]
async fn scopes_are_comma_separated_and_limited_to_the_allowed_ones() {
    let server =
        server_with_client(AdobeClient::new("s2s", "secret").with_scopes(["openid", "AdobeID", "firefly_api"])).await;
    let ok = mint(server.url(), "s2s", "secret", "openid,AdobeID,firefly_api").await;
    assert_eq!(ok.status(), StatusCode::OK);
    // Space-separated (as RFC 6749 has it) is one unknown scope to IMS.
    let (status, body) = status_and_json(mint(server.url(), "s2s", "secret", "openid AdobeID").await).await;
    assert_adobe_error(status, &body, StatusCode::BAD_REQUEST, "invalid_scope");

    server.register_adobe_client(AdobeClient::new("open", "secret")).expect("registers");
    let any = mint(server.url(), "open", "secret", "anything,at_all").await;
    assert_eq!(any.status(), StatusCode::OK, "no scope list means any scope");
}

#[tokio::test]
async fn two_secrets_are_valid_at_once_during_rotation() {
    let server = server_with_client(AdobeClient::new("s2s", "old-secret")).await;
    server.add_adobe_client_secret("s2s", "new-secret").expect("second secret");
    assert!(matches!(server.add_adobe_client_secret("s2s", "third-secret"), Err(Error::TooManySecrets(_))));
    for secret in ["old-secret", "new-secret"] {
        let response = mint(server.url(), "s2s", secret, "openid").await;
        assert_eq!(response.status(), StatusCode::OK);
    }

    server.remove_adobe_client_secret("s2s", "old-secret").expect("removes");
    let (status, body) = status_and_json(mint(server.url(), "s2s", "old-secret", "openid").await).await;
    assert_adobe_error(status, &body, StatusCode::BAD_REQUEST, "invalid_client");
    assert_eq!(body["error_description"], "invalid client_secret parameter");
    let response = mint(server.url(), "s2s", "new-secret", "openid").await;
    assert_eq!(response.status(), StatusCode::OK);

    assert!(matches!(server.remove_adobe_client_secret("s2s", "old-secret"), Err(Error::UnknownSecret(_))));
    assert!(matches!(server.remove_adobe_client_secret("nobody", "x"), Err(Error::UnknownClient(_))));
    assert!(matches!(
        server.register_adobe_client(AdobeClient::new("three", "a").with_secret("b").with_secret("c")),
        Err(Error::TooManySecrets(_))
    ));
}

// ---- JWT exchange ----

fn service_account_client(public_pem: &str) -> AdobeClient {
    AdobeClient::new("jwt-client", "jwt-secret").with_token_lifetime(Duration::from_secs(5)).with_service_account(
        ServiceAccount::new(ORG, TECH_ACCOUNT, public_pem).with_metascopes(["ent_cloudmgr_sdk", "ent_user_sdk"]),
    )
}

/// The claims Adobe's SDKs put in the JWT.
fn claims(ims: &str) -> Value {
    json!({
        "exp": unix_now().as_secs() + 300,
        "iss": ORG,
        "sub": TECH_ACCOUNT,
        "aud": format!("{ims}/c/jwt-client"),
        format!("{ims}/s/ent_cloudmgr_sdk"): true,
    })
}

fn sign(claims: &Value, private_pem: &str) -> String {
    let key = EncodingKey::from_rsa_pem(private_pem.as_bytes()).expect("RSA private key");
    jsonwebtoken::encode(&Header::new(Algorithm::RS256), claims, &key).expect("signs")
}

async fn exchange(url: &str, jwt: &str) -> (StatusCode, Value) {
    let response =
        post_form(url, &[("client_id", "jwt-client"), ("client_secret", "jwt-secret"), ("jwt_token", jwt)]).await;
    assert!(response.headers().contains_key("x-debug-id"));
    status_and_json(response).await
}

#[tokio::test]
async fn jwt_exchange_accepts_pkcs1_and_pkcs8_signed_jwts_on_every_path() {
    let server = server_with_client(service_account_client(&KEY.public_pem)).await;
    let paths = ["/ims/exchange/jwt", "/ims/exchange/jwt/", "/ims/exchange/v1/jwt", "/ims/exchange/v1/jwt/"];
    for path in paths {
        for private_pem in [&KEY.pkcs1_pem, &KEY.pkcs8_pem] {
            let jwt = sign(&claims(server.url()), private_pem);
            let (status, body) = exchange(&format!("{}{path}", server.url()), &jwt).await;
            assert_eq!(status, StatusCode::OK, "{path}: {body}");
            assert_eq!(keys(&body), ["access_token", "expires_in", "token_type"]);
            assert_eq!(body["token_type"], "bearer");
            assert_eq!(body["expires_in"], 5000, "milliseconds on this endpoint");
            let payload = jwt_payload(body["access_token"].as_str().expect("token"));
            assert_eq!(payload["type"], "access_token");
            assert_eq!(payload["expires_in"], "5000");
            assert_eq!(payload["user_id"], TECH_ACCOUNT);
        }
    }
    assert_eq!(server.mint_count("jwt-client"), 8);
    let record = server.requests().pop().expect("logged");
    assert_eq!(record.endpoint, EndpointKind::JwtExchange);
    assert_eq!(record.scope.as_deref(), Some("ent_cloudmgr_sdk"));
}

#[tokio::test]
async fn jwt_exchange_refuses_what_ims_refuses() {
    let server = server_with_client(service_account_client(&KEY.public_pem)).await;
    let ims = server.url().to_owned();
    let url = format!("{ims}/ims/exchange/jwt");
    let tweak = |change: &dyn Fn(&mut serde_json::Map<String, Value>)| {
        let mut claims = claims(&ims);
        change(claims.as_object_mut().expect("object"));
        claims
    };
    let hs256 = jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        &claims(&ims),
        &EncodingKey::from_secret(b"not an RSA key"),
    )
    .expect("signs");
    let cases: Vec<(&str, String, &str)> = vec![
        ("signed with another key", sign(&claims(&ims), &OTHER_KEY.pkcs8_pem), "invalid_signature"),
        ("HS256 instead of RS256", hs256, "invalid_signature"),
        (
            "expired",
            sign(
                &tweak(&|c| {
                    c.insert("exp".into(), json!(unix_now().as_secs() - 10));
                }),
                &KEY.pkcs1_pem,
            ),
            "invalid_token",
        ),
        ("no exp", sign(&tweak(&|c| drop(c.remove("exp"))), &KEY.pkcs1_pem), "invalid_token"),
        (
            "exp not a number",
            sign(
                &tweak(&|c| {
                    c.insert("exp".into(), json!("tomorrow"));
                }),
                &KEY.pkcs1_pem,
            ),
            "bad_request",
        ),
        (
            "wrong iss",
            sign(
                &tweak(&|c| {
                    c.insert("iss".into(), json!("99999@AdobeOrg"));
                }),
                &KEY.pkcs1_pem,
            ),
            "bad_request",
        ),
        (
            "wrong sub",
            sign(
                &tweak(&|c| {
                    c.insert("sub".into(), json!("OTHER@techacct.adobe.com"));
                }),
                &KEY.pkcs1_pem,
            ),
            "bad_request",
        ),
        (
            "aud of another IMS host",
            sign(
                &tweak(&|c| {
                    c.insert("aud".into(), json!("https://ims-na1.adobelogin.com/c/jwt-client"));
                }),
                &KEY.pkcs1_pem,
            ),
            "invalid_token",
        ),
        (
            "unknown metascope",
            sign(
                &tweak(&|c| {
                    c.insert(format!("{ims}/s/ent_analytics_bulk_ingest_sdk"), json!(true));
                }),
                &KEY.pkcs1_pem,
            ),
            "invalid_scope",
        ),
        (
            "metascope of another IMS host",
            sign(
                &tweak(&|c| {
                    c.insert("https://ims-na1.adobelogin.com/s/ent_user_sdk".into(), json!(true));
                }),
                &KEY.pkcs1_pem,
            ),
            "invalid_scope",
        ),
        (
            "no metascope",
            sign(&tweak(&|c| drop(c.remove(&format!("{ims}/s/ent_cloudmgr_sdk")))), &KEY.pkcs1_pem),
            "invalid_scope",
        ),
        ("not a JWT", "not.a.jwt".into(), "invalid_token"),
    ];
    for (case, jwt, error) in cases {
        let (status, body) = exchange(&url, &jwt).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{case}: {body}");
        assert_eq!(body["error"], error, "{case}: {body}");
        assert_eq!(keys(&body), ["error", "error_description"], "{case}");
    }

    let valid = sign(&claims(&ims), &KEY.pkcs1_pem);
    let refusals = [
        (
            vec![("client_id", "jwt-client"), ("client_secret", "wrong"), ("jwt_token", &valid)],
            StatusCode::BAD_REQUEST,
            "invalid_client",
        ),
        (
            vec![("client_id", "nobody"), ("client_secret", "jwt-secret"), ("jwt_token", &valid)],
            StatusCode::UNAUTHORIZED,
            "invalid_client",
        ),
        (vec![("client_id", "jwt-client"), ("client_secret", "jwt-secret")], StatusCode::BAD_REQUEST, "invalid_token"),
    ];
    for (form, want_status, error) in refusals {
        let (status, body) = status_and_json(post_form(&url, &form).await).await;
        assert_adobe_error(status, &body, want_status, error);
    }
    assert_eq!(server.mint_count("jwt-client"), 0);
    let outcomes: Vec<Outcome> = server.requests_for("jwt-client").into_iter().map(|record| record.outcome).collect();
    assert!(outcomes.contains(&Outcome::Rejected("invalid_signature".into())));
}

#[tokio::test]
async fn issuer_base_url_can_be_the_real_ims_host() {
    let server = server_with_client(service_account_client(&KEY.public_pem)).await;
    assert_eq!(server.issuer_base_url(), server.url());
    server.set_issuer_base_url("https://ims-na1.adobelogin.com/");
    assert_eq!(server.issuer_base_url(), "https://ims-na1.adobelogin.com");
    let url = format!("{}/ims/exchange/jwt", server.url());

    let for_real_host = sign(&claims("https://ims-na1.adobelogin.com"), &KEY.pkcs8_pem);
    let (status, body) = exchange(&url, &for_real_host).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let for_local_host = sign(&claims(server.url()), &KEY.pkcs8_pem);
    let (status, body) = exchange(&url, &for_local_host).await;
    assert_adobe_error(status, &body, StatusCode::BAD_REQUEST, "invalid_token");
}

#[tokio::test]
async fn rotated_public_key_replaces_the_old_one() {
    let server = server_with_client(service_account_client(&KEY.public_pem)).await;
    let url = format!("{}/ims/exchange/jwt", server.url());
    server.set_adobe_public_key("jwt-client", &OTHER_KEY.public_pem).expect("key replaced");

    let (status, body) = exchange(&url, &sign(&claims(server.url()), &KEY.pkcs1_pem)).await;
    assert_adobe_error(status, &body, StatusCode::BAD_REQUEST, "invalid_signature");
    let (status, body) = exchange(&url, &sign(&claims(server.url()), &OTHER_KEY.pkcs1_pem)).await;
    assert_eq!(status, StatusCode::OK, "{body}");

    assert!(matches!(server.set_adobe_public_key("jwt-client", "garbage"), Err(Error::InvalidPublicKey(_))));
    server.register_adobe_client(AdobeClient::new("plain", "secret")).expect("registers");
    assert!(matches!(server.set_adobe_public_key("plain", &KEY.public_pem), Err(Error::NotServiceAccount(_))));
}

#[tokio::test]
async fn certificate_can_be_registered_instead_of_a_bare_public_key() {
    // Adobe's console takes an X.509 certificate for the credential's key pair.
    let key_pair = rcgen::KeyPair::from_pkcs8_pem_and_sign_algo(&KEY.pkcs8_pem, &rcgen::PKCS_RSA_SHA256)
        .expect("rcgen reads the RSA key");
    let certificate = rcgen::CertificateParams::new(Vec::<String>::new())
        .expect("params")
        .self_signed(&key_pair)
        .expect("self-signed");
    let server = server_with_client(service_account_client(&certificate.pem())).await;
    let url = format!("{}/ims/exchange/jwt", server.url());
    let (status, body) = exchange(&url, &sign(&claims(server.url()), &KEY.pkcs1_pem)).await;
    assert_eq!(status, StatusCode::OK, "{body}");
}

#[tokio::test]
async fn service_account_credential_also_works_for_client_credentials() {
    // Adobe migrates JWT credentials to OAuth Server-to-Server under the same client id.
    let server = server_with_client(service_account_client(&KEY.public_pem)).await;
    let (status, body) = status_and_json(mint(server.url(), "jwt-client", "jwt-secret", "openid").await).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["expires_in"], 5);
    assert_eq!(jwt_payload(body["access_token"].as_str().expect("token"))["user_id"], TECH_ACCOUNT);
}
