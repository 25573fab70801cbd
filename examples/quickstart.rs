//! The operator's main job on a local default, in one command (`make demo`): a real etcd +
//! kube-apiserver, a fake Adobe IMS on loopback (TLS with its own CA), the CRD, the Firefly
//! example credential, and the operator binary minting a token into a Secret. Prints
//! `kubectl get adobecredentials` and the Secret's keys with their values masked, then stops
//! everything.

use std::process::Stdio;
use std::time::{Duration, Instant};

use adobe_credential_operator::crd::AdobeCredential;
use anyhow::{Context, bail};
use fake_token_server::{AdobeClient, FakeTokenServer};
use k8s_openapi::api::core::v1::Secret;
use kube::Api;
use kube::api::PostParams;
use serde::Deserialize;
use test_support::LoopbackTls;

const NAMESPACE_PREFIX: &str = "demo";
const CLIENT_ID: &str = "demo-firefly-client";
const CLIENT_SECRET: &str = "p8e-demo-only-secret";

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let started = Instant::now();
    let repo = env!("CARGO_MANIFEST_DIR");
    println!("==> starting etcd + kube-apiserver");
    let control_plane = test_support::control_plane();
    let client = control_plane.client();
    control_plane.install_crd_yaml(&std::fs::read_to_string(format!("{repo}/crds/adobecredentials.yaml"))?).await?;
    let namespace = control_plane.namespace(NAMESPACE_PREFIX).await?;
    let ns = namespace.name();

    println!("==> starting a fake Adobe IMS over TLS");
    let tls = LoopbackTls::generate()?;
    let ims = FakeTokenServer::start_tls(&tls.cert_pem, &tls.key_pem).await?;
    ims.register_adobe_client(AdobeClient::new(CLIENT_ID, CLIENT_SECRET))?;
    let dir = tempfile::tempdir()?;
    let ca_file = dir.path().join("ims-ca.pem");
    std::fs::write(&ca_file, &tls.ca_pem)?;

    println!("==> applying examples/firefly.yaml to namespace {ns} (endpoint pointed at the fake IMS)");
    apply_firefly_example(&client, ns, ims.url()).await?;

    println!("==> running the operator");
    let operator_bin = std::env::current_exe()?
        .parent()
        .and_then(|examples| examples.parent())
        .map(|dir| dir.join("adobe-credential-operator"))
        .context("locating the operator binary")?;
    let mut operator = tokio::process::Command::new(&operator_bin)
        .args(["run", "--namespaces", ns, "--allowed-token-hosts", "127.0.0.1", "--http-addr", "127.0.0.1:0"])
        .arg("--extra-ca-file")
        .arg(&ca_file)
        .env("KUBECONFIG", control_plane.kubeconfig_path())
        .stdin(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .with_context(|| format!("starting {} (build it with `cargo build`)", operator_bin.display()))?;

    let credentials: Api<AdobeCredential> = Api::namespaced(client.clone(), ns);
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let cred = credentials.get("firefly").await?;
        let ready = cred.status.as_ref().and_then(|s| s.conditions.iter().find(|c| c.type_ == "Ready"));
        if ready.is_some_and(|c| c.status == "True") {
            break;
        }
        if Instant::now() > deadline {
            bail!("the credential did not become Ready: {:?}", ready);
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    println!("\n$ kubectl get adobecredentials -n {ns}");
    let kubectl = std::process::Command::new(control_plane.bin_dir().join("kubectl"))
        .arg("--kubeconfig")
        .arg(control_plane.kubeconfig_path())
        .args(["get", "adobecredentials", "-n", ns])
        .output()?;
    print!("{}", String::from_utf8_lossy(&kubectl.stdout));

    let secret = Api::<Secret>::namespaced(client, ns).get("firefly-token").await?;
    println!("\nSecret {ns}/firefly-token (token values masked):");
    let data = secret.data.unwrap_or_default();
    let token = data.get("access_token").map(|v| String::from_utf8_lossy(&v.0).into_owned()).unwrap_or_default();
    for (key, value) in &data {
        let value = String::from_utf8_lossy(&value.0);
        let shown = if !token.is_empty() && value.contains(&token) { mask(&value) } else { value.into_owned() };
        println!("  {key:<14} {shown}");
    }
    println!("\nminted {} token(s) at the fake IMS; done in {:.1?}", ims.mint_count(CLIENT_ID), started.elapsed());
    operator.kill().await?;
    Ok(())
}

async fn apply_firefly_example(client: &kube::Client, ns: &str, ims_url: &str) -> anyhow::Result<()> {
    let text = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/examples/firefly.yaml"))?;
    for document in serde_yaml::Deserializer::from_str(&text) {
        let mut doc = serde_json::Value::deserialize(document)?;
        match doc["kind"].as_str() {
            Some("Secret") => {
                doc["stringData"]["client_id"] = CLIENT_ID.into();
                doc["stringData"]["client_secret"] = CLIENT_SECRET.into();
                let secret: Secret = serde_json::from_value(doc)?;
                Api::<Secret>::namespaced(client.clone(), ns).create(&PostParams::default(), &secret).await?;
            }
            Some("AdobeCredential") => {
                doc["spec"]["oauthServerToServer"]["imsEndpoint"] = ims_url.into();
                let cred: AdobeCredential = serde_json::from_value(doc)?;
                Api::<AdobeCredential>::namespaced(client.clone(), ns).create(&PostParams::default(), &cred).await?;
            }
            other => bail!("unexpected kind {other:?} in examples/firefly.yaml"),
        }
    }
    Ok(())
}

/// Shows the shape of a value that carries the token, never the token.
fn mask(value: &str) -> String {
    let prefix: String = value.chars().take(4).collect();
    format!("{prefix}… ({} bytes)", value.len())
}
