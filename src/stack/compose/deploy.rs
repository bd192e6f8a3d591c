//! `deploy:`: the mode and replicas, resources, restart policy, placement and the
//! update and rollback configs of a service.

use super::fields::*;
use super::keys::*;
use crate::error::Result;
use crate::stack::yaml::{Node, Value};
use crate::stack::Loader;
use crate::store::service::{FailureAction, Placement, Resources, RestartPolicy, UpdateConfig};

impl Loader<'_> {
    pub(super) fn resources(&mut self, n: &Node, path: &str) -> Result<Resources> {
        let mut r = Resources::default();
        for (k, v) in entries(n, path)? {
            let p = format!("{path}.{}", k.name);
            let limits = match k.name.as_str() {
                "limits" => true,
                "reservations" => false,
                _ => return Err(unknown_key(k, path, &["limits", "reservations"])),
            };
            for (rk, rv) in entries(v, &p)? {
                let rp = format!("{p}.{}", rk.name);
                match (rk.name.as_str(), limits) {
                    ("cpus", true) => r.limit_nano_cpus = (float(rv, &rp)? * 1e9) as u64,
                    ("cpus", false) => r.reserve_nano_cpus = (float(rv, &rp)? * 1e9) as u64,
                    ("memory", true) => r.limit_memory_bytes = bytes(rv, &rp)?,
                    ("memory", false) => r.reserve_memory_bytes = bytes(rv, &rp)?,
                    ("pids", true) | ("devices", false) | ("generic_resources", false) => {
                        self.warn(&rk.pos, &rp, "not supported by orc, ignored")
                    }
                    _ => {
                        return Err(unknown_key(
                            rk,
                            &p,
                            if limits {
                                &["cpus", "memory", "pids"]
                            } else {
                                &["cpus", "memory", "devices", "generic_resources"]
                            },
                        ))
                    }
                }
            }
        }
        Ok(r)
    }

    pub(super) fn restart_policy(&mut self, n: &Node, path: &str) -> Result<RestartPolicy> {
        let mut r = RestartPolicy::default();
        for (k, v) in entries(n, path)? {
            let p = format!("{path}.{}", k.name);
            match k.name.as_str() {
                "condition" => r.condition = word(v, &p)?,
                "delay" => r.delay_ms = duration_ms(v, &p)?,
                "max_attempts" => r.max_attempts = uint(v, &p)?,
                "window" => r.window_ms = duration_ms(v, &p)?,
                _ => {
                    return Err(unknown_key(
                        k,
                        path,
                        &["condition", "delay", "max_attempts", "window"],
                    ))
                }
            }
        }
        Ok(r)
    }

    pub(super) fn placement(&mut self, n: &Node, path: &str) -> Result<Placement> {
        let mut pl = Placement::default();
        for (k, v) in entries(n, path)? {
            let p = format!("{path}.{}", k.name);
            match k.name.as_str() {
                "constraints" => {
                    pl.constraints = strings(v, &p)?;
                    for (i, c) in pl.constraints.iter().enumerate() {
                        crate::scheduler::Constraint::parse(c).map_err(|e| {
                            err(&v.pos, &format!("{p}[{i}]"), {
                                let m = e.to_string();
                                let m = m
                                    .split_once("\": ")
                                    .map(|(_, r)| r.to_string())
                                    .unwrap_or(m);
                                format!("{c:?}: {m}")
                            })
                        })?;
                    }
                }
                "preferences" => {
                    let Value::Seq(items) = &v.value else {
                        return Err(expected(v, &p, "a list of {spread: node.labels.NAME}"));
                    };
                    for (i, it) in items.iter().enumerate() {
                        let ip = format!("{p}[{i}]");
                        let Some(spread) = it.get("spread") else {
                            return Err(expected(it, &ip, "{spread: node.labels.NAME}"));
                        };
                        let s = string(spread, &format!("{ip}.spread"))?;
                        if !s.starts_with("node.labels.") && !s.starts_with("engine.labels.") {
                            return Err(expected(
                                spread,
                                &format!("{ip}.spread"),
                                "node.labels.NAME",
                            ));
                        }
                        pl.preferences.push(s);
                    }
                }
                "max_replicas_per_node" => pl.max_replicas_per_node = uint(v, &p)?,
                _ => {
                    return Err(unknown_key(
                        k,
                        path,
                        &["constraints", "preferences", "max_replicas_per_node"],
                    ))
                }
            }
        }
        Ok(pl)
    }

    pub(super) fn update_config(
        &mut self,
        n: &Node,
        path: &str,
        update: bool,
    ) -> Result<UpdateConfig> {
        let mut u = UpdateConfig::default();
        for (k, v) in entries(n, path)? {
            let p = format!("{path}.{}", k.name);
            match k.name.as_str() {
                "parallelism" => u.parallelism = uint(v, &p)?,
                "delay" => u.delay_ms = duration_ms(v, &p)?,
                "monitor" => u.monitor_ms = duration_ms(v, &p)?,
                "max_failure_ratio" => {
                    let r = float(v, &p)?;
                    if r > 1.0 {
                        return Err(expected(v, &p, "a ratio from 0 to 1"));
                    }
                    u.max_failure_ratio = r;
                }
                "failure_action" => {
                    u.failure_action = match word(v, &p) {
                        // a rollback cannot itself roll back
                        Ok(FailureAction::Rollback) | Err(_) if !update => {
                            return Err(expected(v, &p, "pause or continue"))
                        }
                        r => r?,
                    }
                }
                "order" => u.order = word(v, &p)?,
                _ => {
                    return Err(unknown_key(
                        k,
                        path,
                        &[
                            "parallelism",
                            "delay",
                            "failure_action",
                            "monitor",
                            "max_failure_ratio",
                            "order",
                        ],
                    ))
                }
            }
        }
        Ok(u)
    }
}
