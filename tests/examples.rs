//! Every file under examples/ is applied as a user would (placeholders filled in, endpoints
//! pointed at the fake servers) and must end Ready.

mod common;

use adobe_credential_operator::crd::AdobeCredential;
use common::TestEnv;
use fake_token_server::test_keys::RsaKeyPair;
use fake_token_server::{AdobeClient, ServiceAccount};
use k8s_openapi::api::core::v1::Secret;
use kube::api::PostParams;
use serde::Deserialize;
use serde_json::Value;

fn documents(path: &str) -> Vec<Value> {
    let text = std::fs::read_to_string(path).expect("example file");
    serde_yaml::Deserializer::from_str(&text).map(|doc| Value::deserialize(doc).expect("YAML document")).collect()
}

/// Fills the example's placeholders with test values: `client_id` → `<example>-id`, other
/// values → `<example>-<key>`.
fn fill_placeholders(example: &str, string_data: &mut serde_json::Map<String, Value>, private_pem: &str) {
    for (key, value) in string_data.iter_mut() {
        let Some(text) = value.as_str() else { continue };
        if !text.contains("REPLACE_WITH") {
            continue;
        }
        *value = Value::String(match key.as_str() {
            "client_id" => format!("{example}-id"),
            "private.key" => private_pem.to_owned(),
            other => format!("{example}-{other}"),
        });
    }
}

#[tokio::test]
async fn every_example_becomes_ready() {
    let mut env = TestEnv::new("examples").await;
    let key = RsaKeyPair::generate();
    let (private_pem, public_pem) = (key.pkcs8_pem, key.public_pem);
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/examples");
    let mut names = Vec::new();
    // examples/ also holds the Rust example programs (quickstart, benchmark).
    let mut files: Vec<_> = std::fs::read_dir(dir)
        .expect("examples/")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    files.sort();
    for path in files {
        let example = path.file_stem().and_then(|s| s.to_str()).expect("name").to_owned();
        for mut doc in documents(path.to_str().expect("utf-8 path")) {
            match doc["kind"].as_str() {
                Some("Secret") => {
                    if let Some(data) = doc["stringData"].as_object_mut() {
                        fill_placeholders(&example, data, &private_pem);
                        for (k, v) in data.iter() {
                            if k != "client_id" && k != "username" {
                                env.seeded_secrets.extend(v.as_str().filter(|v| !v.is_empty()).map(str::to_owned));
                            }
                        }
                    }
                    let secret: Secret = serde_json::from_value(doc).expect("Secret");
                    env.secrets().create(&PostParams::default(), &secret).await.expect("create Secret");
                }
                Some("AdobeCredential") => {
                    let spec = &mut doc["spec"];
                    let client_id = format!("{example}-id");
                    let client_secret = format!("{example}-client_secret");
                    if spec.get("oauthServerToServer").is_some() {
                        spec["oauthServerToServer"]["imsEndpoint"] = Value::String(env.ims.url().to_owned());
                        env.ims.register_adobe_client(AdobeClient::new(&client_id, &client_secret)).expect("register");
                    }
                    if let Some(flow) = spec.get_mut("serviceAccountJWT") {
                        flow["imsEndpoint"] = Value::String(env.ims.url().to_owned());
                        let account = ServiceAccount::new(
                            flow["orgId"].as_str().expect("orgId"),
                            flow["technicalAccountId"].as_str().expect("technicalAccountId"),
                            &public_pem,
                        )
                        .with_metascopes(["ent_cloudmgr_sdk"]);
                        env.ims
                            .register_adobe_client(
                                AdobeClient::new(&client_id, &client_secret).with_service_account(account),
                            )
                            .expect("register");
                    }
                    if let Some(flow) = spec.get_mut("passwordGrant") {
                        flow["tokenUrl"] = Value::String(format!("{}/api/oauth/v1/token", env.ims.url()));
                        env.ims.register_akeneo_client(&client_id, &client_secret);
                        env.ims.register_akeneo_user(format!("{example}-username"), format!("{example}-password"));
                    }
                    if let Some(flow) = spec.get_mut("oauthWebApp") {
                        flow["imsEndpoint"] = Value::String(env.ims.url().to_owned());
                        let redirect = "https://localhost:8443/callback";
                        let client = AdobeClient::new(&client_id, &client_secret).with_web_app(redirect);
                        env.ims.register_adobe_client(client).expect("register");
                        let scopes: Vec<&str> =
                            flow["scopes"].as_array().expect("scopes").iter().filter_map(Value::as_str).collect();
                        let refresh_token =
                            env.sign_in_user(&client_id, &client_secret, redirect, &scopes.join(",")).await;
                        // What `adobe-credential-operator login … --apply` writes.
                        let user_secret = flow["refreshTokenRef"]["name"].as_str().expect("refreshTokenRef");
                        env.put_secret(user_secret, &[], &[("refresh_token", &refresh_token)]).await;
                    }
                    let cred: AdobeCredential = serde_json::from_value(doc).expect("AdobeCredential");
                    names.push((cred.metadata.name.clone().expect("name"), client_id));
                    env.create(&cred).await;
                }
                other => panic!("unexpected kind {other:?} in {example}"),
            }
        }
    }
    assert_eq!(names.len(), 6, "one credential per seed system");
    for (name, _) in &names {
        env.wait_ready(name, "True", "TokenMinted").await;
    }
    let ids: Vec<&str> = names.iter().map(|(_, id)| id.as_str()).collect();
    env.assert_no_leaks(&ids).await;
    // The user's sign-in (code exchange) is a token request of its own.
    env.assert_no_mint_loop(&[("frameio-user-id", 1)]);
}
