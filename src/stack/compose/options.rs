//! The container options of a compose service (`hostname`, `cap_add`, `cap_drop`,
//! `sysctls`, `ulimits`, `init`, `stop_signal`, `extra_hosts`, `tty`, `stdin_open`,
//! `read_only`, `dns`, `dns_search`, `group_add`) and
//! `deploy.resources.reservations.generic_resources`, read with the meaning `docker
//! stack deploy` gives them:
//!
//! - `sysctls`: a mapping, or a list of `NAME=VALUE`;
//! - `ulimits`: `NAME: N` (soft and hard) or `NAME: {soft: S, hard: H}`;
//! - `extra_hosts`: a list of `HOST:IP` or `HOST=IP`, or a mapping `HOST: IP` (or a list
//!   of IPs);
//! - `dns`, `dns_search`: a string or a list;
//! - `group_add`: names or gids;
//! - `generic_resources`: a list of `discrete_resource_spec: {kind, value}`;
//!   `named_resource_spec` is warned about and ignored (orc counts discrete ones only).
//!
//! Each value is checked where it is read, so an error names its line.

use std::collections::BTreeMap;

use super::fields::*;
use crate::error::{Error, Result};
use crate::stack::yaml::{Key, Node, Value};
use crate::stack::Loader;
use crate::store::service::{parse_extra_host, ContainerOptions, ContainerSpec, Ulimit};

/// The container option keys of a service.
pub(super) const OPTION_KEYS: &[&str] = &[
    "hostname",
    "cap_add",
    "cap_drop",
    "sysctls",
    "ulimits",
    "init",
    "stop_signal",
    "extra_hosts",
    "tty",
    "stdin_open",
    "read_only",
    "dns",
    "dns_search",
    "group_add",
];

/// `e` of [`ContainerOptions::validate`] as an error at `v`, about `p`.
fn at(v: &Node, p: &str, e: Error) -> Error {
    let m = e.to_string();
    let why = m
        .strip_prefix("task.container.options.")
        .and_then(|m| m.split_once(": "))
        .map_or(m.as_str(), |(_, why)| why);
    err(&v.pos, p, why)
}

fn int(v: &Node, p: &str) -> Result<i64> {
    match &v.value {
        Value::Int(i) if i64::try_from(*i).is_ok() => Ok(*i as i64),
        Value::Str(s) if s.trim().parse::<i64>().is_ok() => Ok(s.trim().parse().unwrap_or(0)),
        _ => Err(expected(v, p, "a number")),
    }
}

fn ulimits(v: &Node, p: &str) -> Result<BTreeMap<String, Ulimit>> {
    let mut out = BTreeMap::new();
    for (k, lv) in entries(v, p)? {
        let lp = format!("{p}.{}", k.name);
        let u = match &lv.value {
            Value::Map(_) => {
                let (mut soft, mut hard) = (None, None);
                for (sk, sv) in entries(lv, &lp)? {
                    let sp = format!("{lp}.{}", sk.name);
                    match sk.name.as_str() {
                        "soft" => soft = Some(int(sv, &sp)?),
                        "hard" => hard = Some(int(sv, &sp)?),
                        _ => return Err(super::keys::unknown_key(sk, &lp, &["soft", "hard"])),
                    }
                }
                match (soft, hard) {
                    (Some(soft), Some(hard)) => Ulimit { soft, hard },
                    _ => return Err(err(&lv.pos, &lp, "expected both soft and hard")),
                }
            }
            _ => {
                let n = int(lv, &lp)?;
                Ulimit { soft: n, hard: n }
            }
        };
        out.insert(k.name.clone(), u);
    }
    Ok(out)
}

fn sysctls(v: &Node, p: &str) -> Result<BTreeMap<String, String>> {
    let mut out = BTreeMap::new();
    match &v.value {
        Value::Seq(items) => {
            for (i, it) in items.iter().enumerate() {
                let ip = format!("{p}[{i}]");
                let s = string(it, &ip)?;
                let Some((k, val)) = s.split_once('=') else {
                    return Err(expected(it, &ip, "NAME=VALUE"));
                };
                out.insert(k.trim().to_string(), val.trim().to_string());
            }
        }
        _ => {
            for (k, val) in kv_map(v, p)? {
                out.insert(k, val.unwrap_or_default());
            }
        }
    }
    Ok(out)
}

fn extra_hosts(v: &Node, p: &str) -> Result<Vec<String>> {
    let mut out = vec![];
    let mut push = |n: &Node, path: &str, s: String| -> Result<()> {
        let h = parse_extra_host(&s).map_err(|w| err(&n.pos, path, w))?;
        if !out.contains(&h) {
            out.push(h);
        }
        Ok(())
    };
    match &v.value {
        Value::Map(m) => {
            for (k, hv) in m {
                let hp = format!("{p}.{}", k.name);
                let ips = match &hv.value {
                    Value::Seq(_) => strings(hv, &hp)?,
                    _ => vec![string(hv, &hp)?],
                };
                for ip in ips {
                    push(hv, &hp, format!("{}={ip}", k.name))?;
                }
            }
        }
        _ => {
            for (i, s) in strings(v, p)?.into_iter().enumerate() {
                push(v, &format!("{p}[{i}]"), s)?;
            }
        }
    }
    Ok(out)
}

impl Loader<'_> {
    /// Reads option key `k` of a service into `c.options`; false when `k` is no option.
    pub(super) fn container_option(
        &mut self,
        c: &mut ContainerSpec,
        k: &Key,
        v: &Node,
        p: &str,
    ) -> Result<bool> {
        let o: &mut ContainerOptions = &mut c.options;
        match k.name.as_str() {
            "hostname" => o.hostname = string(v, p)?,
            "cap_add" => o.cap_add = strings(v, p)?,
            "cap_drop" => o.cap_drop = strings(v, p)?,
            "sysctls" => o.sysctls = sysctls(v, p)?,
            "ulimits" => o.ulimits = ulimits(v, p)?,
            "init" => o.init = boolean(v, p)?,
            "stop_signal" => o.stop_signal = string(v, p)?,
            "extra_hosts" => o.extra_hosts = extra_hosts(v, p)?,
            "tty" => o.tty = boolean(v, p)?,
            "stdin_open" => o.stdin_open = boolean(v, p)?,
            "read_only" => o.read_only = boolean(v, p)?,
            "dns" => o.dns = strings(v, p)?,
            "dns_search" => o.dns_search = strings(v, p)?,
            "group_add" => o.group_add = strings(v, p)?,
            _ => return Ok(false),
        }
        // The options read before this key were valid: an error is this key's.
        o.validate().map_err(|e| at(v, p, e))?;
        Ok(true)
    }

    /// `deploy.resources.reservations.generic_resources`: the discrete ones, kind →
    /// value (the same kind twice adds up).
    pub(super) fn generic_resources(&mut self, v: &Node, p: &str) -> Result<BTreeMap<String, u64>> {
        let mut out: BTreeMap<String, u64> = BTreeMap::new();
        let Value::Seq(items) = &v.value else {
            if matches!(v.value, Value::Null) {
                return Ok(out);
            }
            return Err(expected(v, p, "a list"));
        };
        for (i, it) in items.iter().enumerate() {
            let ip = format!("{p}[{i}]");
            for (k, spec) in entries(it, &ip)? {
                let sp = format!("{ip}.{}", k.name);
                match k.name.as_str() {
                    "discrete_resource_spec" => {
                        let (mut kind, mut value) = (None, None);
                        for (fk, fv) in entries(spec, &sp)? {
                            let fp = format!("{sp}.{}", fk.name);
                            match fk.name.as_str() {
                                "kind" => kind = Some(string(fv, &fp)?),
                                "value" => value = Some(uint(fv, &fp)?),
                                _ => {
                                    return Err(super::keys::unknown_key(
                                        fk,
                                        &sp,
                                        &["kind", "value"],
                                    ))
                                }
                            }
                        }
                        let (Some(kind), Some(value)) = (kind, value) else {
                            return Err(err(&spec.pos, &sp, "expected kind and value"));
                        };
                        crate::store::service::check_resource_kind(&kind)
                            .map_err(|w| err(&spec.pos, &format!("{sp}.kind"), w))?;
                        if value == 0 {
                            return Err(err(
                                &spec.pos,
                                &format!("{sp}.value"),
                                "a count of at least 1 is needed",
                            ));
                        }
                        let total = out.entry(kind).or_default();
                        *total = total.saturating_add(value);
                    }
                    "named_resource_spec" => self.warn(
                        &k.pos,
                        &sp,
                        "named generic resources are not supported by orc (discrete ones are), ignored",
                    ),
                    _ => {
                        return Err(super::keys::unknown_key(
                            k,
                            &ip,
                            &["discrete_resource_spec", "named_resource_spec"],
                        ))
                    }
                }
            }
        }
        crate::store::service::check_generic_resources(&out).map_err(|w| err(&v.pos, p, w))?;
        Ok(out)
    }
}
