//! Installing CustomResourceDefinitions and waiting until they are served.

use std::time::Duration;

use anyhow::{Context, Result};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::{
    Api,
    api::{Patch, PatchParams},
};

use crate::{ControlPlane, wait_for};

const ESTABLISHED_TIMEOUT: Duration = Duration::from_secs(30);
const FIELD_MANAGER: &str = "test-support";

impl ControlPlane {
    /// Applies `crd` (server-side apply, so every test may install the same CRD) and waits until
    /// its `Established` condition is true.
    pub async fn install_crd(&self, crd: &CustomResourceDefinition) -> Result<CustomResourceDefinition> {
        let name = crd.metadata.name.as_deref().context("CRD without metadata.name")?;
        let crds: Api<CustomResourceDefinition> = Api::all(self.client());
        crds.patch(name, &PatchParams::apply(FIELD_MANAGER).force(), &Patch::Apply(crd))
            .await
            .with_context(|| format!("applying CRD {name}"))?;
        let crds = &crds;
        wait_for(format!("CRD {name} to be Established"), ESTABLISHED_TIMEOUT, || async move {
            crds.get_opt(name).await.ok().flatten().is_some_and(|crd| is_established(&crd))
        })
        .await?;
        Ok(crds.get(name).await?)
    }

    /// [`Self::install_crd`] for a CRD written as YAML.
    pub async fn install_crd_yaml(&self, yaml: &str) -> Result<CustomResourceDefinition> {
        let crd: CustomResourceDefinition = serde_yaml::from_str(yaml).context("parsing CRD YAML")?;
        self.install_crd(&crd).await
    }
}

fn is_established(crd: &CustomResourceDefinition) -> bool {
    crd.status
        .as_ref()
        .and_then(|status| status.conditions.as_ref())
        .is_some_and(|conditions| conditions.iter().any(|c| c.type_ == "Established" && c.status == "True"))
}
