//! Client secret rotation end to end: the operator binary against a real kube-apiserver + etcd
//! and the fake IMS with its I/O Management API (over TLS): on demand, on schedule, and every
//! refusal with its reason. Crash tests per step are in `client_secret_rotation_kill.rs`.

mod common;
mod rotation_support;

use std::time::{Duration, Instant, SystemTime};

use common::{TestEnv, WAIT, eventually, key};
use fake_token_server::{EndpointKind, Fault, RetryAfter};
use kube::api::{Patch, PatchParams, PostParams};
use rotation_support::*;

/// On demand: a new trigger value rotates the secret; the token path never fails, the target
/// always holds a valid token, the old secret is deleted, and the figures are printed.
#[tokio::test]
async fn on_demand_rotation_replaces_the_secret_without_a_failed_token_request() {
    let mut env = TestEnv::with_flags("rot-demand", &ROTATION_FLAGS).await;
    let (r, cred) = rotating(&mut env, "demand", "0s", None).await;
    env.create(&cred).await;
    env.wait_ready("demand", "True", "TokenMinted").await;
    let observed = wait_observed(&env, &r).await;
    assert_eq!(observed.next_rotation_time, None, "on demand only");
    let watch = TargetWatch::start(&env, &r.target());
    let old_uuid = env.ims.client_secret_uuid(&r.client, &r.original).expect("uuid");

    let since = SystemTime::now();
    let started = Instant::now();
    trigger(&env, "demand", "2026-12-01").await;
    let new_uuid = eventually("a token minted with a new secret in the target", WAIT, || async {
        let token = key(&env.target(&r.target()).await?, "access_token")?;
        issuing_secret(&env, &r.client, &token).filter(|uuid| *uuid != old_uuid)
    })
    .await;
    let to_new_token = started.elapsed();
    let (new_value, uuid) = wait_completed(&env, &r).await;
    let to_completed = started.elapsed();
    assert_eq!(uuid, new_uuid);
    let (ims, list, add, delete) = requests_since(&env, &r.client, since);
    eprintln!(
        "rotation figures: trigger → new token in the target {to_new_token:?}, → old secret deleted {to_completed:?}; requests: {ims} IMS token requests (management token, verification, workload), {list} list, {add} add, {delete} delete"
    );
    assert_eq!((add, delete), (1, 1), "one secret added, one deleted");

    assert_eq!(source_key(&env, &r, SECONDARY_KEY).await.as_deref(), Some(r.original.as_str()), "old kept aside");
    assert_ne!(new_value, r.original);
    let (status, condition) = rotation_of(&env, "demand").await.expect("status");
    assert_eq!(status.current_secret_uuid.as_deref(), Some(new_uuid.as_str()));
    assert!(status.last_rotation_time.is_some());
    assert_eq!(condition.status, "True");
    env.wait_ready("demand", "True", "TokenMinted").await;
    assert_no_failed_workload_requests(&env, &r.client);
    let versions = watch.assert_valid_throughout(&env, &r.client);
    assert!(versions >= 2, "the target was rewritten with the new token");
    for reason in
        ["RotationStarted", "ClientSecretAdded", "SourceSecretUpdated", "ClientSecretSwitched", "RotationCompleted"]
    {
        wait_event(&env, reason).await;
    }
    // The same trigger value again does nothing.
    trigger(&env, "demand", "2026-12-01").await;
    pause(Duration::from_secs(2)).await;
    assert_eq!(env.ims.requests_to(EndpointKind::ManagementAdd, &r.client).len(), 1);
    let metrics = env.operator.as_ref().expect("operator").metrics().await;
    assert!(metrics.contains(r#"adobe_credential_client_secret_rotations_total{outcome="completed"} 1"#), "{metrics}");
    assert!(metrics.contains("adobe_credential_client_secret_age_seconds{"), "{metrics}");
    assert_no_leaks(&mut env, &r.client).await;
    // Besides the rotation's own requests: the management token of the first look.
    env.assert_no_mint_loop(&[(&r.client, ims + 1)]);
}

/// On schedule: a secret older than `every` is rotated without being asked, and the next
/// rotation is scheduled `every` later.
#[tokio::test]
async fn scheduled_rotation_when_the_secret_is_older_than_every() {
    let mut env = TestEnv::with_flags("rot-sched", &ROTATION_FLAGS).await;
    let (r, cred) = rotating(&mut env, "sched", "0s", Some("90d")).await;
    let uuid = env.ims.client_secret_uuid(&r.client, &r.original).expect("uuid");
    let created = SystemTime::now() - Duration::from_secs(100 * 86_400);
    env.ims.set_client_secret_created_at(&r.client, &uuid, created).expect("backdate");
    let watch = TargetWatch::start(&env, &r.target());
    let since = SystemTime::now();
    env.create(&cred).await;
    let (_, new_uuid) = wait_completed(&env, &r).await;
    let (status, _) = rotation_of(&env, "sched").await.expect("status");
    let next = status.next_rotation_time.expect("scheduled").0;
    let in_90_days = jiff::Timestamp::now() + jiff::SignedDuration::from_hours(90 * 24);
    assert!(next.duration_since(in_90_days).abs() < jiff::SignedDuration::from_mins(2), "{next}");
    assert_eq!(status.current_secret_uuid.as_deref(), Some(new_uuid.as_str()));
    let started = wait_event(&env, "RotationStarted").await;
    assert!(started.note.as_deref().is_some_and(|n| n.contains("(scheduled)")), "{:?}", started.note);
    assert_no_failed_workload_requests(&env, &r.client);
    watch.assert_valid_throughout(&env, &r.client);
    let (ims, ..) = requests_since(&env, &r.client, since);
    assert_no_leaks(&mut env, &r.client).await;
    env.assert_no_mint_loop(&[(&r.client, ims)]);
}

/// Two secrets and the other one is not ours: refused with its reason, nothing added, the token
/// fine; allowing the deletion of the other one lets the rotation through.
#[tokio::test]
async fn two_secrets_are_refused_unless_deleting_the_other_is_allowed() {
    let mut env = TestEnv::with_flags("rot-two", &ROTATION_FLAGS).await;
    let (r, cred) = rotating(&mut env, "two", "0s", None).await;
    env.ims.add_adobe_client_secret(&r.client, "p8e-two-someone-elses").expect("second secret");
    env.seeded_secrets.push("p8e-two-someone-elses".into());
    env.create(&cred).await;
    wait_observed(&env, &r).await;
    trigger(&env, "two", "now").await;
    let (_, condition) = wait_rotation_reason(&env, "two", "TwoClientSecretsExist").await;
    assert_eq!(condition.status, "False");
    assert!(condition.message.contains("deleteOtherSecret"), "{}", condition.message);
    let foreign = env.ims.client_secret_uuid(&r.client, "p8e-two-someone-elses").expect("uuid");
    assert!(condition.message.contains(&foreign), "the other secret is named: {}", condition.message);
    assert!(env.ims.requests_to(EndpointKind::ManagementAdd, &r.client).is_empty(), "nothing added");
    env.wait_ready("two", "True", "TokenMinted").await;
    wait_event(&env, "TwoClientSecretsExist").await;

    let patch = serde_json::json!({ "spec": { "oauthServerToServer": { "clientSecretRotation": { "deleteOtherSecret": true } } } });
    env.credentials().patch("two", &PatchParams::default(), &Patch::Merge(&patch)).await.expect("allow");
    wait_completed(&env, &r).await;
    let deletes = env.ims.requests_to(EndpointKind::ManagementDelete, &r.client);
    assert_eq!(deletes.len(), 2, "the other secret, then the original");
    assert_eq!(deletes[0].secret_uuid.as_deref(), Some(foreign.as_str()));
    wait_event(&env, "OtherSecretDeleted").await;
    assert_no_failed_workload_requests(&env, &r.client);
    assert_no_leaks(&mut env, &r.client).await;
    env.assert_no_mint_loop(&[(&r.client, 6)]);
}

/// With `deleteOtherSecret`, someone adds secret B in the console and puts it into the source
/// Secret after the operator's first look. B is the secret in use: the operator identifies it
/// from what the source holds now (not from the uuid it remembered) and never deletes it; the
/// other one, A, was used within the grace period, so the rotation waits rather than delete it.
#[tokio::test]
async fn the_secret_in_use_is_never_deleted_as_the_other_one() {
    let mut env = TestEnv::with_flags("rot-in-use", &ROTATION_FLAGS).await;
    let (r, mut cred) = rotating(&mut env, "inuse", "1h", None).await;
    if let Some(rotation) = cred.spec.oauth_server_to_server.as_mut().and_then(|f| f.client_secret_rotation.as_mut()) {
        rotation.delete_other_secret = true;
    }
    env.create(&cred).await;
    env.wait_ready("inuse", "True", "TokenMinted").await;
    wait_observed(&env, &r).await;
    let a = env.ims.client_secret_uuid(&r.client, &r.original).expect("A");

    // A person's own rotation: B added in the console, then put first into the source Secret.
    let secret_b = "p8e-inuse-added-by-a-person";
    env.ims.add_adobe_client_secret(&r.client, secret_b).expect("B");
    let b = env.ims.client_secret_uuid(&r.client, secret_b).expect("B");
    let pairs = [("client_secret", secret_b), (SECONDARY_KEY, r.original.as_str())];
    env.put_secret(&r.source, &[("client_id", r.client.as_str())], &pairs).await;
    eventually("a token minted with B in the target", WAIT, || async {
        let token = key(&env.target(&r.target()).await?, "access_token")?;
        (issuing_secret(&env, &r.client, &token).as_deref() == Some(b.as_str())).then_some(())
    })
    .await;

    let since = SystemTime::now();
    trigger(&env, "inuse", "go").await;
    let deleted = |env: &TestEnv| -> Vec<String> {
        let deletes = env.ims.requests_to(EndpointKind::ManagementDelete, &r.client);
        deletes.into_iter().filter_map(|d| d.secret_uuid).collect()
    };
    eventually("the rotation to hold, or a secret deleted", WAIT, || async {
        let held = rotation_of(&env, "inuse").await.is_some_and(|(_, c)| c.reason == "OtherSecretStillInUse");
        (held || !deleted(&env).is_empty()).then_some(())
    })
    .await;
    assert!(!deleted(&env).contains(&b), "B, the secret in use, was deleted");
    let (status, condition) = wait_rotation_reason(&env, "inuse", "OtherSecretStillInUse").await;
    assert_eq!(condition.status, "False");
    assert_eq!(status.current_secret_uuid.as_deref(), Some(b.as_str()), "B identified as the secret in use");
    assert!(
        condition.message.contains(&format!("holds client secret {b}; the other one, {a}")),
        "{}",
        condition.message
    );
    assert_eq!(wait_event(&env, "OtherSecretStillInUse").await.type_.as_deref(), Some("Warning"));
    wait_event(&env, "ClientSecretInUseChanged").await;

    let (ims, list, add, delete) = requests_since(&env, &r.client, since);
    eprintln!("secret in use: after the trigger {ims} IMS token requests, {list} list, {add} add, {delete} delete");
    assert_eq!((add, delete), (0, 0), "nothing added, nothing deleted");
    assert!(deleted(&env).is_empty(), "no delete call at all");
    let left: Vec<String> = env.ims.client_secrets(&r.client).into_iter().map(|s| s.uuid).collect();
    assert!(left.contains(&a) && left.contains(&b), "both secrets kept: {left:?}");
    assert_eq!(source_key(&env, &r, "client_secret").await.as_deref(), Some(secret_b), "the source untouched");
    let token = key(&env.target(&r.target()).await.expect("target"), "access_token").expect("token");
    assert_eq!(issuing_secret(&env, &r.client, &token).as_deref(), Some(b.as_str()), "the target holds B's token");
    assert_no_failed_workload_requests(&env, &r.client);
    env.assert_status_messages_are_human().await;
    assert_no_leaks(&mut env, &r.client).await;
    // The first look's management token, B's workload token and B's management token.
    env.assert_no_mint_loop(&[(&r.client, 3)]);
}

/// 403: the project lacks the I/O Management API. 404: wrong IDs. Each says so; Ready stays.
#[tokio::test]
async fn management_api_refusals_give_their_reasons() {
    let mut env = TestEnv::with_flags("rot-refused", &ROTATION_FLAGS).await;
    let (r403, cred403) = rotating(&mut env, "forbidden", "0s", None).await;
    env.ims.set_management_api_in_project(&r403.client, false).expect("managed");
    env.create(&cred403).await;
    let (_, condition) = wait_rotation_reason(&env, "forbidden", "ManagementApiNotInProject").await;
    assert_eq!(condition.status, "False");
    assert!(
        condition.message.contains("add the I/O Management API to the credential's project"),
        "{}",
        condition.message
    );
    env.wait_ready("forbidden", "True", "TokenMinted").await;

    let (r404, mut cred404) = rotating(&mut env, "unknown", "0s", None).await;
    if let Some(rotation) = cred404.spec.oauth_server_to_server.as_mut().and_then(|f| f.client_secret_rotation.as_mut())
    {
        rotation.credential_id = "999".into();
    }
    env.create(&cred404).await;
    let (_, condition) = wait_rotation_reason(&env, "unknown", "ManagementCredentialNotFound").await;
    assert!(condition.message.contains("no credential 999 in organization 4242"), "{}", condition.message);
    assert!(condition.message.contains("Developer Console URL"), "{}", condition.message);
    env.wait_ready("unknown", "True", "TokenMinted").await;
    wait_event(&env, "ManagementApiNotInProject").await;
    wait_event(&env, "ManagementCredentialNotFound").await;
    for r in [&r403, &r404] {
        assert!(env.ims.requests_to(EndpointKind::ManagementAdd, &r.client).is_empty());
        assert_eq!(env.ims.client_secrets(&r.client).len(), 1);
    }
    env.assert_status_messages_are_human().await;
    assert_no_leaks(&mut env, &r403.client).await;
    assert_no_leaks(&mut env, &r404.client).await;
    env.assert_no_mint_loop(&[(&r403.client, 1), (&r404.client, 1)]);
}

/// A `credentialId` naming another project's credential that the management token can reach
/// (organization-wide rights): its list names another client ID, so the rotation is refused
/// with `CredentialMismatch` before any add or delete, at the first look and again when
/// triggered; the other credential's secrets and this credential's token stay as they were.
#[tokio::test]
async fn a_credential_id_of_another_client_is_refused_before_any_change() {
    let mut env = TestEnv::with_flags("rot-mismatch", &ROTATION_FLAGS).await;
    let (r, mut cred) = rotating(&mut env, "mismatch", "0s", None).await;
    let ours = console_client(&r.client, &r.original, CREDENTIAL).with_organization_wide_management();
    env.ims.register_adobe_client(ours).expect("organization-wide rights");
    let (other_client, other_secret, other_credential) = ("mismatch-other-client", "p8e-mismatch-other", "7770002");
    env.ims.register_adobe_client(console_client(other_client, other_secret, other_credential)).expect("other");
    env.seeded_secrets.push(other_secret.into());
    let other_before = env.ims.client_secrets(other_client);
    if let Some(rotation) = cred.spec.oauth_server_to_server.as_mut().and_then(|f| f.client_secret_rotation.as_mut()) {
        rotation.credential_id = other_credential.into();
    }
    let since = SystemTime::now();
    env.create(&cred).await;
    env.wait_ready("mismatch", "True", "TokenMinted").await;
    let token_before = key(&env.target(&r.target()).await.expect("target"), "access_token");

    let (status, condition) = wait_rotation_reason(&env, "mismatch", "CredentialMismatch").await;
    assert_eq!(condition.status, "False");
    for part in [other_client, r.client.as_str(), "credentialId", "nothing was added or deleted"] {
        assert!(condition.message.contains(part), "{part}: {}", condition.message);
    }
    assert_eq!(status.current_secret_uuid, None, "the other credential's secret is not taken for ours");
    assert_eq!(wait_event(&env, "CredentialMismatch").await.type_.as_deref(), Some("Warning"));
    // A trigger lifts the backoff: the list is read again and refused again.
    let lists = env.ims.requests_to(EndpointKind::ManagementList, &r.client).len();
    trigger(&env, "mismatch", "go").await;
    eventually("the list read again after the trigger", WAIT, || async {
        (env.ims.requests_to(EndpointKind::ManagementList, &r.client).len() > lists).then_some(())
    })
    .await;
    wait_rotation_reason(&env, "mismatch", "CredentialMismatch").await;

    let (ims, list, add, delete) = requests_since(&env, &r.client, since);
    eprintln!("credential mismatch: {ims} IMS token requests, {list} list, {add} add, {delete} delete");
    assert!(list >= 2, "listed at the first look and after the trigger");
    assert_eq!((add, delete), (0, 0), "nothing added or deleted anywhere");
    assert_eq!(env.ims.client_secrets(other_client), other_before, "the other credential is untouched");
    assert!(env.ims.created_client_secrets(other_client).is_empty());
    assert_eq!(env.ims.client_secrets(&r.client).len(), 1);
    assert_eq!(persisted_step(&env, "mismatch").await, None, "nothing persisted about a credential not ours");
    assert_eq!(key(&env.target(&r.target()).await.expect("target"), "access_token"), token_before, "token kept");
    env.assert_status_messages_are_human().await;
    assert_no_leaks(&mut env, &r.client).await;
    assert_no_leaks(&mut env, other_client).await;
    // The workload's token and one management token.
    env.assert_no_mint_loop(&[(&r.client, 1)]);
}

/// A new secret IMS never accepts is deleted after the verification window; the old one stays
/// in the source Secret and at Adobe, and the token path never notices.
#[tokio::test]
async fn verification_failure_deletes_the_new_secret_and_keeps_the_old() {
    let mut env = TestEnv::with_flags("rot-verify", &ROTATION_FLAGS).await;
    let (r, cred) = rotating(&mut env, "verify", "0s", None).await;
    env.ims.set_secret_activation_delay(&r.client, Duration::from_secs(3600)).expect("managed");
    env.create(&cred).await;
    wait_observed(&env, &r).await;
    let token_before = key(&env.target(&r.target()).await.expect("target"), "access_token");
    trigger(&env, "verify", "try").await;
    let (status, condition) = wait_rotation_reason(&env, "verify", "NewSecretVerificationFailed").await;
    assert_eq!(condition.status, "False");
    assert!(condition.message.contains("within 5s"), "{}", condition.message);
    assert_eq!(status.step, "Idle");
    let secrets = env.ims.client_secrets(&r.client);
    assert_eq!(secrets.len(), 1, "the new secret is deleted");
    assert_eq!(
        Some(&secrets[0].uuid),
        env.ims.client_secret_uuid(&r.client, &r.original).as_ref(),
        "the old one stays"
    );
    assert_eq!(source_key(&env, &r, "client_secret").await.as_deref(), Some(r.original.as_str()));
    assert_eq!(source_key(&env, &r, SECONDARY_KEY).await, None);
    assert_eq!(key(&env.target(&r.target()).await.expect("target"), "access_token"), token_before);
    let verifications = env.ims.requests_to(EndpointKind::ClientCredentials, &r.client);
    assert!(verifications.iter().filter(|q| q.outcome != fake_token_server::Outcome::Issued).count() >= 2, "retried");
    wait_event(&env, "NewSecretDeleted").await;
    let metrics = env.operator.as_ref().expect("operator").metrics().await;
    assert!(metrics.contains(r#"adobe_credential_client_secret_rotations_total{outcome="abandoned"} 1"#), "{metrics}");
    assert_no_failed_workload_requests(&env, &r.client);
    assert_no_leaks(&mut env, &r.client).await;
    env.assert_no_mint_loop(&[(&r.client, 1)]);
}

/// A throttled management call waits for Retry-After, then the rotation goes on.
#[tokio::test]
async fn throttled_management_api_waits_for_retry_after() {
    let mut env = TestEnv::with_flags("rot-429", &ROTATION_FLAGS).await;
    let (r, cred) = rotating(&mut env, "throttled", "0s", None).await;
    env.create(&cred).await;
    wait_observed(&env, &r).await;
    env.ims.inject_fault(
        Fault::too_many_requests(RetryAfter::Seconds(2))
            .for_endpoint(EndpointKind::ManagementAdd)
            .for_client(&r.client)
            .times(1),
    );
    trigger(&env, "throttled", "go").await;
    wait_rotation_reason(&env, "throttled", "ManagementApiThrottled").await;
    wait_completed(&env, &r).await;
    let adds = env.ims.requests_to(EndpointKind::ManagementAdd, &r.client);
    assert_eq!(adds.len(), 2, "the throttled add and the one after it");
    let waited = adds[1].received_at.duration_since(adds[0].received_at).expect("ordered");
    assert!(waited >= Duration::from_secs(2), "retried after {waited:?}");
    assert_eq!(env.ims.client_secrets(&r.client).len(), 1);
    assert_no_failed_workload_requests(&env, &r.client);
    assert_no_leaks(&mut env, &r.client).await;
    env.assert_no_mint_loop(&[(&r.client, 4)]);
}

/// Something else still uses the previous secret after the switch: it is kept (a Warning), and
/// deleted once unused for the grace period.
#[tokio::test]
async fn an_old_secret_still_in_use_is_kept_until_unused_for_the_grace_period() {
    let mut env = TestEnv::with_flags("rot-hold", &ROTATION_FLAGS).await;
    // Longer than the slack within which a use after the switch still counts as the operator's.
    let (r, cred) = rotating(&mut env, "hold", "8s", None).await;
    env.create(&cred).await;
    wait_observed(&env, &r).await;
    trigger(&env, "hold", "go").await;
    wait_rotation(&env, "hold", "the switch", |s, _| s.step == "WaitingForGrace").await;
    // Another application with a copy of the old secret keeps minting with it.
    let other_app = other_app_minting(&env, &r.client, &r.original);
    let (_, condition) = wait_rotation_reason(&env, "hold", "OldSecretStillInUse").await;
    assert_eq!(condition.status, "False");
    assert_eq!(env.ims.client_secrets(&r.client).len(), 2, "kept while in use");
    other_app.abort();
    let stopped = Instant::now();
    wait_completed(&env, &r).await;
    assert!(stopped.elapsed() >= Duration::from_secs(7), "deleted only after a grace period unused");
    let warnings: Vec<_> =
        env.events().await.into_iter().filter(|e| e.reason.as_deref() == Some("OldSecretStillInUse")).collect();
    assert_eq!(warnings.len(), 1, "one warning while holding");
    assert_no_failed_workload_requests(&env, &r.client);
    assert_no_leaks(&mut env, &r.client).await;
}

fn other_app_minting(env: &TestEnv, client: &str, secret: &str) -> tokio::task::JoinHandle<()> {
    let (url, client, secret) = (format!("{}/ims/token/v3", env.ims.url()), client.to_owned(), secret.to_owned());
    let ca = std::fs::read(env.ca_file()).expect("ca");
    tokio::spawn(async move {
        let cert = reqwest::Certificate::from_pem(&ca).expect("ca");
        let http = reqwest::Client::builder().add_root_certificate(cert).build().expect("client");
        loop {
            let form = [
                ("grant_type", "client_credentials"),
                ("client_id", &client),
                ("client_secret", &secret),
                ("scope", "openid"),
            ];
            let _ = http.post(&url).form(&form).send().await;
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    })
}

/// Without the operator's switch a rotation block is refused with a reason that says how to
/// enable it; the token is minted as usual.
#[tokio::test]
async fn rotation_needs_the_operators_switch() {
    let mut env = TestEnv::new("rot-off").await;
    let (r, cred) = rotating(&mut env, "off", "0s", None).await;
    env.create(&cred).await;
    env.wait_ready("off", "True", "TokenMinted").await;
    let (_, condition) = wait_rotation_reason(&env, "off", "ClientSecretRotationDisabled").await;
    assert!(condition.message.contains("--client-secret-rotation"), "{}", condition.message);
    assert!(env.ims.requests_to(EndpointKind::ManagementList, &r.client).is_empty());
    assert_no_leaks(&mut env, &r.client).await;
    env.assert_no_mint_loop(&[]);
}

/// The API server refuses a rotation block without a secondary key or with console IDs that are
/// not numbers.
#[tokio::test]
async fn api_server_rejects_invalid_rotation_blocks() {
    let mut env = TestEnv::new("rot-cel").await;
    let (_, cred) = rotating(&mut env, "cel", "0s", None).await;
    let mut no_secondary = cred.clone();
    no_secondary.metadata.name = Some("no-secondary".into());
    if let Some(flow) = no_secondary.spec.oauth_server_to_server.as_mut() {
        flow.client_secret_ref.secondary_client_secret_key = None;
    }
    let mut same_key = cred.clone();
    same_key.metadata.name = Some("same-key".into());
    if let Some(flow) = same_key.spec.oauth_server_to_server.as_mut() {
        flow.client_secret_ref.secondary_client_secret_key = Some("client_secret".into());
    }
    let mut adobe_org = cred.clone();
    adobe_org.metadata.name = Some("adobe-org".into());
    if let Some(rotation) =
        adobe_org.spec.oauth_server_to_server.as_mut().and_then(|f| f.client_secret_rotation.as_mut())
    {
        rotation.org_id = "ABCD@AdobeOrg".into();
    }
    let mut bad_every = cred.clone();
    bad_every.metadata.name = Some("bad-every".into());
    if let Some(rotation) =
        bad_every.spec.oauth_server_to_server.as_mut().and_then(|f| f.client_secret_rotation.as_mut())
    {
        rotation.every = Some("quarterly".into());
    }
    for (cred, expected) in [
        (no_secondary, "needs clientSecretRef.secondaryClientSecretKey"),
        (same_key, "needs clientSecretRef.secondaryClientSecretKey"),
        (adobe_org, "should match"),
        (bad_every, "should match"),
    ] {
        let err = env.credentials().create(&PostParams::default(), &cred).await.expect_err("rejected");
        assert!(err.to_string().contains(expected), "{err}");
    }
    env.assert_no_mint_loop(&[]);
}

/// An immutable source Secret cannot take the new secret: refused before anything changes at
/// Adobe.
#[tokio::test]
async fn an_immutable_source_secret_is_refused_before_adobe_is_touched() {
    let mut env = TestEnv::with_flags("rot-immutable", &ROTATION_FLAGS).await;
    let (r, cred) = rotating(&mut env, "frozen", "0s", None).await;
    let freeze = serde_json::json!({ "immutable": true });
    env.secrets().patch(&r.source, &PatchParams::default(), &Patch::Merge(&freeze)).await.expect("freeze");
    env.create(&cred).await;
    wait_observed(&env, &r).await;
    trigger(&env, "frozen", "go").await;
    let (_, condition) = wait_rotation_reason(&env, "frozen", "SourceSecretImmutable").await;
    assert!(condition.message.contains(&r.source), "{}", condition.message);
    assert!(env.ims.requests_to(EndpointKind::ManagementAdd, &r.client).is_empty(), "nothing added");
    assert_no_leaks(&mut env, &r.client).await;
    env.assert_no_mint_loop(&[(&r.client, 1)]);
}

/// The new secret deleted in the console during the grace period: the previous one is kept (the
/// token path falls back to it through the secondary key), and the status says why.
#[tokio::test]
async fn a_new_secret_deleted_during_the_grace_period_keeps_the_old_one() {
    let mut env = TestEnv::with_flags("rot-vanished", &ROTATION_FLAGS).await;
    let (r, cred) = rotating(&mut env, "vanished", "3s", None).await;
    env.create(&cred).await;
    wait_observed(&env, &r).await;
    trigger(&env, "vanished", "go").await;
    wait_rotation(&env, "vanished", "the switch", |s, _| s.step == "WaitingForGrace").await;
    let new_value = source_key(&env, &r, "client_secret").await.expect("new secret");
    env.ims.remove_adobe_client_secret(&r.client, &new_value).expect("deleted in the console");
    let (_, condition) = wait_rotation_reason(&env, "vanished", "NewSecretMissing").await;
    assert_eq!(condition.status, "False");
    let left = env.ims.client_secrets(&r.client);
    assert_eq!(left.len(), 1);
    assert_eq!(Some(&left[0].uuid), env.ims.client_secret_uuid(&r.client, &r.original).as_ref(), "the old one stays");
    assert_no_leaks(&mut env, &r.client).await;
}

/// Deleting a credential in the middle of a rotation (the new secret added at Adobe, not yet
/// accepted by IMS, so not yet in the source Secret) winds the rotation down before the
/// credential goes: its finalizer holds it until the new secret, which nobody would ever hold, is
/// deleted at Adobe. One add, one delete (of that secret), and the original secret is the only
/// one left.
#[tokio::test]
async fn deleting_a_credential_mid_rotation_leaves_no_secret_nobody_holds() {
    let flags = ["--client-secret-rotation", "--client-secret-verify-timeout", "600s"];
    let mut env = TestEnv::with_flags("rot-delete", &flags).await;
    let (r, cred) = rotating(&mut env, "gone", "0s", None).await;
    env.ims.set_secret_activation_delay(&r.client, Duration::from_secs(3600)).expect("managed");
    env.create(&cred).await;
    wait_observed(&env, &r).await;
    let original = env.ims.client_secret_uuid(&r.client, &r.original).expect("uuid");

    let since = SystemTime::now();
    trigger(&env, "gone", "now").await;
    let (verifying, _) =
        wait_rotation(&env, "gone", "the new secret being verified", |s, _| s.step == "Verifying").await;
    let new_uuid = verifying.new_secret_uuid.expect("new secret");
    delete_and_wait_gone(&env, "gone").await;

    let secrets: Vec<String> = env.ims.client_secrets(&r.client).into_iter().map(|s| s.uuid).collect();
    assert_eq!(secrets, [original], "only the original secret is left at Adobe");
    let (_, _, add, delete) = requests_since(&env, &r.client, since);
    assert_eq!((add, delete), (1, 1), "the new secret added once and deleted once");
    let deleted: Vec<_> = env.ims.requests_to(EndpointKind::ManagementDelete, &r.client);
    assert!(deleted.iter().all(|d| d.path.ends_with(&new_uuid)), "only the new secret was deleted");
    assert_eq!(source_key(&env, &r, "client_secret").await.as_deref(), Some(r.original.as_str()));
    assert_no_failed_workload_requests(&env, &r.client);
}

/// Deleting a credential whose new secret is already in the source Secret finishes the rotation
/// before the credential goes: after the grace period, the previous secret is deleted at Adobe
/// (nothing used it), once; the new one, in the source Secret, stays.
#[tokio::test]
async fn deleting_a_credential_during_the_grace_period_still_deletes_the_previous_secret() {
    let mut env = TestEnv::with_flags("rot-delete-grace", &ROTATION_FLAGS).await;
    let (r, cred) = rotating(&mut env, "grace", "4s", None).await;
    env.create(&cred).await;
    wait_observed(&env, &r).await;
    let since = SystemTime::now();
    trigger(&env, "grace", "now").await;
    wait_rotation(&env, "grace", "the grace period", |s, _| s.step == "WaitingForGrace").await;
    let original = env.ims.client_secret_uuid(&r.client, &r.original).expect("uuid");
    delete_and_wait_gone(&env, "grace").await;

    let in_source = source_key(&env, &r, "client_secret").await.expect("the new secret in the source Secret");
    let new_uuid = env.ims.client_secret_uuid(&r.client, &in_source).expect("the new secret at Adobe");
    assert_ne!(new_uuid, original);

    let secrets: Vec<String> = env.ims.client_secrets(&r.client).into_iter().map(|s| s.uuid).collect();
    assert_eq!(secrets, [new_uuid], "the previous secret is deleted, the one in the source Secret stays");
    let (_, _, add, delete) = requests_since(&env, &r.client, since);
    assert_eq!((add, delete), (1, 1), "one add, and the previous secret deleted once");
    assert_no_failed_workload_requests(&env, &r.client);
}

/// Deletes credential `name` and waits until the API server no longer has it.
async fn delete_and_wait_gone(env: &TestEnv, name: &str) {
    env.credentials().delete(name, &kube::api::DeleteParams::default()).await.expect("delete");
    eventually(&format!("{name} to be gone"), WAIT, || async {
        env.credentials().get_opt(name).await.expect("get").is_none().then_some(())
    })
    .await;
}
