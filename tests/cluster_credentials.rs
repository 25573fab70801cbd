//! ClusterAdobeCredential on the real API server: one integration in the cluster-credential
//! namespace, one mint per lifetime, the same token written to every selected namespace, which
//! follows namespace labels, survives tenants' edits and deletions, and never takes over a
//! Secret it did not write.
//!
//! The operator serves every namespace here, so the tests of this binary run one at a time
//! (`SERIAL`) and each removes its ClusterAdobeCredentials before it ends.

mod common;

use std::collections::BTreeMap;

use adobe_credential_operator::crd::{ClusterAdobeCredential, ClusterAdobeCredentialSpec};
use common::{DAY, TestEnv, WAIT, eventually, key, metric};
use k8s_openapi::api::core::v1::{Namespace, Secret};
use kube::api::{DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::{Api, ResourceExt};
use serde_json::json;
use test_support::TestNamespace;

static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// A TestEnv whose operator serves every namespace and ClusterAdobeCredentials from the env's
/// own namespace, where the source Secret `<client>-src` of a fake client lives.
async fn cluster_env(prefix: &str, client: &str, secret: &str) -> TestEnv {
    let mut env = TestEnv::new(prefix).await;
    let cluster_namespace = env.ns().to_owned();
    env.restart_operator_with("", &["--cluster-credential-namespace", &cluster_namespace]).await;
    env.register_client(client, secret, DAY);
    env.put_source(&format!("{client}-src"), client, secret).await;
    env
}

fn cluster_api(env: &TestEnv) -> Api<ClusterAdobeCredential> {
    Api::all(env.client.clone())
}

/// A cluster credential of `client` for namespaces labelled `selector-label=<name>`.
fn cluster_credential(env: &TestEnv, name: &str, client: &str, label: &str) -> ClusterAdobeCredential {
    let spec: ClusterAdobeCredentialSpec = serde_json::from_value(json!({
        "oauthServerToServer": {
            "clientSecretRef": { "name": format!("{client}-src") },
            "scopes": common::FIREFLY_SCOPES,
            "imsEndpoint": env.ims.url(),
        },
        "namespaceSelector": { "matchLabels": { label: name } },
        "target": { "name": "adobe-token" },
    }))
    .expect("spec");
    ClusterAdobeCredential::new(name, spec)
}

async fn tenant(env: &TestEnv, prefix: &str, labels: &[(&str, &str)]) -> TestNamespace {
    let namespace = env.control_plane.namespace(prefix).await.expect("namespace");
    set_labels(env, namespace.name(), labels).await;
    namespace
}

async fn set_labels(env: &TestEnv, namespace: &str, labels: &[(&str, &str)]) {
    let labels: BTreeMap<&str, Option<&str>> = labels.iter().map(|(k, v)| (*k, Some(*v))).collect();
    let patch = json!({ "metadata": { "labels": labels } });
    Api::<Namespace>::all(env.client.clone())
        .patch(namespace, &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .expect("label namespace");
}

async fn remove_label(env: &TestEnv, namespace: &str, label: &str) {
    let patch = json!({ "metadata": { "labels": { label: null } } });
    Api::<Namespace>::all(env.client.clone())
        .patch(namespace, &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .expect("unlabel namespace");
}

async fn copy(env: &TestEnv, namespace: &str) -> Option<Secret> {
    Api::<Secret>::namespaced(env.client.clone(), namespace).get_opt("adobe-token").await.expect("get copy")
}

/// Waits until each of `namespaces` holds `token` in its copy.
async fn wait_copies(env: &TestEnv, namespaces: &[&str], token: &str) {
    eventually(&format!("{namespaces:?} to hold the token"), WAIT, || async {
        for ns in namespaces {
            let secret = copy(env, ns).await?;
            (key(&secret, "access_token")? == token).then_some(())?;
        }
        Some(())
    })
    .await;
}

/// Waits until the status says the token is Ready, `written` namespaces hold it and `failed`
/// failed. (The minter's status may come a moment after the copies.)
async fn wait_counts(env: &TestEnv, name: &str, written: u32, failed: u32) -> ClusterAdobeCredential {
    eventually(&format!("{name}: Ready, {written} written, {failed} failed"), WAIT, || async {
        let cc = cluster_api(env).get(name).await.ok()?;
        let counts = cc.status.as_ref()?.namespaces;
        let ready = condition(&cc, "Ready").0 == "True";
        (ready && counts.written == written && counts.failed == failed).then_some(cc)
    })
    .await
}

fn condition<'a>(cc: &'a ClusterAdobeCredential, type_: &str) -> (&'a str, &'a str) {
    let c = cc.status.as_ref().and_then(|s| s.conditions.iter().find(|c| c.type_ == type_));
    c.map_or(("", ""), |c| (c.status.as_str(), c.reason.as_str()))
}

/// Deletes the cluster credential and waits until the operator has cleaned up and let it go.
async fn delete_and_wait(env: &TestEnv, name: &str) {
    cluster_api(env).delete(name, &DeleteParams::default()).await.expect("delete");
    eventually(&format!("{name} to be gone"), WAIT, || async {
        cluster_api(env).get_opt(name).await.expect("get").is_none().then_some(())
    })
    .await;
}

/// No token or seeded secret in the cluster credential's status or in the cluster-scoped Events
/// (which the API server keeps in `default`).
async fn assert_no_cluster_leaks(env: &TestEnv, name: &str, client: &str) {
    let mut needles = env.seeded_secrets.clone();
    needles.extend(env.ims.issued_tokens(client));
    let status = serde_json::to_string(&cluster_api(env).get(name).await.expect("get").status).expect("json");
    let events: Api<k8s_openapi::api::events::v1::Event> = Api::namespaced(env.client.clone(), "default");
    let events =
        serde_json::to_string(&events.list(&ListParams::default()).await.expect("events").items).expect("json");
    for needle in &needles {
        assert!(!status.contains(needle.as_str()) && !events.contains(needle.as_str()), "a secret value leaked");
    }
}

/// One cluster credential into three labelled namespaces with one mint; a fourth labelled later
/// gets the same token without a mint; an unlabelled one loses its copy; a rotation of the
/// source Secret mints once for all; a restarted operator mints nothing; deletion cleans up.
#[tokio::test]
async fn one_mint_serves_every_selected_namespace_and_follows_their_labels() {
    let _serial = SERIAL.lock().await;
    let mut env = cluster_env("cc-main", "cc-client", "p8e-cc-old").await;
    let label = "aco-test/cc-main";
    let mut teams = Vec::new();
    for i in 0..3 {
        teams.push(tenant(&env, &format!("cc-team{i}"), &[(label, "firefly")]).await);
    }
    let later = tenant(&env, "cc-later", &[]).await;
    let names: Vec<&str> = teams.iter().map(TestNamespace::name).collect();
    cluster_api(&env)
        .create(&PostParams::default(), &cluster_credential(&env, "firefly", "cc-client", label))
        .await
        .expect("create cluster credential");

    let first =
        eventually("the first token", WAIT, || async { env.ims.issued_tokens("cc-client").first().cloned() }).await;
    wait_copies(&env, &names, &first).await;
    let cc = wait_counts(&env, "firefly", 3, 0).await;
    assert_eq!(condition(&cc, "Ready"), ("True", "TokenMinted"));
    assert_eq!(condition(&cc, "Distributed"), ("True", "AllNamespacesWritten"));
    assert_eq!(env.ims.mint_count("cc-client"), 1, "one mint for three namespaces");
    let status = cc.status.expect("status");
    assert_eq!(status.token_fingerprint, Some(common::fingerprint(&first)));
    assert_eq!(status.minted_by, Some(format!("{}/cluster-firefly", env.ns())));

    // A namespace that starts matching gets the same token; nothing is minted.
    let labelled_at = std::time::Instant::now();
    set_labels(&env, later.name(), &[(label, "firefly")]).await;
    wait_copies(&env, &[later.name()], &first).await;
    eprintln!("a newly labelled namespace held the token {:?} after the label", labelled_at.elapsed());
    wait_counts(&env, "firefly", 4, 0).await;
    assert_eq!(env.ims.mint_count("cc-client"), 1);

    // A namespace that stops matching loses its copy (creationPolicy Owner, the default).
    remove_label(&env, names[0], label).await;
    eventually("the unlabelled namespace's copy to be removed", WAIT, || async {
        copy(&env, names[0]).await.is_none().then_some(())
    })
    .await;
    wait_counts(&env, "firefly", 3, 0).await;

    // Rotation of the source Secret: one mint, every namespace updated.
    env.ims.add_adobe_client_secret("cc-client", "p8e-cc-new").expect("second secret");
    env.put_source("cc-client-src", "cc-client", "p8e-cc-new").await;
    let second = eventually("a token minted with the new secret", WAIT, || async {
        env.ims.issued_tokens("cc-client").get(1).cloned()
    })
    .await;
    wait_copies(&env, &[names[1], names[2], later.name()], &second).await;
    assert_eq!(env.ims.mint_count("cc-client"), 2, "one mint per rotation for all namespaces");

    // A restarted operator adopts the token: no mint, no copy rewritten.
    let versions = |secrets: Vec<Option<Secret>>| -> Vec<Option<String>> {
        secrets.into_iter().map(|s| s.and_then(|s| s.resource_version())).collect()
    };
    let served = [names[1], names[2], later.name()];
    let before = versions(futures::future::join_all(served.iter().map(|ns| copy(&env, ns))).await);
    let cluster_namespace = env.ns().to_owned();
    env.restart_operator_with("", &["--cluster-credential-namespace", &cluster_namespace]).await;
    let operator = env.operator.as_ref().expect("operator");
    eventually("the restarted operator to distribute", WAIT, || async {
        let text = operator.metrics().await;
        let written = r#"adobe_credential_cluster_namespaces{name="firefly",state="written"}"#;
        (metric(&text, written)? == 3.0).then_some(())
    })
    .await;
    let after = versions(futures::future::join_all(served.iter().map(|ns| copy(&env, ns))).await);
    assert_eq!(before, after, "no copy was rewritten after the restart");
    assert_eq!(env.ims.mint_count("cc-client"), 2, "no mint after the restart");

    assert_no_cluster_leaks(&env, "firefly", "cc-client").await;
    delete_and_wait(&env, "firefly").await;
    for ns in served {
        assert!(copy(&env, ns).await.is_none(), "{ns}: the copy goes with the cluster credential (Owner)");
    }
    assert!(env.credentials().get_opt("cluster-firefly").await.expect("get").is_none(), "the minter is deleted");
    env.assert_no_leaks(&["cc-client"]).await;
    env.assert_no_mint_loop(&[("cc-client", 1)]);
}

/// A namespace where the target name is taken by a Secret the cluster credential did not write
/// keeps that Secret and is reported; the other namespaces get the token. A namespaced
/// AdobeCredential cannot take over a copy either.
#[tokio::test]
async fn a_conflict_in_one_namespace_is_reported_and_blocks_no_other() {
    let _serial = SERIAL.lock().await;
    let env = cluster_env("cc-conflict", "ccc-client", "p8e-ccc-secret").await;
    let label = "aco-test/cc-conflict";
    let free = tenant(&env, "ccc-free", &[(label, "pdf")]).await;
    let taken = tenant(&env, "ccc-taken", &[(label, "pdf")]).await;
    let theirs: Secret = serde_json::from_value(json!({
        "metadata": { "name": "adobe-token" }, "stringData": { "access_token": "the team's own" },
    }))
    .expect("secret");
    Api::<Secret>::namespaced(env.client.clone(), taken.name())
        .create(&PostParams::default(), &theirs)
        .await
        .expect("the team's Secret");
    cluster_api(&env)
        .create(&PostParams::default(), &cluster_credential(&env, "pdf", "ccc-client", label))
        .await
        .expect("create cluster credential");

    let token = eventually("a token", WAIT, || async { env.ims.issued_tokens("ccc-client").first().cloned() }).await;
    wait_copies(&env, &[free.name()], &token).await;
    let cc = wait_counts(&env, "pdf", 1, 1).await;
    assert_eq!(condition(&cc, "Ready"), ("True", "TokenMinted"), "the token itself is fine");
    assert_eq!(condition(&cc, "Distributed"), ("False", "NamespaceConflict"));
    let failures = cc.status.expect("status").failed_namespaces;
    assert_eq!(failures.len(), 1);
    assert_eq!((failures[0].namespace.as_str(), failures[0].reason.as_str()), (taken.name(), "NamespaceConflict"));
    let kept = copy(&env, taken.name()).await.expect("their Secret");
    assert_eq!(key(&kept, "access_token").as_deref(), Some("the team's own"), "never overwritten");

    // A namespaced AdobeCredential aimed at a copy is a conflict for it, not a takeover.
    let own_source: Secret = serde_json::from_value(json!({
        "metadata": { "name": "ccc-own-src" },
        "stringData": { "client_id": "ccc-client", "client_secret": "p8e-ccc-secret" },
    }))
    .expect("secret");
    Api::<Secret>::namespaced(env.client.clone(), free.name())
        .create(&PostParams::default(), &own_source)
        .await
        .expect("the team's source Secret");
    let mut own = env.s2s_credential("own", "ccc-own-src");
    own.spec.target = Some(serde_json::from_value(json!({ "name": "adobe-token" })).expect("target"));
    Api::namespaced(env.client.clone(), free.name()).create(&PostParams::default(), &own).await.expect("create");
    let served = Api::<adobe_credential_operator::crd::AdobeCredential>::namespaced(env.client.clone(), free.name());
    eventually("the namespaced credential to report TargetConflict", WAIT, || async {
        let cred = served.get("own").await.ok()?;
        let ready = cred.status?.conditions.into_iter().find(|c| c.type_ == "Ready")?;
        (ready.reason == "TargetConflict").then_some(())
    })
    .await;
    let still = copy(&env, free.name()).await.expect("copy");
    assert_eq!(key(&still, "access_token").as_deref(), Some(token.as_str()), "the copy is unchanged");

    served.delete("own", &DeleteParams::default()).await.expect("delete namespaced credential");
    assert_no_cluster_leaks(&env, "pdf", "ccc-client").await;
    delete_and_wait(&env, "pdf").await;
    assert!(copy(&env, taken.name()).await.is_some(), "their Secret survives the cleanup");
    env.assert_no_mint_loop(&[]);
}

/// A tenant deleting or editing its copy gets it back at once, without a mint.
#[tokio::test]
async fn deleted_and_edited_copies_are_restored_without_a_mint() {
    let _serial = SERIAL.lock().await;
    let env = cluster_env("cc-restore", "ccr-client", "p8e-ccr-secret").await;
    let label = "aco-test/cc-restore";
    let team = tenant(&env, "ccr-team", &[(label, "cm")]).await;
    cluster_api(&env)
        .create(&PostParams::default(), &cluster_credential(&env, "cm", "ccr-client", label))
        .await
        .expect("create cluster credential");
    let token = eventually("a token", WAIT, || async { env.ims.issued_tokens("ccr-client").first().cloned() }).await;
    wait_copies(&env, &[team.name()], &token).await;
    let secrets = Api::<Secret>::namespaced(env.client.clone(), team.name());

    secrets.delete("adobe-token", &DeleteParams::default()).await.expect("tenant deletes its copy");
    wait_copies(&env, &[team.name()], &token).await;

    let edit = json!({ "stringData": { "access_token": "tampered" } });
    secrets.patch("adobe-token", &PatchParams::default(), &Patch::Merge(&edit)).await.expect("tenant edits");
    wait_copies(&env, &[team.name()], &token).await;
    assert_eq!(env.ims.mint_count("ccr-client"), 1, "restored from the minted token");

    delete_and_wait(&env, "cm").await;
    env.assert_no_mint_loop(&[]);
}

/// The chart with `clusterCredentials.enabled`, applied to the real API server, and the operator
/// running as the chart's ServiceAccount: what the chart grants is enough to serve a
/// ClusterAdobeCredential end to end (finalizer, minter, copies, status, cleanup), and no more.
#[tokio::test]
async fn the_chart_grants_what_cluster_credentials_need_and_no_more() {
    use common::tools::{apply, kubectl, render};
    let _serial = SERIAL.lock().await;
    let mut env = TestEnv::new("cc-chart").await;
    env.kill_operator().await;
    let release = env.ns().to_owned();
    let values = "clusterCredentials: {enabled: true}\nrbac: {aggregateClusterRoles: false}\n";
    apply(&render(&release, values).await).await;
    let sa = env.control_plane.service_account_kubeconfig(&release, FULLNAME).await.expect("kubeconfig");
    let log = env.dir.path().join("operator.log");
    let flags = ["--cluster-credential-namespace", release.as_str()];
    env.operator = Some(common::Operator::start_with("", &sa, &env.ca_file(), log, &flags).await);
    env.register_client("ccx-client", "p8e-ccx-secret", DAY);
    env.put_source("ccx-client-src", "ccx-client", "p8e-ccx-secret").await;
    let label = "aco-test/cc-chart";
    let team = tenant(&env, "ccx-team", &[(label, "chart")]).await;
    cluster_api(&env)
        .create(&PostParams::default(), &cluster_credential(&env, "chart", "ccx-client", label))
        .await
        .expect("create cluster credential");
    let token = eventually("a token", WAIT, || async { env.ims.issued_tokens("ccx-client").first().cloned() }).await;
    wait_copies(&env, &[team.name()], &token).await;
    let cc = wait_counts(&env, "chart", 1, 0).await;
    assert_eq!(condition(&cc, "Distributed"), ("True", "AllNamespacesWritten"));

    // No more than that: minters only in the cluster-credential namespace, namespaces read-only.
    let can_i = |args: Vec<String>| {
        let sa = sa.clone();
        async move {
            let mut full = vec!["auth".to_string(), "can-i".to_string()];
            full.extend(args);
            let refs: Vec<&str> = full.iter().map(String::as_str).collect();
            kubectl(Some(&sa), &refs, None).await.status.success()
        }
    };
    let args = |verb: &str, resource: &str, ns: Option<&str>| -> Vec<String> {
        let mut a = vec![verb.to_string(), resource.to_string()];
        if let Some(ns) = ns {
            a.extend(["-n".to_string(), ns.to_string()]);
        }
        a
    };
    assert!(can_i(args("create", "adobecredentials", Some(&release))).await);
    assert!(
        !can_i(args("create", "adobecredentials", Some(team.name()))).await,
        "minters only where the platform keeps them"
    );
    assert!(!can_i(args("delete", "adobecredentials", Some(team.name()))).await);
    assert!(!can_i(args("patch", "namespaces", None)).await);
    assert!(!can_i(args("create", "clusteradobecredentials", None)).await, "the operator never creates its own input");

    delete_and_wait(&env, "chart").await;
    assert!(copy(&env, team.name()).await.is_none(), "cleaned up with the chart's permissions");
    env.assert_no_leaks(&["ccx-client"]).await;
    env.assert_no_mint_loop(&[]);
}

const FULLNAME: &str = "aco-adobe-credential-operator";
