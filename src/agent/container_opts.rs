//! A task's [`ContainerOptions`] and generic resources on Docker's create body.
//!
//! | orc | Docker |
//! |---|---|
//! | hostname | `Hostname` |
//! | cap_add, cap_drop | `HostConfig.CapAdd`, `HostConfig.CapDrop` (as `CAP_NAME` or `ALL`) |
//! | sysctls | `HostConfig.Sysctls` |
//! | ulimits | `HostConfig.Ulimits` |
//! | init | `HostConfig.Init` (only when true: false leaves the engine's default) |
//! | stop_signal | `StopSignal` |
//! | extra_hosts | `HostConfig.ExtraHosts` (`host:ip`) |
//! | tty, stdin_open | `Tty`, `OpenStdin` |
//! | read_only | `HostConfig.ReadonlyRootfs` |
//! | group_add | `HostConfig.GroupAdd` |
//! | dns, dns_search | with the cluster DNS (the usual case): the search domains follow the cluster's in orc's resolver file, and the servers are where the cluster DNS forwards this container's outside names ([`crate::mesh::clients`]); without it, `HostConfig.Dns` and `HostConfig.DnsSearch` |
//! | resources.generic_resources | `Env`: `DOCKER_RESOURCE_<KIND>=<N>`, as Swarm sets it |

use bollard::models as dm;

use crate::store::service::{generic_resource_env, normalize_capability, ContainerOptions};
use crate::store::Task;

fn nonempty(v: Vec<String>) -> Option<Vec<String>> {
    (!v.is_empty()).then_some(v)
}

/// Sets `task`'s container options and generic resources on `body`. `cluster_dns`: the
/// container's resolver is orc's cluster DNS (its resolver file is mounted), which then
/// carries `dns` and `dns_search` itself.
pub fn apply(task: &Task, cluster_dns: bool, body: &mut dm::ContainerCreateBody) {
    let o: &ContainerOptions = &task.spec.container.options;
    let caps = |list: &[String]| {
        nonempty(
            list.iter()
                .map(|c| normalize_capability(c).unwrap_or_else(|| c.clone()))
                .collect(),
        )
    };
    if !o.hostname.is_empty() {
        body.hostname = Some(o.hostname.clone());
    }
    if o.tty {
        body.tty = Some(true);
    }
    if o.stdin_open {
        body.open_stdin = Some(true);
    }
    if !o.stop_signal.is_empty() {
        body.stop_signal = Some(o.stop_signal.clone());
    }
    let env = generic_resource_env(&task.spec.resources.generic_resources);
    if !env.is_empty() {
        body.env.get_or_insert_with(Vec::new).extend(env);
    }
    let hc = body.host_config.get_or_insert_with(Default::default);
    hc.cap_add = caps(&o.cap_add);
    hc.cap_drop = caps(&o.cap_drop);
    if !o.sysctls.is_empty() {
        hc.sysctls = Some(o.sysctls.clone().into_iter().collect());
    }
    if !o.ulimits.is_empty() {
        hc.ulimits = Some(
            o.ulimits
                .iter()
                .map(|(name, u)| dm::ResourcesUlimits {
                    name: Some(name.clone()),
                    soft: Some(u.soft),
                    hard: Some(u.hard),
                })
                .collect(),
        );
    }
    if o.init {
        hc.init = Some(true);
    }
    hc.extra_hosts = nonempty(o.extra_hosts.clone());
    if o.read_only {
        hc.readonly_rootfs = Some(true);
    }
    hc.group_add = nonempty(o.group_add.clone());
    if !cluster_dns {
        if !o.dns.is_empty() {
            hc.dns = nonempty(o.dns.clone());
        }
        if !o.dns_search.is_empty() {
            hc.dns_search = nonempty(o.dns_search.clone());
        }
    }
}
