//! Fault injection.

mod common;

use std::time::{Duration, Instant, SystemTime};

use common::{akeneo_token, http, keys, mint, status_and_json, try_mint};
use fake_token_server::{
    AdobeClient, EndpointKind, FakeTokenServer, Fault, FaultKind, Outcome, RetryAfter, StatusCode,
};
use serde_json::{Value, json};

async fn ims() -> FakeTokenServer {
    let server = FakeTokenServer::start().await.expect("server starts");
    for client_id in ["a", "b"] {
        server.register_adobe_client(AdobeClient::new(client_id, "secret")).expect("registers");
    }
    server
}

async fn mint_a(server: &FakeTokenServer) -> reqwest::Response {
    mint(server.url(), "a", "secret", "openid").await
}

#[tokio::test]
async fn internal_error_answers_like_ims_and_mints_nothing() {
    let server = ims().await;
    server.inject_fault(Fault::internal_error());
    let response = mint_a(&server).await;
    assert!(response.headers().contains_key("x-debug-id"));
    let (status, body) = status_and_json(response).await;
    assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR);
    assert_eq!(body, json!({"error": "internal_error", "error_description": "Please try again later"}));
    assert_eq!(server.mint_count("a"), 0);
    let record = server.requests().pop().expect("logged");
    assert_eq!(record.outcome, Outcome::Faulted);
    assert_eq!(record.status, Some(StatusCode::INTERNAL_SERVER_ERROR));
    assert!(matches!(record.fault, Some(FaultKind::Respond { .. })));
}

#[tokio::test]
async fn throttling_sends_retry_after_in_either_form() {
    let server = ims().await;
    server.inject_fault(Fault::service_unavailable(RetryAfter::Seconds(7)).times(1));
    let response = mint_a(&server).await;
    assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(response.headers()["retry-after"], "7");

    let when = SystemTime::now() + Duration::from_secs(120);
    server.inject_fault(Fault::too_many_requests(RetryAfter::At(when)).times(1));
    let response = mint_a(&server).await;
    assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
    let header = response.headers()["retry-after"].to_str().expect("ASCII");
    assert_eq!(header, httpdate::fmt_http_date(when));
    let parsed = httpdate::parse_http_date(header).expect("an HTTP-date");
    assert!(parsed > SystemTime::now());
    let body: Value = response.json().await.expect("JSON body");
    assert_eq!(keys(&body), ["error", "error_description"]);

    assert_eq!(mint_a(&server).await.status(), StatusCode::OK, "both used up");
}

#[tokio::test]
async fn counted_fault_clears_itself_and_uncounted_fault_needs_clearing() {
    let server = ims().await;
    let counted = server.inject_fault(Fault::internal_error().times(2));
    for _ in 0..2 {
        assert_eq!(mint_a(&server).await.status(), StatusCode::INTERNAL_SERVER_ERROR);
    }
    assert_eq!(mint_a(&server).await.status(), StatusCode::OK);
    assert!(!server.clear_fault(counted), "already gone");

    let lasting = server.inject_fault(Fault::respond(StatusCode::BAD_GATEWAY, "{}"));
    for _ in 0..3 {
        assert_eq!(mint_a(&server).await.status(), StatusCode::BAD_GATEWAY);
    }
    assert!(server.clear_fault(lasting));
    assert_eq!(mint_a(&server).await.status(), StatusCode::OK);

    server.inject_fault(Fault::internal_error());
    server.inject_fault(Fault::hang());
    server.clear_faults();
    assert_eq!(mint_a(&server).await.status(), StatusCode::OK);
}

#[tokio::test]
async fn per_client_and_per_endpoint_faults_leave_others_alone() {
    let server = ims().await;
    server.inject_fault(Fault::internal_error().for_client("a"));
    assert_eq!(mint_a(&server).await.status(), StatusCode::INTERNAL_SERVER_ERROR);
    let other = mint(server.url(), "b", "secret", "openid").await;
    assert_eq!(other.status(), StatusCode::OK);

    server.clear_faults();
    server.inject_fault(Fault::internal_error().for_endpoint(EndpointKind::JwtExchange));
    assert_eq!(mint_a(&server).await.status(), StatusCode::OK);
    let exchange = http()
        .post(format!("{}/ims/exchange/jwt", server.url()))
        .form(&[("client_id", "a"), ("client_secret", "secret"), ("jwt_token", "x")])
        .send()
        .await
        .expect("sent");
    assert_eq!(exchange.status(), StatusCode::INTERNAL_SERVER_ERROR);
}

#[tokio::test]
async fn delay_answers_normally_after_the_delay() {
    let server = ims().await;
    server.inject_fault(Fault::delay(Duration::from_millis(400)).times(1));
    let started = Instant::now();
    let response = mint_a(&server).await;
    assert!(started.elapsed() >= Duration::from_millis(400));
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(server.mint_count("a"), 1);
    let record = server.requests().pop().expect("logged");
    assert_eq!(record.fault, Some(FaultKind::Delay(Duration::from_millis(400))));
    assert_eq!(record.outcome, Outcome::Issued);
}

#[tokio::test]
async fn hang_never_answers_until_the_client_gives_up() {
    let server = ims().await;
    server.inject_fault(Fault::hang().times(1));
    let impatient = reqwest::Client::builder().timeout(Duration::from_millis(500)).build().expect("client");
    let error = try_mint(&impatient, server.url(), "a", "secret", "openid").await.expect_err("no answer");
    assert!(error.is_timeout(), "{error:?}");
    let record = server.requests().pop().expect("logged on arrival");
    assert_eq!(record.status, None);
    assert_eq!(record.fault, Some(FaultKind::Hang));
    assert_eq!(mint_a(&server).await.status(), StatusCode::OK);
}

#[tokio::test]
async fn malformed_json_is_a_200_that_does_not_parse() {
    let server = ims().await;
    server.inject_fault(Fault::malformed_json().times(1));
    let response = mint_a(&server).await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.headers()["content-type"], "application/json");
    let text = response.text().await.expect("body");
    assert!(serde_json::from_str::<Value>(&text).is_err(), "{text}");
    assert_eq!(server.mint_count("a"), 0);
}

#[tokio::test]
async fn missing_fields_issue_a_token_without_them() {
    let server = ims().await;
    server.inject_fault(Fault::missing_fields(["expires_in"]).times(1));
    let (status, body) = status_and_json(mint_a(&server).await).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(keys(&body), ["access_token", "token_type"]);
    assert_eq!(server.issued_tokens("a"), [body["access_token"].as_str().expect("token")]);

    // Error bodies are left alone.
    server.inject_fault(Fault::missing_fields(["error_description"]).times(1));
    let (status, body) = status_and_json(mint(server.url(), "a", "wrong", "openid").await).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(keys(&body), ["error", "error_description"]);
}

#[tokio::test]
async fn dropped_connection_is_a_transport_error_without_a_response() {
    let server = ims().await;
    server.inject_fault(Fault::drop_connection().times(1));
    let started = Instant::now();
    let error = try_mint(&http(), server.url(), "a", "secret", "openid").await.expect_err("no response");
    assert!(!error.is_timeout(), "{error:?}");
    assert!(error.status().is_none(), "{error:?}");
    let mut causes = Vec::new();
    let mut cause: Option<&dyn std::error::Error> = Some(&error);
    while let Some(current) = cause {
        causes.push(current.to_string());
        cause = current.source();
    }
    assert!(causes.iter().any(|cause| cause.contains("connection closed before message completed")), "{causes:?}");
    assert!(started.elapsed() < Duration::from_secs(10), "closed, not hung");
    let record = server.requests().pop().expect("logged");
    assert_eq!((record.status, record.outcome), (None, Outcome::Faulted));
    assert_eq!(mint_a(&server).await.status(), StatusCode::OK, "still serving");
}

#[tokio::test]
async fn faults_apply_to_akeneo_with_the_given_body() {
    let server = FakeTokenServer::start().await.expect("starts");
    server.register_akeneo_client("pim", "secret");
    server.register_akeneo_user("admin", "password");
    server.inject_fault(
        Fault::respond(StatusCode::SERVICE_UNAVAILABLE, r#"{"code":503,"message":"Service Unavailable"}"#)
            .for_endpoint(EndpointKind::AkeneoRefresh),
    );
    let url = server.url();
    let send = |body: Value| async move { akeneo_token(url, "pim", "secret", &body).await };
    let (status, issued) =
        status_and_json(send(json!({"grant_type": "password", "username": "admin", "password": "password"})).await)
            .await;
    assert_eq!(status, StatusCode::OK);
    let response = send(json!({"grant_type": "refresh_token", "refresh_token": issued["refresh_token"]})).await;
    assert!(!response.headers().contains_key("x-debug-id"));
    let (status, body) = status_and_json(response).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(body, json!({"code": 503, "message": "Service Unavailable"}));
}
