//! `deploy:`: the mode and replicas, resources, restart policy, placement and the
//! update and rollback configs of a service.

use std::collections::BTreeMap;

use super::fields::*;
use super::keys::*;
use crate::error::Result;
use crate::stack::yaml::{Node, Value};
use crate::stack::Loader;
use crate::store::service::{
    EndpointMode, FailureAction, Placement, Resources, RestartCondition, RestartPolicy,
    ServiceMode, UpdateConfig,
};

impl Loader<'_> {
    /// `deploy:`.
    pub(super) fn deploy(&mut self, d: &Node, dp: &str) -> Result<Deploy> {
        let mut out = Deploy::default();
        for (k, v) in entries(d, dp)? {
            let p = format!("{dp}.{}", k.name);
            match k.name.as_str() {
                "mode" => out.mode = word(v, &p)?,
                "replicas" => {
                    let r = uint(v, &p)?;
                    if r > 100_000 {
                        return Err(err(&v.pos, &p, format!("at most 100000, found {r}")));
                    }
                    out.replicas = Some(r);
                }
                "labels" => {
                    for (lk, lv) in kv_map(v, &p)? {
                        out.labels.insert(lk, lv.unwrap_or_default());
                    }
                }
                "resources" => out.resources = Some(self.resources(v, &p)?),
                "restart_policy" => out.restart = Some(self.restart_policy(v, &p)?),
                "placement" => out.placement = self.placement(v, &p)?,
                "update_config" => out.update = self.update_config(v, &p, true)?,
                "rollback_config" => out.rollback = self.update_config(v, &p, false)?,
                "endpoint_mode" => out.endpoint_mode = word(v, &p)?,
                x if x.starts_with("x-") => {}
                _ => {
                    return Err(unknown_key(
                        k,
                        dp,
                        &[
                            "mode",
                            "replicas",
                            "labels",
                            "resources",
                            "restart_policy",
                            "placement",
                            "update_config",
                            "rollback_config",
                            "endpoint_mode",
                        ],
                    ))
                }
            }
        }
        Ok(out)
    }

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
                    ("generic_resources", false) => {
                        r.generic_resources = self.generic_resources(rv, &rp)?
                    }
                    ("pids", true) | ("devices", false) => {
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
                    for (i, c) in strings(v, &p)?.iter().enumerate() {
                        let c = crate::store::Constraint::read(c);
                        if let Some(why) = c.why() {
                            let text = c.text();
                            return Err(err(
                                &v.pos,
                                &format!("{p}[{i}]"),
                                format!("{text:?}: {why}"),
                            ));
                        }
                        pl.constraints.push(c);
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
                        let pref = crate::store::Preference::read(&s);
                        if !pref.is_valid() {
                            return Err(expected(
                                spread,
                                &format!("{ip}.spread"),
                                crate::store::constraint::PREFERENCES,
                            ));
                        }
                        pl.preferences.push(pref);
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

/// What `deploy:` gives; `None` where it leaves a key outside it in force.
pub(super) struct Deploy {
    /// `deploy.mode`, with its bare word's counts.
    mode: ServiceMode,
    /// `deploy.replicas`, over the service's `scale`.
    replicas: Option<u64>,
    /// `deploy.labels`: the service's labels (the container's are `labels`).
    pub(super) labels: BTreeMap<String, String>,
    /// `deploy.resources`, over `cpus`, `mem_limit` and `mem_reservation`.
    pub(super) resources: Option<Resources>,
    /// `deploy.restart_policy`, over `restart`.
    pub(super) restart: Option<RestartPolicy>,
    /// `deploy.placement`.
    pub(super) placement: Placement,
    /// `deploy.update_config`.
    pub(super) update: UpdateConfig,
    /// `deploy.rollback_config`.
    pub(super) rollback: UpdateConfig,
    /// `deploy.endpoint_mode`.
    pub(super) endpoint_mode: EndpointMode,
}

impl Default for Deploy {
    fn default() -> Self {
        Deploy {
            mode: ServiceMode::Replicated { replicas: 1 },
            replicas: None,
            labels: BTreeMap::new(),
            resources: None,
            restart: None,
            placement: Placement::default(),
            update: UpdateConfig::default(),
            rollback: UpdateConfig::default(),
            endpoint_mode: EndpointMode::Vip,
        }
    }
}

impl Deploy {
    /// The mode with its count: `deploy.replicas`, else `scale`, else 1 (a job runs
    /// that many completions, that many at a time). A global mode has no count: a
    /// `deploy.replicas` beside it is refused.
    pub(super) fn mode_with_replicas(
        &self,
        scale: Option<u64>,
        deploy: Option<&Node>,
        path: &str,
    ) -> Result<ServiceMode> {
        let scale = self.replicas.or(scale);
        let mut mode = self.mode.clone();
        match &mut mode {
            ServiceMode::Replicated { replicas } => *replicas = scale.unwrap_or(1),
            ServiceMode::ReplicatedJob {
                max_concurrent,
                total_completions,
            } => {
                let r = scale.unwrap_or(1).max(1);
                *max_concurrent = r;
                *total_completions = r;
            }
            _ => {
                if self.replicas.is_some() {
                    if let Some(d) = deploy.and_then(|d| d.get("replicas")) {
                        return Err(err(
                            &d.pos,
                            &format!("{path}.deploy.replicas"),
                            format!("a {} service has no replica count", mode.name()),
                        ));
                    }
                }
            }
        }
        Ok(mode)
    }
}

/// `restart:` outside `deploy:` (`no`, `always`, `on-failure[:N]`, `unless-stopped`),
/// as a restart policy.
pub(super) fn restart_key(r: &Node, p: &str) -> Result<RestartPolicy> {
    let mut restart = RestartPolicy::default();
    let text = string(r, p)?;
    let (cond, max) = text.split_once(':').unwrap_or((&text, ""));
    restart.condition = match cond {
        "no" => RestartCondition::None,
        "always" | "unless-stopped" => RestartCondition::Any,
        "on-failure" => RestartCondition::OnFailure,
        _ => {
            return Err(expected(
                r,
                p,
                "no, always, on-failure[:N] or unless-stopped",
            ))
        }
    };
    if !max.is_empty() {
        restart.max_attempts = max
            .parse()
            .map_err(|_| expected(r, p, "on-failure:N with N a number"))?;
    }
    Ok(restart)
}
