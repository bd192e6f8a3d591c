//! Networks of a compose file: the top-level `networks:` and each service's
//! `networks:` (a list of names, or a map of names to `aliases`).
//!
//! A network declared as `front` is created as `STACK_front` with the stack label,
//! unless it is `external: true` (it must exist at deploy; named by `name:` or its key)
//! or has a `name:`. A service names only declared networks (and `default`, always
//! declared, as in Docker); a service that names none is on `default`, which is the
//! stack's `STACK_default`, made when some service is on it.

use std::collections::BTreeMap;

use super::fields::*;
use super::keys::unknown_key;
use crate::error::Result;
use crate::stack::yaml::{Node, Pos, Value};
use crate::stack::{Loader, StackNetwork};
use crate::store::network::{validate_alias, validate_name, NetworkDriver, MAX_ALIASES};
use crate::store::service::STACK_LABEL;
use crate::store::{NetworkAttachment, NetworkId, NetworkSpec};

/// The most networks one stack file may declare.
pub const MAX_STACK_NETWORKS: usize = 128;

/// The key of the network a service without `networks:` is on.
pub(super) const DEFAULT_KEY: &str = "default";

const NETWORK_KEYS: &[&str] = &[
    "driver",
    "driver_opts",
    "external",
    "name",
    "internal",
    "attachable",
    "labels",
    "ipam",
    "enable_ipv6",
];

const ATTACHMENT_KEYS: &[&str] = &[
    "aliases",
    "ipv4_address",
    "ipv6_address",
    "link_local_ips",
    "mac_address",
    "priority",
    "gw_priority",
    "driver_opts",
    "interface_name",
];

/// A declared network, by its key in the file.
pub(super) struct Declared {
    pub(super) network: StackNetwork,
    pub(super) pos: Pos,
}

impl Loader<'_> {
    /// The top-level `networks:`, by key.
    pub(super) fn networks(&mut self, n: &Node) -> Result<BTreeMap<String, Declared>> {
        let list = entries(n, "networks")?;
        if list.len() > MAX_STACK_NETWORKS {
            return Err(err(
                &n.pos,
                "networks",
                format!(
                    "{} networks declared; a stack has at most {MAX_STACK_NETWORKS}",
                    list.len()
                ),
            ));
        }
        let mut out = BTreeMap::new();
        for (k, v) in list {
            let path = format!("networks.{}", k.name);
            let d = self.network(&k.name, v, &path)?;
            out.insert(
                k.name.clone(),
                Declared {
                    network: d,
                    pos: k.pos.clone(),
                },
            );
        }
        Ok(out)
    }

    /// One top-level network.
    fn network(&mut self, key: &str, n: &Node, path: &str) -> Result<StackNetwork> {
        let mut spec = NetworkSpec::default();
        let mut external = false;
        let mut name = None;
        for (fk, fv) in entries(n, path)? {
            let p = format!("{path}.{}", fk.name);
            match fk.name.as_str() {
                "driver" => {
                    spec.driver = word(fv, &p)?;
                    if spec.driver == NetworkDriver::Bridge {
                        self.warn(
                            &fv.pos,
                            &p,
                            "bridge: on orc the network spans the cluster, as overlay does",
                        );
                    }
                }
                "external" => match &fv.value {
                    // The old form `external: {name: NAME}`.
                    Value::Map(m) => {
                        external = true;
                        for (ek, ev) in m {
                            let ep = format!("{p}.{}", ek.name);
                            match ek.name.as_str() {
                                "name" => name = Some((string(ev, &ep)?, ev.pos.clone(), ep)),
                                _ => return Err(unknown_key(ek, &p, &["name"])),
                            }
                        }
                    }
                    _ => external = boolean(fv, &p)?,
                },
                "name" => name = Some((string(fv, &p)?, fv.pos.clone(), p.clone())),
                "internal" => spec.internal = boolean(fv, &p)?,
                "attachable" => spec.attachable = boolean(fv, &p)?,
                "driver_opts" => {
                    for (ok, _) in kv_map(fv, &p)? {
                        if ok == "encrypted" {
                            // Docker's key: present, with any value, means encrypted.
                            spec.encrypted = true;
                        } else {
                            self.warn(
                                &fv.pos,
                                &format!("{p}.{ok}"),
                                "not supported by orc (it knows encrypted), ignored",
                            );
                        }
                    }
                }
                "labels" => {
                    for (lk, lv) in kv_map(fv, &p)? {
                        spec.labels.insert(lk, lv.unwrap_or_default());
                    }
                }
                "ipam" | "enable_ipv6" => self.warn(
                    &fk.pos,
                    &p,
                    "not supported by orc (it chooses the addresses), ignored",
                ),
                x if x.starts_with("x-") => {}
                _ => return Err(unknown_key(fk, path, NETWORK_KEYS)),
            }
        }
        let (name, pos, p) = match name {
            Some(named) => named,
            None if external => (key.to_string(), n.pos.clone(), path.to_string()),
            None => (
                format!("{}_{key}", self.name),
                n.pos.clone(),
                path.to_string(),
            ),
        };
        validate_name(&name).map_err(|_| {
            err(
                &pos,
                &p,
                format!("{name:?} is not a network name (letters, digits, '_', '-' or '.', starting with a letter or digit, at most 64)"),
            )
        })?;
        spec.name = name;
        if external {
            spec.labels.clear();
        } else {
            spec.labels
                .insert(STACK_LABEL.into(), self.name.to_string());
            spec.validate()
                .map_err(|e| err(&n.pos, path, e.to_string()))?;
        }
        Ok(StackNetwork { spec, external })
    }

    /// A service's `networks:`: a list of keys, or a map of keys to `aliases` (and
    /// null). Each names a declared network (or `default`); the attachment holds the
    /// key until the stack's networks are named.
    pub(super) fn service_networks(
        &mut self,
        n: &Node,
        path: &str,
    ) -> Result<Vec<(NetworkAttachment, Pos)>> {
        let mut out: Vec<(NetworkAttachment, Pos)> = vec![];
        let mut push = |key: &str, aliases: Vec<String>, pos: &Pos, p: &str| {
            if out.iter().any(|(a, _)| a.network.0 == key) {
                return Err(err(pos, p, format!("network {key} is named twice")));
            }
            out.push((
                NetworkAttachment {
                    network: NetworkId(key.to_string()),
                    aliases,
                },
                pos.clone(),
            ));
            Ok(())
        };
        match &n.value {
            Value::Seq(items) => {
                for (i, it) in items.iter().enumerate() {
                    let p = format!("{path}[{i}]");
                    let key = string(it, &p)?;
                    push(&key, vec![], &it.pos, &p)?;
                }
            }
            Value::Map(m) => {
                for (k, v) in m {
                    let p = format!("{path}.{}", k.name);
                    let mut aliases: Vec<String> = vec![];
                    for (ak, av) in entries(v, &p)? {
                        let ap = format!("{p}.{}", ak.name);
                        match ak.name.as_str() {
                            "aliases" => {
                                for a in strings(av, &ap)? {
                                    validate_alias(&a).map_err(|_| {
                                        err(&av.pos, &ap, format!("{a:?} is not a DNS name"))
                                    })?;
                                    if !aliases.contains(&a) {
                                        aliases.push(a);
                                    }
                                }
                                if aliases.len() > MAX_ALIASES {
                                    return Err(err(
                                        &av.pos,
                                        &ap,
                                        format!("at most {MAX_ALIASES} aliases"),
                                    ));
                                }
                            }
                            "ipv4_address" | "ipv6_address" | "link_local_ips" | "mac_address"
                            | "priority" | "gw_priority" | "driver_opts" | "interface_name" => self
                                .warn(
                                    &ak.pos,
                                    &ap,
                                    "not supported by orc (it chooses the addresses), ignored",
                                ),
                            x if x.starts_with("x-") => {}
                            _ => return Err(unknown_key(ak, &p, ATTACHMENT_KEYS)),
                        }
                    }
                    push(&k.name, aliases, &k.pos, &p)?;
                }
            }
            Value::Null => {}
            _ => return Err(expected(n, path, "a list or a mapping of networks")),
        }
        Ok(out)
    }
}
