//! SIGKILL at each step of a client secret rotation, then a restart: the procedure resumes from
//! its persisted step, no secret is lost, no third secret is created, the old one is deleted in
//! the end, and the target holds a valid token throughout. Each step is held at the fake (a hang
//! before or after the server acted) so that the kill lands exactly there.

mod common;
mod rotation_support;

use std::time::{Duration, Instant, SystemTime};

use common::{TestEnv, WAIT, eventually};
use fake_token_server::{EndpointKind, Fault, FaultKind, Outcome};
use rotation_support::*;

/// Waits until a request to `endpoint` for `client` is held by an injected hang.
async fn wait_held(env: &TestEnv, endpoint: EndpointKind, client: &str) {
    eventually(&format!("a held {endpoint:?} request"), WAIT, || async {
        let held = env
            .ims
            .requests_to(endpoint, client)
            .into_iter()
            .any(|r| matches!(r.fault, Some(FaultKind::Hang | FaultKind::HangAfterProcessing)));
        held.then_some(())
    })
    .await;
}

/// A rotating credential, created and looked at once (its management token cached), with a
/// watch on its target.
async fn ready_to_rotate(prefix: &str, name: &str, grace: &str) -> (TestEnv, Rotating, TargetWatch) {
    let mut env = TestEnv::with_flags(prefix, &ROTATION_FLAGS).await;
    let (r, cred) = rotating(&mut env, name, grace, None).await;
    env.create(&cred).await;
    env.wait_ready(name, "True", "TokenMinted").await;
    wait_observed(&env, &r).await;
    let watch = TargetWatch::start(&env, &r.target());
    (env, r, watch)
}

/// Kills the operator, starts another and waits for the rotation to complete; then checks what
/// every crash test promises. `created` is how many secrets the fake created in all (an orphan
/// of a lost add answer counts).
async fn restart_and_check(env: &mut TestEnv, r: &Rotating, watch: &TargetWatch, since: SystemTime, created: usize) {
    env.kill_operator().await;
    env.start_operator().await;
    let (new_value, new_uuid) = wait_completed(env, r).await;
    let secrets = env.ims.client_secrets(&r.client);
    assert_eq!(secrets.len(), 1, "exactly one secret left: the new one");
    assert_eq!(secrets[0].uuid, new_uuid);
    assert_eq!(env.ims.created_client_secrets(&r.client).len(), created, "secrets created in all");
    assert!(env.ims.created_client_secrets(&r.client).contains(&new_value), "the new secret is one the API created");
    assert_eq!(source_key(env, r, SECONDARY_KEY).await.as_deref(), Some(r.original.as_str()));
    // Adobe's limit of two was never hit: no add was refused.
    for add in env.ims.requests_to(EndpointKind::ManagementAdd, &r.client) {
        assert_ne!(add.outcome, Outcome::Rejected("too_many_secrets".into()), "a third secret was attempted");
    }
    assert_no_failed_workload_requests(env, &r.client);
    watch.assert_valid_throughout(env, &r.client);
    env.wait_ready(&r.name, "True", "TokenMinted").await;
    let (ims, ..) = requests_since(env, &r.client, since);
    assert_no_leaks(env, &r.client).await;
    // The first look's management token, the restarted operator's own, and the rotation's.
    env.assert_no_mint_loop(&[(&r.client, ims + 2)]);
}

#[tokio::test]
async fn sigkill_while_minting_the_management_token() {
    let mut env = TestEnv::with_flags("kill-mgmt-token", &ROTATION_FLAGS).await;
    let (r, mut cred) = rotating(&mut env, "mt", "0s", None).await;
    cred.metadata.annotations = Some([(TRIGGER.to_owned(), "at-once".to_owned())].into());
    env.ims.inject_fault(Fault::hang().for_scope("manage_client_secrets").for_client(&r.client).times(1));
    let since = SystemTime::now();
    env.create(&cred).await;
    wait_held(&env, EndpointKind::ClientCredentials, &r.client).await;
    assert!(env.ims.requests_to(EndpointKind::ManagementList, &r.client).is_empty());
    let watch = TargetWatch::start(&env, &r.target());
    restart_and_check(&mut env, &r, &watch, since, 1).await;
}

#[tokio::test]
async fn sigkill_while_listing_the_secrets() {
    let (mut env, r, watch) = ready_to_rotate("kill-list", "list", "0s").await;
    env.ims.inject_fault(Fault::hang().for_endpoint(EndpointKind::ManagementList).for_client(&r.client).times(1));
    let since = SystemTime::now();
    trigger(&env, "list", "go").await;
    wait_held(&env, EndpointKind::ManagementList, &r.client).await;
    restart_and_check(&mut env, &r, &watch, since, 1).await;
}

#[tokio::test]
async fn sigkill_before_the_add_is_processed() {
    let (mut env, r, watch) = ready_to_rotate("kill-add", "add", "0s").await;
    env.ims.inject_fault(Fault::hang().for_endpoint(EndpointKind::ManagementAdd).for_client(&r.client).times(1));
    let since = SystemTime::now();
    trigger(&env, "add", "go").await;
    wait_held(&env, EndpointKind::ManagementAdd, &r.client).await;
    assert_eq!(persisted_step(&env, "add").await.as_deref(), Some("adding"), "the intent is persisted first");
    assert_eq!(env.ims.client_secrets(&r.client).len(), 1, "nothing created");
    restart_and_check(&mut env, &r, &watch, since, 1).await;
}

/// The add happened at Adobe but its answer, the only copy of the new value, never arrived:
/// after the restart that secret is deleted as an orphan and the add redone.
#[tokio::test]
async fn sigkill_after_the_add_before_the_new_secret_is_persisted() {
    let (mut env, r, watch) = ready_to_rotate("kill-persist", "persist", "0s").await;
    env.ims.inject_fault(
        Fault::hang_after_processing().for_endpoint(EndpointKind::ManagementAdd).for_client(&r.client).times(1),
    );
    let since = SystemTime::now();
    trigger(&env, "persist", "go").await;
    wait_held(&env, EndpointKind::ManagementAdd, &r.client).await;
    assert_eq!(persisted_step(&env, "persist").await.as_deref(), Some("adding"));
    assert_eq!(env.ims.client_secrets(&r.client).len(), 2, "the lost add created a secret");
    let orphan = env.ims.client_secrets(&r.client)[1].uuid.clone();
    restart_and_check(&mut env, &r, &watch, since, 2).await;
    let deleted: Vec<_> = env
        .ims
        .requests_to(EndpointKind::ManagementDelete, &r.client)
        .into_iter()
        .filter_map(|d| d.secret_uuid)
        .collect();
    assert_eq!(deleted.first(), Some(&orphan), "the orphan went first");
    wait_event(&env, "OrphanedSecretDeleted").await;
}

#[tokio::test]
async fn sigkill_while_verifying_the_new_secret() {
    let (mut env, r, watch) = ready_to_rotate("kill-verify", "verify", "0s").await;
    // The management token of the first look is still valid: the next token request with the
    // management scopes is the verification with the new secret.
    env.ims.inject_fault(Fault::hang().for_scope("manage_client_secrets").for_client(&r.client).times(1));
    let since = SystemTime::now();
    trigger(&env, "verify", "go").await;
    wait_held(&env, EndpointKind::ClientCredentials, &r.client).await;
    let held = env.ims.requests_to(EndpointKind::ClientCredentials, &r.client).pop().expect("held");
    let added = env.ims.requests_to(EndpointKind::ManagementAdd, &r.client).pop().expect("added");
    assert!(held.received_at >= added.received_at, "held: the verification after the add");
    assert_eq!(persisted_step(&env, "verify").await.as_deref(), Some("verifying"));
    restart_and_check(&mut env, &r, &watch, since, 1).await;
}

/// The new secret is in the source Secret; the workload's token request with it is held.
#[tokio::test]
async fn sigkill_after_the_source_secret_is_written() {
    let (mut env, r, watch) = ready_to_rotate("kill-source", "source", "0s").await;
    env.ims.inject_fault(Fault::hang().for_scope("firefly_api").for_client(&r.client).times(1));
    let since = SystemTime::now();
    trigger(&env, "source", "go").await;
    wait_held(&env, EndpointKind::ClientCredentials, &r.client).await;
    assert_eq!(persisted_step(&env, "source").await.as_deref(), Some("sourceWritten"));
    assert_ne!(source_key(&env, &r, "client_secret").await.as_deref(), Some(r.original.as_str()));
    restart_and_check(&mut env, &r, &watch, since, 1).await;
}

#[tokio::test]
async fn sigkill_during_the_grace_period() {
    let (mut env, r, watch) = ready_to_rotate("kill-grace", "grace", "6s").await;
    let since = SystemTime::now();
    trigger(&env, "grace", "go").await;
    wait_rotation(&env, "grace", "the switch", |s, _| s.step == "WaitingForGrace").await;
    let switched = Instant::now();
    assert_eq!(env.ims.client_secrets(&r.client).len(), 2, "the old secret waits for the grace period");
    restart_and_check(&mut env, &r, &watch, since, 1).await;
    assert!(switched.elapsed() >= Duration::from_secs(5), "the restart did not cut the grace period short");
}

/// The old secret was deleted at Adobe but the answer never came back.
#[tokio::test]
async fn sigkill_while_deleting_the_old_secret() {
    let (mut env, r, watch) = ready_to_rotate("kill-delete", "delete", "0s").await;
    env.ims.inject_fault(
        Fault::hang_after_processing().for_endpoint(EndpointKind::ManagementDelete).for_client(&r.client).times(1),
    );
    let since = SystemTime::now();
    trigger(&env, "delete", "go").await;
    wait_held(&env, EndpointKind::ManagementDelete, &r.client).await;
    assert_eq!(persisted_step(&env, "delete").await.as_deref(), Some("switched"), "the deletion is not recorded yet");
    restart_and_check(&mut env, &r, &watch, since, 1).await;
    assert_eq!(env.ims.requests_to(EndpointKind::ManagementDelete, &r.client).len(), 1, "not deleted twice");
}
