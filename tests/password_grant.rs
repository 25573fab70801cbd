//! Akeneo PIM credentials: password grant first, refresh_token grant for renewals with the
//! refresh token persisted in operator-owned state, password again when it is rejected.

mod common;

use std::time::Duration;

use common::{TestEnv, WAIT, key};
use fake_token_server::EndpointKind;

fn grants(env: &TestEnv, client_id: &str) -> Vec<EndpointKind> {
    env.ims.requests_for(client_id).into_iter().map(|r| r.endpoint).collect()
}

#[tokio::test]
async fn password_first_then_refresh_tokens_kept_out_of_the_target() {
    let mut env = TestEnv::new("akeneo").await;
    env.ims.set_akeneo_access_token_lifetime(Duration::from_secs(6));
    let cred = env.akeneo_credential("pim").await;
    env.expect_lifetime("pim-client", Duration::from_secs(6));
    env.create(&cred).await;
    env.wait_ready("pim", "True", "TokenMinted").await;
    env.ims.wait_for_mints("pim-client", 3, WAIT).await.expect("two renewals");
    let kinds = grants(&env, "pim-client");
    assert_eq!(kinds[0], EndpointKind::AkeneoPassword);
    assert!(kinds[1..].iter().all(|k| *k == EndpointKind::AkeneoRefresh), "{kinds:?}");

    let target = env.target("pim-token").await.expect("target");
    assert!(key(&target, "refresh_token").is_none(), "workloads never see the refresh token");
    let state = env.target("pim-refresh-state").await.expect("operator-owned refresh state");
    let owner = state.metadata.owner_references.clone().unwrap_or_default();
    assert_eq!(owner.first().map(|o| o.kind.as_str()), Some("AdobeCredential"));
    let refresh_token = key(&state, "refresh_token").expect("refresh token persisted");
    env.seeded_secrets.push(refresh_token);
    env.assert_no_leaks(&["pim-client"]).await;
    env.assert_no_mint_loop(&[]);
}

#[tokio::test]
async fn restart_uses_the_persisted_refresh_token_and_mints_nothing_while_valid() {
    let mut env = TestEnv::new("akeneo-restart").await;
    env.ims.set_akeneo_access_token_lifetime(Duration::from_secs(8));
    let cred = env.akeneo_credential("rs").await;
    env.expect_lifetime("rs-client", Duration::from_secs(8));
    env.create(&cred).await;
    env.wait_ready("rs", "True", "TokenMinted").await;
    env.restart_operator(&["rs"]).await;
    assert_eq!(env.ims.mint_count("rs-client"), 1, "valid token adopted after restart");
    env.ims.wait_for_mints("rs-client", 2, WAIT).await.expect("renewal after restart");
    assert_eq!(grants(&env, "rs-client"), [EndpointKind::AkeneoPassword, EndpointKind::AkeneoRefresh]);
    env.assert_no_mint_loop(&[]);
}

#[tokio::test]
async fn rejected_refresh_token_falls_back_to_the_password() {
    let mut env = TestEnv::new("akeneo-revoke").await;
    env.ims.set_akeneo_access_token_lifetime(Duration::from_secs(6));
    let cred = env.akeneo_credential("rv").await;
    env.expect_lifetime("rv-client", Duration::from_secs(6));
    env.create(&cred).await;
    env.wait_ready("rv", "True", "TokenMinted").await;
    env.ims.revoke_akeneo_refresh_tokens();
    env.ims.wait_for_mints("rv-client", 2, WAIT).await.expect("renewal");
    let kinds = grants(&env, "rv-client");
    assert_eq!(kinds, [EndpointKind::AkeneoPassword, EndpointKind::AkeneoRefresh, EndpointKind::AkeneoPassword]);
    env.wait_ready("rv", "True", "TokenMinted").await;
    env.assert_no_mint_loop(&[]);
}

#[tokio::test]
async fn password_rotation_mints_with_the_new_password_at_once() {
    let mut env = TestEnv::new("akeneo-rotate").await;
    let cred = env.akeneo_credential("pw").await;
    env.create(&cred).await;
    env.wait_ready("pw", "True", "TokenMinted").await;
    env.ims.register_akeneo_user("pw-user", "pw-pw-2");
    env.put_secret("pw-user", &[], &[("password", "pw-pw-2")]).await;
    env.ims.wait_for_mints("pw-client", 2, WAIT).await.expect("mint after rotation");
    let kinds = grants(&env, "pw-client");
    assert_eq!(kinds.last(), Some(&EndpointKind::AkeneoPassword), "new inputs: the old refresh token is not used");
    env.assert_no_leaks(&["pw-client"]).await;
    // The rotation.
    env.assert_no_mint_loop(&[("pw-client", 1)]);
}

#[tokio::test]
async fn wrong_client_secret_and_wrong_password_have_precise_reasons() {
    let mut env = TestEnv::new("akeneo-errors").await;
    let bad_client = env.akeneo_credential("bc").await;
    env.put_source("bc-client", "bc-client", "p8e-wrong").await;
    let bad_user = env.akeneo_credential("bu").await;
    env.put_secret("bu-user", &[], &[("password", "pw-wrong")]).await;
    env.create(&bad_client).await;
    env.create(&bad_user).await;
    let c = env.wait_ready("bc", "False", "InvalidClient").await;
    assert!(c.status.expect("status").conditions[0].message.contains("does not match any client"));
    let u = env.wait_ready("bu", "False", "InvalidUserCredentials").await;
    assert!(u.status.expect("status").conditions[0].message.contains("No user found"));
    env.assert_no_leaks(&["bc-client", "bu-client"]).await;
    env.assert_no_mint_loop(&[]);
}
