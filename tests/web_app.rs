//! Adobe OAuth Web App (user authentication): the initial refresh token from the user's Secret
//! starts a chain that the operator keeps in its refresh state, refresh after refresh, across
//! restarts, until the user revokes consent.

mod common;

use std::time::Duration;

use common::{TestEnv, WAIT, key};
use fake_token_server::{EndpointKind, Outcome};

const USER: &str = "test-user@AdobeID";

fn refresh_outcomes(env: &TestEnv, client_id: &str) -> Vec<Outcome> {
    env.ims.requests_to(EndpointKind::UserRefresh, client_id).into_iter().map(|r| r.outcome).collect()
}

#[tokio::test]
async fn chain_stays_intact_across_refreshes_and_a_restart() {
    let mut env = TestEnv::new("webapp").await;
    ready_with_lifetime(&mut env, "wa", 6).await;
    env.restart_operator(&["wa"]).await;
    // A valid token is adopted after the restart; the revision does not move with the chain.
    assert_eq!(env.ims.mint_count("wa-client"), 2, "the code exchange and one refresh");
    // Two renewals, the second one by the operator started after the restart.
    env.ims.wait_for_mints("wa-client", 4, WAIT).await.expect("renewals");
    // A refresh with any but the latest refresh token would be refused (rotation).
    let outcomes = refresh_outcomes(&env, "wa-client");
    assert!(outcomes.iter().all(|o| *o == Outcome::Issued), "{outcomes:?}");
    assert_eq!(env.ims.live_refresh_tokens("wa-client"), 1);
    assert_eq!(env.ims.refresh_tokens_issued("wa-client", USER), 1 + outcomes.len());

    let target = env.target("wa-token").await.expect("target");
    assert!(key(&target, "refresh_token").is_none(), "workloads never see the refresh token");
    let state = env.target("wa-refresh-state").await.expect("refresh state");
    env.seeded_secrets.push(key(&state, "refresh_token").expect("persisted refresh token"));
    env.wait_ready("wa", "True", "TokenMinted").await;
    env.assert_no_leaks(&["wa-client"]).await;
    // The code exchange is the test's browser, not the operator.
    env.assert_no_mint_loop(&[("wa-client", 1)]);
}

#[tokio::test]
async fn revoked_consent_requires_reauthorization_and_keeps_the_last_token() {
    let mut env = TestEnv::new("webapp-revoke").await;
    ready_with_lifetime(&mut env, "rv", 6).await;
    let before = key(&env.target("rv-token").await.expect("target"), "access_token").expect("token");
    assert_eq!(env.ims.revoke_user_consent("rv-client", USER), 1);
    // A dead chain cannot renew: Ready is False at once, while the last access token is still
    // valid, and the message says what to run.
    let failed = env.wait_ready("rv", "False", "ReauthorizationRequired").await;
    let message = failed.status.expect("status").conditions[0].message.clone();
    assert!(message.contains("Secret rv-user, key refresh_token"), "{message}");
    let login = format!("`adobe-credential-operator login rv -n {} --apply`", env.ns());
    assert!(message.contains(&login), "{message}");
    assert!(message.contains("invalid_grant"), "{message}");
    let after = key(&env.target("rv-token").await.expect("target"), "access_token").expect("token kept");
    assert_eq!(before, after, "the last access token stays until it expires");
    env.assert_no_leaks(&["rv-client"]).await;
    env.assert_no_mint_loop(&[("rv-client", 1)]);
}

/// SIGKILL after IMS answered a refresh and before the operator saved the new refresh token:
/// that refresh token is lost, and the saved one died when it was used (rotation), so the chain
/// needs the user again. It cannot be less: the server invalidates the old token on use, whether
/// or not its answer arrives.
#[tokio::test]
async fn sigkill_between_a_refresh_response_and_its_save_loses_the_rotated_token() {
    let mut env = TestEnv::new("webapp-kill").await;
    ready_with_lifetime(&mut env, "kl", 6).await;
    // The renewal's refresh is processed (the old token dies, a new one is issued) and its
    // answer held, so the operator dies before it can save anything.
    lose_next_refresh_answer(&env, "kl-client");
    env.ims.wait_for_endpoint_arrivals(EndpointKind::UserRefresh, "kl-client", 2, WAIT).await.expect("renewal");
    env.kill_operator().await;
    env.ims.clear_faults();
    assert_eq!(env.ims.live_refresh_tokens("kl-client"), 1, "the rotated token lives only at IMS");
    env.start_operator().await;
    let failed = env.wait_ready("kl", "False", "ReauthorizationRequired").await;
    let message = failed.status.expect("status").conditions[0].message.clone();
    assert!(message.contains("Secret kl-user, key refresh_token"), "{message}");
    env.assert_no_leaks(&["kl-client"]).await;
    env.assert_no_mint_loop(&[("kl-client", 1)]);
}

/// A new client secret, and a second client secret key added for a rotation, refresh the same
/// chain: the chain belongs to the endpoint, the client ID, the scopes and the user's sign-in, not
/// to the client secret. Each edit is an input change (one refresh each), and every refresh is
/// made with the latest refresh token.
#[tokio::test]
async fn a_new_client_secret_keeps_the_users_chain() {
    let mut env = TestEnv::new("webapp-secret").await;
    let mut cred = env.web_app_credential("cs").await;
    env.create(&cred).await;
    env.wait_ready("cs", "True", "TokenMinted").await;
    let first = key(&env.target("cs-token").await.expect("target"), "access_token").expect("token");

    // The team adds a new client secret in the console and puts it into the Secret.
    env.ims.add_adobe_client_secret("cs-client", "p8e-cs-secret-2").expect("second secret");
    env.put_source("cs-client", "cs-client", "p8e-cs-secret-2").await;
    let second = new_access_token(&env, "cs-token", &first).await;
    // … then keeps the old one aside as a second key, as a rotation does.
    let both = [("client_secret", "p8e-cs-secret-2"), ("client_secret_2", "p8e-cs-secret")];
    env.put_secret("cs-client", &[("client_id", "cs-client")], &both).await;
    cred.spec.oauth_web_app.as_mut().expect("block").client_secret_ref.secondary_client_secret_key =
        Some("client_secret_2".into());
    let patch = serde_json::json!({ "spec": cred.spec });
    env.credentials()
        .patch("cs", &kube::api::PatchParams::default(), &kube::api::Patch::Merge(&patch))
        .await
        .expect("add the second key");
    new_access_token(&env, "cs-token", &second).await;

    env.wait_ready("cs", "True", "TokenMinted").await;
    let outcomes = refresh_outcomes(&env, "cs-client");
    assert_eq!(outcomes, [Outcome::Issued, Outcome::Issued, Outcome::Issued], "one refresh per input change");
    assert_eq!(env.ims.live_refresh_tokens("cs-client"), 1, "one chain, never restarted");
    assert!(!env.ready_reasons_seen("cs").contains(&"ReauthorizationRequired".to_owned()));
    env.assert_no_leaks(&["cs-client"]).await;
    env.assert_no_mint_loop(&[("cs-client", 3)]);
}

/// A refresh whose answer is lost (IMS rotated the refresh token, the operator's request timed
/// out) is the one unavoidable loss: the saved refresh token died when it was used. The operator
/// asks once with it, is refused, and says ReauthorizationRequired; then it asks no more for that
/// chain (not at the token's expiry, not after a restart) until a new sign-in, which starts at
/// once.
#[tokio::test]
async fn a_lost_refresh_answer_asks_for_reauthorization_once() {
    let mut env = TestEnv::new("webapp-lost").await;
    ready_with_lifetime(&mut env, "lo", 30).await;
    // The renewal is processed at IMS and its answer never arrives (the operator times out).
    lose_next_refresh_answer(&env, "lo-client");
    env.wait_ready("lo", "False", "ReauthorizationRequired").await;
    env.wait_ready("lo", "False", "TokenExpired").await;
    env.kill_operator().await;
    env.start_operator().await;
    let operator = env.operator.as_ref().expect("operator");
    common::eventually("the restarted operator to reconcile", WAIT, || async {
        (operator.reconciles().await >= 1).then_some(())
    })
    .await;
    let refused = |env: &TestEnv| {
        let outcomes = refresh_outcomes(env, "lo-client");
        outcomes.iter().filter(|o| matches!(o, Outcome::Rejected(code) if code == "invalid_grant")).count()
    };
    assert_eq!(refused(&env), 1, "the dead chain was tried once");
    let expired = env.wait_ready("lo", "False", "TokenExpired").await;
    let message = &expired.status.expect("status").conditions[0].message;
    assert!(message.contains(&format!("login lo -n {} --apply", env.ns())), "{message}");

    // A new sign-in: a new chain at once.
    const REDIRECT: &str = "https://localhost:8443/callback";
    let fresh = env.sign_in_user("lo-client", "p8e-lo-secret", REDIRECT, "openid,AdobeID,offline_access").await;
    env.put_secret("lo-user", &[], &[("refresh_token", &fresh)]).await;
    env.wait_ready("lo", "True", "TokenMinted").await;
    assert_eq!(refused(&env), 1);
    env.assert_no_leaks(&["lo-client"]).await;
    // The code exchanges are the test's browser.
    env.assert_no_mint_loop(&[("lo-client", 3)]);
}

/// Waits until the target holds an access token other than `old`, and returns it.
async fn new_access_token(env: &TestEnv, target: &str, old: &str) -> String {
    common::eventually("a new access token in the target", WAIT, || async {
        key(&env.target(target).await?, "access_token").filter(|t| t != old)
    })
    .await
}

/// An `oauthWebApp` credential `name` whose tokens live `seconds`, Ready.
async fn ready_with_lifetime(env: &mut TestEnv, name: &str, seconds: u64) {
    let cred = env.web_app_credential(name).await;
    let client = format!("{name}-client");
    env.ims.set_adobe_token_lifetime(&client, Duration::from_secs(seconds)).expect("lifetime");
    env.expect_lifetime(&client, Duration::from_secs(seconds));
    env.create(&cred).await;
    env.wait_ready(name, "True", "TokenMinted").await;
}

/// The next refresh of `client` is processed at IMS (the refresh token used dies, a new one is
/// issued) and its answer never leaves.
fn lose_next_refresh_answer(env: &TestEnv, client: &str) {
    env.ims.inject_fault(
        fake_token_server::Fault::hang_after_processing()
            .for_endpoint(EndpointKind::UserRefresh)
            .for_client(client)
            .times(1),
    );
}
