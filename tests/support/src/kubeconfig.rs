//! Kubeconfig files for the control plane, so kubectl, helm and a separately started operator
//! binary connect exactly as the in-process clients do.

use std::{fs::OpenOptions, io::Write, os::unix::fs::OpenOptionsExt, path::Path};

use anyhow::{Context, Result};
use base64::{Engine, engine::general_purpose::STANDARD};
use kube::config::{KubeConfigOptions, Kubeconfig};
use serde_json::{Value, json};

/// How a user proves who it is.
pub(crate) enum Credentials<'a> {
    ClientCertificate { cert: &'a str, key: &'a str },
    BearerToken(&'a str),
}

/// A one-cluster, one-user kubeconfig whose current context points at `server`.
pub(crate) fn kubeconfig(server: &str, ca_cert: &str, user: &str, credentials: Credentials<'_>) -> Value {
    let user_entry = match credentials {
        Credentials::ClientCertificate { cert, key } => json!({
            "client-certificate-data": STANDARD.encode(cert),
            "client-key-data": STANDARD.encode(key),
        }),
        Credentials::BearerToken(token) => json!({ "token": token }),
    };
    json!({
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{
            "name": "envtest",
            "cluster": {
                "server": server,
                "certificate-authority-data": STANDARD.encode(ca_cert),
            },
        }],
        "users": [{ "name": user, "user": user_entry }],
        "contexts": [{
            "name": user,
            "context": { "cluster": "envtest", "user": user },
        }],
        "current-context": user,
    })
}

/// Writes the kubeconfig as YAML, readable only by the owner (it holds credentials).
pub(crate) fn write(path: &Path, kubeconfig: &Value) -> Result<()> {
    let yaml = serde_yaml::to_string(kubeconfig)?;
    let mut file = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("writing {}", path.display()))?;
    file.write_all(yaml.as_bytes())?;
    Ok(())
}

/// The client configuration kube would load from this kubeconfig.
pub(crate) async fn to_config(kubeconfig: &Value) -> Result<kube::Config> {
    let kubeconfig: Kubeconfig = serde_json::from_value(kubeconfig.clone())?;
    Ok(kube::Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default()).await?)
}
