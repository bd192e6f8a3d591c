//! `--filter KEY=VALUE` of `service ps` and `node ps`, as Docker names them, applied to
//! the listed tasks.

use super::Listed;
use crate::error::{Error, Result};

/// The flags `service ps` and `node ps` share.
#[derive(Debug, Clone, clap::Args)]
pub struct PsFlags {
    /// Keep only matching tasks: desired-state=running|shutdown|accepted, node=ID|HOSTNAME,
    /// id=PREFIX, name=SERVICE.SLOT; repeatable.
    #[arg(long = "filter", short = 'f')]
    pub filters: Vec<String>,
    /// Show full ids.
    #[arg(long)]
    pub no_trunc: bool,
    /// Output format.
    #[arg(long, value_enum, default_value_t)]
    pub format: crate::cli::Format,
}

/// The filters a `ps` was given.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TaskFilter {
    /// `desired-state=running|shutdown|accepted` (any listed matches).
    desired: Vec<String>,
    /// `node=ID|ID-PREFIX|HOSTNAME`.
    node: Vec<String>,
    /// `id=PREFIX`.
    id: Vec<String>,
    /// `name=SERVICE.SLOT` (or a prefix of it).
    name: Vec<String>,
}

impl TaskFilter {
    /// Parses each `--filter` value.
    pub fn parse(filters: &[String]) -> Result<TaskFilter> {
        let mut f = TaskFilter::default();
        for raw in filters {
            let Some((k, v)) = raw.split_once('=') else {
                return Err(Error::InvalidInput(format!(
                    "--filter: expected KEY=VALUE, found {raw:?}"
                )));
            };
            match k {
                "desired-state" => match v {
                    "running" | "shutdown" | "accepted" => f.desired.push(v.to_string()),
                    _ => {
                        return Err(Error::InvalidInput(format!(
                            "--filter: desired-state is running, shutdown or accepted, not {v:?}"
                        )))
                    }
                },
                "node" => f.node.push(v.to_string()),
                "id" => f.id.push(v.to_string()),
                "name" => f.name.push(v.to_string()),
                _ => {
                    return Err(Error::InvalidInput(format!(
                        "--filter: unknown key {k:?}; expected desired-state, node, id or name"
                    )))
                }
            }
        }
        Ok(f)
    }

    /// Whether `l` passes every key given (within a key, any value).
    pub fn admits(&self, l: &Listed) -> bool {
        let t = &l.task;
        let any = |vals: &[String], ok: &dyn Fn(&str) -> bool| {
            vals.is_empty() || vals.iter().any(|v| ok(v))
        };
        let desired = t.desired_state.as_str();
        let name = if t.slot > 0 {
            format!("{}.{}", t.service_name, t.slot)
        } else {
            format!("{}.{}", t.service_name, l.node_id())
        };
        any(&self.desired, &|v| match v {
            // Docker's "accepted": desired to run, not there yet
            "accepted" => desired == "running" && t.status.state.as_str() != "running",
            v => desired == v,
        }) && any(&self.node, &|v| {
            let id = l.node_id();
            (!id.is_empty() && id.starts_with(v)) || l.node == v
        }) && any(&self.id, &|v| t.id.0.starts_with(v))
            && any(&self.name, &|v| name.starts_with(v))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{NodeId, ServiceId, Task, TaskId, TaskState, TaskStatus};

    fn listed(slot: u64, node: u64, host: &str, desired: TaskState, state: TaskState) -> Listed {
        let task = Task {
            id: TaskId(format!("{:016x}", slot * 0x1111)),
            service_id: ServiceId("s".into()),
            service_name: "web".into(),
            slot,
            node_id: Some(NodeId(node)),
            spec_version: 1,
            spec: Default::default(),
            desired_state: desired,
            status: TaskStatus::new(state, "", 0),
            created_ms: 0,
            vip: String::new(),
            endpoint: None,
        };
        Listed {
            task,
            node: host.into(),
            up_to_date: true,
        }
    }

    #[test]
    fn filters_keep_what_they_name_and_bad_ones_are_refused_naming_the_flag() {
        let ts = [
            listed(1, 0xa1, "alpha", TaskState::Running, TaskState::Running),
            listed(2, 0xb2, "beta", TaskState::Shutdown, TaskState::Shutdown),
            listed(3, 0xa1, "alpha", TaskState::Running, TaskState::Starting),
        ];
        let keep = |f: &[&str]| -> Vec<u64> {
            let f =
                TaskFilter::parse(&f.iter().map(|s| s.to_string()).collect::<Vec<_>>()).unwrap();
            ts.iter()
                .filter(|l| f.admits(l))
                .map(|l| l.task.slot)
                .collect()
        };
        assert_eq!(keep(&[]), [1, 2, 3]);
        assert_eq!(keep(&["desired-state=running"]), [1, 3]);
        assert_eq!(keep(&["desired-state=shutdown"]), [2]);
        assert_eq!(keep(&["desired-state=accepted"]), [3]);
        assert_eq!(keep(&["node=beta"]), [2]);
        assert_eq!(keep(&["node=00000000000000a1"]), [1, 3]);
        assert_eq!(
            keep(&["node=alpha", "desired-state=running", "name=web.3"]),
            [3]
        );
        assert_eq!(keep(&["node=alpha", "node=beta"]), [1, 2, 3]);
        assert_eq!(keep(&["id=0000000000002222"]), [2]);
        for (bad, says) in [
            (
                "desired-state=done",
                "desired-state is running, shutdown or accepted",
            ),
            ("color=red", "unknown key \"color\""),
            ("node", "expected KEY=VALUE"),
        ] {
            let e = TaskFilter::parse(&[bad.to_string()])
                .unwrap_err()
                .to_string();
            assert!(
                e.starts_with("--filter: ") && e.contains(says),
                "{bad}: {e}"
            );
        }
    }
}
