//! Hostile tenants: whatever one namespace writes (its AdobeCredentials, its Secrets, the
//! operator-owned Secrets in it) makes at most one mint per token lifetime or input change, never
//! crashes or stalls the operator, and is reported in plain words. Each test runs the operator
//! over the tenant's namespace and a bystander namespace whose short-lived token must keep being
//! renewed on schedule: the bystander's renewals are also the window over which the tenant's mint
//! counts are checked.
//!
//! A forbidden rollout restart (the chart's default RBAC) is tested with the chart's own identity
//! in `tests/chart.rs` (`rollout_restart_forbidden_by_the_chart_defaults_is_reported`).

mod common;

use std::time::Duration;

use adobe_credential_operator::crd::{CreationPolicy, RenewalSpec, TargetSpec, TargetTemplate};
use common::{HOUR, TestEnv, WAIT, eventually, http_get, key};
use k8s_openapi::api::core::v1::Secret;
use kube::api::{DeleteParams, Patch, PatchParams, PostParams};
use kube::{Api, ResourceExt};
use test_support::TestNamespace;

/// The mint floor's lower bound for these tests (the default is 30 s): short enough for the
/// bystander's 4-second tokens, far below a tenth of the tenants' hour-long tokens.
const MIN_MINT_INTERVAL: &str = "2s";

/// A tenant namespace (the TestEnv's) and a bystander namespace served by one operator.
struct Tenancy {
    env: TestEnv,
    bystander: TestNamespace,
    namespaces: String,
}

impl Tenancy {
    async fn new(prefix: &str) -> Self {
        let mut env = TestEnv::new(prefix).await;
        let bystander = env.control_plane.namespace("bystander").await.expect("bystander namespace");
        let namespaces = format!("{},{}", env.ns(), bystander.name());
        env.restart_operator_with(&namespaces, &["--min-mint-interval", MIN_MINT_INTERVAL]).await;
        let client = format!("{}-bystander", bystander.name());
        env.register_client(&client, "p8e-bystander-secret", Duration::from_secs(4));
        let source: Secret = serde_json::from_value(serde_json::json!({
            "metadata": { "name": "bystander-src" },
            "stringData": { "client_id": client, "client_secret": "p8e-bystander-secret" },
        }))
        .expect("secret");
        let pp = PostParams::default();
        Api::<Secret>::namespaced(env.client.clone(), bystander.name()).create(&pp, &source).await.expect("source");
        let cred = env.s2s_credential("bystander", "bystander-src");
        Api::namespaced(env.client.clone(), bystander.name()).create(&pp, &cred).await.expect("bystander credential");
        let tenancy = Self { env, bystander, namespaces };
        tenancy.env.ims.wait_for_mints(&tenancy.bystander_client(), 1, WAIT).await.expect("bystander minted");
        tenancy
    }

    async fn restart(&mut self) {
        self.env.restart_operator_with(&self.namespaces, &["--min-mint-interval", MIN_MINT_INTERVAL]).await;
    }

    fn bystander_client(&self) -> String {
        format!("{}-bystander", self.bystander.name())
    }

    /// Waits for `n` more renewals of the bystander's token: the operator is alive and renews
    /// other namespaces on schedule, and the tenant's counts are then checked over that window.
    async fn bystander_renews(&self, n: usize) {
        let client = self.bystander_client();
        let before = self.env.ims.mint_count(&client);
        self.env.ims.wait_for_mints(&client, before + n, WAIT).await.expect("the bystander keeps being renewed");
        let url = self.env.operator.as_ref().expect("operator").http_url().await;
        assert_eq!(http_get(&format!("{url}/healthz")).await.0, 200, "the operator is alive");
    }

    /// A credential of the tenant with hour-long tokens from its own fake client.
    async fn tenant_credential(&mut self, name: &str) -> adobe_credential_operator::crd::AdobeCredential {
        let client = format!("{name}-client");
        let secret = format!("p8e-{name}-secret");
        self.env.register_client(&client, &secret, HOUR);
        self.env.put_source(&format!("{name}-src"), &client, &secret).await;
        self.env.s2s_credential(name, &format!("{name}-src"))
    }

    fn operator_peak_rss_kib(&self) -> u64 {
        let pid = self.env.operator.as_ref().and_then(|o| o.pid()).expect("operator pid");
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("proc status");
        let line = status.lines().find(|l| l.starts_with("VmHWM:")).expect("VmHWM");
        line.split_whitespace().nth(1).and_then(|v| v.parse().ok()).expect("kB")
    }
}

/// Case 1: a `renewBefore` of nearly the whole lifetime, and an endpoint that answers with a tiny
/// `expires_in`. Before: 319 mints in 30 s. Now: the renewal is clamped to the mint floor (a
/// tenth of the lifetime, at least the minimum interval) and status says so.
#[tokio::test]
async fn renewal_settings_and_tiny_lifetimes_cannot_make_a_mint_loop() {
    let mut t = Tenancy::new("loop").await;
    let mut greedy = t.tenant_credential("greedy").await;
    greedy.spec.renewal = Some(RenewalSpec { renew_before: Some("59m59s".into()), renew_before_percentage: None });
    t.env.create(&greedy).await;
    let cred = t.env.wait_ready("greedy", "True", "TokenMinted").await;
    let status = cred.status.expect("status");
    let minted = status.last_mint_time.expect("mint time").0;
    let renewal = status.renewal_time.expect("renewal time").0;
    assert!(renewal.duration_since(minted) >= jiff::SignedDuration::from_mins(6), "clamped to a tenth of the hour");
    assert!(status.conditions[0].message.contains("renewal moved"), "{}", status.conditions[0].message);

    t.env.register_client("tiny-client", "p8e-tiny-secret", Duration::from_secs(1));
    t.env.put_source("tiny-src", "tiny-client", "p8e-tiny-secret").await;
    t.env.create(&t.env.s2s_credential("tiny", "tiny-src")).await;
    t.env.wait_ready("tiny", "True", "TokenMinted").await;

    t.bystander_renews(3).await;
    assert_eq!(t.env.ims.mint_count("greedy-client"), 1, "one mint per lifetime");
    let tiny = t.env.ims.requests_for("tiny-client");
    assert!(!tiny.is_empty());
    for pair in tiny.windows(2) {
        let gap = pair[1].received_at.duration_since(pair[0].received_at).expect("ordered");
        // The floor (2 s) is measured from when the operator sent each request, and arrival
        // adds a connection's handshake on a loaded machine: half of it still tells a floor from
        // a loop, whose mints come milliseconds apart.
        assert!(gap >= Duration::from_secs(1), "two mints {gap:?} apart: the 2 s floor did not hold");
    }
    t.env.assert_status_messages_are_human().await;
    t.env.assert_no_leaks(&["greedy-client", "tiny-client"]).await;
    t.env.assert_no_mint_loop(&[]);
}

/// Case 2: two `Merge` credentials in one Secret. Before: each apply removed the other's keys,
/// 107 mints each in 40 s. Now each writes as its own field manager with its own keys and
/// annotations; a key someone else wrote, or a typed Secret, is refused before any mint.
#[tokio::test]
async fn merge_credentials_share_a_secret_each_owning_its_keys() {
    let mut t = Tenancy::new("merge").await;
    t.env.put_secret("app-secrets", &[("config", "debug=false")], &[]).await;
    let merge_into = |cred: &mut adobe_credential_operator::crd::AdobeCredential, name: &str, prefix: Option<&str>| {
        cred.spec.target = Some(TargetSpec {
            name: Some(name.into()),
            creation_policy: CreationPolicy::Merge,
            key_prefix: prefix.map(str::to_owned),
            ..Default::default()
        });
    };
    let mut firefly = t.tenant_credential("ff").await;
    merge_into(&mut firefly, "app-secrets", Some("firefly_"));
    let mut cloud = t.tenant_credential("cm").await;
    merge_into(&mut cloud, "app-secrets", Some("cloudmanager_"));
    t.env.create(&firefly).await;
    t.env.create(&cloud).await;
    t.env.wait_ready("ff", "True", "TokenMinted").await;
    t.env.wait_ready("cm", "True", "TokenMinted").await;

    // A third one with the default keys, into a Secret whose access_token someone else wrote.
    t.env.put_secret("legacy", &[("access_token", "hand-written")], &[]).await;
    let mut grabber = t.tenant_credential("grab").await;
    merge_into(&mut grabber, "legacy", None);
    t.env.create(&grabber).await;
    let refused = t.env.wait_ready("grab", "False", "TargetConflict").await;
    let message = &refused.status.expect("status").conditions[0].message;
    assert!(message.contains("\"access_token\""), "{message}");
    // And one into a TLS Secret.
    let tls: Secret = serde_json::from_value(serde_json::json!({
        "metadata": { "name": "ingress-tls" }, "type": "kubernetes.io/tls",
        "stringData": { "tls.crt": "cert", "tls.key": "key" },
    }))
    .expect("tls secret");
    t.env.secrets().create(&PostParams::default(), &tls).await.expect("tls");
    let mut typed = t.tenant_credential("typed").await;
    merge_into(&mut typed, "ingress-tls", Some("adobe_"));
    t.env.create(&typed).await;
    let refused = t.env.wait_ready("typed", "False", "TargetConflict").await;
    assert!(refused.status.expect("status").conditions[0].message.contains("Opaque"));

    t.bystander_renews(3).await;
    let shared = t.env.target("app-secrets").await.expect("app-secrets");
    assert_eq!(key(&shared, "config").as_deref(), Some("debug=false"), "the Secret's own key is kept");
    assert_eq!(key(&shared, "firefly_access_token").as_ref(), t.env.ims.issued_tokens("ff-client").last());
    assert_eq!(key(&shared, "cloudmanager_access_token").as_ref(), t.env.ims.issued_tokens("cm-client").last());
    assert_eq!(t.env.ims.mint_count("ff-client"), 1);
    assert_eq!(t.env.ims.mint_count("cm-client"), 1);
    assert_eq!(t.env.ims.mint_count("grab-client"), 0, "refused before minting");
    assert_eq!(t.env.ims.mint_count("typed-client"), 0, "refused before minting");
    let legacy = t.env.target("legacy").await.expect("legacy");
    assert_eq!(key(&legacy, "access_token").as_deref(), Some("hand-written"), "not taken over");

    // Deleting one leaves the other's keys and token in place, and the other does not re-mint.
    t.env.credentials().delete("ff", &DeleteParams::default()).await.expect("delete ff");
    t.bystander_renews(2).await;
    let shared = t.env.target("app-secrets").await.expect("app-secrets");
    assert_eq!(key(&shared, "cloudmanager_access_token").as_ref(), t.env.ims.issued_tokens("cm-client").last());
    assert_eq!(t.env.ims.mint_count("cm-client"), 1);
    t.env.assert_status_messages_are_human().await;
    t.env.assert_no_leaks(&["ff-client", "cm-client"]).await;
    t.env.assert_no_mint_loop(&[]);
}

/// Case 3: forged timestamps in operator-owned Secrets. Before: an issued-at of 9999-12-30 on
/// the refresh state made the operator panic at every start. Now such values mean "no valid
/// token" or "no usable refresh token"; the token the operator holds is written back without a
/// mint, and after a restart (nothing held) the next mint falls back to the password grant.
#[tokio::test]
async fn forged_annotations_are_no_valid_token_and_never_a_panic() {
    let mut t = Tenancy::new("forged").await;
    let pim = t.env.akeneo_credential("pim").await;
    t.env.create(&pim).await;
    t.env.wait_ready("pim", "True", "TokenMinted").await;
    let mut s2s = t.tenant_credential("s2s").await;
    s2s.spec.target = Some(TargetSpec { name: Some("s2s-token".into()), ..Default::default() });
    t.env.create(&s2s).await;
    t.env.wait_ready("s2s", "True", "TokenMinted").await;

    // A far-future expiry on the target token (its fingerprint intact) is not trusted: the
    // operator writes the token it holds back, with the true expiry, and mints nothing.
    let merge = PatchParams::default();
    let forge = |annotation: &str, value: &str| serde_json::json!({ "metadata": { "annotations": { format!("credentials.adobe-operator.io/{annotation}"): value } } });
    let eternal = forge("expires-at", "9999-12-31T23:59:59Z");
    t.env.secrets().patch("s2s-token", &merge, &Patch::Merge(&eternal)).await.expect("forge expiry");
    eventually("the forged expiry to be written over", WAIT, || async {
        let target = t.env.target("s2s-token").await?;
        let expires = target.annotations().get("credentials.adobe-operator.io/expires-at")?.clone();
        (!expires.starts_with("9999")).then_some(())
    })
    .await;

    let doomsday = forge("issued-at", "9999-12-30T00:00:00Z");
    t.env.secrets().patch("pim-refresh-state", &merge, &Patch::Merge(&doomsday)).await.expect("forge state");
    t.env.secrets().delete("pim-token", &DeleteParams::default()).await.expect("delete target");
    eventually("the held token to be restored", WAIT, || async { t.env.target("pim-token").await }).await;

    // The operator restarts (it holds nothing now) and the target is deleted again: one mint,
    // by password, since the forged refresh state is not trusted.
    t.restart().await;
    t.env.secrets().delete("pim-token", &DeleteParams::default()).await.expect("delete target");
    t.env.ims.wait_for_mints("pim-client", 2, WAIT).await.expect("a new token for the deleted target");
    eventually("the target to be written again", WAIT, || async { t.env.target("pim-token").await }).await;
    let last = t.env.ims.requests_for("pim-client").pop().expect("request");
    assert_eq!(last.endpoint, fake_token_server::EndpointKind::AkeneoPassword, "the forged refresh state was not used");

    t.bystander_renews(3).await;
    assert_eq!(t.env.ims.mint_count("pim-client"), 2, "one mint after the restart, none for the restore");
    assert_eq!(t.env.ims.mint_count("s2s-client"), 1, "the forged expiry cost no mint");
    t.env.assert_no_leaks(&["pim-client", "s2s-client"]).await;
    t.env.assert_no_mint_loop(&[("pim-client", 1)]);
}

/// Case 4: templates that would take all memory or loop for ever. Before: 1.4 GiB RSS, or a
/// runtime thread held for good. Now each render has a budget of steps and output, and a
/// template over it is `InvalidTemplate` before any mint.
#[tokio::test]
async fn templates_over_budget_are_refused_before_minting() {
    let mut t = Tenancy::new("template").await;
    let template = |pairs: &[(&str, &str)]| TargetSpec {
        template: Some(TargetTemplate { data: pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect() }),
        ..Default::default()
    };
    // Four credentials with three 100 MB keys each, reconciled side by side.
    let huge = r#"{{ "x" * 100000000 }}"#;
    let mut big = t.tenant_credential("big").await;
    big.spec.target = Some(template(&[("a", huge), ("b", huge), ("c", huge)]));
    let mut spin = t.tenant_credential("spin").await;
    let loops = "{% for i in range(100000) %}{% for j in range(100000) %}{{ i }}{% endfor %}{% endfor %}";
    spin.spec.target = Some(template(&[("spin", loops)]));
    for i in 0..4 {
        let mut copy = big.clone();
        copy.metadata.name = Some(format!("big-{i}"));
        t.env.create(&copy).await;
    }
    t.env.create(&spin).await;
    for i in 0..4 {
        let big = t.env.wait_ready(&format!("big-{i}"), "False", "InvalidTemplate").await;
        assert!(big.status.expect("status").conditions[0].message.contains("longer than"));
    }
    let spin = t.env.wait_ready("spin", "False", "InvalidTemplate").await;
    assert!(spin.status.expect("status").conditions[0].message.contains("steps"));

    t.bystander_renews(3).await;
    assert_eq!(t.env.ims.mint_count("big-client"), 0);
    assert_eq!(t.env.ims.mint_count("spin-client"), 0);
    let peak = t.operator_peak_rss_kib();
    eprintln!("operator peak RSS with four credentials of three 100 MB template keys: {} MiB", peak / 1024);
    assert!(peak < 256 * 1024, "peak RSS {peak} KiB is over the chart's 256 Mi limit");
    t.env.assert_status_messages_are_human().await;
    t.env.assert_no_mint_loop(&[]);
}

/// Case 6: values saved with `echo` or from a file. A client secret's trailing newline is cleaned
/// off and reported; a rejected password that ends in a newline says so.
#[tokio::test]
async fn trailing_newlines_are_reported() {
    let mut t = Tenancy::new("newline").await;
    t.env.register_client("nl-client", "p8e-nl-secret", HOUR);
    t.env.put_source("nl-src", "nl-client", "p8e-nl-secret\n").await;
    t.env.create(&t.env.s2s_credential("nl", "nl-src")).await;
    let cred = t.env.wait_ready("nl", "True", "TokenMinted").await;
    let message = &cred.status.expect("status").conditions[0].message;
    assert!(message.contains("client_secret in Secret \"nl-src\" had a trailing newline; it was ignored"), "{message}");
    eventually("the InputCleaned Event", WAIT, || async {
        t.env.events().await.iter().any(|e| e.reason.as_deref() == Some("InputCleaned")).then_some(())
    })
    .await;

    let pim = t.env.akeneo_credential("pw").await;
    t.env.put_secret("pw-user", &[], &[("password", "pw-pw-1\n")]).await;
    t.env.create(&pim).await;
    let rejected = t.env.wait_ready("pw", "False", "InvalidUserCredentials").await;
    let message = &rejected.status.expect("status").conditions[0].message;
    assert!(message.contains("ends in a newline"), "{message}");

    t.bystander_renews(2).await;
    assert_eq!(t.env.ims.mint_count("nl-client"), 1);
    // Permanent failures back off from 15–30 s: at most one retry fits the window.
    assert!(t.env.ims.requests_for("pw-client").len() <= 2, "a rejected password is retried slowly");
    t.env.assert_status_messages_are_human().await;
    t.env.assert_no_leaks(&["nl-client"]).await;
    t.env.assert_no_mint_loop(&[]);
}
