//! What the chart ships for watching the operator, checked with the real tools: the alert rules of
//! the PrometheusRule that `helm template` renders, with Prometheus' own `promtool` (`check rules`,
//! and `test rules` with input series for every alert, firing and not firing); the Grafana
//! dashboard's queries with promtool's PromQL parser; and every metric name the rules and the
//! dashboard use, against the `/metrics` of a running operator that has been through the events
//! those metrics count.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::Output;
use std::time::Duration;

use adobe_credential_operator::crd::{RolloutRestartTarget, WorkloadKind};
use adobe_credential_operator::mint_guard::BUDGET_MINTS;
use common::tools::{kind, one, render_objects, run, text, tool, try_render};
use common::{TestEnv, WAIT, eventually};
use k8s_openapi::api::apps::v1::Deployment;
use kube::Api;
use kube::api::{Patch, PatchParams, PostParams};
use serde_json::{Value, json};

/// The promtool unit tests of the alert rules, with the words JOB and CREDNS to replace.
const ALERT_TESTS: &str = include_str!("promtool/alert-rules.test.yaml");
const RUNBOOK: &str = "https://example.com/runbook";
const RELEASE_NAMESPACE: &str = "aco-system";
const DASHBOARD_KEY: &str = "adobe-credential-operator.json";
/// Series Prometheus makes itself rather than scraping them from the operator.
const SYNTHETIC: [&str; 1] = ["up"];

async fn promtool(dir: &Path, args: &[&str]) -> Output {
    let mut command = tokio::process::Command::new(tool("promtool"));
    command.current_dir(dir).args(args);
    run(command, None).await
}

fn assert_success(what: &str, output: &Output) {
    assert!(output.status.success(), "{what} failed:\n{}\n{}", text(&output.stdout), text(&output.stderr));
}

/// The rendered objects with alerting on, plus `prometheus_rule` (YAML lines under
/// `prometheusRule:`) and `other` (top-level YAML).
async fn render_with_rules(prometheus_rule: &str, other: &str) -> Vec<Value> {
    let values = format!("prometheusRule:\n  enabled: true\n  runbookUrl: {RUNBOOK}\n{prometheus_rule}{other}");
    render_objects(RELEASE_NAMESPACE, &values).await
}

/// The `rules` of every group of a PrometheusRule.
fn alert_rules(prometheus_rule: &Value) -> Vec<&Value> {
    let groups = prometheus_rule["spec"]["groups"].as_array().expect("groups");
    groups.iter().flat_map(|g| g["rules"].as_array().expect("rules")).collect()
}

fn alert_names(prometheus_rule: &Value) -> BTreeSet<String> {
    alert_rules(prometheus_rule).iter().map(|r| r["alert"].as_str().expect("alert name").to_owned()).collect()
}

#[tokio::test]
async fn alert_rules_pass_promtool_check_and_unit_tests() {
    // The defaults, and the rules for a scrape that renames the credential's namespace label
    // (no honor_labels) under another job.
    let variants = [
        ("", "adobe-credential-operator", None),
        (
            "  selector: 'job=\"custom-job\"'\n  credentialNamespaceLabel: exported_namespace\n",
            "custom-job",
            Some("exported_namespace"),
        ),
    ];
    for (values, job, renamed) in variants {
        let objects = render_with_rules(values, "").await;
        let rule = one(&objects, "PrometheusRule");
        let dir = tempfile::tempdir().expect("tempdir");
        // The rules file is the rendered object's spec, exactly as the Prometheus Operator
        // hands it to Prometheus.
        std::fs::write(dir.path().join("rules.yaml"), serde_yaml::to_string(&rule["spec"]).expect("YAML"))
            .expect("rules file");
        let check = promtool(dir.path(), &["check", "rules", "rules.yaml"]).await;
        assert_success("promtool check rules", &check);
        let expected = format!("SUCCESS: {} rules found", alert_rules(rule).len());
        assert!(text(&check.stdout).contains(&expected), "{}", text(&check.stdout));

        let mut tests = ALERT_TESTS.replace("JOB", job);
        tests = match renamed {
            None => tests.replace("CREDNS", "namespace"),
            // Prometheus keeps the target's namespace and renames the operator's.
            Some(label) => tests
                .replace("CREDNS=\"", &format!("namespace=\"{RELEASE_NAMESPACE}\",{label}=\""))
                .replace("CREDNS: ", &format!("namespace: {RELEASE_NAMESPACE}, {label}: ")),
        };
        std::fs::write(dir.path().join("tests.yaml"), tests).expect("tests file");
        let output = promtool(dir.path(), &["test", "rules", "tests.yaml"]).await;
        assert_success(&format!("promtool test rules (job {job}, namespace label {renamed:?})"), &output);
        assert!(text(&output.stdout).contains("SUCCESS"), "{}", text(&output.stdout));
    }
}

#[tokio::test]
async fn every_alert_has_promtool_cases_firing_and_not_firing() {
    let objects = render_with_rules("", "").await;
    let alerts = alert_names(one(&objects, "PrometheusRule"));
    assert_eq!(alerts.len(), 7, "{alerts:?}");
    let tests: Value = serde_yaml::from_str(ALERT_TESTS).expect("promtool tests parse");
    let mut cases: BTreeMap<String, (bool, bool)> = BTreeMap::new();
    for group in tests["tests"].as_array().expect("tests") {
        for case in group["alert_rule_test"].as_array().expect("alert_rule_test") {
            let entry = cases.entry(case["alertname"].as_str().expect("alertname").to_owned()).or_default();
            let fires = case["exp_alerts"].as_array().is_some_and(|a| !a.is_empty());
            if fires { entry.0 = true } else { entry.1 = true }
        }
    }
    for alert in &alerts {
        assert_eq!(cases.get(alert), Some(&(true, true)), "{alert}: a case where it fires and one where it does not");
    }
    assert_eq!(cases.keys().cloned().collect::<BTreeSet<_>>(), alerts, "cases for alerts the chart does not have");
}

#[tokio::test]
async fn alert_rules_are_off_by_default_and_configurable() {
    let defaults = render_objects(RELEASE_NAMESPACE, "").await;
    assert!(kind(&defaults, "PrometheusRule").is_empty(), "alerting is off by default");

    let objects = render_with_rules("", "").await;
    let rule = one(&objects, "PrometheusRule");
    assert_eq!(rule["metadata"]["namespace"], RELEASE_NAMESPACE);
    for alert in alert_rules(rule) {
        let name = alert["alert"].as_str().expect("name");
        let annotations = &alert["annotations"];
        assert!(!alert["labels"]["severity"].as_str().unwrap_or_default().is_empty(), "{name}: severity");
        assert!(annotations["summary"].as_str().is_some_and(|s| !s.is_empty()), "{name}: summary");
        let description = annotations["description"].as_str().expect("description");
        assert_eq!(annotations["runbook_url"], format!("{RUNBOOK}#{}", name.to_lowercase()).as_str());
        // Alerts on series of one credential name it and its namespace.
        let expr = alert["expr"].as_str().expect("expr");
        let per_credential = ["adobe_credential_ready", "adobe_credential_token_expiry_seconds", "guard_trips"]
            .iter()
            .any(|m| expr.contains(m));
        if per_credential {
            let named = "{{ $labels.namespace }}/{{ $labels.name }}";
            assert!(description.contains(named), "{name}: the description names the credential: {description}");
        }
    }

    let values = "  namespace: monitoring\n  labels: {release: prometheus}\n  alertLabels: {team: platform}\n  \
                  alerts:\n    tokenExpiringSoon: {thresholdSeconds: 7200, for: 1m, severity: page}\n    \
                  notReady: {for: 30m}\n    mintFailureRate: {ratio: 0.5, window: 1h, minFailures: 10}\n    \
                  noLeader: {enabled: false}\n";
    let objects = render_with_rules(values, "").await;
    let rule = one(&objects, "PrometheusRule");
    assert_eq!(rule["metadata"]["namespace"], "monitoring");
    assert_eq!(rule["metadata"]["labels"]["release"], "prometheus");
    let by_name: BTreeMap<&str, &Value> =
        alert_rules(rule).into_iter().map(|r| (r["alert"].as_str().expect("name"), r)).collect();
    assert!(!by_name.contains_key("AdobeCredentialOperatorNoLeader"), "a disabled alert is not rendered");
    assert!(by_name.values().all(|r| r["labels"]["team"] == "platform"));
    let expiring = by_name["AdobeCredentialTokenExpiringSoon"];
    assert!(expiring["expr"].as_str().expect("expr").contains("< 7200"), "{}", expiring["expr"]);
    assert_eq!((&expiring["for"], &expiring["labels"]["severity"]), (&json!("1m"), &json!("page")));
    assert_eq!(by_name["AdobeCredentialNotReady"]["for"], "30m");
    let failures = by_name["AdobeCredentialMintFailureRate"]["expr"].as_str().expect("expr");
    assert!(failures.contains("[1h]") && failures.contains("> 0.5") && failures.contains(">= 10"), "{failures}");

    let all_off = ["tokenExpiringSoon", "notReady", "mintFailureRate", "mintGuardTripped", "operatorAbsent"]
        .into_iter()
        .chain(["operatorNotReady", "noLeader"])
        .map(|a| format!("    {a}: {{enabled: false}}\n"))
        .collect::<String>();
    let objects = render_with_rules(&format!("  alerts:\n{all_off}"), "").await;
    assert!(kind(&objects, "PrometheusRule").is_empty(), "no PrometheusRule without alerts");

    let bad = [
        ("prometheusRule: {alerts: {notReady: {for: soon}}}", "/prometheusRule/alerts/notReady/for"),
        ("prometheusRule: {alerts: {mintFailureRate: {ratio: 2}}}", "/prometheusRule/alerts/mintFailureRate/ratio"),
        ("prometheusRule: {alerts: {tokenExpiring: {}}}", "additional properties 'tokenExpiring' not allowed"),
        ("prometheusRule: {selector: '{job=\"x\"}'}", "/prometheusRule/selector"),
        ("grafanaDashboard: {enable: true}", "additional properties 'enable' not allowed"),
    ];
    for (values, message) in bad {
        let output = try_render(RELEASE_NAMESPACE, values, &[]).await;
        let stderr = text(&output.stderr);
        assert!(!output.status.success(), "helm accepted {values:?}");
        assert!(stderr.contains(message), "helm rejected {values:?} without mentioning {message:?}:\n{stderr}");
    }
}

// ---- the dashboard ------------------------------------------------------------------------------

/// The dashboard JSON of the rendered ConfigMap.
fn dashboard(objects: &[Value]) -> Value {
    let config_map = one(objects, "ConfigMap");
    serde_json::from_str(config_map["data"][DASHBOARD_KEY].as_str().expect("dashboard key")).expect("dashboard JSON")
}

/// Every panel, rows' collapsed panels included.
fn panels(dashboard: &Value) -> Vec<&Value> {
    let mut all = Vec::new();
    for panel in dashboard["panels"].as_array().expect("panels") {
        all.push(panel);
        all.extend(panel["panels"].as_array().into_iter().flatten());
    }
    all
}

/// The PromQL of every panel query.
fn dashboard_queries(dashboard: &Value) -> Vec<String> {
    panels(dashboard)
        .iter()
        .flat_map(|p| p["targets"].as_array().into_iter().flatten())
        .map(|t| t["expr"].as_str().expect("expr").to_owned())
        .collect()
}

/// The metric of each `label_values(metric{…}, label)` template variable.
fn variable_metrics(dashboard: &Value) -> BTreeSet<String> {
    let variables = dashboard["templating"]["list"].as_array().expect("templating");
    variables
        .iter()
        .filter_map(|v| v["query"]["query"].as_str())
        .map(|q| {
            let inner = q.strip_prefix("label_values(").expect("a label_values query");
            let end = inner.find(['{', ',']).expect("label_values(metric, label)");
            inner[..end].trim().to_owned()
        })
        .collect()
}

/// A dashboard query with Grafana's variables replaced by values, as Grafana sends it.
fn as_grafana_sends(query: &str) -> String {
    query.replace("$__rate_interval", "4m").replace("$__range", "6h").replace("$job", ".+").replace("$namespace", ".*")
}

#[tokio::test]
async fn dashboard_is_a_sidecar_config_map_whose_queries_parse() {
    let defaults = render_objects(RELEASE_NAMESPACE, "").await;
    assert!(kind(&defaults, "ConfigMap").is_empty(), "the dashboard is off by default");

    let objects = render_objects(RELEASE_NAMESPACE, "grafanaDashboard: {enabled: true}").await;
    let config_map = one(&objects, "ConfigMap");
    assert_eq!(config_map["metadata"]["labels"]["grafana_dashboard"], "1", "the sidecar's default label");
    assert_eq!(config_map["metadata"]["namespace"], RELEASE_NAMESPACE);
    let dashboard = dashboard(&objects);
    assert_eq!(dashboard["uid"], "adobe-credential-operator");
    let titles: BTreeSet<&str> = panels(&dashboard).iter().filter_map(|p| p["title"].as_str()).collect();
    for wanted in [
        "Credentials by Ready reason",
        "Time to expiry (soonest first)",
        "Token requests by flow and outcome",
        "Failed token requests by flow and outcome",
        "Token request latency",
        "Rate-limit queue",
        "Consumer restarts",
    ] {
        assert!(titles.contains(wanted), "no panel {wanted:?} in {titles:?}");
    }
    let expiry =
        panels(&dashboard).into_iter().find(|p| p["title"] == "Time to expiry (soonest first)").expect("panel");
    assert!(expiry["targets"][0]["expr"].as_str().expect("expr").starts_with("sort("), "ascending: soonest first");
    for panel in panels(&dashboard).iter().filter(|p| p["type"] != "row") {
        assert_eq!(panel["datasource"]["uid"], "${datasource}", "panel {}: the data source variable", panel["title"]);
    }

    // Every query parses as PromQL: promtool checks them as recording rules.
    let queries = dashboard_queries(&dashboard);
    let rules: Vec<Value> = queries
        .iter()
        .enumerate()
        .map(|(i, q)| json!({ "record": format!("dashboard:query_{i}"), "expr": as_grafana_sends(q) }))
        .collect();
    let file = json!({ "groups": [{ "name": "dashboard", "rules": rules }] });
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("queries.yaml"), serde_yaml::to_string(&file).expect("YAML")).expect("write");
    let check = promtool(dir.path(), &["check", "rules", "queries.yaml"]).await;
    assert_success("promtool check rules (the dashboard's queries)", &check);

    let values = "grafanaDashboard:\n  enabled: true\n  namespace: grafana\n  sidecarLabel: dashboards\n  \
                  sidecarLabelValue: operators\n  annotations: {grafana_folder: Platform}\n";
    let objects = render_objects(RELEASE_NAMESPACE, values).await;
    let config_map = one(&objects, "ConfigMap");
    assert_eq!(config_map["metadata"]["namespace"], "grafana");
    assert_eq!(config_map["metadata"]["labels"]["dashboards"], "operators");
    assert_eq!(config_map["metadata"]["annotations"]["grafana_folder"], "Platform");
}

// ---- the metrics they use -------------------------------------------------------------------------

#[derive(Debug, PartialEq)]
enum Token {
    Ident(String),
    Punct(char),
    Other,
}

/// The metric names a PromQL expression selects: identifiers that are not functions,
/// aggregations, keywords, label names (in matchers, grouping and vector matching clauses) or
/// parts of strings, numbers and durations.
fn metric_names(expr: &str) -> BTreeSet<String> {
    let mut tokens = Vec::new();
    let mut chars = expr.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            // Label matchers and ranges hold label names, strings and durations only.
            '{' | '[' => {
                let close = if c == '{' { '}' } else { ']' };
                while let Some(inner) = chars.next() {
                    match inner {
                        '"' | '\'' | '`' => skip_string(&mut chars, inner),
                        _ if inner == close => break,
                        _ => {}
                    }
                }
            }
            '"' | '\'' | '`' => skip_string(&mut chars, c),
            c if c.is_ascii_alphabetic() || c == '_' || c == ':' => {
                let mut ident = c.to_string();
                while let Some(&next) = chars.peek().filter(|n| n.is_ascii_alphanumeric() || **n == '_' || **n == ':') {
                    ident.push(next);
                    chars.next();
                }
                tokens.push(Token::Ident(ident));
            }
            c if c.is_ascii_digit() || c == '.' => {
                while chars.peek().is_some_and(|n| n.is_ascii_alphanumeric() || *n == '.') {
                    chars.next();
                }
                tokens.push(Token::Other);
            }
            c if c.is_whitespace() => {}
            c => tokens.push(Token::Punct(c)),
        }
    }
    const LABEL_LISTS: [&str; 6] = ["by", "without", "on", "ignoring", "group_left", "group_right"];
    const AGGREGATIONS: [&str; 14] = [
        "sum",
        "min",
        "max",
        "avg",
        "group",
        "stddev",
        "stdvar",
        "count",
        "count_values",
        "bottomk",
        "topk",
        "quantile",
        "limitk",
        "limit_ratio",
    ];
    const KEYWORDS: [&str; 7] = ["and", "or", "unless", "bool", "offset", "inf", "nan"];
    let mut names = BTreeSet::new();
    let mut i = 0;
    while i < tokens.len() {
        let next_is_paren = tokens.get(i + 1) == Some(&Token::Punct('('));
        if let Token::Ident(ident) = &tokens[i] {
            if LABEL_LISTS.contains(&ident.as_str()) && next_is_paren {
                // Skip the label list.
                while i < tokens.len() && tokens[i] != Token::Punct(')') {
                    i += 1;
                }
            } else if !next_is_paren
                && !LABEL_LISTS.contains(&ident.as_str())
                && !KEYWORDS.contains(&ident.as_str())
                && !AGGREGATIONS.contains(&ident.as_str())
            {
                names.insert(ident.clone());
            }
        }
        i += 1;
    }
    names
}

/// Skips a string literal whose opening `quote` was read.
fn skip_string(chars: &mut std::iter::Peekable<std::str::Chars<'_>>, quote: char) {
    let mut escaped = false;
    for inner in chars.by_ref() {
        if inner == quote && !escaped {
            break;
        }
        escaped = inner == '\\' && !escaped;
    }
}

#[test]
fn metric_names_are_read_out_of_promql() {
    let expr = r#"histogram_quantile(0.99, sum by (flow, le) (rate(a_bucket{job=~"$job",x="{y}"}[$__rate_interval])))
        + ignoring (reason) group_left (reason) (0 * b{reason!="TokenMinted"}) > 0.1
        and on(namespace) c offset 15m or absent(up{job="j"}) unless count(d) by (e) or vector(0)
        or sum without (x) (f) or max by (y) (g)"#;
    let names: Vec<String> = metric_names(expr).into_iter().collect();
    assert_eq!(names, ["a_bucket", "b", "c", "d", "f", "g", "up"]);
}

/// Sample names (the first word of each sample line) of an exposition.
fn sample_names(exposition: &str) -> BTreeSet<String> {
    exposition
        .lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .map(|l| l.split(['{', ' ']).next().expect("a name").to_owned())
        .collect()
}

fn deployment(name: &str) -> Deployment {
    serde_json::from_value(json!({
        "metadata": { "name": name },
        "spec": {
            "selector": { "matchLabels": { "app": name } },
            "template": {
                "metadata": { "labels": { "app": name } },
                "spec": { "containers": [{ "name": "app", "image": "example.invalid/app:1" }] }
            }
        }
    }))
    .expect("deployment")
}

/// The dashboard's and the alerts' metric names all exist in the operator's `/metrics`, with
/// samples, once the operator has minted, failed, restarted a consumer and tripped its mint guard.
#[tokio::test]
async fn every_metric_the_dashboard_and_the_alerts_use_is_exported() {
    let objects = render_with_rules("", "grafanaDashboard: {enabled: true}\n").await;
    let mut used: BTreeMap<String, BTreeSet<&str>> = BTreeMap::new();
    for alert in alert_rules(one(&objects, "PrometheusRule")) {
        for name in metric_names(alert["expr"].as_str().expect("expr")) {
            used.entry(name).or_default().insert("alerts");
        }
    }
    let dashboard = dashboard(&objects);
    for name in dashboard_queries(&dashboard).iter().flat_map(|q| metric_names(q)).chain(variable_metrics(&dashboard)) {
        used.entry(name).or_default().insert("dashboard");
    }
    for name in SYNTHETIC {
        assert!(used.remove(name).is_some(), "{name} is no longer used: drop it from SYNTHETIC");
    }
    assert!(used.len() >= 12, "{used:?}");

    let mut env = TestEnv::new("observability").await;
    env.register_client("obs-client", "p8e-obs-secret", Duration::from_secs(86_400));
    env.put_source("obs-source", "obs-client", "p8e-obs-secret").await;
    let deployments: Api<Deployment> = Api::namespaced(env.client.clone(), env.ns());
    deployments.create(&PostParams::default(), &deployment("obs-app")).await.expect("deployment");
    let mut cred = env.s2s_credential("firefly", "obs-source");
    cred.spec.rollout_restart_targets =
        vec![RolloutRestartTarget { kind: WorkloadKind::Deployment, name: "obs-app".into() }];
    env.create(&cred).await;
    // A credential that cannot be served: Ready=False and a failed reconcile.
    env.create(&env.s2s_credential("orphan", "no-such-secret")).await;
    env.wait_ready("firefly", "True", "TokenMinted").await;
    env.wait_ready("orphan", "False", "SourceSecretNotFound").await;

    // Trip the mint guard: each change of the organization ID is a reason to mint, until the
    // credential has had its budget of mints for the hour.
    let operator = env.operator.as_ref().expect("operator");
    let tripped = |text: &str| text.lines().any(|l| l.starts_with("adobe_credential_mint_guard_trips_total{"));
    for change in 1..=BUDGET_MINTS {
        let before = env.ims.mint_count("obs-client");
        let patch = json!({ "spec": { "oauthServerToServer": { "orgId": format!("{change:04}ABCD@AdobeOrg") } } });
        env.credentials().patch("firefly", &PatchParams::default(), &Patch::Merge(&patch)).await.expect("patch");
        let guard_tripped = eventually("the change to be minted or refused", WAIT, || async {
            let minted = env.ims.mint_count("obs-client") > before;
            let refused = tripped(&operator.metrics().await);
            (minted || refused).then_some(refused)
        })
        .await;
        if guard_tripped {
            break;
        }
    }

    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let exported = sample_names(&operator.metrics().await);
        let missing: Vec<&String> = used.keys().filter(|name| !exported.contains(*name)).collect();
        if missing.is_empty() {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "used but not exported after {WAIT:?}: {missing:?} (used by: {used:?}); exported: {exported:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    env.assert_no_mint_loop(&[("obs-client", BUDGET_MINTS - 1)]);
}
