//! The request log and the waiting helpers.

mod common;

use std::time::{Duration, SystemTime};

use common::{akeneo_token, mint};
use fake_token_server::{AdobeClient, EndpointKind, Error, FakeTokenServer, Fault, Outcome, RequestRecord, StatusCode};
use serde_json::json;

#[tokio::test]
async fn request_log_describes_each_request() {
    let server = FakeTokenServer::start().await.expect("starts");
    server.register_adobe_client(AdobeClient::new("a", "secret")).expect("registers");
    server.register_akeneo_client("pim", "pim-secret");
    server.register_akeneo_user("admin", "password");

    let before = SystemTime::now();
    let ok = mint(server.url(), "a", "secret", "openid,AdobeID").await;
    let ok_debug_id = ok.headers()["x-debug-id"].to_str().expect("ASCII").to_owned();
    let refused = mint(server.url(), "a", "wrong", "openid").await;
    assert_eq!(refused.status(), StatusCode::BAD_REQUEST);
    let akeneo = akeneo_token(
        server.url(),
        "pim",
        "pim-secret",
        &json!({"grant_type": "password", "username": "admin", "password": "password"}),
    )
    .await;
    assert_eq!(akeneo.status(), StatusCode::OK);
    let after = SystemTime::now();

    let log = server.requests();
    assert_eq!(log.len(), 3);
    let RequestRecord {
        endpoint,
        path,
        client_id,
        grant_type,
        scope,
        status,
        outcome,
        fault,
        debug_id,
        received_at,
        secret_uuid,
    } = log[0].clone();
    assert_eq!(endpoint, EndpointKind::ClientCredentials);
    assert_eq!(path, "/ims/token/v3");
    assert_eq!(client_id.as_deref(), Some("a"));
    assert_eq!(grant_type.as_deref(), Some("client_credentials"));
    assert_eq!(scope.as_deref(), Some("openid,AdobeID"));
    assert_eq!(status, Some(StatusCode::OK));
    assert_eq!(outcome, Outcome::Issued);
    assert_eq!(fault, None);
    assert_eq!(debug_id, Some(ok_debug_id));
    assert!(before <= received_at && received_at <= after);
    assert_eq!(secret_uuid, server.client_secret_uuid("a", "secret"), "the secret used, by uuid");

    assert_eq!(log[1].outcome, Outcome::Rejected("invalid_client".into()));
    assert_eq!(log[1].status, Some(StatusCode::BAD_REQUEST));
    assert_ne!(log[1].debug_id, log[0].debug_id);
    assert_eq!(log[2].endpoint, EndpointKind::AkeneoPassword);
    assert_eq!(log[2].client_id.as_deref(), Some("pim"));

    assert_eq!(server.requests_for("a"), log[..2]);
    assert_eq!(server.requests_for("pim"), log[2..]);
    assert!(server.requests_for("nobody").is_empty());
    assert_eq!(server.mint_count("a"), 1);
    assert_eq!(server.mint_count("pim"), 1);
    assert_eq!(server.mint_count("nobody"), 0);
}

#[tokio::test]
async fn waiting_for_mints_and_requests_honours_the_deadline() {
    let server = FakeTokenServer::start().await.expect("starts");
    server.register_adobe_client(AdobeClient::new("a", "secret")).expect("registers");
    let url = server.url().to_owned();
    let minting = tokio::spawn(async move {
        for _ in 0..3 {
            mint(&url, "a", "secret", "openid").await;
        }
        mint(&url, "a", "wrong", "openid").await;
    });
    server.wait_for_mints("a", 3, Duration::from_secs(10)).await.expect("three mints");
    server.wait_for_requests("a", 4, Duration::from_secs(10)).await.expect("four requests, one refused");
    minting.await.expect("client task");

    let error = server.wait_for_mints("a", 4, Duration::from_millis(200)).await.expect_err("no fourth mint");
    assert!(matches!(error, Error::Timeout { wanted: 4, seen: 3, .. }), "{error}");
}

#[tokio::test]
async fn arrivals_count_requests_still_in_flight() {
    let server = FakeTokenServer::start().await.expect("starts");
    server.register_adobe_client(AdobeClient::new("a", "secret")).expect("registers");
    server.inject_fault(Fault::delay(Duration::from_secs(5)).for_client("a"));
    let url = server.url().to_owned();
    let delayed = tokio::spawn(async move { mint(&url, "a", "secret", "openid").await });
    server.wait_for_arrivals("a", 1, Duration::from_secs(10)).await.expect("the request arrived");
    let error = server.wait_for_requests("a", 1, Duration::from_millis(200)).await.expect_err("not answered yet");
    assert!(matches!(error, Error::Timeout { wanted: 1, seen: 0, .. }), "{error}");
    delayed.abort();
}
