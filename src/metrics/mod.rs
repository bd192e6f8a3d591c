//! Prometheus metrics: one [`Metrics`] registry per daemon, handed to the parts that
//! measure, served by [`server`] on `--metrics-addr` (off unless given).
//!
//! # How values get here
//!
//! - **Counters and histograms on the paths that do the work**: the mesh counts each
//!   connection and its bytes, the DNS server each query, the agent each container
//!   start and failure, the pipeline times each pass. Each part holds plain
//!   prometheus-client handles (an `Arc` of atomics): counting is an atomic add, with no
//!   lock per connection or byte. A per-service handle is looked up once per listener
//!   (the mesh) and cloned into each connection, never per byte.
//! - **Gauges read at scrape time**: Raft's term, leader and indexes, the state tables'
//!   counts, the certificate's expiry. The daemon fills them just before each scrape
//!   ([`server::Refresh`]), from the Raft metrics and a snapshot of the state tables, so
//!   nothing has to keep them current between scrapes. The counting is a pure function
//!   ([`state::count`]).
//!
//! # Names
//!
//! All names start with `orc_`; counters end in `_total`, durations in `_seconds`, sizes
//! in `_bytes` (the unit in the name, as Prometheus asks). The exposition is the
//! OpenMetrics text format, which Prometheus scrapes and `promtool check metrics`
//! accepts.
//!
//! # Label cardinality (bounded)
//!
//! - `service` (mesh): a service's name; at most [`MAX_SERVICE_LABELS`] at once (more
//!   are counted under `service="_other"`), and a service's series are dropped when the
//!   mesh stops routing it. Never a task, a container or a client address.
//! - `reason` (pending tasks): one of [`state::REASONS`], a fixed set.
//! - `state`, `status`, `availability`, `role`: the fixed enum names of the store.
//! - `source` (image loads): `peer` or `pull`. `direction` (bytes): `in` or `out`.
//!
//! No label or value is ever a secret's name or content, a token or a key.

pub mod server;
pub mod state;

use std::collections::BTreeSet;
use std::sync::atomic::AtomicU64;
use std::sync::Mutex;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::{Registry, Unit};

/// The most services the mesh labels at once; further ones share `service="_other"`.
pub const MAX_SERVICE_LABELS: usize = 1024;

/// The label value of the services beyond [`MAX_SERVICE_LABELS`].
pub const OTHER_SERVICE: &str = "_other";

/// A float gauge (seconds that may be fractional or negative).
pub type FloatGauge = Gauge<f64, AtomicU64>;

/// A float counter (seconds).
pub type FloatCounter = Counter<f64, AtomicU64>;

/// `{service="web"}`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, PartialOrd, Ord, EncodeLabelSet)]
pub struct ServiceLabel {
    /// The service's name.
    pub service: String,
}

/// `{service="web",direction="in"}`: `in` is client → backend, `out` backend → client.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct BytesLabel {
    /// The service's name.
    pub service: String,
    /// `in` or `out`.
    pub direction: &'static str,
}

/// `{state="running"}`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StateLabel {
    /// A task state's name.
    pub state: &'static str,
}

/// `{status="ready",availability="active",role="manager"}`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, PartialOrd, Ord, EncodeLabelSet)]
pub struct NodeLabel {
    /// `ready`, `down`, `unknown`.
    pub status: &'static str,
    /// `active`, `pause`, `drain`.
    pub availability: &'static str,
    /// `manager`, `worker`.
    pub role: &'static str,
}

/// `{reason="lacked_memory"}`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabel {
    /// One of [`state::REASONS`].
    pub reason: &'static str,
}

/// `{source="peer"}` or `{source="pull"}`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SourceLabel {
    /// `peer` or `pull`.
    pub source: &'static str,
}

/// `{leader="<node id>"}`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct LeaderLabel {
    /// The leader's node id (hex, as `orc node ls` shows it).
    pub leader: String,
}

/// Raft (managers; filled at scrape time, but for the proposal histogram and the
/// snapshot counter).
#[derive(Debug)]
pub struct RaftMetrics {
    /// `orc_raft_term`.
    pub term: Gauge,
    /// `orc_raft_is_leader`: 1 on the leader.
    pub is_leader: Gauge,
    /// `orc_raft_leader{leader}`: 1 for the leader this manager knows (none when none).
    pub leader: Family<LeaderLabel, Gauge>,
    /// `orc_raft_last_log_index`.
    pub last_log_index: Gauge,
    /// `orc_raft_commit_index`: on the leader only, the highest index a majority of
    /// the voters hold (openraft 0.9 does not publish a follower's commit index).
    pub commit_index: Gauge,
    /// `orc_raft_applied_index`.
    pub applied_index: Gauge,
    /// `orc_raft_proposal_duration_seconds`: proposal to commit-and-apply, on the
    /// manager that proposed (the leader).
    pub proposal_seconds: Histogram,
    /// `orc_raft_snapshots_total`: snapshots this manager built or installed.
    pub snapshots: Counter,
}

/// The state tables (managers; filled at scrape time from the local applied state).
#[derive(Debug, Default)]
pub struct StateMetrics {
    /// `orc_nodes{status,availability,role}`.
    pub nodes: Family<NodeLabel, Gauge>,
    /// `orc_services`.
    pub services: Gauge,
    /// `orc_tasks{state}`.
    pub tasks: Family<StateLabel, Gauge>,
    /// `orc_tasks_unplaceable{reason}`: tasks pending with the scheduler's reason.
    pub unplaceable: Family<ReasonLabel, Gauge>,
    /// `orc_vips_free`: addresses of the cluster's VIP range no service or task holds.
    pub vips_free: Gauge,
    /// `orc_tasks_without_vip`: tasks to run that hold no virtual IP (the range was
    /// full when they were made).
    pub without_vip: Gauge,
}

/// The worker agent.
#[derive(Debug, Default, Clone)]
pub struct AgentMetrics {
    /// `orc_agent_container_starts_total`.
    pub container_starts: Counter,
    /// `orc_agent_task_failures_total{state}`: tasks this agent reported `failed` or
    /// `rejected`.
    pub task_failures: Family<StateLabel, Counter>,
    /// `orc_agent_image_loads_total{source}`: images made present by loading them from
    /// another node (`peer`) or by the engine's pull (`pull`).
    pub image_loads: Family<SourceLabel, Counter>,
    /// `orc_agent_volume_copies_total`: following volumes copied in from another node.
    pub volume_copies: Counter,
    /// `orc_agent_volume_copy_bytes_total`: the bytes of their files.
    pub volume_copy_bytes: Counter,
}

impl AgentMetrics {
    /// Counts a task this agent reported in `state` if it is a failure (`failed`,
    /// `rejected`).
    pub fn note_task_state(&self, state: &'static str) {
        if state == "failed" || state == "rejected" {
            self.task_failures
                .get_or_create(&StateLabel { state })
                .inc();
        }
    }

    /// Counts an image made present from `source` (`peer` or `pull`).
    pub fn note_image_load(&self, source: &'static str) {
        self.image_loads
            .get_or_create(&SourceLabel { source })
            .inc();
    }
}

/// The routing mesh (every node; TCP connections through published ports and VIPs).
#[derive(Debug, Default)]
pub struct MeshMetrics {
    /// `orc_mesh_connections_active{service}`.
    pub active: Family<ServiceLabel, Gauge>,
    /// `orc_mesh_connections_total{service}`.
    pub total: Family<ServiceLabel, Counter>,
    /// `orc_mesh_bytes_total{service,direction}`: counted when a connection ends.
    pub bytes: Family<BytesLabel, Counter>,
    /// `orc_mesh_backend_connect_failures_total{service}`.
    pub connect_failures: Family<ServiceLabel, Counter>,
    /// The service labels in use (bounded by [`MAX_SERVICE_LABELS`]).
    labels: Mutex<BTreeSet<String>>,
}

/// The handles one mesh listener counts with (cloned into each connection).
#[derive(Debug, Clone, Default)]
pub struct ServiceMeter {
    /// Connections open now.
    pub active: Gauge,
    /// Connections accepted.
    pub total: Counter,
    /// Bytes client → backend.
    pub bytes_in: Counter,
    /// Bytes backend → client.
    pub bytes_out: Counter,
    /// Backend connects that failed.
    pub connect_failures: Counter,
}

impl MeshMetrics {
    /// The handles of service `name` (its own label while fewer than
    /// [`MAX_SERVICE_LABELS`] are in use, else `_other`).
    pub fn meter(&self, name: &str) -> ServiceMeter {
        let service = {
            let mut labels = self.labels.lock().unwrap_or_else(|e| e.into_inner());
            if labels.contains(name) || labels.len() < MAX_SERVICE_LABELS {
                labels.insert(name.to_string());
                name.to_string()
            } else {
                OTHER_SERVICE.to_string()
            }
        };
        let s = ServiceLabel {
            service: service.clone(),
        };
        let bytes = |direction| BytesLabel {
            service: service.clone(),
            direction,
        };
        ServiceMeter {
            active: self.active.get_or_create_owned(&s),
            total: self.total.get_or_create_owned(&s),
            bytes_in: self.bytes.get_or_create_owned(&bytes("in")),
            bytes_out: self.bytes.get_or_create_owned(&bytes("out")),
            connect_failures: self.connect_failures.get_or_create_owned(&s),
        }
    }

    /// Drops the series of the services not in `live` (the mesh no longer routes them).
    pub fn retain(&self, live: &BTreeSet<String>) {
        let mut labels = self.labels.lock().unwrap_or_else(|e| e.into_inner());
        let gone: Vec<String> = labels.difference(live).cloned().collect();
        for service in gone {
            labels.remove(&service);
            let s = ServiceLabel {
                service: service.clone(),
            };
            self.active.remove(&s);
            self.total.remove(&s);
            self.connect_failures.remove(&s);
            for direction in ["in", "out"] {
                self.bytes.remove(&BytesLabel {
                    service: service.clone(),
                    direction,
                });
            }
        }
    }

    /// How many service labels are in use.
    pub fn labels_in_use(&self) -> usize {
        self.labels.lock().unwrap_or_else(|e| e.into_inner()).len()
    }
}

/// The per-node DNS server.
#[derive(Debug, Default, Clone)]
pub struct DnsMetrics {
    /// `orc_dns_queries_total`: queries received (UDP and TCP).
    pub queries: Counter,
    /// `orc_dns_nxdomain_total`: queries answered NXDOMAIN.
    pub nxdomain: Counter,
    /// `orc_dns_forward_failures_total`: forwarded queries no upstream answered.
    pub forward_failures: Counter,
}

/// A daemon's metrics: the registry and the handles each part counts with.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    /// Raft.
    pub raft: RaftMetrics,
    /// The state tables.
    pub state: StateMetrics,
    /// `orc_scheduler_pass_duration_seconds`.
    pub scheduler_pass_seconds: Histogram,
    /// `orc_orchestrator_pass_duration_seconds`.
    pub orchestrator_pass_seconds: Histogram,
    /// `orc_dispatcher_sessions`: worker sessions the leader holds.
    pub dispatcher_sessions: Gauge,
    /// `orc_dispatcher_missed_heartbeats_total`: nodes the leader marked down because
    /// they missed their heartbeats.
    pub missed_heartbeats: Counter,
    /// `orc_dispatcher_deaf_seconds_total`: time the leader could not listen to its
    /// nodes (its runtime ran late), not counted against their deadlines.
    pub deaf_seconds: FloatCounter,
    /// The agent.
    pub agent: AgentMetrics,
    /// The routing mesh.
    pub mesh: MeshMetrics,
    /// The DNS server.
    pub dns: DnsMetrics,
    /// `orc_node_certificate_expiry_seconds`: seconds until this node's certificate
    /// expires (negative once expired).
    pub cert_expiry_seconds: FloatGauge,
}

/// Buckets of pass and proposal durations: 0.5 ms to about 8 s.
fn duration_buckets() -> impl Iterator<Item = f64> {
    exponential_buckets(0.0005, 2.0, 15)
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl Metrics {
    /// A registry with every metric registered (at zero).
    pub fn new() -> Metrics {
        let raft = RaftMetrics {
            term: Gauge::default(),
            is_leader: Gauge::default(),
            leader: Family::default(),
            last_log_index: Gauge::default(),
            commit_index: Gauge::default(),
            applied_index: Gauge::default(),
            proposal_seconds: Histogram::new(duration_buckets()),
            snapshots: Counter::default(),
        };
        let m = Metrics {
            registry: Registry::default(),
            raft,
            state: StateMetrics::default(),
            scheduler_pass_seconds: Histogram::new(duration_buckets()),
            orchestrator_pass_seconds: Histogram::new(duration_buckets()),
            dispatcher_sessions: Gauge::default(),
            missed_heartbeats: Counter::default(),
            deaf_seconds: FloatCounter::default(),
            agent: AgentMetrics::default(),
            mesh: MeshMetrics::default(),
            dns: DnsMetrics::default(),
            cert_expiry_seconds: FloatGauge::default(),
        };
        m.register()
    }

    fn register(mut self) -> Metrics {
        let r = &mut self.registry;
        let o = r.sub_registry_with_prefix("orc");
        let raft = &self.raft;
        o.register("raft_term", "Raft term of this manager", raft.term.clone());
        o.register(
            "raft_is_leader",
            "1 if this manager is the Raft leader",
            raft.is_leader.clone(),
        );
        o.register(
            "raft_leader",
            "1 for the leader this manager knows",
            raft.leader.clone(),
        );
        o.register(
            "raft_last_log_index",
            "Index of the last Raft log entry",
            raft.last_log_index.clone(),
        );
        o.register(
            "raft_commit_index",
            "Highest index a majority of voters hold (on the leader)",
            raft.commit_index.clone(),
        );
        o.register(
            "raft_applied_index",
            "Index of the last entry applied to the state tables",
            raft.applied_index.clone(),
        );
        o.register_with_unit(
            "raft_proposal_duration",
            "Time from proposal to commit and apply",
            Unit::Seconds,
            raft.proposal_seconds.clone(),
        );
        o.register(
            "raft_snapshots",
            "Raft snapshots built or installed",
            raft.snapshots.clone(),
        );
        let st = &self.state;
        o.register(
            "nodes",
            "Nodes by status, availability and role",
            st.nodes.clone(),
        );
        o.register("services", "Services", st.services.clone());
        o.register("tasks", "Tasks by observed state", st.tasks.clone());
        o.register(
            "tasks_unplaceable",
            "Pending tasks no node can take, by the scheduler's first reason",
            st.unplaceable.clone(),
        );
        o.register(
            "vips_free",
            "Addresses of the cluster's VIP range no service or task holds",
            st.vips_free.clone(),
        );
        o.register(
            "tasks_without_vip",
            "Tasks to run that hold no virtual IP (the VIP range was full)",
            st.without_vip.clone(),
        );
        o.register_with_unit(
            "scheduler_pass_duration",
            "Time of one scheduler pass",
            Unit::Seconds,
            self.scheduler_pass_seconds.clone(),
        );
        o.register_with_unit(
            "orchestrator_pass_duration",
            "Time of one orchestrator pass",
            Unit::Seconds,
            self.orchestrator_pass_seconds.clone(),
        );
        o.register(
            "dispatcher_sessions",
            "Node sessions the leader holds",
            self.dispatcher_sessions.clone(),
        );
        o.register(
            "dispatcher_missed_heartbeats",
            "Nodes marked down for missed heartbeats",
            self.missed_heartbeats.clone(),
        );
        o.register_with_unit(
            "dispatcher_deaf",
            "Time the leader's runtime ran late, not counted against nodes' deadlines",
            Unit::Seconds,
            self.deaf_seconds.clone(),
        );
        let a = &self.agent;
        o.register(
            "agent_container_starts",
            "Containers this node's agent started",
            a.container_starts.clone(),
        );
        o.register(
            "agent_task_failures",
            "Tasks this node's agent reported failed or rejected",
            a.task_failures.clone(),
        );
        o.register(
            "agent_image_loads",
            "Images made present, by source (peer: loaded from another node; pull)",
            a.image_loads.clone(),
        );
        o.register(
            "agent_volume_copies",
            "Following volumes copied in from another node",
            a.volume_copies.clone(),
        );
        o.register_with_unit(
            "agent_volume_copy",
            "The bytes of the files of following volumes copied in",
            Unit::Bytes,
            a.volume_copy_bytes.clone(),
        );
        let mesh = &self.mesh;
        o.register(
            "mesh_connections_active",
            "Mesh TCP connections open now",
            mesh.active.clone(),
        );
        o.register(
            "mesh_connections",
            "Mesh TCP connections accepted",
            mesh.total.clone(),
        );
        o.register_with_unit(
            "mesh",
            "Bytes relayed by the mesh (in: client to backend), counted as connections end",
            Unit::Bytes,
            mesh.bytes.clone(),
        );
        o.register(
            "mesh_backend_connect_failures",
            "Mesh connects to a backend that failed",
            mesh.connect_failures.clone(),
        );
        let dns = &self.dns;
        o.register("dns_queries", "DNS queries received", dns.queries.clone());
        o.register(
            "dns_nxdomain",
            "DNS queries answered NXDOMAIN",
            dns.nxdomain.clone(),
        );
        o.register(
            "dns_forward_failures",
            "Forwarded DNS queries no upstream answered",
            dns.forward_failures.clone(),
        );
        o.register_with_unit(
            "node_certificate_expiry",
            "Time until this node's certificate expires",
            Unit::Seconds,
            self.cert_expiry_seconds.clone(),
        );
        self
    }

    /// The exposition, OpenMetrics text format.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry)
            .expect("writing to a String cannot fail");
        out
    }

    /// Sets the state gauges from `counts` (replacing the previous values, so a state
    /// that no task has any more disappears rather than keeping its last count).
    pub fn set_state(&self, counts: &state::Counts) {
        let st = &self.state;
        st.nodes.clear();
        for (label, n) in &counts.nodes {
            st.nodes.get_or_create(label).set(*n as i64);
        }
        st.services.set(counts.services as i64);
        st.tasks.clear();
        for (s, n) in &counts.tasks {
            st.tasks
                .get_or_create(&StateLabel { state: s })
                .set(*n as i64);
        }
        st.unplaceable.clear();
        for (reason, n) in &counts.unplaceable {
            st.unplaceable
                .get_or_create(&ReasonLabel { reason })
                .set(*n as i64);
        }
        st.vips_free.set(counts.vips_free as i64);
        st.without_vip.set(counts.without_vip as i64);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(text: &str, series: &str) -> Option<f64> {
        text.lines()
            .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
    }

    #[test]
    fn names_carry_the_prefix_the_unit_and_total() {
        let m = Metrics::new();
        m.dns.queries.inc();
        m.agent.container_starts.inc_by(3);
        m.cert_expiry_seconds.set(12.5);
        m.scheduler_pass_seconds.observe(0.001);
        let text = m.encode();
        assert_eq!(sample(&text, "orc_dns_queries_total"), Some(1.0));
        assert_eq!(sample(&text, "orc_agent_container_starts_total"), Some(3.0));
        assert_eq!(
            sample(&text, "orc_node_certificate_expiry_seconds"),
            Some(12.5)
        );
        assert_eq!(
            sample(&text, "orc_scheduler_pass_duration_seconds_count"),
            Some(1.0)
        );
        for l in text.lines().filter(|l| !l.starts_with('#')) {
            assert!(l.starts_with("orc_"), "{l}");
        }
        assert!(text.ends_with("# EOF\n"));
    }

    #[test]
    fn mesh_labels_are_bounded_and_dropped_with_their_service() {
        let m = Metrics::new();
        for i in 0..MAX_SERVICE_LABELS + 5 {
            m.mesh.meter(&format!("s{i}")).total.inc();
        }
        assert_eq!(m.mesh.labels_in_use(), MAX_SERVICE_LABELS);
        let text = m.encode();
        assert_eq!(
            sample(
                &text,
                &format!("orc_mesh_connections_total{{service=\"{OTHER_SERVICE}\"}}")
            ),
            Some(5.0)
        );
        // a service already labelled keeps its label
        m.mesh.meter("s0").total.inc();
        let text = m.encode();
        assert_eq!(
            sample(&text, "orc_mesh_connections_total{service=\"s0\"}"),
            Some(2.0)
        );
        m.mesh.retain(&BTreeSet::from(["s1".to_string()]));
        assert_eq!(m.mesh.labels_in_use(), 1);
        let text = m.encode();
        assert_eq!(
            sample(&text, "orc_mesh_connections_total{service=\"s0\"}"),
            None
        );
        assert_eq!(
            sample(&text, "orc_mesh_connections_total{service=\"s1\"}"),
            Some(1.0)
        );
    }

    #[test]
    fn only_failures_count_as_task_failures() {
        let m = Metrics::new();
        for s in ["running", "failed", "rejected", "complete", "failed"] {
            m.agent.note_task_state(s);
        }
        let text = m.encode();
        assert_eq!(
            sample(&text, "orc_agent_task_failures_total{state=\"failed\"}"),
            Some(2.0)
        );
        assert_eq!(
            sample(&text, "orc_agent_task_failures_total{state=\"rejected\"}"),
            Some(1.0)
        );
        assert_eq!(
            sample(&text, "orc_agent_task_failures_total{state=\"complete\"}"),
            None
        );
    }
}
