//! Ports: a service's `ports:` entries, short (`8080:80/udp`, ranges `8000-8010:80-90`)
//! or long (`target:`, `published:`, `mode: host`), read into port configs.

use super::fields::*;
use super::keys::*;
use crate::error::Result;
use crate::stack::yaml::{Node, Value};
use crate::stack::Loader;
use crate::store::service::{PortConfig, Protocol, PublishMode};

impl Loader<'_> {
    /// `ports:`: each entry's ports (a range gives several), with its node and path.
    pub(super) fn ports<'n>(
        &mut self,
        v: &'n Node,
        p: &str,
    ) -> Result<Vec<(PortConfig, &'n Node, String)>> {
        let Value::Seq(items) = &v.value else {
            return Err(expected(v, p, "a list of ports"));
        };
        let mut out = vec![];
        for (i, it) in items.iter().enumerate() {
            let pp = format!("{p}[{i}]");
            for port in self.port(it, &pp)? {
                out.push((port, it, pp.clone()));
            }
        }
        Ok(out)
    }

    /// One entry of `ports:`, short or long.
    pub(super) fn port(&mut self, n: &Node, path: &str) -> Result<Vec<PortConfig>> {
        match &n.value {
            Value::Map(_) => self.port_long(n, path),
            Value::Int(_) | Value::Str(_) => self.port_short(n, path),
            _ => Err(expected(
                n,
                path,
                "a port such as \"8080:80\" or a mapping with target:",
            )),
        }
    }

    /// The long form: `target:`, `published:` (a port or a range), `protocol:`, `mode:`.
    fn port_long(&mut self, n: &Node, path: &str) -> Result<Vec<PortConfig>> {
        let mut target = None;
        let mut published = (0u16, 0u16);
        let mut protocol = Protocol::Tcp;
        let mut mode = PublishMode::Ingress;
        for (k, v) in entries(n, path)? {
            let p = format!("{path}.{}", k.name);
            match k.name.as_str() {
                "target" => {
                    let t = uint(v, &p)?;
                    if t == 0 || t > 65535 {
                        return Err(err(
                            &v.pos,
                            &p,
                            format!("expected a port from 1 to 65535, found {t}"),
                        ));
                    }
                    target = Some(t as u16)
                }
                "published" => {
                    let text = string(v, &p)?;
                    published = port_range(&text).ok_or_else(|| {
                        expected(v, &p, "a port from 1 to 65535 or a range such as 8000-8010")
                    })?;
                }
                "protocol" => protocol = word(v, &p)?,
                "mode" => mode = word(v, &p)?,
                "host_ip" => self.warn(
                    &k.pos,
                    &p,
                    "ignored: the mesh listens on every address of every node",
                ),
                "name" | "app_protocol" => self.warn(&k.pos, &p, "not supported by orc, ignored"),
                x if x.starts_with("x-") => {}
                _ => {
                    return Err(unknown_key(
                        k,
                        path,
                        &[
                            "target",
                            "published",
                            "protocol",
                            "mode",
                            "host_ip",
                            "name",
                            "app_protocol",
                        ],
                    ))
                }
            }
        }
        let Some(target) = target else {
            return Err(err(
                &n.pos,
                &format!("{path}.target"),
                "missing: the container's port",
            ));
        };
        let count = published.1 - published.0;
        Ok((0..=count)
            .map(|i| PortConfig {
                protocol,
                target: target.saturating_add(i),
                published: if published.0 == 0 { 0 } else { published.0 + i },
                mode,
                proxy_protocol: Default::default(),
            })
            .collect())
    }

    /// The short form: `80`, `8080:80`, `8080:80/udp`, `IP:8080:80`, ranges
    /// `8000-8010:80-90`.
    fn port_short(&mut self, n: &Node, path: &str) -> Result<Vec<PortConfig>> {
        let bad_port = |what: &str| expected(n, path, what);
        let text = string(n, path)?;
        let (ports, proto) = text.rsplit_once('/').unwrap_or((&text, "tcp"));
        let protocol: Protocol = proto
            .parse()
            .map_err(|_| bad_port("a protocol tcp or udp after /"))?;
        let parts: Vec<&str> = ports.split(':').collect();
        let (pub_text, target_text) = match parts.as_slice() {
            [t] => ("", *t),
            [p, t] => (*p, *t),
            [_ip, p, t] => {
                self.warn(
                    &n.pos,
                    path,
                    "the host address is ignored: the mesh listens on every address of every node",
                );
                (*p, *t)
            }
            _ => return Err(bad_port("a port such as 80, 8080:80 or 8080:80/udp")),
        };
        let range_err = |t: &str| {
            let big = t
                .split('-')
                .filter_map(|x| x.trim().parse::<u64>().ok())
                .find(|x| *x > 65535);
            match big {
                Some(b) => err(&n.pos, path, format!("port {b} is above 65535")),
                None => bad_port("a port such as 80, 8080:80 or 8080:80/udp"),
            }
        };
        let target = port_range(target_text).ok_or_else(|| range_err(target_text))?;
        if target.0 == 0 {
            return Err(bad_port("a container port from 1 to 65535"));
        }
        let published = if pub_text.is_empty() {
            (0, 0)
        } else {
            port_range(pub_text).ok_or_else(|| range_err(pub_text))?
        };
        let tn = target.1 - target.0;
        let pn = published.1 - published.0;
        if published.0 != 0 && tn != pn {
            return Err(err(
                &n.pos,
                path,
                "the published and target ranges differ in length",
            ));
        }
        Ok((0..=tn)
            .map(|i| PortConfig {
                protocol,
                target: target.0 + i,
                published: if published.0 == 0 { 0 } else { published.0 + i },
                mode: PublishMode::Ingress,
                proxy_protocol: Default::default(),
            })
            .collect())
    }
}

/// `80` → (80, 80); `8000-8010` → (8000, 8010); `None` when not ports (or above 65535).
pub(super) fn port_range(s: &str) -> Option<(u16, u16)> {
    let s = s.trim();
    let (a, b) = s.split_once('-').unwrap_or((s, s));
    let a: u16 = a.trim().parse().ok()?;
    let b: u16 = b.trim().parse().ok()?;
    (a <= b).then_some((a, b))
}

/// `expose:`: ports and ranges reachable inside the cluster (`8080`, `8000-8010/tcp`).
pub(super) fn expose(v: &Node, p: &str) -> Result<Vec<u16>> {
    let Value::Seq(items) = &v.value else {
        return Err(expected(v, p, "a list of ports"));
    };
    let mut out = vec![];
    for (i, it) in items.iter().enumerate() {
        let pp = format!("{p}[{i}]");
        let text = string(it, &pp)?;
        let num = text.split('/').next().unwrap_or("");
        let (lo, hi) = port_range(num)
            .ok_or_else(|| expected(it, &pp, "a port (1-65535) or a range such as 8000-8010"))?;
        if lo == 0 {
            return Err(expected(it, &pp, "a port (1-65535)"));
        }
        out.extend(lo..=hi);
    }
    Ok(out)
}
