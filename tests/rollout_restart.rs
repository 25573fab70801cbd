//! Consumers follow the token: rollout restarts of workloads (asserted on the objects: no
//! controller-manager runs here) and the ready-made output formats.

mod common;

use std::time::Duration;

use adobe_credential_operator::crd::{RolloutRestartTarget, TargetSpec, WorkloadKind};
use adobe_credential_operator::names::annotation::RESTARTED_FOR;
use common::{TestEnv, WAIT, eventually, fingerprint, key};
use k8s_openapi::api::apps::v1::Deployment;
use kube::Api;
use kube::api::{Patch, PatchParams, PostParams};

fn deployment(name: &str) -> Deployment {
    serde_json::from_value(serde_json::json!({
        "metadata": { "name": name },
        "spec": {
            "selector": { "matchLabels": { "app": name } },
            "template": {
                "metadata": { "labels": { "app": name } },
                "spec": { "containers": [{ "name": "app", "image": "example.invalid/app:1",
                    "envFrom": [{ "secretRef": { "name": "app-token" } }] }] }
            }
        }
    }))
    .expect("deployment")
}

fn restarted_for(d: &Deployment) -> Option<String> {
    d.spec.as_ref()?.template.metadata.as_ref()?.annotations.as_ref()?.get(RESTARTED_FOR).cloned()
}

#[tokio::test]
async fn workloads_restart_once_per_token_change_and_missing_ones_are_reported() {
    let mut env = TestEnv::new("rollout").await;
    env.register_client("ro-client", "p8e-ro-secret", Duration::from_secs(6));
    env.put_source("ro-src", "ro-client", "p8e-ro-secret").await;
    let deployments: Api<Deployment> = Api::namespaced(env.client.clone(), env.ns());
    deployments.create(&PostParams::default(), &deployment("app")).await.expect("deployment");
    let mut cred = env.s2s_credential("app", "ro-src");
    cred.spec.rollout_restart_targets = vec![
        RolloutRestartTarget { kind: WorkloadKind::Deployment, name: "app".into() },
        RolloutRestartTarget { kind: WorkloadKind::StatefulSet, name: "missing".into() },
    ];
    env.create(&cred).await;

    let ready = env.wait_ready("app", "True", "TokenMinted").await;
    let restarts = ready.status.clone().expect("status").rollout_restarts;
    eventually("the Deployment restarted for the first token", WAIT, || async {
        let d = deployments.get("app").await.ok()?;
        (restarted_for(&d)? == fingerprint(env.ims.issued_tokens("ro-client").first()?)).then_some(())
    })
    .await;
    assert_eq!(restarts.len(), 2, "{restarts:?}");
    eventually("a Warning Event for the missing StatefulSet", WAIT, || async {
        let events = env.events().await;
        events.iter().any(|e| e.reason.as_deref() == Some("RolloutTargetNotFound")).then_some(())
    })
    .await;

    // Renewals: each new token restarts the Deployment exactly once.
    env.ims.wait_for_mints("ro-client", 3, WAIT).await.expect("two renewals");
    let latest = env.ims.issued_tokens("ro-client")[2].clone();
    let d = eventually("the Deployment restarted for the third token", WAIT, || async {
        let d = deployments.get("app").await.ok()?;
        (restarted_for(&d)? == fingerprint(&latest)).then_some(d)
    })
    .await;
    let mints = env.ims.mint_count("ro-client") as i64;
    let generation = d.metadata.generation.expect("generation");
    assert!(generation == mints + 1 || generation == mints, "generation {generation} after {mints} mints");
    let cred = env.wait_ready("app", "True", "TokenMinted").await;
    let statuses = cred.status.expect("status").rollout_restarts;
    assert!(statuses.iter().any(|s| s.name == "app" && s.restarted_at.is_some()), "{statuses:?}");
    assert!(statuses.iter().any(|s| s.name == "missing" && s.message.as_deref() == Some("not found")), "{statuses:?}");
    env.assert_no_mint_loop(&[]);
}

#[tokio::test]
async fn no_restart_when_the_token_did_not_change() {
    let mut env = TestEnv::new("norestart").await;
    env.register_client("nr-client", "p8e-nr-secret", Duration::from_secs(86_400));
    env.put_source("nr-src", "nr-client", "p8e-nr-secret").await;
    let deployments: Api<Deployment> = Api::namespaced(env.client.clone(), env.ns());
    deployments.create(&PostParams::default(), &deployment("steady")).await.expect("deployment");
    let mut cred = env.s2s_credential("steady", "nr-src");
    cred.spec.rollout_restart_targets =
        vec![RolloutRestartTarget { kind: WorkloadKind::Deployment, name: "steady".into() }];
    env.create(&cred).await;
    env.wait_ready("steady", "True", "TokenMinted").await;
    let first = eventually("the first restart", WAIT, || async {
        let d = deployments.get("steady").await.ok()?;
        restarted_for(&d).map(|_| d)
    })
    .await;

    // A metadata-only change of the source and an operator restart: both reconcile, neither mints.
    let operator = env.operator.as_ref().expect("operator");
    let reconciles = operator.reconciles().await;
    let label = serde_json::json!({ "metadata": { "labels": { "touched": "yes" } } });
    env.secrets().patch("nr-src", &PatchParams::default(), &Patch::Merge(&label)).await.expect("label");
    eventually("a reconcile after the label change", WAIT, || async {
        (operator.reconciles().await > reconciles).then_some(())
    })
    .await;
    env.restart_operator(&["steady"]).await;
    let after = deployments.get("steady").await.expect("deployment");
    assert_eq!(after.metadata.generation, first.metadata.generation, "no restart without a token change");
    assert_eq!(env.ims.mint_count("nr-client"), 1);
    env.assert_no_mint_loop(&[]);
}

#[tokio::test]
async fn env_file_and_json_outputs() {
    let mut env = TestEnv::new("formats").await;
    env.register_client("fmt-client", "p8e-fmt-secret", Duration::from_secs(86_400));
    env.put_source("fmt-src", "fmt-client", "p8e-fmt-secret").await;
    let mut cred = env.s2s_credential("fmt", "fmt-src");
    cred.spec.target = Some(TargetSpec {
        env_file_key: Some("adobe.env".into()),
        json_key: Some("token.json".into()),
        ..Default::default()
    });
    env.create(&cred).await;
    env.wait_ready("fmt", "True", "TokenMinted").await;
    let secret = env.target("fmt-token").await.expect("target");
    let token = env.ims.issued_tokens("fmt-client").pop().expect("token");
    let env_file = key(&secret, "adobe.env").expect("env file");
    assert!(env_file.contains(&format!("ADOBE_ACCESS_TOKEN={token}\n")), "env file");
    assert!(env_file.contains("ADOBE_API_KEY=fmt-client\n"));
    assert!(env_file.contains("ADOBE_ORG_ID=1234ABCD@AdobeOrg\n"));
    let json: serde_json::Value = serde_json::from_str(&key(&secret, "token.json").expect("json")).expect("valid JSON");
    assert_eq!(json["access_token"], token.as_str());
    assert_eq!(json["client_id"], "fmt-client");
    assert_eq!(json["expires_in"], 86_400);
    assert_eq!(json["expires_at"].as_str(), key(&secret, "expires_at").as_deref());
    env.assert_no_mint_loop(&[]);
}
