//! The alert rules (`deploy/prometheus/alerts.yml`) and the Grafana dashboard
//! (`deploy/grafana/shoal.json`) query only series a live agent exports: a
//! renamed metric breaks this test instead of silently emptying a panel or
//! muting an alert.

use serde_json::Value;
use shoal_tests::agents::{wait_for, Party};
use shoal_tests::repo_root;
use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

/// Series suffixes a histogram's base name takes in a query.
const HISTOGRAM_SUFFIXES: [&str; 3] = ["_bucket", "_sum", "_count"];

/// Every `shoal_*` identifier in a PromQL expression.
fn metric_names_in(expr: &str, out: &mut BTreeSet<String>) {
    let bytes = expr.as_bytes();
    let mut from = 0;
    while let Some(found) = expr[from..].find("shoal_") {
        let start = from + found;
        from = start + "shoal_".len();
        let glued =
            start > 0 && (bytes[start - 1].is_ascii_alphanumeric() || bytes[start - 1] == b'_');
        if glued {
            continue;
        }
        let end = expr[start..]
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == ':'))
            .map_or(expr.len(), |n| start + n);
        out.insert(expr[start..end].to_string());
    }
}

/// The `expr:` values of a rules file, block scalars (`expr: |`) included.
fn rule_expressions(yaml: &str) -> Vec<String> {
    let mut exprs = Vec::new();
    let mut lines = yaml.lines().peekable();
    while let Some(line) = lines.next() {
        let Some(value) = line.trim_start().strip_prefix("expr:") else {
            continue;
        };
        let value = value.trim();
        if value.starts_with('|') || value.starts_with('>') {
            let indent = line.len() - line.trim_start().len();
            let mut block = String::new();
            while let Some(next) = lines.peek() {
                let deeper = next.len() - next.trim_start().len() > indent;
                if !(deeper || next.trim().is_empty()) {
                    break;
                }
                block.push_str(next.trim());
                block.push(' ');
                lines.next();
            }
            exprs.push(block);
        } else {
            exprs.push(value.to_string());
        }
    }
    exprs
}

/// Every query string of a dashboard: panel targets and template variables.
fn dashboard_queries(value: &Value, out: &mut Vec<String>) {
    match value {
        Value::Object(map) => {
            for (key, v) in map {
                match (key.as_str(), v) {
                    ("expr" | "query" | "definition", Value::String(s)) => out.push(s.clone()),
                    _ => dashboard_queries(v, out),
                }
            }
        }
        Value::Array(items) => items.iter().for_each(|v| dashboard_queries(v, out)),
        _ => {}
    }
}

/// What a live `/metrics` holds: sample names and each family's `# TYPE`.
struct Exported {
    samples: BTreeSet<String>,
    types: BTreeMap<String, String>,
}

impl Exported {
    fn parse(text: &str) -> Exported {
        let samples = text
            .lines()
            .filter(|line| !line.starts_with('#') && !line.is_empty())
            .filter_map(|line| line.split(['{', ' ']).next())
            .map(str::to_string)
            .collect();
        let types = text
            .lines()
            .filter_map(|line| line.strip_prefix("# TYPE "))
            .filter_map(|rest| {
                let mut words = rest.split_whitespace();
                Some((words.next()?.to_string(), words.next()?.to_string()))
            })
            .collect();
        Exported { samples, types }
    }

    /// Whether a query naming `name` selects a series the agent exports: a
    /// sample name as is, a gauge family with no sample yet, a counter as
    /// `_total`, a histogram as `_bucket`/`_sum`/`_count` (a bare counter
    /// or histogram name selects nothing in PromQL).
    fn has(&self, name: &str) -> bool {
        if self.samples.contains(name) {
            return true;
        }
        let type_of = |base: &str| self.types.get(base).map(String::as_str);
        if matches!(type_of(name), Some("gauge" | "unknown" | "untyped")) {
            return true;
        }
        if let Some(base) = name.strip_suffix("_total") {
            if type_of(base) == Some("counter") {
                return true;
            }
        }
        HISTOGRAM_SUFFIXES.iter().any(|suffix| {
            name.strip_suffix(suffix)
                .is_some_and(|base| type_of(base) == Some("histogram"))
        })
    }
}

fn live_metrics() -> Exported {
    let party = Party::new();
    let agent = party.spec("n1").start(&[]);
    let text = wait_for(Duration::from_secs(20), Duration::from_millis(100), || {
        agent.get("/metrics")
    })
    .expect("the agent serves /metrics");
    Exported::parse(&text)
}

/// `(source, metric)` for every metric the alert rules and dashboard name.
fn named_metrics() -> Vec<(String, String)> {
    let root = repo_root();
    let mut named = Vec::new();
    let alerts_path = root.join("deploy/prometheus/alerts.yml");
    let alerts = std::fs::read_to_string(&alerts_path).expect("read alerts.yml");
    let exprs = rule_expressions(&alerts);
    assert!(
        exprs.len() >= 10,
        "only {} rules in alerts.yml",
        exprs.len()
    );
    for expr in exprs {
        let mut names = BTreeSet::new();
        metric_names_in(&expr, &mut names);
        named.extend(names.into_iter().map(|n| ("alerts.yml".to_string(), n)));
    }
    let dashboard_path = root.join("deploy/grafana/shoal.json");
    let text = std::fs::read_to_string(&dashboard_path).expect("read shoal.json");
    let dashboard: Value = serde_json::from_str(&text).expect("shoal.json is valid JSON");
    let panels = dashboard["panels"]
        .as_array()
        .expect("the dashboard has panels");
    let targets = panels
        .iter()
        .filter_map(|p| p["targets"].as_array())
        .flatten()
        .count();
    assert!(targets >= 20, "only {targets} panel queries in shoal.json");
    let mut queries = Vec::new();
    dashboard_queries(&dashboard, &mut queries);
    for query in queries {
        let mut names = BTreeSet::new();
        metric_names_in(&query, &mut names);
        named.extend(names.into_iter().map(|n| ("shoal.json".to_string(), n)));
    }
    named
}

#[test]
fn alert_rules_and_dashboard_query_only_exported_metrics() {
    let named = named_metrics();
    let distinct: BTreeSet<&str> = named.iter().map(|(_, n)| n.as_str()).collect();
    assert!(
        distinct.len() >= 15,
        "only {} metrics named: is the scan broken? {distinct:?}",
        distinct.len()
    );
    let exported = live_metrics();
    assert!(
        exported.types.keys().any(|m| m.starts_with("shoal_")),
        "no shoal_ metric in /metrics at all"
    );
    let missing: BTreeSet<String> = named
        .iter()
        .filter(|(_, name)| !exported.has(name))
        .map(|(file, name)| format!("{file}: {name}"))
        .collect();
    assert!(
        missing.is_empty(),
        "queried but not exported by a live agent:\n{}",
        missing.into_iter().collect::<Vec<_>>().join("\n")
    );
}

#[test]
fn bare_counter_and_histogram_names_select_nothing() {
    let text = "# TYPE shoal_x counter\nshoal_x_total 1\n# TYPE shoal_h histogram\nshoal_h_bucket{le=\"1\"} 0\n# TYPE shoal_g gauge\n";
    let exported = Exported::parse(text);
    assert!(exported.has("shoal_x_total") && exported.has("shoal_h_bucket"));
    assert!(exported.has("shoal_h_count") && exported.has("shoal_g"));
    assert!(!exported.has("shoal_x") && !exported.has("shoal_h"));
    assert!(!exported.has("shoal_g_total") && !exported.has("shoal_nope"));
    let mut names = BTreeSet::new();
    metric_names_in(
        "rate(shoal_a_total[5m]) / xshoal_b + shoal_c{x=\"y\"}",
        &mut names,
    );
    assert_eq!(
        names.into_iter().collect::<Vec<_>>(),
        ["shoal_a_total", "shoal_c"]
    );
}

/// A Prometheus scraper types the counters only if the OpenMetrics body is
/// served under the OpenMetrics content type; API requests are counted by
/// route pattern, not by raw path.
#[test]
fn metrics_are_served_as_openmetrics_and_count_api_requests_by_route() {
    let party = Party::new();
    let agents = party.mesh(1);
    let api = agents[0].spec.api;
    assert!(shoal_tests::agents::http_get_any(api, "/v1/tasks/0123456789abcdef").is_some());
    assert!(shoal_tests::agents::http_get_any(api, "/no/such/route").is_some());
    let request = format!("GET /metrics HTTP/1.1\r\nHost: {api}\r\nConnection: close\r\n\r\n");
    let (status, head, body) =
        shoal_tests::agents::http_exchange_with_head(api, &request, Duration::from_secs(3))
            .expect("the agent answers /metrics");
    assert_eq!(status, 200, "{head}");
    assert!(
        head.to_ascii_lowercase()
            .contains("content-type: application/openmetrics-text; version=1.0.0"),
        "{head}"
    );
    assert!(
        body.trim_end().ends_with("# EOF"),
        "OpenMetrics ends with # EOF"
    );
    assert!(
        body.contains(
            r#"shoal_api_requests_total{route="/v1/tasks/{id}",method="GET",status="404"} 1"#
        ),
        "{body}"
    );
    assert!(
        body.contains(r#"shoal_api_requests_total{route="unmatched",method="GET",status="404"} 1"#),
        "{body}"
    );
    assert!(body.contains("shoal_build_info{version=\""), "{body}");
    assert!(body.contains("shoal_attempts_running 0"), "{body}");
}
