//! The cluster object and its settings.

use serde::{Deserialize, Serialize};

use super::{vip, Sealed};

/// Cluster-wide settings, changeable later through the control API.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Settings {
    /// Worker heartbeat period in milliseconds.
    pub heartbeat_period_ms: u64,
    /// Missed heartbeats after which a node is down.
    pub heartbeat_misses: u32,
    /// Validity of node certificates, in seconds.
    pub cert_validity_secs: u64,
    /// Where service and task virtual IPs come from (see [`vip`]).
    #[serde(default = "default_vip_range")]
    pub vip_range: String,
}

fn default_vip_range() -> String {
    vip::DEFAULT_VIP_RANGE.to_string()
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            heartbeat_period_ms: 500,
            heartbeat_misses: 3,
            cert_validity_secs: 90 * 24 * 3600,
            vip_range: default_vip_range(),
        }
    }
}

/// The cluster object: identity, CA and join-token secrets. The CA key, the secrets and
/// the unlock key are sealed with the cluster's data key ([`crate::keys`]): Raft, the
/// snapshots (and the `sm` tree of data dirs of before) only ever hold their ciphertext. The leader opens them
/// through `Manager::root_ca` and `Manager::join_secret`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Cluster {
    /// Random id, carried in every node certificate.
    pub id: String,
    /// Root CA certificate, PEM.
    pub ca_cert_pem: String,
    /// Root CA private key, PEM, sealed as [`Purpose::CaKey`](crate::keys::Purpose).
    pub ca_key: Sealed,
    /// Secret part of the worker join token, sealed as `WorkerSecret`.
    pub worker_secret: Sealed,
    /// Secret part of the manager join token, sealed as `ManagerSecret`.
    pub manager_secret: Sealed,
    /// With autolock, the unlock key, sealed as `UnlockKey`; `None` without autolock.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unlock_key: Option<Sealed>,
    /// Settings.
    pub settings: Settings,
    /// Unix ms of `init`.
    pub created_ms: u64,
    /// The offset in the VIP range of the last address handed out.
    #[serde(default)]
    pub vip_cursor: u32,
}
