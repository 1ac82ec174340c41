//! Prometheus metrics: kube-proxy's (same names, types, labels, buckets as
//! `pkg/proxy/metrics/metrics.go`) and the agent's own (`ipvs_proxy_*`).

use prometheus::{
    Encoder, Gauge, Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge, IntGaugeVec,
    Opts, Registry, TextEncoder,
};

/// kube-proxy's `network_programming_duration_seconds` buckets: a leading 0
/// (component-base's `MergeBuckets` starts from a zero bucket), 0.25 s and
/// 0.5 s, 1..59 s, 60..115 s by 5, 120..300 s by 30.
pub fn network_programming_buckets() -> Vec<f64> {
    let mut b = vec![0.0, 0.25, 0.5];
    b.extend((1..=59).map(f64::from));
    b.extend((0..12).map(|i| 60.0 + 5.0 * f64::from(i)));
    b.extend((0..7).map(|i| 120.0 + 30.0 * f64::from(i)));
    b
}

/// kube-proxy's sync duration buckets: `ExponentialBuckets(0.001, 2, 15)`.
pub fn sync_buckets() -> Vec<f64> {
    (0..15).map(|i| 0.001 * 2f64.powi(i)).collect()
}

/// Every metric the agent exports, registered in one registry.
#[derive(Clone)]
pub struct Metrics {
    registry: Registry,
    /// `kubeproxy_sync_proxy_rules_duration_seconds`: every sync.
    pub sync_proxy_rules_duration: Histogram,
    /// `kubeproxy_sync_full_proxy_rules_duration_seconds`: full reconciles.
    pub sync_full_proxy_rules_duration: Histogram,
    /// `kubeproxy_sync_partial_proxy_rules_duration_seconds`: incremental syncs.
    pub sync_partial_proxy_rules_duration: Histogram,
    /// `kubeproxy_sync_proxy_rules_last_timestamp_seconds`.
    pub sync_proxy_rules_last_timestamp: Gauge,
    /// `kubeproxy_sync_proxy_rules_last_queued_timestamp_seconds`.
    pub sync_proxy_rules_last_queued_timestamp: Gauge,
    /// `kubeproxy_network_programming_duration_seconds`.
    pub network_programming_duration: Histogram,
    /// `kubeproxy_sync_proxy_rules_endpoint_changes_pending`.
    pub endpoint_changes_pending: IntGauge,
    /// `kubeproxy_sync_proxy_rules_endpoint_changes_total`.
    pub endpoint_changes_total: IntCounter,
    /// `kubeproxy_sync_proxy_rules_service_changes_pending`.
    pub service_changes_pending: IntGauge,
    /// `kubeproxy_sync_proxy_rules_service_changes_total`.
    pub service_changes_total: IntCounter,
    /// `kubeproxy_sync_proxy_rules_no_local_endpoints_total{traffic_policy}`
    /// (a gauge, as in kube-proxy; label values `internal`, `external`).
    pub no_local_endpoints: IntGaugeVec,
    /// `kubeproxy_proxy_healthz_total{code}`.
    pub healthz_total: IntCounterVec,
    /// `kubeproxy_proxy_livez_total{code}`.
    pub livez_total: IntCounterVec,
    /// `ipvs_proxy_virtual_servers`: IPVS virtual servers programmed.
    pub virtual_servers: IntGauge,
    /// `ipvs_proxy_real_servers`: real servers programmed (draining included).
    pub real_servers: IntGauge,
    /// `ipvs_proxy_draining_real_servers`: real servers at weight 0 awaiting deletion.
    pub draining_real_servers: IntGauge,
    /// `ipvs_proxy_netlink_operations_total{op}`.
    pub netlink_operations_total: IntCounterVec,
    /// `ipvs_proxy_netlink_errors_total{op,kind}`.
    pub netlink_errors_total: IntCounterVec,
    /// `ipvs_proxy_rejected_objects_total{kind,reason}`: Services, ports or
    /// EndpointSlices left out because they are invalid.
    pub rejected_objects_total: IntCounterVec,
    /// `ipvs_proxy_sync_errors_total`: syncs that failed and will be retried.
    pub sync_errors_total: IntCounter,
    /// `ipvs_proxy_nft_executions_total`: `nft` runs for our table.
    pub nft_executions_total: IntCounter,
    /// `ipvs_proxy_nft_input_bytes_total`: bytes fed to those runs.
    pub nft_input_bytes_total: IntCounter,
    /// `ipvs_proxy_nft_duration_seconds`: wall time of each sync's `nft`
    /// runs (observed for syncs that ran `nft`).
    pub nft_duration: Histogram,
    /// `ipvs_proxy_nft_netlink_transactions_total`: element transactions
    /// sent to nf_tables over nfnetlink (no `nft` run).
    pub nft_netlink_transactions_total: IntCounter,
    /// `ipvs_proxy_nft_netlink_bytes_total`: bytes of those transactions.
    pub nft_netlink_bytes_total: IntCounter,
    /// `ipvs_proxy_nft_element_fallbacks_total`: element updates that
    /// failed and were repaired by replacing the whole table.
    pub nft_element_fallbacks_total: IntCounter,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

fn histogram(reg: &Registry, name: &str, help: &str, buckets: Vec<f64>) -> Histogram {
    let h = Histogram::with_opts(HistogramOpts::new(name, help).buckets(buckets))
        .expect("static histogram options are valid");
    reg.register(Box::new(h.clone()))
        .expect("metric names are unique");
    h
}

fn gauge(reg: &Registry, name: &str, help: &str) -> Gauge {
    let g = Gauge::with_opts(Opts::new(name, help)).expect("static gauge options are valid");
    reg.register(Box::new(g.clone()))
        .expect("metric names are unique");
    g
}

fn int_gauge(reg: &Registry, name: &str, help: &str) -> IntGauge {
    let g = IntGauge::with_opts(Opts::new(name, help)).expect("static gauge options are valid");
    reg.register(Box::new(g.clone()))
        .expect("metric names are unique");
    g
}

fn counter(reg: &Registry, name: &str, help: &str) -> IntCounter {
    let c = IntCounter::with_opts(Opts::new(name, help)).expect("static counter options are valid");
    reg.register(Box::new(c.clone()))
        .expect("metric names are unique");
    c
}

fn counter_vec(reg: &Registry, name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    let c = IntCounterVec::new(Opts::new(name, help), labels)
        .expect("static counter options are valid");
    reg.register(Box::new(c.clone()))
        .expect("metric names are unique");
    c
}

impl Metrics {
    /// Creates and registers every metric in a fresh registry.
    pub fn new() -> Self {
        let r = Registry::new();
        let no_local_endpoints = IntGaugeVec::new(
            Opts::new(
                "kubeproxy_sync_proxy_rules_no_local_endpoints_total",
                "Number of services with a Local traffic policy and no endpoints",
            ),
            &["traffic_policy"],
        )
        .expect("static gauge options are valid");
        r.register(Box::new(no_local_endpoints.clone()))
            .expect("metric names are unique");
        Self {
            sync_proxy_rules_duration: histogram(
                &r,
                "kubeproxy_sync_proxy_rules_duration_seconds",
                "SyncProxyRules latency in seconds",
                sync_buckets(),
            ),
            sync_full_proxy_rules_duration: histogram(
                &r,
                "kubeproxy_sync_full_proxy_rules_duration_seconds",
                "SyncProxyRules latency in seconds for full resyncs",
                sync_buckets(),
            ),
            sync_partial_proxy_rules_duration: histogram(
                &r,
                "kubeproxy_sync_partial_proxy_rules_duration_seconds",
                "SyncProxyRules latency in seconds for partial resyncs",
                sync_buckets(),
            ),
            sync_proxy_rules_last_timestamp: gauge(
                &r,
                "kubeproxy_sync_proxy_rules_last_timestamp_seconds",
                "The last time proxy rules were successfully synced",
            ),
            sync_proxy_rules_last_queued_timestamp: gauge(
                &r,
                "kubeproxy_sync_proxy_rules_last_queued_timestamp_seconds",
                "The last time a sync of proxy rules was queued",
            ),
            network_programming_duration: histogram(
                &r,
                "kubeproxy_network_programming_duration_seconds",
                "In Cluster Network Programming Latency in seconds",
                network_programming_buckets(),
            ),
            endpoint_changes_pending: int_gauge(
                &r,
                "kubeproxy_sync_proxy_rules_endpoint_changes_pending",
                "Pending proxy rules Endpoint changes",
            ),
            endpoint_changes_total: counter(
                &r,
                "kubeproxy_sync_proxy_rules_endpoint_changes_total",
                "Cumulative proxy rules Endpoint changes",
            ),
            service_changes_pending: int_gauge(
                &r,
                "kubeproxy_sync_proxy_rules_service_changes_pending",
                "Pending proxy rules Service changes",
            ),
            service_changes_total: counter(
                &r,
                "kubeproxy_sync_proxy_rules_service_changes_total",
                "Cumulative proxy rules Service changes",
            ),
            no_local_endpoints,
            healthz_total: counter_vec(
                &r,
                "kubeproxy_proxy_healthz_total",
                "Cumulative proxy healthz HTTP status",
                &["code"],
            ),
            livez_total: counter_vec(
                &r,
                "kubeproxy_proxy_livez_total",
                "Cumulative proxy livez HTTP status",
                &["code"],
            ),
            virtual_servers: int_gauge(
                &r,
                "ipvs_proxy_virtual_servers",
                "IPVS virtual servers programmed by this agent",
            ),
            real_servers: int_gauge(
                &r,
                "ipvs_proxy_real_servers",
                "IPVS real servers programmed by this agent, draining ones included",
            ),
            draining_real_servers: int_gauge(
                &r,
                "ipvs_proxy_draining_real_servers",
                "IPVS real servers at weight 0 waiting for their connections to end",
            ),
            netlink_operations_total: counter_vec(
                &r,
                "ipvs_proxy_netlink_operations_total",
                "Kernel operations sent, by operation",
                &["op"],
            ),
            netlink_errors_total: counter_vec(
                &r,
                "ipvs_proxy_netlink_errors_total",
                "Kernel operations refused, by operation and error kind",
                &["op", "kind"],
            ),
            rejected_objects_total: counter_vec(
                &r,
                "ipvs_proxy_rejected_objects_total",
                "Services, service ports and EndpointSlices left out as invalid, by kind and reason",
                &["kind", "reason"],
            ),
            sync_errors_total: counter(
                &r,
                "ipvs_proxy_sync_errors_total",
                "Syncs that failed and were scheduled for retry",
            ),
            nft_executions_total: counter(
                &r,
                "ipvs_proxy_nft_executions_total",
                "Runs of nft for our table",
            ),
            nft_input_bytes_total: counter(
                &r,
                "ipvs_proxy_nft_input_bytes_total",
                "Bytes of nft input (rulesets and element updates) for our table",
            ),
            nft_duration: histogram(
                &r,
                "ipvs_proxy_nft_duration_seconds",
                "Wall time of one sync's nft runs",
                sync_buckets(),
            ),
            nft_netlink_transactions_total: counter(
                &r,
                "ipvs_proxy_nft_netlink_transactions_total",
                "Element transactions sent to nf_tables over nfnetlink for our table",
            ),
            nft_netlink_bytes_total: counter(
                &r,
                "ipvs_proxy_nft_netlink_bytes_total",
                "Bytes of nfnetlink element transactions for our table",
            ),
            nft_element_fallbacks_total: counter(
                &r,
                "ipvs_proxy_nft_element_fallbacks_total",
                "Element updates of our table that failed and were repaired by replacing the table",
            ),
            registry: r,
        }
    }

    /// The registry (to add process or client metrics).
    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    /// Renders every metric in the Prometheus text format (0.0.4).
    pub fn render(&self) -> String {
        let mut buf = Vec::new();
        let encoder = TextEncoder::new();
        if let Err(e) = encoder.encode(&self.registry.gather(), &mut buf) {
            tracing::warn!(error = %e, "cannot encode metrics");
        }
        String::from_utf8(buf).unwrap_or_default()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

/// Seconds since the Unix epoch, for the timestamp gauges.
pub fn unix_now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `# TYPE name kind` lines of the exposition.
    fn types(text: &str) -> Vec<(String, String)> {
        text.lines()
            .filter_map(|l| l.strip_prefix("# TYPE "))
            .map(|l| {
                let mut it = l.split(' ');
                (
                    it.next().unwrap_or_default().to_string(),
                    it.next().unwrap_or_default().to_string(),
                )
            })
            .collect()
    }

    #[test]
    fn kube_proxy_names_and_types() {
        let m = Metrics::new();
        // Vec metrics appear only once a label set exists.
        m.healthz_total.with_label_values(&["200"]).inc();
        m.livez_total.with_label_values(&["503"]).inc();
        m.no_local_endpoints.with_label_values(&["internal"]).set(2);
        m.netlink_operations_total
            .with_label_values(&["add_virtual_server"])
            .inc();
        m.netlink_errors_total
            .with_label_values(&["add_real_server", "not_found"])
            .inc();
        m.rejected_objects_total
            .with_label_values(&["Service", "invalid_cluster_ip"])
            .inc();
        let text = m.render();
        let t = types(&text);
        let expect = [
            ("kubeproxy_sync_proxy_rules_duration_seconds", "histogram"),
            (
                "kubeproxy_sync_full_proxy_rules_duration_seconds",
                "histogram",
            ),
            (
                "kubeproxy_sync_partial_proxy_rules_duration_seconds",
                "histogram",
            ),
            ("kubeproxy_sync_proxy_rules_last_timestamp_seconds", "gauge"),
            (
                "kubeproxy_sync_proxy_rules_last_queued_timestamp_seconds",
                "gauge",
            ),
            (
                "kubeproxy_network_programming_duration_seconds",
                "histogram",
            ),
            (
                "kubeproxy_sync_proxy_rules_endpoint_changes_pending",
                "gauge",
            ),
            (
                "kubeproxy_sync_proxy_rules_endpoint_changes_total",
                "counter",
            ),
            (
                "kubeproxy_sync_proxy_rules_service_changes_pending",
                "gauge",
            ),
            (
                "kubeproxy_sync_proxy_rules_service_changes_total",
                "counter",
            ),
            (
                "kubeproxy_sync_proxy_rules_no_local_endpoints_total",
                "gauge",
            ),
            ("kubeproxy_proxy_healthz_total", "counter"),
            ("kubeproxy_proxy_livez_total", "counter"),
            ("ipvs_proxy_virtual_servers", "gauge"),
            ("ipvs_proxy_real_servers", "gauge"),
            ("ipvs_proxy_draining_real_servers", "gauge"),
            ("ipvs_proxy_netlink_operations_total", "counter"),
            ("ipvs_proxy_netlink_errors_total", "counter"),
            ("ipvs_proxy_rejected_objects_total", "counter"),
            ("ipvs_proxy_nft_executions_total", "counter"),
            ("ipvs_proxy_nft_input_bytes_total", "counter"),
            ("ipvs_proxy_nft_duration_seconds", "histogram"),
        ];
        for (name, kind) in expect {
            assert!(
                t.iter().any(|(n, k)| n == name && k == kind),
                "{name} {kind} missing in\n{text}"
            );
        }
        assert!(text.contains("kubeproxy_proxy_healthz_total{code=\"200\"} 1"));
        assert!(text.contains(
            "kubeproxy_sync_proxy_rules_no_local_endpoints_total{traffic_policy=\"internal\"} 2"
        ));
        assert!(text.contains(
            "ipvs_proxy_netlink_errors_total{kind=\"not_found\",op=\"add_real_server\"} 1"
        ));
    }

    #[test]
    fn buckets_match_kube_proxy() {
        let np = network_programming_buckets();
        assert_eq!(np.len(), 1 + 2 + 59 + 12 + 7);
        assert_eq!(np[..4], [0.0, 0.25, 0.5, 1.0]);
        assert!(np.windows(2).all(|w| w[0] < w[1]), "strictly increasing");
        assert_eq!(np.last().copied(), Some(300.0));
        assert!(np.contains(&59.0) && np.contains(&115.0) && np.contains(&150.0));
        let s = sync_buckets();
        assert_eq!(s.len(), 15);
        assert!((s[0] - 0.001).abs() < 1e-12);
        assert!((s[14] - 16.384).abs() < 1e-9);

        let m = Metrics::new();
        m.network_programming_duration.observe(0.3);
        m.sync_proxy_rules_duration.observe(0.0015);
        let text = m.render();
        assert!(text.contains("kubeproxy_network_programming_duration_seconds_bucket{le=\"0\"} 0"));
        assert!(
            text.contains("kubeproxy_network_programming_duration_seconds_bucket{le=\"0.5\"} 1")
        );
        assert!(text.contains("kubeproxy_sync_proxy_rules_duration_seconds_bucket{le=\"0.001\"} 0"));
        assert!(text.contains("kubeproxy_sync_proxy_rules_duration_seconds_bucket{le=\"0.002\"} 1"));
        assert!(
            text.contains("kubeproxy_sync_proxy_rules_duration_seconds_bucket{le=\"16.384\"} 1")
        );
    }
}
