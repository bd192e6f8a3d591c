//! The worker agent: this node's session with the managers.
//!
//! Every node in a cluster, managers included, runs one. Each period it sends a
//! heartbeat with what it is ([`describe`]: hostname, CPUs, memory, OS, architecture,
//! Docker engine version and labels) to a manager — its own manager runtime if it is a
//! manager, else the managers it knows in turn. The answer gives the heartbeat period,
//! the managers' current addresses (kept so the node can fail over and resume after a
//! restart), and the role the cluster wants it to have. When that role differs from the
//! role in its certificate, or its certificate has lived half its life, the agent asks
//! the CA for a new one and the daemon switches role.

pub mod beats;
pub mod container_opts;
pub mod docker_exec;
pub mod executor;
pub mod fake;
pub mod image_tar;
pub mod images;
pub mod networks;
pub mod runner;
pub mod secrets;
pub mod session;
pub mod volumes;
pub mod wire;

use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime};

use tokio_util::sync::CancellationToken;

use crate::error::{Error, Result};
use crate::host::{Host, Member};
use crate::proto;
use crate::store::{NodeDescription, Role};

/// Where this node's task runner is kept once it runs: set by the session
/// ([`session::spawn`]), read by the node's API (logs, image shipping).
#[derive(Clone, Default)]
pub struct RunnerSlot(Arc<RwLock<Option<Arc<runner::TaskRunner>>>>);

impl RunnerSlot {
    /// The task runner, if this node runs tasks.
    pub fn get(&self) -> Option<Arc<runner::TaskRunner>> {
        self.0.read().expect("runner lock").clone()
    }

    /// Installs or clears the task runner.
    pub fn set(&self, r: Option<Arc<runner::TaskRunner>>) {
        *self.0.write().expect("runner lock") = r;
    }
}

/// Starts the agent; it stops with `stop`. `docker_host` is the engine it describes.
pub fn spawn(d: Host, docker_host: Option<String>, stop: CancellationToken) {
    tokio::spawn(run(d, docker_host, stop));
}

async fn run(d: Host, docker_host: Option<String>, stop: CancellationToken) {
    let mut period = Duration::from_millis(1000);
    let mut next = 0usize;
    let mut self_failures = 0u32;
    let mut desc = describe(docker_host.as_deref()).await;
    let mut described_at = tokio::time::Instant::now();
    // Calls of their own, not the stream, for now: see `beats`.
    let mut beater = beats::Beater::calls();
    loop {
        let Some(member) = d.member() else { return };
        if described_at.elapsed() > Duration::from_secs(30) {
            desc = describe(docker_host.as_deref()).await;
            described_at = tokio::time::Instant::now();
        }
        desc.data_port = d.data_port();
        desc.generic_resources = d.generic_resources();
        // A manager reports to itself (it forwards to the leader), unless that failed
        // a few times in a row (longer than an election takes): a manager whose Raft
        // knows no leader (promoted, then demoted before it became a voter) would
        // otherwise never hear what the cluster decided. Then one try elsewhere.
        let own_failing = self_failures >= 3 && !member.managers.is_empty();
        let target = if (d.manager().is_ok() && !own_failing) || member.managers.is_empty() {
            member.advertise_addr.clone()
        } else {
            member.managers[next % member.managers.len()].clone()
        };
        if own_failing {
            self_failures = 0;
        }
        let req = proto::HeartbeatRequest {
            node_id: member.node_id.to_string(),
            description: Some(desc.clone().into()),
            addr: member.advertise_addr.clone(),
            facts: Some(facts()),
            forwarded_for: String::new(),
            cert_issuer_digest: member.creds.issuer_digest().unwrap_or_default(),
        };
        let mut wait = period;
        // `None`: not answered in time.
        match heartbeat(&d, &mut beater, &target, req, period * 2).await {
            Ok(Some(resp)) => {
                if target == member.advertise_addr {
                    self_failures = 0;
                }
                if resp.period_ms > 0 {
                    period = Duration::from_millis(resp.period_ms);
                    wait = period;
                }
                if !follow(&d, &member, &target, resp).await {
                    return;
                }
            }
            failed => {
                // A manager too slow to answer in time keeps its connection (the next
                // beat goes to another manager, which forwards it): a new TLS
                // handshake is the most a busy leader can be asked for, and a thousand
                // nodes dropping their connections to it at once kept it busy.
                if let Err(e) = failed {
                    tracing::debug!(manager = %target, "heartbeat failed: {e}");
                    d.peers().forget(&target);
                } else {
                    tracing::debug!(manager = %target, "heartbeat not answered in time");
                }
                if target == member.advertise_addr {
                    self_failures += 1;
                }
                next = next.wrapping_add(1);
                wait = Duration::from_millis(200);
            }
        }
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(wait) => {},
        }
    }
}

/// Follows a heartbeat answer: the leader's and the managers' addresses, the roots to
/// trust, and a new certificate when the role changed or the certificate is due. False
/// when the node left its cluster meanwhile.
async fn follow(d: &Host, member: &Member, target: &str, resp: proto::HeartbeatResponse) -> bool {
    d.set_leader_hint(&resp.leader_addr);
    if let Err(e) = d.set_managers(resp.managers) {
        tracing::warn!("saving the managers' addresses: {e}");
    }
    let want: Role = resp.role.parse().unwrap_or(member.role);
    // The roots to trust first (during a CA rotation: old and new; at its end: the new
    // alone), then a certificate of the issuing root.
    if !resp.trust_pem.is_empty() && resp.trust_pem != member.creds.ca_cert_pem {
        if let Err(e) = trust(d, member, &resp.trust_pem).await {
            tracing::warn!("new root CA certificates: {e}");
        }
    }
    let Some(member) = d.member() else {
        return false;
    };
    let moved_root = !resp.issuer_digest.is_empty()
        && member.creds.trusts(&resp.issuer_digest)
        && !member.creds.issued_by(&resp.issuer_digest);
    let renew_due = moved_root
        || member
            .creds
            .identity()
            .map(|id| crate::ca::needs_renewal(&id, SystemTime::now()))
            .unwrap_or(true);
    if want != member.role || renew_due {
        if let Err(e) = renew(d, target).await {
            tracing::warn!("certificate renewal: {e}");
        }
    }
    true
}

async fn heartbeat(
    d: &Host,
    beater: &mut beats::Beater,
    addr: &str,
    req: proto::HeartbeatRequest,
    timeout: Duration,
) -> Result<Option<proto::HeartbeatResponse>> {
    let ch = d.peers().channel(addr)?;
    beater.beat(ch, addr, req, timeout).await
}

/// Trusts the root certificates `trust_pem` from now on, if this node's own certificate
/// still verifies under them (a node never locks itself out: one whose certificate is
/// of a root no longer trusted must renew first, or rejoin).
async fn trust(d: &Host, member: &Member, trust_pem: &str) -> Result<()> {
    let creds = crate::ca::NodeCredentials {
        ca_cert_pem: trust_pem.to_string(),
        cert_pem: member.creds.cert_pem.clone(),
        key_pem: member.creds.key_pem.clone(),
    };
    creds.check_own(&member.creds.cert_pem, rustls_pki_types::UnixTime::now())?;
    tracing::info!("trusting new root CA certificates");
    d.change_role(creds, member.role).await
}

/// Gets a new certificate (with the role the cluster now gives this node) and applies it.
pub async fn renew(d: &Host, addr: &str) -> Result<()> {
    let Some(member) = d.member() else {
        return Ok(());
    };
    let (key_pem, csr_pem) = crate::ca::new_key_and_csr()?;
    let ch = d.peers().channel(addr)?;
    let resp = proto::ca_client::CaClient::new(ch)
        .renew(proto::RenewRequest { csr_pem })
        .await?
        .into_inner();
    let role: Role = resp.role.parse()?;
    // Installed only if it names this node, in this cluster, with the role announced,
    // and chains to this node's root.
    let id = member
        .creds
        .check_own(&resp.cert_pem, rustls_pki_types::UnixTime::now())?;
    if id.role != role {
        return Err(Error::PermissionDenied(format!(
            "new certificate refused: it says {}, the answer said {role}",
            id.role
        )));
    }
    let creds = crate::ca::NodeCredentials {
        ca_cert_pem: member.creds.ca_cert_pem.clone(),
        cert_pem: resp.cert_pem,
        key_pem,
    };
    tracing::info!(role = %role, "renewed this node's certificate");
    d.receive_manager_keys(resp.manager_keys.as_ref(), role)?;
    d.change_role(creds, role).await
}

/// Live facts of this machine: load average, free memory, CPUs.
pub fn facts() -> proto::NodeFacts {
    let load1 = std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|s| s.split_whitespace().next().and_then(|v| v.parse().ok()))
        .unwrap_or(0.0);
    let mem_free_bytes = meminfo_bytes("MemAvailable:");
    proto::NodeFacts {
        load1,
        mem_free_bytes,
        cpus: std::thread::available_parallelism()
            .map(|n| n.get() as u32)
            .unwrap_or(1),
    }
}

/// This machine's host name.
pub fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| "unknown".into())
}

/// One `/proc/meminfo` field (`MemTotal:`, `MemAvailable:`) in bytes; 0 if absent.
fn meminfo_bytes(field: &str) -> u64 {
    let Ok(s) = std::fs::read_to_string("/proc/meminfo") else {
        return 0;
    };
    s.lines()
        .find(|l| l.starts_with(field))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|kb| kb.parse::<u64>().ok())
        .map(|kb| kb * 1024)
        .unwrap_or(0)
}

/// What this node reports about itself. The Docker engine is asked for its version and
/// labels with a short time-out; a node without an engine reports an empty version.
pub async fn describe(docker_host: Option<&str>) -> NodeDescription {
    let mut d = NodeDescription {
        hostname: hostname(),
        cpus: std::thread::available_parallelism()
            .map(|n| n.get() as u32)
            .unwrap_or(1),
        memory_bytes: meminfo_bytes("MemTotal:"),
        os: std::env::consts::OS.to_string(),
        arch: std::env::consts::ARCH.to_string(),
        ..Default::default()
    };
    if let Ok(docker) = crate::docker::connect(docker_host) {
        let info = tokio::time::timeout(Duration::from_secs(2), docker.info()).await;
        if let Ok(Ok(info)) = info {
            d.engine_version = info.server_version.unwrap_or_default();
            for l in info.labels.unwrap_or_default() {
                if let Some((k, v)) = l.split_once('=') {
                    d.engine_labels.insert(k.to_string(), v.to_string());
                }
            }
        }
    }
    d
}
