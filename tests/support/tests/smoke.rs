//! Proves the harness runs a real API server: schema validation, watches, RBAC, kubeconfig files
//! and version all come from kube-apiserver itself.

use std::{collections::BTreeMap, process::Command, time::Duration};

use anyhow::{Context, Result, ensure};
use futures::{StreamExt, TryStreamExt};
use k8s_openapi::{
    ByteString,
    api::{
        core::v1::Secret,
        rbac::v1::{PolicyRule, Role, RoleBinding, RoleRef, Subject},
    },
};
use kube::{
    Api,
    api::{ApiResource, DynamicObject, GroupVersionKind, ObjectMeta, Patch, PatchParams, PostParams},
    runtime::{WatchStreamExt, watcher},
};
use serde_json::json;
use test_support::{KUBERNETES_VERSION, control_plane, wait_for};

const WIDGET_CRD: &str = r#"
apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata:
  name: widgets.smoke.example.com
spec:
  group: smoke.example.com
  scope: Namespaced
  names: { kind: Widget, plural: widgets, singular: widget, listKind: WidgetList }
  versions:
    - name: v1
      served: true
      storage: true
      schema:
        openAPIV3Schema:
          type: object
          properties:
            spec:
              type: object
              properties:
                size: { type: integer }
"#;

const EVENT_TIMEOUT: Duration = Duration::from_secs(30);

fn secret(name: &str, value: &str) -> Secret {
    Secret {
        metadata: ObjectMeta { name: Some(name.to_owned()), ..ObjectMeta::default() },
        data: Some(BTreeMap::from([("value".to_owned(), ByteString(value.as_bytes().to_vec()))])),
        ..Secret::default()
    }
}

fn value_of(secret: &Secret) -> Option<&[u8]> {
    Some(secret.data.as_ref()?.get("value")?.0.as_slice())
}

#[tokio::test]
async fn reports_startup_time_and_memory() -> Result<()> {
    let control_plane = control_plane();
    let memory = control_plane.memory()?;
    eprintln!("control plane: started in {:.1?}; {memory}", control_plane.startup_duration());
    ensure!(memory.etcd_rss_bytes > 0 && memory.apiserver_rss_bytes > 0);
    Ok(())
}

#[tokio::test]
async fn version_endpoint_reports_the_built_version() -> Result<()> {
    let version = control_plane().client().apiserver_version().await?;
    ensure!(version.git_version == format!("v{KUBERNETES_VERSION}"), "/version says {version:?}");
    Ok(())
}

#[tokio::test]
async fn crd_is_established_and_its_schema_enforced() -> Result<()> {
    let control_plane = control_plane();
    control_plane.install_crd_yaml(WIDGET_CRD).await?;
    let namespace = control_plane.namespace("crd").await?;
    let resource = ApiResource::from_gvk(&GroupVersionKind::gvk("smoke.example.com", "v1", "Widget"));
    let widgets: Api<DynamicObject> = Api::namespaced_with(control_plane.client(), namespace.name(), &resource);

    let widget = DynamicObject::new("small", &resource).data(json!({ "spec": { "size": 3 } }));
    widgets.create(&PostParams::default(), &widget).await?;
    let stored = widgets.get("small").await?;
    ensure!(stored.data["spec"]["size"] == 3, "stored {:?}", stored.data);

    let invalid = DynamicObject::new("odd", &resource).data(json!({ "spec": { "size": "big" } }));
    match widgets.create(&PostParams::default(), &invalid).await {
        Err(kube::Error::Api(status)) if status.is_invalid() => Ok(()),
        other => anyhow::bail!("a string size was not rejected by the schema: {other:?}"),
    }
}

#[tokio::test]
async fn watch_observes_a_secret_update() -> Result<()> {
    let control_plane = control_plane();
    let namespace = control_plane.namespace("watch").await?;
    let secrets: Api<Secret> = Api::namespaced(control_plane.client(), namespace.name());
    secrets.create(&PostParams::default(), &secret("watched", "v1")).await?;

    let mut applied =
        watcher(secrets.clone(), watcher::Config::default().fields("metadata.name=watched")).applied_objects().boxed();
    let mut next_value = async || -> Result<Vec<u8>> {
        let secret = tokio::time::timeout(EVENT_TIMEOUT, applied.try_next())
            .await
            .context("no watch event")??
            .context("watch ended")?;
        Ok(value_of(&secret).unwrap_or_default().to_vec())
    };
    ensure!(next_value().await? == b"v1");

    let patch = json!({ "stringData": { "value": "v2" } });
    secrets.patch("watched", &PatchParams::default(), &Patch::Merge(&patch)).await?;
    ensure!(next_value().await? == b"v2");
    Ok(())
}

#[tokio::test]
async fn service_account_needs_rbac_to_read_secrets() -> Result<()> {
    let control_plane = control_plane();
    let namespace = control_plane.namespace("rbac").await?;
    let ns = namespace.name();
    let admin = control_plane.client();
    Api::<Secret>::namespaced(admin.clone(), ns).create(&PostParams::default(), &secret("guarded", "s3cret")).await?;

    let as_reader: Api<Secret> = Api::namespaced(control_plane.service_account_client(ns, "reader").await?, ns);
    for attempt in [as_reader.get("guarded").await.err(), as_reader.list(&Default::default()).await.err()] {
        match attempt {
            Some(kube::Error::Api(status)) if status.is_forbidden() => {}
            other => anyhow::bail!("expected 403 Forbidden without RBAC, got {other:?}"),
        }
    }

    grant_get_secrets(&admin, ns, "reader").await?;
    // The authorizer sees RBAC objects through an informer, so the grant takes effect shortly.
    wait_for("the Role to allow reading the Secret", EVENT_TIMEOUT, || async {
        as_reader.get("guarded").await.is_ok()
    })
    .await?;
    ensure!(value_of(&as_reader.get("guarded").await?) == Some(b"s3cret".as_slice()));
    // `get` was granted, `list` was not.
    ensure!(as_reader.list(&Default::default()).await.is_err());

    // The same identity through a kubeconfig file, as an operator process would use it.
    let kubeconfig = control_plane.service_account_kubeconfig(ns, "reader").await?;
    let kubectl = |args: &[&str]| {
        Command::new(control_plane.bin_dir().join("kubectl"))
            .arg("--kubeconfig")
            .arg(&kubeconfig)
            .args(["--namespace", ns])
            .args(args)
            .output()
    };
    let allowed = kubectl(&["get", "secret", "guarded", "-o", "name"])?;
    ensure!(allowed.status.success() && allowed.stdout == b"secret/guarded\n", "kubectl get secret: {allowed:?}");
    let denied = kubectl(&["get", "secrets"])?;
    ensure!(
        !denied.status.success() && String::from_utf8_lossy(&denied.stderr).contains("forbidden"),
        "kubectl list secrets without permission: {denied:?}"
    );
    Ok(())
}

async fn grant_get_secrets(admin: &kube::Client, ns: &str, account: &str) -> Result<()> {
    let role = Role {
        metadata: ObjectMeta { name: Some("secret-getter".to_owned()), ..ObjectMeta::default() },
        rules: Some(vec![PolicyRule {
            api_groups: Some(vec![String::new()]),
            resources: Some(vec!["secrets".to_owned()]),
            verbs: vec!["get".to_owned()],
            ..PolicyRule::default()
        }]),
    };
    let binding = RoleBinding {
        metadata: ObjectMeta { name: Some("secret-getter".to_owned()), ..ObjectMeta::default() },
        role_ref: RoleRef {
            api_group: Some("rbac.authorization.k8s.io".to_owned()),
            kind: "Role".to_owned(),
            name: "secret-getter".to_owned(),
        },
        subjects: Some(vec![Subject {
            kind: "ServiceAccount".to_owned(),
            name: account.to_owned(),
            namespace: Some(ns.to_owned()),
            ..Subject::default()
        }]),
    };
    Api::<Role>::namespaced(admin.clone(), ns).create(&PostParams::default(), &role).await?;
    Api::<RoleBinding>::namespaced(admin.clone(), ns).create(&PostParams::default(), &binding).await?;
    Ok(())
}

#[tokio::test]
async fn kubectl_works_with_the_admin_kubeconfig() -> Result<()> {
    let control_plane = control_plane();
    let namespace = control_plane.namespace("kubectl").await?;
    let output = Command::new(control_plane.bin_dir().join("kubectl"))
        .arg("--kubeconfig")
        .arg(control_plane.kubeconfig_path())
        .args(["get", "namespaces", "-o", "name"])
        .output()?;
    let stdout = String::from_utf8_lossy(&output.stdout);
    ensure!(
        output.status.success() && stdout.contains(&format!("namespace/{}\n", namespace.name())),
        "kubectl get ns: {output:?}"
    );
    Ok(())
}
