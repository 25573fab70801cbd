//! Shared pieces of the client secret rotation tests: a credential registered with the fake
//! I/O Management API, its source Secret and AdobeCredential, the trigger, waits on the rotation
//! status, and the checks every rotation test ends with.
#![allow(dead_code)] // each test binary uses a different subset

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use adobe_credential_operator::crd::{AdobeCredential, ClientSecretRotation, ClientSecretRotationStatus};
use fake_token_server::{AdobeClient, ClientSecretInfo, EndpointKind, Outcome};
use futures::StreamExt;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::api::{Patch, PatchParams};
use kube::runtime::{WatchStreamExt, watcher};

use crate::common::{DAY, FIREFLY_SCOPES, TestEnv, WAIT, eventually, key};

pub const ORG: &str = "4242";
pub const CREDENTIAL: &str = "7770001";
pub const MANAGEMENT_SCOPES: [&str; 8] = [
    "AdobeID",
    "openid",
    "read_organizations",
    "additional_info.projectedProductContext",
    "additional_info.roles",
    "adobeio_api",
    "read_client_secret",
    "manage_client_secrets",
];
/// Operators of rotation tests run with rotation on and a short verification window.
pub const ROTATION_FLAGS: [&str; 3] = ["--client-secret-rotation", "--client-secret-verify-timeout", "5s"];
pub const TRIGGER: &str = "credentials.adobe-operator.io/rotate-client-secret";
pub const SECONDARY_KEY: &str = "client_secret_previous";

/// A credential whose client secret the tests rotate.
pub struct Rotating {
    pub name: String,
    pub client: String,
    pub source: String,
    pub original: String,
}

impl Rotating {
    pub fn target(&self) -> String {
        format!("{}-token", self.name)
    }
}

/// Registers `<name>-client` at the fake IMS with the Firefly and management scopes and a
/// Developer Console credential, creates its source Secret, and returns the AdobeCredential to
/// create (rotation block with `grace` and `every`, secondary key set).
pub async fn rotating(env: &mut TestEnv, name: &str, grace: &str, every: Option<&str>) -> (Rotating, AdobeCredential) {
    let client = format!("{name}-client");
    let original = format!("p8e-{name}-original");
    env.ims.register_adobe_client(console_client(&client, &original, CREDENTIAL)).expect("register client");
    env.seeded_secrets.push(original.clone());
    env.expect_lifetime(&client, DAY);
    let source = format!("{name}-src");
    env.put_source(&source, &client, &original).await;
    let mut cred = env.s2s_credential(name, &source);
    if let Some(flow) = cred.spec.oauth_server_to_server.as_mut() {
        flow.client_secret_ref.secondary_client_secret_key = Some(SECONDARY_KEY.into());
        flow.client_secret_rotation = Some(ClientSecretRotation {
            org_id: ORG.into(),
            credential_id: CREDENTIAL.into(),
            every: every.map(str::to_owned),
            grace_period: Some(grace.into()),
            management_endpoint: env.ims.url().to_owned(),
            delete_other_secret: false,
        });
    }
    (Rotating { name: name.into(), client, source, original }, cred)
}

/// A client with the Firefly and management scopes, one secret, day-long tokens, and a Developer
/// Console credential `credential_id` in organization [`ORG`].
pub fn console_client(client: &str, secret: &str, credential_id: &str) -> AdobeClient {
    let scopes: BTreeSet<&str> = FIREFLY_SCOPES.iter().chain(MANAGEMENT_SCOPES.iter()).copied().collect();
    AdobeClient::new(client, secret).with_scopes(scopes).with_token_lifetime(DAY).with_management(ORG, credential_id)
}

/// Sets the on-demand trigger annotation to `value`.
pub async fn trigger(env: &TestEnv, name: &str, value: &str) {
    let patch = serde_json::json!({ "metadata": { "annotations": { TRIGGER: value } } });
    env.credentials().patch(name, &PatchParams::default(), &Patch::Merge(&patch)).await.expect("annotate");
}

/// The rotation status and condition of a credential.
pub async fn rotation_of(env: &TestEnv, name: &str) -> Option<(ClientSecretRotationStatus, Condition)> {
    let cred = env.credentials().get(name).await.ok()?;
    let status = cred.status?;
    let condition = status.conditions.iter().find(|c| c.type_ == "ClientSecretRotation")?.clone();
    Some((status.client_secret_rotation?, condition))
}

/// Waits until the rotation status satisfies `check`.
pub async fn wait_rotation(
    env: &TestEnv,
    name: &str,
    what: &str,
    check: impl Fn(&ClientSecretRotationStatus, &Condition) -> bool,
) -> (ClientSecretRotationStatus, Condition) {
    eventually(what, WAIT, || async {
        let (status, condition) = rotation_of(env, name).await?;
        check(&status, &condition).then_some((status, condition))
    })
    .await
}

/// Waits until the rotation condition has `reason`.
pub async fn wait_rotation_reason(env: &TestEnv, name: &str, reason: &str) -> (ClientSecretRotationStatus, Condition) {
    wait_rotation(env, name, &format!("{name} ClientSecretRotation reason {reason}"), |_, c| c.reason == reason).await
}

/// Waits until the first look is done: the secret in use identified, nothing in progress.
pub async fn wait_observed(env: &TestEnv, r: &Rotating) -> ClientSecretRotationStatus {
    let uuid = env.ims.client_secret_uuid(&r.client, &r.original).expect("seeded secret");
    wait_rotation(env, &r.name, "the first look at the client secrets", |s, c| {
        s.step == "Idle" && c.reason == "RotationIdle" && s.current_secret_uuid.as_deref() == Some(uuid.as_str())
    })
    .await
    .0
}

/// The step persisted in the operator's rotation state Secret (`adding`, `verifying`,
/// `sourceWritten`, `switched`, …), which leads the status while a reconcile is under way.
pub async fn persisted_step(env: &TestEnv, name: &str) -> Option<String> {
    let state = env.secrets().get_opt(&format!("{name}-rotation-state")).await.expect("get")?;
    let procedure: serde_json::Value = serde_json::from_str(&key(&state, "procedure")?).ok()?;
    procedure["step"]["step"].as_str().map(str::to_owned)
}

/// The value of a key of the source Secret.
pub async fn source_key(env: &TestEnv, r: &Rotating, name: &str) -> Option<String> {
    key(&env.secrets().get(&r.source).await.expect("source"), name)
}

/// Waits until a rotation completed: one secret left at the fake, not the original, written
/// first in the source Secret (the original under the secondary key), a token minted with it in
/// the target, and the status idle on it. Returns the new secret's value and uuid.
pub async fn wait_completed(env: &TestEnv, r: &Rotating) -> (String, String) {
    let original_uuid = env.ims.client_secret_uuid(&r.client, &r.original);
    let (new_uuid, new_value) = eventually("the rotation to complete", WAIT, || async {
        let secrets: Vec<ClientSecretInfo> = env.ims.client_secrets(&r.client);
        let [only] = secrets.as_slice() else { return None };
        (Some(&only.uuid) != original_uuid.as_ref()).then_some(())?;
        let value = source_key(env, r, "client_secret").await?;
        (env.ims.client_secret_uuid(&r.client, &value).as_deref() == Some(only.uuid.as_str()))
            .then(|| (only.uuid.clone(), value))
    })
    .await;
    wait_rotation(env, &r.name, "the status to show the completed rotation", |s, c| {
        s.step == "Idle" && c.reason == "RotationIdle" && s.current_secret_uuid.as_deref() == Some(new_uuid.as_str())
    })
    .await;
    eventually("a token minted with the new secret in the target", WAIT, || async {
        let token = key(&env.target(&r.target()).await?, "access_token")?;
        (issuing_secret(env, &r.client, &token).as_deref() == Some(new_uuid.as_str())).then_some(())
    })
    .await;
    (new_value, new_uuid)
}

/// The uuid of the secret the request that issued `token` presented.
pub fn issuing_secret(env: &TestEnv, client: &str, token: &str) -> Option<String> {
    let index = env.ims.issued_tokens(client).iter().position(|t| t == token)?;
    let issued = env.ims.requests_to(EndpointKind::ClientCredentials, client);
    let issued: Vec<_> = issued.into_iter().filter(|r| r.outcome == Outcome::Issued).collect();
    issued.get(index)?.secret_uuid.clone()
}

/// Every token request for the workload (Firefly scopes) was answered with a token, but for
/// those a test held on purpose.
pub fn assert_no_failed_workload_requests(env: &TestEnv, client: &str) {
    for request in env.ims.requests_to(EndpointKind::ClientCredentials, client) {
        if request.fault.is_none() && request.scope.as_deref().is_some_and(|s| s.contains("firefly_api")) {
            assert_eq!(request.outcome, Outcome::Issued, "a workload token request failed: {request:?}");
        }
    }
}

/// Requests the fake saw for `client` since `since`, by kind: (IMS token requests, management
/// list, add, delete).
pub fn requests_since(env: &TestEnv, client: &str, since: SystemTime) -> (usize, usize, usize, usize) {
    let log: Vec<_> = env.ims.requests_for(client).into_iter().filter(|r| r.received_at >= since).collect();
    let count = |kind| log.iter().filter(|r| r.endpoint == kind).count();
    (
        count(EndpointKind::ClientCredentials),
        count(EndpointKind::ManagementList),
        count(EndpointKind::ManagementAdd),
        count(EndpointKind::ManagementDelete),
    )
}

/// A version of the target: its access_token and expires_at, when it was seen, whether deleted.
type SeenVersion = (Option<String>, Option<String>, SystemTime, bool);

/// Watches the target Secret; every version must hold a token the fake issued, unexpired when
/// seen, and the Secret must never disappear.
pub struct TargetWatch {
    seen: Arc<Mutex<Vec<SeenVersion>>>,
    task: tokio::task::JoinHandle<()>,
}

impl TargetWatch {
    pub fn start(env: &TestEnv, target: &str) -> Self {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let log = seen.clone();
        let config = watcher::Config::default().fields(&format!("metadata.name={target}"));
        let stream = watcher(env.secrets(), config).default_backoff();
        let task = tokio::spawn(async move {
            let mut stream = std::pin::pin!(stream);
            while let Some(Ok(event)) = stream.next().await {
                let (secret, deleted): (Option<Secret>, bool) = match event {
                    watcher::Event::Apply(s) | watcher::Event::InitApply(s) => (Some(s), false),
                    watcher::Event::Delete(s) => (Some(s), true),
                    _ => (None, false),
                };
                if let Some(s) = secret {
                    let entry = (key(&s, "access_token"), key(&s, "expires_at"), SystemTime::now(), deleted);
                    log.lock().expect("log").push(entry);
                }
            }
        });
        Self { seen, task }
    }

    /// Fails unless the target held a valid issued token in every version seen.
    pub fn assert_valid_throughout(&self, env: &TestEnv, client: &str) -> usize {
        let issued = env.ims.issued_tokens(client);
        let seen = self.seen.lock().expect("log").clone();
        assert!(!seen.is_empty(), "the target was watched");
        for (token, expires_at, at, deleted) in &seen {
            assert!(!deleted, "the target Secret was deleted");
            let token = token.as_ref().expect("an access_token in every version");
            assert!(issued.contains(token), "a token the fake did not issue");
            let expires: jiff::Timestamp = expires_at.as_ref().expect("expires_at").parse().expect("RFC 3339");
            let seen_at = jiff::Timestamp::try_from(*at).expect("time");
            assert!(expires > seen_at, "an expired token in the target");
        }
        seen.len()
    }
}

impl Drop for TargetWatch {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The leak check, with every secret the fake created through the management API.
pub async fn assert_no_leaks(env: &mut TestEnv, client: &str) {
    let created = env.ims.created_client_secrets(client);
    env.seeded_secrets.extend(created);
    env.assert_no_leaks(&[client]).await;
}

/// Waits until an Event with `reason` was published (Events follow the status write).
pub async fn wait_event(env: &TestEnv, reason: &str) -> k8s_openapi::api::events::v1::Event {
    eventually(&format!("an Event {reason}"), WAIT, || async {
        env.events().await.into_iter().find(|e| e.reason.as_deref() == Some(reason))
    })
    .await
}

/// Waits `d` (for steps that must not happen before some time).
pub async fn pause(d: Duration) {
    tokio::time::sleep(d).await;
}
