//! `adobe-credential-operator login` end to end: the test plays the user's browser (it opens the
//! address the command prints, the fake IMS consents, and the browser follows the redirect to the
//! command's local HTTPS endpoint or the user pastes it). The refresh token the command writes is
//! used by a credential on the real API server, and a new login revives a dead chain.

mod common;

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use adobe_credential_operator::crd::AdobeCredential;
use common::{TestEnv, WAIT, key};
use fake_token_server::{AdobeClient, EndpointKind, Outcome};
use k8s_openapi::api::core::v1::Secret;
use kube::ResourceExt;
use kube::api::PostParams;
use serde_json::json;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, ChildStderr};

const USER: &str = "test-user@AdobeID";

/// A `login` process with the fake IMS allowed, its output captured, in the test's directory.
fn login(env: &TestEnv, args: &[&str]) -> Child {
    env.command_line("login")
        .args(args)
        .current_dir(env.dir.path())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("login starts")
}

/// The address the command asks the user to open (its line on standard error), and everything
/// it said before it.
async fn authorize_address(stderr: &mut BufReader<ChildStderr>, ims: &str) -> (String, String) {
    let mut said = String::new();
    let read = async {
        loop {
            let mut line = String::new();
            assert!(stderr.read_line(&mut line).await.expect("stderr") > 0, "login ended before a sign-in: {said}");
            said.push_str(&line);
            if line.starts_with(&format!("{ims}/ims/authorize/v2?")) {
                return line.trim().to_owned();
            }
        }
    };
    let address = tokio::time::timeout(WAIT, read).await.expect("the sign-in address");
    (address, said)
}

/// Waits for the command's end: its success and everything it wrote.
async fn finish(child: Child, said_before: String) -> (bool, String, String) {
    let output = tokio::time::timeout(WAIT, child.wait_with_output()).await.expect("login ends").expect("output");
    let said = said_before + &String::from_utf8_lossy(&output.stderr);
    (output.status.success(), String::from_utf8_lossy(&output.stdout).into_owned(), said)
}

/// A free port on this machine for the redirect URI (as a user picks one to register).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr").port()
}

/// Signs in through the command's local endpoint and returns whether it succeeded, and its
/// standard output and error.
async fn login_with_callback(env: &TestEnv, redirect: &str, args: &[&str]) -> (bool, String, String) {
    sign_in_at_callback(env, redirect, login(env, &[args, &["--redirect-uri", redirect]].concat())).await
}

/// Plays the browser for a running `login` with redirect URI `redirect`.
async fn sign_in_at_callback(env: &TestEnv, redirect: &str, mut child: Child) -> (bool, String, String) {
    let mut stderr = BufReader::new(child.stderr.take().expect("stderr"));
    let (address, said) = authorize_address(&mut stderr, env.ims.url()).await;
    let location = env.browser().consent(&address).await;
    assert!(location.as_str().starts_with(redirect), "{location}");
    // The user accepts the certificate made for this sign-in, as a browser asks them to.
    let accepting = reqwest::Client::builder().danger_accept_invalid_certs(true).build().expect("browser");
    let page = accepting.get(location).send().await.expect("the local endpoint answers");
    assert_eq!(page.status(), reqwest::StatusCode::OK);
    let rest = tokio::spawn(async move {
        let mut rest = String::new();
        tokio::io::AsyncReadExt::read_to_string(&mut stderr, &mut rest).await.expect("stderr");
        rest
    });
    let (ok, out, _) = finish(child, String::new()).await;
    (ok, out, said + &rest.await.expect("stderr reader"))
}

fn assert_says_no_token(env: &TestEnv, text: &str, refresh_tokens: &[String]) {
    for token in env.ims.issued_tokens("lg-client").iter().chain(refresh_tokens) {
        assert!(!text.contains(token.as_str()), "login printed a token: {text}");
    }
}

/// The files in the test's directory that keep a refresh token.
fn kept_files(env: &TestEnv) -> Vec<String> {
    let entries = std::fs::read_dir(env.dir.path()).expect("test directory");
    let names = entries.map(|entry| entry.expect("entry").file_name().to_string_lossy().into_owned());
    names.filter(|name| name.contains(".refresh-token-")).collect()
}

/// The file the one error line in `said` says keeps the refresh token.
fn kept_file(said: &str) -> PathBuf {
    let errors: Vec<&str> = said.lines().filter(|line| line.starts_with("error: ")).collect();
    assert_eq!(errors.len(), 1, "{said}");
    let kept =
        errors[0].split_once("the refresh token is kept in ").and_then(|(_, rest)| rest.split_once(" (mode 0600)"));
    PathBuf::from(kept.expect("the error names the file").0)
}

/// The Secret manifest in `path`, which only its owner may read.
fn private_manifest(path: &Path) -> Secret {
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(path).expect("the file").permissions().mode();
    assert_eq!(mode & 0o777, 0o600, "{}", path.display());
    serde_yaml::from_str(&std::fs::read_to_string(path).expect("read")).expect("a Secret manifest")
}

async fn refresh_token_of(env: &TestEnv, name: &str) -> String {
    key(&env.target(name).await.expect("the user's Secret"), "refresh_token").expect("refresh token")
}

#[tokio::test]
async fn login_writes_the_refresh_token_a_credential_keeps_alive_and_a_new_login_revives_a_dead_chain() {
    let mut env = TestEnv::new("login").await;
    let redirect = format!("https://localhost:{}/callback", free_port());
    env.register_web_app("lg", &redirect).await;
    env.ims.set_adobe_token_lifetime("lg-client", Duration::from_secs(6)).expect("lifetime");
    env.expect_lifetime("lg-client", Duration::from_secs(6));
    // The platform team applies the credential first; it waits for the user's Secret.
    env.create(&env.web_app_spec("lg")).await;
    env.wait_ready("lg", "False", "SourceSecretNotFound").await;
    // `check` reads a credential by name from the cluster, and refuses to spend a refresh token.
    let check = env.command_line("check").args(["lg", "-n", env.ns()]).output().await.expect("check runs");
    assert!(!check.status.success());
    assert!(String::from_utf8_lossy(&check.stdout).contains("CheckWouldSpendInputs"));

    let (ok, out, said) = login_with_callback(&env, &redirect, &["lg", "-n", env.ns(), "--apply"]).await;
    assert!(ok, "{said}");
    assert!(out.is_empty(), "--apply prints no manifest: {out}");
    let first = refresh_token_of(&env, "lg-user").await;
    let secret = env.target("lg-user").await.expect("secret");
    let managers: Vec<_> = secret.managed_fields().iter().filter_map(|m| m.manager.clone()).collect();
    assert_eq!(managers, ["adobe-credential-operator-login"]);
    assert!(said.contains(&format!("into Secret {}/lg-user, key refresh_token", env.ns())), "{said}");
    assert_eq!(kept_files(&env), Vec::<String>::new(), "the file that kept the token during the write is gone");

    env.wait_ready("lg", "True", "TokenMinted").await;
    env.ims.wait_for_mints("lg-client", 3, WAIT).await.expect("the code exchange and two refreshes");
    let outcomes: Vec<Outcome> =
        env.ims.requests_to(EndpointKind::UserRefresh, "lg-client").into_iter().map(|r| r.outcome).collect();
    assert!(outcomes.iter().all(|o| *o == Outcome::Issued), "the chain started from login's token: {outcomes:?}");

    // The user revokes consent: Ready False, and the message says to run login again.
    assert_eq!(env.ims.revoke_user_consent("lg-client", USER), 1);
    let dead = env.wait_ready("lg", "False", "ReauthorizationRequired").await;
    let message = dead.status.expect("status").conditions[0].message.clone();
    assert!(message.contains(&format!("`adobe-credential-operator login lg -n {} --apply`", env.ns())), "{message}");
    let before = key(&env.target("lg-token").await.expect("target"), "access_token").expect("token");

    let (ok, _, said_again) = login_with_callback(&env, &redirect, &["lg", "-n", env.ns(), "--apply"]).await;
    assert!(ok, "{said_again}");
    let second = refresh_token_of(&env, "lg-user").await;
    assert_ne!(first, second);
    // A new initial refresh token is a new input: a new chain starts from it at once.
    let revived = env.wait_ready("lg", "True", "TokenMinted").await;
    let after = key(&env.target("lg-token").await.expect("target"), "access_token").expect("token");
    assert_ne!(before, after, "a token of the new chain");
    assert_eq!(revived.status.expect("status").consecutive_failures, 0);
    assert_eq!(env.ims.live_refresh_tokens("lg-client"), 1, "one chain, at its newest token");

    let state = refresh_token_of(&env, "lg-refresh-state").await;
    assert_says_no_token(&env, &format!("{said}{said_again}"), &[first.clone(), second.clone(), state.clone()]);
    env.seeded_secrets.extend([first, second, state]);
    env.assert_no_leaks(&["lg-client"]).await;
    // Each login's code exchange is a token request of its own, not the operator's.
    env.assert_no_mint_loop(&[("lg-client", 2)]);
}

/// Signs in with `--paste`: pastes `address`, or by default the one the browser was sent to.
async fn paste(env: &TestEnv, file: &str, redirect: &str, address: Option<String>) -> (bool, String, String) {
    let mut child = login(env, &["-f", file, "--redirect-uri", redirect, "--paste"]);
    let mut stderr = BufReader::new(child.stderr.take().expect("stderr"));
    let (authorize, said) = authorize_address(&mut stderr, env.ims.url()).await;
    let location = env.browser().consent(&authorize).await;
    let pasted = address.unwrap_or_else(|| location.to_string());
    let mut stdin = child.stdin.take().expect("stdin");
    stdin.write_all(format!("{pasted}\n").as_bytes()).await.expect("paste");
    drop(stdin);
    let (ok, out, _) = finish(child, String::new()).await;
    let mut rest = String::new();
    tokio::io::AsyncReadExt::read_to_string(&mut stderr, &mut rest).await.expect("stderr");
    (ok, out, said + &rest)
}

/// Writes `documents` as one multi-document YAML file.
fn manifest(path: &Path, documents: &[serde_json::Value]) {
    let text: Vec<String> = documents.iter().map(|d| serde_yaml::to_string(d).expect("yaml")).collect();
    std::fs::write(path, text.join("---\n")).expect("write manifest");
}

/// The credential and its client Secret from files, and a redirect URI on another host: the
/// user pastes where the browser was sent. Only this sign-in's address gives a token, IMS's
/// refusal is said in one line, and the manifest on standard output holds a live refresh token.
#[tokio::test]
async fn login_by_paste_prints_the_secret_and_refuses_other_addresses() {
    let mut env = TestEnv::new("login-paste").await;
    env.kill_operator().await;
    let redirect = "https://app.example.com/adobe/callback";
    let scopes = ["openid", "AdobeID", "offline_access"];
    let client = AdobeClient::new("lg-client", "p8e-lg-secret").with_web_app(redirect).with_scopes(scopes);
    env.ims.register_adobe_client(client).expect("client");
    let client_secret = json!({
        "apiVersion": "v1", "kind": "Secret", "metadata": { "name": "lg-client" },
        "stringData": { "client_id": "lg-client", "client_secret": "p8e-lg-secret" },
    });
    let mut cred: AdobeCredential = env.web_app_spec("lg");
    cred.metadata.namespace = Some("team-a".into());
    let granted = env.dir.path().join("lg.yaml");
    manifest(&granted, &[serde_json::to_value(&cred).expect("json"), client_secret.clone()]);
    let granted = granted.to_str().expect("utf-8 path");
    // The same credential asking for a scope the client does not have.
    cred.spec.oauth_web_app.as_mut().expect("web app").scopes.push("firefly_api".into());
    let too_much = env.dir.path().join("lg-firefly.yaml");
    manifest(&too_much, &[serde_json::to_value(&cred).expect("json"), client_secret]);
    let too_much = too_much.to_str().expect("utf-8 path");

    // Without --paste, a redirect URI on another host cannot be received here.
    let (ok, _, said) = finish(login(&env, &["-f", granted, "--redirect-uri", redirect]), String::new()).await;
    assert!(!ok && said.contains("--paste"), "{said}");

    // An address of another sign-in (a forged or stale state) gives no token.
    let (ok, _, said) =
        paste(&env, granted, redirect, Some(format!("{redirect}?code=forged&state=not-this-one"))).await;
    assert!(!ok && said.contains("does not belong to this sign-in"), "{said}");
    assert!(env.ims.requests_to(EndpointKind::AuthorizationCode, "lg-client").is_empty(), "no code was redeemed");

    let (ok, out, said) = paste(&env, granted, redirect, None).await;
    assert!(ok, "{said}");
    let secret: Secret = serde_yaml::from_str(&out).expect("a Secret manifest on stdout");
    assert_eq!((secret.name_any(), secret.namespace().as_deref()), ("lg-user".to_owned(), Some("team-a")));
    let token = key(&secret, "refresh_token").expect("refresh token");
    assert_eq!(env.ims.live_refresh_tokens("lg-client"), 1, "the printed refresh token is live");
    assert_says_no_token(&env, &said, &[token]);

    // IMS refuses a scope the client does not have: said in one line, nothing printed.
    let (ok, out, said) = paste(&env, too_much, redirect, None).await;
    assert!(!ok && out.is_empty(), "{out}");
    assert!(said.contains("IMS refused the sign-in: invalid_scope"), "{said}");
}

/// A port whose [::1] side another program holds (the listener returned) while 127.0.0.1 is
/// free; none on a machine without IPv6 loopback.
fn port_taken_on_ipv6_loopback() -> Option<(u16, std::net::TcpListener)> {
    for _ in 0..20 {
        let taken = std::net::TcpListener::bind("[::1]:0").ok()?;
        let port = taken.local_addr().expect("addr").port();
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return Some((port, taken));
        }
    }
    panic!("no port with a free 127.0.0.1 side");
}

/// `localhost` is 127.0.0.1 and [::1]; a browser may use either. With [::1]:PORT held by another
/// program, the command stops with one clear line before any sign-in, instead of waiting on
/// 127.0.0.1 while the browser may hand the code to the other program.
#[tokio::test]
async fn login_stops_when_another_program_holds_the_ipv6_side_of_localhost() {
    let Some((port, _other_program)) = port_taken_on_ipv6_loopback() else {
        eprintln!("skipped: this machine has no IPv6 loopback ([::1]:0 cannot be bound)");
        return;
    };
    let mut env = TestEnv::new("login-v6").await;
    env.kill_operator().await;
    let redirect = format!("https://localhost:{port}/callback");
    env.register_web_app("lg", &redirect).await;
    env.create(&env.web_app_spec("lg")).await;

    let args = ["lg", "-n", env.ns(), "--apply", "--redirect-uri", &redirect, "--timeout", "10s"];
    let (ok, out, said) = finish(login(&env, &args), String::new()).await;
    assert!(!ok && out.is_empty(), "{said}");
    let errors: Vec<&str> = said.lines().filter(|line| line.starts_with("error: ")).collect();
    assert_eq!(errors.len(), 1, "{said}");
    let expected = format!("error: cannot receive the redirect on [::1]:{port} (Address already in use");
    assert!(errors[0].starts_with(&expected) && errors[0].contains("--paste"), "{said}");
    assert!(!said.contains("/ims/authorize/"), "no sign-in was offered: {said}");
    assert!(env.ims.requests_to(EndpointKind::AuthorizationCode, "lg-client").is_empty(), "no code exchange");
    assert_eq!(env.ims.mint_count("lg-client"), 0);
}

/// Once the code is redeemed the refresh token exists nowhere else. An `--apply` the API server
/// refuses (the user's Secret is immutable) keeps it in a new 0600 file that the error names;
/// `--output` writes the manifest into a new 0600 file, and refuses an existing one before the
/// sign-in; a manifest that standard output cannot take (a broken pipe) is kept like a refused
/// `--apply`.
#[tokio::test]
async fn login_keeps_the_refresh_token_when_the_write_fails_and_writes_only_new_private_files() {
    let mut env = TestEnv::new("login-keep").await;
    env.kill_operator().await;
    let redirect = format!("https://localhost:{}/callback", free_port());
    env.register_web_app("lg", &redirect).await;
    env.create(&env.web_app_spec("lg")).await;
    let frozen = json!({
        "apiVersion": "v1", "kind": "Secret", "metadata": { "name": "lg-user" },
        "immutable": true, "stringData": { "note": "frozen" },
    });
    env.secrets()
        .create(&PostParams::default(), &serde_json::from_value(frozen).expect("secret"))
        .await
        .expect("create");

    let (ok, out, said) = login_with_callback(&env, &redirect, &["lg", "-n", env.ns(), "--apply"]).await;
    assert!(!ok && out.is_empty(), "{said}");
    let errors: Vec<&str> = said.lines().filter(|line| line.starts_with("error: ")).collect();
    assert_eq!(errors.len(), 1, "{said}");
    assert!(errors[0].starts_with(&format!("error: writing Secret {}/lg-user: ", env.ns())), "{said}");
    assert!(errors[0].contains("immutable") && errors[0].contains("(HTTP 422"), "the API server's reason: {said}");
    assert!(!errors[0].contains("Status {"), "one human line, no debug dump: {said}");
    let kept = kept_file(&said);
    assert!(said.contains("Keeping refresh token sha256:"), "said before the write: {said}");
    let directory = kept.parent().expect("dir").canonicalize().expect("dir");
    assert_eq!(directory, env.dir.path().canonicalize().expect("dir"), "kept in the current directory");
    let secret = private_manifest(&kept);
    assert_eq!((secret.name_any(), secret.namespace()), ("lg-user".to_owned(), Some(env.ns().to_owned())));
    let token = key(&secret, "refresh_token").expect("the refresh token");
    assert_says_no_token(&env, &format!("{out}{said}"), std::slice::from_ref(&token));
    assert_eq!(env.ims.requests_to(EndpointKind::AuthorizationCode, "lg-client").len(), 1, "one code exchange");
    assert_eq!(env.ims.live_refresh_tokens("lg-client"), 1);
    let untouched = env.target("lg-user").await.expect("the user's Secret");
    assert_eq!(key(&untouched, "refresh_token"), None, "the API server refused the write");
    // The kept token is the live one: IMS refreshes with it.
    let refreshed = env
        .browser()
        .client
        .post(format!("{}/ims/token/v3", env.ims.url()))
        .form(&[
            ("grant_type", "refresh_token"),
            ("client_id", "lg-client"),
            ("client_secret", "p8e-lg-secret"),
            ("refresh_token", token.as_str()),
        ])
        .send()
        .await
        .expect("refresh");
    assert_eq!(refreshed.status(), reqwest::StatusCode::OK, "the kept refresh token is live");

    // --output: the manifest in a new file only the user can read, nothing on standard output.
    let file = env.dir.path().join("lg-user.yaml");
    let file_arg = file.to_str().expect("utf-8 path");
    let (ok, out, said) = login_with_callback(&env, &redirect, &["lg", "-n", env.ns(), "--output", file_arg]).await;
    assert!(ok && out.is_empty(), "{said}");
    assert!(said.contains(&format!("into {file_arg} (mode 0600)")), "{said}");
    let written = key(&private_manifest(&file), "refresh_token").expect("the refresh token");
    assert_says_no_token(&env, &said, &[written]);
    assert_eq!(env.ims.requests_to(EndpointKind::AuthorizationCode, "lg-client").len(), 2);
    assert_eq!(env.ims.live_refresh_tokens("lg-client"), 2, "the kept chain and the new one");

    // An existing file is refused before the sign-in: nothing offered, nothing redeemed or changed.
    let before = std::fs::read(&file).expect("read");
    let args = ["lg", "-n", env.ns(), "--output", file_arg, "--redirect-uri", &redirect];
    let (ok, _, said) = finish(login(&env, &args), String::new()).await;
    assert!(!ok && said.contains(&format!("error: {file_arg} exists: --output writes a new file only")), "{said}");
    assert!(!said.contains("/ims/authorize/"), "no sign-in was offered: {said}");
    assert_eq!(std::fs::read(&file).expect("read"), before);
    assert_eq!(env.ims.requests_to(EndpointKind::AuthorizationCode, "lg-client").len(), 2);

    // Standard output whose reader is gone (`| kubectl …` that did not start): kept the same way.
    let mut child = login(&env, &["lg", "-n", env.ns(), "--redirect-uri", &redirect]);
    drop(child.stdout.take());
    let (ok, _, said) = sign_in_at_callback(&env, &redirect, child).await;
    assert!(!ok && said.contains("error: printing the manifest: Broken pipe"), "{said}");
    let piped = key(&private_manifest(&kept_file(&said)), "refresh_token").expect("the refresh token");
    assert_says_no_token(&env, &said, &[piped]);
    assert_eq!(env.ims.requests_to(EndpointKind::AuthorizationCode, "lg-client").len(), 3);
    assert_eq!(env.ims.live_refresh_tokens("lg-client"), 3);
    assert_eq!(kept_files(&env).len(), 2, "the failed --apply and the broken pipe kept a file each");
}
