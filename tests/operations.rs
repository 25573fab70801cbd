//! Production operation: metrics and probes, the token-endpoint rate limit, graceful shutdown,
//! SIGKILL mid-reconcile, two replicas with leader election, token-endpoint faults, and a target
//! write refused by the API server.

mod common;

use std::time::Duration;

use common::{DAY, Operator, TestEnv, WAIT, eventually, fingerprint, http_get, key, sigterm};
use fake_token_server::{FakeTokenServer, Fault, RetryAfter};

#[tokio::test]
async fn metrics_and_probes() {
    let mut env = TestEnv::new("metrics").await;
    env.register_client("met-client", "p8e-met-secret", DAY);
    env.put_source("met-src", "met-client", "p8e-met-secret").await;
    env.create(&env.s2s_credential("met", "met-src")).await;
    env.wait_ready("met", "True", "TokenMinted").await;
    let url = env.operator.as_ref().expect("operator").http_url().await;
    assert_eq!(http_get(&format!("{url}/healthz")).await.0, 200);
    let ready =
        eventually("readyz", WAIT, || async { (http_get(&format!("{url}/readyz")).await.0 == 200).then_some(()) });
    ready.await;
    // The expiry gauge is set when the reconcile ends, a moment after the status is written.
    let (text, line) = eventually("the expiry gauge", WAIT, || async {
        let (status, text) = http_get(&format!("{url}/metrics")).await;
        assert_eq!(status, 200);
        let line = text
            .lines()
            .find(|l| l.starts_with("adobe_credential_token_expiry_seconds{") && l.contains(r#"name="met""#))?
            .to_owned();
        Some((text, line))
    })
    .await;
    assert!(
        text.contains(r#"adobe_credential_mint_requests_total{flow="oauthServerToServer",outcome="ok"} 1"#),
        "{text}"
    );
    assert!(text.contains(r#"adobe_credential_mint_duration_seconds_count{flow="oauthServerToServer"} 1"#), "{text}");
    let seconds: f64 = line.rsplit(' ').next().and_then(|v| v.parse().ok()).expect("value");
    assert!(seconds > 86_000.0, "{line}");
    env.assert_no_leaks(&["met-client"]).await;
    env.assert_no_mint_loop(&[]);
}

/// Six credentials at 2 requests/s with a burst of 1: the requests are spaced, none fails.
#[tokio::test]
async fn rate_limit_queues_token_requests() {
    let mut env = TestEnv::new("ratelimit").await;
    env.kill_operator().await;
    let log = env.dir.path().join("operator.log");
    env.operator = Some(
        Operator::start_with(
            env.ns(),
            env.control_plane.kubeconfig_path(),
            &env.ca_file(),
            log,
            &["--token-rate-limit-qps", "2", "--token-rate-limit-burst", "1"],
        )
        .await,
    );
    env.register_client("rl-client", "p8e-rl-secret", DAY);
    env.put_source("rl-src", "rl-client", "p8e-rl-secret").await;
    for i in 0..6 {
        env.create(&env.s2s_credential(&format!("rl-{i}"), "rl-src")).await;
    }
    for i in 0..6 {
        env.wait_ready(&format!("rl-{i}"), "True", "TokenMinted").await;
    }
    let requests = env.ims.requests_for("rl-client");
    assert_eq!(requests.len(), 6, "queued, not failed or retried");
    let span = requests[5].received_at.duration_since(requests[0].received_at).expect("ordered");
    // Five requests after the first at 2/s: at least 2.5 s, less a little timer slack.
    assert!(span >= Duration::from_millis(2300), "requests not spaced by the rate limit: {span:?}");
    // Six credentials on one client.
    env.assert_no_mint_loop(&[("rl-client", 5)]);
}

/// SIGTERM while a mint is in flight: the mint completes and is written before the exit.
#[tokio::test]
async fn sigterm_lets_the_in_flight_mint_finish() {
    let mut env = TestEnv::new("sigterm").await;
    env.register_client("term-client", "p8e-term-secret", DAY);
    env.put_source("term-src", "term-client", "p8e-term-secret").await;
    env.ims.inject_fault(Fault::delay(Duration::from_secs(2)).for_client("term-client").times(1));
    env.create(&env.s2s_credential("term", "term-src")).await;
    env.ims.wait_for_arrivals("term-client", 1, WAIT).await.expect("mint in flight");
    let mut operator = env.operator.take().expect("operator");
    sigterm(operator.pid().expect("pid"));
    let exit = operator.wait_exit(Duration::from_secs(30)).await;
    assert!(exit.success(), "graceful exit: {exit:?}");
    let target = env.target("term-token").await.expect("token written before exit");
    assert_eq!(key(&target, "access_token"), env.ims.issued_tokens("term-client").pop());
    env.assert_no_mint_loop(&[]);
}

/// SIGTERM while a reconcile cannot finish (its token request hangs far longer than the
/// shutdown timeout): the operator stops at the shutdown deadline instead of hanging with it.
#[tokio::test]
async fn sigterm_exits_at_the_shutdown_deadline_despite_a_stuck_reconcile() {
    let mut env = TestEnv::new("deadline").await;
    let ns = env.ns().to_owned();
    env.restart_operator_with(&ns, &["--shutdown-timeout", "1s", "--token-request-timeout", "300s"]).await;
    env.register_client("stuck-client", "p8e-stuck-secret", DAY);
    env.put_source("stuck-src", "stuck-client", "p8e-stuck-secret").await;
    env.ims.inject_fault(Fault::hang().for_client("stuck-client"));
    env.create(&env.s2s_credential("stuck", "stuck-src")).await;
    env.ims.wait_for_arrivals("stuck-client", 1, WAIT).await.expect("mint in flight");
    let mut operator = env.operator.take().expect("operator");
    sigterm(operator.pid().expect("pid"));
    // Well before the 300 s request timeout could end the stuck reconcile.
    let exit = operator.wait_exit(WAIT).await;
    assert!(exit.success(), "a deadline exit is an orderly one: {exit:?}");
    assert!(env.target("stuck-token").await.is_none());
    env.assert_no_mint_loop(&[]);
}

/// SIGKILL in the middle of a mint: nothing half-written, the valid token of the other
/// credential is not minted again, and the interrupted one completes after the restart.
#[tokio::test]
async fn sigkill_mid_reconcile_loses_nothing() {
    let mut env = TestEnv::new("sigkill").await;
    env.register_client("kill-client", "p8e-kill-secret", DAY);
    env.register_client("calm-client", "p8e-calm-secret", DAY);
    env.put_source("kill-src", "kill-client", "p8e-kill-secret").await;
    env.put_source("calm-src", "calm-client", "p8e-calm-secret").await;
    env.create(&env.s2s_credential("calm", "calm-src")).await;
    env.wait_ready("calm", "True", "TokenMinted").await;
    env.ims.inject_fault(Fault::delay(Duration::from_secs(3)).for_client("kill-client").times(1));
    env.create(&env.s2s_credential("kill", "kill-src")).await;
    env.ims.wait_for_arrivals("kill-client", 1, WAIT).await.expect("mint in flight");
    env.kill_operator().await;
    assert!(env.target("kill-token").await.is_none(), "no partial Secret");
    env.start_operator().await;
    let cred = env.wait_ready("kill", "True", "TokenMinted").await;
    let target = env.target("kill-token").await.expect("target");
    let written = key(&target, "access_token").expect("access_token");
    // The interrupted request may still be answered by the fake after the kill; what matters
    // is that the written token is a real one and the status describes that very token.
    assert!(env.ims.issued_tokens("kill-client").contains(&written), "the written token was issued");
    assert_eq!(cred.status.and_then(|s| s.token_fingerprint), Some(fingerprint(&written)));
    assert_eq!(env.ims.mint_count("calm-client"), 1, "the valid token was adopted, not minted again");
    env.assert_no_mint_loop(&[]);
}

/// Two replicas: exactly one mints; when it dies the other takes over within the lease duration.
#[tokio::test]
async fn two_replicas_one_leader_and_failover() {
    let mut env = TestEnv::new("ha").await;
    env.kill_operator().await;
    let mut flags: Vec<&str> = common::FAST_LEADER_ELECTION.to_vec();
    flags.extend(["--lease-name", "aco-ha-test"]);
    let ns = env.ns().to_owned();
    flags.extend(["--lease-namespace", ns.as_str()]);
    let ca_file = env.ca_file();
    let start = |name: &'static str| {
        let log = env.dir.path().join(format!("{name}.log"));
        let mut flags = flags.clone();
        flags.extend(["--instance", name]);
        let kubeconfig = env.control_plane.kubeconfig_path().to_owned();
        let (ns, ca_file) = (ns.clone(), ca_file.clone());
        async move { Operator::start_with(&ns, &kubeconfig, &ca_file, log, &flags).await }
    };
    let leases: kube::Api<k8s_openapi::api::coordination::v1::Lease> = kube::Api::namespaced(env.client.clone(), &ns);
    let holder = || async { leases.get("aco-ha-test").await.ok()?.spec?.holder_identity };
    let first = start("replica-a").await;
    eventually("replica a to lead", WAIT, || async { (holder().await? == "replica-a").then_some(()) }).await;
    let mut second = start("replica-b").await;
    let url_b = second.http_url().await;
    eventually("replica b to be a ready standby", WAIT, || async {
        (http_get(&format!("{url_b}/readyz")).await.0 == 200).then_some(())
    })
    .await;
    assert_eq!(holder().await.as_deref(), Some("replica-a"), "replica b follows");

    env.register_client("ha-client", "p8e-ha-secret", DAY);
    env.put_source("ha-src", "ha-client", "p8e-ha-secret").await;
    env.create(&env.s2s_credential("ha-one", "ha-src")).await;
    env.wait_ready("ha-one", "True", "TokenMinted").await;
    let follower_mints =
        second.metrics().await.lines().filter(|l| l.starts_with("adobe_credential_mint_requests_total")).count();
    assert_eq!(follower_mints, 0, "the follower never mints");

    first.kill().await;
    let killed_at = std::time::Instant::now();
    eventually("replica b to take over", WAIT, || async { (holder().await? == "replica-b").then_some(()) }).await;
    eprintln!("failover: replica b leads {:?} after replica a was killed", killed_at.elapsed());
    env.create(&env.s2s_credential("ha-two", "ha-src")).await;
    env.wait_ready("ha-two", "True", "TokenMinted").await;
    assert_eq!(env.ims.mint_count("ha-client"), 2, "ha-one adopted by the new leader, ha-two minted once");

    // A graceful stop releases the lease at once.
    sigterm(second.pid().expect("pid"));
    assert!(second.wait_exit(Duration::from_secs(30)).await.success());
    assert_eq!(holder().await, None, "released on shutdown");
    // Two credentials on one client.
    env.assert_no_mint_loop(&[("ha-client", 1)]);
}

/// Faults of the token endpoint: hang, dropped connection, missing fields, untrusted TLS. Each
/// gets a bounded timeout, a clear reason, and the last good token stays.
#[tokio::test]
async fn token_endpoint_faults_have_clear_reasons() {
    let mut env = TestEnv::new("faults").await;
    for (name, fault) in [
        ("hang", Fault::hang()),
        ("drop", Fault::drop_connection()),
        ("fields", Fault::missing_fields(["expires_in"])),
        ("garbage", Fault::malformed_json()),
    ] {
        let client = format!("{name}-client");
        env.register_client(&client, &format!("p8e-{name}-secret"), DAY);
        env.put_source(&format!("{name}-src"), &client, &format!("p8e-{name}-secret")).await;
        env.ims.inject_fault(fault.for_client(&client));
        env.create(&env.s2s_credential(name, &format!("{name}-src"))).await;
    }
    let hang = env.wait_ready("hang", "False", "TokenEndpointUnavailable").await;
    assert!(hang.status.expect("status").conditions[0].message.contains("timed out"));
    env.wait_ready("drop", "False", "TokenEndpointUnavailable").await;
    let fields = env.wait_ready("fields", "False", "MalformedTokenResponse").await;
    assert!(fields.status.expect("status").conditions[0].message.contains("expires_in"));
    env.wait_ready("garbage", "False", "MalformedTokenResponse").await;
    for name in ["hang", "drop", "fields", "garbage"] {
        assert!(env.target(&format!("{name}-token")).await.is_none(), "nothing written for {name}");
    }
    // 503 with Retry-After is throttling, not an outage.
    env.register_client("busy-client", "p8e-busy-secret", DAY);
    env.put_source("busy-src", "busy-client", "p8e-busy-secret").await;
    env.ims.inject_fault(Fault::service_unavailable(RetryAfter::Seconds(2)).for_client("busy-client").times(1));
    env.create(&env.s2s_credential("busy", "busy-src")).await;
    env.wait_seen("busy", "False", "Throttled").await;
    env.wait_ready("busy", "True", "TokenMinted").await;

    // The endpoint recovers: every credential ends Ready, with minimal mints.
    env.ims.clear_faults();
    for name in ["hang", "drop", "fields", "garbage"] {
        env.wait_ready(name, "True", "TokenMinted").await;
        let client = format!("{name}-client");
        let target = env.target(&format!("{name}-token")).await.expect("target");
        assert_eq!(key(&target, "access_token").as_ref(), env.ims.issued_tokens(&client).last());
        // Requests that got no usable answer issued nothing; the fake counts each response
        // without expires_in as issued, so "fields" is left out of the count.
        if name != "fields" {
            assert_eq!(env.ims.mint_count(&client), 1, "{name}");
        }
    }

    // An endpoint whose certificate no trusted CA signed.
    let untrusted = test_support::LoopbackTls::generate().expect("TLS");
    let rogue = FakeTokenServer::start_tls(&untrusted.cert_pem, &untrusted.key_pem).await.expect("rogue IMS");
    env.register_client("tls-client", "p8e-tls-secret", DAY);
    env.put_source("tls-src", "tls-client", "p8e-tls-secret").await;
    let mut cred = env.s2s_credential("tls", "tls-src");
    if let Some(flow) = cred.spec.oauth_server_to_server.as_mut() {
        flow.ims_endpoint = rogue.url().to_owned();
    }
    env.create(&cred).await;
    let tls = env.wait_ready("tls", "False", "TokenEndpointUnavailable").await;
    let message = &tls.status.expect("status").conditions[0].message;
    assert!(message.to_lowercase().contains("certificate"), "{message}");
    assert!(rogue.requests().is_empty(), "no request reached an untrusted endpoint");
    env.assert_no_leaks(&["hang-client", "drop-client", "fields-client", "garbage-client"]).await;
    // Answers without expires_in count as issued: one per backoff step (1 s doubling) while the fault lasted.
    env.assert_no_mint_loop(&[("fields-client", 8)]);
}

/// The API server refuses the target write (an admission policy) after a successful mint: the
/// failure is reported, and once writes are allowed again the same token is written, not a new one.
#[tokio::test]
async fn refused_target_write_keeps_the_minted_token() {
    let mut env = TestEnv::new("refused").await;
    env.register_client("rw-client", "p8e-rw-secret", DAY);
    env.put_source("rw-src", "rw-client", "p8e-rw-secret").await;
    let policy = DenySecretPolicy::install(&env, "rw-token").await;
    env.create(&env.s2s_credential("rw", "rw-src")).await;
    let refused = env.wait_ready("rw", "False", "KubernetesApiError").await;
    let message = &refused.status.expect("status").conditions[0].message;
    assert!(message.contains("denied"), "{message}");
    // Hostile-tenant case 7: the API server's refusal as one human line, not a debug dump.
    env.assert_status_messages_are_human().await;
    assert!(env.target("rw-token").await.is_none());

    policy.remove(&env).await;
    env.wait_ready("rw", "True", "TokenMinted").await;
    let issued = env.ims.issued_tokens("rw-client");
    assert_eq!(issued.len(), 1, "the token minted before the refusal was kept, not minted again");
    assert_eq!(key(&env.target("rw-token").await.expect("target"), "access_token").as_ref(), issued.first());
    env.assert_no_leaks(&["rw-client"]).await;
    env.assert_no_mint_loop(&[]);
}

/// A ValidatingAdmissionPolicy and binding that refuse writes of one Secret in the test namespace.
struct DenySecretPolicy {
    name: String,
}

impl DenySecretPolicy {
    async fn install(env: &TestEnv, secret: &str) -> Self {
        use k8s_openapi::api::admissionregistration::v1::{
            ValidatingAdmissionPolicy, ValidatingAdmissionPolicyBinding,
        };
        let name = format!("deny-{}-{secret}", env.ns());
        let policy: ValidatingAdmissionPolicy = serde_json::from_value(serde_json::json!({
            "metadata": {"name": name},
            "spec": {
                "failurePolicy": "Fail",
                "matchConstraints": {"resourceRules": [{
                    "apiGroups": [""], "apiVersions": ["v1"], "resources": ["secrets"],
                    "operations": ["CREATE", "UPDATE"],
                }]},
                "validations": [{
                    "expression": format!("object.metadata.name != '{secret}'"),
                    "message": "target writes are switched off by the test",
                }],
            },
        }))
        .expect("policy");
        let binding: ValidatingAdmissionPolicyBinding = serde_json::from_value(serde_json::json!({
            "metadata": {"name": name},
            "spec": {
                "policyName": name,
                "validationActions": ["Deny"],
                "matchResources": {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": env.ns()}}},
            },
        }))
        .expect("binding");
        let post = kube::api::PostParams::default();
        kube::Api::<ValidatingAdmissionPolicy>::all(env.client.clone()).create(&post, &policy).await.expect("policy");
        kube::Api::<ValidatingAdmissionPolicyBinding>::all(env.client.clone())
            .create(&post, &binding)
            .await
            .expect("binding");
        // The API server loads policies asynchronously: wait until a dry-run write is refused.
        eventually("the admission policy to be enforced", WAIT, || async {
            Self::probe(env, secret).await.is_err().then_some(())
        })
        .await;
        Self { name }
    }

    async fn remove(self, env: &TestEnv) {
        use k8s_openapi::api::admissionregistration::v1::ValidatingAdmissionPolicyBinding;
        kube::Api::<ValidatingAdmissionPolicyBinding>::all(env.client.clone())
            .delete(&self.name, &Default::default())
            .await
            .expect("delete binding");
    }

    /// A dry-run create of the Secret: refused while the policy is enforced.
    async fn probe(env: &TestEnv, secret: &str) -> Result<(), kube::Error> {
        let probe = k8s_openapi::api::core::v1::Secret {
            metadata: kube::api::ObjectMeta { name: Some(secret.to_owned()), ..Default::default() },
            ..Default::default()
        };
        env.secrets().create(&kube::api::PostParams { dry_run: true, ..Default::default() }, &probe).await.map(drop)
    }
}
