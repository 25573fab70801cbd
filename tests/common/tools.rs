//! helm, kubectl and promtool as the tests run them: the binaries of the envtest build
//! (`scripts/envtest-build.sh`), with their caches and configuration kept out of the user's home.

use std::path::{Path, PathBuf};
use std::process::{Output, Stdio};

use serde::Deserialize as _;
use serde_json::Value;
use test_support::KUBERNETES_VERSION;

use super::WAIT;

pub const CHART: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/charts/adobe-credential-operator");
/// Release name of every install; the chart names its objects `<release>-adobe-credential-operator`.
pub const RELEASE: &str = "aco";

/// Home of helm's and kubectl's caches and configuration, so the tests never touch the user's.
pub fn tool_home() -> &'static Path {
    Path::new(concat!(env!("CARGO_TARGET_TMPDIR"), "/chart-tools"))
}

/// A binary of the envtest build (`scripts/envtest-build.sh`); a missing one fails the test.
pub fn tool(name: &str) -> PathBuf {
    let path = test_support::bin_dir().expect("envtest binary directory").join(name);
    assert!(path.is_file(), "{} is missing: build it with scripts/envtest-build.sh", path.display());
    path
}

pub fn helm_command() -> tokio::process::Command {
    let mut command = tokio::process::Command::new(tool("helm"));
    let home = tool_home();
    command
        .env("HELM_CACHE_HOME", home.join("helm-cache"))
        .env("HELM_CONFIG_HOME", home.join("helm-config"))
        .env("HELM_DATA_HOME", home.join("helm-data"))
        .env_remove("KUBECONFIG");
    command
}

pub async fn run(mut command: tokio::process::Command, stdin: Option<&str>) -> Output {
    command.stdin(if stdin.is_some() { Stdio::piped() } else { Stdio::null() });
    command.stdout(Stdio::piped()).stderr(Stdio::piped()).kill_on_drop(true);
    let mut child = command.spawn().unwrap_or_else(|e| panic!("spawning {command:?}: {e}"));
    if let Some(text) = stdin {
        use tokio::io::AsyncWriteExt;
        let mut pipe = child.stdin.take().expect("stdin pipe");
        pipe.write_all(text.as_bytes()).await.expect("writing stdin");
    }
    tokio::time::timeout(WAIT, child.wait_with_output())
        .await
        .unwrap_or_else(|_| panic!("{command:?} did not finish within {WAIT:?}"))
        .expect("waiting for the command")
}

pub fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Runs helm and returns its output, whether it succeeded or not.
pub async fn helm(args: &[&str]) -> Output {
    let mut command = helm_command();
    command.args(args);
    run(command, None).await
}

/// A values file holding `values` (YAML), for helm's `-f`.
pub fn values_file(values: &str) -> tempfile::NamedTempFile {
    let file = tempfile::NamedTempFile::new().expect("values file");
    std::fs::write(file.path(), values).expect("writing values");
    file
}

/// `helm lint --strict` of the chart with `values` (YAML) on top of the defaults. The envtest
/// helm is built without Kubernetes version ldflags (it would assume 1.20, below the chart's
/// kubeVersion), hence `--kube-version` here and in `helm template`.
pub async fn lint(values: &str) -> Output {
    let file = values_file(values);
    let path = file.path().to_str().expect("utf-8 path");
    helm(&["lint", "--strict", CHART, "--kube-version", KUBERNETES_VERSION, "-f", path]).await
}

/// `helm template` of the chart for `namespace` with `values` (YAML); the raw output.
pub async fn try_render(namespace: &str, values: &str, extra: &[&str]) -> Output {
    let file = values_file(values);
    let path = file.path().to_str().expect("utf-8 path");
    let mut args =
        vec!["template", RELEASE, CHART, "--namespace", namespace, "--kube-version", KUBERNETES_VERSION, "-f", path];
    args.extend_from_slice(extra);
    helm(&args).await
}

/// The rendered manifests as YAML; fails the test when helm fails.
pub async fn render(namespace: &str, values: &str) -> String {
    let output = try_render(namespace, values, &[]).await;
    assert!(output.status.success(), "helm template failed:\n{}", text(&output.stderr));
    text(&output.stdout)
}

/// The rendered objects, parsed.
pub async fn render_objects(namespace: &str, values: &str) -> Vec<Value> {
    documents(&render(namespace, values).await)
}

pub fn documents(yaml: &str) -> Vec<Value> {
    serde_yaml::Deserializer::from_str(yaml)
        .map(|doc| serde_yaml::Value::deserialize(doc).expect("rendered YAML parses"))
        .filter(|doc| !doc.is_null())
        .map(|doc| serde_json::to_value(doc).expect("YAML as JSON"))
        .collect()
}

/// kubectl with the admin kubeconfig, or with `kubeconfig` when given.
pub async fn kubectl(kubeconfig: Option<&Path>, args: &[&str], stdin: Option<&str>) -> Output {
    let kubeconfig = kubeconfig.unwrap_or_else(|| test_support::control_plane().kubeconfig_path());
    let mut command = tokio::process::Command::new(tool("kubectl"));
    command
        .arg("--kubeconfig")
        .arg(kubeconfig)
        .arg("--cache-dir")
        .arg(tool_home().join("kube-cache"))
        .args(args)
        .env_remove("KUBECONFIG");
    run(command, stdin).await
}

/// Server-side applies `manifests` as admin; fails the test with kubectl's message otherwise.
pub async fn apply(manifests: &str) {
    let output =
        kubectl(None, &["apply", "--server-side", "--field-manager=chart-test", "-f", "-"], Some(manifests)).await;
    assert!(output.status.success(), "kubectl apply rejected the manifests:\n{}", text(&output.stderr));
}

pub fn kind<'a>(objects: &'a [Value], kind: &str) -> Vec<&'a Value> {
    objects.iter().filter(|o| o["kind"] == kind).collect()
}

pub fn one<'a>(objects: &'a [Value], wanted: &str) -> &'a Value {
    let found = kind(objects, wanted);
    assert_eq!(found.len(), 1, "expected exactly one {wanted}");
    found[0]
}
