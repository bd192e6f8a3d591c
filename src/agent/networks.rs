//! Each orc network a task of this node is on is one Docker bridge network of its own
//! on the node, so that Docker's isolation between bridges keeps containers of
//! different networks from reaching each other's addresses.
//!
//! | orc | Docker |
//! |---|---|
//! | network `ID` | bridge network `orc_ID` ([`docker_network_name`]), labels `orc.network.id`, `orc.network.name` |
//! | its bridge device | `orc-default` or `orc` + 12 digits of the id ([`bridge_name`]) |
//! | `internal` | IP masquerading off, and no forwarding out of the bridge (below) |
//!
//! Docker chooses each bridge's subnet from its address pools; a subnet means nothing
//! beyond its node (other nodes reach a task through this node's mesh).
//!
//! # Isolation rules
//!
//! Docker's bridge networks still let a machine on the node's link that routes a
//! container subnet through the node reach the containers' ports. orc adds a chain of
//! its own, `ORC-ISOLATION`, jumped to from Docker's `DOCKER-USER` chain (which Docker
//! keeps first in `FORWARD`), with, for each bridge `B`:
//!
//! - `-o B -m conntrack --ctstate DNAT -j RETURN`: a `mode: host` port Docker published
//!   stays reachable;
//! - `-o B ! -i B -m conntrack ! --ctstate RELATED,ESTABLISHED -j DROP`: nothing else
//!   from outside the bridge opens a connection to its containers (the node's own mesh
//!   reaches them without forwarding, from the node itself);
//! - internal networks also `-i B ! -o B -j DROP`: nothing leaves the bridge but to the
//!   node itself (the mesh and the cluster DNS answer there).
//!
//! The rules are added once per bridge (checked with `-C` first); a node without
//! iptables, or whose engine runs without its iptables rules, logs a warning and runs
//! without them.
//!
//! # Removal
//!
//! A bridge this node made goes, with its rules, once no task of the node is on its
//! network ([`Bridges::prune`], after each task's end): Docker's default address pools
//! hold about 30 bridge subnets, so a node that kept every network it ever served
//! would, after enough stack deploys and removals, fail to make any new one. The
//! built-in network stays.

use std::collections::HashMap;
use std::sync::Mutex;

use bollard::models as dm;
use bollard::Docker;

use super::executor::AssignedNetwork;
pub use super::executor::{bridge_name, docker_network_name, network_of_docker_name};
use crate::error::{Error, Result};
use crate::mesh::iptables;
use crate::store::NetworkId;

/// The chain orc's isolation rules live in.
pub const CHAIN: &str = "ORC-ISOLATION";

/// Label of an orc bridge network: the orc network's id.
pub const LABEL_NETWORK_ID: &str = "orc.network.id";
/// Label of an orc bridge network: the orc network's name.
pub const LABEL_NETWORK_NAME: &str = "orc.network.name";

/// The bridges this node has made, and their subnets (what Docker said once).
#[derive(Debug, Default)]
pub struct Bridges {
    known: Mutex<HashMap<NetworkId, String>>,
    /// One creation at a time: two tasks of one new network would otherwise both
    /// create it (Docker allows two networks of one name; the second fails on the
    /// bridge device's name).
    turn: tokio::sync::Mutex<()>,
}

impl Bridges {
    /// Makes sure the bridge of each network exists with its isolation rules; returns
    /// each network's subnet (`A.B.C.D/N`; empty if Docker named none).
    pub async fn ensure(
        &self,
        docker: &Docker,
        nets: &[AssignedNetwork],
    ) -> Result<Vec<(NetworkId, String)>> {
        if let Some(out) = self.present(docker, nets).await {
            return Ok(out);
        }
        let _turn = self.turn.lock().await;
        let mut out = vec![];
        for n in nets {
            let known = self.knows(&n.id);
            // Asked of the engine every time: another daemon on the same engine (tests
            // run several) may have removed a bridge this one knew.
            let subnet = ensure_one(docker, n).await?;
            if !known {
                if let Err(e) = isolate(&bridge_name(&n.id), n.internal) {
                    tracing::warn!(network = %n.name, "agent: isolation rules not added: {e}");
                }
                self.known
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .insert(n.id.clone(), subnet.clone());
            }
            out.push((n.id.clone(), subnet));
        }
        Ok(out)
    }

    /// Whether this node made (or found) the bridge of network `id`.
    fn knows(&self, id: &NetworkId) -> bool {
        self.known
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .contains_key(id)
    }

    /// Each network's subnet when every one is known here and the engine still has
    /// its bridge: asked without the turn, so that the tasks starting at once do not
    /// ask one after another.
    async fn present(
        &self,
        docker: &Docker,
        nets: &[AssignedNetwork],
    ) -> Option<Vec<(NetworkId, String)>> {
        let mut out = vec![];
        for n in nets {
            if !self.knows(&n.id) {
                return None;
            }
            let found = docker
                .inspect_network(&docker_network_name(&n.id), None)
                .await
                .ok()?;
            out.push((n.id.clone(), subnet_of(&found)));
        }
        Some(out)
    }

    /// Removes the bridge (and its isolation rules) of each network this node made
    /// that is not in `keep`, but the built-in one. The caller holds the runner's
    /// workers lock, so no task can be given a network between its `keep` and this
    /// removal; a task already on its way holds [`Bridges::ensure`]'s turn. A bridge
    /// the engine will not remove yet (a container is still on it) stays known, for
    /// the prune after that container's task ends.
    pub async fn prune(&self, docker: &Docker, keep: &std::collections::BTreeSet<NetworkId>) {
        let gone: Vec<NetworkId> = {
            let known = self.known.lock().unwrap_or_else(|e| e.into_inner());
            unneeded(known.keys(), keep)
        };
        if gone.is_empty() {
            return;
        }
        let _turn = self.turn.lock().await;
        for id in gone {
            let name = docker_network_name(&id);
            match docker.remove_network(&name).await {
                Ok(()) => tracing::info!(network = %name, "agent: removed a bridge no task uses"),
                Err(bollard::errors::Error::DockerResponseServerError {
                    status_code: 404, ..
                }) => {}
                Err(e) => {
                    // A container still on it (a task being stopped, or another
                    // daemon's on the same engine): the next prune tries again.
                    tracing::debug!(network = %name, "agent: bridge kept: {e}");
                    continue;
                }
            }
            unisolate(&bridge_name(&id));
            self.known
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .remove(&id);
        }
    }
}

/// The networks of `known` a prune removes: those not in `keep`, but the built-in one.
fn unneeded<'a>(
    known: impl Iterator<Item = &'a NetworkId>,
    keep: &std::collections::BTreeSet<NetworkId>,
) -> Vec<NetworkId> {
    known
        .filter(|id| !keep.contains(*id) && **id != NetworkId::default_network())
        .cloned()
        .collect()
}

/// Deletes bridge `br`'s isolation rules (those of an internal network too; a rule
/// that is not there is fine).
fn unisolate(br: &str) {
    for rule in rules(br, true) {
        let words: Vec<&str> = std::iter::once("-D")
            .chain(rule.iter().map(String::as_str))
            .collect();
        let _ = iptables::run(&words);
    }
}

/// Docker's create request for network `n`'s bridge.
pub fn create_request(n: &AssignedNetwork) -> dm::NetworkCreateRequest {
    let mut options = HashMap::from([(
        "com.docker.network.bridge.name".to_string(),
        bridge_name(&n.id),
    )]);
    if n.internal {
        options.insert(
            "com.docker.network.bridge.enable_ip_masquerade".into(),
            "false".into(),
        );
    }
    dm::NetworkCreateRequest {
        name: docker_network_name(&n.id),
        driver: Some("bridge".into()),
        labels: Some(HashMap::from([
            (LABEL_NETWORK_ID.to_string(), n.id.0.clone()),
            (LABEL_NETWORK_NAME.to_string(), n.name.clone()),
        ])),
        options: Some(options),
        ..Default::default()
    }
}

async fn ensure_one(docker: &Docker, n: &AssignedNetwork) -> Result<String> {
    let name = docker_network_name(&n.id);
    if let Ok(found) = docker.inspect_network(&name, None).await {
        return Ok(subnet_of(&found));
    }
    match docker.create_network(create_request(n)).await {
        Ok(_) => {}
        // Made by another task of this node in between: fine.
        Err(bollard::errors::Error::DockerResponseServerError {
            status_code: 409, ..
        }) => {}
        Err(e) => {
            // Made in between by someone else (another daemon on this engine): use it.
            if let Ok(found) = docker.inspect_network(&name, None).await {
                return Ok(subnet_of(&found));
            }
            return Err(Error::Internal(format!(
                "creating the bridge of network {}: {e}",
                n.name
            )));
        }
    }
    let found = docker.inspect_network(&name, None).await.map_err(|e| {
        Error::Internal(format!("inspecting the bridge of network {}: {e}", n.name))
    })?;
    Ok(subnet_of(&found))
}

fn subnet_of(n: &dm::NetworkInspect) -> String {
    n.ipam
        .as_ref()
        .and_then(|i| i.config.as_ref())
        .and_then(|c| {
            c.iter()
                .filter_map(|c| c.subnet.clone())
                .find(|s| !s.contains(':'))
        })
        .unwrap_or_default()
}

/// The iptables rules of bridge `br` (see the module doc), as argument lists for
/// `iptables -w -A` (and `-C` to check).
pub fn rules(br: &str, internal: bool) -> Vec<Vec<String>> {
    let words = |s: &str| -> Vec<String> {
        std::iter::once(CHAIN.to_string())
            .chain(s.split(' ').map(|w| w.replace("{br}", br)))
            .collect()
    };
    let mut out = vec![
        words("-o {br} -m conntrack --ctstate DNAT -j RETURN"),
        words("-o {br} ! -i {br} -m conntrack ! --ctstate RELATED,ESTABLISHED -j DROP"),
    ];
    if internal {
        out.push(words("-i {br} ! -o {br} -j DROP"));
    }
    out
}

/// Adds bridge `br`'s rules, and the chain and its jump, where missing.
pub fn isolate(br: &str, internal: bool) -> std::io::Result<()> {
    if !iptables::run(&["-n", "-L", CHAIN])? && !iptables::run(&["-N", CHAIN])? {
        return Err(std::io::Error::other(format!(
            "cannot create chain {CHAIN}"
        )));
    }
    if !iptables::run(&["-C", "DOCKER-USER", "-j", CHAIN])?
        && !iptables::run(&["-I", "DOCKER-USER", "-j", CHAIN])?
    {
        return Err(std::io::Error::other(
            "no DOCKER-USER chain (does the engine run with --iptables=false?)",
        ));
    }
    for rule in rules(br, internal) {
        iptables::ensure(&rule, iptables::At::End)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_fit_the_kernel_and_map_back() {
        let id = NetworkId("0123456789abcdef".into());
        assert_eq!(bridge_name(&id), "orc0123456789ab");
        assert!(bridge_name(&id).len() <= 15);
        // The mesh opens the VIP range to interfaces named `orc+` (mesh::vip_guard_rules).
        assert!(bridge_name(&id).starts_with("orc"));
        assert!(bridge_name(&NetworkId::default_network()).starts_with("orc"));
        assert_eq!(bridge_name(&NetworkId::default_network()), "orc-default");
        assert_eq!(docker_network_name(&id), "orc_0123456789abcdef");
        assert_eq!(
            network_of_docker_name("orc_0123456789abcdef"),
            Some(id.clone())
        );
        assert_eq!(network_of_docker_name("bridge"), None);
        assert_eq!(network_of_docker_name("orc_"), None);
    }

    #[test]
    fn a_prune_removes_unkept_networks_but_never_the_built_in_one() {
        let (a, b) = (NetworkId("aaaa".into()), NetworkId("bbbb".into()));
        let default = NetworkId::default_network();
        let known = [a.clone(), b.clone(), default.clone()];
        let keep = std::collections::BTreeSet::from([a.clone()]);
        assert_eq!(unneeded(known.iter(), &keep), vec![b.clone()]);
        let none = std::collections::BTreeSet::new();
        assert_eq!(unneeded(known.iter(), &none), vec![a, b]);
    }

    #[test]
    fn internal_bridges_get_no_masquerading_and_one_more_rule() {
        let n = AssignedNetwork {
            id: NetworkId("0123456789abcdef".into()),
            name: "backend".into(),
            internal: true,
            encrypted: false,
        };
        let req = create_request(&n);
        let opts = req.options.unwrap();
        assert_eq!(
            opts["com.docker.network.bridge.enable_ip_masquerade"],
            "false"
        );
        assert_eq!(opts["com.docker.network.bridge.name"], "orc0123456789ab");
        assert_eq!(req.labels.unwrap()[LABEL_NETWORK_NAME], "backend");
        let open = rules("orcx", false);
        let closed = rules("orcx", true);
        assert_eq!(open.len() + 1, closed.len());
        assert_eq!(
            closed.last().unwrap().join(" "),
            "ORC-ISOLATION -i orcx ! -o orcx -j DROP"
        );
        assert!(open[1].join(" ").contains("! -i orcx"));
    }
}
