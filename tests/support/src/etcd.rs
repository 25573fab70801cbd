//! The etcd server backing the API server.

use std::path::Path;

use anyhow::{Result, ensure};
use serde_json::Value;

use crate::process::ServerCommand;

/// etcd on `client_port` (plain HTTP, loopback only) with its data under `dir/etcd-data`.
pub(crate) fn command(bin_dir: &Path, dir: &Path, client_port: u16, peer_port: u16) -> ServerCommand {
    let client_url = format!("http://127.0.0.1:{client_port}");
    let peer_url = format!("http://127.0.0.1:{peer_port}");
    ServerCommand {
        name: "etcd",
        program: bin_dir.join("etcd"),
        args: vec![
            format!("--data-dir={}", dir.join("etcd-data").display()),
            format!("--listen-client-urls={client_url}"),
            format!("--advertise-client-urls={client_url}"),
            format!("--listen-peer-urls={peer_url}"),
            format!("--initial-advertise-peer-urls={peer_url}"),
            format!("--initial-cluster=default={peer_url}"),
            // Durability is pointless for throw-away test data and fsync dominates on slow disks.
            "--unsafe-no-fsync=true".into(),
        ],
        log: dir.join("etcd.log"),
    }
}

/// Succeeds once etcd's `/health` reports healthy.
pub(crate) async fn healthy(http: &reqwest::Client, client_url: &str) -> Result<()> {
    let body: Value = http.get(format!("{client_url}/health")).send().await?.error_for_status()?.json().await?;
    ensure!(body["health"] == "true", "etcd /health says {body}");
    Ok(())
}
