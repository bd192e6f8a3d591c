//! From a merged compose document to service specs.
//!
//! Every key is either honoured, named in a warning (a compose key orc does not
//! honour), or refused (not a compose key: most likely a typo). Every error names
//! the file, line and column, the path of the field, and what was expected.
//!
//! The loader is cut along the file's seams: [`fields`] reads typed values from YAML
//! nodes and words the errors, [`keys`] is the key-support table, [`service`] reads one
//! service, [`deploy`] its `deploy:` section, [`ports`] and [`volumes`] its ports and
//! mounts, [`networks`] the networks (top level and per service). This module reads the
//! top level and checks what spans services: names, `depends_on` and its cycles, ports
//! published twice in the stack, networks a service names but the file does not
//! declare.

mod deploy;
mod fields;
mod keys;
mod networks;
mod options;
mod ports;
mod secrets;
mod service;
mod volumes;

pub(crate) use fields::err;
pub(crate) use secrets::Gathered;

use std::collections::{BTreeMap, BTreeSet};

use crate::error::{Error, Result};
use crate::stack::yaml::{Node, Pos};
use crate::stack::Loader;
use crate::stack::StackNetwork;
use crate::store::service::{DependCondition, Dependency, Protocol, ServiceSpec};
use crate::store::{NetworkAttachment, NetworkId};
use fields::*;
use keys::*;
use volumes::VolumeDef;

/// What one service of the file gives, before names are resolved.
pub(super) struct Draft {
    pub(super) short: String,
    pub(super) spec: ServiceSpec,
    pub(super) depends: Vec<(String, DependCondition, Pos)>,
    /// Published ingress ports and where each was written.
    pub(super) published: Vec<(u16, Protocol, Pos, String)>,
    /// `networks:` by their keys in the file, and where each was named.
    pub(super) networks: Vec<(NetworkAttachment, Pos)>,
}

/// The top level of a file: the `services:` node, the declared volumes and networks.
type TopLevel<'n> = (
    &'n Node,
    BTreeMap<String, VolumeDef>,
    BTreeMap<String, networks::Declared>,
);

impl Loader<'_> {
    /// The stack from a merged document: its services and the networks they are on.
    pub(super) fn convert(&mut self, doc: &Node) -> Result<(Vec<ServiceSpec>, Vec<StackNetwork>)> {
        let (services_node, volumes, declared) = self.top_level(doc)?;
        let svc_entries = entries(services_node, "services")?;
        if svc_entries.is_empty() {
            return Err(err(&services_node.pos, "services", "no service is defined"));
        }
        let names: BTreeSet<String> = svc_entries.iter().map(|(k, _)| k.name.clone()).collect();
        let mut drafts = vec![];
        for (k, v) in svc_entries {
            let path = format!("services.{}", k.name);
            if !valid_short_name(&k.name) {
                return Err(err(
                    &k.pos,
                    &path,
                    "a service name has letters, digits, '-', '_' or '.', starting with a letter or digit",
                ));
            }
            drafts.push(self.service(&k.name, v, &path, &volumes)?);
        }
        check_depends_on(&drafts, &names)?;
        check_published_once(&drafts)?;
        let nets = self.stack_networks(&mut drafts, declared)?;
        self.secrets.out = self.stack_secrets(&mut drafts)?;
        let stack = self.name.to_string();
        let mut specs = vec![];
        for d in drafts {
            let mut spec = d.spec;
            spec.depends_on = d
                .depends
                .into_iter()
                .map(|(dep, condition, _)| Dependency {
                    service: format!("{stack}_{dep}"),
                    condition,
                })
                .collect();
            spec.depends_on.sort();
            spec.validate()
                .map_err(|e| Error::InvalidInput(format!("services.{}: {e}", d.short)))?;
            specs.push(spec);
        }
        Ok((specs, nets))
    }

    /// The networks the services are on, named as they will be made, and each draft's
    /// attachments by those names; a service without `networks:` is on `default`. Refuses
    /// a network a service names that the file does not declare (as Docker does).
    fn stack_networks(
        &mut self,
        drafts: &mut [Draft],
        declared: BTreeMap<String, networks::Declared>,
    ) -> Result<Vec<StackNetwork>> {
        let default = || StackNetwork {
            spec: crate::store::NetworkSpec {
                name: format!("{}_{}", self.name, networks::DEFAULT_KEY),
                labels: [(
                    crate::store::service::STACK_LABEL.to_string(),
                    self.name.to_string(),
                )]
                .into(),
                ..Default::default()
            },
            external: false,
        };
        let mut used: BTreeMap<String, StackNetwork> = BTreeMap::new();
        for d in drafts.iter_mut() {
            if d.networks.is_empty() {
                let at = crate::stack::yaml::Pos::default();
                let a = NetworkAttachment::to(NetworkId(networks::DEFAULT_KEY.into()));
                d.networks.push((a, at));
            }
            for (a, pos) in &mut d.networks {
                let key = a.network.0.clone();
                let net = match declared.get(&key) {
                    Some(n) => n.network.clone(),
                    None if key == networks::DEFAULT_KEY => default(),
                    None => {
                        let known: Vec<&str> = declared.keys().map(String::as_str).collect();
                        return Err(err(
                            pos,
                            &format!("services.{}.networks.{key}", d.short),
                            format!(
                                "network {key} is not declared under the top-level networks:{}",
                                if known.is_empty() {
                                    String::new()
                                } else {
                                    format!(" (declared: {})", known.join(", "))
                                }
                            ),
                        ));
                    }
                };
                a.network = NetworkId(net.spec.name.clone());
                used.insert(key, net);
            }
            d.spec.networks = d.networks.iter().map(|(a, _)| a.clone()).collect();
        }
        for (key, n) in &declared {
            if !used.contains_key(key) {
                self.warn(
                    &n.pos,
                    &format!("networks.{key}"),
                    "no service is on it: not created",
                );
            }
        }
        let mut out: Vec<StackNetwork> = used.into_values().collect();
        out.sort_by(|a, b| a.spec.name.cmp(&b.spec.name));
        out.dedup_by(|a, b| a.spec.name == b.spec.name);
        Ok(out)
    }

    /// The top-level keys: the `services:` node, the declared volumes and networks.
    fn top_level<'n>(&mut self, doc: &'n Node) -> Result<TopLevel<'n>> {
        let mut services_node = None;
        let mut volumes = BTreeMap::new();
        let mut nets = BTreeMap::new();
        for (k, v) in entries(doc, "")? {
            match k.name.as_str() {
                "services" => services_node = Some(v),
                "volumes" => volumes = self.volumes(v)?,
                "version" => self.warn(&k.pos, "version", "obsolete, ignored"),
                "name" => self.warn(
                    &k.pos,
                    "name",
                    "ignored: the stack is named on the command line",
                ),
                "networks" => nets = self.networks(v)?,
                "secrets" => self.declare_secrets(crate::store::secret::Kind::Secret, v)?,
                "configs" => self.declare_secrets(crate::store::secret::Kind::Config, v)?,
                "include" | "models" => self.warn(&k.pos, &k.name, "not supported by orc, ignored"),
                x if x.starts_with("x-") => {}
                _ => {
                    return Err(unknown_key(
                        k,
                        "",
                        &[
                            "services", "volumes", "networks", "configs", "secrets", "version",
                            "name",
                        ],
                    )
                    .trim_leading_dot())
                }
            }
        }
        let Some(services_node) = services_node else {
            return Err(err(
                &doc.pos,
                "services",
                "missing: a stack file lists its services under services:",
            ));
        };
        Ok((services_node, volumes, nets))
    }
}

/// Every `depends_on` names another service of the stack, and they form no cycle.
fn check_depends_on(drafts: &[Draft], names: &BTreeSet<String>) -> Result<()> {
    for d in drafts {
        for (dep, _, pos) in &d.depends {
            if !names.contains(dep) {
                return Err(err(
                    pos,
                    &format!("services.{}.depends_on.{dep}", d.short),
                    format!(
                        "unknown service {dep:?} (the stack has: {})",
                        names.iter().cloned().collect::<Vec<_>>().join(", ")
                    ),
                ));
            }
            if dep == &d.short {
                return Err(err(
                    pos,
                    &format!("services.{}.depends_on", d.short),
                    "a service cannot depend on itself",
                ));
            }
        }
    }
    if let Some(cycle) = find_cycle(drafts) {
        let d = drafts
            .iter()
            .find(|d| d.short == cycle[0])
            .map(|d| &d.depends);
        let pos = d
            .and_then(|d| d.iter().find(|(n, _, _)| *n == cycle[1]))
            .map(|(_, _, p)| p.clone())
            .unwrap_or_default();
        return Err(err(
            &pos,
            &format!("services.{}.depends_on", cycle[0]),
            format!("dependency cycle: {}", cycle.join(" -> ")),
        ));
    }
    Ok(())
}

/// No two services of the stack publish one ingress port (against the rest of the
/// cluster, the leader checks with [`crate::store::service::ingress_port_conflict`]).
fn check_published_once(drafts: &[Draft]) -> Result<()> {
    let mut seen: BTreeMap<(u16, Protocol), &str> = BTreeMap::new();
    for d in drafts {
        for (port, proto, pos, path) in &d.published {
            if let Some(other) = seen.get(&(*port, *proto)) {
                if *other != d.short {
                    return Err(err(
                        pos,
                        path,
                        format!(
                            "port {port}/{} is already published by service {other}",
                            proto.as_str()
                        ),
                    ));
                }
            }
            seen.insert((*port, *proto), &d.short);
        }
    }
    Ok(())
}

fn valid_short_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 48
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.')
        && s.chars().next().is_some_and(|c| c.is_ascii_alphanumeric())
}

/// A cycle among the drafts' dependencies, as names from the first back to it.
fn find_cycle(drafts: &[Draft]) -> Option<Vec<String>> {
    let deps: BTreeMap<&str, Vec<&str>> = drafts
        .iter()
        .map(|d| {
            (
                d.short.as_str(),
                d.depends.iter().map(|(n, _, _)| n.as_str()).collect(),
            )
        })
        .collect();
    // 0 = unvisited, 1 = on the stack, 2 = done
    let mut mark: BTreeMap<&str, u8> = BTreeMap::new();
    fn visit<'a>(
        n: &'a str,
        deps: &BTreeMap<&'a str, Vec<&'a str>>,
        mark: &mut BTreeMap<&'a str, u8>,
        stack: &mut Vec<&'a str>,
    ) -> Option<Vec<String>> {
        match mark.get(n) {
            Some(2) => return None,
            Some(1) => {
                let i = stack.iter().position(|x| *x == n).unwrap_or(0);
                let mut c: Vec<String> = stack[i..].iter().map(|s| s.to_string()).collect();
                c.push(n.to_string());
                return Some(c);
            }
            _ => {}
        }
        mark.insert(n, 1);
        stack.push(n);
        for d in deps.get(n).map(Vec::as_slice).unwrap_or(&[]) {
            if let Some(c) = visit(d, deps, mark, stack) {
                return Some(c);
            }
        }
        stack.pop();
        mark.insert(n, 2);
        None
    }
    for d in drafts {
        let mut stack = vec![];
        if let Some(c) = visit(&d.short, &deps, &mut mark, &mut stack) {
            return Some(c);
        }
    }
    None
}
