//! Helpers shared by the integration tests.

#![allow(dead_code)] // Each test binary uses a different subset.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use serde_json::Value;

/// A client with a deadline, so that a broken server fails the test instead of hanging it.
pub fn http() -> reqwest::Client {
    reqwest::Client::builder().timeout(Duration::from_secs(20)).build().expect("reqwest client")
}

pub async fn post_form(url: &str, form: &[(&str, &str)]) -> reqwest::Response {
    http().post(url).form(form).send().await.expect("request sent")
}

/// `client_credentials` request for `scope` against `/ims/token/v3`.
pub async fn mint(base: &str, client_id: &str, secret: &str, scope: &str) -> reqwest::Response {
    try_mint(&http(), base, client_id, secret, scope).await.expect("request sent")
}

/// The same request through `client`, for tests where the transport is expected to fail.
pub async fn try_mint(
    client: &reqwest::Client,
    base: &str,
    client_id: &str,
    secret: &str,
    scope: &str,
) -> reqwest::Result<reqwest::Response> {
    client
        .post(format!("{base}/ims/token/v3"))
        .form(&[
            ("grant_type", "client_credentials"),
            ("client_id", client_id),
            ("client_secret", secret),
            ("scope", scope),
        ])
        .send()
        .await
}

/// A JSON request to Akeneo's token endpoint, the client sent as HTTP Basic credentials.
pub async fn akeneo_token(base: &str, client_id: &str, secret: &str, body: &Value) -> reqwest::Response {
    http()
        .post(format!("{base}/api/oauth/v1/token"))
        .basic_auth(client_id, Some(secret))
        .json(body)
        .send()
        .await
        .expect("request sent")
}

pub async fn status_and_json(response: reqwest::Response) -> (reqwest::StatusCode, Value) {
    let status = response.status();
    let body = response.json().await.expect("JSON body");
    (status, body)
}

/// The sorted member names of a JSON object.
pub fn keys(body: &Value) -> Vec<&str> {
    let mut keys: Vec<&str> = body.as_object().expect("JSON object").keys().map(String::as_str).collect();
    keys.sort_unstable();
    keys
}

/// The payload of a JWT, without verifying it (as a client reading an IMS token would).
pub fn jwt_payload(jwt: &str) -> Value {
    let parts: Vec<&str> = jwt.split('.').collect();
    assert_eq!(parts.len(), 3, "a JWT has three parts");
    let payload = URL_SAFE_NO_PAD.decode(parts[1]).expect("base64url payload");
    serde_json::from_slice(&payload).expect("JSON payload")
}

pub fn unix_now() -> Duration {
    SystemTime::now().duration_since(UNIX_EPOCH).expect("clock after 1970")
}
