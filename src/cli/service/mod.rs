//! `orc service create|update|scale|rm|ls|ps|inspect|logs|rollback`.
//!
//! `create`, `update` and `scale` wait for the service to converge, showing one line
//! per replica (redrawn in place on a terminal, printed on change otherwise), as
//! `docker service create` does; `-d` returns at once. An `update` that replaces tasks,
//! and a `rollback`, follow the service's update status instead: `overall progress: K
//! out of N tasks` counts the tasks the orchestrator counted as updated (running,
//! healthy, monitored), and the command ends when the update completes, pauses or is
//! rolled back — with one `error: ...` line naming the state and its message, and a
//! non-zero exit, unless it completed (for `rollback`: unless the rollback completed).

//!
//! The parts: the flags and their parsers ([`args`]), the spec they build ([`spec`]),
//! the leader's answers and their JSON ([`view`]), following progress ([`progress`]),
//! and the tables ([`table`]).

use std::path::Path;

use clap::Subcommand;

use super::Format;
use crate::error::{Error, Result};
use crate::proto;

pub mod args;
pub mod filter;
pub mod options;
pub mod progress;
pub mod spec;
pub mod table;
pub mod view;

pub use args::{parse_bytes, parse_mount, parse_publish, CommonFlags, CreateArgs, UpdateArgs};
pub use filter::{PsFlags, TaskFilter};
pub use progress::{progress, update_progress, wait_converged, wait_update};
pub use spec::{create_spec, update_spec};
pub use table::{inspect_text, print_services, print_tasks};
pub use view::{client, ports_text, Inspected, Listed, Summary};

/// `orc service ...`.
#[derive(Debug, Subcommand)]
pub enum ServiceCommand {
    /// Create a service.
    Create(Box<CreateArgs>),
    /// Change a service; its tasks are replaced per its update settings.
    Update(Box<UpdateArgs>),
    /// Set the replica count of services: NAME=N ...
    Scale {
        /// Return at once instead of waiting for convergence.
        #[arg(short, long)]
        detach: bool,
        /// NAME=REPLICAS, one or more.
        #[arg(required = true)]
        pairs: Vec<String>,
    },
    /// Put a service's previous spec back, under its rollback settings.
    Rollback {
        /// Return at once instead of following the rollback.
        #[arg(short, long)]
        detach: bool,
        /// Service name or id.
        service: String,
    },
    /// Remove services.
    #[command(alias = "remove")]
    Rm {
        /// Services.
        #[arg(required = true)]
        services: Vec<String>,
    },
    /// List services.
    #[command(alias = "list")]
    Ls {
        /// Output format.
        #[arg(long, value_enum, default_value_t)]
        format: Format,
    },
    /// List a service's tasks, with their history.
    Ps {
        /// Service name or id.
        service: String,
        #[command(flatten)]
        flags: PsFlags,
    },
    /// Show a service's spec and status (JSON; `--pretty`: a short text).
    Inspect {
        /// Service names or ids.
        #[arg(required = true)]
        services: Vec<String>,
        /// Output format (`table` is the same as `--pretty`).
        #[arg(long, value_enum, default_value_t = Format::Json)]
        format: Format,
        /// A short text for people: name, mode, image and its pinned digest, ports.
        #[arg(long)]
        pretty: bool,
    },
    /// Print a service's logs.
    Logs {
        /// Follow new lines.
        #[arg(short, long)]
        follow: bool,
        /// Only the last N lines of each task (`all` or a number).
        #[arg(long, default_value = "all")]
        tail: String,
        /// Show timestamps.
        #[arg(short, long)]
        timestamps: bool,
        /// Service name or id.
        service: String,
    },
}
/// Runs a service command.
pub async fn run(socket: &Path, c: ServiceCommand) -> Result<()> {
    match c {
        ServiceCommand::Create(a) => {
            let spec = create_spec(&a)?;
            let r = client(socket)
                .await?
                .create_service(proto::ServiceSpecRequest {
                    service: String::new(),
                    spec: Some(spec.into()),
                })
                .await?
                .into_inner();
            println!("{}", r.id);
            if !a.common.detach {
                wait_converged(socket, &r.id).await?;
            }
        }
        ServiceCommand::Update(a) => update(socket, &a).await?,
        ServiceCommand::Rollback { detach, service } => {
            let r = client(socket)
                .await?
                .rollback_service(proto::ServiceRef {
                    service,
                    ..Default::default()
                })
                .await?
                .into_inner();
            println!("{}", r.service);
            if !detach {
                wait_update(socket, &r.id, r.version, true).await?;
            }
        }
        ServiceCommand::Scale { detach, pairs } => scale(socket, detach, &pairs).await?,
        ServiceCommand::Rm { services } => {
            let mut c = client(socket).await?;
            for s in services {
                c.remove_service(proto::ServiceRef {
                    service: s.clone(),
                    ..Default::default()
                })
                .await?;
                println!("{s}");
            }
        }
        ServiceCommand::Ls { format } => {
            let v = view::list(&mut client(socket).await?).await?;
            if format == Format::Json {
                let json: Vec<_> = v.iter().map(Summary::to_json).collect();
                println!("{}", serde_json::to_string_pretty(&json)?);
                return Ok(());
            }
            print_services(&v);
        }
        ServiceCommand::Ps { service, flags } => {
            let PsFlags {
                filters,
                no_trunc,
                format,
            } = flags;
            let filter = TaskFilter::parse(&filters)?;
            let mut tasks = view::tasks(&mut client(socket).await?, &service).await?;
            tasks.retain(|l| filter.admits(l));
            if format == Format::Json {
                let json: Vec<_> = tasks.iter().map(Listed::to_json).collect();
                println!("{}", serde_json::to_string_pretty(&json)?);
                return Ok(());
            }
            print_tasks(&tasks, no_trunc);
        }
        ServiceCommand::Inspect {
            services,
            format,
            pretty,
        } => inspect(socket, &services, format, pretty).await?,
        ServiceCommand::Logs {
            follow,
            tail,
            timestamps,
            service,
        } => logs(socket, follow, &tail, timestamps, service).await?,
    }
    Ok(())
}

/// `service scale NAME=N ...`, then each followed to convergence unless `detach`.
async fn scale(socket: &Path, detach: bool, pairs: &[String]) -> Result<()> {
    let mut c = client(socket).await?;
    let mut ids = vec![];
    for p in pairs {
        let Some((name, n)) = p.split_once('=') else {
            return Err(Error::InvalidInput(format!(
                "scale: expected SERVICE=REPLICAS, found {p:?}"
            )));
        };
        let n: u64 = n.parse().map_err(|_| {
            Error::InvalidInput(format!("scale: {n:?} is not a number of replicas"))
        })?;
        let r = c
            .scale_service(proto::ScaleRequest {
                service: name.to_string(),
                replicas: n,
            })
            .await?
            .into_inner();
        println!("{} scaled to {n}", r.service);
        ids.push(r.id);
    }
    if !detach {
        for id in ids {
            wait_converged(socket, &id).await?;
        }
    }
    Ok(())
}

/// `service logs`: the lines of its tasks, stderr to stderr.
async fn logs(
    socket: &Path,
    follow: bool,
    tail: &str,
    timestamps: bool,
    service: String,
) -> Result<()> {
    let tail: i64 = if tail == "all" {
        -1
    } else {
        tail.parse().map_err(|_| {
            Error::InvalidInput(format!("--tail: expected all or a number, found {tail:?}"))
        })?
    };
    let mut stream = client(socket)
        .await?
        .service_logs(proto::LogsRequest {
            service,
            follow,
            tail,
            timestamps,
            task_ids: vec![],
        })
        .await?
        .into_inner();
    while let Some(line) = stream.message().await? {
        if line.notice {
            eprintln!("warning: {}", line.line);
            continue;
        }
        let text = format!("{}    | {}", line.source, line.line.trim_end_matches('\n'));
        if line.stderr {
            eprintln!("{text}");
        } else {
            println!("{text}");
        }
    }
    Ok(())
}

/// `service update`: the spec in force, changed by the flags, then the update followed
/// unless `-d`.
async fn update(socket: &Path, a: &UpdateArgs) -> Result<()> {
    let mut c = client(socket).await?;
    let current = view::inspect(&mut c, &a.service).await?;
    let mut spec = current.service.spec;
    // The spec names networks by id; the flags by name. Names go back: the control API
    // resolves them again.
    for att in &mut spec.networks {
        if let Some(n) = current.networks.iter().find(|n| n.id == att.network.0) {
            att.network.0 = n.name.clone();
        }
    }
    let spec = update_spec(spec, a)?;
    let r = c
        .update_service(proto::ServiceSpecRequest {
            service: a.service.clone(),
            spec: Some(spec.into()),
        })
        .await?
        .into_inner();
    println!("{}", r.service);
    if !a.common.detach {
        wait_update(socket, &r.id, r.version, false).await?;
    }
    Ok(())
}

/// `service inspect`: JSON (the contract), or text with `--pretty`.
async fn inspect(socket: &Path, services: &[String], format: Format, pretty: bool) -> Result<()> {
    let mut c = client(socket).await?;
    let mut out = vec![];
    for s in services {
        out.push(view::inspect(&mut c, s).await?);
    }
    if pretty || format == Format::Table {
        let texts: Vec<String> = out.iter().map(inspect_text).collect();
        print!("{}", texts.join("\n"));
    } else {
        let json: Vec<_> = out.iter().map(Inspected::to_json).collect();
        println!("{}", serde_json::to_string_pretty(&json)?);
    }
    Ok(())
}

#[cfg(test)]
mod tests;
