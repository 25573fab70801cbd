//! The AdobeCredential and Secrets the command-line tools (`check`, `login`) work on: from files,
//! from the cluster of the current kubeconfig, or both.

use std::path::PathBuf;

use anyhow::{Context as _, anyhow, bail, ensure};
use k8s_openapi::api::core::v1::Secret;
use kube::{Api, Client, ResourceExt};
use serde::Deserialize;

use crate::cli::CredentialArgs;
use crate::crd::AdobeCredential;
use crate::source::{CredentialName, SecretReader};

pub struct CredentialInput {
    /// The credential, its namespace always set.
    pub credential: AdobeCredential,
    /// The Secrets the files held.
    secrets: Vec<Secret>,
    /// The Secrets of the credential's namespace in the cluster, when they may be read.
    cluster_secrets: Option<Api<Secret>>,
    /// The cluster, when the command connected to it.
    pub client: Option<Client>,
}

impl CredentialInput {
    /// Reads what `args` names. `connect` asks for a cluster connection even when no input is
    /// read from it (the command writes there).
    pub async fn load(args: &CredentialArgs, connect: bool) -> anyhow::Result<Self> {
        let client = if connect || args.name.is_some() || args.from_cluster {
            Some(Client::try_default().await.context("connecting to the cluster of the current kubeconfig")?)
        } else {
            None
        };
        let context_namespace = || client.as_ref().map_or("default", |c| c.default_namespace()).to_owned();
        let (mut credential, secrets) = match &args.name {
            Some(name) => {
                let namespace = args.namespace.clone().unwrap_or_else(context_namespace);
                let client = client.clone().ok_or_else(|| anyhow!("no cluster connection"))?;
                let found = Api::<AdobeCredential>::namespaced(client, &namespace)
                    .get_opt(name)
                    .await
                    .with_context(|| format!("reading AdobeCredential {namespace}/{name}"))?;
                (found.ok_or_else(|| anyhow!("there is no AdobeCredential {namespace}/{name}"))?, Vec::new())
            }
            None => read_manifests(&args.files)?,
        };
        let namespace = match (credential.namespace(), &args.namespace) {
            (Some(own), Some(flag)) if own != *flag => {
                bail!("the manifest puts {} in namespace {own}, not {flag}", credential.name_any())
            }
            (Some(own), _) => own,
            (None, Some(flag)) => flag.clone(),
            (None, None) => context_namespace(),
        };
        credential.metadata.namespace = Some(namespace.clone());
        let reads_cluster = args.name.is_some() || args.from_cluster;
        let cluster_secrets = client.clone().filter(|_| reads_cluster).map(|c| Api::namespaced(c, &namespace));
        Ok(Self { credential, secrets, cluster_secrets, client })
    }

    /// A reader of the credential's Secrets: the files' first, then the cluster's if allowed.
    pub fn reader(&mut self) -> SecretReader<'_> {
        let name = CredentialName::of(&self.credential);
        SecretReader::with(std::mem::take(&mut self.secrets), self.cluster_secrets.as_ref(), name)
    }
}

/// The AdobeCredential and the Secrets of YAML or JSON files (several documents each).
fn read_manifests(files: &[PathBuf]) -> anyhow::Result<(AdobeCredential, Vec<Secret>)> {
    let (mut credentials, mut secrets) = (Vec::new(), Vec::new());
    for file in files {
        let text = std::fs::read_to_string(file).with_context(|| format!("reading {}", file.display()))?;
        for document in serde_yaml::Deserializer::from_str(&text) {
            let value = serde_json::Value::deserialize(document)
                .with_context(|| format!("{} is not YAML or JSON", file.display()))?;
            match value["kind"].as_str() {
                Some("AdobeCredential") => credentials.push(
                    serde_json::from_value(value)
                        .with_context(|| format!("the AdobeCredential in {}", file.display()))?,
                ),
                Some("Secret") => secrets
                    .push(serde_json::from_value(value).with_context(|| format!("a Secret in {}", file.display()))?),
                _ => {}
            }
        }
    }
    ensure!(credentials.len() == 1, "the files must hold exactly one AdobeCredential, not {}", credentials.len());
    Ok((credentials.remove(0), secrets))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn manifests_give_one_credential_and_its_secrets() {
        let dir = tempfile::tempdir().expect("dir");
        let path = dir.path().join("c.yaml");
        let text = "apiVersion: credentials.adobe-operator.io/v1alpha1\nkind: AdobeCredential\nmetadata: {name: c}\nspec: {}\n---\napiVersion: v1\nkind: Secret\nmetadata: {name: s}\nstringData: {client_id: abc}\n---\nkind: ConfigMap\n";
        std::fs::write(&path, text).expect("write");
        let (credential, secrets) = read_manifests(std::slice::from_ref(&path)).expect("read");
        assert_eq!(credential.name_any(), "c");
        assert_eq!(secrets.len(), 1);
        let error = read_manifests(&[path.clone(), path]).expect_err("two credentials");
        assert!(error.to_string().contains("exactly one AdobeCredential, not 2"), "{error}");
    }
}
