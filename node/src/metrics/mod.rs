//! Prometheus metrics (`GET /metrics`). Transport counters are updated as
//! traffic flows; membership gauges and counters are brought up to date
//! from the machine's own [`Stats`] when the endpoint is scraped.

pub mod process;

use crate::transport::TransportCounters;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::info::Info;
use prometheus_client::registry::Registry;
use shoal_protocol::membership::{MemberState, Stats};
use std::sync::Mutex;

/// The content type of [`Metrics::encode`]'s output: OpenMetrics text
/// (`# EOF`, counters typed without their `_total` suffix), which a
/// Prometheus scraper parses as such only when it is served under this type.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Labels of `shoal_build_info`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct BuildLabels {
    version: &'static str,
}

/// Labels of `shoal_api_requests_total`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ApiRequestLabels {
    /// The route's pattern (`/v1/tasks/{id}`), or `unmatched`: never the
    /// raw path, whose ids would make a series per task.
    pub route: String,
    /// GET, POST, ...
    pub method: String,
    /// The HTTP status answered.
    pub status: u16,
}

/// Label of the `shoal_members` gauge.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StateLabel {
    /// alive, suspect, down or left.
    pub state: &'static str,
}

/// Every metric of an agent.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    /// Counters the transport updates directly.
    pub transport: TransportCounters,
    /// Task, lease and store metrics, updated by the task host.
    pub tasks: crate::tasks::metrics::TaskMetrics,
    /// Federation link metrics, updated by the gateway's link task.
    pub fed: std::sync::Arc<crate::federation::metrics::FedMetrics>,
    members: Family<StateLabel, Gauge>,
    probes_sent: Counter,
    probes_failed: Counter,
    indirect_probes: Counter,
    suspicions_raised: Counter,
    suspicions_refuted: Counter,
    foreign_stores_refused: Counter,
    local_health: Gauge,
    incarnation: Gauge,
    last_stats: Mutex<Stats>,
    /// API requests answered, by route, method and status.
    pub api_requests: Family<ApiRequestLabels, Counter>,
    attempts_running: Gauge,
    slots_free: Gauge,
    process: process::ProcessMetrics,
}

/// The name of a member state, as in the API and metrics.
pub fn state_name(state: MemberState) -> &'static str {
    match state {
        MemberState::Alive => "alive",
        MemberState::Suspect => "suspect",
        MemberState::Down => "down",
        MemberState::Left => "left",
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// A registry with every metric at zero.
    pub fn new() -> Metrics {
        let mut registry = Registry::with_prefix("shoal");
        let transport = TransportCounters::default();
        let m = Metrics {
            transport,
            tasks: crate::tasks::metrics::TaskMetrics::default(),
            fed: Default::default(),
            members: Family::default(),
            probes_sent: Counter::default(),
            probes_failed: Counter::default(),
            indirect_probes: Counter::default(),
            suspicions_raised: Counter::default(),
            suspicions_refuted: Counter::default(),
            foreign_stores_refused: Counter::default(),
            local_health: Gauge::default(),
            incarnation: Gauge::default(),
            last_stats: Mutex::new(Stats::default()),
            registry: Registry::default(),
            api_requests: Family::default(),
            attempts_running: Gauge::default(),
            slots_free: Gauge::default(),
            process: process::ProcessMetrics::default(),
        };
        registry.register(
            "build",
            "The running shoal's version",
            Info::new(BuildLabels {
                version: env!("CARGO_PKG_VERSION"),
            }),
        );
        registry.register(
            "api_requests",
            "API requests answered, by route pattern, method and status",
            m.api_requests.clone(),
        );
        registry.register(
            "attempts_running",
            "Task attempts running on this node",
            m.attempts_running.clone(),
        );
        registry.register(
            "slots_free",
            "Task slots of this node not used by running attempts",
            m.slots_free.clone(),
        );
        m.process.register(&mut registry);
        let t = &m.transport;
        registry.register(
            "members",
            "Members in this node's view by state, itself included",
            m.members.clone(),
        );
        registry.register(
            "probes_sent",
            "Direct SWIM probes sent",
            m.probes_sent.clone(),
        );
        registry.register(
            "probes_failed",
            "Probes unanswered directly and indirectly",
            m.probes_failed.clone(),
        );
        registry.register(
            "indirect_probes",
            "Indirect probe requests sent",
            m.indirect_probes.clone(),
        );
        registry.register(
            "suspicions_raised",
            "Suspicions this node raised",
            m.suspicions_raised.clone(),
        );
        registry.register(
            "suspicions_refuted",
            "Suspicions about this node it refuted",
            m.suspicions_refuted.clone(),
        );
        registry.register(
            "foreign_stores_refused",
            "Membership messages and records dropped because they named a member with \
             another data directory (store) than the party knows it by",
            m.foreign_stores_refused.clone(),
        );
        registry.register(
            "local_health_score",
            "Lifeguard local health multiplier (0 is healthy)",
            m.local_health.clone(),
        );
        registry.register(
            "incarnation",
            "This node's incarnation",
            m.incarnation.clone(),
        );
        registry.register(
            "datagrams_in",
            "QUIC datagrams received from authenticated peers",
            t.datagrams_in.clone(),
        );
        registry.register(
            "datagrams_out",
            "QUIC datagrams sent",
            t.datagrams_out.clone(),
        );
        registry.register(
            "bytes_in",
            "Frame bytes received (datagrams and streams)",
            t.bytes_in.clone(),
        );
        registry.register(
            "bytes_out",
            "Frame bytes sent (datagrams and streams)",
            t.bytes_out.clone(),
        );
        registry.register(
            "streams_in",
            "Stream frames received whole",
            t.streams_in.clone(),
        );
        registry.register("streams_out", "Stream frames sent", t.streams_out.clone());
        registry.register(
            "decode_errors",
            "Frames, streams and payloads dropped as malformed, oversized or truncated",
            t.decode_errors.clone(),
        );
        registry.register(
            "handshake_refusals",
            "TLS handshakes refused by either side (other CA or other party), counted where they are seen",
            t.handshake_refusals.clone(),
        );
        registry.register(
            "wire_version_refused",
            "Connections refused because one side cannot read the other's wire version, counted where they are seen",
            t.wire_version_refused.clone(),
        );
        registry.register(
            "dial_failures",
            "Outgoing QUIC dials that failed or timed out",
            t.dial_failures.clone(),
        );
        registry.register(
            "outbound_dropped",
            "Outbound payloads dropped (queue full, no connection)",
            t.outbound_dropped.clone(),
        );
        let u = &t.udp;
        registry.register(
            "udp_datagrams_in",
            "UDP datagrams received on the QUIC port, garbage included",
            u.datagrams_in.clone(),
        );
        registry.register(
            "udp_datagrams_out",
            "UDP datagrams sent from the QUIC port",
            u.datagrams_out.clone(),
        );
        registry.register(
            "udp_bytes_in",
            "UDP payload bytes received (QUIC headers, handshakes, keep-alives, garbage)",
            u.bytes_in.clone(),
        );
        registry.register(
            "udp_bytes_out",
            "UDP payload bytes sent (QUIC headers, handshakes, keep-alives)",
            u.bytes_out.clone(),
        );
        registry.register(
            "inbound_dropped",
            "Inbound Paxos/Task frames dropped because the task host was behind",
            t.inbound_dropped.clone(),
        );
        m.tasks.register(&mut registry);
        m.fed.register(&mut registry);
        Metrics { registry, ..m }
    }

    /// Brings the membership metrics up to date.
    pub fn observe_membership(
        &self,
        stats: &Stats,
        counts: &[(MemberState, usize)],
        local_health: u32,
        incarnation: u64,
    ) {
        let mut last = self.last_stats.lock().expect("metrics lock poisoned");
        let delta = |new: u64, old: u64| new.saturating_sub(old);
        self.probes_sent
            .inc_by(delta(stats.probes_sent, last.probes_sent));
        self.probes_failed
            .inc_by(delta(stats.probes_failed, last.probes_failed));
        self.indirect_probes
            .inc_by(delta(stats.indirect_probes_sent, last.indirect_probes_sent));
        self.suspicions_raised
            .inc_by(delta(stats.suspicions_raised, last.suspicions_raised));
        self.suspicions_refuted
            .inc_by(delta(stats.suspicions_refuted, last.suspicions_refuted));
        self.foreign_stores_refused.inc_by(delta(
            stats.foreign_stores_refused,
            last.foreign_stores_refused,
        ));
        *last = stats.clone();
        for (state, count) in counts {
            self.members
                .get_or_create(&StateLabel {
                    state: state_name(*state),
                })
                .set(i64::try_from(*count).unwrap_or(i64::MAX));
        }
        self.local_health.set(i64::from(local_health));
        self.incarnation
            .set(i64::try_from(incarnation).unwrap_or(i64::MAX));
    }

    /// Brings this node's load and the process's resources up to date.
    pub fn observe_node(&self, attempts_running: u32, slots_free: u32) {
        self.attempts_running.set(i64::from(attempts_running));
        self.slots_free.set(i64::from(slots_free));
        self.process.observe();
    }

    /// Counts one answered API request.
    pub fn count_api_request(&self, route: &str, method: &str, status: u16) {
        self.api_requests
            .get_or_create(&ApiRequestLabels {
                route: route.to_string(),
                method: method.to_string(),
                status,
            })
            .inc();
    }

    /// The OpenMetrics text exposition (served as [`CONTENT_TYPE`]).
    pub fn encode(&self) -> String {
        let mut out = String::new();
        if prometheus_client::encoding::text::encode(&mut out, &self.registry).is_err() {
            out.clear();
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exposition_names_the_documented_metrics() {
        let metrics = Metrics::new();
        metrics.transport.handshake_refusals.inc();
        let stats = Stats {
            probes_sent: 3,
            ..Stats::default()
        };
        metrics.observe_membership(&stats, &[(MemberState::Alive, 5)], 0, 1);
        metrics.observe_membership(&stats, &[(MemberState::Alive, 5)], 0, 1);
        let text = metrics.encode();
        assert!(text.contains("shoal_handshake_refusals_total 1"), "{text}");
        assert!(text.contains("shoal_probes_sent_total 3"), "{text}");
        assert!(text.contains("shoal_members{state=\"alive\"} 5"), "{text}");
        assert!(
            text.contains("shoal_fed_refused_total{reason=\"unknown_party\"} 0"),
            "{text}"
        );
    }

    #[test]
    fn node_load_process_build_and_api_requests_are_exported() {
        let metrics = Metrics::new();
        metrics.observe_node(3, 1);
        metrics.count_api_request("/v1/tasks/{id}", "GET", 404);
        metrics.count_api_request("/v1/tasks/{id}", "GET", 404);
        let text = metrics.encode();
        assert!(text.contains("shoal_attempts_running 3"), "{text}");
        assert!(text.contains("shoal_slots_free 1"), "{text}");
        let version = env!("CARGO_PKG_VERSION");
        assert!(
            text.contains(&format!("shoal_build_info{{version=\"{version}\"}} 1")),
            "{text}"
        );
        assert!(
            text.contains(
                "shoal_api_requests_total{route=\"/v1/tasks/{id}\",method=\"GET\",status=\"404\"} 2"
            ),
            "{text}"
        );
        let resident = text
            .lines()
            .find_map(|l| l.strip_prefix("shoal_process_resident_memory_bytes "))
            .and_then(|v| v.parse::<u64>().ok());
        assert!(resident.is_some_and(|r| r > 0), "{text}");
        assert!(text.contains("shoal_process_cpu_seconds_total "), "{text}");
    }
}
