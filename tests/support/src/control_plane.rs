//! A real etcd + kube-apiserver pair on loopback, its clients and its fault injection.

use std::{
    fmt, fs,
    net::TcpListener,
    path::{Path, PathBuf},
    sync::{Mutex, MutexGuard},
    time::{Duration, Instant},
};

use anyhow::{Context, Result, anyhow, bail};
use k8s_openapi::api::core::v1::Namespace;
use kube::{Api, Client};

use crate::{
    apiserver::{self, ApiServerFiles},
    binaries,
    certificates::Pki,
    etcd,
    kubeconfig::{self, Credentials},
    process::{Reaper, Server, ServerCommand},
    ready::wait_until,
};

/// Deadline for the control plane (or a restarted API server) to become ready. Generous: it
/// takes 3-4 s with warm caches here, but a cold page cache and busy CI cores stretch that a lot.
const STARTUP_TIMEOUT: Duration = Duration::from_secs(90);

/// One etcd and one kube-apiserver, started once per test binary by [`crate::control_plane`].
///
/// No controller-manager, scheduler or kubelet runs: namespaces are never fully deleted, owner
/// references are not garbage-collected and Deployments create no Pods.
pub struct ControlPlane {
    pub(crate) dir: PathBuf,
    bin_dir: PathBuf,
    reaper: Reaper,
    etcd: Server,
    apiserver_command: ServerCommand,
    /// `None` while stopped by a fault test.
    apiserver: Mutex<Option<Server>>,
    pub(crate) url: String,
    pub(crate) ca_cert: String,
    kubeconfig_path: PathBuf,
    kube_config: kube::Config,
    startup_duration: Duration,
    exclusive: tokio::sync::Mutex<()>,
}

/// Resident memory of the control-plane processes.
#[derive(Debug, Clone, Copy)]
pub struct ControlPlaneMemory {
    /// etcd's resident set size in bytes.
    pub etcd_rss_bytes: u64,
    /// kube-apiserver's resident set size in bytes.
    pub apiserver_rss_bytes: u64,
}

impl fmt::Display for ControlPlaneMemory {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const MIB: u64 = 1024 * 1024;
        write!(f, "etcd {} MiB, kube-apiserver {} MiB RSS", self.etcd_rss_bytes / MIB, self.apiserver_rss_bytes / MIB)
    }
}

impl ControlPlane {
    /// Starts etcd and kube-apiserver and waits until they serve; blocks the calling thread,
    /// which must not be inside a Tokio runtime.
    pub(crate) fn start() -> Result<Self> {
        let started = Instant::now();
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
        let mut control_plane = runtime.block_on(Self::start_servers())?;
        control_plane.startup_duration = started.elapsed();
        Ok(control_plane)
    }

    async fn start_servers() -> Result<Self> {
        let deadline = tokio::time::Instant::now() + STARTUP_TIMEOUT;
        let bin_dir = binaries::bin_dir()?;
        binaries::check_present(&bin_dir)?;

        // Kept rather than auto-deleted: the reaper deletes it after the servers are gone, which
        // a destructor could not guarantee (see `process`).
        let dir = tempfile::Builder::new().prefix("test-support-").tempdir()?.keep();
        let reaper = Reaper::spawn(&dir)?;
        // From here on an early return drops `reaper`, which stops whatever was started.

        let pki = Pki::generate()?;
        let files = write_pki(&dir, &pki)?;
        let [etcd_client_port, etcd_peer_port, apiserver_port] = free_ports()?;

        let mut etcd = Server::spawn(&etcd::command(&bin_dir, &dir, etcd_client_port, etcd_peer_port), &reaper)?;
        let etcd_url = format!("http://127.0.0.1:{etcd_client_port}");
        let http = reqwest::Client::new();
        wait_until(&mut etcd, "etcd /health", deadline, || etcd::healthy(&http, &etcd_url)).await?;

        let url = format!("https://127.0.0.1:{apiserver_port}");
        let apiserver_command = apiserver::command(&bin_dir, &dir, &files, &etcd_url, apiserver_port);
        let mut apiserver = Server::spawn(&apiserver_command, &reaper)?;
        wait_for_apiserver(&mut apiserver, &url, &pki.ca_cert, deadline).await?;

        let admin = kubeconfig::kubeconfig(
            &url,
            &pki.ca_cert,
            "admin",
            Credentials::ClientCertificate { cert: &pki.admin_cert, key: &pki.admin_key },
        );
        let kubeconfig_path = dir.join("kubeconfig");
        kubeconfig::write(&kubeconfig_path, &admin)?;
        let kube_config = kubeconfig::to_config(&admin).await?;

        // /readyz can pass before the bootstrap controller has created `default`.
        let namespaces: &Api<Namespace> = &Api::all(Client::try_from(kube_config.clone())?);
        wait_until(&mut apiserver, "the default namespace", deadline, || async move {
            namespaces.get("default").await?;
            Ok(())
        })
        .await?;

        Ok(Self {
            dir,
            bin_dir,
            reaper,
            etcd,
            apiserver_command,
            apiserver: Mutex::new(Some(apiserver)),
            url,
            ca_cert: pki.ca_cert,
            kubeconfig_path,
            kube_config,
            startup_duration: Duration::ZERO,
            exclusive: tokio::sync::Mutex::new(()),
        })
    }

    /// A client authenticated as `admin` (group `system:masters`), bound to the caller's runtime.
    pub fn client(&self) -> Client {
        // Built per call: a Client's buffer task lives on the runtime that created it, and every
        // `#[tokio::test]` has its own runtime.
        Client::try_from(self.kube_config.clone())
            .expect("the admin kubeconfig generated at startup yields a valid client")
    }

    /// The admin client configuration (for building customised clients).
    pub fn kube_config(&self) -> kube::Config {
        self.kube_config.clone()
    }

    /// The admin kubeconfig file, for kubectl, helm or an operator process (`KUBECONFIG`).
    pub fn kubeconfig_path(&self) -> &Path {
        &self.kubeconfig_path
    }

    /// The directory holding `kubectl` and `helm` (and the servers' binaries).
    pub fn bin_dir(&self) -> &Path {
        &self.bin_dir
    }

    /// How long [`crate::control_plane`] took to start etcd and kube-apiserver until ready.
    pub fn startup_duration(&self) -> Duration {
        self.startup_duration
    }

    /// Current resident memory of etcd and kube-apiserver (fails while the API server is stopped).
    pub fn memory(&self) -> Result<ControlPlaneMemory> {
        let apiserver_rss_bytes =
            self.apiserver_slot()?.as_ref().ok_or_else(|| anyhow!("kube-apiserver is stopped"))?.rss_bytes()?;
        Ok(ControlPlaneMemory { etcd_rss_bytes: self.etcd.rss_bytes()?, apiserver_rss_bytes })
    }

    /// Serialises tests that disturb the shared control plane (API server restarts): hold the
    /// guard for the whole test. Only tests that take it are serialised, so keep such tests in a
    /// test binary (a `tests/<name>.rs` file) of their own.
    pub async fn exclusive(&self) -> tokio::sync::MutexGuard<'_, ()> {
        self.exclusive.lock().await
    }

    /// Stops kube-apiserver gracefully (SIGTERM). etcd keeps running, so no data is lost.
    pub async fn stop_apiserver(&self) -> Result<()> {
        let apiserver = self.apiserver_slot()?.take().ok_or_else(|| anyhow!("kube-apiserver is already stopped"))?;
        apiserver.stop(&self.reaper).await
    }

    /// Starts kube-apiserver again with the same port, certificates and etcd; waits until ready.
    pub async fn start_apiserver(&self) -> Result<()> {
        if self.apiserver_slot()?.is_some() {
            bail!("kube-apiserver is already running");
        }
        let deadline = tokio::time::Instant::now() + STARTUP_TIMEOUT;
        let mut apiserver = Server::spawn(&self.apiserver_command, &self.reaper)?;
        if let Err(error) = wait_for_apiserver(&mut apiserver, &self.url, &self.ca_cert, deadline).await {
            // The readiness failure is what to report; should stopping fail as well, the reaper
            // still has the pid and kills the process when the test binary ends.
            let _ = apiserver.stop(&self.reaper).await;
            return Err(error);
        }
        *self.apiserver_slot()? = Some(apiserver);
        Ok(())
    }

    /// [`Self::stop_apiserver`] then [`Self::start_apiserver`].
    pub async fn restart_apiserver(&self) -> Result<()> {
        self.stop_apiserver().await?;
        self.start_apiserver().await
    }

    fn apiserver_slot(&self) -> Result<MutexGuard<'_, Option<Server>>> {
        self.apiserver.lock().map_err(|_| anyhow!("a test panicked while starting or stopping kube-apiserver"))
    }
}

async fn wait_for_apiserver(
    apiserver: &mut Server,
    url: &str,
    ca_cert: &str,
    deadline: tokio::time::Instant,
) -> Result<()> {
    let https = reqwest::Client::builder()
        .use_rustls_tls()
        .tls_built_in_root_certs(false)
        .add_root_certificate(reqwest::Certificate::from_pem(ca_cert.as_bytes())?)
        .build()?;
    wait_until(apiserver, "kube-apiserver /readyz", deadline, || apiserver::ready(&https, url)).await
}

fn write_pki(dir: &Path, pki: &Pki) -> Result<ApiServerFiles> {
    let pki_dir = dir.join("pki");
    fs::create_dir(&pki_dir)?;
    let write = |name: &str, pem: &str| -> Result<PathBuf> {
        let path = pki_dir.join(name);
        fs::write(&path, pem).with_context(|| format!("writing {}", path.display()))?;
        Ok(path)
    };
    Ok(ApiServerFiles {
        ca_cert: write("ca.crt", &pki.ca_cert)?,
        serving_cert: write("apiserver.crt", &pki.serving_cert)?,
        serving_key: write("apiserver.key", &pki.serving_key)?,
        service_account_key: write("service-account.key", &pki.service_account_key)?,
        service_account_public_key: write("service-account.pub", &pki.service_account_public_key)?,
    })
}

/// Distinct free loopback ports. They are released before the servers bind them, which leaves
/// a small race with other processes; acceptable for tests, as in Go's envtest.
fn free_ports<const N: usize>() -> Result<[u16; N]> {
    let listeners = (0..N).map(|_| TcpListener::bind("127.0.0.1:0")).collect::<std::io::Result<Vec<_>>>()?;
    let ports = listeners.iter().map(|listener| Ok(listener.local_addr()?.port())).collect::<Result<Vec<_>>>()?;
    ports.try_into().map_err(|_| anyhow!("expected {N} ports"))
}
