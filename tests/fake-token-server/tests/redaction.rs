//! Nothing observable leaks a credential: not the tracing output, not `Debug`, not the request
//! log, not error messages.
//!
//! Its own test binary, so that no other test's thread touches the tracing callsites while this
//! one's thread-local subscriber is installed.

mod common;

use std::{
    io,
    sync::{Arc, Mutex},
};

use common::{akeneo_token, mint, post_form, status_and_json};
use fake_token_server::{AdobeClient, FakeTokenServer};
use serde_json::{Value, json};

/// Collects what a tracing subscriber writes.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl io::Write for Captured {
    fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
        self.0.lock().expect("not poisoned").extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

#[tokio::test]
async fn no_secret_token_or_jwt_appears_in_logs_or_debug_output() {
    // The test runtime runs the server's tasks on this thread, so a thread-local subscriber
    // sees their events.
    let captured = Captured::default();
    let writer = captured.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_ansi(false)
        .with_writer(move || writer.clone())
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);

    let server = FakeTokenServer::start().await.expect("starts");
    server
        .register_adobe_client(
            AdobeClient::new("adobe-id", "adobe-secret-one").with_secret("adobe-secret-two").with_management("1", "2"),
        )
        .expect("registers");
    server.register_akeneo_client("akeneo-id", "akeneo-secret");
    server.register_akeneo_user("akeneo-user", "akeneo-password");
    let jwt = "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJqd3Qtc2VjcmV0In0.c2lnbmF0dXJlLXNlY3JldA";

    let mut leaked_if_seen = vec![
        "adobe-secret-one".to_owned(),
        "adobe-secret-two".to_owned(),
        "akeneo-secret".to_owned(),
        "akeneo-password".to_owned(),
        "wrong-secret-guess".to_owned(),
        jwt.to_owned(),
    ];
    assert_eq!(mint(server.url(), "adobe-id", "adobe-secret-one", "openid").await.status(), 200);
    mint(server.url(), "adobe-id", "wrong-secret-guess", "openid").await;
    post_form(
        &format!("{}/ims/exchange/jwt", server.url()),
        &[("client_id", "adobe-id"), ("client_secret", "adobe-secret-two"), ("jwt_token", jwt)],
    )
    .await;
    let url = server.url();
    let akeneo = |body: Value| async move { akeneo_token(url, "akeneo-id", "akeneo-secret", &body).await };
    let (_, issued) = status_and_json(
        akeneo(json!({"grant_type": "password", "username": "akeneo-user", "password": "akeneo-password"})).await,
    )
    .await;
    let (_, refreshed) =
        status_and_json(akeneo(json!({"grant_type": "refresh_token", "refresh_token": issued["refresh_token"]})).await)
            .await;
    for body in [&issued, &refreshed] {
        leaked_if_seen.push(body["refresh_token"].as_str().expect("token").to_owned());
    }
    // The I/O Management API: the management token and a secret it created (deleting one first:
    // at most two).
    let (_, management) =
        status_and_json(mint(server.url(), "adobe-id", "adobe-secret-two", "manage_client_secrets").await).await;
    let management_token = management["access_token"].as_str().expect("token");
    let secrets_url = format!("{}/console/organizations/1/credentials/2/secrets", server.url());
    let first_uuid = server.client_secret_uuid("adobe-id", "adobe-secret-one").expect("uuid");
    let http = common::http();
    let deleted = http
        .delete(format!("{secrets_url}/{first_uuid}"))
        .bearer_auth(management_token)
        .header("x-api-key", "adobe-id")
        .send()
        .await
        .expect("sent");
    assert_eq!(deleted.status(), 204);
    let added = http.post(&secrets_url).bearer_auth(management_token).header("x-api-key", "adobe-id").send().await;
    let (_, added) = status_and_json(added.expect("sent")).await;
    assert_eq!(server.created_client_secrets("adobe-id"), [added["client_secret"].as_str().expect("value")]);
    leaked_if_seen.extend(server.created_client_secrets("adobe-id"));
    leaked_if_seen.extend(server.issued_tokens("adobe-id"));
    leaked_if_seen.extend(server.issued_tokens("akeneo-id"));
    assert_eq!(leaked_if_seen.len(), 6 + 2 + 1 + 1 + 3);

    let missing_secret =
        server.remove_adobe_client_secret("adobe-id", "adobe-secret-three").expect_err("not a secret of the client");
    let log_output = String::from_utf8(captured.0.lock().expect("not poisoned").clone()).expect("UTF-8 log");
    assert!(log_output.contains("token request"), "{log_output}");
    assert!(log_output.contains("adobe-id") && log_output.contains("akeneo-id"));
    let observable = [
        ("tracing output", log_output),
        ("server Debug", format!("{server:#?}")),
        ("request log Debug", format!("{:#?}", server.requests())),
        ("error message", format!("{missing_secret} {missing_secret:?}")),
    ];
    for (what, text) in &observable {
        for secret in &leaked_if_seen {
            assert!(!text.contains(secret.as_str()), "{what} leaks {secret:?}");
        }
    }
    assert!(!observable[3].1.contains("adobe-secret-three"));
}
