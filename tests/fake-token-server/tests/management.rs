//! The I/O Management API's client-secret endpoints, and how they tie in with the fake IMS.

mod common;

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use common::{http, keys, mint, status_and_json};
use fake_token_server::{AdobeClient, EndpointKind, FakeTokenServer, Fault, Outcome, RetryAfter, StatusCode};
use serde_json::Value;

const ORG: &str = "1234567";
const CREDENTIAL: &str = "89012345";
const MANAGEMENT_SCOPES: &str = "AdobeID,openid,read_organizations,additional_info.projectedProductContext,additional_info.roles,adobeio_api,read_client_secret,manage_client_secrets";

async fn server() -> FakeTokenServer {
    let server = FakeTokenServer::start().await.expect("server starts");
    server
        .register_adobe_client(AdobeClient::new("cid", "p8e-original").with_management(ORG, CREDENTIAL))
        .expect("registers");
    server
}

fn secrets_url(server: &FakeTokenServer, org: &str, credential: &str) -> String {
    format!("{}/console/organizations/{org}/credentials/{credential}/secrets", server.url())
}

/// A management token minted with `secret`.
async fn token(server: &FakeTokenServer, secret: &str, scope: &str) -> String {
    let (status, body) = status_and_json(mint(server.url(), "cid", secret, scope).await).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    body["access_token"].as_str().expect("token").to_owned()
}

async fn call(method: reqwest::Method, url: &str, token: Option<&str>, api_key: Option<&str>) -> (StatusCode, Value) {
    let mut request = http().request(method, url);
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    if let Some(key) = api_key {
        request = request.header("x-api-key", key);
    }
    let response = request.send().await.expect("request sent");
    let status = response.status();
    let text = response.text().await.expect("body");
    let body = if text.is_empty() { Value::Null } else { serde_json::from_str(&text).expect("JSON body") };
    (status, body)
}

async fn list(server: &FakeTokenServer, token: &str) -> (StatusCode, Value) {
    call(reqwest::Method::GET, &secrets_url(server, ORG, CREDENTIAL), Some(token), Some("cid")).await
}

async fn add(server: &FakeTokenServer, token: &str) -> (StatusCode, Value) {
    call(reqwest::Method::POST, &secrets_url(server, ORG, CREDENTIAL), Some(token), Some("cid")).await
}

async fn delete(server: &FakeTokenServer, token: &str, uuid: &str) -> (StatusCode, Value) {
    let url = format!("{}/{uuid}", secrets_url(server, ORG, CREDENTIAL));
    call(reqwest::Method::DELETE, &url, Some(token), Some("cid")).await
}

fn ms(at: SystemTime) -> u64 {
    at.duration_since(UNIX_EPOCH).expect("after 1970").as_millis() as u64
}

#[tokio::test]
async fn rotation_through_the_api_add_switch_compare_delete() {
    let server = server().await;
    let before = SystemTime::now();
    let old_token = token(&server, "p8e-original", MANAGEMENT_SCOPES).await;
    let original_uuid = server.client_secret_uuid("cid", "p8e-original").expect("uuid");

    let (status, listed) = list(&server, &old_token).await;
    assert_eq!(status, StatusCode::OK, "{listed}");
    assert_eq!(keys(&listed), ["client_id", "client_secrets"]);
    assert_eq!(listed["client_id"], "cid");
    let secrets = listed["client_secrets"].as_array().expect("array");
    assert_eq!(secrets.len(), 1);
    assert_eq!(
        keys(&secrets[0]),
        ["created_at", "created_at_str", "expires_at", "expires_at_str", "secret_usages", "uuid"]
    );
    assert_eq!(secrets[0]["uuid"], original_uuid.as_str());
    assert_eq!(secrets[0]["expires_at"], "PERMANENT");
    let usage = &secrets[0]["secret_usages"][0];
    assert_eq!(usage["grant_type"], "client_credentials");
    let last_used = usage["last_used_at"].as_u64().expect("milliseconds");
    assert!(last_used >= ms(before) && last_used <= ms(SystemTime::now()), "the mint just now");
    assert!(!listed.to_string().contains("p8e-original"), "values are never listed");

    let (status, added) = add(&server, &old_token).await;
    assert_eq!(status, StatusCode::CREATED, "{added}");
    let new_secret = added["client_secret"].as_str().expect("shown once").to_owned();
    let new_uuid = added["uuid"].as_str().expect("uuid").to_owned();
    assert!(new_secret.starts_with("p8e-") && new_secret.len() > 20);
    assert_eq!(added["expires_at"], "PERMANENT");
    assert_eq!(server.created_client_secrets("cid"), std::slice::from_ref(&new_secret));

    let (_, listed) = list(&server, &old_token).await;
    let secrets = listed["client_secrets"].as_array().expect("array");
    assert_eq!(secrets.len(), 2);
    assert_eq!(secrets[1]["uuid"], new_uuid.as_str());
    assert_eq!(secrets[1]["secret_usages"], Value::Null, "never used yet");
    assert!(!listed.to_string().contains(&new_secret));

    // Both secrets mint; the new one's use shows in the list.
    let new_token = token(&server, &new_secret, MANAGEMENT_SCOPES).await;
    let (_, listed) = list(&server, &new_token).await;
    assert!(listed["client_secrets"][1]["secret_usages"][0]["last_used_at"].as_u64().is_some());

    let (status, body) = delete(&server, &new_token, &original_uuid).await;
    assert_eq!((status, body), (StatusCode::NO_CONTENT, Value::Null));
    let (status, refused) = status_and_json(mint(server.url(), "cid", "p8e-original", "openid").await).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(refused["error"], "invalid_client", "a deleted secret stops working at once");
    assert_eq!(mint(server.url(), "cid", &new_secret, "openid").await.status(), StatusCode::OK);
    // Tokens minted before the deletion stay valid, as at Adobe.
    assert_eq!(list(&server, &old_token).await.0, StatusCode::OK);

    let infos = server.client_secrets("cid");
    assert_eq!(infos.len(), 1);
    assert_eq!(infos[0].uuid, new_uuid);
    assert!(infos[0].active && infos[0].last_used_at.is_some());

    let log = server.requests_to(EndpointKind::ManagementAdd, "cid");
    assert_eq!(log.len(), 1);
    assert_eq!(log[0].outcome, Outcome::Served);
    assert_eq!(log[0].status, Some(StatusCode::CREATED));
    assert_eq!(log[0].secret_uuid.as_deref(), Some(new_uuid.as_str()));
    let deletes = server.requests_to(EndpointKind::ManagementDelete, "cid");
    assert_eq!(deletes[0].secret_uuid.as_deref(), Some(original_uuid.as_str()));
    assert_eq!(server.mint_count("cid"), 3, "management calls are not mints");
    let mints = server.requests_to(EndpointKind::ClientCredentials, "cid");
    assert_eq!(mints[1].secret_uuid.as_deref(), Some(new_uuid.as_str()), "the log names the secret used");
}

#[tokio::test]
async fn at_most_two_secrets_and_never_none() {
    let server = server().await;
    let token = token(&server, "p8e-original", MANAGEMENT_SCOPES).await;
    assert_eq!(add(&server, &token).await.0, StatusCode::CREATED);
    let (status, body) = add(&server, &token).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert_eq!(keys(&body), ["error_code", "message"]);
    assert_eq!(server.client_secrets("cid").len(), 2);
    assert_eq!(server.created_client_secrets("cid").len(), 1);

    let uuids: Vec<String> = server.client_secrets("cid").into_iter().map(|s| s.uuid).collect();
    assert_eq!(delete(&server, &token, &uuids[1]).await.0, StatusCode::NO_CONTENT);
    let (status, body) = delete(&server, &token, &uuids[1]).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "already gone: {body}");
    let (status, body) = delete(&server, &token, &uuids[0]).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "the last secret stays: {body}");
}

#[tokio::test]
async fn a_new_secret_can_take_a_moment_to_work() {
    let server = server().await;
    server.set_secret_activation_delay("cid", Duration::from_millis(600)).expect("managed client");
    let token = token(&server, "p8e-original", MANAGEMENT_SCOPES).await;
    let (_, added) = add(&server, &token).await;
    let new_secret = added["client_secret"].as_str().expect("value");
    let (status, body) = status_and_json(mint(server.url(), "cid", new_secret, "openid").await).await;
    assert_eq!((status, body["error"].as_str()), (StatusCode::BAD_REQUEST, Some("invalid_client")));
    assert!(!server.client_secrets("cid")[1].active);
    let rejected = server.requests_to(EndpointKind::ClientCredentials, "cid").pop().expect("logged");
    assert_eq!(rejected.secret_uuid.as_deref(), added["uuid"].as_str(), "a known but inactive secret");
    tokio::time::sleep(Duration::from_millis(700)).await;
    assert_eq!(mint(server.url(), "cid", new_secret, "openid").await.status(), StatusCode::OK);
}

#[tokio::test]
async fn refusals_name_what_is_wrong() {
    let server = server().await;
    let manage = token(&server, "p8e-original", MANAGEMENT_SCOPES).await;
    let read_only = token(&server, "p8e-original", "openid,AdobeID,read_client_secret").await;
    let url = secrets_url(&server, ORG, CREDENTIAL);
    let get = reqwest::Method::GET;

    let (status, body) = call(get.clone(), &url, None, Some("cid")).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "no token: {body}");
    assert_eq!(keys(&body), ["error_code", "message"]);
    assert_eq!(call(get.clone(), &url, Some("forged"), Some("cid")).await.0, StatusCode::UNAUTHORIZED);
    assert_eq!(call(get.clone(), &url, Some(&manage), None).await.0, StatusCode::FORBIDDEN, "no API key");
    assert_eq!(call(get.clone(), &url, Some(&manage), Some("other")).await.0, StatusCode::FORBIDDEN);
    assert_eq!(list(&server, &read_only).await.0, StatusCode::OK, "reading needs read_client_secret");
    assert_eq!(add(&server, &read_only).await.0, StatusCode::FORBIDDEN, "adding needs manage_client_secrets");

    let (status, body) = call(get.clone(), &secrets_url(&server, ORG, "999"), Some(&manage), Some("cid")).await;
    assert_eq!((status, body["message"].as_str()), (StatusCode::NOT_FOUND, Some("Credential Not Found")));
    assert_eq!(call(get.clone(), &secrets_url(&server, "1", CREDENTIAL), Some(&manage), Some("cid")).await.0, 404);

    server.set_management_api_in_project("cid", false).expect("managed client");
    let (status, body) = list(&server, &manage).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "the project lacks the I/O Management API: {body}");
    assert_eq!(
        server.requests().last().map(|r| r.outcome.clone()),
        Some(Outcome::Rejected("api_not_in_project".into()))
    );

    // A client registered without a console credential has no management API at all.
    server.register_adobe_client(AdobeClient::new("plain", "p8e-plain")).expect("registers");
    let (_, body) = status_and_json(mint(server.url(), "plain", "p8e-plain", MANAGEMENT_SCOPES).await).await;
    let plain = body["access_token"].as_str().expect("token");
    assert_eq!(call(get, &url, Some(plain), Some("plain")).await.0, StatusCode::FORBIDDEN);
    assert!(server.set_secret_activation_delay("plain", Duration::ZERO).is_err());
}

#[tokio::test]
async fn adobes_api_description_codes_are_available_too() {
    let server = server().await;
    server.answer_management_with_200(true);
    let token = token(&server, "p8e-original", MANAGEMENT_SCOPES).await;
    let (status, added) = add(&server, &token).await;
    assert_eq!(status, StatusCode::OK);
    let uuid = added["uuid"].as_str().expect("uuid");
    assert_eq!(delete(&server, &token, uuid).await.0, StatusCode::OK);
}

#[tokio::test]
async fn faults_and_holds_apply_to_the_management_endpoints() {
    let server = server().await;
    let token = token(&server, "p8e-original", MANAGEMENT_SCOPES).await;
    server.inject_fault(
        Fault::too_many_requests(RetryAfter::Seconds(3)).for_endpoint(EndpointKind::ManagementList).times(1),
    );
    let response = http()
        .get(secrets_url(&server, ORG, CREDENTIAL))
        .bearer_auth(&token)
        .header("x-api-key", "cid")
        .send()
        .await
        .expect("sent");
    assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(response.headers()["retry-after"], "3");
    assert_eq!(list(&server, &token).await.0, StatusCode::OK, "used up");

    // The add happens, but its answer (the only copy of the value) never arrives.
    server.inject_fault(Fault::hang_after_processing().for_endpoint(EndpointKind::ManagementAdd).times(1));
    let quick = reqwest::Client::builder().timeout(Duration::from_millis(500)).build().expect("client");
    let lost =
        quick.post(secrets_url(&server, ORG, CREDENTIAL)).bearer_auth(&token).header("x-api-key", "cid").send().await;
    assert!(lost.expect_err("no answer").is_timeout());
    server
        .wait_for_endpoint_arrivals(EndpointKind::ManagementAdd, "cid", 1, Duration::from_secs(5))
        .await
        .expect("arrived");
    assert_eq!(server.client_secrets("cid").len(), 2, "the secret exists anyway");
    let record = server.requests_to(EndpointKind::ManagementAdd, "cid").pop().expect("logged");
    assert_eq!(record.outcome, Outcome::Served);

    // A hold that keeps the request from being processed at all.
    server.inject_fault(Fault::hang().for_endpoint(EndpointKind::ManagementDelete).times(1));
    let uuid = server.client_secrets("cid")[1].uuid.clone();
    let url = format!("{}/{uuid}", secrets_url(&server, ORG, CREDENTIAL));
    let held = quick.delete(url).bearer_auth(&token).header("x-api-key", "cid").send().await;
    assert!(held.expect_err("no answer").is_timeout());
    assert_eq!(server.client_secrets("cid").len(), 2, "nothing deleted");

    // Scope filters tell management tokens from workload tokens.
    server.inject_fault(Fault::internal_error().for_scope("manage_client_secrets").times(1));
    assert_eq!(mint(server.url(), "cid", "p8e-original", "openid,firefly_api").await.status(), StatusCode::OK);
    let refused = mint(server.url(), "cid", "p8e-original", MANAGEMENT_SCOPES).await;
    assert_eq!(refused.status(), StatusCode::INTERNAL_SERVER_ERROR);
}

#[tokio::test]
async fn secrets_can_be_backdated_for_age_tests() {
    let server = server().await;
    let uuid = server.client_secrets("cid")[0].uuid.clone();
    let long_ago = SystemTime::now() - Duration::from_secs(100 * 86_400);
    server.set_client_secret_created_at("cid", &uuid, long_ago).expect("known secret");
    let token = token(&server, "p8e-original", MANAGEMENT_SCOPES).await;
    let (_, listed) = list(&server, &token).await;
    assert_eq!(listed["client_secrets"][0]["created_at"].as_u64(), Some(ms(long_ago)));
    assert!(server.set_client_secret_created_at("cid", "nope", long_ago).is_err());
}
