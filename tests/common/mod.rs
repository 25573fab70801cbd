//! Shared pieces of the integration tests: a namespace on the real control plane, a fake Adobe
//! IMS served over TLS with its own CA, and the operator binary scoped to that namespace.
#![allow(dead_code)] // each test binary uses a different subset

pub mod tools;

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use adobe_credential_operator::crd::{
    AdobeCredential, AdobeCredentialSpec, ClientSecretRef, OAuthServerToServer, OAuthWebApp, PasswordGrant,
    RefreshTokenRef, UserSecretRef,
};
use fake_token_server::{AdobeClient, FakeTokenServer, Outcome};
use futures::StreamExt;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::api::events::v1::Event;
use kube::api::{ListParams, Patch, PatchParams, PostParams};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client, ResourceExt};
use test_support::{ControlPlane, LoopbackTls, TestNamespace};

pub const WAIT: Duration = Duration::from_secs(60);
pub const HOUR: Duration = Duration::from_secs(3600);
pub const DAY: Duration = Duration::from_secs(86_400);
/// Leader election with short timings (lease 4 s, renew deadline 3 s, retry 1 s), for failover
/// tests; add `--lease-name` and `--lease-namespace`.
pub const FAST_LEADER_ELECTION: [&str; 7] =
    ["--leader-election", "--lease-duration", "4s", "--lease-renew-deadline", "3s", "--lease-retry-period", "1s"];
pub const FIREFLY_SCOPES: [&str; 7] =
    ["openid", "AdobeID", "session", "additional_info", "read_organizations", "firefly_api", "ff_apis"];

/// Polls `probe` until it returns `Some`, or fails the test after `timeout`.
pub async fn eventually<T, F, Fut>(what: &str, timeout: Duration, mut probe: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if let Some(value) = probe().await {
            return value;
        }
        assert!(tokio::time::Instant::now() < deadline, "timed out after {timeout:?} waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The operator binary, started as a child process that serves one namespace.
pub struct Operator {
    child: tokio::process::Child,
    log_path: PathBuf,
    /// Where the operator writes its HTTP server's address (`--http-addr-file`).
    addr_file: PathBuf,
}

impl Operator {
    pub async fn start(namespace: &str, kubeconfig: &Path, ca_file: &Path, log_path: PathBuf) -> Self {
        Self::start_with(namespace, kubeconfig, ca_file, log_path, &[]).await
    }

    /// Starts the operator with extra flags (leader election, rate limits, …).
    pub async fn start_with(
        namespace: &str,
        kubeconfig: &Path,
        ca_file: &Path,
        log_path: PathBuf,
        extra: &[&str],
    ) -> Self {
        let log = std::fs::OpenOptions::new().create(true).append(true).open(&log_path).expect("log file");
        // Defaults for tests, each unless `extra` sets it (a flag given twice is an error). Tests
        // renew tokens of a few seconds, hence the short mint floor.
        let defaults = [
            ("--token-request-timeout", "5s"),
            ("--log-level", "info,adobe_credential_operator=debug"),
            ("--http-addr", "127.0.0.1:0"),
            ("--min-mint-interval", "1s"),
        ];
        let defaults = defaults.into_iter().filter(|(flag, _)| !extra.contains(flag)).flat_map(|(f, v)| [f, v]);
        static STARTED: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let started = STARTED.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let addr_file = log_path.with_extension(format!("{started}.addr"));
        let child = tokio::process::Command::new(env!("CARGO_BIN_EXE_adobe-credential-operator"))
            .arg("run")
            .args(["--namespaces", namespace])
            .args(["--allowed-token-hosts", "127.0.0.1"])
            .arg("--extra-ca-file")
            .arg(ca_file)
            .args(defaults)
            .arg("--http-addr-file")
            .arg(&addr_file)
            .args(extra)
            .env("KUBECONFIG", kubeconfig)
            .env_remove("ACO_NAMESPACES")
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .kill_on_drop(true)
            .spawn()
            .expect("operator binary starts");
        Self { child, log_path, addr_file }
    }

    pub fn logs(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    /// Base URL of the operator's /metrics, /healthz and /readyz, once it has written its
    /// address file.
    pub async fn http_url(&self) -> String {
        eventually("the operator's HTTP address", WAIT, || async {
            let address = std::fs::read_to_string(&self.addr_file).ok().filter(|a| !a.is_empty())?;
            Some(format!("http://{address}"))
        })
        .await
    }

    /// The operator's /metrics text.
    pub async fn metrics(&self) -> String {
        http_get(&format!("{}/metrics", self.http_url().await)).await.1
    }

    /// Reconciles that inspected a credential's inputs and target so far.
    pub async fn reconciles(&self) -> u64 {
        metric(&self.metrics().await, "adobe_credential_reconciles_total").map_or(0, |v| v as u64)
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.id()
    }

    /// SIGKILL: no graceful shutdown, as when a node dies.
    pub async fn kill(mut self) {
        self.child.kill().await.expect("kill operator");
    }

    /// Waits for the process to exit by itself (after SIGTERM, or when it loses its lease).
    pub async fn wait_exit(&mut self, timeout: Duration) -> std::process::ExitStatus {
        match tokio::time::timeout(timeout, self.child.wait()).await {
            Ok(status) => status.expect("wait"),
            Err(_) => panic!("the operator did not exit within {timeout:?}; its log:\n{}", self.logs()),
        }
    }
}

/// One test's world: its namespace, a fake IMS and the operator.
pub struct TestEnv {
    pub control_plane: &'static ControlPlane,
    pub namespace: TestNamespace,
    pub client: Client,
    pub ims: FakeTokenServer,
    pub dir: tempfile::TempDir,
    pub operator: Option<Operator>,
    /// Every secret value seeded in this test, checked for leaks at the end.
    pub seeded_secrets: Vec<String>,
    /// Token lifetimes of the fake's clients, for the mint tripwire. Clients not listed get
    /// tokens long enough that no renewal falls within a test (the fake's defaults: a day for
    /// Adobe, an hour for Akeneo).
    lifetimes: HashMap<String, Duration>,
    /// Every Ready condition any credential of the namespace went through, in order.
    ready_history: Arc<Mutex<Vec<(String, String, String)>>>,
    history_task: tokio::task::JoinHandle<()>,
    /// Flags every operator this environment starts gets (also after restarts).
    operator_flags: Vec<String>,
}

impl TestEnv {
    pub async fn new(prefix: &str) -> Self {
        Self::with_flags(prefix, &[]).await
    }

    /// A test world whose operators (the first and every restarted one) run with `flags`.
    pub async fn with_flags(prefix: &str, flags: &[&str]) -> Self {
        let control_plane = test_support::control_plane();
        let client = control_plane.client();
        install_crd(control_plane).await;
        let namespace = control_plane.namespace(prefix).await.expect("namespace");
        let tls = LoopbackTls::generate().expect("TLS material");
        let ims = FakeTokenServer::start_tls(&tls.cert_pem, &tls.key_pem).await.expect("fake IMS");
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join("ca.pem"), &tls.ca_pem).expect("ca file");
        let ready_history = Arc::new(Mutex::new(Vec::new()));
        let history_task = tokio::spawn(record_ready_history(
            Api::namespaced(client.clone(), namespace.name()),
            ready_history.clone(),
        ));
        let mut env = Self {
            control_plane,
            namespace,
            client,
            ims,
            dir,
            operator: None,
            seeded_secrets: Vec::new(),
            lifetimes: HashMap::new(),
            ready_history,
            history_task,
            operator_flags: flags.iter().map(|f| f.to_string()).collect(),
        };
        env.start_operator().await;
        env
    }

    pub fn ns(&self) -> &str {
        self.namespace.name()
    }

    pub async fn start_operator(&mut self) {
        let log = self.dir.path().join("operator.log");
        let flags: Vec<&str> = self.operator_flags.iter().map(String::as_str).collect();
        let (kubeconfig, ca) = (self.control_plane.kubeconfig_path(), self.dir.path().join("ca.pem"));
        let operator = Operator::start_with(self.ns(), kubeconfig, &ca, log, &flags).await;
        self.operator = Some(operator);
    }

    /// SIGKILLs the operator, starts a new one and waits until it has reconciled each of
    /// `credentials` (all holding tokens): the new process exports their expiry once it has
    /// looked at their targets.
    pub async fn restart_operator(&mut self, credentials: &[&str]) {
        self.kill_operator().await;
        self.start_operator().await;
        let operator = self.operator.as_ref().expect("operator");
        let ns = self.ns().to_owned();
        eventually("the restarted operator to reconcile every credential", WAIT, || async {
            let text = operator.metrics().await;
            let reconciled = |name: &str| {
                let labels = format!(r#"namespace="{ns}",name="{name}""#);
                text.lines().any(|l| l.starts_with("adobe_credential_token_expiry_seconds{") && l.contains(&labels))
            };
            credentials.iter().all(|name| reconciled(name)).then_some(())
        })
        .await;
    }

    /// Replaces the operator with one serving `namespaces` (comma-separated) with extra flags.
    pub async fn restart_operator_with(&mut self, namespaces: &str, flags: &[&str]) {
        self.kill_operator().await;
        let log = self.dir.path().join("operator.log");
        let ca = self.ca_file();
        self.operator =
            Some(Operator::start_with(namespaces, self.control_plane.kubeconfig_path(), &ca, log, flags).await);
    }

    /// Fails unless every condition message of the namespace's credentials is one human line:
    /// bounded, without line breaks or Rust debug dumps.
    pub async fn assert_status_messages_are_human(&self) {
        for cred in self.credentials().list(&ListParams::default()).await.expect("list").items {
            for c in cred.status.iter().flat_map(|s| s.conditions.iter()) {
                let m = &c.message;
                let dump = ["Status {", "Some(", "Error {", "\n"].iter().any(|d| m.contains(d));
                assert!(!dump && !m.contains('\n') && m.len() <= 1024, "{}: {} {m:?}", cred.name_any(), c.type_);
            }
        }
    }

    pub async fn kill_operator(&mut self) {
        if let Some(operator) = self.operator.take() {
            operator.kill().await;
        }
    }

    pub fn logs(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("operator.log")).unwrap_or_default()
    }

    /// The operator binary's `subcommand` (`check`, `login`) with the fake IMS allowed and
    /// trusted, and the test cluster as its kubeconfig; the caller adds the arguments.
    pub fn command_line(&self, subcommand: &str) -> tokio::process::Command {
        let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_adobe-credential-operator"));
        command
            .arg(subcommand)
            .args(["--allowed-token-hosts", "127.0.0.1", "--extra-ca-file"])
            .arg(self.ca_file())
            .env("KUBECONFIG", self.control_plane.kubeconfig_path())
            .env_remove("ACO_ALLOWED_TOKEN_HOSTS");
        command
    }

    pub fn ca_file(&self) -> PathBuf {
        self.dir.path().join("ca.pem")
    }

    pub fn credentials(&self) -> Api<AdobeCredential> {
        Api::namespaced(self.client.clone(), self.ns())
    }

    pub fn secrets(&self) -> Api<Secret> {
        Api::namespaced(self.client.clone(), self.ns())
    }

    /// Registers `client_id` at the fake IMS with Firefly scopes and `lifetime` tokens.
    pub fn register_client(&mut self, client_id: &str, secret: &str, lifetime: Duration) {
        self.seeded_secrets.push(secret.to_owned());
        self.expect_lifetime(client_id, lifetime);
        self.ims
            .register_adobe_client(
                AdobeClient::new(client_id, secret).with_scopes(FIREFLY_SCOPES).with_token_lifetime(lifetime),
            )
            .expect("register client");
    }

    /// Records the lifetime of the tokens `client_id` gets, for the mint tripwire.
    pub fn expect_lifetime(&mut self, client_id: &str, lifetime: Duration) {
        self.lifetimes.insert(client_id.to_owned(), lifetime);
    }

    /// The mint tripwire every test ends with: no client of the fake got more tokens than the
    /// first one, one per renewal period of its lifetime since then, and the `extra` the test
    /// caused on purpose (rotations, spec changes, restarts without a valid token, injected
    /// faults that still issued a token). A mint loop anywhere fails every test it shows up in,
    /// also the ones not written for it.
    pub fn assert_no_mint_loop(&self, extra: &[(&str, usize)]) {
        let mut first_and_count: BTreeMap<String, (std::time::SystemTime, usize)> = BTreeMap::new();
        for record in self.ims.requests().into_iter().filter(|r| r.outcome == Outcome::Issued) {
            let Some(client) = record.client_id else { continue };
            let entry = first_and_count.entry(client).or_insert((record.received_at, 0));
            entry.1 += 1;
        }
        for (client, (first, count)) in first_and_count {
            let elapsed = first.elapsed().unwrap_or_default();
            // A renewal comes at two thirds of the lifetime less at most a tenth of a third.
            let renewals =
                self.lifetimes.get(&client).map_or(0, |l| (elapsed.as_secs_f64() / (l.as_secs_f64() * 0.6)) as usize);
            let planned = extra.iter().filter(|(c, _)| *c == client).map(|(_, n)| n).sum::<usize>();
            let budget = 1 + renewals + planned;
            assert!(
                count <= budget,
                "mint loop? {client} got {count} tokens in {elapsed:?}; expected at most {budget} (1 + {renewals} renewals + {planned} planned)"
            );
        }
    }

    /// Creates or replaces the source Secret holding a client ID and secret.
    pub async fn put_source(&mut self, name: &str, client_id: &str, client_secret: &str) {
        self.put_secret(name, &[("client_id", client_id)], &[("client_secret", client_secret)]).await;
    }

    /// Creates a Secret, or replaces the given keys of an existing one. Values in `secret_pairs`
    /// are remembered for the leak check.
    pub async fn put_secret(&mut self, name: &str, plain_pairs: &[(&str, &str)], secret_pairs: &[(&str, &str)]) {
        self.seeded_secrets.extend(secret_pairs.iter().map(|(_, v)| v.to_string()));
        let data: BTreeMap<&str, &str> = plain_pairs.iter().chain(secret_pairs).copied().collect();
        let api = self.secrets();
        if api.get_opt(name).await.expect("get secret").is_some() {
            let patch = serde_json::json!({ "stringData": data });
            api.patch(name, &PatchParams::default(), &Patch::Merge(&patch)).await.expect("update secret");
        } else {
            let secret: Secret =
                serde_json::from_value(serde_json::json!({ "metadata": { "name": name }, "stringData": data }))
                    .expect("secret");
            api.create(&PostParams::default(), &secret).await.expect("create secret");
        }
    }

    /// An S2S credential on the fake IMS with Firefly scopes.
    pub fn s2s_credential(&self, name: &str, source: &str) -> AdobeCredential {
        AdobeCredential::new(
            name,
            AdobeCredentialSpec {
                oauth_server_to_server: Some(OAuthServerToServer {
                    client_secret_ref: client_secret_ref(source),
                    scopes: FIREFLY_SCOPES.iter().map(|s| s.to_string()).collect(),
                    ims_endpoint: self.ims.url().to_owned(),
                    org_id: Some("1234ABCD@AdobeOrg".into()),
                    client_secret_rotation: None,
                }),
                ..Default::default()
            },
        )
    }

    /// Registers the OAuth Web App client `<name>-client` (secret `p8e-<name>-secret`) at the fake
    /// IMS with `redirect_uri`, and puts its Secret `<name>-client`.
    pub async fn register_web_app(&mut self, name: &str, redirect_uri: &str) {
        let client_id = format!("{name}-client");
        let secret = format!("p8e-{name}-secret");
        let client = AdobeClient::new(&client_id, &secret).with_web_app(redirect_uri);
        self.ims.register_adobe_client(client).expect("client");
        self.put_source(&client_id, &client_id, &secret).await;
    }

    /// An `oauthWebApp` credential `name` for the client of [`register_web_app`](Self::register_web_app),
    /// starting its chain from the refresh token in Secret `<name>-user`.
    pub fn web_app_spec(&self, name: &str) -> AdobeCredential {
        let mut cred = self.s2s_credential(name, "unused");
        cred.spec.oauth_server_to_server = None;
        cred.spec.oauth_web_app = Some(OAuthWebApp {
            client_secret_ref: client_secret_ref(&format!("{name}-client")),
            refresh_token_ref: RefreshTokenRef { name: format!("{name}-user"), key: "refresh_token".into() },
            scopes: vec!["openid".into(), "AdobeID".into(), "offline_access".into()],
            ims_endpoint: self.ims.url().to_owned(),
        });
        cred
    }

    /// The user's browser at the fake IMS.
    pub fn browser(&self) -> Browser {
        Browser::new(&self.ca_file())
    }

    /// Plays the user's browser for a registered OAuth Web App client: authorize with PKCE,
    /// follow the redirect, exchange the code. Returns the refresh token that starts a chain.
    pub async fn sign_in_user(&self, client_id: &str, client_secret: &str, redirect_uri: &str, scope: &str) -> String {
        use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
        use sha2::{Digest, Sha256};

        let verifier = format!("{client_id}-verifier-0123456789-0123456789-0123456789");
        let challenge = URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes()));
        let mut authorize = reqwest::Url::parse(&format!("{}/ims/authorize/v2", self.ims.url())).expect("url");
        authorize
            .query_pairs_mut()
            .append_pair("client_id", client_id)
            .append_pair("redirect_uri", redirect_uri)
            .append_pair("scope", scope)
            .append_pair("response_type", "code")
            .append_pair("state", "st")
            .append_pair("code_challenge", &challenge)
            .append_pair("code_challenge_method", "S256");
        let browser = self.browser();
        let location = browser.consent(authorize.as_str()).await;
        let code = location.query_pairs().find(|(k, _)| k == "code").expect("code").1.into_owned();
        let body: serde_json::Value = browser
            .client
            .post(format!("{}/ims/token/v3", self.ims.url()))
            .form(&[
                ("grant_type", "authorization_code"),
                ("client_id", client_id),
                ("client_secret", client_secret),
                ("code", code.as_str()),
                ("code_verifier", verifier.as_str()),
            ])
            .send()
            .await
            .expect("code exchange")
            .json()
            .await
            .expect("token response");
        body["refresh_token"].as_str().expect("refresh token").to_owned()
    }

    /// An `oauthWebApp` credential: registers its client, signs the user in and puts the initial
    /// refresh token into the Secret `<name>-user`.
    pub async fn web_app_credential(&mut self, name: &str) -> AdobeCredential {
        const REDIRECT: &str = "https://localhost:8443/callback";
        self.register_web_app(name, REDIRECT).await;
        let (client_id, secret) = (format!("{name}-client"), format!("p8e-{name}-secret"));
        let refresh_token = self.sign_in_user(&client_id, &secret, REDIRECT, "openid,AdobeID,offline_access").await;
        self.put_secret(&format!("{name}-user"), &[], &[("refresh_token", &refresh_token)]).await;
        self.web_app_spec(name)
    }

    /// An Akeneo (password grant) credential `name` on the fake, with its client `<name>-client`
    /// (secret `p8e-<name>-secret`) and API user `<name>-user` (password `pw-<name>-1`) registered
    /// and their Secrets created.
    pub async fn akeneo_credential(&mut self, name: &str) -> AdobeCredential {
        let client_id = format!("{name}-client");
        let secret = format!("p8e-{name}-secret");
        self.ims.register_akeneo_client(&client_id, &secret);
        self.ims.register_akeneo_user(format!("{name}-user"), format!("pw-{name}-1"));
        self.put_source(&format!("{name}-client"), &client_id, &secret).await;
        self.put_secret(
            &format!("{name}-user"),
            &[("username", &format!("{name}-user"))],
            &[("password", &format!("pw-{name}-1"))],
        )
        .await;
        let mut cred = self.s2s_credential(name, "unused");
        cred.spec.oauth_server_to_server = None;
        cred.spec.password_grant = Some(PasswordGrant {
            token_url: format!("{}/api/oauth/v1/token", self.ims.url()),
            client_secret_ref: client_secret_ref(&format!("{name}-client")),
            user_secret_ref: UserSecretRef {
                name: format!("{name}-user"),
                username_key: "username".into(),
                password_key: "password".into(),
            },
        });
        cred
    }

    pub async fn create(&self, cred: &AdobeCredential) {
        self.credentials().create(&PostParams::default(), cred).await.expect("create AdobeCredential");
    }

    /// Waits until the Ready condition has `status` and `reason`.
    pub async fn wait_ready(&self, name: &str, status: &str, reason: &str) -> AdobeCredential {
        let api = self.credentials();
        eventually(&format!("{name} Ready={status} reason={reason}"), WAIT, || {
            let api = api.clone();
            async move {
                let cred = api.get(name).await.ok()?;
                let ready = cred.status.as_ref()?.conditions.iter().find(|c| c.type_ == "Ready")?;
                (ready.status == status && ready.reason == reason).then_some(cred)
            }
        })
        .await
    }

    /// Waits until `name` has gone through Ready=`status` with `reason`, however briefly: the
    /// history comes from a watch, so short-lived states are not missed by polling.
    pub async fn wait_seen(&self, name: &str, status: &str, reason: &str) {
        eventually(&format!("{name} to pass through Ready={status} reason={reason}"), WAIT, || async {
            let history = self.ready_history.lock().expect("history");
            history.iter().any(|(n, s, r)| n == name && s == status && r == reason).then_some(())
        })
        .await
    }

    /// The Ready reasons `name` has gone through so far, in order.
    pub fn ready_reasons_seen(&self, name: &str) -> Vec<String> {
        let history = self.ready_history.lock().expect("history");
        history.iter().filter(|(n, _, _)| n == name).map(|(_, _, reason)| reason.clone()).collect()
    }

    pub async fn target(&self, name: &str) -> Option<Secret> {
        self.secrets().get_opt(name).await.expect("get target")
    }

    pub async fn events(&self) -> Vec<Event> {
        let api: Api<Event> = Api::namespaced(self.client.clone(), self.ns());
        api.list(&ListParams::default()).await.expect("list events").items
    }

    /// Fails when any seeded secret or any token the fake issued appears in the operator's logs,
    /// in an Event or in a status.
    pub async fn assert_no_leaks(&self, client_ids: &[&str]) {
        let mut needles = self.seeded_secrets.clone();
        for id in client_ids {
            needles.extend(self.ims.issued_tokens(id));
        }
        let mut haystacks = vec![("operator log".to_string(), self.logs())];
        if let Some(operator) = &self.operator {
            haystacks.push(("metrics".into(), http_get(&format!("{}/metrics", operator.http_url().await)).await.1));
        }
        for event in self.events().await {
            haystacks.push(("event".into(), serde_json::to_string(&event).expect("json")));
        }
        for cred in self.credentials().list(&ListParams::default()).await.expect("list").items {
            haystacks.push(("status".into(), serde_json::to_string(&cred.status).expect("json")));
        }
        assert!(!needles.is_empty());
        for (what, text) in &haystacks {
            for needle in &needles {
                assert!(!text.contains(needle.as_str()), "a secret value leaked into the {what}");
            }
        }
    }
}

impl Drop for TestEnv {
    fn drop(&mut self) {
        self.history_task.abort();
        // The temp dir goes away with the test: show the operator's side of a failure first.
        if std::thread::panicking() {
            let logs = self.logs();
            let tail: Vec<&str> = logs.lines().rev().take(60).collect();
            eprintln!("--- operator log (last {} lines) ---", tail.len());
            for line in tail.iter().rev() {
                eprintln!("{line}");
            }
        }
    }
}

async fn record_ready_history(api: Api<AdobeCredential>, history: Arc<Mutex<Vec<(String, String, String)>>>) {
    let mut events = std::pin::pin!(watcher(api, watcher::Config::default()).default_backoff().applied_objects());
    while let Some(event) = events.next().await {
        let Ok(cred) = event else { continue };
        let ready = cred.status.as_ref().and_then(|s| s.conditions.iter().find(|c| c.type_ == "Ready"));
        if let Some(c) = ready {
            let entry = (cred.name_any(), c.status.clone(), c.reason.clone());
            let mut history = history.lock().expect("history");
            if history.last() != Some(&entry) {
                history.push(entry);
            }
        }
    }
}

/// A reference to the client ID and secret under the default keys of Secret `name`.
pub fn client_secret_ref(name: &str) -> ClientSecretRef {
    ClientSecretRef {
        name: name.to_owned(),
        client_id_key: "client_id".into(),
        client_secret_key: "client_secret".into(),
        secondary_client_secret_key: None,
    }
}

/// The user's browser: trusts the fake IMS's CA and follows no redirect by itself.
pub struct Browser {
    pub client: reqwest::Client,
}

impl Browser {
    pub fn new(ca_file: &Path) -> Self {
        let ca = std::fs::read(ca_file).expect("ca file");
        let client = reqwest::Client::builder()
            .add_root_certificate(reqwest::Certificate::from_pem(&ca).expect("ca"))
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .expect("browser");
        Self { client }
    }

    /// Opens IMS's consent page (the fake consents at once for its signed-in user) and returns
    /// the address it sends the browser to.
    pub async fn consent(&self, authorize_url: &str) -> reqwest::Url {
        let response = self.client.get(authorize_url).send().await.expect("authorize");
        assert_eq!(response.status(), reqwest::StatusCode::FOUND, "IMS redirects after the consent");
        let location = response.headers()["location"].to_str().expect("location");
        reqwest::Url::parse(location).expect("redirect URL")
    }
}

/// Installs the operator's CRD (from `crds/`, as users do) once per test binary.
pub async fn install_crd(control_plane: &ControlPlane) {
    static INSTALLED: tokio::sync::OnceCell<()> = tokio::sync::OnceCell::const_new();
    INSTALLED
        .get_or_init(|| async {
            for file in ["adobecredentials.yaml", "clusteradobecredentials.yaml"] {
                let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("crds").join(file);
                let yaml = std::fs::read_to_string(&path).expect("a CRD file of crds/");
                control_plane.install_crd_yaml(&yaml).await.expect("CRD established");
            }
        })
        .await;
}

/// Status code and body of a plain HTTP GET (the operator's own endpoints).
pub async fn http_get(url: &str) -> (u16, String) {
    let response = reqwest::get(url).await.expect("GET");
    let status = response.status().as_u16();
    (status, response.text().await.expect("body"))
}

/// The value of an unlabelled metric in /metrics text.
pub fn metric(text: &str, name: &str) -> Option<f64> {
    text.lines().find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
}

/// Sends SIGTERM (graceful shutdown) to a process.
pub fn sigterm(pid: u32) {
    signal(pid, "TERM");
}

/// Sends signal `name` (TERM, STOP, CONT, …) to process `pid`.
pub fn signal(pid: u32, name: &str) {
    let status =
        std::process::Command::new("kill").args([&format!("-{name}"), &pid.to_string()]).status().expect("kill");
    assert!(status.success());
}

/// The fingerprint the operator writes to status and annotations for a token.
pub fn fingerprint(token: &str) -> String {
    adobe_credential_operator::secret_value::SecretValue::new(token).fingerprint()
}

/// Text of a key of a Secret.
pub fn key(secret: &Secret, key: &str) -> Option<String> {
    secret.data.as_ref()?.get(key).map(|v| String::from_utf8_lossy(&v.0).into_owned())
}
