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
    let cred = env.web_app_credential("wa").await;
    env.ims.set_adobe_token_lifetime("wa-client", Duration::from_secs(6)).expect("lifetime");
    env.expect_lifetime("wa-client", Duration::from_secs(6));
    env.create(&cred).await;
    env.wait_ready("wa", "True", "TokenMinted").await;
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
    let cred = env.web_app_credential("rv").await;
    env.ims.set_adobe_token_lifetime("rv-client", Duration::from_secs(6)).expect("lifetime");
    env.expect_lifetime("rv-client", Duration::from_secs(6));
    env.create(&cred).await;
    env.wait_ready("rv", "True", "TokenMinted").await;
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
    let cred = env.web_app_credential("kl").await;
    env.ims.set_adobe_token_lifetime("kl-client", Duration::from_secs(6)).expect("lifetime");
    env.expect_lifetime("kl-client", Duration::from_secs(6));
    env.create(&cred).await;
    env.wait_ready("kl", "True", "TokenMinted").await;
    // The renewal's refresh is processed (the old token dies, a new one is issued) and its
    // answer held, so the operator dies before it can save anything.
    env.ims.inject_fault(
        fake_token_server::Fault::hang_after_processing()
            .for_endpoint(EndpointKind::UserRefresh)
            .for_client("kl-client")
            .times(1),
    );
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
