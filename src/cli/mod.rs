//! The command line: one file per noun, behind one clap enum.
//!
//! Client commands talk to the local daemon over its unix socket (`-H unix:///path` or
//! `ORC_HOST`); the daemon answers or forwards to the leader. Every list has
//! `--format json`, and every failure is one `error: ...` line (printed by `main`).

pub mod ca;
pub mod cluster;
pub mod dashboard;
pub mod events;
pub mod fields;
pub mod network;
pub mod node;
pub mod secret;
pub mod service;
pub mod stack;
pub mod volume;

use std::path::PathBuf;
use std::time::Duration;

use clap::{Parser, Subcommand, ValueEnum};
use tonic::transport::Channel;

use crate::error::{Error, Result};

/// The default local control socket.
pub const DEFAULT_SOCKET: &str = "/run/orc/orc.sock";

/// orc: a container orchestrator in one binary.
#[derive(Debug, Parser)]
#[command(name = "orc", version, about, propagate_version = true)]
pub struct Cli {
    /// The daemon's control socket (unix:///path or a path).
    #[arg(short = 'H', long = "host", env = "ORC_HOST", global = true, default_value = DEFAULT_SOCKET)]
    pub host: String,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Top-level commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run a node.
    Daemon(cluster::DaemonArgs),
    /// Create a new cluster with this node as its first manager.
    Init(cluster::InitArgs),
    /// Join this node to a cluster.
    Join(cluster::JoinArgs),
    /// Print (or rotate) a join token.
    JoinToken(cluster::JoinTokenArgs),
    /// Take this node out of its cluster.
    Leave(cluster::LeaveArgs),
    /// Show what this node is and sees.
    Info(cluster::InfoArgs),
    /// Cluster-wide settings.
    #[command(subcommand)]
    Cluster(cluster::ClusterCommand),
    /// Unlock a locked manager (autolock): reads the unlock key from stdin.
    Unlock,
    /// Show (or rotate) the cluster's unlock key (autolock).
    UnlockKey(cluster::UnlockKeyArgs),
    /// Manage nodes.
    #[command(subcommand)]
    Node(node::NodeCommand),
    /// Manage services.
    #[command(subcommand)]
    Service(service::ServiceCommand),
    /// Manage networks.
    #[command(subcommand)]
    Network(network::NetworkCommand),
    /// List the volumes of every node (and where following volumes live).
    #[command(subcommand)]
    Volume(volume::VolumeCommand),
    /// Manage stacks (compose files).
    #[command(subcommand)]
    Stack(stack::StackCommand),
    /// Show the root CA, or rotate it.
    Ca(ca::CaArgs),
    /// Manage secrets (mounted at /run/secrets/ in the tasks that use them).
    #[command(subcommand)]
    Secret(secret::SecretCommand),
    /// Manage configs (files mounted read-only in the tasks that use them).
    #[command(subcommand)]
    Config(secret::SecretCommand),
    /// Show this manager's events (history with --since, then live).
    Events(events::EventsArgs),
    /// The web dashboard (`orc daemon --dashboard-addr`).
    #[command(subcommand)]
    Dashboard(dashboard::DashboardCommand),
}

/// Output format of list and inspect commands.
#[derive(Debug, Clone, Copy, Default, ValueEnum, PartialEq, Eq)]
pub enum Format {
    /// Human-readable table.
    #[default]
    Table,
    /// JSON for scripts.
    Json,
}

/// Runs the parsed command.
pub async fn run(cli: Cli) -> Result<()> {
    let socket = socket_path(&cli.host)?;
    match cli.command {
        Command::Daemon(a) => cluster::daemon(a).await,
        Command::Init(a) => cluster::init(&socket, a).await.map_err(fields::with_flags),
        Command::Join(a) => cluster::join(&socket, a).await.map_err(fields::with_flags),
        Command::JoinToken(a) => cluster::join_token(&socket, a).await,
        Command::Leave(a) => cluster::leave(&socket, a).await,
        Command::Info(a) => cluster::info(&socket, a).await,
        Command::Cluster(c) => cluster::cluster(&socket, c)
            .await
            .map_err(fields::with_flags),
        Command::Unlock => cluster::unlock(&socket).await,
        Command::UnlockKey(a) => cluster::unlock_key(&socket, a).await,
        Command::Node(c) => node::run(&socket, c).await.map_err(fields::with_flags),
        Command::Service(c) => service::run(&socket, c).await.map_err(fields::with_flags),
        Command::Network(c) => network::run(&socket, c).await,
        Command::Stack(c) => stack::run(&socket, c).await,
        Command::Volume(c) => volume::run(&socket, c).await,
        Command::Ca(a) => ca::run(&socket, a).await.map_err(fields::with_flags),
        Command::Secret(c) => secret::run(&socket, crate::store::secret::Kind::Secret, c).await,
        Command::Config(c) => secret::run(&socket, crate::store::secret::Kind::Config, c).await,
        Command::Events(a) => events::run(&socket, a).await,
        Command::Dashboard(c) => dashboard::run(&socket, c).await,
    }
}

/// The socket path named by `-H`.
pub fn socket_path(host: &str) -> Result<PathBuf> {
    if let Some(p) = host.strip_prefix("unix://") {
        return Ok(PathBuf::from(p));
    }
    if host.contains("://") {
        return Err(Error::InvalidInput(format!(
            "-H: expected unix:///path/to/orc.sock, found {host:?}"
        )));
    }
    Ok(PathBuf::from(host))
}

/// A channel to the local daemon.
pub async fn connect(socket: &std::path::Path) -> Result<Channel> {
    crate::net::local_channel(socket).await
}

/// Parses a duration flag (`500ms`, `1m30s`, `3h`, `90d`; a bare number is seconds:
/// [`crate::units::duration`]).
pub fn parse_duration(flag: &str, s: &str) -> Result<Duration> {
    crate::units::duration(s).ok_or_else(|| {
        Error::InvalidInput(format!(
            "{flag}: expected a duration such as 500ms, 5s, 1m30s, 3h or 90d, found {s:?}"
        ))
    })
}

/// Prints rows as aligned columns.
pub fn print_table(header: &[&str], rows: &[Vec<String>]) {
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for r in rows {
        for (i, c) in r.iter().enumerate() {
            widths[i] = widths[i].max(c.chars().count());
        }
    }
    let line = |cells: Vec<String>| {
        let mut out = String::new();
        for (i, c) in cells.iter().enumerate() {
            if i + 1 == cells.len() {
                out.push_str(c);
            } else {
                out.push_str(&format!("{:w$}   ", c, w = widths[i]));
            }
        }
        println!("{}", out.trim_end());
    };
    line(header.iter().map(|s| s.to_string()).collect());
    for r in rows {
        line(r.clone());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(
            parse_duration("f", "500ms").unwrap(),
            Duration::from_millis(500)
        );
        assert_eq!(
            parse_duration("f", "90d").unwrap(),
            Duration::from_secs(90 * 86400)
        );
        assert_eq!(parse_duration("f", "2").unwrap(), Duration::from_secs(2));
        let e = parse_duration("--cert-expiry", "soon").unwrap_err();
        assert!(
            e.to_string()
                .starts_with("--cert-expiry: expected a duration"),
            "{e}"
        );
    }

    #[test]
    fn host_flag() {
        assert_eq!(
            socket_path("unix:///tmp/x.sock").unwrap(),
            PathBuf::from("/tmp/x.sock")
        );
        assert!(socket_path("tcp://1.2.3.4:1").is_err());
    }
}
