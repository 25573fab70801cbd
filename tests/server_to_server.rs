//! OAuth Server-to-Server credentials end to end: the operator binary against a real
//! kube-apiserver + etcd and the fake Adobe IMS (over TLS, trusted through --extra-ca-file).

mod common;

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime};

use adobe_credential_operator::crd::{CreationPolicy, RenewalSpec, TargetSpec, TargetTemplate};
use common::{DAY, TestEnv, WAIT, eventually, fingerprint, key};
use fake_token_server::{Fault, RetryAfter};
use futures::StreamExt;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{DeleteParams, Patch, PatchParams, PostParams};
use kube::runtime::{WatchStreamExt, watcher};

#[tokio::test]
async fn happy_path_mints_once_and_writes_every_key() {
    let mut env = TestEnv::new("happy").await;
    env.register_client("firefly-client", "p8e-happy-secret-1", DAY);
    env.put_source("firefly-client", "firefly-client", "p8e-happy-secret-1").await;
    env.create(&env.s2s_credential("firefly", "firefly-client")).await;

    let cred = env.wait_ready("firefly", "True", "TokenMinted").await;
    let secret = env.target("firefly-token").await.expect("target Secret exists");
    let issued = env.ims.issued_tokens("firefly-client");
    assert_eq!(issued.len(), 1, "exactly one mint");
    assert_eq!(key(&secret, "access_token").as_deref(), Some(issued[0].as_str()));
    assert_eq!(key(&secret, "token_type").as_deref(), Some("bearer"));
    assert_eq!(key(&secret, "client_id").as_deref(), Some("firefly-client"));
    assert_eq!(key(&secret, "org_id").as_deref(), Some("1234ABCD@AdobeOrg"));
    let expires_at: jiff::Timestamp = key(&secret, "expires_at").expect("expires_at").parse().expect("RFC 3339");
    let lifetime = expires_at.duration_since(jiff::Timestamp::now());
    assert!(lifetime.as_secs() > 86_000 && lifetime.as_secs() <= 86_400, "expires_in read as seconds: {lifetime:?}");
    let owners = secret.metadata.owner_references.clone().unwrap_or_default();
    assert_eq!(owners.len(), 1);
    assert_eq!(Some(&owners[0].uid), cred.metadata.uid.as_ref());

    let status = cred.status.expect("status");
    assert_eq!(status.flow.as_deref(), Some("oauthServerToServer"));
    assert_eq!(status.target_secret.as_deref(), Some("firefly-token"));
    assert_eq!(status.consecutive_failures, 0);
    assert!(status.source_revision.expect("revision").starts_with("sha256:"));
    assert!(status.renewal_time.expect("renewal").0 < status.expires_at.expect("expiry").0);
    let request = &env.ims.requests_for("firefly-client")[0];
    assert_eq!(request.scope.as_deref(), Some(common::FIREFLY_SCOPES.join(",").as_str()));
    assert!(env.events().await.iter().any(|e| e.reason.as_deref() == Some("TokenMinted")));
    env.assert_no_leaks(&["firefly-client"]).await;
    env.assert_no_mint_loop(&[]);
}

/// Short-lived tokens are renewed before they expire, each with exactly one mint, one target
/// write and one status write.
#[tokio::test]
async fn renewal_mints_exactly_once_per_lifetime() {
    let mut env = TestEnv::new("renewal").await;
    env.register_client("renew-client", "p8e-renew-secret", Duration::from_secs(6));
    env.put_source("renew-src", "renew-client", "p8e-renew-secret").await;
    let target_writes =
        VersionLog::start(watcher(env.secrets(), watcher::Config::default().fields("metadata.name=renew-token")));
    let status_writes =
        VersionLog::start(watcher(env.credentials(), watcher::Config::default().fields("metadata.name=renew")));
    env.create(&env.s2s_credential("renew", "renew-src")).await;

    env.ims.wait_for_mints("renew-client", 4, WAIT).await.expect("three renewals after the first mint");
    // Let the fourth token settle in the target and status before counting.
    let fourth = env.ims.issued_tokens("renew-client")[3].clone();
    eventually("fourth token in the target", WAIT, || async {
        let s = env.target("renew-token").await?;
        (key(&s, "access_token")? == fourth).then_some(())
    })
    .await;
    eventually("status to describe the fourth token", WAIT, || async {
        let cred = env.credentials().get("renew").await.ok()?;
        (cred.status?.token_fingerprint? == fingerprint(&fourth)).then_some(())
    })
    .await;
    let mints = env.ims.mint_count("renew-client");
    // The watch may deliver the last write a moment after the API server acknowledged it.
    eventually("the watch to see every target write", WAIT, || async {
        (target_writes.entries().len() >= mints).then_some(())
    })
    .await;
    let first_seen = target_writes.entries();
    let target_versions = first_seen.len();
    let status_versions = status_writes.entries().len();
    eprintln!("renewal: mints={mints} target_writes={target_versions} status_writes={status_versions}");
    assert!(mints == 4 || mints == 5, "no mints between renewals: {mints}");
    assert_eq!(target_versions, mints, "one target write per mint");
    // One write for creation, then one status write per mint.
    assert!(status_versions <= mints + 1, "status writes {status_versions} for {mints} mints");
    // Each token was replaced before it expired.
    for pair in first_seen.windows(2) {
        let (prev_expiry, next_seen) = (pair[0].1, pair[1].0);
        assert!(next_seen <= prev_expiry, "a token expired before its successor was written");
    }
    env.assert_no_leaks(&["renew-client"]).await;
    env.assert_no_mint_loop(&[]);
}

/// Rotation: the client secret changes in the source Secret and the old one is revoked at IMS;
/// a new token is in the target at once.
#[tokio::test]
async fn rotation_of_the_source_secret_mints_at_once() {
    let mut env = TestEnv::new("rotate").await;
    env.register_client("rot-client", "p8e-rot-old", DAY);
    env.put_source("rot-src", "rot-client", "p8e-rot-old").await;
    env.create(&env.s2s_credential("rot", "rot-src")).await;
    let before = env.wait_ready("rot", "True", "TokenMinted").await;

    env.ims.add_adobe_client_secret("rot-client", "p8e-rot-new").expect("second secret");
    let started = std::time::Instant::now();
    env.put_source("rot-src", "rot-client", "p8e-rot-new").await;
    env.ims.remove_adobe_client_secret("rot-client", "p8e-rot-old").expect("revoke old");
    let second = eventually("a token minted with the new secret in the target", WAIT, || async {
        let tokens = env.ims.issued_tokens("rot-client");
        let s = env.target("rot-token").await?;
        (tokens.len() == 2 && key(&s, "access_token")? == tokens[1]).then(|| tokens[1].clone())
    })
    .await;
    eprintln!("rotation: new token in the target {:?} after the source Secret update", started.elapsed());
    let after = env.wait_ready("rot", "True", "TokenMinted").await;
    let (b, a) = (before.status.expect("status"), after.status.expect("status"));
    assert_ne!(b.source_revision, a.source_revision);
    assert_eq!(a.token_fingerprint, Some(fingerprint(&second)));
    assert_eq!(env.ims.mint_count("rot-client"), 2);
    env.assert_no_leaks(&["rot-client"]).await;
    env.assert_no_mint_loop(&[("rot-client", 1)]);
}

/// Mid-rotation the source Secret holds the old (already revoked) and the new client secret: the
/// operator falls back to the second and says so.
#[tokio::test]
async fn second_client_secret_is_used_when_the_first_is_rejected() {
    let mut env = TestEnv::new("second").await;
    env.register_client("two-client", "p8e-two-new", DAY);
    env.put_secret(
        "two-src",
        &[("client_id", "two-client")],
        &[("client_secret", "p8e-two-old"), ("client_secret_2", "p8e-two-new")],
    )
    .await;
    let mut cred = env.s2s_credential("two", "two-src");
    if let Some(flow) = cred.spec.oauth_server_to_server.as_mut() {
        flow.client_secret_ref.secondary_client_secret_key = Some("client_secret_2".into());
    }
    env.create(&cred).await;
    let ready = env.wait_ready("two", "True", "TokenMinted").await;
    let message = &ready.status.expect("status").conditions[0].message;
    assert!(message.contains("\"client_secret_2\" works"), "{message}");
    let outcomes: Vec<_> =
        env.ims.requests_for("two-client").into_iter().map(|r| r.status.map(|s| s.as_u16())).collect();
    assert_eq!(outcomes, [Some(400), Some(200)], "first secret rejected, second accepted");
    env.assert_no_leaks(&["two-client"]).await;
    env.assert_no_mint_loop(&[]);
}

/// A label edit on the source Secret changes nothing that went into the token: no mint.
#[tokio::test]
async fn metadata_only_change_of_the_source_does_not_mint() {
    let mut env = TestEnv::new("label").await;
    env.register_client("label-client", "p8e-label-secret", DAY);
    env.put_source("label-src", "label-client", "p8e-label-secret").await;
    env.create(&env.s2s_credential("label", "label-src")).await;
    env.wait_ready("label", "True", "TokenMinted").await;
    let target_before = env.target("label-token").await.expect("target");
    let operator = env.operator.as_ref().expect("operator");
    let reconciles = operator.reconciles().await;
    let patch = serde_json::json!({ "metadata": { "labels": { "team": "a" } } });
    env.secrets().patch("label-src", &PatchParams::default(), &Patch::Merge(&patch)).await.expect("label");
    eventually("the operator to inspect the relabelled source", WAIT, || async {
        (operator.reconciles().await > reconciles).then_some(())
    })
    .await;
    assert_eq!(env.ims.mint_count("label-client"), 1);
    let target_after = env.target("label-token").await.expect("target");
    assert_eq!(target_before.metadata.resource_version, target_after.metadata.resource_version);
    env.assert_no_mint_loop(&[]);
}

/// A restarted operator adopts the valid tokens it finds and mints nothing.
#[tokio::test]
async fn restart_with_valid_tokens_mints_nothing() {
    let mut env = TestEnv::new("restart").await;
    env.register_client("restart-client", "p8e-restart-secret", DAY);
    env.put_source("restart-src", "restart-client", "p8e-restart-secret").await;
    for name in ["restart-a", "restart-b"] {
        env.create(&env.s2s_credential(name, "restart-src")).await;
    }
    let before_a = env.wait_ready("restart-a", "True", "TokenMinted").await;
    env.wait_ready("restart-b", "True", "TokenMinted").await;
    assert_eq!(env.ims.mint_count("restart-client"), 2);

    env.restart_operator(&["restart-a", "restart-b"]).await;
    let after_a = env.wait_ready("restart-a", "True", "TokenMinted").await;
    assert_eq!(env.ims.mint_count("restart-client"), 2, "no mint after restart");
    assert_eq!(before_a.status, after_a.status, "status untouched");
    env.assert_no_mint_loop(&[("restart-client", 1)]);
}

#[tokio::test]
async fn invalid_client_then_fixed() {
    let mut env = TestEnv::new("invalid").await;
    env.register_client("inv-client", "p8e-inv-right", DAY);
    env.put_source("inv-src", "inv-client", "p8e-inv-wrong").await;
    env.create(&env.s2s_credential("inv", "inv-src")).await;
    let cred = env.wait_ready("inv", "False", "InvalidClient").await;
    let message = &cred.status.as_ref().expect("status").conditions[0].message;
    assert!(message.contains("invalid client_secret parameter"), "{message}");
    assert!(env.target("inv-token").await.is_none(), "nothing written");
    eventually("a Warning Event InvalidClient", WAIT, || async {
        env.events()
            .await
            .iter()
            .any(|e| e.reason.as_deref() == Some("InvalidClient") && e.type_.as_deref() == Some("Warning"))
            .then_some(())
    })
    .await;

    env.put_source("inv-src", "inv-client", "p8e-inv-right").await;
    let cred = env.wait_ready("inv", "True", "TokenMinted").await;
    assert_eq!(cred.status.expect("status").consecutive_failures, 0);
    assert_eq!(env.ims.mint_count("inv-client"), 1);
    env.assert_no_leaks(&["inv-client"]).await;
    env.assert_no_mint_loop(&[]);
}

#[tokio::test]
async fn missing_source_secret_then_created() {
    let mut env = TestEnv::new("missing").await;
    env.register_client("miss-client", "p8e-miss-secret", DAY);
    env.create(&env.s2s_credential("miss", "miss-src")).await;
    let cred = env.wait_ready("miss", "False", "SourceSecretNotFound").await;
    assert!(cred.status.expect("status").conditions[0].message.contains("\"miss-src\""));
    env.put_source("miss-src", "miss-client", "p8e-miss-secret").await;
    env.wait_ready("miss", "True", "TokenMinted").await;
    assert_eq!(env.ims.mint_count("miss-client"), 1);
    env.assert_no_mint_loop(&[]);
}

#[tokio::test]
async fn missing_key_is_reported() {
    let env = TestEnv::new("nokey").await;
    let secret: Secret = serde_json::from_value(serde_json::json!({
        "metadata": { "name": "nokey-src" },
        "stringData": { "client_id": "x" },
    }))
    .expect("secret");
    env.secrets().create(&PostParams::default(), &secret).await.expect("create");
    env.create(&env.s2s_credential("nokey", "nokey-src")).await;
    let cred = env.wait_ready("nokey", "False", "SourceKeyMissing").await;
    assert!(cred.status.expect("status").conditions[0].message.contains("\"client_secret\""));
    assert!(env.ims.requests().is_empty(), "no request without a secret");
    env.assert_no_mint_loop(&[]);
}

#[tokio::test]
async fn unowned_target_is_a_conflict_and_stays_untouched() {
    let mut env = TestEnv::new("conflict").await;
    env.register_client("conf-client", "p8e-conf-secret", DAY);
    env.put_source("conf-src", "conf-client", "p8e-conf-secret").await;
    let foreign: Secret = serde_json::from_value(serde_json::json!({
        "metadata": { "name": "conf-token" }, "stringData": { "password": "someone-elses" },
    }))
    .expect("secret");
    let created = env.secrets().create(&PostParams::default(), &foreign).await.expect("foreign");
    env.create(&env.s2s_credential("conf", "conf-src")).await;
    env.wait_ready("conf", "False", "TargetConflict").await;
    let after = env.target("conf-token").await.expect("still there");
    assert_eq!(after.metadata.resource_version, created.metadata.resource_version, "untouched");
    assert_eq!(env.ims.mint_count("conf-client"), 0, "no token minted for a target we cannot write");
    env.assert_no_mint_loop(&[]);
}

/// Upgrade: a Merge target written by earlier versions (one shared field manager for every
/// credential, unscoped annotations) is taken over by the credential's own field manager: one
/// mint, no TargetConflict with the operator's own past writes.
#[tokio::test]
async fn merge_target_written_by_an_earlier_version_is_taken_over() {
    let mut env = TestEnv::new("upgrade").await;
    env.register_client("up-client", "p8e-up-secret", DAY);
    env.put_source("up-src", "up-client", "p8e-up-secret").await;
    let earlier = serde_json::json!({
        "apiVersion": "v1", "kind": "Secret",
        "metadata": { "name": "app-config", "annotations": { "credentials.adobe-operator.io/credential": "up" } },
        // Written as `data`, as the operator always wrote it.
        "data": { "access_token": "dG9rZW4tb2YtYW4tZWFybGllci12ZXJzaW9u", "client_id": "dXAtY2xpZW50" },
    });
    let shared_manager = PatchParams::apply("adobe-credential-operator").force();
    env.secrets().patch("app-config", &shared_manager, &Patch::Apply(&earlier)).await.expect("earlier write");
    let mut up = env.s2s_credential("up", "up-src");
    up.spec.target = Some(TargetSpec {
        name: Some("app-config".into()),
        creation_policy: CreationPolicy::Merge,
        ..Default::default()
    });
    env.create(&up).await;
    env.wait_ready("up", "True", "TokenMinted").await;
    let target = env.target("app-config").await.expect("target");
    assert_eq!(key(&target, "access_token").as_ref(), env.ims.issued_tokens("up-client").first());
    assert_eq!(env.ims.mint_count("up-client"), 1);
    env.assert_no_mint_loop(&[]);
}

#[tokio::test]
async fn merge_keeps_foreign_keys_and_orphan_has_no_owner() {
    let mut env = TestEnv::new("policies").await;
    env.register_client("pol-client", "p8e-pol-secret", DAY);
    env.put_source("pol-src", "pol-client", "p8e-pol-secret").await;
    let existing: Secret = serde_json::from_value(serde_json::json!({
        "metadata": { "name": "shared-config" }, "stringData": { "endpoint": "https://firefly-api.adobe.io" },
    }))
    .expect("secret");
    env.secrets().create(&PostParams::default(), &existing).await.expect("existing");

    let mut merge = env.s2s_credential("merge", "pol-src");
    merge.spec.target = Some(TargetSpec {
        name: Some("shared-config".into()),
        creation_policy: CreationPolicy::Merge,
        template: Some(TargetTemplate {
            data: BTreeMap::from([("authorization".into(), "Bearer {{ access_token }}".into())]),
        }),
        ..Default::default()
    });
    env.create(&merge).await;
    let mut orphan = env.s2s_credential("orphan", "pol-src");
    orphan.spec.target = Some(TargetSpec { creation_policy: CreationPolicy::Orphan, ..Default::default() });
    env.create(&orphan).await;

    env.wait_ready("merge", "True", "TokenMinted").await;
    env.wait_ready("orphan", "True", "TokenMinted").await;
    let merged = env.target("shared-config").await.expect("merged");
    assert_eq!(key(&merged, "endpoint").as_deref(), Some("https://firefly-api.adobe.io"));
    let token = key(&merged, "access_token").expect("token");
    assert_eq!(key(&merged, "authorization"), Some(format!("Bearer {token}")));
    assert!(merged.metadata.owner_references.unwrap_or_default().is_empty());
    let orphaned = env.target("orphan-token").await.expect("orphan target");
    assert!(orphaned.metadata.owner_references.clone().unwrap_or_default().is_empty());
    assert!(key(&orphaned, "access_token").is_some());
    env.assert_no_leaks(&["pol-client"]).await;
    env.assert_no_mint_loop(&[("pol-client", 1)]);
}

#[tokio::test]
async fn spec_change_mints_a_token_for_the_new_spec() {
    let mut env = TestEnv::new("spec").await;
    env.register_client("spec-client", "p8e-spec-secret", DAY);
    env.put_source("spec-src", "spec-client", "p8e-spec-secret").await;
    env.create(&env.s2s_credential("spec", "spec-src")).await;
    env.wait_ready("spec", "True", "TokenMinted").await;
    let patch = serde_json::json!({ "spec": { "oauthServerToServer": { "scopes": ["openid", "AdobeID"] } } });
    env.credentials().patch("spec", &PatchParams::default(), &Patch::Merge(&patch)).await.expect("patch");
    env.ims.wait_for_mints("spec-client", 2, WAIT).await.expect("second mint");
    let last = env.ims.requests_for("spec-client").pop().expect("request");
    assert_eq!(last.scope.as_deref(), Some("openid,AdobeID"));
    let cred = eventually("status for generation 2", WAIT, || async {
        let c = env.credentials().get("spec").await.ok()?;
        (c.status.as_ref()?.observed_generation == c.metadata.generation).then_some(c)
    })
    .await;
    let issued = env.ims.issued_tokens("spec-client");
    assert_eq!(cred.status.and_then(|s| s.token_fingerprint), Some(fingerprint(&issued[1])));
    env.assert_no_mint_loop(&[("spec-client", 1)]);
}

#[tokio::test]
async fn deleted_target_is_restored_without_a_mint() {
    let mut env = TestEnv::new("recreate").await;
    env.register_client("rec-client", "p8e-rec-secret", DAY);
    env.put_source("rec-src", "rec-client", "p8e-rec-secret").await;
    env.create(&env.s2s_credential("rec", "rec-src")).await;
    env.wait_ready("rec", "True", "TokenMinted").await;
    env.secrets().delete("rec-token", &DeleteParams::default()).await.expect("delete target");
    let token = eventually("the target to be recreated", WAIT, || async {
        key(&env.target("rec-token").await?, "access_token")
    })
    .await;
    // The operator still holds the token it minted: the target is restored, nothing is minted.
    let issued = env.ims.issued_tokens("rec-client");
    assert_eq!(issued.len(), 1);
    assert_eq!(token, issued[0]);
    eventually("the TargetRestored Event", WAIT, || async {
        env.events().await.iter().any(|e| e.reason.as_deref() == Some("TargetRestored")).then_some(())
    })
    .await;
    env.assert_no_mint_loop(&[]);
}

#[tokio::test]
async fn hand_edited_target_is_restored() {
    let mut env = TestEnv::new("tamper").await;
    env.register_client("tam-client", "p8e-tam-secret", DAY);
    env.put_source("tam-src", "tam-client", "p8e-tam-secret").await;
    env.create(&env.s2s_credential("tam", "tam-src")).await;
    env.wait_ready("tam", "True", "TokenMinted").await;
    let patch = serde_json::json!({ "stringData": { "client_id": "edited-by-hand" } });
    env.secrets().patch("tam-token", &PatchParams::default(), &Patch::Merge(&patch)).await.expect("edit");
    eventually("client_id restored", WAIT, || async {
        (key(&env.target("tam-token").await?, "client_id")? == "tam-client").then_some(())
    })
    .await;
    assert_eq!(env.ims.mint_count("tam-client"), 1, "restored from the intact token, no mint");
    env.assert_no_mint_loop(&[]);
}

#[tokio::test]
async fn throttling_waits_for_retry_after() {
    let mut env = TestEnv::new("throttle").await;
    env.register_client("thr-client", "p8e-thr-secret", DAY);
    env.put_source("thr-src", "thr-client", "p8e-thr-secret").await;
    env.ims.inject_fault(Fault::too_many_requests(RetryAfter::Seconds(3)).for_client("thr-client").times(1));
    env.create(&env.s2s_credential("thr", "thr-src")).await;
    env.wait_seen("thr", "False", "Throttled").await;
    env.wait_ready("thr", "True", "TokenMinted").await;
    let requests = env.ims.requests_for("thr-client");
    assert_eq!(requests.len(), 2, "one throttled request, one success");
    let waited = requests[1].received_at.duration_since(requests[0].received_at).expect("ordered");
    assert!(waited >= Duration::from_secs(3), "retried after {waited:?}, before Retry-After");
    env.assert_no_mint_loop(&[]);
}

#[tokio::test]
async fn server_errors_back_off_and_recover() {
    let mut env = TestEnv::new("errors").await;
    env.register_client("err-client", "p8e-err-secret", DAY);
    env.put_source("err-src", "err-client", "p8e-err-secret").await;
    env.ims.inject_fault(Fault::internal_error().for_client("err-client").times(3));
    env.create(&env.s2s_credential("err", "err-src")).await;
    env.wait_seen("err", "False", "TokenEndpointUnavailable").await;
    let cred = env.wait_ready("err", "True", "TokenMinted").await;
    assert_eq!(cred.status.expect("status").consecutive_failures, 0);
    let requests = env.ims.requests_for("err-client");
    assert_eq!(requests.len(), 4, "three failures, one success, no burst");
    let gaps: Vec<Duration> =
        requests.windows(2).map(|w| w[1].received_at.duration_since(w[0].received_at).unwrap_or_default()).collect();
    assert!(gaps[1] > gaps[0] / 2 && gaps[2] > gaps[0], "backoff grows: {gaps:?}");
    env.assert_no_leaks(&["err-client"]).await;
    env.assert_no_mint_loop(&[]);
}

/// A failed renewal never removes the last good token.
#[tokio::test]
async fn failing_renewal_keeps_the_last_good_token() {
    let mut env = TestEnv::new("keep").await;
    env.register_client("keep-client", "p8e-keep-secret", Duration::from_secs(6));
    env.put_source("keep-src", "keep-client", "p8e-keep-secret").await;
    let mut cred = env.s2s_credential("keep", "keep-src");
    cred.spec.renewal = Some(RenewalSpec { renew_before: Some("4s".into()), renew_before_percentage: None });
    env.create(&cred).await;
    env.wait_ready("keep", "True", "TokenMinted").await;
    let good = key(&env.target("keep-token").await.expect("target"), "access_token");
    env.ims.inject_fault(Fault::malformed_json().for_client("keep-client"));
    env.wait_seen("keep", "True", "MalformedTokenResponse").await;
    assert_eq!(key(&env.target("keep-token").await.expect("target"), "access_token"), good, "token kept");
    let expired = env.wait_ready("keep", "False", "TokenExpired").await;
    assert!(expired.status.expect("status").conditions[0].message.contains("cannot be renewed"));
    assert_eq!(key(&env.target("keep-token").await.expect("target"), "access_token"), good, "still kept");
    env.ims.clear_faults();
    env.wait_ready("keep", "True", "TokenMinted").await;
    env.assert_no_leaks(&["keep-client"]).await;
    env.assert_no_mint_loop(&[]);
}

#[tokio::test]
async fn token_host_outside_the_allowlist_is_refused() {
    let mut env = TestEnv::new("ssrf").await;
    env.put_source("ssrf-src", "ssrf-client", "p8e-ssrf-secret").await;
    let mut cred = env.s2s_credential("ssrf", "ssrf-src");
    if let Some(flow) = cred.spec.oauth_server_to_server.as_mut() {
        flow.ims_endpoint = "https://169.254.169.254".into();
    }
    env.create(&cred).await;
    env.wait_ready("ssrf", "False", "TokenHostNotAllowed").await;
    env.assert_no_mint_loop(&[]);
}

#[tokio::test]
async fn api_server_rejects_invalid_specs() {
    let env = TestEnv::new("cel").await;
    let mut two_bad = env.s2s_credential("bad-scope", "src");
    if let Some(flow) = two_bad.spec.oauth_server_to_server.as_mut() {
        flow.scopes = vec!["openid,AdobeID".into()];
    }
    let mut none = env.s2s_credential("no-flow", "src");
    none.spec.oauth_server_to_server = None;
    let mut http = env.s2s_credential("http", "src");
    if let Some(flow) = http.spec.oauth_server_to_server.as_mut() {
        flow.ims_endpoint = "http://ims-na1.adobelogin.com".into();
    }
    let mut both = env.s2s_credential("both", "src");
    both.spec.renewal = Some(RenewalSpec { renew_before: Some("1h".into()), renew_before_percentage: Some(10) });
    let mut bad_duration = env.s2s_credential("dur", "src");
    bad_duration.spec.renewal =
        Some(RenewalSpec { renew_before: Some("forever".into()), renew_before_percentage: None });
    for (cred, expected) in [
        (two_bad, "should match"),
        (none, "exactly one flow block"),
        (http, "https://"),
        (both, "not both"),
        (bad_duration, "renewBefore must be a duration"),
    ] {
        let err = env.credentials().create(&PostParams::default(), &cred).await.expect_err("rejected");
        assert!(err.to_string().contains(expected), "{err}");
    }
    env.assert_no_mint_loop(&[]);
}

/// Per new resourceVersion of the watched objects: when it was seen, and the token expiry it
/// carries (Secrets). Stops watching when dropped.
struct VersionLog {
    seen: std::sync::Arc<std::sync::Mutex<Vec<(SystemTime, SystemTime)>>>,
    task: tokio::task::JoinHandle<()>,
}

impl VersionLog {
    fn start<K>(stream: impl futures::Stream<Item = Result<watcher::Event<K>, watcher::Error>> + Send + 'static) -> Self
    where
        K: kube::Resource + Clone + std::fmt::Debug + Send + 'static,
    {
        let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let sink = seen.clone();
        let task = tokio::spawn(async move {
            let mut versions = std::collections::HashSet::new();
            let mut stream = std::pin::pin!(stream.applied_objects());
            while let Some(obj) = stream.next().await {
                let Ok(obj) = obj else { continue };
                if versions.insert(obj.meta().resource_version.clone()) {
                    let expiry = obj
                        .meta()
                        .annotations
                        .as_ref()
                        .and_then(|a| a.get("credentials.adobe-operator.io/expires-at"))
                        .and_then(|t| t.parse::<jiff::Timestamp>().ok())
                        .map(SystemTime::from)
                        .unwrap_or(SystemTime::UNIX_EPOCH);
                    sink.lock().expect("lock").push((SystemTime::now(), expiry));
                }
            }
        });
        Self { seen, task }
    }

    fn entries(&self) -> Vec<(SystemTime, SystemTime)> {
        self.seen.lock().expect("lock").clone()
    }
}

impl Drop for VersionLog {
    fn drop(&mut self) {
        self.task.abort();
    }
}
