//! One writer, always: the leader loses its API server (its connections stall, as with a frozen
//! network or a SIGSTOPped proxy), a follower takes over, and the token server's request log
//! shows that the two replicas never minted in the same window.

mod common;

use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use common::{DAY, Operator, TestEnv, WAIT, eventually};
use k8s_openapi::api::coordination::v1::Lease;
use kube::Api;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

const LEASE: &str = "aco-one-writer";
const RENEW_DEADLINE: Duration = Duration::from_secs(3);

#[tokio::test]
async fn a_stalled_leader_stops_before_the_follower_takes_over() {
    let mut env = TestEnv::new("one-writer").await;
    env.kill_operator().await;
    let upstream = {
        let url = env.control_plane.kube_config().cluster_url;
        let port = url.port_u16().expect("API server port");
        SocketAddr::from(([127, 0, 0, 1], port))
    };
    let proxy = StallableProxy::start(upstream).await;
    let kubeconfig_a = env.dir.path().join("kubeconfig-a");
    write_kubeconfig_via(env.control_plane.kubeconfig_path(), &kubeconfig_a, proxy.addr);

    // Replica a reaches the API server only through the proxy; replica b directly.
    let mut a = Replica::start(&env, "replica-a", &kubeconfig_a).await;
    let leases: Api<Lease> = Api::namespaced(env.client.clone(), env.ns());
    eventually("replica-a to hold the lease", WAIT, || async {
        (holder(&leases).await.as_deref() == Some("replica-a")).then_some(())
    })
    .await;
    let b = Replica::start(&env, "replica-b", env.control_plane.kubeconfig_path()).await;
    eventually("replica-b to be a ready standby", WAIT, || async {
        let ready = reqwest::get(format!("{}/readyz", b.url)).await.ok()?;
        (ready.status() == 200).then_some(())
    })
    .await;

    // A steady stream of fresh credentials, each needing one mint, for the whole test: a mint
    // spacing per credential cannot hide anything, and each request is one mint.
    env.register_client("ow-client", "p8e-ow-secret", DAY);
    env.put_source("ow-src", "ow-client", "p8e-ow-secret").await;
    let (stop_creating, creating) = watch::channel(false);
    let creator =
        tokio::spawn(create_credentials(env.credentials(), env.s2s_credential("template", "ow-src"), creating));
    // Replica a's mint count, sampled until it exits (its /metrics dies with it).
    let a_samples = Arc::new(Mutex::new(Vec::<(Instant, u64)>::new()));
    let sampler = tokio::spawn(sample_mints(a.url.clone(), a_samples.clone()));
    let a_mints = || a_samples.lock().expect("samples").last().map_or(0, |(_, n)| *n);

    eventually("replica-a to mint several tokens", WAIT, || async { (a_mints() >= 5).then_some(()) }).await;
    assert_eq!(mints(&b.url).await, Some(0), "the follower never mints");

    let stalled_at = SystemTime::now();
    let stalled_instant = Instant::now();
    proxy.stall();
    // Replica a gives up on its own: it cannot confirm the lease within the renew deadline.
    let a_exit = tokio::spawn(async move {
        let status = a.wait_exit(WAIT).await;
        (status, stalled_instant.elapsed(), a)
    });

    // Replica b takes over once the lease went unrenewed for its duration on b's clock.
    let lease = eventually("replica-b to take the lease over", WAIT, || async {
        let lease = leases.get(LEASE).await.ok()?;
        let spec = lease.spec.clone()?;
        (spec.holder_identity.as_deref() == Some("replica-b")).then_some(lease)
    })
    .await;
    let failover = stalled_instant.elapsed();
    let spec = lease.spec.expect("spec");
    let b_acquired_at: SystemTime = spec.acquire_time.expect("acquireTime").0.into();
    assert_eq!(spec.lease_transitions, Some(1), "one change of holder");

    let (a_status, a_exited_after, _a) = a_exit.await.expect("replica-a's exit");
    assert!(!a_status.success(), "replica-a exits with a failure when it loses the lease: {a_status:?}");
    sampler.abort();

    eventually("replica-b to mint several tokens", WAIT, || async {
        (mints(&b.url).await.unwrap_or(0) >= 5).then_some(())
    })
    .await;
    stop_creating.send_replace(true);
    let created = creator.await.expect("creator");
    for name in &created {
        env.wait_ready(name, "True", "TokenMinted").await;
    }
    let b_final = mints(&b.url).await.expect("b's metrics");
    let a_final = a_mints();

    // Attribution: replica b minted exactly the requests received after it acquired the lease,
    // replica a exactly those before; a mint of a after b's takeover (or of b before it) would
    // break one of the two counts.
    let mut received: Vec<SystemTime> = env.ims.requests_for("ow-client").iter().map(|r| r.received_at).collect();
    received.sort();
    let (before, after): (Vec<SystemTime>, Vec<SystemTime>) = received.iter().partition(|at| **at < b_acquired_at);
    let since =
        |t: SystemTime| t.duration_since(stalled_at).map_or_else(|e| -e.duration().as_secs_f64(), |d| d.as_secs_f64());
    eprintln!(
        "one writer: {} credentials; replica-a minted {a_final}, replica-b {b_final}, token server received {}; \
         b acquired the lease {:.2}s after the stall (seen by the test after {failover:.2?}); a exited after \
         {a_exited_after:.2?}; a's last request at {:+.2}s, b's first at {:+.2}s",
        created.len(),
        received.len(),
        since(b_acquired_at),
        before.last().map_or(f64::NAN, |t| since(*t)),
        after.first().map_or(f64::NAN, |t| since(*t)),
    );
    assert_eq!(received.len() as u64, a_final + b_final, "every request came from one of the two replicas");
    assert_eq!(after.len() as u64, b_final, "replica-b minted only after it acquired the lease, and a did not");
    assert_eq!(before.len() as u64, a_final, "replica-a minted only before replica-b acquired the lease");
    assert!(a_final >= 5 && b_final >= 5);
    // Replica a stopped within the renew deadline of the stall (its last confirmed renewal was
    // sent before the stall), well before the follower's lease duration ran out.
    let a_last = *before.last().expect("a minted");
    assert!(since(a_last) < RENEW_DEADLINE.as_secs_f64(), "replica-a minted after its renew deadline");
    // ... and had even exited before the follower took over.
    assert!(
        a_exited_after.as_secs_f64() < since(b_acquired_at),
        "replica-a still ran when replica-b acquired the lease"
    );
    drop(proxy);
    // One mint per credential created.
    env.assert_no_mint_loop(&[("ow-client", created.len() - 1)]);
}

/// The lease's holder, as the API server has it.
async fn holder(leases: &Api<Lease>) -> Option<String> {
    leases.get(LEASE).await.ok()?.spec?.holder_identity
}

/// Creates one credential every 300 ms (all reading the same source Secret) until told to stop;
/// returns their names.
async fn create_credentials(
    api: Api<adobe_credential_operator::crd::AdobeCredential>,
    template: adobe_credential_operator::crd::AdobeCredential,
    mut stop: watch::Receiver<bool>,
) -> Vec<String> {
    let mut names = Vec::new();
    for i in 0.. {
        let name = format!("ow-{i:03}");
        let mut cred = template.clone();
        cred.metadata.name = Some(name.clone());
        api.create(&kube::api::PostParams::default(), &cred).await.expect("create AdobeCredential");
        names.push(name);
        if tokio::time::timeout(Duration::from_millis(300), stop.wait_for(|s| *s)).await.is_ok() {
            break;
        }
    }
    names
}

/// Samples a replica's mint count every 50 ms while its /metrics answers.
async fn sample_mints(url: String, samples: Arc<Mutex<Vec<(Instant, u64)>>>) {
    loop {
        if let Some(n) = mints(&url).await {
            samples.lock().expect("samples").push((Instant::now(), n));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// All token requests a replica made, whatever their outcome, from its /metrics.
async fn mints(url: &str) -> Option<u64> {
    let response = reqwest::get(format!("{url}/metrics")).await.ok()?;
    let text = response.text().await.ok()?;
    let total = text
        .lines()
        .filter(|l| l.starts_with("adobe_credential_mint_requests_total{"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum::<f64>();
    Some(total as u64)
}

/// A copy of `kubeconfig` whose server is `via` (the API server's certificate names 127.0.0.1,
/// so only the port changes).
fn write_kubeconfig_via(kubeconfig: &Path, copy: &Path, via: SocketAddr) {
    let text = std::fs::read_to_string(kubeconfig).expect("kubeconfig");
    let mut config: serde_yaml::Value = serde_yaml::from_str(&text).expect("kubeconfig YAML");
    let clusters = config["clusters"].as_sequence_mut().expect("clusters");
    for cluster in clusters {
        cluster["cluster"]["server"] = serde_yaml::Value::from(format!("https://{via}"));
    }
    std::fs::write(copy, serde_yaml::to_string(&config).expect("YAML")).expect("write kubeconfig");
}

/// One operator process with leader election, its own identity and HTTP port.
struct Replica {
    operator: Operator,
    url: String,
}

impl Replica {
    async fn start(env: &TestEnv, identity: &str, kubeconfig: &Path) -> Self {
        let port = TcpListener::bind("127.0.0.1:0").await.expect("bind").local_addr().expect("addr").port();
        let (http_addr, lease_namespace) = (format!("127.0.0.1:{port}"), env.ns().to_owned());
        let mut flags = common::FAST_LEADER_ELECTION.to_vec();
        flags.extend(["--http-addr", &http_addr, "--instance", identity]);
        flags.extend(["--lease-name", LEASE, "--lease-namespace", &lease_namespace]);
        let log = env.dir.path().join(format!("{identity}.log"));
        let operator = Operator::start_with(env.ns(), kubeconfig, &env.ca_file(), log, &flags).await;
        Self { operator, url: format!("http://{http_addr}") }
    }

    async fn wait_exit(&mut self, timeout: Duration) -> std::process::ExitStatus {
        self.operator.wait_exit(timeout).await
    }
}

impl Drop for Replica {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("--- replica {} ---\n{}", self.url, self.operator.logs());
        }
    }
}

/// A loopback TCP proxy whose forwarding can be stalled: bytes stop flowing in both directions
/// while every connection stays open, as with a frozen API server or network.
struct StallableProxy {
    addr: SocketAddr,
    stalled: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

impl StallableProxy {
    async fn start(upstream: SocketAddr) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind proxy");
        let addr = listener.local_addr().expect("proxy address");
        let (stalled, _) = watch::channel(false);
        let pumps = stalled.clone();
        let task = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let Ok(server) = TcpStream::connect(upstream).await else { continue };
                let (client_read, client_write) = client.into_split();
                let (server_read, server_write) = server.into_split();
                tokio::spawn(pump(client_read, server_write, pumps.subscribe()));
                tokio::spawn(pump(server_read, client_write, pumps.subscribe()));
            }
        });
        Self { addr, stalled, task }
    }

    fn stall(&self) {
        self.stalled.send_replace(true);
    }
}

impl Drop for StallableProxy {
    fn drop(&mut self) {
        // Dropping the sender ends every pump, closing the connections.
        self.task.abort();
    }
}

/// Copies bytes one way while not stalled; bytes read just before a stall are held, not sent.
async fn pump(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    mut stalled: watch::Receiver<bool>,
) {
    let mut buf = vec![0u8; 32 * 1024];
    loop {
        if stalled.wait_for(|s| !*s).await.is_err() {
            return;
        }
        let n = tokio::select! {
            read = from.read(&mut buf) => match read {
                Ok(0) | Err(_) => return,
                Ok(n) => n,
            },
            stall = stalled.wait_for(|s| *s) => match stall {
                Ok(_) => continue,
                Err(_) => return,
            },
        };
        if stalled.wait_for(|s| !*s).await.is_err() || to.write_all(&buf[..n]).await.is_err() {
            return;
        }
    }
}
