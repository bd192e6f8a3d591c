//! Networks: which services may reach which.
//!
//! A network is a name services join. Two tasks reach each other (by name through the
//! cluster DNS, by VIP through the mesh) only when their services share a network; on
//! each node, each network a local task is on is one Docker bridge of its own, so
//! containers of different networks cannot reach each other's addresses either.
//!
//! The cluster's built-in network [`DEFAULT_NETWORK`] always exists and is not stored:
//! a service that names no network is on it ([`crate::store::ServiceSpec::attachments`]),
//! so a cluster whose operators never mention networks behaves as before (everything
//! reaches everything by name). A stack's services that name no network join
//! `STACK_default` instead, which the stack creates.
//!
//! A service's attachments name networks by id, resolved from names at the control
//! API's door, as SwarmKit does: a network removed and made again under the same name is
//! another network.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

use super::service::{Words, STACK_LABEL};
use crate::error::{Error, Result};

/// The id (and name) of the cluster's built-in network.
pub const DEFAULT_NETWORK: &str = "default";

/// The most networks one service may be on.
pub const MAX_ATTACHMENTS: usize = 32;
/// The most aliases one attachment may carry.
pub const MAX_ALIASES: usize = 32;
/// The most networks the cluster holds.
pub const MAX_NETWORKS: usize = 1024;
/// The longest network name, in bytes.
pub const MAX_NAME: usize = 64;

/// A network's identity: 16 hex digits, or [`DEFAULT_NETWORK`].
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct NetworkId(pub String);

impl fmt::Display for NetworkId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl NetworkId {
    /// A fresh random id.
    pub fn random() -> Self {
        NetworkId(format!("{:016x}", rand::random::<u64>()))
    }

    /// The built-in network's id.
    pub fn default_network() -> Self {
        NetworkId(DEFAULT_NETWORK.into())
    }

    /// True for the built-in network.
    pub fn is_default(&self) -> bool {
        self.0 == DEFAULT_NETWORK
    }
}

/// How a network is carried between nodes. Both drivers are carried the same way (the
/// mesh between nodes); `bridge` is accepted because stack files name it, as Docker
/// accepts it in a swarm's stack only to say it is node-local.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum NetworkDriver {
    /// Spans the cluster.
    #[default]
    Overlay,
    /// Accepted; spans the cluster as `overlay` does (the stack loader warns).
    Bridge,
}

impl NetworkDriver {
    /// The word.
    pub fn as_str(self) -> &'static str {
        match self {
            NetworkDriver::Overlay => "overlay",
            NetworkDriver::Bridge => "bridge",
        }
    }
}

impl fmt::Display for NetworkDriver {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for NetworkDriver {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        match s {
            "overlay" => Ok(NetworkDriver::Overlay),
            "bridge" => Ok(NetworkDriver::Bridge),
            other => Err(Self::unknown(other)),
        }
    }
}

impl Words for NetworkDriver {
    const EXPECTED: &'static str = "overlay or bridge";
}

/// What the operator asked for.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NetworkSpec {
    /// Unique name.
    pub name: String,
    /// Labels (a stack's networks carry [`STACK_LABEL`]).
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// The driver.
    #[serde(default)]
    pub driver: NetworkDriver,
    /// No route out of the cluster, and no published port.
    #[serde(default)]
    pub internal: bool,
    /// Recorded, as Docker records it (orc runs no standalone containers).
    #[serde(default)]
    pub attachable: bool,
    /// Traffic between nodes goes through mutual TLS.
    #[serde(default)]
    pub encrypted: bool,
}

impl NetworkSpec {
    /// The stack the network belongs to (empty: none).
    pub fn stack(&self) -> &str {
        self.labels
            .get(STACK_LABEL)
            .map(String::as_str)
            .unwrap_or("")
    }

    /// Checks what the operator may name; the error names the field.
    pub fn validate(&self) -> Result<()> {
        validate_name(&self.name)?;
        if self.name == DEFAULT_NETWORK {
            return Err(Error::InvalidInput(format!(
                "name: {DEFAULT_NETWORK:?} is the cluster's built-in network"
            )));
        }
        if self.labels.len() > 64 {
            return Err(Error::InvalidInput(
                "labels: at most 64 labels on a network".into(),
            ));
        }
        for (k, v) in &self.labels {
            if k.is_empty() || k.len() > 128 || v.len() > 512 {
                return Err(Error::InvalidInput(format!(
                    "labels: {k:?}: keys are 1 to 128 bytes and values at most 512"
                )));
            }
        }
        Ok(())
    }
}

/// Checks a network name: 1 to [`MAX_NAME`] bytes of letters, digits, `_`, `-`, `.`,
/// starting with a letter or digit (Docker's rule for network names).
pub fn validate_name(name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= MAX_NAME
        && name.as_bytes()[0].is_ascii_alphanumeric()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'));
    if ok {
        Ok(())
    } else {
        Err(Error::InvalidInput(format!(
            "name: {name:?} is not a network name (1 to {MAX_NAME} letters, digits, '_', '-' or '.', starting with a letter or digit)"
        )))
    }
}

/// A network in the store.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Network {
    /// Identity.
    pub id: NetworkId,
    /// What the operator asked for.
    pub spec: NetworkSpec,
    /// Unix ms.
    pub created_ms: u64,
}

impl Network {
    /// The built-in network every service without networks is on.
    pub fn default_network() -> Network {
        Network {
            id: NetworkId::default_network(),
            spec: NetworkSpec {
                name: DEFAULT_NETWORK.into(),
                ..Default::default()
            },
            created_ms: 0,
        }
    }
}

/// A service's (and its tasks') place on one network.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct NetworkAttachment {
    /// The network.
    pub network: NetworkId,
    /// More names the service answers to on this network.
    #[serde(default)]
    pub aliases: Vec<String>,
}

impl NetworkAttachment {
    /// An attachment without aliases.
    pub fn to(network: NetworkId) -> Self {
        NetworkAttachment {
            network,
            aliases: vec![],
        }
    }
}

/// Checks a service's attachments as the operator wrote them (after names became ids):
/// at most [`MAX_ATTACHMENTS`], each network once, aliases DNS names.
pub fn validate_attachments(list: &[NetworkAttachment]) -> Result<()> {
    if list.len() > MAX_ATTACHMENTS {
        return Err(Error::InvalidInput(format!(
            "networks: at most {MAX_ATTACHMENTS} networks on a service"
        )));
    }
    let mut seen = std::collections::BTreeSet::new();
    for a in list {
        if !seen.insert(&a.network) {
            return Err(Error::InvalidInput(format!(
                "networks: network {} is named twice",
                a.network
            )));
        }
        if a.aliases.len() > MAX_ALIASES {
            return Err(Error::InvalidInput(format!(
                "networks: at most {MAX_ALIASES} aliases on a network"
            )));
        }
        for alias in &a.aliases {
            validate_alias(alias)?;
        }
    }
    Ok(())
}

/// `spec`'s networks, named by name or id as a client sends them, turned into ids by
/// `lookup` (a name or id → the network). Refused, naming `networks` and the name, when
/// one is not found, or named twice (once by name, once by id); a service only on
/// internal networks may not publish ports (refused naming `ports`).
pub fn resolve_attachments(
    lookup: &dyn Fn(&str) -> Option<Network>,
    spec: &mut crate::store::ServiceSpec,
) -> Result<()> {
    let mut nets = vec![];
    for a in &mut spec.networks {
        let n = lookup(&a.network.0).ok_or_else(|| {
            Error::InvalidInput(format!("networks: network {} not found", a.network))
        })?;
        a.network = n.id.clone();
        nets.push(n);
    }
    validate_attachments(&spec.networks)?;
    if !spec.ports.is_empty() && !nets.is_empty() && nets.iter().all(|n| n.spec.internal) {
        let names: Vec<&str> = nets.iter().map(|n| n.spec.name.as_str()).collect();
        return Err(Error::InvalidInput(format!(
            "ports: service {} is only on internal networks ({}), which publish no port",
            spec.name,
            names.join(", ")
        )));
    }
    Ok(())
}

/// Checks an alias: a DNS name (labels of 1 to 63 letters, digits, `-`, `_`; at most
/// 253 bytes in all).
pub fn validate_alias(alias: &str) -> Result<()> {
    let ok = !alias.is_empty()
        && alias.len() <= 253
        && alias.split('.').all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && l.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        });
    if ok {
        Ok(())
    } else {
        Err(Error::InvalidInput(format!(
            "networks: alias {alias:?} is not a DNS name"
        )))
    }
}

/// A task's container address on one network, on its own node (reported by the node;
/// only that node's mesh uses it).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct TaskAddress {
    /// The network.
    pub network: NetworkId,
    /// The container's IPv4 address on that network's bridge.
    pub ip: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_dockers_rule_and_the_default_is_reserved() {
        for ok in ["backend", "shop_default", "a", "net-1.x"] {
            validate_name(ok).unwrap();
        }
        for bad in ["", "-x", "_x", "a b", "a/b", &"x".repeat(65)] {
            assert!(validate_name(bad).is_err(), "{bad:?}");
        }
        let spec = NetworkSpec {
            name: DEFAULT_NETWORK.into(),
            ..Default::default()
        };
        let e = spec.validate().unwrap_err().to_string();
        assert!(e.contains("built-in"), "{e}");
    }

    #[test]
    fn attachments_are_bounded_unique_and_aliases_are_dns_names() {
        let a = |id: &str, aliases: &[&str]| NetworkAttachment {
            network: NetworkId(id.into()),
            aliases: aliases.iter().map(|s| s.to_string()).collect(),
        };
        validate_attachments(&[a("n1", &["db", "pg.main"]), a("n2", &[])]).unwrap();
        let e = validate_attachments(&[a("n1", &[]), a("n1", &[])]).unwrap_err();
        assert!(e.to_string().contains("named twice"), "{e}");
        let e = validate_attachments(&[a("n1", &["bad name"])]).unwrap_err();
        assert!(e.to_string().contains("alias"), "{e}");
        let many: Vec<NetworkAttachment> = (0..=MAX_ATTACHMENTS)
            .map(|i| a(&format!("n{i}"), &[]))
            .collect();
        assert!(validate_attachments(&many).is_err());
    }
}
