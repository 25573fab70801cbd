//! Scale and speed benchmark (issue 9): N AdobeCredentials served by one operator replica, on the
//! real local control plane (etcd + kube-apiserver from `test-support`) and the fake Adobe IMS
//! over TLS. Run it with `make bench N=1000` (release builds); see `--help` for the knobs.
//!
//! Phases, each measured on its own:
//! 1. fresh install: N source Secrets (one per credential, each with its own client at the fake
//!    IMS), then the operator, then N AdobeCredentials created with bounded parallelism; time
//!    until every one is Ready=True (seen by the benchmark's watch of the credentials, or with
//!    `--ready-from list` by a paged list every `--poll-seconds`), mints at the fake, API writes;
//! 2. steady state: a quiet window in which token-endpoint calls and API writes must be 0;
//! 3. restart: SIGTERM (or SIGKILL) and a new operator process; mints and writes (both must be
//!    0 while every token is valid), and the time until it has reconciled every credential
//!    again (its per-credential `adobe_credential_token_expiry_seconds` series are set at the
//!    end of each successful reconcile and start empty in a new process);
//! 4. rotation: the source Secrets of R credentials, one at a time (the new secret is added at
//!    the fake first, the old stays valid); latency from the update call returning to the watch
//!    event showing a new token fingerprint on the target Secret.
//!
//! API writes come from the kube-apiserver's own `apiserver_request_total` counter (verbs POST,
//! PUT, PATCH, APPLY, DELETE), scraped before and after each phase with the admin client, minus
//! the benchmark's own writes; watches on the target Secrets (metadata) and on the credentials
//! cross-check them as resourceVersion changes. The operator's RSS and CPU time come from
//! `/proc`. Nothing secret is printed: client secrets and tokens never leave the processes.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use adobe_credential_operator::crd::{AdobeCredential, AdobeCredentialSpec, ClientSecretRef, OAuthServerToServer};
use anyhow::{Context, bail};
use clap::{Parser, ValueEnum};
use fake_token_server::{AdobeClient, FakeTokenServer, Outcome};
use futures::{StreamExt, TryStreamExt, stream};
use k8s_openapi::api::core::v1::Secret;
use kube::api::{ListParams, PartialObjectMeta, Patch, PatchParams, PostParams};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client, ResourceExt};
use test_support::{ControlPlane, LoopbackTls};

const SCOPES: [&str; 3] = ["openid", "AdobeID", "firefly_api"];
const FINGERPRINT_ANNOTATION: &str = "credentials.adobe-operator.io/token-fingerprint";
const MANAGED_BY_SELECTOR: &str = "app.kubernetes.io/managed-by=adobe-credential-operator";
const EXPIRY_SERIES: &str = "adobe_credential_token_expiry_seconds{";
/// Key under which [`api_writes`] counts GETs of Secrets.
const SECRET_GETS: &str = "GET secrets";
const MIB: f64 = 1024.0 * 1024.0;

#[derive(Debug, Parser)]
#[command(about = "Scale and speed benchmark of the operator on the local control plane and the fake IMS")]
struct Args {
    /// AdobeCredentials to create (each with its own source Secret and client at the fake IMS).
    #[arg(long, default_value_t = 1000)]
    credentials: usize,
    /// Length of the steady-state window in seconds (the target is defined over 600).
    #[arg(long, default_value_t = 60)]
    steady_seconds: u64,
    /// Source Secrets rotated, one at a time, to measure rotation latency.
    #[arg(long, default_value_t = 100)]
    rotations: usize,
    /// Lifetime of the tokens the fake IMS issues (no renewal may fall inside the run).
    #[arg(long, default_value_t = 86_400)]
    token_lifetime_secs: u64,
    /// Operator flag --token-rate-limit-qps.
    #[arg(long, default_value_t = 200.0)]
    token_rate_limit_qps: f64,
    /// Operator flag --token-rate-limit-burst.
    #[arg(long, default_value_t = 20)]
    token_rate_limit_burst: u32,
    /// Operator flag --concurrency.
    #[arg(long, default_value_t = 16)]
    concurrency: u16,
    /// Operator flag --log-level.
    #[arg(long, default_value = "info")]
    log_level: String,
    /// Objects the benchmark creates at once.
    #[arg(long, default_value_t = 32)]
    parallelism: usize,
    /// How the operator is stopped before the restart phase.
    #[arg(long, value_enum, default_value = "term")]
    restart_signal: StopSignal,
    /// How the install phase counts Ready credentials: from the benchmark's watch of the
    /// credentials (exact, nearly free for the API server), or by listing them all (paged) every
    /// --poll-seconds, which at 10,000 credentials costs the API server a lot of CPU.
    #[arg(long, value_enum, default_value = "watch")]
    ready_from: ReadyFrom,
    /// Interval of the Ready list (with --ready-from list) and of the operator's /metrics scrapes.
    #[arg(long, default_value_t = 1.0)]
    poll_seconds: f64,
    /// Give up waiting for all Ready (install, restart) after this many seconds.
    #[arg(long, default_value_t = 3600)]
    timeout_seconds: u64,
    /// The operator's log file (stdout and stderr); default: a file in the temp directory.
    #[arg(long)]
    operator_log: Option<PathBuf>,
    /// More operator flags, after `--`.
    #[arg(last = true)]
    operator_args: Vec<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, ValueEnum)]
enum ReadyFrom {
    Watch,
    List,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum StopSignal {
    Term,
    Kill,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    anyhow::ensure!(args.credentials > 0, "--credentials must be at least 1");
    anyhow::ensure!(args.parallelism > 0, "--parallelism must be at least 1");
    let bench_started = Instant::now();
    let n = args.credentials;
    let rotations = args.rotations.min(n);
    let poll = Duration::from_secs_f64(args.poll_seconds.max(0.1));
    let timeout = Duration::from_secs(args.timeout_seconds);

    say(format!("starting etcd + kube-apiserver (N = {n})"));
    let control_plane = test_support::control_plane();
    let client = control_plane.client();
    let repo = env!("CARGO_MANIFEST_DIR");
    control_plane.install_crd_yaml(&std::fs::read_to_string(format!("{repo}/crds/adobecredentials.yaml"))?).await?;
    let namespace = control_plane.namespace("bench").await?;
    let ns = namespace.name().to_owned();

    say("starting the fake IMS over TLS and registering one client per credential");
    let tls = LoopbackTls::generate()?;
    let ims = FakeTokenServer::start_tls(&tls.cert_pem, &tls.key_pem).await?;
    let dir = tempfile::tempdir()?;
    let ca_file = dir.path().join("ims-ca.pem");
    std::fs::write(&ca_file, &tls.ca_pem)?;
    let lifetime = Duration::from_secs(args.token_lifetime_secs);
    let mut client_secrets = Vec::with_capacity(n);
    for i in 0..n {
        let secret = random_secret();
        ims.register_adobe_client(
            AdobeClient::new(client_id(i), &secret).with_scopes(SCOPES).with_token_lifetime(lifetime),
        )?;
        client_secrets.push(secret);
    }

    let secrets: Api<Secret> = Api::namespaced(client.clone(), &ns);
    let credentials: Api<AdobeCredential> = Api::namespaced(client.clone(), &ns);
    let watches = Watches::spawn(&client, &ns);
    // Synced before anything is created, so that every change is counted.
    watches.wait_synced().await?;

    say(format!("creating {n} source Secrets ({} in flight)", args.parallelism));
    let started = Instant::now();
    stream::iter(client_secrets.iter().enumerate())
        .map(|(i, secret)| {
            let secrets = secrets.clone();
            async move {
                let body = serde_json::json!({
                    "metadata": { "name": source_name(i) },
                    "stringData": { "client_id": client_id(i), "client_secret": secret },
                });
                secrets.create(&PostParams::default(), &serde_json::from_value(body)?).await?;
                anyhow::Ok(())
            }
        })
        .buffer_unordered(args.parallelism)
        .try_collect::<()>()
        .await?;
    let secrets_created_in = started.elapsed();
    drop(client_secrets);

    let operator_bin = std::env::current_exe()?
        .parent()
        .and_then(|examples| examples.parent())
        .map(|dir| dir.join("adobe-credential-operator"))
        .context("locating the operator binary")?;
    let log_path =
        args.operator_log.clone().unwrap_or_else(|| std::env::temp_dir().join(format!("bench_scale-{n}-operator.log")));
    std::fs::write(&log_path, "")?;
    let launch = Launch {
        bin: operator_bin,
        kubeconfig: control_plane.kubeconfig_path().to_owned(),
        ca_file: ca_file.clone(),
        namespace: ns.clone(),
        log_path: log_path.clone(),
        args: operator_flags(&args),
    };
    say(format!("starting the operator (log: {})", log_path.display()));
    let mut operator = launch.start().await?;
    let mut samples: Vec<(String, Sample)> = Vec::new();
    samples.push(("operator started, 0 credentials".into(), Sample::take(control_plane, &operator)?));

    // Phase 1: fresh install.
    // The API server's first create of the new resource takes about 2 s (one-time set-up on its
    // side); a dry-run create pays it here, outside the timed install.
    let warm_up = Instant::now();
    credentials.create(&PostParams { dry_run: true, ..Default::default() }, &credential(0, ims.url())).await?;
    say(format!("  dry-run create (API server warm-up) took {:.2}s", warm_up.elapsed().as_secs_f64()));
    let before = Counts::take(&client, &ims, &watches).await?;
    say(format!("phase 1: creating {n} AdobeCredentials ({} in flight) and waiting for all Ready", args.parallelism));
    let install_started = Instant::now();
    let install_started_at = std::time::SystemTime::now();
    let first_created: Arc<std::sync::OnceLock<Duration>> = Arc::default();
    let create_task = {
        let first_created = first_created.clone();
        let credentials = credentials.clone();
        let url = ims.url().to_owned();
        let parallelism = args.parallelism;
        tokio::spawn(async move {
            stream::iter(0..n)
                .map(|i| {
                    let credentials = credentials.clone();
                    let cred = credential(i, &url);
                    let first_created = first_created.clone();
                    async move {
                        credentials.create(&PostParams::default(), &cred).await?;
                        first_created.get_or_init(|| install_started.elapsed());
                        Ok::<(), kube::Error>(())
                    }
                })
                .buffer_unordered(parallelism)
                .try_collect::<()>()
                .await?;
            anyhow::Ok(install_started.elapsed())
        })
    };
    let mut last_report = Instant::now();
    let install_time = loop {
        let ready = match args.ready_from {
            ReadyFrom::Watch => watches.ready_count(),
            ReadyFrom::List => count_ready(&credentials).await?.ready,
        };
        if ready == n {
            break install_started.elapsed();
        }
        if last_report.elapsed() >= Duration::from_secs(10) {
            last_report = Instant::now();
            say(format!(
                "  {:>6.1}s: {ready} Ready, {} token requests so far",
                install_started.elapsed().as_secs_f64(),
                ims.requests().len(),
            ));
        }
        if install_started.elapsed() > timeout {
            let listed = count_ready(&credentials).await?;
            bail!("only {ready} of {n} credentials Ready after {timeout:?}: {:?}", listed.not_ready);
        }
        match args.ready_from {
            ReadyFrom::Watch => tokio::time::sleep(Duration::from_millis(20)).await,
            ReadyFrom::List => tokio::time::sleep(poll).await,
        }
    };
    let creation_time = create_task.await??;
    say(format!(
        "  all {n} Ready after {:.1}s (creation took {:.1}s)",
        install_time.as_secs_f64(),
        creation_time.as_secs_f64()
    ));
    let after_install = Counts::settled(&client, &ims, &watches).await?;
    // What one Ready poll by listing costs (the alternative to the watch).
    let list_cost = {
        let before = Sample::take(control_plane, &operator)?;
        let listed = count_ready(&credentials).await?;
        anyhow::ensure!(listed.ready == n, "the list shows {} Ready: {:?}", listed.ready, listed.not_ready);
        let after = Sample::take(control_plane, &operator)?;
        format!(
            "{:.2}s wall, {:.2}s kube-apiserver CPU, {:.2}s benchmark CPU",
            after.at.duration_since(before.at).as_secs_f64(),
            after.apiserver_cpu - before.apiserver_cpu,
            after.bench_cpu - before.bench_cpu
        )
    };
    let install = after_install.since(&before, n as f64, 0.0);
    let mint_spread = mints_per_client(&ims, n);
    let mint_window = mint_window(&ims, install_started_at);
    samples.push((format!("after install of {n}"), Sample::take(control_plane, &operator)?));

    // Phase 2: steady state.
    say(format!("phase 2: steady-state window of {}s", args.steady_seconds));
    let cpu_before = proc_stats(operator.pid)?.cpu_seconds;
    tokio::time::sleep(Duration::from_secs(args.steady_seconds)).await;
    let after_steady = Counts::take(&client, &ims, &watches).await?;
    let steady = after_steady.since(&after_install, 0.0, 0.0);
    let steady_cpu = proc_stats(operator.pid)?.cpu_seconds - cpu_before;
    samples.push((format!("after {}s steady state", args.steady_seconds), Sample::take(control_plane, &operator)?));

    // Phase 3: restart.
    say(format!("phase 3: restarting the operator ({:?})", args.restart_signal));
    let stop_started = Instant::now();
    operator.stop(args.restart_signal).await?;
    let stop_time = stop_started.elapsed();
    let restart_started = Instant::now();
    operator = launch.start().await?;
    let restart_ready = restart_started.elapsed();
    let mut last_report = Instant::now();
    let restart_time = loop {
        let reconciled = operator.reconciled_count().await?;
        if reconciled >= n {
            break restart_started.elapsed();
        }
        if last_report.elapsed() >= Duration::from_secs(10) {
            last_report = Instant::now();
            say(format!("  {:>6.1}s: {reconciled} reconciled", restart_started.elapsed().as_secs_f64()));
        }
        if restart_started.elapsed() > timeout {
            bail!("the restarted operator reconciled only {reconciled} of {n} credentials after {timeout:?}");
        }
        tokio::time::sleep(poll).await;
    };
    let still_ready = count_ready(&credentials).await?;
    let after_restart = Counts::settled(&client, &ims, &watches).await?;
    let restart = after_restart.since(&after_steady, 0.0, 0.0);
    samples.push(("after restart, all reconciled".into(), Sample::take(control_plane, &operator)?));

    // Phase 4: rotations, one at a time.
    say(format!("phase 4: rotating {rotations} source Secrets one at a time"));
    let mut latencies = Vec::with_capacity(rotations);
    let mut rotation_timeouts = 0;
    for k in 0..rotations {
        let i = k * n / rotations;
        let new_secret = random_secret();
        ims.add_adobe_client_secret(&client_id(i), new_secret.as_str())?;
        let target = format!("{}-token", credential_name(i));
        let old = watches.fingerprint(&target);
        let patch = serde_json::json!({ "stringData": { "client_secret": new_secret } });
        secrets.patch(&source_name(i), &PatchParams::default(), &Patch::Merge(&patch)).await?;
        let returned = Instant::now();
        loop {
            if let Some((fingerprint, seen)) = watches.target(&target)
                && Some(&fingerprint) != old.as_ref()
            {
                latencies.push(seen.saturating_duration_since(returned));
                break;
            }
            if returned.elapsed() > Duration::from_secs(30) {
                rotation_timeouts += 1;
                break;
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }
    let after_rotation = Counts::settled(&client, &ims, &watches).await?;
    let rotation = after_rotation.since(&after_restart, 0.0, rotations as f64);
    samples.push((format!("after {rotations} rotations"), Sample::take(control_plane, &operator)?));
    operator.stop(StopSignal::Term).await?;

    // Report.
    let final_ready = count_ready(&credentials).await?;
    let last = &samples[samples.len() - 1].1;
    let peak_rss = samples.iter().map(|(_, s)| s.operator.rss_bytes).max().unwrap_or(0);
    let hwm = samples.iter().map(|(_, s)| s.operator.hwm_bytes).max().unwrap_or(0);
    let rate = n as f64 / install_time.as_secs_f64();
    latencies.sort();

    println!(
        "\n== bench_scale: N = {n}, one operator replica (concurrency {}, token rate limit {} qps burst {}, log {})",
        args.concurrency, args.token_rate_limit_qps, args.token_rate_limit_burst, args.log_level
    );
    println!(
        "   {} source Secrets created in {:.1}s; {n} AdobeCredentials created in {:.1}s",
        n,
        secrets_created_in.as_secs_f64(),
        creation_time.as_secs_f64()
    );
    let mut table = Table::default();
    table.row("credentials managed (Ready at the end)", format!("{} / {n}", final_ready.ready), "10,000");
    table.row(
        "operator RSS at N (end of run; peak VmHWM)",
        format!("{:.1} MiB (peak sampled {:.1}; VmHWM {:.1})", mib(last.operator.rss_bytes), mib(peak_rss), mib(hwm)),
        "< 150 MiB",
    );
    table.row(
        &format!("token-endpoint calls, steady window {}s", args.steady_seconds),
        steady.token_requests.to_string(),
        "0 (over 10 min)",
    );
    table.row(&format!("API writes, steady window {}s", args.steady_seconds), steady.writes_summary(), "0");
    table.row("token-endpoint calls after restart", restart.token_requests.to_string(), "0");
    table.row("API writes after restart", restart.writes_summary(), "0 (no no-op patches)");
    table.row(
        "mints per credential, fresh install",
        format!("min {} / max {} ({} mints for {n})", mint_spread.0, mint_spread.1, install.mints),
        "exactly 1",
    );
    if latencies.is_empty() {
        table.row(
            "rotation → new token in target",
            format!("no sample ({rotation_timeouts} timeouts)"),
            "p50 < 200 ms, p99 < 1 s",
        );
    } else {
        table.row(
            "rotation → new token in target",
            format!(
                "p50 {} / p95 {} / p99 {} / max {} (n={}, {} timeouts)",
                ms(percentile(&latencies, 0.50)),
                ms(percentile(&latencies, 0.95)),
                ms(percentile(&latencies, 0.99)),
                ms(latencies[latencies.len() - 1]),
                latencies.len(),
                rotation_timeouts
            ),
            "p50 < 200 ms, p99 < 1 s (at 1,000)",
        );
    }
    table.row(
        "fresh install → all Ready",
        format!(
            "{:.1}s = {:.0} cred/s; N/rate-limit = {:.1}s → ratio {:.2}",
            install_time.as_secs_f64(),
            rate,
            n as f64 / args.token_rate_limit_qps,
            rate / args.token_rate_limit_qps
        ),
        "bounded by rate limit / API server",
    );
    let (first_mint, mint_span) = mint_window;
    table.row(
        "  install detail: first create / first mint / mint span",
        format!(
            "{:.2}s / {:.2}s / {:.1}s = {:.0} mints/s (creates done at {:.1}s)",
            first_created.get().map_or(f64::NAN, Duration::as_secs_f64),
            first_mint,
            mint_span,
            install.mints as f64 / mint_span.max(0.001),
            creation_time.as_secs_f64()
        ),
        "(reported)",
    );
    table.row(
        &format!("  install detail: one paged list of {n} credentials"),
        list_cost,
        format!("(Ready counted from the {:?} during install)", args.ready_from).to_lowercase(),
    );
    table.row("writes per credential, fresh install", install.per_unit(n as f64), "1 target write + 1 status patch");
    table.row(
        "writes per rotation (a re-mint; renewal proxy)",
        rotation.per_unit(rotations as f64),
        "1 target write + 1 status patch",
    );
    table.row(
        "mints per rotation",
        format!("{:.2} ({} for {rotations})", rotation.mints as f64 / rotations.max(1) as f64, rotation.mints),
        "exactly 1",
    );
    table.row(
        "restart: stop / new process ready / all reconciled",
        format!(
            "{:.1}s / {:.1}s / {:.1}s ({} Ready after)",
            stop_time.as_secs_f64(),
            restart_ready.as_secs_f64(),
            restart_time.as_secs_f64(),
            still_ready.ready
        ),
        "(reported)",
    );
    table.row(
        &format!("operator CPU in the {}s steady window", args.steady_seconds),
        format!("{steady_cpu:.2}s"),
        "(reported)",
    );
    table.print(&["figure", "measured", "target"]);

    println!(
        "\n   API writes by phase (apiserver_request_total, minus the benchmark's own; resourceVersion changes seen by watches):"
    );
    let mut phases = Table::default();
    for (name, delta) in [("install", &install), ("steady", &steady), ("restart", &restart), ("rotation", &rotation)] {
        phases.row(
            name,
            format!(
                "secrets {} | adobecredentials {} | status {} | events {}",
                delta.secrets, delta.credentials, delta.status, delta.events
            ),
            format!(
                "target Secret changes {} | credential changes {} | token requests {} | Secret GETs {}",
                delta.target_changes, delta.credential_changes, delta.token_requests, delta.secret_gets
            ),
        );
    }
    phases.print(&["phase", "API writes", "watch / fake IMS"]);

    println!("\n   Processes (operator: VmRSS, VmHWM, utime+stime of the current process):");
    let mut procs = Table::default();
    for (name, s) in &samples {
        procs.row(
            name,
            format!(
                "{:.1} MiB / {:.1} MiB / {:.1}s CPU",
                mib(s.operator.rss_bytes),
                mib(s.operator.hwm_bytes),
                s.operator.cpu_seconds
            ),
            format!("etcd {:.0} MiB, kube-apiserver {:.0} MiB", mib(s.etcd_rss), mib(s.apiserver_rss)),
        );
    }
    procs.print(&["when", "operator RSS / HWM / CPU", "control plane RSS"]);
    println!("\n   CPU time by phase (2 cores = 2.00 cores busy at most):");
    for pair in samples.windows(2) {
        println!("   {:<34} {}", pair[1].0, pair[1].1.cpu_since(&pair[0].1));
    }
    println!(
        "\n   total benchmark time {:.1}s; operator log {}",
        bench_started.elapsed().as_secs_f64(),
        log_path.display()
    );
    Ok(())
}

fn say(text: impl AsRef<str>) {
    println!("==> {}", text.as_ref());
}

fn client_id(i: usize) -> String {
    format!("bench-client-{i:05}")
}

fn source_name(i: usize) -> String {
    format!("bench-source-{i:05}")
}

fn credential_name(i: usize) -> String {
    format!("bench-{i:05}")
}

/// A fresh high-entropy client secret; never printed.
fn random_secret() -> String {
    format!("p8e-{:032x}", rand::random::<u128>())
}

fn credential(i: usize, ims_url: &str) -> AdobeCredential {
    AdobeCredential::new(
        &credential_name(i),
        AdobeCredentialSpec {
            oauth_server_to_server: Some(OAuthServerToServer {
                client_secret_ref: ClientSecretRef {
                    name: source_name(i),
                    client_id_key: "client_id".into(),
                    client_secret_key: "client_secret".into(),
                    secondary_client_secret_key: None,
                },
                scopes: SCOPES.iter().map(|s| s.to_string()).collect(),
                ims_endpoint: ims_url.to_owned(),
                org_id: Some("BENCH0RG@AdobeOrg".into()),
                client_secret_rotation: None,
            }),
            ..Default::default()
        },
    )
}

fn operator_flags(args: &Args) -> Vec<String> {
    let mut flags = vec![
        "--token-rate-limit-qps".to_owned(),
        args.token_rate_limit_qps.to_string(),
        "--token-rate-limit-burst".to_owned(),
        args.token_rate_limit_burst.to_string(),
        "--concurrency".to_owned(),
        args.concurrency.to_string(),
        "--log-level".to_owned(),
        args.log_level.clone(),
    ];
    flags.extend(args.operator_args.iter().cloned());
    flags
}

/// How to start the operator process (the same way for the first start and the restart).
struct Launch {
    bin: PathBuf,
    kubeconfig: PathBuf,
    ca_file: PathBuf,
    namespace: String,
    log_path: PathBuf,
    args: Vec<String>,
}

struct Operator {
    child: tokio::process::Child,
    pid: u32,
    metrics_url: String,
    http: reqwest::Client,
}

impl Launch {
    /// Starts the operator and waits until its /readyz passes (its caches have synced).
    async fn start(&self) -> anyhow::Result<Operator> {
        let addr_file = self.log_path.with_extension("addr");
        // A leftover file of an earlier start must not be mistaken for this one's address.
        let _ = std::fs::remove_file(&addr_file);
        let log = std::fs::OpenOptions::new().create(true).append(true).open(&self.log_path)?;
        let child = tokio::process::Command::new(&self.bin)
            .args(["run", "--namespaces", &self.namespace, "--allowed-token-hosts", "127.0.0.1"])
            .args(["--http-addr", "127.0.0.1:0"])
            .arg("--http-addr-file")
            .arg(&addr_file)
            .arg("--extra-ca-file")
            .arg(&self.ca_file)
            .args(&self.args)
            .env("KUBECONFIG", &self.kubeconfig)
            .env("NO_COLOR", "1")
            .env_remove("ACO_NAMESPACES")
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .kill_on_drop(true)
            .spawn()
            .with_context(|| {
                format!("starting {} (cargo build --release --bin adobe-credential-operator)", self.bin.display())
            })?;
        let pid = child.id().context("operator pid")?;
        let deadline = Instant::now() + Duration::from_secs(60);
        let address = loop {
            if let Some(address) = std::fs::read_to_string(&addr_file).ok().filter(|a| !a.is_empty()) {
                break address;
            }
            if Instant::now() > deadline {
                bail!("the operator did not write its HTTP address; see {}", self.log_path.display());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        let http = reqwest::Client::new();
        loop {
            let ready =
                http.get(format!("http://{address}/readyz")).send().await.is_ok_and(|r| r.status().is_success());
            if ready {
                break;
            }
            if Instant::now() > deadline {
                bail!("the operator did not become ready; see {}", self.log_path.display());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Ok(Operator { child, pid, metrics_url: format!("http://{address}/metrics"), http })
    }
}

impl Operator {
    /// How many credentials this process has reconciled successfully (one expiry series each).
    async fn reconciled_count(&self) -> anyhow::Result<usize> {
        let text = self.http.get(&self.metrics_url).send().await?.error_for_status()?.text().await?;
        Ok(text.lines().filter(|l| l.starts_with(EXPIRY_SERIES)).count())
    }

    async fn stop(&mut self, signal: StopSignal) -> anyhow::Result<()> {
        match signal {
            StopSignal::Kill => self.child.start_kill()?,
            StopSignal::Term => {
                let status = std::process::Command::new("kill").args(["-TERM", &self.pid.to_string()]).status()?;
                anyhow::ensure!(status.success(), "kill -TERM {} failed", self.pid);
            }
        }
        if tokio::time::timeout(Duration::from_secs(60), self.child.wait()).await.is_err() {
            say("  the operator did not stop within 60s of SIGTERM; killing it");
            self.child.kill().await?;
        }
        Ok(())
    }
}

/// Ready count from a paged list (500 per page), and the reasons of the others.
struct ReadyCount {
    total: usize,
    ready: usize,
    not_ready: BTreeMap<String, usize>,
}

async fn count_ready(api: &Api<AdobeCredential>) -> anyhow::Result<ReadyCount> {
    let mut count = ReadyCount { total: 0, ready: 0, not_ready: BTreeMap::new() };
    let mut params = ListParams::default().limit(500);
    loop {
        let page = api.list(&params).await?;
        for cred in &page.items {
            count.total += 1;
            let ready = cred.status.as_ref().and_then(|s| s.conditions.iter().find(|c| c.type_ == "Ready"));
            match ready {
                Some(c) if c.status == "True" => count.ready += 1,
                Some(c) => *count.not_ready.entry(c.reason.clone()).or_default() += 1,
                None => *count.not_ready.entry("NoStatus".into()).or_default() += 1,
            }
        }
        match page.metadata.continue_.filter(|c| !c.is_empty()) {
            Some(token) => params = params.continue_token(&token),
            None => return Ok(count),
        }
    }
}

/// Seconds from `since` to the first token issued, and from the first to the last.
fn mint_window(ims: &FakeTokenServer, since: std::time::SystemTime) -> (f64, f64) {
    let issued: Vec<std::time::SystemTime> =
        ims.requests().into_iter().filter(|r| r.outcome == Outcome::Issued).map(|r| r.received_at).collect();
    let first = issued.iter().min().copied().unwrap_or(since);
    let last = issued.iter().max().copied().unwrap_or(since);
    let seconds = |a: std::time::SystemTime, b| a.duration_since(b).unwrap_or_default().as_secs_f64();
    (seconds(first, since), seconds(last, first))
}

/// Lowest and highest number of tokens issued to one client.
fn mints_per_client(ims: &FakeTokenServer, n: usize) -> (usize, usize) {
    let mut per_client: BTreeMap<String, usize> = BTreeMap::new();
    for record in ims.requests() {
        if record.outcome == Outcome::Issued
            && let Some(id) = record.client_id
        {
            *per_client.entry(id).or_default() += 1;
        }
    }
    let counts: Vec<usize> = (0..n).map(|i| per_client.get(&client_id(i)).copied().unwrap_or(0)).collect();
    (counts.iter().copied().min().unwrap_or(0), counts.iter().copied().max().unwrap_or(0))
}

/// Metadata watches on the target Secrets and on the credentials: resourceVersion changes, and
/// the latest token fingerprint of each target with the time its event arrived.
#[derive(Clone)]
struct Watches {
    targets: Arc<Mutex<BTreeMap<String, (String, Instant)>>>,
    target_changes: Arc<AtomicU64>,
    /// Watches that have seen their first complete list.
    synced: Arc<AtomicU64>,
    credential_changes: Arc<AtomicU64>,
    /// Whether each credential is Ready=True, as last seen by the watch.
    ready: Arc<Mutex<BTreeMap<String, bool>>>,
}

impl Watches {
    fn spawn(client: &Client, ns: &str) -> Self {
        let watches = Self {
            targets: Arc::default(),
            target_changes: Arc::default(),
            credential_changes: Arc::default(),
            ready: Arc::default(),
            synced: Arc::default(),
        };
        let secrets: Api<PartialObjectMeta<Secret>> = Api::namespaced(client.clone(), ns);
        let w = watches.clone();
        tokio::spawn(async move {
            let config = watcher::Config::default().labels(MANAGED_BY_SELECTOR);
            let mut events = std::pin::pin!(watcher(secrets, config).default_backoff());
            while let Some(event) = events.next().await {
                let (meta, change) = match event {
                    Ok(watcher::Event::Apply(meta)) => (meta, true),
                    Ok(watcher::Event::InitApply(meta)) => (meta, false),
                    Ok(watcher::Event::InitDone) => {
                        w.synced.fetch_add(1, Ordering::Relaxed);
                        continue;
                    }
                    Err(err) => {
                        eprintln!("target Secret watch error: {err}");
                        continue;
                    }
                    Ok(_) => continue,
                };
                let seen = Instant::now();
                if change {
                    w.target_changes.fetch_add(1, Ordering::Relaxed);
                }
                let fingerprint = meta.annotations().get(FINGERPRINT_ANNOTATION).cloned().unwrap_or_default();
                let mut targets = w.targets.lock().unwrap_or_else(|e| e.into_inner());
                let entry = targets.entry(meta.name_any()).or_insert_with(|| (String::new(), seen));
                if entry.0 != fingerprint {
                    *entry = (fingerprint, seen);
                }
            }
        });
        let credentials: Api<AdobeCredential> = Api::namespaced(client.clone(), ns);
        let w = watches.clone();
        tokio::spawn(async move {
            let mut events = std::pin::pin!(watcher(credentials, watcher::Config::default()).default_backoff());
            while let Some(event) = events.next().await {
                let (cred, change) = match event {
                    Ok(watcher::Event::Apply(cred)) => (cred, true),
                    Ok(watcher::Event::InitApply(cred)) => (cred, false),
                    Ok(watcher::Event::Delete(cred)) => {
                        w.ready.lock().unwrap_or_else(|e| e.into_inner()).remove(&cred.name_any());
                        continue;
                    }
                    Ok(watcher::Event::InitDone) => {
                        w.synced.fetch_add(1, Ordering::Relaxed);
                        continue;
                    }
                    Ok(watcher::Event::Init) => continue,
                    Err(err) => {
                        eprintln!("credential watch error: {err}");
                        continue;
                    }
                };
                if change {
                    w.credential_changes.fetch_add(1, Ordering::Relaxed);
                }
                let ready = cred.status.as_ref().and_then(|s| s.conditions.iter().find(|c| c.type_ == "Ready"));
                let ready = ready.is_some_and(|c| c.status == "True");
                w.ready.lock().unwrap_or_else(|e| e.into_inner()).insert(cred.name_any(), ready);
            }
        });
        watches
    }

    async fn wait_synced(&self) -> anyhow::Result<()> {
        let deadline = Instant::now() + Duration::from_secs(60);
        while self.synced.load(Ordering::Relaxed) < 2 {
            anyhow::ensure!(Instant::now() < deadline, "the benchmark's watches did not sync within 60s");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Ok(())
    }

    fn ready_count(&self) -> usize {
        self.ready.lock().unwrap_or_else(|e| e.into_inner()).values().filter(|r| **r).count()
    }

    fn target(&self, name: &str) -> Option<(String, Instant)> {
        self.targets.lock().unwrap_or_else(|e| e.into_inner()).get(name).cloned()
    }

    fn fingerprint(&self, name: &str) -> Option<String> {
        self.target(name).map(|(fingerprint, _)| fingerprint)
    }
}

/// Cumulative counters at one moment.
#[derive(Debug, Clone, Default, PartialEq)]
struct Counts {
    /// Write requests by (resource, subresource).
    writes: BTreeMap<(String, String), f64>,
    token_requests: usize,
    mints: usize,
    target_changes: u64,
    credential_changes: u64,
}

impl Counts {
    async fn take(client: &Client, ims: &FakeTokenServer, watches: &Watches) -> anyhow::Result<Self> {
        let requests = ims.requests();
        Ok(Self {
            writes: api_writes(client).await?,
            token_requests: requests.len(),
            mints: requests.iter().filter(|r| r.outcome == Outcome::Issued).count(),
            target_changes: watches.target_changes.load(Ordering::Relaxed),
            credential_changes: watches.credential_changes.load(Ordering::Relaxed),
        })
    }

    /// Counts once nothing has moved for two seconds (trailing Events, watch delivery).
    async fn settled(client: &Client, ims: &FakeTokenServer, watches: &Watches) -> anyhow::Result<Self> {
        let mut last = Self::take(client, ims, watches).await?;
        for _ in 0..30 {
            tokio::time::sleep(Duration::from_secs(2)).await;
            let now = Self::take(client, ims, watches).await?;
            if now == last {
                break;
            }
            last = now;
        }
        Ok(last)
    }

    /// The difference to `earlier`, minus the benchmark's own credential creations and Secret
    /// updates in between.
    fn since(&self, earlier: &Counts, own_credential_creates: f64, own_secret_updates: f64) -> Delta {
        let delta = |resource: &str, subresource: &str| {
            let key = (resource.to_owned(), subresource.to_owned());
            self.writes.get(&key).copied().unwrap_or(0.0) - earlier.writes.get(&key).copied().unwrap_or(0.0)
        };
        let events: f64 = self
            .writes
            .iter()
            .filter(|((resource, _), _)| resource == "events")
            .map(|(key, value)| value - earlier.writes.get(key).copied().unwrap_or(0.0))
            .sum();
        let other_secrets: f64 = self
            .writes
            .iter()
            .filter(|((resource, sub), _)| resource == "secrets" && !sub.is_empty())
            .map(|(key, value)| value - earlier.writes.get(key).copied().unwrap_or(0.0))
            .sum();
        Delta {
            secrets: (delta("secrets", "") + other_secrets - own_secret_updates).round() as i64,
            credentials: (delta("adobecredentials", "") - own_credential_creates).round() as i64,
            status: delta("adobecredentials", "status").round() as i64,
            events: events.round() as i64,
            token_requests: self.token_requests - earlier.token_requests,
            mints: self.mints - earlier.mints,
            target_changes: self.target_changes - earlier.target_changes,
            secret_gets: delta(SECRET_GETS, "").round() as i64,
            credential_changes: self.credential_changes - earlier.credential_changes,
        }
    }
}

/// What one phase did.
struct Delta {
    /// Secret writes by the operator (target Secrets; it writes no other Secret in this flow).
    secrets: i64,
    /// AdobeCredential writes other than status.
    credentials: i64,
    status: i64,
    events: i64,
    token_requests: usize,
    mints: usize,
    target_changes: u64,
    credential_changes: u64,
    /// Secrets read one by one (not a write; shows how many full reconciles ran).
    secret_gets: i64,
}

impl Delta {
    fn writes_summary(&self) -> String {
        let total = self.secrets + self.credentials + self.status;
        format!(
            "{total} (Secrets {}, credentials {}, status {}; + {} Events)",
            self.secrets, self.credentials, self.status, self.events
        )
    }

    fn per_unit(&self, units: f64) -> String {
        let units = units.max(1.0);
        format!(
            "{:.2} target Secret + {:.2} status + {:.2} credential (+ {:.2} Event)",
            self.secrets as f64 / units,
            self.status as f64 / units,
            self.credentials as f64 / units,
            self.events as f64 / units
        )
    }
}

/// `apiserver_request_total` of mutating verbs, summed by (resource, subresource), and of Secret
/// GETs, from the API server's own /metrics (the admin client may read it).
async fn api_writes(client: &Client) -> anyhow::Result<BTreeMap<(String, String), f64>> {
    let request = axum::http::Request::get("/metrics").body(Vec::new())?;
    let text = client.request_text(request).await?;
    let mut writes = BTreeMap::new();
    for line in text.lines() {
        let Some(rest) = line.strip_prefix("apiserver_request_total{") else { continue };
        let Some((labels, value)) = rest.rsplit_once("} ") else { continue };
        let labels = parse_labels(labels);
        let verb = labels.get("verb").map(String::as_str).unwrap_or_default();
        let resource = labels.get("resource").cloned().unwrap_or_default();
        let subresource = labels.get("subresource").cloned().unwrap_or_default();
        let key = match verb {
            "POST" | "PUT" | "PATCH" | "APPLY" | "DELETE" | "DELETECOLLECTION" => (resource, subresource),
            // Reads of single Secrets: two per full reconcile (target and source).
            "GET" if resource == "secrets" => (SECRET_GETS.to_owned(), String::new()),
            _ => continue,
        };
        let value: f64 = value.trim().parse().unwrap_or(0.0);
        *writes.entry(key).or_insert(0.0) += value;
    }
    Ok(writes)
}

/// `a="x",b="y"` (Prometheus text format; these label values hold no quotes or commas).
fn parse_labels(text: &str) -> BTreeMap<String, String> {
    text.split("\",")
        .filter_map(|pair| {
            let (key, value) = pair.split_once("=\"")?;
            Some((key.trim().to_owned(), value.trim_end_matches('"').to_owned()))
        })
        .collect()
}

/// Memory and CPU of a process from /proc.
#[derive(Debug, Clone, Copy)]
struct ProcStats {
    rss_bytes: u64,
    hwm_bytes: u64,
    cpu_seconds: f64,
}

fn proc_stats(pid: u32) -> anyhow::Result<ProcStats> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let kib = |field: &str| -> u64 {
        status
            .lines()
            .find_map(|l| l.strip_prefix(field))
            .and_then(|v| v.trim().strip_suffix("kB"))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0)
    };
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // Fields after the command name, which is in parentheses and may contain spaces: state is
    // field 3 of the whole line, utime 14 and stime 15.
    let after = stat.rsplit_once(')').map(|(_, rest)| rest).context("malformed /proc/pid/stat")?;
    let fields: Vec<&str> = after.split_whitespace().collect();
    let ticks = |index: usize| fields.get(index).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
    let cpu_ticks = ticks(11) + ticks(12);
    Ok(ProcStats {
        rss_bytes: kib("VmRSS:") * 1024,
        hwm_bytes: kib("VmHWM:") * 1024,
        cpu_seconds: cpu_ticks as f64 / clock_ticks_per_second(),
    })
}

fn clock_ticks_per_second() -> f64 {
    static TICKS: std::sync::OnceLock<f64> = std::sync::OnceLock::new();
    *TICKS.get_or_init(|| {
        std::process::Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|o| String::from_utf8(o.stdout).ok())
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(100.0)
    })
}

/// The operator and the control plane at one moment.
struct Sample {
    at: Instant,
    operator_pid: u32,
    operator: ProcStats,
    etcd_rss: u64,
    apiserver_rss: u64,
    /// CPU seconds of kube-apiserver, etcd and this benchmark (with the fake IMS) so far.
    apiserver_cpu: f64,
    etcd_cpu: f64,
    bench_cpu: f64,
}

impl Sample {
    fn take(control_plane: &ControlPlane, operator: &Operator) -> anyhow::Result<Self> {
        let memory = control_plane.memory()?;
        let servers = control_plane_pids();
        let cpu = |name: &str| servers.get(name).and_then(|pid| proc_stats(*pid).ok()).map_or(0.0, |s| s.cpu_seconds);
        Ok(Self {
            at: Instant::now(),
            operator_pid: operator.pid,
            operator: proc_stats(operator.pid)?,
            etcd_rss: memory.etcd_rss_bytes,
            apiserver_rss: memory.apiserver_rss_bytes,
            apiserver_cpu: cpu("kube-apiserver"),
            etcd_cpu: cpu("etcd"),
            bench_cpu: proc_stats(std::process::id())?.cpu_seconds,
        })
    }

    /// Wall time and CPU seconds (operator, kube-apiserver, etcd, benchmark) since `earlier`.
    fn cpu_since(&self, earlier: &Sample) -> String {
        let operator = if self.operator_pid == earlier.operator_pid {
            self.operator.cpu_seconds - earlier.operator.cpu_seconds
        } else {
            // A new process: all of its CPU time belongs to this phase.
            self.operator.cpu_seconds
        };
        let wall = self.at.duration_since(earlier.at).as_secs_f64();
        let apiserver = self.apiserver_cpu - earlier.apiserver_cpu;
        let etcd = self.etcd_cpu - earlier.etcd_cpu;
        let bench = self.bench_cpu - earlier.bench_cpu;
        let busy = (operator + apiserver + etcd + bench) / wall.max(0.001);
        format!(
            "{wall:.1}s wall: operator {operator:.1}s, kube-apiserver {apiserver:.1}s, etcd {etcd:.1}s, bench+fake IMS {bench:.1}s ({busy:.2} cores busy)"
        )
    }
}

/// Pids of the control-plane servers, which are children of this process, by command name.
fn control_plane_pids() -> BTreeMap<String, u32> {
    let me = std::process::id();
    let mut pids = BTreeMap::new();
    let Ok(entries) = std::fs::read_dir("/proc") else { return pids };
    for entry in entries.flatten() {
        let Some(pid) = entry.file_name().to_str().and_then(|n| n.parse::<u32>().ok()) else { continue };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else { continue };
        let (Some(open), Some(close)) = (stat.find('('), stat.rfind(')')) else { continue };
        let name = &stat[open + 1..close];
        let parent = stat[close + 1..].split_whitespace().nth(1).and_then(|p| p.parse::<u32>().ok());
        if parent == Some(me) && (name == "etcd" || name == "kube-apiserver") {
            pids.insert(name.to_owned(), pid);
        }
    }
    pids
}

fn mib(bytes: u64) -> f64 {
    bytes as f64 / MIB
}

fn ms(d: Duration) -> String {
    format!("{:.0} ms", d.as_secs_f64() * 1000.0)
}

/// Nearest-rank percentile of sorted values.
fn percentile(sorted: &[Duration], q: f64) -> Duration {
    let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1]
}

/// A plain text table with aligned columns.
#[derive(Default)]
struct Table {
    rows: Vec<[String; 3]>,
}

impl Table {
    fn row(&mut self, a: &str, b: impl Into<String>, c: impl Into<String>) {
        self.rows.push([a.to_owned(), b.into(), c.into()]);
    }

    fn print(&self, header: &[&str; 3]) {
        let mut widths = header.map(|h| h.chars().count());
        for row in &self.rows {
            for (w, cell) in widths.iter_mut().zip(row) {
                *w = (*w).max(cell.chars().count());
            }
        }
        let line = |cells: [&str; 3]| {
            let mut out = String::from("| ");
            for (cell, w) in cells.iter().zip(widths) {
                let _ = write!(out, "{cell}{} | ", " ".repeat(w - cell.chars().count()));
            }
            out.trim_end().to_owned()
        };
        println!("{}", line(*header));
        println!("|{}|", widths.map(|w| "-".repeat(w + 2)).join("|"));
        for row in &self.rows {
            println!("{}", line([&row[0], &row[1], &row[2]]));
        }
    }
}
