//! A real Prometheus server (Debian's, from `scripts/prometheus.sh install`) scrapes this test
//! process's `/metrics` every second; the tests ask its query API for the series after known
//! work and check the values, and `promtool check metrics` lints the exposition.
//!
//! Every test starts its own server (tests/support/prometheus.rs) on a loopback port of
//! 19130–19138 scraping its own `ObservabilityServer`. Values are waited for by polling the
//! query API with a generous deadline: Prometheus applies a new target about 5 s after it
//! starts, then scrapes every second.

use std::sync::Arc;
use std::time::{Duration, Instant};

use onex_runtime::health::HealthChecker;
use onex_runtime::http::{ObservabilityServer, ObservabilityServerConfig};
use onex_runtime::metrics::{Counter, Family, Gauge, Histogram, MetricsRegistry};
use onex_tests::prometheus::{PrometheusServer, PromtoolCheck, promtool_check_metrics};

/// How long Prometheus may take to discover and first scrape the target.
const UP_WITHIN: Duration = Duration::from_secs(60);
/// How long a value may take to show after the work that makes it.
const VALUE_WITHIN: Duration = Duration::from_secs(30);

/// The process's HTTP server on an ephemeral loopback port, and a Prometheus scraping it.
async fn scraped(registry: &Arc<MetricsRegistry>) -> (ObservabilityServer, PrometheusServer) {
    let config = ObservabilityServerConfig { address: "127.0.0.1:0".parse().unwrap() };
    let server = ObservabilityServer::start(config, Arc::clone(registry), Arc::new(HealthChecker::new()))
        .await
        .expect("observability server");
    let started = Instant::now();
    let prometheus = PrometheusServer::start(server.local_addr()).await;
    let ready = started.elapsed();
    let up = prometheus.wait_until_up(UP_WITHIN).await;
    eprintln!(
        "Prometheus on {} ready after {ready:?}, scraping {} successfully {up:?} later",
        prometheus.address(),
        server.local_addr()
    );
    (server, prometheus)
}

/// Checks that promtool reads `exposition` and finds nothing wrong with it beyond what comes
/// from its reading the classic text format: there a counter family `x`, whose OpenMetrics
/// sample is `x_total`, is an untyped `x_total` without help. Each such finding must be a
/// counter family of the exposition; any other finding fails.
fn assert_promtool_accepts(exposition: &str) -> PromtoolCheck {
    let check = promtool_check_metrics(exposition);
    assert_ne!(check.exit_code, 1, "promtool could not parse the exposition: {check:?}\n{exposition}");
    assert!(check.errors.is_empty(), "promtool: {:?}\n{exposition}", check.errors);
    let unexpected: Vec<_> = check
        .findings
        .iter()
        .filter(|(metric, problem)| {
            let counter_family = metric
                .strip_suffix("_total")
                .is_some_and(|family| exposition.contains(&format!("# TYPE {family} counter\n")));
            !(problem == "no help text" && counter_family)
        })
        .collect();
    assert!(unexpected.is_empty(), "promtool found problems: {unexpected:?}\n{exposition}");
    eprintln!(
        "promtool check metrics: exit {}, {} counter-format findings only",
        check.exit_code,
        check.findings.len()
    );
    check
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prometheus_reads_the_counters_gauges_and_histogram_buckets_the_process_recorded() {
    let registry = Arc::new(MetricsRegistry::new("test"));
    let requests = Family::<Vec<(String, String)>, Counter>::default();
    registry.register("onex_test_requests", "Requests handled, by outcome", requests.clone()).unwrap();
    let queued = Gauge::<i64>::default();
    registry.register("onex_test_queued", "Items waiting", queued.clone()).unwrap();
    let latency = Histogram::latency();
    registry.register("onex_test_latency_seconds", "How long a request took", latency.clone()).unwrap();

    let ok = requests.get_or_create(&vec![("outcome".to_owned(), "ok".to_owned())]).clone();
    let error = requests.get_or_create(&vec![("outcome".to_owned(), "error".to_owned())]).clone();
    ok.inc_by(41);
    error.inc_by(2);
    queued.set(7);
    // 30 samples at 2 ms (bucket le=0.0025), 10 at 40 ms (le=0.05), 1 at 20 s (+Inf only).
    for _ in 0..30 {
        latency.observe(0.002);
    }
    for _ in 0..10 {
        latency.observe(0.040);
    }
    latency.observe(20.0);

    let (server, prometheus) = scraped(&registry).await;
    let env = "environment=\"test\"";
    let (v, took) = prometheus
        .wait_for(&format!("onex_test_requests_total{{{env},outcome=\"ok\"}}"), VALUE_WITHIN, |v| v == 41.0)
        .await;
    eprintln!("ok requests = {v} after {took:?}");
    assert_eq!(prometheus.query(&format!("onex_test_requests_total{{{env},outcome=\"error\"}}")).await, Some(2.0));
    assert_eq!(prometheus.query(&format!("onex_test_queued{{{env}}}")).await, Some(7.0));
    let bucket = |le: &str| format!("onex_test_latency_seconds_bucket{{{env},le=\"{le}\"}}");
    assert_eq!(prometheus.query(&bucket("0.001")).await, Some(0.0));
    assert_eq!(prometheus.query(&bucket("0.0025")).await, Some(30.0));
    assert_eq!(prometheus.query(&bucket("0.05")).await, Some(40.0));
    assert_eq!(prometheus.query(&bucket("10.0")).await, Some(40.0));
    assert_eq!(prometheus.query(&bucket("+Inf")).await, Some(41.0));
    assert_eq!(prometheus.query(&format!("onex_test_latency_seconds_count{{{env}}}")).await, Some(41.0));
    let sum = prometheus.query(&format!("onex_test_latency_seconds_sum{{{env}}}")).await.expect("a sum");
    assert!((sum - (30.0 * 0.002 + 10.0 * 0.040 + 20.0)).abs() < 1e-9, "sum {sum}");
    // The median falls in the 1–2.5 ms bucket, which Prometheus interpolates within.
    let median = prometheus
        .query(&format!("histogram_quantile(0.5, onex_test_latency_seconds_bucket{{{env}}})"))
        .await
        .expect("a median");
    assert!((0.001..=0.0025).contains(&median), "median {median}");

    // Live values, not a snapshot: later work shows in later scrapes.
    ok.inc_by(9);
    queued.set(0);
    let (_, took) = prometheus
        .wait_for(&format!("onex_test_requests_total{{{env},outcome=\"ok\"}}"), VALUE_WITHIN, |v| v == 50.0)
        .await;
    eprintln!("the next increment showed after {took:?}");
    prometheus.wait_for(&format!("onex_test_queued{{{env}}}"), VALUE_WITHIN, |v| v == 0.0).await;
    assert_eq!(prometheus.target_state().await.map(|t| t.last_error), Some(String::new()));

    assert_promtool_accepts(&registry.encode().unwrap());
    server.shutdown().await;
}
