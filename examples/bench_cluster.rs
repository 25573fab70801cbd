//! Benchmark of one ClusterAdobeCredential serving N namespaces (issue 16), on the real local
//! control plane and the fake Adobe IMS, with the release build of the operator. Run it with
//! `make bench-cluster N=1000`.
//!
//! Phases: N labelled namespaces are created; the operator starts (all namespaces, ClusterAdobe-
//! Credentials from its own namespace); one ClusterAdobeCredential selects them by label: time
//! until every namespace holds the token, mints, copy writes, operator memory. Then a rotation of
//! the source Secret: per-namespace latency from the update to the new token in its copy (seen by
//! a metadata watch), mints and writes. Then a restart: mints and writes (both should be 0).
//! Nothing secret is printed.

use std::collections::HashMap;
use std::process::Stdio;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use adobe_credential_operator::crd::ClusterAdobeCredential;
use anyhow::Context;
use clap::Parser;
use fake_token_server::{AdobeClient, FakeTokenServer};
use futures::{StreamExt, TryStreamExt, stream};
use k8s_openapi::api::core::v1::{Namespace, Secret};
use kube::api::{PartialObjectMeta, Patch, PatchParams, PostParams};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, ResourceExt};
use test_support::LoopbackTls;

const LABEL: &str = "bench.adobe-operator.io/cluster";
const COPY_LABEL: &str = "credentials.adobe-operator.io/cluster-credential";
const FINGERPRINT: &str = "credentials.adobe-operator.io/token-fingerprint";

#[derive(Parser)]
struct Args {
    /// Namespaces the ClusterAdobeCredential selects.
    #[arg(long, default_value_t = 1000)]
    namespaces: usize,
    /// Namespaces created at once.
    #[arg(long, default_value_t = 32)]
    parallelism: usize,
    /// Give up on a phase after this long.
    #[arg(long, default_value_t = 600)]
    timeout_seconds: u64,
}

/// Every copy's latest token fingerprint with when its watch event arrived, and the number of
/// copy changes seen (creates, updates, deletes).
#[derive(Default)]
struct Copies {
    latest: Mutex<HashMap<String, (String, Instant)>>,
    changes: AtomicU64,
}

impl Copies {
    fn holding(&self, fingerprint: &str) -> Vec<Instant> {
        let latest = self.latest.lock().unwrap_or_else(|e| e.into_inner());
        latest.values().filter(|(f, _)| f == fingerprint).map(|(_, at)| *at).collect()
    }

    fn fingerprints(&self) -> HashMap<String, usize> {
        let mut counts = HashMap::new();
        for (f, _) in self.latest.lock().unwrap_or_else(|e| e.into_inner()).values() {
            *counts.entry(f.clone()).or_insert(0) += 1;
        }
        counts
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let n = args.namespaces;
    let timeout = Duration::from_secs(args.timeout_seconds);
    say(format!("starting etcd + kube-apiserver (N = {n} namespaces)"));
    let control_plane = test_support::control_plane();
    let client = control_plane.client();
    let repo = env!("CARGO_MANIFEST_DIR");
    for crd in ["adobecredentials", "clusteradobecredentials"] {
        control_plane.install_crd_yaml(&std::fs::read_to_string(format!("{repo}/crds/{crd}.yaml"))?).await?;
    }
    let platform = control_plane.namespace("platform").await?;

    let tls = LoopbackTls::generate()?;
    let ims = FakeTokenServer::start_tls(&tls.cert_pem, &tls.key_pem).await?;
    let dir = tempfile::tempdir()?;
    let ca_file = dir.path().join("ims-ca.pem");
    std::fs::write(&ca_file, &tls.ca_pem)?;
    let old_secret = random_secret();
    ims.register_adobe_client(AdobeClient::new("bench-cc", &old_secret).with_scopes(["openid", "AdobeID"]))?;
    let sources: Api<Secret> = Api::namespaced(client.clone(), platform.name());
    let source = serde_json::json!({
        "metadata": { "name": "bench-cc-src" },
        "stringData": { "client_id": "bench-cc", "client_secret": old_secret },
    });
    sources.create(&PostParams::default(), &serde_json::from_value(source)?).await?;

    say(format!("creating {n} labelled namespaces ({} in flight)", args.parallelism));
    let namespaces: Api<Namespace> = Api::all(client.clone());
    let started = Instant::now();
    stream::iter(0..n)
        .map(|i| {
            let namespaces = namespaces.clone();
            async move {
                let body =
                    serde_json::json!({ "metadata": { "name": format!("team-{i:05}"), "labels": { LABEL: "yes" } } });
                namespaces.create(&PostParams::default(), &serde_json::from_value(body)?).await?;
                anyhow::Ok(())
            }
        })
        .buffer_unordered(args.parallelism)
        .try_collect::<()>()
        .await?;
    say(format!("  namespaces created in {:.1}s", started.elapsed().as_secs_f64()));

    let copies = Arc::new(Copies::default());
    let watched = copies.clone();
    let copy_api: Api<PartialObjectMeta<Secret>> = Api::all(client.clone());
    tokio::spawn(async move {
        let events =
            watcher(copy_api, watcher::Config::default().labels(COPY_LABEL)).default_backoff().touched_objects();
        let mut events = std::pin::pin!(events);
        while let Some(Ok(meta)) = events.next().await {
            watched.changes.fetch_add(1, Ordering::Relaxed);
            let fingerprint = meta.annotations().get(FINGERPRINT).cloned().unwrap_or_default();
            let mut latest = watched.latest.lock().unwrap_or_else(|e| e.into_inner());
            latest.insert(meta.namespace().unwrap_or_default(), (fingerprint, Instant::now()));
        }
    });

    let operator_bin = std::env::current_exe()?
        .parent()
        .and_then(|examples| examples.parent())
        .map(|dir| dir.join("adobe-credential-operator"))
        .context("locating the operator binary")?;
    let log_path = std::env::temp_dir().join(format!("bench_cluster-{n}-operator.log"));
    std::fs::write(&log_path, "")?;
    let start_operator = || -> anyhow::Result<tokio::process::Child> {
        let log = std::fs::OpenOptions::new().append(true).open(&log_path)?;
        Ok(tokio::process::Command::new(&operator_bin)
            .args(["run", "--allowed-token-hosts", "127.0.0.1", "--http-addr", "127.0.0.1:0"])
            .args(["--cluster-credential-namespace", platform.name(), "--log-level", "info"])
            .arg("--extra-ca-file")
            .arg(&ca_file)
            .env("KUBECONFIG", control_plane.kubeconfig_path())
            .env_remove("ACO_NAMESPACES")
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .kill_on_drop(true)
            .spawn()?)
    };
    say(format!("starting the operator (log: {})", log_path.display()));
    let mut operator = start_operator()?;
    let pid = operator.id().context("operator pid")?;
    let rss_before = memory(pid)?;

    say("creating the ClusterAdobeCredential");
    let spec = serde_json::json!({
        "oauthServerToServer": {
            "clientSecretRef": { "name": "bench-cc-src" },
            "scopes": ["openid", "AdobeID"],
            "imsEndpoint": ims.url(),
        },
        "namespaceSelector": { "matchLabels": { LABEL: "yes" } },
    });
    let cc = ClusterAdobeCredential::new("bench", serde_json::from_value(spec)?);
    let started = Instant::now();
    Api::<ClusterAdobeCredential>::all(client.clone()).create(&PostParams::default(), &cc).await?;
    let first = wait_all(&copies, n, timeout, None).await?;
    let install = started.elapsed();
    let install_changes = copies.changes.load(Ordering::Relaxed);
    let install_mints = ims.mint_count("bench-cc");
    let rss_installed = memory(pid)?;

    say("rotating the source Secret");
    let new_secret = random_secret();
    ims.add_adobe_client_secret("bench-cc", &new_secret)?;
    let changes_before = copies.changes.load(Ordering::Relaxed);
    let patch = serde_json::json!({ "stringData": { "client_secret": new_secret } });
    sources.patch("bench-cc-src", &PatchParams::default(), &Patch::Merge(&patch)).await?;
    let rotated_at = Instant::now();
    let second = wait_all(&copies, n, timeout, Some(&first)).await?;
    let mut latencies: Vec<Duration> =
        copies.holding(&second).into_iter().map(|at| at.saturating_duration_since(rotated_at)).collect();
    latencies.sort();
    let rotation_changes = copies.changes.load(Ordering::Relaxed) - changes_before;
    let rotation_mints = ims.mint_count("bench-cc") - install_mints;
    let rss_rotated = memory(pid)?;

    say("restarting the operator (SIGTERM)");
    std::process::Command::new("kill").args(["-TERM", &pid.to_string()]).status()?;
    operator.wait().await?;
    let changes_before = copies.changes.load(Ordering::Relaxed);
    let mints_before = ims.mint_count("bench-cc");
    let restarted = Instant::now();
    let mut operator = start_operator()?;
    // The restarted operator has nothing to write; give it the time a full distribution took.
    tokio::time::sleep(install.max(Duration::from_secs(10))).await;
    let restart_changes = copies.changes.load(Ordering::Relaxed) - changes_before;
    let restart_mints = ims.mint_count("bench-cc") - mints_before;
    let restart_pid = operator.id().context("operator pid")?;
    let rss_restarted = memory(restart_pid)?;
    operator.kill().await?;

    println!("\n== bench_cluster: 1 ClusterAdobeCredential × {n} namespaces, one operator replica");
    println!("| figure | measured |");
    println!("|---|---|");
    println!("| all {n} namespaces hold the token | {:.2}s after create |", install.as_secs_f64());
    println!("| mints for the install | {install_mints} |");
    println!("| copy writes for the install (watch events) | {install_changes} |");
    println!(
        "| rotation → new token per namespace | p50 {} / p99 {} / max {} (n={}) |",
        ms(percentile(&latencies, 0.50)),
        ms(percentile(&latencies, 0.99)),
        ms(latencies.last().copied().unwrap_or_default()),
        latencies.len()
    );
    println!("| mints / copy writes for the rotation | {rotation_mints} / {rotation_changes} |");
    println!(
        "| mints / copy writes after a restart ({:.0}s window) | {restart_mints} / {restart_changes} |",
        restarted.elapsed().as_secs_f64()
    );
    println!(
        "| operator RSS: started / installed / rotated / restarted | {} / {} / {} / {} (peak {}) |",
        mib(rss_before.0),
        mib(rss_installed.0),
        mib(rss_rotated.0),
        mib(rss_restarted.0),
        mib(rss_rotated.1)
    );
    Ok(())
}

/// Waits until `n` copies hold one token other than `old`; returns its fingerprint.
async fn wait_all(copies: &Copies, n: usize, timeout: Duration, old: Option<&str>) -> anyhow::Result<String> {
    let deadline = Instant::now() + timeout;
    loop {
        let done = copies.fingerprints().into_iter().find(|(f, count)| *count == n && Some(f.as_str()) != old);
        if let Some((fingerprint, _)) = done {
            return Ok(fingerprint);
        }
        anyhow::ensure!(Instant::now() < deadline, "not every namespace got the token within {timeout:?}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// VmRSS and VmHWM of a process, in bytes.
fn memory(pid: u32) -> anyhow::Result<(u64, u64)> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let field = |name: &str| -> u64 {
        let line = status.lines().find(|l| l.starts_with(name)).unwrap_or_default();
        line.split_whitespace().nth(1).and_then(|kb| kb.parse::<u64>().ok()).unwrap_or(0) * 1024
    };
    Ok((field("VmRSS:"), field("VmHWM:")))
}

fn percentile(sorted: &[Duration], q: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1]
}

fn random_secret() -> String {
    format!("p8e-{:032x}", rand::random::<u128>())
}

fn mib(bytes: u64) -> String {
    format!("{:.1} MiB", bytes as f64 / (1024.0 * 1024.0))
}

fn ms(d: Duration) -> String {
    format!("{} ms", d.as_millis())
}

fn say(text: impl AsRef<str>) {
    eprintln!("==> {}", text.as_ref());
}
