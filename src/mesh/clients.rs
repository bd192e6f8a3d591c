//! Who may use a VIP or the cluster DNS: this node's own containers, each on its
//! networks.
//!
//! A connection to a VIP, or a DNS query, comes from a source address. The mesh answers
//! it only when that address is one of this node's containers, and then only for
//! services sharing a network with it:
//!
//! - a task's container addresses, as the agent reports them as soon as the container
//!   has started ([`Clients::set_task`]) and as the endpoint table lists them for the
//!   tasks of this node: the address stands for the task, with every network it is on;
//! - failing that (a container that started a moment ago, before the agent read its
//!   addresses), the subnet of one of this node's orc bridges ([`Clients::set_bridge`]):
//!   the address is on that bridge's network;
//! - any other address (another machine routing the VIP range through this node, a
//!   process of the node itself, a container orc did not start) is nobody's: refused.
//!
//! A task whose service names its own name servers (`dns`) has them recorded beside it
//! ([`Clients::set_task_dns`]): the cluster DNS forwards that container's outside names
//! to them instead of the node's ([`Clients::dns_of`]). Until the agent has read the
//! container's addresses (the first moments after it starts), its queries go to the
//! node's servers.
//!
//! Bounded: one entry per local task and per local network, both driven by this node's
//! own agent, never by a peer.

use std::collections::{BTreeSet, HashMap};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::RwLock;

use crate::store::NetworkId;

/// An IPv4 subnet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Subnet {
    /// The network address.
    pub base: Ipv4Addr,
    /// The prefix length (0-32).
    pub prefix: u8,
}

impl Subnet {
    /// Reads `A.B.C.D/N`.
    pub fn parse(s: &str) -> Option<Subnet> {
        let (ip, prefix) = s.split_once('/')?;
        let prefix: u8 = prefix.parse().ok().filter(|p| *p <= 32)?;
        Some(Subnet {
            base: ip.parse().ok()?,
            prefix,
        })
    }

    /// Whether `ip` is inside.
    pub fn contains(&self, ip: Ipv4Addr) -> bool {
        let mask = if self.prefix == 0 {
            0
        } else {
            u32::MAX << (32 - u32::from(self.prefix))
        };
        u32::from(ip) & mask == u32::from(self.base) & mask
    }
}

#[derive(Debug, Default)]
struct Inner {
    /// Reported by the agent: task → (its networks, its addresses).
    tasks: HashMap<String, (Vec<NetworkId>, Vec<Ipv4Addr>)>,
    /// From the endpoint table: address → the networks of its task.
    table: HashMap<Ipv4Addr, Vec<NetworkId>>,
    /// This node's orc bridges: network → subnet.
    bridges: HashMap<NetworkId, Subnet>,
    /// Reported by the agent: task → the name servers its service names (`dns`).
    dns: HashMap<String, Vec<SocketAddr>>,
}

/// This node's containers and the networks each is on; see the module doc.
#[derive(Debug, Default)]
pub struct Clients {
    inner: RwLock<Inner>,
}

impl Clients {
    /// Records a local task's networks and container addresses (replacing what it had).
    pub fn set_task(&self, task: &str, networks: Vec<NetworkId>, addrs: Vec<Ipv4Addr>) {
        let mut i = self.inner.write().unwrap_or_else(|e| e.into_inner());
        i.tasks.insert(task.to_string(), (networks, addrs));
    }

    /// Forgets a local task (its container is gone).
    pub fn forget_task(&self, task: &str) {
        let mut i = self.inner.write().unwrap_or_else(|e| e.into_inner());
        i.tasks.remove(task);
        i.dns.remove(task);
    }

    /// Records the name servers of a local task's service (none: the node's).
    pub fn set_task_dns(&self, task: &str, servers: Vec<SocketAddr>) {
        let mut i = self.inner.write().unwrap_or_else(|e| e.into_inner());
        if servers.is_empty() {
            i.dns.remove(task);
        } else {
            i.dns.insert(task.to_string(), servers);
        }
    }

    /// The name servers for outside names of the container at `ip`: its service's
    /// (`dns`), or `None` for the node's.
    pub fn dns_of(&self, ip: IpAddr) -> Option<Vec<SocketAddr>> {
        let IpAddr::V4(ip) = ip else {
            return None;
        };
        let i = self.inner.read().unwrap_or_else(|e| e.into_inner());
        i.tasks
            .iter()
            .filter(|(_, (_, addrs))| addrs.contains(&ip))
            .find_map(|(task, _)| i.dns.get(task).cloned())
    }

    /// Keeps only the tasks in `live` (the agent's containers now).
    pub fn retain_tasks(&self, live: &BTreeSet<String>) {
        let mut i = self.inner.write().unwrap_or_else(|e| e.into_inner());
        i.tasks.retain(|t, _| live.contains(t));
        i.dns.retain(|t, _| live.contains(t));
    }

    /// Replaces what the endpoint table says of this node's tasks: address → networks.
    pub fn set_table(&self, table: HashMap<Ipv4Addr, Vec<NetworkId>>) {
        let mut i = self.inner.write().unwrap_or_else(|e| e.into_inner());
        i.table = table;
    }

    /// Records the subnet of this node's bridge for `network`.
    pub fn set_bridge(&self, network: NetworkId, subnet: Subnet) {
        let mut i = self.inner.write().unwrap_or_else(|e| e.into_inner());
        i.bridges.insert(network, subnet);
    }

    /// Forgets this node's bridge for `network`.
    pub fn forget_bridge(&self, network: &NetworkId) {
        let mut i = self.inner.write().unwrap_or_else(|e| e.into_inner());
        i.bridges.remove(network);
    }

    /// The networks of the container at `ip` (sorted, without repeats); `None` when the
    /// address is none of this node's containers.
    pub fn networks_of(&self, ip: IpAddr) -> Option<Vec<NetworkId>> {
        let IpAddr::V4(ip) = ip else {
            return None;
        };
        let i = self.inner.read().unwrap_or_else(|e| e.into_inner());
        let mut nets: Vec<NetworkId> = i
            .tasks
            .values()
            .filter(|(_, addrs)| addrs.contains(&ip))
            .flat_map(|(nets, _)| nets.iter().cloned())
            .collect();
        if nets.is_empty() {
            nets = i.table.get(&ip).cloned().unwrap_or_default();
        }
        if nets.is_empty() {
            nets = i
                .bridges
                .iter()
                .filter(|(_, s)| s.contains(ip))
                .map(|(n, _)| n.clone())
                .collect();
        }
        nets.sort();
        nets.dedup();
        (!nets.is_empty()).then_some(nets)
    }

    /// Whether the container at `ip` is on one of `allowed`.
    pub fn may_reach(&self, ip: IpAddr, allowed: &[NetworkId]) -> bool {
        self.networks_of(ip)
            .is_some_and(|nets| nets.iter().any(|n| allowed.contains(n)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn net(s: &str) -> NetworkId {
        NetworkId(s.into())
    }

    #[test]
    fn a_task_address_stands_for_all_its_networks_a_bridge_for_its_own_and_others_for_none() {
        let c = Clients::default();
        let front = Subnet::parse("172.20.0.0/16").unwrap();
        let back = Subnet::parse("172.21.0.0/16").unwrap();
        c.set_bridge(net("front"), front);
        c.set_bridge(net("back"), back);
        c.set_task(
            "worker",
            vec![net("front"), net("back")],
            vec!["172.20.0.5".parse().unwrap(), "172.21.0.5".parse().unwrap()],
        );
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        assert_eq!(
            c.networks_of(ip("172.20.0.5")),
            Some(vec![net("back"), net("front")])
        );
        // Not yet reported: its bridge's network only.
        assert_eq!(c.networks_of(ip("172.20.0.9")), Some(vec![net("front")]));
        assert!(c.may_reach(ip("172.20.0.9"), &[net("front")]));
        assert!(!c.may_reach(ip("172.20.0.9"), &[net("back")]));
        // Nobody's: another machine, the node itself, an IPv6 address.
        for other in ["10.0.0.7", "127.0.0.1", "::1"] {
            assert_eq!(c.networks_of(ip(other)), None, "{other}");
            assert!(!c.may_reach(ip(other), &[net("front"), net("back")]));
        }
        // The endpoint table's word counts when the agent has said nothing.
        c.set_table(HashMap::from([(
            "172.21.0.8".parse().unwrap(),
            vec![net("back"), net("front")],
        )]));
        assert_eq!(
            c.networks_of(ip("172.21.0.8")),
            Some(vec![net("back"), net("front")])
        );
        c.forget_task("worker");
        assert_eq!(c.networks_of(ip("172.20.0.5")), Some(vec![net("front")]));
        c.forget_bridge(&net("front"));
        assert_eq!(c.networks_of(ip("172.20.0.5")), None);
    }

    #[test]
    fn subnets_contain_what_their_prefix_says() {
        let s = Subnet::parse("10.1.2.0/24").unwrap();
        assert!(s.contains("10.1.2.255".parse().unwrap()));
        assert!(!s.contains("10.1.3.0".parse().unwrap()));
        assert!(Subnet::parse("0.0.0.0/0")
            .unwrap()
            .contains("1.2.3.4".parse().unwrap()));
        assert!(Subnet::parse("10.0.0.0/33").is_none());
        assert!(Subnet::parse("10.0.0.0").is_none());
    }
}
