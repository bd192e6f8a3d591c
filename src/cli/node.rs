//! `orc node ls|inspect|update|promote|demote|rm`.

use std::path::Path;

use clap::Subcommand;
use tonic::transport::Channel;

use super::{connect, print_table, Format};
use crate::error::{Error, Result};
use crate::proto::{self, control_client::ControlClient, NodeInfo};
use crate::store::Role;

/// `orc node ...`.
#[derive(Debug, Subcommand)]
pub enum NodeCommand {
    /// List the nodes.
    #[command(alias = "list")]
    Ls {
        /// Output format.
        #[arg(long, value_enum, default_value_t)]
        format: Format,
    },
    /// Show one node in detail (JSON).
    Inspect {
        /// Node id, id prefix or hostname.
        node: Vec<String>,
        /// Output format (inspect always prints JSON).
        #[arg(long, value_enum, default_value_t = Format::Json)]
        format: Format,
    },
    /// Change a node's availability or labels.
    Update {
        /// active, pause or drain.
        #[arg(long)]
        availability: Option<String>,
        /// Add or set a label (k=v); repeatable.
        #[arg(long = "label-add")]
        label_add: Vec<String>,
        /// Remove a label; repeatable.
        #[arg(long = "label-rm")]
        label_rm: Vec<String>,
        /// Node id, id prefix or hostname.
        node: String,
    },
    /// Make workers managers.
    Promote {
        /// Nodes.
        #[arg(required = true)]
        nodes: Vec<String>,
    },
    /// Make managers workers.
    Demote {
        /// Nodes.
        #[arg(required = true)]
        nodes: Vec<String>,
    },
    /// List the tasks on a node (this node when none is named), of every service.
    Ps {
        /// Node id, id prefix or hostname (default: this node).
        node: Option<String>,
        #[command(flatten)]
        flags: super::service::PsFlags,
    },
    /// What this node's routing mesh serves now: published ports and their backends.
    Routes {
        /// Output format.
        #[arg(long, value_enum, default_value_t)]
        format: Format,
    },
    /// Remove nodes from the cluster.
    Rm {
        /// Remove a node that is not down.
        #[arg(short, long)]
        force: bool,
        /// Nodes.
        #[arg(required = true)]
        nodes: Vec<String>,
    },
}

/// `tcp` or `udp`.
fn route_protocol(r: &proto::Route) -> &'static str {
    match proto::Protocol::try_from(r.protocol) {
        Ok(proto::Protocol::Udp) => "udp",
        _ => "tcp",
    }
}

/// One route as `node routes --format json` prints it.
fn route_json(r: &proto::Route) -> serde_json::Value {
    serde_json::json!({
        "protocol": route_protocol(r),
        "address": r.address,
        "port": r.port,
        "published": r.port,
        "service": r.service,
        "networks": r.networks,
        "backends": r
            .backends
            .iter()
            .map(|b| serde_json::json!({"address": b.address, "active": b.active}))
            .collect::<Vec<_>>(),
    })
}

/// The JSON object of a node (the contract scripts rely on, plus more).
pub fn node_json(n: &NodeInfo) -> serde_json::Value {
    let labels: std::collections::BTreeMap<_, _> = n.labels.iter().collect();
    let engine_labels: std::collections::BTreeMap<_, _> = n.engine_labels.iter().collect();
    serde_json::json!({
        "id": n.id,
        "hostname": n.hostname,
        "role": n.role,
        "status": n.status,
        "availability": n.availability,
        "manager_status": n.manager_status,
        "address": n.address,
        "labels": labels,
        "engine_version": n.engine_version,
        "engine_labels": engine_labels,
        "cpus": n.cpus,
        "memory_bytes": n.memory_bytes,
        "os": n.os,
        "arch": n.arch,
        "created_ms": n.created_ms,
        "status_changed_ms": n.status_changed_ms,
        "data_port": n.data_port,
        "generic_resources": n.generic_resources.iter().collect::<std::collections::BTreeMap<_, _>>(),
    })
}

fn update_req(node: &str) -> proto::UpdateNodeRequest {
    proto::UpdateNodeRequest {
        node: node.to_string(),
        ..Default::default()
    }
}

/// Runs a node command.
pub async fn run(socket: &Path, c: NodeCommand) -> Result<()> {
    let mut client = ControlClient::new(connect(socket).await?);
    match c {
        NodeCommand::Ls { format } => ls(socket, &mut client, format).await,
        NodeCommand::Inspect { node, format: _ } => inspect(&mut client, node).await,
        NodeCommand::Update {
            availability,
            label_add,
            label_rm,
            node,
        } => {
            let mut req = update_req(&node);
            req.availability = availability.unwrap_or_default();
            for l in label_add {
                let (k, v) = l.split_once('=').unwrap_or((l.as_str(), ""));
                if k.is_empty() {
                    return Err(Error::InvalidInput(format!(
                        "--label-add: expected key=value, found {l:?}"
                    )));
                }
                req.labels_add.insert(k.to_string(), v.to_string());
            }
            req.labels_rm = label_rm;
            let n = client.update_node(req).await?.into_inner();
            println!("{}", n.id);
            Ok(())
        }
        NodeCommand::Promote { nodes } => {
            for n in nodes {
                let mut req = update_req(&n);
                req.role = Role::Manager.as_str().into();
                let info = client.update_node(req).await?.into_inner();
                println!("Node {} promoted to a manager in the cluster.", info.id);
            }
            Ok(())
        }
        NodeCommand::Demote { nodes } => {
            for n in nodes {
                let mut req = update_req(&n);
                req.role = Role::Worker.as_str().into();
                let info = client.update_node(req).await?.into_inner();
                println!("Manager {} demoted in the cluster.", info.id);
            }
            Ok(())
        }
        NodeCommand::Ps { node, flags } => ps(socket, &mut client, node, flags).await,
        NodeCommand::Routes { format } => routes(socket, format).await,
        NodeCommand::Rm { force, nodes } => {
            for n in nodes {
                client
                    .remove_node(proto::RemoveNodeRequest {
                        node: n.clone(),
                        force,
                    })
                    .await?;
                println!("{n}");
            }
            Ok(())
        }
    }
}

/// `node ls`: the nodes by hostname, this one starred.
async fn ls(socket: &Path, client: &mut ControlClient<Channel>, format: Format) -> Result<()> {
    let mut nodes = client.list_nodes(proto::Empty {}).await?.into_inner().nodes;
    nodes.sort_by(|a, b| (&a.hostname, &a.id).cmp(&(&b.hostname, &b.id)));
    if format == Format::Json {
        let v: Vec<_> = nodes.iter().map(node_json).collect();
        println!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(());
    }
    let me = proto::local_client::LocalClient::new(connect(socket).await?)
        .info(proto::Empty {})
        .await
        .map(|r| r.into_inner().node_id)
        .unwrap_or_default();
    let rows: Vec<Vec<String>> = nodes
        .iter()
        .map(|n| {
            let star = if n.id == me { " *" } else { "" };
            vec![
                format!("{}{star}", n.id),
                n.hostname.clone(),
                n.status.clone(),
                n.availability.clone(),
                n.manager_status.clone(),
                n.address.clone(),
                n.engine_version.clone(),
            ]
        })
        .collect();
    print_table(
        &[
            "ID",
            "HOSTNAME",
            "STATUS",
            "AVAILABILITY",
            "MANAGER STATUS",
            "ADDRESS",
            "ENGINE VERSION",
        ],
        &rows,
    );
    Ok(())
}

/// `node inspect`: each node named, as JSON.
async fn inspect(client: &mut ControlClient<Channel>, node: Vec<String>) -> Result<()> {
    if node.is_empty() {
        return Err(Error::InvalidInput(
            "node inspect: name at least one node".into(),
        ));
    }
    let mut out = vec![];
    for n in node {
        let info = client
            .inspect_node(proto::NodeRef { node: n })
            .await?
            .into_inner();
        out.push(node_json(&info));
    }
    println!("{}", serde_json::to_string_pretty(&out)?);
    Ok(())
}

/// `node ps`: the tasks of every service on one node, as `service ps` lists them.
async fn ps(
    socket: &Path,
    client: &mut ControlClient<Channel>,
    node: Option<String>,
    flags: super::service::PsFlags,
) -> Result<()> {
    use super::service::{print_tasks, view, Listed, TaskFilter};
    let filter = TaskFilter::parse(&flags.filters)?;
    let (no_trunc, format) = (flags.no_trunc, flags.format);
    let id = match node {
        Some(n) => {
            client
                .inspect_node(proto::NodeRef { node: n })
                .await?
                .into_inner()
                .id
        }
        None => {
            proto::local_client::LocalClient::new(connect(socket).await?)
                .info(proto::Empty {})
                .await?
                .into_inner()
                .node_id
        }
    };
    if id.is_empty() {
        return Err(Error::Unavailable("this node is in no cluster".into()));
    }
    let mut tasks: Vec<Listed> = vec![];
    for s in view::list(client).await? {
        tasks.extend(
            view::tasks(client, &s.summary.id)
                .await?
                .into_iter()
                .filter(|l| l.node_id() == id && filter.admits(l)),
        );
    }
    if format == Format::Json {
        let json: Vec<_> = tasks.iter().map(Listed::to_json).collect();
        println!("{}", serde_json::to_string_pretty(&json)?);
        return Ok(());
    }
    print_tasks(&tasks, no_trunc);
    Ok(())
}

/// `node routes`: this node's routing mesh, one line per published port.
async fn routes(socket: &Path, format: Format) -> Result<()> {
    let r = proto::local_client::LocalClient::new(connect(socket).await?)
        .routes(proto::Empty {})
        .await?
        .into_inner();
    if format == Format::Json {
        let v: Vec<_> = r.routes.iter().map(route_json).collect();
        println!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(());
    }
    let rows: Vec<Vec<String>> = r.routes.iter().map(route_row).collect();
    print_table(
        &[
            "LISTEN",
            "SERVICE",
            "NETWORKS",
            "BACKENDS (ACTIVE CONNECTIONS)",
        ],
        &rows,
    );
    Ok(())
}

/// One row of `node routes`.
fn route_row(r: &proto::Route) -> Vec<String> {
    let backends = r
        .backends
        .iter()
        .map(|b| format!("{} ({})", b.address, b.active))
        .collect::<Vec<_>>()
        .join(", ");
    vec![
        format!("{}:{}/{}", r.address, r.port, route_protocol(r)),
        r.service.clone(),
        if r.networks.is_empty() {
            "(published: anyone)".into()
        } else {
            r.networks.join(",")
        },
        if backends.is_empty() {
            "(none)".into()
        } else {
            backends
        },
    ]
}
