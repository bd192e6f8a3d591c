//! Nodes: their identity, role, availability, liveness and what they report of
//! themselves.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// A node's identity, also its Raft node id. Shown as 16 hex digits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct NodeId(pub u64);

impl fmt::Display for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:016x}", self.0)
    }
}

impl std::str::FromStr for NodeId {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        u64::from_str_radix(s, 16)
            .map(NodeId)
            .map_err(|_| Error::InvalidInput(format!("{s:?} is not a node id")))
    }
}

/// Whether a node takes part in Raft (manager) or only runs tasks (worker).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// A Raft voter that can lead the cluster.
    Manager,
    /// Runs tasks only.
    Worker,
}

impl Role {
    /// The lower-case name used on the command line, in JSON and in certificates.
    pub fn as_str(&self) -> &'static str {
        match self {
            Role::Manager => "manager",
            Role::Worker => "worker",
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for Role {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "manager" => Ok(Role::Manager),
            "worker" => Ok(Role::Worker),
            _ => Err(Error::InvalidInput(format!(
                "role: expected manager or worker, found {s:?}"
            ))),
        }
    }
}

/// Whether the scheduler may place tasks on a node.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Availability {
    /// New tasks may be placed here.
    #[default]
    Active,
    /// No new tasks; running ones stay.
    Pause,
    /// No tasks at all: running ones move away.
    Drain,
}

impl Availability {
    /// The lower-case name.
    pub fn as_str(&self) -> &'static str {
        match self {
            Availability::Active => "active",
            Availability::Pause => "pause",
            Availability::Drain => "drain",
        }
    }
}

impl std::str::FromStr for Availability {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "active" => Ok(Availability::Active),
            "pause" => Ok(Availability::Pause),
            "drain" => Ok(Availability::Drain),
            _ => Err(Error::InvalidInput(format!(
                "availability: expected active, pause or drain, found {s:?}"
            ))),
        }
    }
}

/// Liveness of a node as seen by the dispatcher.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum NodeStatus {
    /// Not heard from since the current leader took over.
    #[default]
    Unknown,
    /// Heartbeats arrive.
    Ready,
    /// Missed its heartbeats.
    Down,
}

impl NodeStatus {
    /// The lower-case name.
    pub fn as_str(&self) -> &'static str {
        match self {
            NodeStatus::Unknown => "unknown",
            NodeStatus::Ready => "ready",
            NodeStatus::Down => "down",
        }
    }
}

/// What a node reports about itself with each session.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct NodeDescription {
    /// The host name.
    pub hostname: String,
    /// Logical CPUs.
    pub cpus: u32,
    /// Total memory in bytes.
    pub memory_bytes: u64,
    /// Operating system (`linux`).
    pub os: String,
    /// Architecture (`x86_64`).
    pub arch: String,
    /// Docker engine version, empty when no engine answered.
    pub engine_version: String,
    /// Docker engine labels.
    pub engine_labels: BTreeMap<String, String>,
    /// The port of the node's data path ([`crate::mesh`]'s tunnel between nodes), on
    /// its cluster address's IP; 0: none.
    #[serde(default)]
    pub data_port: u16,
    /// Discrete generic resources the node declares (`orc daemon
    /// --node-generic-resource gpu=2`): kind → count. Self-reported, like the rest of
    /// the description: it only decides where tasks that reserve them land, and a node
    /// that overstates them only takes more of that work itself.
    #[serde(default)]
    pub generic_resources: BTreeMap<String, u64>,
}

/// A member of the cluster.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Node {
    /// Identity; also the Raft node id.
    pub id: NodeId,
    /// Cluster address other nodes dial (`IP:PORT`). Written at join.
    pub addr: String,
    /// Spec (control API): the role this node should have.
    pub role: Role,
    /// Spec (control API): whether tasks may be placed here.
    pub availability: Availability,
    /// Spec (control API): operator labels.
    pub labels: BTreeMap<String, String>,
    /// Status (dispatcher): liveness.
    pub status: NodeStatus,
    /// Status (dispatcher): what the node last reported.
    pub description: NodeDescription,
    /// Status (dispatcher): unix ms of the last heartbeat that changed the status.
    pub status_changed_ms: u64,
    /// When the node joined, unix ms.
    pub created_ms: u64,
}

impl Node {
    /// A node as it joins: active, no labels, status unknown until its first heartbeat,
    /// created and changed at `now_ms`.
    pub fn new(
        id: NodeId,
        addr: impl Into<String>,
        role: Role,
        description: NodeDescription,
        now_ms: u64,
    ) -> Node {
        Node {
            id,
            addr: addr.into(),
            role,
            availability: Availability::Active,
            labels: BTreeMap::new(),
            status: NodeStatus::Unknown,
            description,
            status_changed_ms: now_ms,
            created_ms: now_ms,
        }
    }
}
