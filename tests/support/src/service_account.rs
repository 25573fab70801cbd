//! ServiceAccount identities, authenticated by real TokenRequest tokens, so RBAC is exercised
//! exactly as for a Pod running the operator.

use std::path::PathBuf;

use anyhow::{Context, Result};
use k8s_openapi::api::{
    authentication::v1::{TokenRequest, TokenRequestSpec},
    core::v1::ServiceAccount,
};
use kube::{
    Api, Client,
    api::{ObjectMeta, PostParams},
};
use serde_json::Value;

use crate::{
    ControlPlane,
    kubeconfig::{self, Credentials},
};

/// Long enough for any test; the API server may shorten it but never below ten minutes.
const TOKEN_LIFETIME_SECONDS: i64 = 3600;

impl ControlPlane {
    /// A client acting as ServiceAccount `namespace/name` (created if missing), with only the
    /// permissions RBAC grants it.
    pub async fn service_account_client(&self, namespace: &str, name: &str) -> Result<Client> {
        let kubeconfig = self.service_account_kubeconfig_value(namespace, name).await?;
        Ok(Client::try_from(kubeconfig::to_config(&kubeconfig).await?)?)
    }

    /// Writes a kubeconfig for ServiceAccount `namespace/name` (created if missing) holding a
    /// fresh one-hour token, for running an operator binary with exactly that identity.
    pub async fn service_account_kubeconfig(&self, namespace: &str, name: &str) -> Result<PathBuf> {
        let kubeconfig = self.service_account_kubeconfig_value(namespace, name).await?;
        let path = self.dir.join(format!("kubeconfig-{namespace}-{name}"));
        kubeconfig::write(&path, &kubeconfig)?;
        Ok(path)
    }

    async fn service_account_kubeconfig_value(&self, namespace: &str, name: &str) -> Result<Value> {
        let accounts: Api<ServiceAccount> = Api::namespaced(self.client(), namespace);
        let account = ServiceAccount {
            metadata: ObjectMeta { name: Some(name.to_owned()), ..ObjectMeta::default() },
            ..ServiceAccount::default()
        };
        match accounts.create(&PostParams::default(), &account).await {
            Err(kube::Error::Api(status)) if status.is_already_exists() => {}
            created => {
                created.with_context(|| format!("creating ServiceAccount {namespace}/{name}"))?;
            }
        }
        let request = TokenRequest {
            spec: Some(TokenRequestSpec {
                expiration_seconds: Some(TOKEN_LIFETIME_SECONDS),
                ..TokenRequestSpec::default()
            }),
            ..TokenRequest::default()
        };
        let token = accounts
            .create_token_request(name, &PostParams::default(), &request)
            .await
            .with_context(|| format!("requesting a token for ServiceAccount {namespace}/{name}"))?
            .status
            .and_then(|status| status.token)
            .context("TokenRequest answered without a token")?;
        Ok(kubeconfig::kubeconfig(
            &self.url,
            &self.ca_cert,
            &format!("system:serviceaccount:{namespace}:{name}"),
            Credentials::BearerToken(&token),
        ))
    }
}
