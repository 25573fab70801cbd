//! ClusterAdobeCredential on the real API server: one integration in the cluster-credential
//! namespace, one mint per lifetime, the same token written to every selected namespace, which
//! follows namespace labels, survives tenants' edits and deletions, and never takes over a
//! Secret it did not write.
//!
//! The operator serves every namespace here, so the tests of this binary run one at a time
//! (`SERIAL`) and each removes its ClusterAdobeCredentials before it ends.

mod common;

use std::collections::BTreeMap;

use adobe_credential_operator::crd::{AdobeCredential, ClusterAdobeCredential, ClusterAdobeCredentialSpec};
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

/// Creates the cluster credential `name` of `client` for namespaces labelled `label=name`; returns
/// its first token once each of `namespaces` holds it.
async fn distribute(env: &TestEnv, name: &str, client: &str, label: &str, namespaces: &[&str]) -> String {
    cluster_api(env)
        .create(&PostParams::default(), &cluster_credential(env, name, client, label))
        .await
        .expect("create cluster credential");
    let token = eventually("a token", WAIT, || async { env.ims.issued_tokens(client).first().cloned() }).await;
    wait_copies(env, namespaces, &token).await;
    token
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

/// A team's own AdobeCredential `name` in `namespace` (its client in a Secret of its own, the
/// `target` settings besides the copies' name) aimed at the copy; returns once it reports
/// `Ready=False TargetConflict`.
async fn aim_at_the_copy(
    env: &TestEnv,
    namespace: &str,
    name: &str,
    (client_id, secret): (&str, &str),
    target: serde_json::Value,
) -> Api<AdobeCredential> {
    let source = format!("{name}-own-src");
    let own_source: Secret = serde_json::from_value(json!({
        "metadata": { "name": source },
        "stringData": { "client_id": client_id, "client_secret": secret },
    }))
    .expect("secret");
    let secrets = Api::<Secret>::namespaced(env.client.clone(), namespace);
    secrets.create(&PostParams::default(), &own_source).await.expect("the team's source Secret");
    let mut own = env.s2s_credential(name, &source);
    let mut target = target;
    target["name"] = json!("adobe-token");
    own.spec.target = Some(serde_json::from_value(target).expect("target"));
    let served = Api::<AdobeCredential>::namespaced(env.client.clone(), namespace);
    served.create(&PostParams::default(), &own).await.expect("create");
    eventually(&format!("{name} to report TargetConflict"), WAIT, || async {
        let cred = served.get(name).await.ok()?;
        let ready = cred.status?.conditions.into_iter().find(|c| c.type_ == "Ready")?;
        (ready.status == "False" && ready.reason == "TargetConflict").then_some(())
    })
    .await;
    served
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
    take_copy_name(&env, taken.name()).await;
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
    let served = aim_at_the_copy(&env, free.name(), "own", ("ccc-client", "p8e-ccc-secret"), json!({})).await;
    let still = copy(&env, free.name()).await.expect("copy");
    assert_eq!(key(&still, "access_token").as_deref(), Some(token.as_str()), "the copy is unchanged");

    served.delete("own", &DeleteParams::default()).await.expect("delete namespaced credential");
    assert_no_cluster_leaks(&env, "pdf", "ccc-client").await;
    delete_and_wait(&env, "pdf").await;
    assert!(copy(&env, taken.name()).await.is_some(), "their Secret survives the cleanup");
    env.assert_no_mint_loop(&[]);
}

/// Puts a Secret of the team's own under the copies' name into `namespace`.
async fn take_copy_name(env: &TestEnv, namespace: &str) {
    let theirs: Secret = serde_json::from_value(json!({
        "metadata": { "name": "adobe-token" }, "stringData": { "access_token": "the team's own" },
    }))
    .expect("secret");
    Api::<Secret>::namespaced(env.client.clone(), namespace)
        .create(&PostParams::default(), &theirs)
        .await
        .expect("the team's Secret");
}

/// Several namespaces failing at once (their Secrets hold the copy's name) give a status that
/// settles: the failures are listed in a fixed order and the operator does not act on its own
/// status writes. Watched from the settled status on, each later change of the selection
/// writes status exactly once.
#[tokio::test]
async fn status_settles_with_several_failing_namespaces() {
    use futures::{StreamExt, TryStreamExt};
    use kube::api::{WatchEvent, WatchParams};
    let _serial = SERIAL.lock().await;
    let env = cluster_env("cc-stable", "ccs-client", "p8e-ccs-secret").await;
    let label = "aco-test/cc-stable";
    let mut taken = Vec::new();
    for i in 0..5 {
        let namespace = tenant(&env, &format!("ccs-taken{i}"), &[(label, "st")]).await;
        take_copy_name(&env, namespace.name()).await;
        taken.push(namespace);
    }
    let late = [tenant(&env, "ccs-late0", &[]).await, tenant(&env, "ccs-late1", &[]).await];
    cluster_api(&env)
        .create(&PostParams::default(), &cluster_credential(&env, "st", "ccs-client", label))
        .await
        .expect("create cluster credential");
    let settled = wait_counts(&env, "st", 0, 5).await;
    let failures = settled.status.as_ref().expect("status").failed_namespaces.clone();
    let mut sorted = failures.iter().map(|f| f.namespace.clone()).collect::<Vec<_>>();
    sorted.sort();
    assert_eq!(failures.iter().map(|f| f.namespace.clone()).collect::<Vec<_>>(), sorted, "listed in order");

    let params = WatchParams::default().fields("metadata.name=st");
    let version = settled.resource_version().expect("version");
    let mut changes = cluster_api(&env).watch(&params, &version).await.expect("watch").boxed();
    let mut writes = 0;
    for (written, namespace) in late.iter().enumerate() {
        set_labels(&env, namespace.name(), &[(label, "st")]).await;
        let counted = tokio::time::timeout(WAIT, async {
            while let Some(event) = changes.try_next().await.expect("watch event") {
                if let WatchEvent::Modified(cc) = event {
                    writes += 1;
                    let counts = cc.status.as_ref().map(|s| s.namespaces);
                    if counts.is_some_and(|c| c.written as usize == written + 1 && c.failed == 5) {
                        return;
                    }
                }
            }
        });
        counted.await.expect("the status to count the newly selected namespace");
    }
    assert_eq!(writes, late.len(), "one status write per change of the selection, none of its own accord");
    let now = cluster_api(&env).get("st").await.expect("get");
    assert_eq!(condition(&now, "Distributed").1, "NamespaceConflict");

    delete_and_wait(&env, "st").await;
    for namespace in &taken {
        let kept = copy(&env, namespace.name()).await.expect("their Secret");
        assert_eq!(key(&kept, "access_token").as_deref(), Some("the team's own"));
    }
    env.assert_no_mint_loop(&[]);
}

/// A namespaced AdobeCredential of any name, even with `creationPolicy: Merge` and a `keyPrefix`,
/// aimed at a copy gets TargetConflict before it mints, and the copy holds only the cluster
/// credential's keys. Keys a person adds to a copy survive the namespace's deselection, which
/// takes only the token and the copy's marks away.
#[tokio::test]
async fn a_copy_is_nobody_elses_target_and_deselection_keeps_what_others_wrote() {
    let _serial = SERIAL.lock().await;
    let mut env = cluster_env("cc-merge", "ccm-client", "p8e-ccm-secret").await;
    let label = "aco-test/cc-merge";
    let team = tenant(&env, "ccm-team", &[(label, "mg")]).await;
    distribute(&env, "mg", "ccm-client", label, &[team.name()]).await;
    let keys =
        |secret: &Secret| secret.data.as_ref().map(|d| d.keys().cloned().collect::<Vec<_>>()).unwrap_or_default();
    let copied_keys = keys(&copy(&env, team.name()).await.expect("copy"));

    env.register_client("ccm-own", "p8e-ccm-own", DAY);
    let merge = json!({ "creationPolicy": "Merge", "keyPrefix": "team_" });
    // "cluster" is the name whose field manager used to be the copies' own.
    for name in ["cluster", "merger"] {
        let served = aim_at_the_copy(&env, team.name(), name, ("ccm-own", "p8e-ccm-own"), merge.clone()).await;
        let message = served.get(name).await.expect("get").status.expect("status").conditions[0].message.clone();
        assert!(message.contains("copy of ClusterAdobeCredential \"mg\""), "{message}");
    }
    let served = Api::<AdobeCredential>::namespaced(env.client.clone(), team.name());
    let team_secrets = Api::<Secret>::namespaced(env.client.clone(), team.name());
    assert_eq!(env.ims.mint_count("ccm-own"), 0, "refused before minting");
    let copied = copy(&env, team.name()).await.expect("copy");
    assert_eq!(keys(&copied), copied_keys, "nothing merged into the copy");
    let managers: Vec<String> = copied.managed_fields().iter().filter_map(|m| m.manager.clone()).collect();
    assert!(managers.iter().all(|m| !m.starts_with("adobe-credential-operator/")), "{managers:?}");
    for name in ["cluster", "merger"] {
        served.delete(name, &DeleteParams::default()).await.expect("delete");
    }

    // A person adds a key of their own to the copy; the token is written back around it.
    let extra = json!({ "stringData": { "team_note": "kept" } });
    let by_hand = PatchParams { field_manager: Some("team-tool".into()), ..Default::default() };
    team_secrets.patch("adobe-token", &by_hand, &Patch::Merge(&extra)).await.expect("add a key");
    remove_label(&env, team.name(), label).await;
    let released = eventually("the copy to be released", WAIT, || async {
        let secret = copy(&env, team.name()).await?;
        (!secret.annotations().contains_key("credentials.adobe-operator.io/cluster-credential")).then_some(secret)
    })
    .await;
    assert_eq!(keys(&released), ["team_note"], "only what the person wrote stays");
    assert_eq!(key(&released, "team_note").as_deref(), Some("kept"));
    assert!(released.owner_references().is_empty());

    delete_and_wait(&env, "mg").await;
    assert!(copy(&env, team.name()).await.is_some(), "the released Secret is the team's");
    env.assert_no_leaks(&["ccm-client", "ccm-own"]).await;
    env.assert_no_mint_loop(&[]);
}

/// The minter (`cluster-<name>`) is the ClusterAdobeCredential's: edited by hand (fields added)
/// it is put back whole within seconds, deleted by hand it is created again, and
/// neither costs a mint loop; the copies keep a valid token throughout.
#[tokio::test]
async fn a_minter_edited_or_deleted_by_hand_is_put_back() {
    let _serial = SERIAL.lock().await;
    let env = cluster_env("cc-minter", "ccn-client", "p8e-ccn-secret").await;
    let label = "aco-test/cc-minter";
    let team = tenant(&env, "ccn-team", &[(label, "mt")]).await;
    distribute(&env, "mt", "ccn-client", label, &[team.name()]).await;
    wait_counts(&env, "mt", 1, 0).await;
    let minters = env.credentials();
    let wanted = minters.get("cluster-mt").await.expect("minter").spec;

    let edit = json!({ "spec": {
        "renewal": { "renewBeforePercentage": 90 },
        "target": { "keyPrefix": "edited_" },
    } });
    minters.patch("cluster-mt", &PatchParams::default(), &Patch::Merge(&edit)).await.expect("edit by hand");
    eventually("the minter to be put back", WAIT, || async {
        (minters.get("cluster-mt").await.ok()?.spec == wanted).then_some(())
    })
    .await;

    let uid = minters.get("cluster-mt").await.expect("minter").uid();
    minters.delete("cluster-mt", &DeleteParams::default()).await.expect("delete by hand");
    let recreated = eventually("the minter to be created again", WAIT, || async {
        let minter = minters.get_opt("cluster-mt").await.ok()??;
        (minter.uid() != uid && minter.spec == wanted).then_some(minter)
    })
    .await;
    assert_eq!(recreated.owner_references()[0].name, "mt");
    let cc = wait_counts(&env, "mt", 1, 0).await;
    assert_eq!(condition(&cc, "Distributed"), ("True", "AllNamespacesWritten"));
    let held = key(&copy(&env, team.name()).await.expect("copy"), "access_token").expect("token");
    assert!(env.ims.issued_tokens("ccn-client").contains(&held));
    assert!(env.ims.mint_count("ccn-client") <= 2, "at most one mint for a minter deleted with its token");

    delete_and_wait(&env, "mt").await;
    env.assert_no_mint_loop(&[("ccn-client", 1)]);
}

/// While the operator is paused (SIGSTOP), tenants replace their copies with Secrets of their
/// own under the same name (two recreated from the copy's YAML, so they carry its marks), and
/// their namespaces stop matching. The resumed operator acts on what is there: it deletes none
/// of the tenants' Secrets and overwrites none of their keys (a copy is read again; deleted only
/// when it holds nothing but what the operator wrote, with UID and resourceVersion
/// preconditions; else released), and the namespace still selected keeps its copy.
#[tokio::test]
async fn secrets_created_under_a_copys_name_while_the_operator_was_paused_are_never_deleted() {
    let _serial = SERIAL.lock().await;
    let env = cluster_env("cc-pause", "ccp-client", "p8e-ccp-secret").await;
    let label = "aco-test/cc-pause";
    let mut teams = Vec::new();
    for i in 0..4 {
        teams.push(tenant(&env, &format!("ccp-team{i}"), &[(label, "ps")]).await);
    }
    let names: Vec<&str> = teams.iter().map(TestNamespace::name).collect();
    let token = distribute(&env, "ps", "ccp-client", label, &names).await;
    wait_counts(&env, "ps", 4, 0).await;

    let pid = env.operator.as_ref().and_then(common::Operator::pid).expect("pid");
    common::signal(pid, "STOP");
    let mut theirs = Vec::new();
    for (i, ns) in names[..3].iter().enumerate() {
        let secrets = Api::<Secret>::namespaced(env.client.clone(), ns);
        let copied = secrets.get("adobe-token").await.expect("the copy");
        secrets.delete("adobe-token", &DeleteParams::default()).await.expect("delete the copy");
        if i < 2 {
            // Recreated from the copy's YAML (`kubectl get -o yaml`, edit, `kubectl create`): the
            // copy's labels, annotations and owner come along.
            let mut own = Secret { metadata: copied.metadata, ..Default::default() };
            own.metadata.uid = None;
            own.metadata.resource_version = None;
            own.metadata.creation_timestamp = None;
            own.metadata.managed_fields = None;
            own.string_data = Some([("access_token".to_owned(), "the team's own".to_owned())].into());
            secrets.create(&PostParams::default(), &own).await.expect("their Secret");
        } else {
            take_copy_name(&env, ns).await;
        }
        theirs.push(secrets.get("adobe-token").await.expect("their Secret").uid());
        remove_label(&env, ns, label).await;
    }
    common::signal(pid, "CONT");

    eventually("the resumed operator to count one selected namespace", WAIT, || async {
        let cc = cluster_api(&env).get("ps").await.ok()?;
        (cc.status?.namespaces.selected == 1).then_some(())
    })
    .await;
    wait_counts(&env, "ps", 1, 0).await;
    for (ns, uid) in names[..3].iter().zip(&theirs) {
        let kept = copy(&env, ns).await.expect("their Secret is never deleted");
        assert_eq!(&kept.uid(), uid, "{ns}: the same Secret");
        assert_eq!(key(&kept, "access_token").as_deref(), Some("the team's own"), "{ns}: never overwritten");
    }
    wait_copies(&env, &names[3..], &token).await;

    delete_and_wait(&env, "ps").await;
    for ns in &names[..3] {
        assert!(copy(&env, ns).await.is_some(), "{ns}: their Secret survives the cleanup");
    }
    env.assert_no_mint_loop(&[]);
}

/// A tenant deleting or editing its copy gets it back at once, without a mint.
#[tokio::test]
async fn deleted_and_edited_copies_are_restored_without_a_mint() {
    let _serial = SERIAL.lock().await;
    let env = cluster_env("cc-restore", "ccr-client", "p8e-ccr-secret").await;
    let label = "aco-test/cc-restore";
    let team = tenant(&env, "ccr-team", &[(label, "cm")]).await;
    let token = distribute(&env, "cm", "ccr-client", label, &[team.name()]).await;
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
    distribute(&env, "chart", "ccx-client", label, &[team.name()]).await;
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

/// Without permission to list namespaces (a ClusterRole edited by hand, say), the namespace watch
/// never completes its first list. The operator writes and removes no copy and creates no
/// minter, says so in status (Distributed False, WatchNotListed, the API server's refusal) and
/// metrics, and retries with a growing delay; once the permission is back, it distributes.
#[tokio::test]
async fn a_watch_that_cannot_list_is_said_and_retried_with_backoff() {
    use common::tools::{apply, render};
    use k8s_openapi::api::rbac::v1::ClusterRole;
    let _serial = SERIAL.lock().await;
    let mut env = TestEnv::new("cc-nolist").await;
    env.kill_operator().await;
    let release = env.ns().to_owned();
    apply(&render(&release, "clusterCredentials: {enabled: true}\nrbac: {aggregateClusterRoles: false}\n").await).await;
    let roles: Api<ClusterRole> = Api::all(env.client.clone());
    let role = format!("{FULLNAME}-cluster-credentials");
    let granted = roles.get(&role).await.expect("role").rules.unwrap_or_default();
    let without: Vec<_> =
        granted.iter().filter(|rule| !rule.resources.iter().flatten().any(|r| r == "namespaces")).cloned().collect();
    assert!(without.len() < granted.len(), "the chart grants the namespace list");
    roles.patch(&role, &PatchParams::default(), &Patch::Merge(&json!({ "rules": without }))).await.expect("revoke");

    let sa = env.control_plane.service_account_kubeconfig(&release, FULLNAME).await.expect("kubeconfig");
    let log = env.dir.path().join("operator.log");
    let flags = ["--cluster-credential-namespace", release.as_str()];
    env.operator = Some(common::Operator::start_with("", &sa, &env.ca_file(), log, &flags).await);
    env.register_client("ccl-client", "p8e-ccl-secret", DAY);
    env.put_source("ccl-client-src", "ccl-client", "p8e-ccl-secret").await;
    let label = "aco-test/cc-nolist";
    let team = tenant(&env, "ccl-team", &[(label, "nl")]).await;
    cluster_api(&env)
        .create(&PostParams::default(), &cluster_credential(&env, "nl", "ccl-client", label))
        .await
        .expect("create cluster credential");

    // The delay it reports grows (1 s doubling, with jitter): retried with backoff.
    let message = eventually("Distributed False WatchNotListed with a growing delay", WAIT, || async {
        let cc = cluster_api(&env).get("nl").await.ok()?;
        let distributed = cc.status?.conditions.into_iter().find(|c| c.type_ == "Distributed")?;
        let delay: u64 = distributed.message.rsplit_once("next try in ")?.1.trim_end_matches('s').parse().ok()?;
        (distributed.status == "False" && distributed.reason == "WatchNotListed" && delay >= 8)
            .then_some(distributed.message)
    })
    .await;
    assert!(message.contains("list of namespaces") && message.contains("forbidden"), "{message}");
    let operator = env.operator.as_ref().expect("operator");
    let listed = |text: &str| metric(text, r#"adobe_credential_cluster_watch_listed{watch="namespaces"}"#);
    assert_eq!(listed(&operator.metrics().await), Some(0.0));
    assert!(copy(&env, team.name()).await.is_none(), "nothing distributed without the list");
    assert!(env.credentials().get_opt("cluster-nl").await.expect("get").is_none(), "no minter yet");
    assert_eq!(env.ims.mint_count("ccl-client"), 0);

    roles.patch(&role, &PatchParams::default(), &Patch::Merge(&json!({ "rules": granted }))).await.expect("grant");
    let token = eventually("a token", WAIT, || async { env.ims.issued_tokens("ccl-client").first().cloned() }).await;
    wait_copies(&env, &[team.name()], &token).await;
    let cc = wait_counts(&env, "nl", 1, 0).await;
    assert_eq!(condition(&cc, "Distributed"), ("True", "AllNamespacesWritten"));
    assert_eq!(listed(&operator.metrics().await), Some(1.0));

    delete_and_wait(&env, "nl").await;
    env.assert_no_leaks(&["ccl-client"]).await;
    env.assert_no_mint_loop(&[]);
}

const FULLNAME: &str = "aco-adobe-credential-operator";

/// The cluster CRD shares the AdobeCredential's spec type, and refuses what a cluster credential
/// cannot serve: a user's sign-in (per namespace), two flow blocks, a `Merge` target.
#[tokio::test]
async fn the_api_server_refuses_what_a_cluster_credential_cannot_serve() {
    let _serial = SERIAL.lock().await;
    let env = cluster_env("cc-refuse", "cc-refuse-client", "p8e-refuse").await;
    let mut valid =
        serde_json::to_value(cluster_credential(&env, "refused", "cc-refuse-client", "x").spec).expect("spec as JSON");
    let web_app = json!({
        "clientSecretRef": { "name": "web-src" },
        "refreshTokenRef": { "name": "user" },
        "scopes": ["openid", "offline_access"],
    });
    let mut two_flows = valid.clone();
    two_flows["oauthWebApp"] = web_app.clone();
    let only_web_app = json!({ "oauthWebApp": web_app, "namespaces": ["a"] });
    let mut merge = valid.clone();
    merge["target"]["creationPolicy"] = json!("Merge");
    for (spec, expected) in [
        (two_flows, "exactly one flow block"),
        (only_web_app, "oauthWebApp is not served by a ClusterAdobeCredential"),
        (merge, "owns its target Secrets"),
    ] {
        let spec: ClusterAdobeCredentialSpec = serde_json::from_value(spec).expect("spec");
        let refused =
            cluster_api(&env).create(&PostParams::default(), &ClusterAdobeCredential::new("refused", spec)).await;
        let message = match refused {
            Err(kube::Error::Api(status)) => status.message,
            other => panic!("{expected}: {other:?}"),
        };
        assert!(message.contains(expected), "{expected}: {message}");
    }
    valid["namespaces"] = json!(["a"]);
    let spec: ClusterAdobeCredentialSpec = serde_json::from_value(valid).expect("spec");
    cluster_api(&env)
        .create(&PostParams::default(), &ClusterAdobeCredential::new("refused", spec))
        .await
        .expect("valid");
    delete_and_wait(&env, "refused").await;
}
