//! The finalizer that keeps a credential whose client secret the operator rotates until a
//! rotation in progress is wound down (`rotate.rs`): deleting the credential mid-rotation never
//! leaves a secret at Adobe that nobody holds, nor a rotated-out secret that is never deleted.
//! Written with JSON patches conditioned on the resourceVersion read, beside other finalizers.

use kube::api::PatchParams;
use kube::{Api, ResourceExt};
use serde_json::json;

use super::Context;
use crate::crd::AdobeCredential;
use crate::error::{Error, Result};
use crate::names::ROTATION_FINALIZER;

/// Adds the finalizer unless the credential has it.
pub(super) async fn ensure(cred: &AdobeCredential, ctx: &Context) -> Result<()> {
    if holds(cred) {
        return Ok(());
    }
    let mut finalizers = cred.finalizers().to_vec();
    finalizers.push(ROTATION_FINALIZER.to_owned());
    write(cred, ctx, finalizers).await
}

/// Removes the finalizer if the credential has it.
pub(super) async fn release(cred: &AdobeCredential, ctx: &Context) -> Result<()> {
    if !holds(cred) {
        return Ok(());
    }
    let finalizers = cred.finalizers().iter().filter(|f| *f != ROTATION_FINALIZER).cloned().collect();
    write(cred, ctx, finalizers).await
}

pub(super) fn holds(cred: &AdobeCredential) -> bool {
    cred.finalizers().iter().any(|f| f == ROTATION_FINALIZER)
}

async fn write(cred: &AdobeCredential, ctx: &Context, finalizers: Vec<String>) -> Result<()> {
    ctx.leadership.check()?;
    let operations = json!([
        { "op": "test", "path": "/metadata/resourceVersion", "value": cred.resource_version() },
        { "op": "add", "path": "/metadata/finalizers", "value": finalizers },
    ]);
    let api: Api<AdobeCredential> = Api::namespaced(ctx.client.clone(), &cred.namespace().unwrap_or_default());
    let patch = super::json_patch(operations).map_err(Error::kube("writing the rotation finalizer"))?;
    api.patch(&cred.name_any(), &PatchParams::default(), &patch)
        .await
        .map_err(Error::kube("writing the rotation finalizer"))?;
    Ok(())
}
