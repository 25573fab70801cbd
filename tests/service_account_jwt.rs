//! Service Account (JWT) credentials, legacy: the operator signs an RS256 JWT with the key from a
//! Secret and exchanges it at the fake IMS, which verifies signature, claims and metascopes.

mod common;

use std::sync::LazyLock;
use std::time::Duration;

use adobe_credential_operator::crd::{PrivateKeyRef, ServiceAccountJwt};
use common::{DAY, TestEnv, WAIT, client_secret_ref, eventually, key};
use fake_token_server::test_keys::RsaKeyPair;
use fake_token_server::{AdobeClient, ServiceAccount};

const ORG: &str = "1234ABCD@AdobeOrg";
const TECH_ACCOUNT: &str = "5678EF@techacct.adobe.com";

// RSA key generation is slow in a debug build: the tests share two keys.
static KEY: LazyLock<RsaKeyPair> = LazyLock::new(RsaKeyPair::generate);
static OTHER_KEY: LazyLock<RsaKeyPair> = LazyLock::new(RsaKeyPair::generate);

/// Registers a JWT client at the fake and creates its client and key Secrets.
async fn setup(env: &mut TestEnv, name: &str, private_pem: &str, lifetime: Duration) {
    let client_id = format!("{name}-client");
    let secret = format!("p8e-{name}-secret");
    env.seeded_secrets.push(private_pem.to_owned());
    env.ims
        .register_adobe_client(
            AdobeClient::new(&client_id, &secret).with_token_lifetime(lifetime).with_service_account(
                ServiceAccount::new(ORG, TECH_ACCOUNT, &KEY.public_pem).with_metascopes(["ent_cloudmgr_sdk"]),
            ),
        )
        .expect("register");
    env.expect_lifetime(&client_id, lifetime);
    env.put_source(&format!("{name}-client"), &client_id, &secret).await;
    env.put_secret(&format!("{name}-key"), &[], &[("private.key", private_pem)]).await;
}

fn jwt_credential(env: &TestEnv, name: &str, metascopes: &[&str]) -> adobe_credential_operator::crd::AdobeCredential {
    let mut cred = env.s2s_credential(name, "unused");
    cred.spec.oauth_server_to_server = None;
    cred.spec.service_account_jwt = Some(ServiceAccountJwt {
        client_secret_ref: client_secret_ref(&format!("{name}-client")),
        private_key_ref: PrivateKeyRef { name: format!("{name}-key"), key: "private.key".into() },
        org_id: ORG.into(),
        technical_account_id: TECH_ACCOUNT.into(),
        metascopes: metascopes.iter().map(|m| m.to_string()).collect(),
        ims_endpoint: env.ims.url().to_owned(),
    });
    cred
}

#[tokio::test]
async fn pkcs1_and_pkcs8_keys_mint_with_milliseconds_and_a_deprecation_warning() {
    let mut env = TestEnv::new("jwt").await;
    setup(&mut env, "cm8", &KEY.pkcs8_pem, DAY).await;
    setup(&mut env, "cm1", &KEY.pkcs1_pem, DAY).await;
    env.create(&jwt_credential(&env, "cm8", &["ent_cloudmgr_sdk"])).await;
    env.create(&jwt_credential(&env, "cm1", &["ent_cloudmgr_sdk"])).await;
    for name in ["cm8", "cm1"] {
        let cred = env.wait_ready(name, "True", "TokenMinted").await;
        let status = cred.status.expect("status");
        assert_eq!(status.flow.as_deref(), Some("serviceAccountJWT"));
        let deprecated = status.conditions.iter().find(|c| c.type_ == "Deprecated").expect("Deprecated condition");
        assert_eq!(deprecated.status, "True");
        assert!(deprecated.message.contains("oauthServerToServer"));
        let target = env.target(&format!("{name}-token")).await.expect("target");
        let expires_at: jiff::Timestamp = key(&target, "expires_at").expect("expiry").parse().expect("time");
        let left = expires_at.duration_since(jiff::Timestamp::now()).as_secs();
        // expires_in 86399998 ms: read as seconds it would be ~1000 days.
        assert!(left > 86_000 && left <= 86_400, "lifetime {left}s");
        assert_eq!(key(&target, "org_id").as_deref(), Some(ORG));
        assert_eq!(env.ims.mint_count(&format!("{name}-client")), 1);
    }
    env.assert_no_leaks(&["cm8-client", "cm1-client"]).await;
    env.assert_no_mint_loop(&[]);
}

#[tokio::test]
async fn renewal_and_key_rotation() {
    let mut env = TestEnv::new("jwt-rotate").await;
    setup(&mut env, "rk", &KEY.pkcs8_pem, Duration::from_secs(6)).await;
    env.create(&jwt_credential(&env, "rk", &["ent_cloudmgr_sdk"])).await;
    env.wait_ready("rk", "True", "TokenMinted").await;
    env.ims.wait_for_mints("rk-client", 2, WAIT).await.expect("renewed before expiry");

    // Rotate the key: the new certificate is registered, the key Secret updated.
    env.ims.set_adobe_public_key("rk-client", &OTHER_KEY.public_pem).expect("new public key");
    let mints = env.ims.mint_count("rk-client");
    env.put_secret("rk-key", &[], &[("private.key", &OTHER_KEY.pkcs1_pem)]).await;
    eventually("a mint with the rotated key", WAIT, || async {
        let tokens = env.ims.issued_tokens("rk-client");
        let target = env.target("rk-token").await?;
        (tokens.len() > mints && key(&target, "access_token")? == *tokens.last()?).then_some(())
    })
    .await;
    env.assert_no_leaks(&["rk-client"]).await;
    env.assert_no_mint_loop(&[("rk-client", 1)]);
}

#[tokio::test]
async fn key_and_claim_errors_have_precise_reasons() {
    let mut env = TestEnv::new("jwt-errors").await;
    setup(&mut env, "badpem", "-----BEGIN PRIVATE KEY-----\nbm90IGEga2V5\n-----END PRIVATE KEY-----\n", DAY).await;
    setup(&mut env, "wrongkey", &OTHER_KEY.pkcs8_pem, DAY).await;
    setup(&mut env, "wrongscope", &KEY.pkcs8_pem, DAY).await;
    setup(&mut env, "wrongsecret", &KEY.pkcs8_pem, DAY).await;
    env.put_source("wrongsecret-client", "wrongsecret-client", "p8e-not-the-secret").await;
    env.create(&jwt_credential(&env, "badpem", &["ent_cloudmgr_sdk"])).await;
    env.create(&jwt_credential(&env, "wrongkey", &["ent_cloudmgr_sdk"])).await;
    env.create(&jwt_credential(&env, "wrongscope", &["ent_user_sdk"])).await;
    env.create(&jwt_credential(&env, "wrongsecret", &["ent_cloudmgr_sdk"])).await;
    let cases = [
        ("badpem", "InvalidPrivateKey", "not a usable RSA key"),
        ("wrongkey", "InvalidSignature", "does not match"),
        ("wrongscope", "InvalidScope", "scopes"),
        ("wrongsecret", "InvalidClient", "client credentials"),
    ];
    for (name, reason, words) in cases {
        let cred = env.wait_ready(name, "False", reason).await;
        let message = &cred.status.expect("status").conditions[0].message;
        assert!(message.contains(words), "{name}: {message}");
    }
    assert!(env.ims.requests_for("badpem-client").is_empty(), "a bad key never reaches IMS");

    // A technical account the credential is not bound to: IMS answers bad_request.
    setup(&mut env, "wrongta", &KEY.pkcs8_pem, DAY).await;
    let mut wrong_account = jwt_credential(&env, "wrongta", &["ent_cloudmgr_sdk"]);
    if let Some(flow) = wrong_account.spec.service_account_jwt.as_mut() {
        flow.technical_account_id = "0000FFFF@techacct.adobe.com".into();
    }
    env.create(&wrong_account).await;
    let cred = env.wait_ready("wrongta", "False", "TokenRequestRejected").await;
    assert!(cred.status.expect("status").conditions[0].message.contains("bad_request"));

    // An IMS whose own host differs from the endpoint the JWT names in aud: invalid_token.
    let tls = test_support::LoopbackTls::generate().expect("TLS");
    let other_ims = fake_token_server::FakeTokenServer::start_tls(&tls.cert_pem, &tls.key_pem).await.expect("IMS");
    other_ims.set_issuer_base_url("https://ims-na1.adobelogin.com");
    let account = ServiceAccount::new(ORG, TECH_ACCOUNT, &KEY.public_pem).with_metascopes(["ent_cloudmgr_sdk"]);
    other_ims
        .register_adobe_client(AdobeClient::new("wrongaud-client", "p8e-wrongaud-secret").with_service_account(account))
        .expect("register");
    env.put_source("wrongaud-client", "wrongaud-client", "p8e-wrongaud-secret").await;
    env.put_secret("wrongaud-key", &[], &[("private.key", &KEY.pkcs8_pem)]).await;
    let mut wrong_aud = jwt_credential(&env, "wrongaud", &["ent_cloudmgr_sdk"]);
    if let Some(flow) = wrong_aud.spec.service_account_jwt.as_mut() {
        flow.ims_endpoint = other_ims.url().to_owned();
    }
    std::fs::write(env.ca_file(), format!("{}{}", std::fs::read_to_string(env.ca_file()).expect("ca"), tls.ca_pem))
        .expect("CA bundle with both fakes");
    env.restart_operator(&[]).await;
    env.create(&wrong_aud).await;
    env.wait_ready("wrongaud", "False", "InvalidJwt").await;

    // Fixing the key Secret retries at once.
    env.put_secret("wrongkey-key", &[], &[("private.key", &KEY.pkcs1_pem)]).await;
    env.wait_ready("wrongkey", "True", "TokenMinted").await;
    env.assert_no_leaks(&["wrongkey-client", "wrongscope-client", "wrongsecret-client"]).await;
    env.assert_no_mint_loop(&[]);
}

#[tokio::test]
async fn restart_with_a_valid_token_does_not_mint() {
    let mut env = TestEnv::new("jwt-restart").await;
    setup(&mut env, "rs", &KEY.pkcs8_pem, DAY).await;
    env.create(&jwt_credential(&env, "rs", &["ent_cloudmgr_sdk"])).await;
    let before = env.wait_ready("rs", "True", "TokenMinted").await;
    env.restart_operator(&["rs"]).await;
    assert_eq!(env.ims.mint_count("rs-client"), 1);
    assert_eq!(env.credentials().get("rs").await.expect("get").status, before.status);
    env.assert_no_mint_loop(&[]);
}
