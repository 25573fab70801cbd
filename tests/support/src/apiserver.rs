//! The kube-apiserver under test.

use std::path::{Path, PathBuf};

use anyhow::{Result, ensure};

use crate::process::ServerCommand;

/// Files the API server reads, written by the control plane from its generated PKI.
pub(crate) struct ApiServerFiles {
    pub ca_cert: PathBuf,
    pub serving_cert: PathBuf,
    pub serving_key: PathBuf,
    pub service_account_key: PathBuf,
    pub service_account_public_key: PathBuf,
}

pub(crate) fn command(bin_dir: &Path, dir: &Path, files: &ApiServerFiles, etcd_url: &str, port: u16) -> ServerCommand {
    let path = |p: &Path| p.display().to_string();
    ServerCommand {
        name: "kube-apiserver",
        program: bin_dir.join("kube-apiserver"),
        args: vec![
            format!("--etcd-servers={etcd_url}"),
            format!("--secure-port={port}"),
            "--bind-address=127.0.0.1".into(),
            // No --advertise-address: a loopback one is rejected; the default-route address is used.
            format!("--cert-dir={}", dir.join("apiserver-certs").display()),
            format!("--tls-cert-file={}", path(&files.serving_cert)),
            format!("--tls-private-key-file={}", path(&files.serving_key)),
            format!("--client-ca-file={}", path(&files.ca_cert)),
            // Issuer and keys make TokenRequest work without a controller-manager.
            format!("--service-account-issuer=https://127.0.0.1:{port}/"),
            format!("--service-account-key-file={}", path(&files.service_account_public_key)),
            format!("--service-account-signing-key-file={}", path(&files.service_account_key)),
            "--authorization-mode=RBAC".into(),
            "--service-cluster-ip-range=10.0.0.0/24".into(),
            "--allow-privileged=true".into(),
            // Without a controller-manager no token controller exists for this plugin to rely on.
            "--disable-admission-plugins=ServiceAccount".into(),
        ],
        log: dir.join("kube-apiserver.log"),
    }
}

/// Succeeds once `/readyz` answers `ok` (anonymous access, as RBAC's public-info role allows).
pub(crate) async fn ready(https: &reqwest::Client, url: &str) -> Result<()> {
    let response = https.get(format!("{url}/readyz")).send().await?;
    let status = response.status();
    let body = response.text().await?;
    ensure!(status.is_success() && body == "ok", "/readyz: {status}: {body}");
    Ok(())
}
