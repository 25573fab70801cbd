//! `adobe-credential-operator check`: one mint for a manifest, with its Secrets from files or
//! from the real API server, printing what the target would hold (token masked), the expiry and
//! the granted scopes, or the reason and message the operator would write to status. It writes
//! nothing: the fake sees exactly one token request per check, and no target Secret appears.

mod common;

use std::path::{Path, PathBuf};
use std::process::Output;

use adobe_credential_operator::crd::AdobeCredential;
use common::{DAY, TestEnv};
use fake_token_server::test_keys::RsaKeyPair;
use fake_token_server::{AdobeClient, ServiceAccount};
use serde_json::json;

const ORG: &str = "1234ABCD@AdobeOrg";
const TECH_ACCOUNT: &str = "5678EF@techacct.adobe.com";

/// Writes `documents` as one multi-document YAML file.
fn manifest(dir: &Path, name: &str, documents: &[serde_json::Value]) -> PathBuf {
    let path = dir.join(name);
    let text: Vec<String> = documents.iter().map(|d| serde_yaml::to_string(d).expect("yaml")).collect();
    std::fs::write(&path, text.join("---\n")).expect("write manifest");
    path
}

fn credential_document(cred: &AdobeCredential) -> serde_json::Value {
    let mut doc = serde_json::to_value(cred).expect("json");
    doc["metadata"]["namespace"] = json!(cred.metadata.namespace);
    doc
}

async fn check(env: &TestEnv, args: &[&str]) -> (bool, String) {
    let output: Output = env.command_line("check").args(args).output().await.expect("check runs");
    let text = format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
    (output.status.success(), text)
}

/// An S2S credential whose Secret is in a file, a JWT credential and an Akeneo credential whose
/// Secrets are read from the cluster: each mints once, prints the masked keys, scopes and expiry.
#[tokio::test]
async fn check_mints_once_for_each_flow_and_writes_nothing() {
    let mut env = TestEnv::new("check").await;
    env.kill_operator().await;
    let dir = env.dir.path().to_owned();

    env.register_client("chk-client", "p8e-chk-secret", DAY);
    env.seeded_secrets.push("p8e-chk-secret".into());
    let mut s2s = env.s2s_credential("firefly", "chk-src");
    s2s.metadata.namespace = Some(env.ns().to_owned());
    let source = json!({ "apiVersion": "v1", "kind": "Secret", "metadata": { "name": "chk-src" },
        "stringData": { "client_id": "chk-client", "client_secret": "p8e-chk-secret" } });
    let file = manifest(&dir, "s2s.yaml", &[credential_document(&s2s), source]);
    let (ok, out) = check(&env, &["-f", file.to_str().expect("path")]).await;
    assert!(ok, "{out}");
    let token = env.ims.issued_tokens("chk-client").pop().expect("one token");
    assert!(!out.contains(&token), "the token is masked:\n{out}");
    assert!(out.contains(&common::fingerprint(&token)), "{out}");
    let scopes = out.lines().find(|l| l.starts_with("granted scopes: ")).expect("a scopes line");
    assert!(["openid", "AdobeID", "firefly_api"].iter().all(|s| scopes.contains(s)), "{out}");
    assert!(
        out.contains("target Secret \"firefly-token\" would hold:") && out.contains("client_id: chk-client"),
        "{out}"
    );
    assert!(out.contains("expires at "), "{out}");
    let (ok, shown) = check(&env, &["-f", file.to_str().expect("path"), "--show-token"]).await;
    let second = env.ims.issued_tokens("chk-client").pop().expect("a second token");
    assert!(ok && shown.contains(&second), "--show-token prints it");

    let key = RsaKeyPair::generate();
    env.seeded_secrets.push(key.pkcs8_pem.clone());
    let service_account = ServiceAccount::new(ORG, TECH_ACCOUNT, &key.public_pem).with_metascopes(["ent_cloudmgr_sdk"]);
    env.ims
        .register_adobe_client(AdobeClient::new("jwt-client", "p8e-jwt-secret").with_service_account(service_account))
        .expect("register");
    env.put_source("jwt-src", "jwt-client", "p8e-jwt-secret").await;
    env.put_secret("jwt-key", &[], &[("private.key", &key.pkcs8_pem)]).await;
    let jwt = json!({ "apiVersion": "credentials.adobe-operator.io/v1alpha1", "kind": "AdobeCredential",
        "metadata": { "name": "cloud-manager", "namespace": env.ns() },
        "spec": { "serviceAccountJWT": { "clientSecretRef": { "name": "jwt-src" }, "privateKeyRef": { "name": "jwt-key" },
            "orgId": ORG, "technicalAccountId": TECH_ACCOUNT, "metascopes": ["ent_cloudmgr_sdk"], "imsEndpoint": env.ims.url() } } });
    let file = manifest(&dir, "jwt.yaml", &[jwt]);
    let (ok, out) = check(&env, &["-f", file.to_str().expect("path"), "--from-cluster"]).await;
    assert!(ok, "{out}");
    assert!(out.contains("flow serviceAccountJWT") && out.contains("org_id: 1234ABCD@AdobeOrg"), "{out}");

    let mut akeneo = env.akeneo_credential("pim").await;
    akeneo.metadata.namespace = Some(env.ns().to_owned());
    let file = manifest(&dir, "akeneo.yaml", &[credential_document(&akeneo)]);
    let (ok, out) = check(&env, &["-f", file.to_str().expect("path"), "--from-cluster"]).await;
    assert!(ok && out.contains("flow passwordGrant"), "{out}");

    assert_eq!(env.ims.mint_count("chk-client"), 2);
    assert_eq!(env.ims.mint_count("jwt-client"), 1);
    for target in ["firefly-token", "cloud-manager-token", "pim-token", "pim-refresh-state"] {
        assert!(env.target(target).await.is_none(), "check wrote {target}");
    }
    env.assert_no_leaks(&[]).await;
}

/// Failures print the reason and message the operator would put in status, and exit 1.
#[tokio::test]
async fn check_reports_the_reason_the_operator_would() {
    let mut env = TestEnv::new("check-fail").await;
    env.kill_operator().await;
    let dir = env.dir.path().to_owned();
    env.register_client("bad-client", "p8e-right-secret", DAY);

    let mut s2s = env.s2s_credential("firefly", "bad-src");
    s2s.metadata.namespace = Some(env.ns().to_owned());
    let wrong = json!({ "apiVersion": "v1", "kind": "Secret", "metadata": { "name": "bad-src" },
        "stringData": { "client_id": "bad-client", "client_secret": "p8e-wrong-secret" } });
    let file = manifest(&dir, "wrong.yaml", &[credential_document(&s2s), wrong]);
    let (ok, out) = check(&env, &["-f", file.to_str().expect("path")]).await;
    assert!(
        !ok && out.contains("Ready=False reason=InvalidClient: token endpoint rejected the client credentials"),
        "{out}"
    );

    let file = manifest(&dir, "missing.yaml", &[credential_document(&s2s)]);
    let (ok, out) = check(&env, &["-f", file.to_str().expect("path")]).await;
    assert!(!ok && out.contains("reason=SourceSecretNotFound"), "without --from-cluster only the files count:\n{out}");

    let mut akeneo = env.akeneo_credential("pim").await;
    akeneo.metadata.namespace = Some(env.ns().to_owned());
    env.put_secret("pim-user", &[], &[("password", "not-the-password")]).await;
    let file = manifest(&dir, "akeneo.yaml", &[credential_document(&akeneo)]);
    let (ok, out) = check(&env, &["-f", file.to_str().expect("path"), "--from-cluster"]).await;
    assert!(!ok && out.contains("reason=InvalidUserCredentials"), "{out}");

    // A JWT signed with a key the service account does not have, read by name from the cluster.
    let (registered, other) = (RsaKeyPair::generate(), RsaKeyPair::generate());
    env.seeded_secrets.push(other.pkcs8_pem.clone());
    let service_account = ServiceAccount::new(ORG, TECH_ACCOUNT, &registered.public_pem);
    let client = AdobeClient::new("jwt-bad-client", "p8e-jwt-bad").with_service_account(service_account);
    env.ims.register_adobe_client(client).expect("register");
    env.put_source("jwt-bad-src", "jwt-bad-client", "p8e-jwt-bad").await;
    env.put_secret("jwt-other-key", &[], &[("private.key", &other.pkcs8_pem)]).await;
    let jwt: AdobeCredential = serde_json::from_value(json!({
        "apiVersion": "credentials.adobe-operator.io/v1alpha1", "kind": "AdobeCredential",
        "metadata": { "name": "cloud-manager", "namespace": env.ns() },
        "spec": { "serviceAccountJWT": { "clientSecretRef": { "name": "jwt-bad-src" },
            "privateKeyRef": { "name": "jwt-other-key" }, "orgId": ORG, "technicalAccountId": TECH_ACCOUNT,
            "metascopes": ["ent_cloudmgr_sdk"], "imsEndpoint": env.ims.url() } },
    }))
    .expect("credential");
    env.create(&jwt).await;
    let (ok, out) = check(&env, &["cloud-manager", "-n", env.ns()]).await;
    assert!(!ok && out.contains("reason=InvalidSignature"), "{out}");
    assert_eq!(env.ims.mint_count("jwt-bad-client"), 0);

    let (ok, out) = check(&env, &["-f", dir.join("nothing.yaml").to_str().expect("path")]).await;
    assert!(!ok && out.contains("nothing.yaml"), "an unreadable file is named:\n{out}");
    assert_eq!(env.ims.mint_count("bad-client"), 0);
    env.assert_no_leaks(&[]).await;
}
