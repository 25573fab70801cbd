//! Serving: HTTPS, stopping, and the standalone binary.

mod common;

use std::{
    io::{BufRead, BufReader, Read},
    net::SocketAddr,
    process::{Command, Stdio},
    sync::mpsc,
    time::{Duration, Instant},
};

use common::{status_and_json, try_mint};
use fake_token_server::{AdobeClient, Error, FakeTokenServer, Fault, StatusCode};
use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};
use tokio::net::TcpStream;

struct TestPki {
    ca_pem: String,
    leaf_pem: String,
    leaf_key_pem: String,
}

/// A CA and a leaf for 127.0.0.1 and localhost signed by it (rustls rejects a self-signed leaf
/// used as its own trust anchor).
fn test_pki() -> TestPki {
    let ca_key = KeyPair::generate().expect("CA key");
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca_cert = ca_params.self_signed(&ca_key).expect("CA cert");
    let issuer = Issuer::new(ca_params, ca_key);

    let leaf_key = KeyPair::generate().expect("leaf key");
    let leaf_cert = CertificateParams::new(vec!["127.0.0.1".to_owned(), "localhost".to_owned()])
        .expect("leaf params")
        .signed_by(&leaf_key, &issuer)
        .expect("leaf cert");
    TestPki { ca_pem: ca_cert.pem(), leaf_pem: leaf_cert.pem(), leaf_key_pem: leaf_key.serialize_pem() }
}

#[tokio::test]
async fn https_works_with_the_test_ca_and_only_with_it() {
    let pki = test_pki();
    let server = FakeTokenServer::start_tls(&pki.leaf_pem, &pki.leaf_key_pem).await.expect("starts");
    assert!(server.url().starts_with("https://127.0.0.1:"), "{}", server.url());
    assert_eq!(server.issuer_base_url(), server.url());
    server.register_adobe_client(AdobeClient::new("a", "secret")).expect("registers");

    let trusting = reqwest::Client::builder()
        .tls_built_in_root_certs(false)
        .add_root_certificate(reqwest::Certificate::from_pem(pki.ca_pem.as_bytes()).expect("CA"))
        .timeout(Duration::from_secs(20))
        .build()
        .expect("client");
    let response = try_mint(&trusting, server.url(), "a", "secret", "openid").await.expect("TLS works");
    assert_eq!(response.status(), StatusCode::OK);

    let untrusting = reqwest::Client::builder()
        .tls_built_in_root_certs(false)
        .timeout(Duration::from_secs(20))
        .build()
        .expect("client");
    let error = try_mint(&untrusting, server.url(), "a", "secret", "openid").await.expect_err("unknown CA");
    assert!(error.is_connect(), "{error:?}");
    assert_eq!(server.requests().len(), 1, "the refused handshake sent no request");
}

#[tokio::test]
async fn unusable_tls_material_and_taken_ports_are_reported() {
    let pki = test_pki();
    assert!(matches!(FakeTokenServer::start_tls("no certificate here", &pki.leaf_key_pem).await, Err(Error::Tls(_))));
    assert!(matches!(FakeTokenServer::start_tls(&pki.leaf_pem, "no key here").await, Err(Error::Tls(_))));

    let first = FakeTokenServer::start().await.expect("starts");
    let taken = first.local_addr();
    assert!(matches!(
        FakeTokenServer::start_on(taken).await,
        Err(Error::Bind { addr, .. }) if addr == taken
    ));
}

async fn refuses_connections(addr: SocketAddr) -> bool {
    TcpStream::connect(addr).await.is_err()
}

/// Whether `addr` refuses connections within 10 s (the socket closes when the runtime next
/// polls the aborted serving task, which may be a moment after the abort).
async fn closes(addr: SocketAddr) -> bool {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !refuses_connections(addr).await {
        if Instant::now() >= deadline {
            return false;
        }
        tokio::task::yield_now().await;
    }
    true
}

#[tokio::test]
async fn shutdown_closes_the_socket_and_ends_hanging_requests() {
    let server = FakeTokenServer::start().await.expect("starts");
    server.register_adobe_client(AdobeClient::new("a", "secret")).expect("registers");
    server.inject_fault(Fault::hang());
    let addr = server.local_addr();
    let base = server.url().to_owned();
    let hanging = tokio::spawn(async move { try_mint(&common::http(), &base, "a", "secret", "openid").await });
    server.wait_for_requests("a", 1, Duration::from_secs(10)).await.expect("request arrived");

    server.shutdown().await;
    assert!(closes(addr).await, "still accepting after shutdown");
    let outcome = tokio::time::timeout(Duration::from_secs(10), hanging)
        .await
        .expect("the hanging request ends with the server")
        .expect("client task");
    assert!(outcome.is_err(), "no response was sent");
}

#[tokio::test]
async fn dropping_the_handle_stops_the_server() {
    let server = FakeTokenServer::start().await.expect("starts");
    let addr = server.local_addr();
    assert!(!refuses_connections(addr).await);
    drop(server);
    assert!(closes(addr).await, "still accepting after drop");
}

#[tokio::test]
async fn binary_serves_the_configured_clients_and_exits_on_sigterm() {
    let mut child = Command::new(env!("CARGO_BIN_EXE_fake-token-server"))
        .args([
            "--listen",
            "127.0.0.1:0",
            "--adobe-client",
            "a:secret:openid,AdobeID",
            "--adobe-client",
            "b:other-secret",
            "--akeneo-client",
            "pim:pim-secret",
            "--akeneo-user",
            "admin:admin-password",
            "--token-lifetime-secs",
            "60",
        ])
        .env("RUST_LOG", "info")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("binary starts");

    // Read the URL line on a thread, so that a silent binary fails the test instead of hanging.
    let stdout = child.stdout.take().expect("stdout");
    let (url_sender, url_receiver) = mpsc::channel();
    std::thread::spawn(move || {
        let mut line = String::new();
        let _ = BufReader::new(stdout).read_line(&mut line);
        let _ = url_sender.send(line);
    });
    let url = url_receiver.recv_timeout(Duration::from_secs(30)).expect("the binary prints its URL");
    let url = url.trim();
    assert!(url.starts_with("http://127.0.0.1:"), "{url:?}");

    let (status, body) =
        status_and_json(try_mint(&common::http(), url, "a", "secret", "openid").await.expect("request sent")).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["expires_in"], 60);
    let refused = common::mint(url, "a", "secret", "firefly_api").await;
    assert_eq!(refused.status(), StatusCode::BAD_REQUEST, "scope list applies");
    let any_scope = common::mint(url, "b", "other-secret", "firefly_api").await;
    assert_eq!(any_scope.status(), StatusCode::OK);

    let password_grant =
        serde_json::json!({"grant_type": "password", "username": "admin", "password": "admin-password"});
    let akeneo = common::akeneo_token(url, "pim", "pim-secret", &password_grant).await;
    let (status, body) = status_and_json(akeneo).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["expires_in"], 60);

    let killed = Command::new("kill").args(["-TERM", &child.id().to_string()]).status().expect("kill runs");
    assert!(killed.success());
    let deadline = Instant::now() + Duration::from_secs(30);
    let exit = loop {
        if let Some(exit) = child.try_wait().expect("wait") {
            break exit;
        }
        assert!(Instant::now() < deadline, "the binary ignored SIGTERM");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert!(exit.success(), "{exit:?}");

    let mut stderr = String::new();
    child.stderr.take().expect("stderr").read_to_string(&mut stderr).expect("stderr is UTF-8");
    assert_eq!(stderr.matches("token request").count(), 4, "{stderr}");
    for secret in ["secret", "admin-password"] {
        assert!(!stderr.contains(secret), "stderr leaks {secret:?}: {stderr}");
    }
}
