//! `service logs`: a manager gathers a service's logs from the nodes that run its
//! tasks ([`service_logs`]). Each node serves `NodeApi.Logs` on its cluster port
//! (managers only, [`super::node_api`]) and reads its own containers through its
//! executor ([`node_logs`]); the manager merges the streams.

use std::pin::Pin;

use futures::{Stream, StreamExt};
use tonic::Status;

use crate::agent::executor::{LogOptions, LogSource};
use crate::error::{Error, Result};
use crate::host::Host;
use crate::proto::{node_api_client::NodeApiClient, LogLine, LogsRequest};
use crate::store::TaskId;

/// A node's share of a service's logs: a name for notices, whether it is down, and
/// the tasks (id, label) whose logs it holds.
type NodeShare = (String, bool, Vec<(String, String)>);

/// Per node address, its share.
type NodeGroups = Vec<(String, String, bool, Vec<(String, String)>)>;

/// How long a node has to answer a logs request before it is named as unreachable.
const NODE_ANSWER: std::time::Duration = std::time::Duration::from_secs(3);

/// A line from orc itself about the logs (not from a task).
fn notice(text: String) -> LogLine {
    LogLine {
        task_id: String::new(),
        source: String::new(),
        line: text,
        stderr: true,
        notice: true,
    }
}

/// A stream of log lines.
pub type LineStream = Pin<Box<dyn Stream<Item = Result<LogLine, Status>> + Send>>;

fn options(req: &LogsRequest) -> LogOptions {
    LogOptions {
        follow: req.follow,
        tail: (req.tail >= 0).then_some(req.tail as u64),
        timestamps: req.timestamps,
    }
}

/// The service's tasks that have a container, by node, leaving out the ids in `seen`.
fn groups_of(
    s: &crate::store::State,
    service: &str,
    seen: &std::collections::HashSet<String>,
) -> Result<NodeGroups> {
    let svc = s.find_service(service)?;
    let mut by_node: std::collections::BTreeMap<String, NodeShare> = Default::default();
    for t in s.tasks_of(&svc.id) {
        let Some(node) = t.node_id.and_then(|n| s.nodes.get(&n)) else {
            continue;
        };
        if t.status.container_id.is_empty() || seen.contains(&t.id.0) {
            continue;
        }
        let slot = if t.slot > 0 {
            t.slot.to_string()
        } else {
            node.id.to_string()
        };
        let label = format!(
            "{}.{}.{}@{}",
            t.service_name,
            slot,
            &t.id.0[..t.id.0.len().min(12)],
            node.description.hostname
        );
        by_node
            .entry(node.addr.clone())
            .or_insert_with(|| {
                (
                    format!("{} ({})", node.description.hostname, node.id),
                    node.status == crate::store::NodeStatus::Down,
                    vec![],
                )
            })
            .2
            .push((t.id.0.clone(), label));
    }
    Ok(by_node
        .into_iter()
        .map(|(addr, (name, down, tasks))| (addr, name, down, tasks))
        .collect())
}

/// Asks every node of `groups` at once for its tasks' lines: the streams, and a notice
/// line for each node that is down or does not answer in time (its logs are left out,
/// the others' still print).
async fn ask_nodes(
    d: &Host,
    req: &LogsRequest,
    groups: NodeGroups,
) -> (Vec<LineStream>, Vec<LogLine>) {
    let asks = groups
        .into_iter()
        .map(|(addr, name, down, tasks)| async move {
            if down {
                return Err(notice(format!(
                    "node {name} is down: the logs of its {} task(s) are left out",
                    tasks.len()
                )));
            }
            let labels: std::collections::HashMap<String, String> = tasks.iter().cloned().collect();
            let ch = d.peers().node_channel(&addr).map_err(|e| {
                notice(format!(
                    "node {name} cannot be reached ({e}): its logs are left out"
                ))
            })?;
            let mut client = NodeApiClient::new(ch);
            let ask = client.logs(LogsRequest {
                service: req.service.clone(),
                follow: req.follow,
                tail: req.tail,
                timestamps: req.timestamps,
                task_ids: tasks.iter().map(|(id, _)| id.clone()).collect(),
            });
            match tokio::time::timeout(NODE_ANSWER, ask).await {
                Ok(Ok(s)) => Ok((s, labels)),
                Ok(Err(e)) => {
                    tracing::warn!(node = %addr, "logs: {:?} {}", e.code(), e.message());
                    Err(notice(format!(
                        "node {name} did not give its logs ({}): they are left out",
                        e.message()
                    )))
                }
                Err(_) => Err(notice(format!(
                    "node {name} did not answer within {} s: its logs are left out",
                    NODE_ANSWER.as_secs()
                ))),
            }
        });
    let mut streams: Vec<LineStream> = vec![];
    let mut notices = vec![];
    for r in futures::future::join_all(asks).await {
        match r {
            Err(n) => notices.push(n),
            Ok((s, labels)) => {
                let s = s.into_inner().map(move |l| {
                    l.map(|mut l| {
                        if let Some(label) = labels.get(&l.task_id) {
                            l.source = label.clone();
                        }
                        l
                    })
                });
                streams.push(Box::pin(s));
            }
        }
    }
    (streams, notices)
}

/// How often `logs -f` looks for tasks that started since it began.
const FOLLOW_NEW_TASKS: std::time::Duration = std::time::Duration::from_secs(1);

/// Manager side: the merged logs of a service. With `follow`, tasks that start while
/// it follows are added (their lines from the first).
pub async fn service_logs(d: &Host, req: LogsRequest) -> Result<LineStream> {
    let m = d.manager()?;
    let mut seen = std::collections::HashSet::new();
    let groups = m.read(|s| groups_of(s, &req.service, &seen))?;
    seen.extend(
        groups
            .iter()
            .flat_map(|g| g.3.iter().map(|(id, _)| id.clone())),
    );
    let (streams, notices) = ask_nodes(d, &req, groups).await;
    let notices = futures::stream::iter(notices.into_iter().map(Ok));
    if !req.follow {
        return Ok(Box::pin(
            notices.chain(futures::stream::select_all(streams)),
        ));
    }
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<LogLine, Status>>(256);
    let d = d.clone();
    tokio::spawn(async move {
        let mut merged = futures::stream::SelectAll::new();
        merged.push(Box::pin(notices) as LineStream);
        for s in streams {
            merged.push(s);
        }
        let mut tick = tokio::time::interval(FOLLOW_NEW_TASKS);
        loop {
            tokio::select! {
                _ = tx.closed() => return,
                line = merged.next(), if !merged.is_empty() => {
                    if let Some(line) = line {
                        if tx.send(line).await.is_err() {
                            return;
                        }
                    }
                }
                _ = tick.tick() => {
                    let Ok(m) = d.manager() else { return };
                    // the service gone: the stream ends
                    let Ok(new) = m.read(|s| groups_of(s, &req.service, &seen)) else {
                        return;
                    };
                    if new.is_empty() {
                        continue;
                    }
                    seen.extend(new.iter().flat_map(|g| g.3.iter().map(|(id, _)| id.clone())));
                    let from_start = LogsRequest { tail: -1, ..req.clone() };
                    let (streams, notices) = ask_nodes(&d, &from_start, new).await;
                    merged.push(Box::pin(futures::stream::iter(notices.into_iter().map(Ok))));
                    for s in streams {
                        merged.push(s);
                    }
                }
            }
        }
    });
    Ok(Box::pin(tokio_stream::wrappers::ReceiverStream::new(rx)))
}

/// Node side (`NodeApi.Logs`): the log lines of this node's containers of `req`'s
/// tasks, merged; a task whose logs cannot be read is left out.
pub async fn node_logs(runner: &crate::agent::RunnerSlot, req: LogsRequest) -> Result<LineStream> {
    let Some(runner) = runner.get() else {
        return Err(Error::Unavailable("this node runs no tasks".into()));
    };
    let mut streams: Vec<LineStream> = vec![];
    for id in &req.task_ids {
        let task = id.clone();
        let s = match runner.logs(&TaskId(id.clone()), options(&req)).await {
            Ok(s) => s,
            Err(e) => {
                tracing::debug!(task = %id, "logs: {e}");
                continue;
            }
        };
        let s = s.map(move |l| {
            l.map(|l| LogLine {
                task_id: task.clone(),
                source: String::new(),
                line: if l.timestamp.is_empty() {
                    l.text
                } else {
                    format!("{} {}", l.timestamp, l.text)
                },
                stderr: l.source == LogSource::Stderr,
                notice: false,
            })
            .map_err(Status::from)
        });
        streams.push(Box::pin(s));
    }
    Ok(Box::pin(futures::stream::select_all(streams)))
}
