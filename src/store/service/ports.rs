//! Published and exposed ports: protocol, publish mode, PROXY protocol, endpoint mode,
//! and the one cluster-wide port conflict check ([`ingress_port_conflict`]).

use super::*;

/// Transport protocol of a port.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    /// TCP.
    #[default]
    Tcp,
    /// UDP.
    Udp,
}

impl Protocol {
    /// `tcp` or `udp`.
    pub fn as_str(&self) -> &'static str {
        match self {
            Protocol::Tcp => "tcp",
            Protocol::Udp => "udp",
        }
    }
}

impl Words for Protocol {
    const EXPECTED: &'static str = "tcp or udp";
}

impl std::str::FromStr for Protocol {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "tcp" => Ok(Protocol::Tcp),
            "udp" => Ok(Protocol::Udp),
            _ => Err(Self::unknown(s)),
        }
    }
}

impl fmt::Display for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How a port is published.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum PublishMode {
    /// On every node, through the routing mesh.
    #[default]
    Ingress,
    /// On the task's own node only.
    Host,
}

impl PublishMode {
    /// `ingress` or `host`.
    pub fn as_str(&self) -> &'static str {
        match self {
            PublishMode::Ingress => "ingress",
            PublishMode::Host => "host",
        }
    }
}

impl Words for PublishMode {
    const EXPECTED: &'static str = "ingress or host";
}

impl std::str::FromStr for PublishMode {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "ingress" => Ok(PublishMode::Ingress),
            "host" => Ok(PublishMode::Host),
            _ => Err(Self::unknown(s)),
        }
    }
}

impl fmt::Display for PublishMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Whether the mesh tells the backend who the client is (HAProxy's PROXY protocol).
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum ProxyProtocol {
    /// Nothing is added: the backend sees the mesh's address.
    #[default]
    None,
    /// A text header (`PROXY TCP4 …\r\n`) before the client's bytes.
    V1,
    /// The binary header.
    V2,
}

impl ProxyProtocol {
    /// `none`, `v1` or `v2`.
    pub fn as_str(&self) -> &'static str {
        match self {
            ProxyProtocol::None => "none",
            ProxyProtocol::V1 => "v1",
            ProxyProtocol::V2 => "v2",
        }
    }
}

impl Words for ProxyProtocol {
    const EXPECTED: &'static str = "v1, v2 or none";
}

impl std::str::FromStr for ProxyProtocol {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "none" => Ok(ProxyProtocol::None),
            "v1" | "1" => Ok(ProxyProtocol::V1),
            "v2" | "2" => Ok(ProxyProtocol::V2),
            _ => Err(Self::unknown(s)),
        }
    }
}

impl fmt::Display for ProxyProtocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The label that names a service's stack (as `docker stack deploy` sets it).
pub const STACK_LABEL: &str = "com.docker.stack.namespace";

/// A published port.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct PortConfig {
    /// tcp or udp.
    pub protocol: Protocol,
    /// The container's port.
    pub target: u16,
    /// The port on the nodes (0 = none: the mesh or an ephemeral port).
    pub published: u16,
    /// ingress or host.
    pub mode: PublishMode,
    /// PROXY protocol header sent to the backend (ingress TCP ports only).
    #[serde(default)]
    pub proxy_protocol: ProxyProtocol,
}

impl PortConfig {
    /// Published on every node through the routing mesh: a published port in ingress
    /// mode. Such a port is cluster-wide: one service at a time holds it.
    pub fn is_ingress(&self) -> bool {
        self.published != 0 && self.mode == PublishMode::Ingress
    }

    /// Published on the task's own node at a fixed port: a published port in host mode.
    /// Such a port is node-wide: one task per node holds it (the scheduler's filter).
    pub fn is_host_published(&self) -> bool {
        self.published != 0 && self.mode == PublishMode::Host
    }
}

/// An ingress port a spec asks for that another service already publishes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PortConflict<'a> {
    /// The port asked for.
    pub port: &'a PortConfig,
    /// The service that holds it.
    pub holder: &'a Service,
}

/// The cluster-wide port rule, in one place: the first ingress port of `spec` (in the
/// spec's order) that one of `others` already publishes in ingress mode, with the first
/// such service. Host-mode ports never conflict here: they are node-wide, and the
/// scheduler places their tasks apart.
pub fn ingress_port_conflict<'a>(
    spec: &'a ServiceSpec,
    others: &[&'a Service],
) -> Option<PortConflict<'a>> {
    spec.ports.iter().filter(|p| p.is_ingress()).find_map(|p| {
        others
            .iter()
            .find(|o| {
                o.spec.ports.iter().any(|q| {
                    q.is_ingress() && q.published == p.published && q.protocol == p.protocol
                })
            })
            .map(|holder| PortConflict { port: p, holder })
    })
}

/// How a service's name resolves inside the cluster.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EndpointMode {
    /// The name resolves to the service's VIP, balanced by the mesh.
    #[default]
    Vip,
    /// The name resolves to the VIPs of its tasks (DNS round robin).
    Dnsrr,
}

impl EndpointMode {
    /// `vip` or `dnsrr`.
    pub fn as_str(&self) -> &'static str {
        match self {
            EndpointMode::Vip => "vip",
            EndpointMode::Dnsrr => "dnsrr",
        }
    }
}

impl Words for EndpointMode {
    const EXPECTED: &'static str = "vip or dnsrr";
}

impl std::str::FromStr for EndpointMode {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "vip" => Ok(EndpointMode::Vip),
            "dnsrr" => Ok(EndpointMode::Dnsrr),
            _ => Err(Self::unknown(s)),
        }
    }
}

impl fmt::Display for EndpointMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}
