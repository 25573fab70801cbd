//! Adobe IMS user authentication (OAuth Web App) over HTTP: the test plays the browser.

mod common;

use std::time::Duration;

use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use common::{keys, post_form, status_and_json};
use fake_token_server::{AdobeClient, EndpointKind, FakeTokenServer, Outcome, StatusCode};
use serde_json::Value;
use sha2::{Digest, Sha256};

const REDIRECT: &str = "https://localhost:8443/callback";
const VERIFIER: &str = "verifier-verifier-verifier-verifier-verifier-0123";
const USER: &str = "test-user@AdobeID";

/// Follows `/ims/authorize/v2` to the redirect and returns the code.
async fn authorize(server: &FakeTokenServer, scope: &str) -> String {
    let challenge = URL_SAFE_NO_PAD.encode(Sha256::digest(VERIFIER.as_bytes()));
    let browser = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().expect("client");
    let response = browser
        .get(format!("{}/ims/authorize/v2", server.url()))
        .query(&[
            ("client_id", "web"),
            ("redirect_uri", REDIRECT),
            ("scope", scope),
            ("response_type", "code"),
            ("state", "s-1"),
            ("code_challenge", challenge.as_str()),
            ("code_challenge_method", "S256"),
        ])
        .send()
        .await
        .expect("authorize answers");
    assert_eq!(response.status(), StatusCode::FOUND);
    let location = reqwest::Url::parse(response.headers()["location"].to_str().expect("ascii")).expect("url");
    assert_eq!(&location.as_str()[..REDIRECT.len()], REDIRECT);
    let query: Vec<(String, String)> = location.query_pairs().into_owned().collect();
    assert!(query.contains(&("state".into(), "s-1".into())), "{query:?}");
    query.into_iter().find(|(name, _)| name == "code").expect("code").1
}

async fn token(server: &FakeTokenServer, form: &[(&str, &str)]) -> (StatusCode, Value) {
    status_and_json(post_form(&format!("{}/ims/token/v3", server.url()), form).await).await
}

async fn refresh(server: &FakeTokenServer, refresh_token: &str) -> (StatusCode, Value) {
    token(
        server,
        &[
            ("grant_type", "refresh_token"),
            ("client_id", "web"),
            ("client_secret", "secret"),
            ("refresh_token", refresh_token),
        ],
    )
    .await
}

#[tokio::test]
async fn code_exchange_then_rotating_refreshes_until_consent_is_revoked() {
    let server = FakeTokenServer::start().await.expect("server starts");
    server
        .register_adobe_client(
            AdobeClient::new("web", "secret").with_web_app(REDIRECT).with_token_lifetime(Duration::from_secs(5)),
        )
        .expect("registers");
    let code = authorize(&server, "openid,AdobeID,offline_access").await;

    // Basic client authentication for the exchange.
    let response = common::http()
        .post(format!("{}/ims/token/v3", server.url()))
        .basic_auth("web", Some("secret"))
        .form(&[("grant_type", "authorization_code"), ("code", code.as_str()), ("code_verifier", VERIFIER)])
        .send()
        .await
        .expect("token answers");
    let (status, body) = status_and_json(response).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(keys(&body), ["access_token", "expires_in", "refresh_token", "token_type"]);
    assert_eq!(body["expires_in"], 5);
    let first = body["refresh_token"].as_str().expect("refresh token").to_owned();

    let (status, body) = refresh(&server, &first).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let second = body["refresh_token"].as_str().expect("rotated").to_owned();
    assert_ne!(first, second);
    let (status, body) = refresh(&server, &first).await;
    assert_eq!((status, body["error"].as_str()), (StatusCode::BAD_REQUEST, Some("invalid_grant")));
    assert_eq!(server.refresh_tokens_issued("web", USER), 2);
    assert_eq!(server.live_refresh_tokens("web"), 1);

    assert_eq!(server.revoke_user_consent("web", USER), 1);
    let (status, body) = refresh(&server, &second).await;
    assert_eq!((status, body["error"].as_str()), (StatusCode::BAD_REQUEST, Some("invalid_grant")));

    let outcomes: Vec<_> =
        server.requests_to(EndpointKind::UserRefresh, "web").into_iter().map(|record| record.outcome).collect();
    let rejected = Outcome::Rejected("invalid_grant".into());
    assert_eq!(outcomes, [Outcome::Issued, rejected.clone(), rejected]);
    assert_eq!(server.requests_to(EndpointKind::AuthorizationCode, "web").len(), 1);
    let logged = format!("{:?}", server.requests());
    assert!(!logged.contains(&first) && !logged.contains(&second) && !logged.contains(&code));
}

#[tokio::test]
async fn refresh_tokens_expire_without_sliding() {
    let server = FakeTokenServer::start().await.expect("server starts");
    server
        .register_adobe_client(
            AdobeClient::new("web", "secret").with_web_app(REDIRECT).with_refresh_token_lifetime(Duration::ZERO),
        )
        .expect("registers");
    let code = authorize(&server, "openid,offline_access").await;
    let (status, body) = token(
        &server,
        &[
            ("grant_type", "authorization_code"),
            ("client_id", "web"),
            ("client_secret", "secret"),
            ("code", code.as_str()),
            ("code_verifier", VERIFIER),
        ],
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let expired = body["refresh_token"].as_str().expect("refresh token").to_owned();
    let (status, body) = refresh(&server, &expired).await;
    assert_eq!((status, body["error"].as_str()), (StatusCode::BAD_REQUEST, Some("invalid_grant")));
}
