//! The Helm chart `charts/adobe-credential-operator`: linted and rendered by the real `helm`, its
//! values schema and guards, its CRD copy, and its manifests applied to the real kube-apiserver,
//! where the namespace-scoped RBAC is exercised with the chart ServiceAccount's own token: what
//! the chart grants must be enough to run the operator, and no more.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::time::Duration;

use adobe_credential_operator::crd::AdobeCredential;
use common::tools::{
    CHART, RELEASE, apply, documents, helm, kind, kubectl, lint, one, render, render_objects, text, try_render,
    values_file,
};
use common::{Operator, WAIT, key};
use fake_token_server::{AdobeClient, FakeTokenServer};
use futures::TryStreamExt;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{ObjectReference, Secret, ServiceAccount};
use k8s_openapi::api::events::v1::Event;
use k8s_openapi::api::rbac::v1::{ClusterRole, PolicyRule, RoleBinding};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use kube::api::{DeleteParams, ListParams, Patch, PatchParams, PostParams, WatchEvent, WatchParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Api, Client};
use serde_json::{Value, json};
use test_support::TestNamespace;

const CHART_CRD: &str =
    concat!(env!("CARGO_MANIFEST_DIR"), "/charts/adobe-credential-operator/crds/adobecredentials.yaml");
const REPO_CRD: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/crds/adobecredentials.yaml");
const CRD_NAME: &str = "adobecredentials.credentials.adobe-operator.io";
const FULLNAME: &str = "aco-adobe-credential-operator";
const API_VERSION: &str = "credentials.adobe-operator.io/v1alpha1";

// ---- helm and kubectl -------------------------------------------------------------------------

/// Applies the chart's own CRD file once per test binary, as a user would, and waits until the
/// API server serves the resource.
async fn install_chart_crd() {
    static INSTALLED: tokio::sync::OnceCell<()> = tokio::sync::OnceCell::const_new();
    INSTALLED
        .get_or_init(|| async {
            let crd = std::fs::read_to_string(CHART_CRD).expect("chart CRD");
            apply(&crd).await;
            let output = kubectl(
                None,
                &["wait", "--for=condition=Established", &format!("crd/{CRD_NAME}"), "--timeout=60s"],
                None,
            )
            .await;
            assert!(output.status.success(), "CRD not established:\n{}", text(&output.stderr));
        })
        .await;
}

/// `kubectl auth can-i` as the identity of `kubeconfig`: true for "yes".
async fn can_i(kubeconfig: &Path, args: &[&str]) -> bool {
    let mut full = vec!["auth", "can-i"];
    full.extend_from_slice(args);
    let output = kubectl(Some(kubeconfig), &full, None).await;
    let answer = text(&output.stdout);
    match answer.split_whitespace().next() {
        Some("yes") => true,
        Some("no") => false,
        _ => panic!("kubectl auth can-i {args:?}: unexpected answer {answer:?}: {}", text(&output.stderr)),
    }
}

async fn client_for(kubeconfig: &Path) -> Client {
    let kubeconfig = Kubeconfig::read_from(kubeconfig).expect("kubeconfig");
    let config =
        kube::Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default()).await.expect("client config");
    Client::try_from(config).expect("client")
}

// ---- rendered objects ------------------------------------------------------------------------

/// A rule's target: API group, resource and its resourceNames (comma-joined, empty for all).
type RuleKey = (String, String, String);

/// Rules of a (Cluster)Role as `(apiGroup, resource, resourceNames) → verbs`.
fn rules(role: &Value) -> BTreeMap<RuleKey, BTreeSet<String>> {
    let strings = |list: &Value| -> Vec<String> {
        list.as_array().map(|l| l.iter().map(|v| v.as_str().expect("string").to_owned()).collect()).unwrap_or_default()
    };
    let mut map = BTreeMap::new();
    for rule in role["rules"].as_array().expect("rules") {
        let names = strings(&rule["resourceNames"]).join(",");
        for group in strings(&rule["apiGroups"]) {
            for resource in strings(&rule["resources"]) {
                let verbs: &mut BTreeSet<String> = map.entry((group.clone(), resource, names.clone())).or_default();
                verbs.extend(strings(&rule["verbs"]));
            }
        }
    }
    map
}

/// `(apiGroup, resource, resourceNames, verbs)` entries as [`rules`] returns them.
fn rule_set(entries: &[(&str, &str, &str, &[&str])]) -> BTreeMap<RuleKey, BTreeSet<String>> {
    entries
        .iter()
        .map(|(group, resource, names, verbs)| {
            (
                (group.to_string(), resource.to_string(), names.to_string()),
                verbs.iter().map(|v| v.to_string()).collect(),
            )
        })
        .collect()
}

/// What the operator needs in every namespace it serves.
fn operator_rules(rollout_restart: bool) -> BTreeMap<RuleKey, BTreeSet<String>> {
    let mut expected = rule_set(&[
        ("credentials.adobe-operator.io", "adobecredentials", "", &["get", "list", "watch"]),
        ("credentials.adobe-operator.io", "adobecredentials/status", "", &["get", "patch"]),
        ("", "secrets", "", &["get", "list", "watch", "create", "patch"]),
        ("events.k8s.io", "events", "", &["create", "patch"]),
    ]);
    if rollout_restart {
        expected.extend(rule_set(&[
            ("apps", "deployments", "", &["get", "patch"]),
            ("apps", "statefulsets", "", &["get", "patch"]),
            ("apps", "daemonsets", "", &["get", "patch"]),
        ]));
    }
    expected
}

/// The ClusterRole of the operator itself (not the tenant roles).
fn operator_cluster_role(objects: &[Value]) -> &Value {
    let found: Vec<&Value> =
        kind(objects, "ClusterRole").into_iter().filter(|r| r["metadata"]["name"] == FULLNAME).collect();
    assert_eq!(found.len(), 1, "expected exactly one ClusterRole {FULLNAME}");
    found[0]
}

fn cluster_role_names(objects: &[Value]) -> BTreeSet<String> {
    kind(objects, "ClusterRole").iter().map(|r| r["metadata"]["name"].as_str().expect("name").to_owned()).collect()
}

fn tenant_role_names() -> BTreeSet<String> {
    [format!("{FULLNAME}-view"), format!("{FULLNAME}-edit")].into()
}

/// With `clientSecretRotation.enabled`: the same, `update` on Secrets and `patch` on
/// AdobeCredentials (the rotation's finalizer).
fn operator_rules_with_rotation() -> BTreeMap<RuleKey, BTreeSet<String>> {
    let mut expected = operator_rules(false);
    let secrets = ("".to_owned(), "secrets".to_owned(), "".to_owned());
    expected.entry(secrets).or_default().insert("update".to_owned());
    let credentials = ("credentials.adobe-operator.io".to_owned(), "adobecredentials".to_owned(), "".to_owned());
    expected.entry(credentials).or_default().insert("patch".to_owned());
    expected
}

fn subjects_are_the_service_account(binding: &Value, release_namespace: &str) {
    assert_eq!(
        binding["subjects"],
        json!([{ "kind": "ServiceAccount", "name": FULLNAME, "namespace": release_namespace }]),
        "binding {}",
        binding["metadata"]["name"]
    );
}

fn container(objects: &[Value]) -> &Value {
    &one(objects, "Deployment")["spec"]["template"]["spec"]["containers"][0]
}

/// The container's plain `env` values by name (`None` for valueFrom entries).
fn env_values(objects: &[Value]) -> BTreeMap<String, Option<String>> {
    container(objects)["env"]
        .as_array()
        .expect("env")
        .iter()
        .map(|e| (e["name"].as_str().expect("name").to_owned(), e["value"].as_str().map(str::to_owned)))
        .collect()
}

const NAMESPACED: &str = "watchNamespaces: [team-a, team-b]\n";

#[tokio::test]
async fn helm_lint_passes_with_every_option_on_and_off() {
    let ha = "replicaCount: 2\npodDisruptionBudget: {enabled: true}\nrolloutRestart: {enabled: true}\n\
              extraCA: {configMap: proxy-ca}\nserviceMonitor: {enabled: true}\n";
    let observability = "prometheusRule: {enabled: true, runbookUrl: 'https://example.com/runbook', \
                         labels: {release: prometheus}, alertLabels: {team: platform}}\n\
                         grafanaDashboard: {enabled: true, labels: {a: b}, annotations: {grafana_folder: Platform}}\n";
    let everything = format!("{NAMESPACED}{ha}{observability}");
    let everything_cluster_wide =
        format!("{ha}{observability}clusterCredentials: {{enabled: true, namespace: platform}}\n");
    let alerts = ["tokenExpiringSoon", "notReady", "mintFailureRate", "mintGuardTripped", "operatorAbsent"]
        .into_iter()
        .chain(["operatorNotReady", "noLeader"])
        .map(|a| format!("{a}: {{enabled: false}}"))
        .collect::<Vec<_>>()
        .join(", ");
    let nothing = format!(
        "rbac: {{create: false, aggregateClusterRoles: false}}\nserviceAccount: {{create: false, name: given}}\n\
         metrics: {{service: {{enabled: false}}}}\nleaderElection: {{enabled: false}}\n\
         livenessProbe: {{enabled: false}}\nreadinessProbe: {{enabled: false}}\n\
         prometheusRule: {{enabled: true, alerts: {{{alerts}}}}}\ngrafanaDashboard: {{enabled: false}}\n"
    );
    let values_sets = ["", NAMESPACED, everything.as_str(), everything_cluster_wide.as_str(), nothing.as_str()];
    for values in values_sets {
        let output = lint(values).await;
        let stdout = text(&output.stdout);
        assert!(output.status.success(), "helm lint failed for {values:?}:\n{stdout}\n{}", text(&output.stderr));
        assert!(stdout.contains("1 chart(s) linted, 0 chart(s) failed"), "{stdout}");
        assert!(!stdout.contains("[WARNING]") && !stdout.contains("[ERROR]"), "{stdout}");
    }
}

#[tokio::test]
async fn values_schema_and_guards_reject_bad_values() {
    // The same invocation succeeds with good values, so each failure below is the bad value's.
    let good = try_render("aco-system", "", &[]).await;
    assert!(good.status.success(), "{}", text(&good.stderr));
    let cases: [(&str, &str); 11] = [
        ("replicaCount: two", "/replicaCount"),
        ("replicaCount: 0", "/replicaCount"),
        ("replicas: 2", "additional properties 'replicas' not allowed"),
        ("logging: {format: xml}", "/logging/format"),
        ("watchNamespaces: [Team_A]", "/watchNamespaces/0"),
        ("tokenRequestTimeout: 30", "/tokenRequestTimeout"),
        ("image: {pullPolicy: Sometimes}", "/image/pullPolicy"),
        ("extraCA: {configMap: a, secret: b}", "set either configMap or secret, not both"),
        ("replicaCount: 2\nleaderElection: {enabled: false}", "needs leaderElection.enabled=true"),
        ("clusterCredentials: {enabled: true}\nwatchNamespaces: [team-a]", "needs watchNamespaces empty"),
        ("clusterCredentials: {enabled: true, namespace: Platform}", "/clusterCredentials/namespace"),
    ];
    for (values, message) in cases {
        let output = try_render("aco-system", values, &[]).await;
        let stderr = text(&output.stderr);
        assert!(!output.status.success(), "helm accepted {values:?}");
        assert!(stderr.contains(message), "helm rejected {values:?} without mentioning {message:?}:\n{stderr}");
    }
}

#[test]
fn chart_crds_are_the_generated_crds() {
    let names = |dir: &Path| -> BTreeSet<String> {
        std::fs::read_dir(dir)
            .expect("a crds/ directory")
            .map(|entry| entry.expect("entry").file_name().to_string_lossy().into_owned())
            .collect()
    };
    let (chart_dir, repo_dir) =
        (Path::new(CHART).join("crds"), Path::new(REPO_CRD).parent().expect("crds/").to_owned());
    let expected: BTreeSet<String> =
        ["adobecredentials.yaml", "clusteradobecredentials.yaml"].into_iter().map(String::from).collect();
    assert_eq!(names(&repo_dir), expected, "crds/ holds one file per CRD");
    assert_eq!(names(&chart_dir), expected, "the chart's crds/ holds exactly the generated CRDs");
    for file in &expected {
        let chart = std::fs::read(chart_dir.join(file)).expect("chart CRD");
        let repo = std::fs::read(repo_dir.join(file)).expect("repository CRD");
        assert!(chart == repo, "the chart's {file} differs from crds/{file}: run make crd");
    }
}

#[tokio::test]
async fn cluster_wide_rbac_is_a_cluster_role_with_only_what_the_operator_needs() {
    let objects = render_objects("aco-system", "").await;
    assert_eq!(rules(operator_cluster_role(&objects)), operator_rules(false));
    subjects_are_the_service_account(one(&objects, "ClusterRoleBinding"), "aco-system");
    // Leader election: the release's own Lease, only in the release namespace.
    let lease_role = one(&objects, "Role");
    assert_eq!(lease_role["metadata"]["namespace"], "aco-system");
    assert_eq!(
        rules(lease_role),
        rule_set(&[
            ("coordination.k8s.io", "leases", "", &["create"]),
            ("coordination.k8s.io", "leases", FULLNAME, &["get", "update"]),
        ])
    );
    assert_eq!(env_values(&objects)["ACO_LEASE_NAME"].as_deref(), Some(FULLNAME));
    subjects_are_the_service_account(one(&objects, "RoleBinding"), "aco-system");

    let objects =
        render_objects("aco-system", "rolloutRestart: {enabled: true}\nleaderElection: {enabled: false}").await;
    assert_eq!(rules(operator_cluster_role(&objects)), operator_rules(true));
    assert!(kind(&objects, "Role").is_empty() && kind(&objects, "RoleBinding").is_empty(), "no Lease access");
    let env = env_values(&objects);
    assert_eq!(env["ACO_LEADER_ELECTION"].as_deref(), Some("false"));
    assert!(!env.contains_key("ACO_LEASE_NAMESPACE") && !env.contains_key("ACO_LEASE_NAME"));

    let objects = render_objects("aco-system", "clientSecretRotation: {enabled: true}").await;
    assert_eq!(rules(operator_cluster_role(&objects)), operator_rules_with_rotation());
    assert_eq!(env_values(&objects)["ACO_CLIENT_SECRET_ROTATION"].as_deref(), Some("true"));
    let objects = render_objects("aco-system", &format!("{NAMESPACED}clientSecretRotation: {{enabled: true}}")).await;
    for role in kind(&objects, "Role").into_iter().filter(|r| r["metadata"]["name"] == FULLNAME) {
        assert_eq!(rules(role), operator_rules_with_rotation(), "the same in each watched namespace");
    }

    let objects = render_objects("aco-system", "rbac: {create: false}").await;
    for absent in ["ClusterRole", "ClusterRoleBinding", "Role", "RoleBinding"] {
        assert!(kind(&objects, absent).is_empty(), "rbac.create=false still renders a {absent}");
    }
}

#[tokio::test]
async fn namespace_scoped_rbac_is_a_role_per_watched_namespace_and_nothing_cluster_wide() {
    let objects = render_objects("aco-system", NAMESPACED).await;
    // The only cluster-wide objects are the tenant roles, which grant the operator nothing.
    assert_eq!(cluster_role_names(&objects), tenant_role_names());
    assert!(kind(&objects, "ClusterRoleBinding").is_empty());
    let roles: BTreeMap<&str, &Value> = kind(&objects, "Role")
        .into_iter()
        .map(|r| (r["metadata"]["namespace"].as_str().expect("namespace"), r))
        .filter(|(_, r)| r["metadata"]["name"] == FULLNAME)
        .collect();
    assert_eq!(roles.keys().copied().collect::<Vec<_>>(), ["team-a", "team-b"]);
    for role in roles.values() {
        assert_eq!(rules(role), operator_rules(false));
    }
    let bindings: Vec<&Value> = kind(&objects, "RoleBinding");
    assert_eq!(bindings.len(), 3, "one per watched namespace and one for the Lease");
    for binding in bindings {
        subjects_are_the_service_account(binding, "aco-system");
    }
    assert_eq!(env_values(&objects)["ACO_NAMESPACES"].as_deref(), Some("team-a,team-b"));
}

#[tokio::test]
async fn deployment_is_hardened_and_configured_through_env() {
    let objects = render_objects("aco-system", "extraCA: {secret: proxy-ca, key: bundle.pem}").await;
    let deployment = one(&objects, "Deployment");
    let pod = &deployment["spec"]["template"]["spec"];
    let container = container(&objects);
    assert_eq!(deployment["spec"]["replicas"], 1);
    assert_eq!(container["image"], "adobe-credential-operator:0.1.0", "default tag is the appVersion");
    assert_eq!(container["args"], json!(["run"]));
    assert_eq!(pod["serviceAccountName"], FULLNAME);
    assert_eq!(pod["automountServiceAccountToken"], true);
    for context in [&pod["securityContext"], &container["securityContext"]] {
        assert_eq!(context["runAsNonRoot"], true);
        assert_eq!(context["runAsUser"], 65532);
        assert_eq!(context["seccompProfile"]["type"], "RuntimeDefault");
    }
    let context = &container["securityContext"];
    assert_eq!(context["readOnlyRootFilesystem"], true);
    assert_eq!(context["allowPrivilegeEscalation"], false);
    assert_eq!(context["capabilities"]["drop"], json!(["ALL"]));
    assert_eq!(container["resources"]["requests"], json!({ "cpu": "50m", "memory": "64Mi" }));
    assert_eq!(container["resources"]["limits"]["memory"], "256Mi");
    assert_eq!(container["livenessProbe"]["httpGet"], json!({ "path": "/healthz", "port": "http" }));
    assert_eq!(container["readinessProbe"]["httpGet"], json!({ "path": "/readyz", "port": "http" }));
    assert_eq!(container["ports"], json!([{ "name": "http", "containerPort": 8080, "protocol": "TCP" }]));

    let env = env_values(&objects);
    assert!(!env.contains_key("ACO_NAMESPACES"), "empty watchNamespaces must mean all namespaces");
    let expected: [(&str, Option<&str>); 17] = [
        ("POD_NAME", None),
        ("ACO_ALLOWED_TOKEN_HOSTS", Some("*.adobelogin.com,api.adobe.io")),
        ("ACO_CLIENT_SECRET_ROTATION", Some("false")),
        ("ACO_TOKEN_REQUEST_TIMEOUT", Some("30s")),
        ("ACO_CONCURRENCY", Some("16")),
        ("ACO_LOG_FORMAT", Some("json")),
        ("ACO_LOG_LEVEL", Some("info")),
        ("ACO_EXTRA_CA_FILE", Some("/etc/adobe-credential-operator/extra-ca/ca.crt")),
        ("ACO_HTTP_ADDR", Some("0.0.0.0:8080")),
        ("ACO_LEADER_ELECTION", Some("true")),
        ("ACO_LEASE_NAMESPACE", None),
        ("ACO_TOKEN_RATE_LIMIT_QPS", Some("10")),
        ("ACO_TOKEN_RATE_LIMIT_BURST", Some("20")),
        ("ACO_LEASE_NAME", Some(FULLNAME)),
        ("ACO_LEASE_DURATION", Some("15s")),
        ("ACO_LEASE_RENEW_DEADLINE", Some("10s")),
        ("ACO_LEASE_RETRY_PERIOD", Some("2s")),
    ];
    for (name, value) in expected {
        assert_eq!(env.get(name).map(Option::as_deref), Some(value), "env {name}");
    }
    let sources: Vec<&Value> =
        container["env"].as_array().expect("env").iter().filter(|e| e.get("valueFrom").is_some()).collect();
    assert_eq!(sources[0]["valueFrom"]["fieldRef"]["fieldPath"], "metadata.name");
    assert_eq!(sources[1]["valueFrom"]["fieldRef"]["fieldPath"], "metadata.namespace");

    // The CA bundle: only its key, read-only, under the path ACO_EXTRA_CA_FILE names.
    assert_eq!(
        pod["volumes"],
        json!([{ "name": "extra-ca", "secret": { "secretName": "proxy-ca", "items": [{ "key": "bundle.pem", "path": "ca.crt" }] } }])
    );
    assert_eq!(
        container["volumeMounts"],
        json!([{ "name": "extra-ca", "mountPath": "/etc/adobe-credential-operator/extra-ca", "readOnly": true }])
    );

    let service = one(&objects, "Service");
    assert_eq!(service["spec"]["ports"][0]["name"], "http-metrics");
    assert_eq!(service["spec"]["ports"][0]["port"], 8080);
    assert_eq!(service["spec"]["selector"], deployment["spec"]["selector"]["matchLabels"]);
    assert!(kind(&objects, "ServiceMonitor").is_empty() && kind(&objects, "PodDisruptionBudget").is_empty());
}

// ---- against the API server ------------------------------------------------------------------

/// A fresh namespace on the test binary's control plane.
async fn namespace(prefix: &str) -> TestNamespace {
    test_support::control_plane().namespace(prefix).await.expect("namespace")
}

/// `kubectl get -f -` of `manifests`: every object exists on the server.
async fn assert_all_exist(manifests: &str) {
    let output = kubectl(None, &["get", "-f", "-", "-o", "name"], Some(manifests)).await;
    assert!(output.status.success(), "kubectl get failed:\n{}", text(&output.stderr));
    let names = text(&output.stdout);
    assert_eq!(names.lines().count(), documents(manifests).len(), "not every rendered object exists:\n{names}");
}

#[tokio::test]
async fn cluster_wide_install_is_accepted_by_the_api_server() {
    install_chart_crd().await;
    let release = namespace("chart-cluster").await;
    let ns = release.name();
    // Every optional object except the ServiceMonitor, whose CRD this control plane lacks.
    let values = "replicaCount: 2\npodDisruptionBudget: {enabled: true}\nrolloutRestart: {enabled: true}\n\
                  extraCA: {configMap: proxy-ca}\npodLabels: {team: platform}\npodAnnotations: {a: b}\n\
                  priorityClassName: system-cluster-critical\ntolerations: [{key: k, operator: Exists}]\n";
    let output = try_render(ns, values, &["--include-crds"]).await;
    assert!(output.status.success(), "{}", text(&output.stderr));
    let manifests = text(&output.stdout);
    let kinds: BTreeSet<String> =
        documents(&manifests).iter().map(|o| o["kind"].as_str().expect("kind").to_owned()).collect();
    let expected = [
        "ClusterRole",
        "ClusterRoleBinding",
        "CustomResourceDefinition",
        "Deployment",
        "PodDisruptionBudget",
        "Role",
        "RoleBinding",
        "Service",
        "ServiceAccount",
    ];
    assert_eq!(kinds, expected.iter().map(|k| k.to_string()).collect());

    // What `helm install` would do, checked by the server, including the rendered NOTES.
    let kubeconfig = test_support::control_plane().kubeconfig_path().to_str().expect("utf-8 path");
    let file = values_file(values);
    let path = file.path().to_str().expect("utf-8 path");
    let output = helm(&[
        "install",
        RELEASE,
        CHART,
        "--namespace",
        ns,
        "--kubeconfig",
        kubeconfig,
        "--dry-run=server",
        "-f",
        path,
    ])
    .await;
    let stdout = text(&output.stdout);
    assert!(output.status.success(), "helm install --dry-run=server failed:\n{}", text(&output.stderr));
    assert!(stdout.contains("It serves AdobeCredentials in all namespaces."), "NOTES missing:\n{stdout}");

    apply(&manifests).await;
    assert_all_exist(&manifests).await;

    // The binding works: the ServiceAccount may read Secrets anywhere, and still delete nothing.
    let sa = test_support::control_plane().service_account_kubeconfig(ns, FULLNAME).await.expect("kubeconfig");
    assert!(can_i(&sa, &["list", "secrets", "--all-namespaces"]).await);
    assert!(can_i(&sa, &["patch", "deployments.apps", "-n", "default"]).await, "rolloutRestart enabled");
    assert!(!can_i(&sa, &["delete", "secrets", "-n", "default"]).await);
    assert!(!can_i(&sa, &["list", "configmaps", "-n", ns]).await);
}

/// An install with `watchNamespaces: [watched]` into `release`, applied as admin.
async fn install_namespace_scoped(release: &str, watched: &str) {
    install_namespace_scoped_with(release, watched, "").await;
}

/// The same, with more `values`.
async fn install_namespace_scoped_with(release: &str, watched: &str, values: &str) {
    install_chart_crd().await;
    // Without the tenant ClusterRoles: cluster-scoped, they would clash with those of the
    // cluster-wide install test (same release name), which `helm install` must not find.
    let values = format!("watchNamespaces: [{watched}]\nrbac: {{aggregateClusterRoles: false}}\n{values}");
    let manifests = render(release, &values).await;
    apply(&manifests).await;
    assert_all_exist(&manifests).await;
    let accounts: Api<ServiceAccount> = Api::namespaced(test_support::control_plane().client(), release);
    accounts.get(FULLNAME).await.expect("the chart created its ServiceAccount");
}

fn status_code(error: kube::Error) -> u16 {
    match error {
        kube::Error::Api(status) => status.code,
        other => panic!("expected an API error, got {other}"),
    }
}

fn assert_forbidden<T: std::fmt::Debug>(what: &str, result: Result<T, kube::Error>) {
    match result {
        Ok(value) => panic!("{what} was allowed: {value:?}"),
        Err(error) => assert_eq!(status_code(error), 403, "{what}"),
    }
}

fn secret(name: &str, data: &[(&str, &str)]) -> Value {
    let data: BTreeMap<&str, &str> = data.iter().copied().collect();
    json!({ "apiVersion": "v1", "kind": "Secret", "metadata": { "name": name }, "stringData": data })
}

/// An Event about credential `probe`, shaped like the operator's Recorder makes them.
fn probe_event(namespace: &str) -> Event {
    Event {
        metadata: kube::api::ObjectMeta { generate_name: Some("chart-test-".into()), ..Default::default() },
        event_time: Some(MicroTime(k8s_openapi::jiff::Timestamp::now())),
        reporting_controller: Some("adobe-credential-operator".into()),
        reporting_instance: Some("chart-test".into()),
        action: Some("Probe".into()),
        reason: Some("Probe".into()),
        type_: Some("Normal".into()),
        regarding: Some(ObjectReference {
            api_version: Some(API_VERSION.into()),
            kind: Some("AdobeCredential".into()),
            name: Some("probe".into()),
            namespace: Some(namespace.into()),
            ..Default::default()
        }),
        ..Default::default()
    }
}

#[tokio::test]
async fn namespace_scoped_rbac_is_enough_and_no_more() {
    let control_plane = test_support::control_plane();
    let admin = control_plane.client();
    let (release, watched, other) =
        (namespace("chart-release").await, namespace("chart-watched").await, namespace("chart-other").await);
    let (release, watched, other) = (release.name(), watched.name(), other.name());
    install_namespace_scoped(release, watched).await;
    let sa = control_plane.service_account_kubeconfig(release, FULLNAME).await.expect("kubeconfig");

    // What the API server says the identity may do.
    let status_sub = "--subresource=status";
    let own_lease = format!("leases.coordination.k8s.io/{FULLNAME}");
    let allowed: &[&[&str]] = &[
        &["get", "secrets", "-n", watched],
        &["list", "secrets", "-n", watched],
        &["watch", "secrets", "-n", watched],
        &["create", "secrets", "-n", watched],
        &["patch", "secrets", "-n", watched],
        &["list", "adobecredentials.credentials.adobe-operator.io", "-n", watched],
        &["watch", "adobecredentials.credentials.adobe-operator.io", "-n", watched],
        &["patch", "adobecredentials.credentials.adobe-operator.io", status_sub, "-n", watched],
        &["create", "events.events.k8s.io", "-n", watched],
        &["patch", "events.events.k8s.io", "-n", watched],
        &["create", "leases.coordination.k8s.io", "-n", release],
        &["get", &own_lease, "-n", release],
        &["update", &own_lease, "-n", release],
    ];
    let denied: &[&[&str]] = &[
        &["delete", "secrets", "-n", watched],
        &["update", "secrets", "-n", watched],
        &["patch", "adobecredentials.credentials.adobe-operator.io", "-n", watched],
        &["delete", "adobecredentials.credentials.adobe-operator.io", "-n", watched],
        &["get", "secrets", "-n", other],
        &["list", "secrets", "-n", other],
        &["get", "secrets", "-n", release],
        &["list", "secrets", "--all-namespaces"],
        &["list", "adobecredentials.credentials.adobe-operator.io", "--all-namespaces"],
        &["list", "adobecredentials.credentials.adobe-operator.io", "-n", other],
        &["patch", "adobecredentials.credentials.adobe-operator.io", status_sub, "-n", other],
        &["create", "events.events.k8s.io", "-n", other],
        &["create", "leases.coordination.k8s.io", "-n", watched],
        &["list", "leases.coordination.k8s.io", "-n", release],
        &["get", "leases.coordination.k8s.io/another-operator", "-n", release],
        &["update", "leases.coordination.k8s.io/another-operator", "-n", release],
        &["patch", "deployments.apps", "-n", watched],
        &["get", "configmaps", "-n", watched],
        &["list", "namespaces"],
    ];
    for args in allowed {
        assert!(can_i(&sa, args).await, "the chart's ServiceAccount cannot {args:?}");
    }
    for args in denied {
        assert!(!can_i(&sa, args).await, "the chart's ServiceAccount can {args:?}");
    }

    // And real requests, made the way the operator makes them.
    let admin_secrets = |ns: &str| Api::<Secret>::namespaced(admin.clone(), ns);
    let pp = PostParams::default();
    for ns in [watched, other] {
        let source: Secret =
            serde_json::from_value(secret("source", &[("client_id", "id"), ("client_secret", "s")])).expect("secret");
        admin_secrets(ns).create(&pp, &source).await.expect("admin creates a source Secret");
    }
    let ssa = PatchParams::apply("chart-test").force();
    let credential = json!({
        "apiVersion": API_VERSION, "kind": "AdobeCredential", "metadata": { "name": "probe" },
        "spec": { "oauthServerToServer": { "clientSecretRef": { "name": "source" }, "scopes": ["openid"] } },
    });
    for ns in [watched, other] {
        let credentials = Api::<AdobeCredential>::namespaced(admin.clone(), ns);
        credentials.patch("probe", &ssa, &Patch::Apply(&credential)).await.expect("admin creates a credential");
    }

    let client = client_for(&sa).await;
    let secrets: Api<Secret> = Api::namespaced(client.clone(), watched);
    secrets.get("source").await.expect("get a source Secret in the watched namespace");
    assert!(!secrets.list(&ListParams::default()).await.expect("list Secrets").items.is_empty());
    let mut watch = Box::pin(secrets.watch(&WatchParams::default().timeout(5), "0").await.expect("watch Secrets"));
    let first = watch.try_next().await.expect("watch event").expect("an event for the existing Secret");
    assert!(matches!(first, WatchEvent::Added(_)), "{first:?}");
    drop(watch);
    let target = secret("probe-token", &[("access_token", "t1")]);
    secrets.patch("probe-token", &ssa, &Patch::Apply(&target)).await.expect("server-side apply creates a target");
    let target = secret("probe-token", &[("access_token", "t2")]);
    secrets.patch("probe-token", &ssa, &Patch::Apply(&target)).await.expect("server-side apply updates a target");
    assert_forbidden("deleting a Secret", secrets.delete("probe-token", &DeleteParams::default()).await);

    let credentials: Api<AdobeCredential> = Api::namespaced(client.clone(), watched);
    credentials.get("probe").await.expect("get a credential");
    let status =
        json!({ "apiVersion": API_VERSION, "kind": "AdobeCredential", "status": { "targetSecret": "probe-token" } });
    let patched = credentials.patch_status("probe", &ssa, &Patch::Apply(&status)).await.expect("patch status");
    assert_eq!(patched.status.and_then(|s| s.target_secret).as_deref(), Some("probe-token"));
    let spec = json!({ "spec": { "target": { "name": "elsewhere" } } });
    assert_forbidden(
        "patching a credential's spec",
        credentials.patch("probe", &PatchParams::default(), &Patch::Merge(&spec)).await,
    );

    let events: Api<Event> = Api::namespaced(client.clone(), watched);
    events.create(&pp, &probe_event(watched)).await.expect("create an Event");

    // Leader election: the release's own Lease in the release namespace, and no other.
    let leases: Api<Lease> = Api::namespaced(client.clone(), release);
    let lease: Lease =
        serde_json::from_value(json!({ "metadata": { "name": FULLNAME }, "spec": { "holderIdentity": "chart-test" } }))
            .expect("lease");
    leases.create(&pp, &lease).await.expect("create the Lease in the release namespace");
    let mut held = leases.get(FULLNAME).await.expect("get the Lease");
    held.spec.get_or_insert_with(Default::default).holder_identity = Some("chart-test-2".into());
    leases.replace(FULLNAME, &pp, &held).await.expect("renew the Lease");
    assert_forbidden("reading another Lease", leases.get("another-operator").await);
    assert_forbidden(
        "creating a Lease in a watched namespace",
        Api::<Lease>::namespaced(client.clone(), watched).create(&pp, &lease).await,
    );

    // Nothing outside the watched namespace.
    let other_secrets: Api<Secret> = Api::namespaced(client.clone(), other);
    assert_forbidden("reading a Secret of another namespace", other_secrets.get("source").await);
    assert_forbidden("listing Secrets of another namespace", other_secrets.list(&ListParams::default()).await);
    assert_forbidden(
        "listing Secrets cluster-wide",
        Api::<Secret>::all(client.clone()).list(&ListParams::default()).await,
    );
    assert_forbidden(
        "reading the release namespace's Secrets",
        Api::<Secret>::namespaced(client.clone(), release).list(&ListParams::default()).await,
    );
    assert_forbidden(
        "patching another namespace's credential status",
        Api::<AdobeCredential>::namespaced(client.clone(), other)
            .patch_status("probe", &ssa, &Patch::Apply(&status))
            .await,
    );
    assert_forbidden(
        "creating an Event in another namespace",
        Api::<Event>::namespaced(client.clone(), other).create(&pp, &probe_event(other)).await,
    );
    assert_forbidden(
        "reading a Deployment",
        Api::<Deployment>::namespaced(client, watched).list(&ListParams::default()).await,
    );
}

/// The operator binary, running as the chart's ServiceAccount of a namespace-scoped install with
/// the chart's default values and leader election on the chart's Lease, and a fake IMS with one
/// client (`chart-client`) whose source Secret is in the watched namespace.
struct ChartOperator {
    admin: Client,
    release: TestNamespace,
    watched: TestNamespace,
    ims: FakeTokenServer,
    operator: Operator,
    _dir: tempfile::TempDir,
}

impl ChartOperator {
    async fn start(prefix: &str) -> Self {
        Self::start_with(prefix, "", &[]).await
    }

    /// The same with more chart `values` and operator `flags`.
    async fn start_with(prefix: &str, values: &str, flags: &[&str]) -> Self {
        let control_plane = test_support::control_plane();
        let admin = control_plane.client();
        let release = namespace(&format!("{prefix}-release")).await;
        let watched = namespace(&format!("{prefix}-watched")).await;
        install_namespace_scoped_with(release.name(), watched.name(), values).await;
        let sa = control_plane.service_account_kubeconfig(release.name(), FULLNAME).await.expect("kubeconfig");

        let tls = test_support::LoopbackTls::generate().expect("TLS");
        let ims = FakeTokenServer::start_tls(&tls.cert_pem, &tls.key_pem).await.expect("fake IMS");
        ims.register_adobe_client(
            AdobeClient::new("chart-client", "p8e-chart-secret")
                .with_scopes(common::FIREFLY_SCOPES)
                .with_token_lifetime(Duration::from_secs(86_400)),
        )
        .expect("register client");
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join("ca.pem"), &tls.ca_pem).expect("ca file");
        let log = dir.path().join("operator.log");
        // Leader election as the chart configures it: the release's Lease in the release namespace.
        let election = ["--leader-election=true", "--lease-namespace", release.name(), "--lease-name", FULLNAME];
        let flags: Vec<&str> = election.iter().chain(flags).copied().collect();
        let operator = Operator::start_with(watched.name(), &sa, &dir.path().join("ca.pem"), log, &flags).await;

        let source: Secret = serde_json::from_value(secret(
            "chart-client",
            &[("client_id", "chart-client"), ("client_secret", "p8e-chart-secret")],
        ))
        .expect("secret");
        let secrets = Api::<Secret>::namespaced(admin.clone(), watched.name());
        secrets.create(&PostParams::default(), &source).await.expect("create source");
        Self { admin, release, watched, ims, operator, _dir: dir }
    }

    fn credentials(&self) -> Api<AdobeCredential> {
        Api::namespaced(self.admin.clone(), self.watched.name())
    }

    /// Applies a Firefly credential `name` on the fake IMS, with `extra` merged into its spec.
    async fn apply_credential(&self, name: &str, extra: Value) {
        let mut spec = json!({ "oauthServerToServer": {
            "clientSecretRef": { "name": "chart-client" },
            "scopes": common::FIREFLY_SCOPES,
            "imsEndpoint": self.ims.url(),
        } });
        if let (Some(spec), Value::Object(extra)) = (spec.as_object_mut(), extra) {
            spec.extend(extra);
        }
        let credential = json!({
            "apiVersion": API_VERSION, "kind": "AdobeCredential", "metadata": { "name": name }, "spec": spec,
        });
        let ssa = PatchParams::apply("chart-test");
        self.credentials().patch(name, &ssa, &Patch::Apply(&credential)).await.expect("apply credential");
    }

    /// Waits until `name` is Ready=True; polled by hand rather than with `eventually`, to show
    /// the operator's log on failure.
    async fn wait_ready(&self, name: &str) -> AdobeCredential {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let cred = self.credentials().get(name).await.expect("get credential");
            let ready = cred.status.as_ref().and_then(|s| s.conditions.iter().find(|c| c.type_ == "Ready"));
            if ready.is_some_and(|c| c.status == "True") {
                return cred;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "{name} not Ready=True within {WAIT:?} as the chart's ServiceAccount; operator log:\n{}",
                self.operator.logs()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

/// The operator mints a token as the chart's ServiceAccount: the chart grants all it needs.
#[tokio::test]
async fn operator_mints_with_the_namespace_scoped_chart_identity() {
    let chart = ChartOperator::start("chart-op").await;
    chart.apply_credential("firefly", json!({})).await;
    chart.wait_ready("firefly").await;
    let watched = chart.watched.name();
    let target = Api::<Secret>::namespaced(chart.admin.clone(), watched).get("firefly-token").await.expect("target");
    let issued = chart.ims.issued_tokens("chart-client");
    assert_eq!(issued.len(), 1, "exactly one mint");
    assert_eq!(key(&target, "access_token").as_deref(), Some(issued[0].as_str()));
    let events =
        Api::<Event>::namespaced(chart.admin.clone(), watched).list(&ListParams::default()).await.expect("events");
    assert!(events.items.iter().any(|e| e.reason.as_deref() == Some("TokenMinted")), "the mint Event was published");
    let lease =
        Api::<Lease>::namespaced(chart.admin.clone(), chart.release.name()).get(FULLNAME).await.expect("the Lease");
    assert!(lease.spec.and_then(|s| s.holder_identity).is_some(), "the operator holds the chart's Lease");
    let logs = chart.operator.logs();
    assert!(!logs.to_lowercase().contains("forbidden"), "the operator hit an RBAC denial:\n{logs}");
    chart.operator.kill().await;
}

/// Hostile-tenant case 5: `rolloutRestartTargets` under the chart's defaults, which grant no
/// workload patching. Before: the token was written but status never was, and the credential
/// failed every 5 s. Now Ready stays True with the token's status, and a RolloutRestart
/// condition names the chart value that grants restarts.
#[tokio::test]
async fn rollout_restart_forbidden_by_the_chart_defaults_is_reported() {
    let chart = ChartOperator::start("chart-rr").await;
    let targets = json!({ "rolloutRestartTargets": [{ "kind": "Deployment", "name": "firefly-app" }] });
    chart.apply_credential("firefly", targets).await;
    let cred = chart.wait_ready("firefly").await;
    let status = cred.status.expect("status");
    assert!(status.expires_at.is_some() && status.token_fingerprint.is_some(), "the token's status is written");
    let rollout = status.conditions.iter().find(|c| c.type_ == "RolloutRestart").expect("RolloutRestart condition");
    assert_eq!((rollout.status.as_str(), rollout.reason.as_str()), ("False", "RolloutRestartForbidden"));
    assert!(rollout.message.contains("rolloutRestart.enabled=true"), "{}", rollout.message);
    let watched = chart.watched.name();
    common::eventually("the RolloutRestartForbidden Event", WAIT, || async {
        let events = Api::<Event>::namespaced(chart.admin.clone(), watched).list(&ListParams::default()).await.ok()?;
        events.items.iter().any(|e| e.reason.as_deref() == Some("RolloutRestartForbidden")).then_some(())
    })
    .await;
    // No failure loop: the status settles (no consecutive failures) on one mint.
    assert_eq!(status.consecutive_failures, 0);
    assert_eq!(chart.ims.mint_count("chart-client"), 1);
    chart.operator.kill().await;
}

/// A credential that rotates its client secret at once (trigger set), on the fake's management
/// API, with its source Secret.
async fn apply_rotating_credential(chart: &ChartOperator) {
    let scopes: Vec<&str> = common::FIREFLY_SCOPES
        .iter()
        .copied()
        .chain(["AdobeID", "openid", "read_organizations", "additional_info.projectedProductContext"])
        .chain(["additional_info.roles", "adobeio_api", "read_client_secret", "manage_client_secrets"])
        .collect();
    chart
        .ims
        .register_adobe_client(
            AdobeClient::new("rot-client", "p8e-rot-original")
                .with_scopes(scopes)
                .with_token_lifetime(Duration::from_secs(86_400))
                .with_management("4242", "777"),
        )
        .expect("register client");
    let source: Secret = serde_json::from_value(secret(
        "rot-client",
        &[("client_id", "rot-client"), ("client_secret", "p8e-rot-original")],
    ))
    .expect("secret");
    let secrets = Api::<Secret>::namespaced(chart.admin.clone(), chart.watched.name());
    secrets.create(&PostParams::default(), &source).await.expect("create source");
    let credential = json!({
        "apiVersion": API_VERSION, "kind": "AdobeCredential",
        "metadata": { "name": "rotating", "annotations": { "credentials.adobe-operator.io/rotate-client-secret": "now" } },
        "spec": { "oauthServerToServer": {
            "clientSecretRef": { "name": "rot-client", "secondaryClientSecretKey": "client_secret_previous" },
            "scopes": common::FIREFLY_SCOPES,
            "imsEndpoint": chart.ims.url(),
            "clientSecretRotation": { "orgId": "4242", "credentialId": "777", "gracePeriod": "0s", "managementEndpoint": chart.ims.url() },
        } },
    });
    let ssa = PatchParams::apply("chart-test");
    chart.credentials().patch("rotating", &ssa, &Patch::Apply(&credential)).await.expect("apply credential");
}

/// Rotation as the chart's ServiceAccount with `clientSecretRotation.enabled`: the `update` it
/// grants is all the rotation needs.
#[tokio::test]
async fn client_secret_rotation_works_with_the_chart_identity_when_enabled() {
    let chart = ChartOperator::start_with(
        "chart-rot",
        "clientSecretRotation: {enabled: true}\n",
        &["--client-secret-rotation"],
    )
    .await;
    apply_rotating_credential(&chart).await;
    chart.wait_ready("rotating").await;
    let secrets = Api::<Secret>::namespaced(chart.admin.clone(), chart.watched.name());
    common::eventually("the rotation to complete as the chart's ServiceAccount", WAIT, || async {
        let listed = chart.ims.client_secrets("rot-client");
        let source = secrets.get("rot-client").await.ok()?;
        let in_use = key(&source, "client_secret")?;
        let only_new =
            listed.len() == 1 && chart.ims.client_secret_uuid("rot-client", &in_use) == Some(listed[0].uuid.clone());
        (only_new && in_use != "p8e-rot-original").then_some(())
    })
    .await;
    let source = secrets.get("rot-client").await.expect("source");
    assert_eq!(key(&source, "client_secret_previous").as_deref(), Some("p8e-rot-original"));
    let logs = chart.operator.logs();
    assert!(!logs.to_lowercase().contains("forbidden"), "the operator hit an RBAC denial:\n{logs}");
    chart.operator.kill().await;
}

/// The chart's defaults grant no `update` on Secrets: a rotation is refused before anything
/// changes at Adobe, with a reason that names the chart value.
#[tokio::test]
async fn client_secret_rotation_under_the_chart_defaults_is_refused_before_adobe_is_touched() {
    let chart = ChartOperator::start_with("chart-norot", "", &["--client-secret-rotation"]).await;
    apply_rotating_credential(&chart).await;
    chart.wait_ready("rotating").await;
    let condition = common::eventually("the rotation refusal", WAIT, || async {
        let cred = chart.credentials().get("rotating").await.ok()?;
        let c = cred.status?.conditions.into_iter().find(|c| c.type_ == "ClientSecretRotation")?;
        (c.reason == "SourceSecretNotWritable").then_some(c)
    })
    .await;
    assert!(condition.message.contains("clientSecretRotation.enabled=true"), "{}", condition.message);
    assert!(chart.ims.requests_to(fake_token_server::EndpointKind::ManagementAdd, "rot-client").is_empty());
    assert_eq!(chart.ims.client_secrets("rot-client").len(), 1);
    chart.operator.kill().await;
}

#[tokio::test]
async fn service_monitor_and_pod_disruption_budget_select_the_operator() {
    let values = "replicaCount: 2\npodDisruptionBudget: {enabled: true}\n\
                  serviceMonitor: {enabled: true, labels: {release: prometheus}}\n";
    let objects = render_objects("aco-system", values).await;
    let pod_labels = &one(&objects, "Deployment")["spec"]["selector"]["matchLabels"];
    let budget = one(&objects, "PodDisruptionBudget");
    assert_eq!(budget["spec"]["minAvailable"], 1);
    assert_eq!(&budget["spec"]["selector"]["matchLabels"], pod_labels);

    let service = one(&objects, "Service");
    let monitor = one(&objects, "ServiceMonitor");
    assert_eq!(monitor["metadata"]["labels"]["release"], "prometheus");
    assert_eq!(monitor["spec"]["namespaceSelector"]["matchNames"], json!(["aco-system"]));
    let selector = monitor["spec"]["selector"]["matchLabels"].as_object().expect("matchLabels");
    for (label, value) in selector {
        assert_eq!(&service["metadata"]["labels"][label], value, "the ServiceMonitor selects the metrics Service");
    }
    assert_eq!(monitor["spec"]["endpoints"][0]["port"], service["spec"]["ports"][0]["name"]);
    assert_eq!(monitor["spec"]["endpoints"][0]["path"], "/metrics");
    // The credentials' own `namespace` label survives the scrape (the alerts and dashboard use it).
    assert_eq!(monitor["spec"]["endpoints"][0]["honorLabels"], true);

    let output =
        try_render("aco-system", "serviceMonitor: {enabled: true}\nmetrics: {service: {enabled: false}}", &[]).await;
    assert!(!output.status.success(), "a ServiceMonitor without its Service was rendered");
}

// ---- roles for tenants -------------------------------------------------------------------------

const TENANT_GROUP: &str = "credentials.adobe-operator.io";

#[tokio::test]
async fn tenant_roles_are_labelled_for_aggregation_into_view_edit_and_admin() {
    for values in ["", NAMESPACED] {
        let objects = render_objects("aco-system", values).await;
        let role = |suffix: &str| {
            let name = format!("{FULLNAME}-{suffix}");
            *kind(&objects, "ClusterRole").iter().find(|r| r["metadata"]["name"] == name.as_str()).expect("tenant role")
        };
        let aggregate_to = |role: &Value| -> BTreeSet<String> {
            let labels = role["metadata"]["labels"].as_object().expect("labels");
            labels
                .iter()
                .filter_map(|(k, v)| k.strip_prefix("rbac.authorization.k8s.io/aggregate-to-").filter(|_| v == "true"))
                .map(str::to_owned)
                .collect()
        };
        let (view, edit) = (role("view"), role("edit"));
        assert_eq!(aggregate_to(view), ["admin", "edit", "view"].map(String::from).into());
        assert_eq!(aggregate_to(edit), ["admin", "edit"].map(String::from).into());
        assert_eq!(rules(view), rule_set(&[(TENANT_GROUP, "adobecredentials", "", &["get", "list", "watch"])]));
        assert_eq!(
            rules(edit),
            rule_set(&[(
                TENANT_GROUP,
                "adobecredentials",
                "",
                &["create", "update", "patch", "delete", "deletecollection"]
            )])
        );
    }
    let objects = render_objects("aco-system", "rbac: {aggregateClusterRoles: false}").await;
    assert_eq!(cluster_role_names(&objects), [FULLNAME.to_owned()].into(), "only the operator's ClusterRole");
}

/// What kube-controller-manager's clusterrole-aggregation controller does, which this control
/// plane does not run: the rules of `name` become the union of the rules of every ClusterRole its
/// `aggregationRule` selects.
async fn aggregate(client: &Client, name: &str) {
    let roles: Api<ClusterRole> = Api::all(client.clone());
    let mut role = roles.get(name).await.expect("built-in ClusterRole");
    let selectors =
        role.aggregation_rule.as_ref().and_then(|a| a.cluster_role_selectors.clone()).expect("an aggregationRule");
    let selects = |labels: &BTreeMap<String, String>| {
        selectors.iter().any(|selector| {
            assert!(selector.match_expressions.is_none(), "only matchLabels selectors are emulated");
            selector.match_labels.iter().flatten().all(|(k, v)| labels.get(k) == Some(v))
        })
    };
    let mut union: Vec<PolicyRule> = Vec::new();
    for other in roles.list(&ListParams::default()).await.expect("list ClusterRoles").items {
        if other.metadata.name.as_deref() == Some(name)
            || !selects(other.metadata.labels.as_ref().unwrap_or(&BTreeMap::new()))
        {
            continue;
        }
        for rule in other.rules.unwrap_or_default() {
            if !union.contains(&rule) {
                union.push(rule);
            }
        }
    }
    role.rules = Some(union);
    roles.replace(name, &PostParams::default(), &role).await.expect("write the aggregated rules");
}

/// A RoleBinding of `user` to the ClusterRole `role` in `namespace`.
async fn bind(client: &Client, namespace: &str, user: &str, role: &str) {
    let binding: RoleBinding = serde_json::from_value(json!({
        "metadata": { "name": format!("{user}-{role}") },
        "roleRef": { "apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": role },
        "subjects": [{ "apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": user }],
    }))
    .expect("binding");
    Api::<RoleBinding>::namespaced(client.clone(), namespace)
        .create(&PostParams::default(), &binding)
        .await
        .expect("create RoleBinding");
}

/// Namespace editors (and admins) manage AdobeCredentials, viewers read them, through the
/// built-in roles and the chart's tenant roles; nobody gets their status or another namespace.
/// The chart's rendered tenant roles are applied to the real API server; their aggregation into
/// `view`/`edit`/`admin` is done by [`aggregate`] (no controller-manager runs here), and the
/// tenant roles are also bound directly, which needs no aggregation.
#[tokio::test]
async fn namespace_editors_manage_and_viewers_read_adobecredentials() {
    install_chart_crd().await;
    let admin = test_support::control_plane().client();
    let (tenant, other) = (namespace("tenant").await, namespace("tenant-other").await);
    let (ns, other) = (tenant.name(), other.name());
    // Named apart from the other tests' installs: ClusterRoles are cluster-scoped.
    let fullname = "tenant-test";
    let (view_role, edit_role) = (format!("{fullname}-view"), format!("{fullname}-edit"));
    let tenant_roles: Vec<Value> = render_objects(ns, &format!("fullnameOverride: {fullname}"))
        .await
        .into_iter()
        .filter(|o| {
            o["kind"] == "ClusterRole" && [&view_role, &edit_role].iter().any(|n| o["metadata"]["name"] == n.as_str())
        })
        .collect();
    assert_eq!(tenant_roles.len(), 2);
    let manifests: Vec<String> = tenant_roles.iter().map(|r| serde_yaml::to_string(r).expect("YAML")).collect();
    apply(&manifests.join("---\n")).await;
    for built_in in ["view", "edit", "admin"] {
        aggregate(&admin, built_in).await;
    }
    bind(&admin, ns, "ed", "edit").await;
    bind(&admin, ns, "ad", "admin").await;
    bind(&admin, ns, "vi", "view").await;
    bind(&admin, ns, "direct-editor", &edit_role).await;
    bind(&admin, ns, "direct-editor", &view_role).await;
    bind(&admin, ns, "direct-viewer", &view_role).await;

    let kubeconfig = test_support::control_plane().kubeconfig_path();
    let can = |user: &str, verb: &str, namespace: &str, extra: Option<&str>| {
        let mut args = vec![verb, "adobecredentials.credentials.adobe-operator.io", "-n", namespace, "--as", user];
        args.extend(extra);
        let args: Vec<String> = args.into_iter().map(str::to_owned).collect();
        async move { can_i(kubeconfig, &args.iter().map(String::as_str).collect::<Vec<_>>()).await }
    };
    let write = ["create", "update", "patch", "delete", "deletecollection"];
    let read = ["get", "list", "watch"];
    for user in ["ed", "ad", "direct-editor"] {
        for verb in read.iter().chain(&write) {
            assert!(can(user, verb, ns, None).await, "{user} cannot {verb} AdobeCredentials in its namespace");
            assert!(!can(user, verb, other, None).await, "{user} can {verb} AdobeCredentials in another namespace");
        }
        let status = Some("--subresource=status");
        assert!(!can(user, "patch", ns, status).await, "{user} can patch the operator's status");
        assert!(!can(user, "update", ns, status).await, "{user} can update the operator's status");
    }
    for user in ["vi", "direct-viewer"] {
        for verb in read {
            assert!(can(user, verb, ns, None).await, "{user} cannot {verb} AdobeCredentials in its namespace");
            assert!(!can(user, verb, other, None).await, "{user} can {verb} AdobeCredentials in another namespace");
        }
        for verb in write {
            assert!(!can(user, verb, ns, None).await, "viewer {user} can {verb} AdobeCredentials");
        }
    }
    // The tenant roles grant nothing else: a viewer of the chart's role alone reads no Secret.
    assert!(!can_i(kubeconfig, &["get", "secrets", "-n", ns, "--as", "direct-viewer"]).await);
    assert!(!can_i(kubeconfig, &["get", "secrets", "-n", ns, "--as", "direct-editor"]).await);

    // And real requests, as kubectl makes them for these users.
    let credential = format!(
        "apiVersion: {API_VERSION}\nkind: AdobeCredential\nmetadata: {{name: firefly, namespace: {ns}}}\n\
         spec: {{oauthServerToServer: {{clientSecretRef: {{name: firefly-client}}, scopes: [openid]}}}}\n"
    );
    let output = kubectl(None, &["apply", "-f", "-", "--as", "vi"], Some(&credential)).await;
    assert!(!output.status.success() && text(&output.stderr).contains("forbidden"), "a viewer created a credential");
    let output = kubectl(None, &["apply", "-f", "-", "--as", "ed"], Some(&credential)).await;
    assert!(output.status.success(), "an editor could not create a credential:\n{}", text(&output.stderr));
    let output = kubectl(None, &["get", "adobecredentials", "-n", ns, "-o", "name", "--as", "vi"], None).await;
    assert!(output.status.success(), "a viewer could not list credentials:\n{}", text(&output.stderr));
    assert_eq!(text(&output.stdout).trim(), "adobecredential.credentials.adobe-operator.io/firefly");
    let output = kubectl(None, &["delete", "adobecredential", "firefly", "-n", ns, "--as", "vi"], None).await;
    assert!(!output.status.success() && text(&output.stderr).contains("forbidden"), "a viewer deleted a credential");
    let output = kubectl(None, &["delete", "adobecredential", "firefly", "-n", ns, "--as", "ad"], None).await;
    assert!(output.status.success(), "an admin could not delete a credential:\n{}", text(&output.stderr));
}
