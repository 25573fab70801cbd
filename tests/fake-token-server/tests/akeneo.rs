//! Akeneo PIM: password and refresh_token grants.

mod common;

use std::time::Duration;

use base64::{Engine, engine::general_purpose::STANDARD};
use common::{http, keys, status_and_json};
use fake_token_server::{EndpointKind, FakeTokenServer, Outcome, StatusCode};
use serde_json::{Value, json};

const INVALID_CLIENT: &str = r#"Parameter "client_id" is missing or does not match any client, or secret is invalid"#;
const INVALID_USER: &str = "No user found for the given username and password";
const INVALID_REFRESH_TOKEN: &str = "Refresh token is invalid or has expired";

async fn akeneo() -> FakeTokenServer {
    let server = FakeTokenServer::start().await.expect("server starts");
    server.register_akeneo_client("pim-client", "pim-secret");
    server.register_akeneo_user("admin", "admin-password");
    server
}

fn token_url(server: &FakeTokenServer) -> String {
    format!("{}/api/oauth/v1/token", server.url())
}

fn basic(client_id: &str, secret: &str) -> String {
    format!("Basic {}", STANDARD.encode(format!("{client_id}:{secret}")))
}

async fn post_json(server: &FakeTokenServer, authorization: Option<&str>, body: &Value) -> (StatusCode, Value) {
    let mut request = http().post(token_url(server)).json(body);
    if let Some(authorization) = authorization {
        request = request.header("authorization", authorization);
    }
    status_and_json(request.send().await.expect("sent")).await
}

fn password_grant() -> Value {
    json!({"grant_type": "password", "username": "admin", "password": "admin-password"})
}

fn refresh_grant(refresh_token: &Value) -> Value {
    json!({"grant_type": "refresh_token", "refresh_token": refresh_token})
}

fn assert_akeneo_error(status: StatusCode, body: &Value, want_status: StatusCode, message: &str) {
    assert_eq!(status, want_status, "body: {body}");
    assert_eq!(*body, json!({"code": want_status.as_u16(), "message": message}));
}

#[tokio::test]
async fn password_grant_returns_the_documented_body() {
    let server = akeneo().await;
    let auth = basic("pim-client", "pim-secret");
    let (status, body) = post_json(&server, Some(&auth), &password_grant()).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(keys(&body), ["access_token", "expires_in", "refresh_token", "scope", "token_type"]);
    assert_eq!(body["expires_in"], 3600, "seconds, default one hour");
    assert_eq!(body["token_type"], "bearer");
    assert_eq!(body["scope"], Value::Null);
    assert!(body["access_token"].as_str().is_some_and(|t| t.len() >= 32));
    assert!(body["refresh_token"].as_str().is_some_and(|t| t.len() >= 32));
    assert_eq!(server.issued_tokens("pim-client"), [body["access_token"].as_str().expect("token")]);
    let record = server.requests().pop().expect("logged");
    assert_eq!(record.endpoint, EndpointKind::AkeneoPassword);
    assert_eq!(record.grant_type.as_deref(), Some("password"));
    assert_eq!(record.client_id.as_deref(), Some("pim-client"));
    assert_eq!(record.outcome, Outcome::Issued);
    assert_eq!(record.debug_id, None, "x-debug-id is Adobe's");
}

#[tokio::test]
async fn form_encoded_body_is_accepted_too() {
    let server = akeneo().await;
    server.set_akeneo_access_token_lifetime(Duration::from_secs(90));
    let response = http()
        .post(token_url(&server))
        .header("authorization", basic("pim-client", "pim-secret"))
        .form(&[("grant_type", "password"), ("username", "admin"), ("password", "admin-password")])
        .send()
        .await
        .expect("sent");
    let (status, body) = status_and_json(response).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["expires_in"], 90);
}

#[tokio::test]
async fn each_refresh_rotates_the_refresh_token_and_kills_the_old_one() {
    let server = akeneo().await;
    let auth = basic("pim-client", "pim-secret");
    let (_, first) = post_json(&server, Some(&auth), &password_grant()).await;

    let (status, second) = post_json(&server, Some(&auth), &refresh_grant(&first["refresh_token"])).await;
    assert_eq!(status, StatusCode::OK, "{second}");
    assert_ne!(second["refresh_token"], first["refresh_token"]);
    assert_ne!(second["access_token"], first["access_token"]);
    assert_eq!(keys(&second), ["access_token", "expires_in", "refresh_token", "scope", "token_type"]);

    let (status, body) = post_json(&server, Some(&auth), &refresh_grant(&first["refresh_token"])).await;
    assert_akeneo_error(status, &body, StatusCode::UNPROCESSABLE_ENTITY, INVALID_REFRESH_TOKEN);

    let (status, third) = post_json(&server, Some(&auth), &refresh_grant(&second["refresh_token"])).await;
    assert_eq!(status, StatusCode::OK, "{third}");
    assert_eq!(server.mint_count("pim-client"), 3);
    let kinds: Vec<EndpointKind> = server.requests().iter().map(|record| record.endpoint).collect();
    assert_eq!(
        kinds,
        [
            EndpointKind::AkeneoPassword,
            EndpointKind::AkeneoRefresh,
            EndpointKind::AkeneoRefresh,
            EndpointKind::AkeneoRefresh
        ]
    );
}

#[tokio::test]
async fn expired_revoked_and_foreign_refresh_tokens_are_refused() {
    let server = akeneo().await;
    server.register_akeneo_client("other-client", "other-secret");
    let auth = basic("pim-client", "pim-secret");

    // Zero lifetime: the refresh token is expired as soon as it is issued.
    server.set_akeneo_refresh_token_lifetime(Duration::ZERO);
    let (_, issued) = post_json(&server, Some(&auth), &password_grant()).await;
    let (status, body) = post_json(&server, Some(&auth), &refresh_grant(&issued["refresh_token"])).await;
    assert_akeneo_error(status, &body, StatusCode::UNPROCESSABLE_ENTITY, INVALID_REFRESH_TOKEN);

    server.set_akeneo_refresh_token_lifetime(Duration::from_secs(3600));
    let (_, issued) = post_json(&server, Some(&auth), &password_grant()).await;
    // Another client cannot use it, and trying does not burn it.
    let (status, body) =
        post_json(&server, Some(&basic("other-client", "other-secret")), &refresh_grant(&issued["refresh_token"]))
            .await;
    assert_akeneo_error(status, &body, StatusCode::UNPROCESSABLE_ENTITY, INVALID_REFRESH_TOKEN);
    let (status, refreshed) = post_json(&server, Some(&auth), &refresh_grant(&issued["refresh_token"])).await;
    assert_eq!(status, StatusCode::OK, "{refreshed}");

    server.revoke_akeneo_refresh_tokens();
    let (status, body) = post_json(&server, Some(&auth), &refresh_grant(&refreshed["refresh_token"])).await;
    assert_akeneo_error(status, &body, StatusCode::UNPROCESSABLE_ENTITY, INVALID_REFRESH_TOKEN);
    let (status, _) = post_json(&server, Some(&auth), &password_grant()).await;
    assert_eq!(status, StatusCode::OK, "the password grant still works");
}

#[tokio::test]
async fn refusals_are_422_with_akeneo_messages() {
    let server = akeneo().await;
    let good = basic("pim-client", "pim-secret");
    let cases = [
        (None, password_grant(), INVALID_CLIENT),
        (Some(basic("pim-client", "wrong")), password_grant(), INVALID_CLIENT),
        (Some(basic("nobody", "pim-secret")), password_grant(), INVALID_CLIENT),
        (Some(good.clone()), json!({"grant_type": "password", "username": "admin", "password": "wrong"}), INVALID_USER),
        (
            Some(good.clone()),
            json!({"grant_type": "password", "username": "nobody", "password": "admin-password"}),
            INVALID_USER,
        ),
        (
            Some(good.clone()),
            json!({"grant_type": "password", "username": "admin"}),
            r#"Missing parameters. "username" and "password" required"#,
        ),
        (Some(good.clone()), json!({"grant_type": "refresh_token"}), r#"No "refresh_token" parameter found"#),
        (
            Some(good.clone()),
            json!({"grant_type": "client_credentials"}),
            "Invalid grant_type parameter or parameter missing",
        ),
        (
            Some(good.clone()),
            json!({"username": "admin", "password": "admin-password"}),
            "Invalid grant_type parameter or parameter missing",
        ),
    ];
    for (authorization, body, message) in cases {
        let (status, response) = post_json(&server, authorization.as_deref(), &body).await;
        assert_akeneo_error(status, &response, StatusCode::UNPROCESSABLE_ENTITY, message);
    }

    // Client credentials in the body are not client authentication for Akeneo.
    let mut in_body = password_grant();
    in_body["client_id"] = json!("pim-client");
    in_body["client_secret"] = json!("pim-secret");
    let (status, body) = post_json(&server, None, &in_body).await;
    assert_akeneo_error(status, &body, StatusCode::UNPROCESSABLE_ENTITY, INVALID_CLIENT);
    assert_eq!(server.mint_count("pim-client"), 0);
}

#[tokio::test]
async fn malformed_json_is_400_and_other_content_types_are_415() {
    let server = akeneo().await;
    let auth = basic("pim-client", "pim-secret");
    let send = |content_type: Option<&'static str>, body: &'static str| {
        let mut request = http().post(token_url(&server)).header("authorization", auth.clone()).body(body);
        if let Some(content_type) = content_type {
            request = request.header("content-type", content_type);
        }
        request.send()
    };

    let (status, body) =
        status_and_json(send(Some("application/json"), r#"{"grant_type":"#).await.expect("sent")).await;
    assert_akeneo_error(status, &body, StatusCode::BAD_REQUEST, "Invalid json message received");

    for content_type in [Some("text/plain"), None] {
        let response = send(content_type, "grant_type=password").await.expect("sent");
        let (status, body) = status_and_json(response).await;
        assert_eq!(status, StatusCode::UNSUPPORTED_MEDIA_TYPE, "{body}");
        assert_eq!(keys(&body), ["code", "message"]);
        assert_eq!(body["code"], 415);
    }
    let outcomes: Vec<Outcome> = server.requests().into_iter().map(|record| record.outcome).collect();
    assert_eq!(
        outcomes,
        [
            Outcome::Rejected("invalid_json".into()),
            Outcome::Rejected("unsupported_media_type".into()),
            Outcome::Rejected("unsupported_media_type".into()),
        ]
    );
}
