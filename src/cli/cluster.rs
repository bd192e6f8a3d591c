//! `orc daemon`, `init`, `join`, `join-token`, `leave`, `info`, `cluster update`,
//! `unlock`, `unlock-key`.

use std::path::{Path, PathBuf};

use clap::{Args, Subcommand};

use super::{connect, parse_duration, Format};
use crate::daemon::{Daemon, DaemonConfig, RaftTimings};
use crate::error::{Error, Result};
use crate::proto::{self, local_client::LocalClient};

/// `orc daemon`.
#[derive(Debug, Args)]
pub struct DaemonArgs {
    /// Where the node keeps its state.
    #[arg(long, default_value = "/var/lib/orc")]
    pub data_dir: PathBuf,
    /// The local control socket to serve.
    #[arg(long, default_value = super::DEFAULT_SOCKET)]
    pub socket: PathBuf,
    /// The Docker engine of this node.
    #[arg(long, env = "DOCKER_HOST")]
    pub docker_host: Option<String>,
    /// Raft heartbeat period.
    #[arg(long, default_value = "100ms")]
    pub raft_heartbeat: String,
    /// Raft election time-out, lower bound (the upper bound is twice this). A follower
    /// that knew a leader stands for election after the leader's lease (the upper
    /// bound) plus a random time-out: 0.9–1.2 s with the default.
    #[arg(long, default_value = "300ms")]
    pub raft_election_timeout: String,
    /// Log entries after which Raft takes a snapshot and compacts its log.
    #[arg(long, default_value_t = 5000, hide = true)]
    pub raft_snapshot_logs: u64,
    /// The shortest certificate validity `orc init --cert-expiry` may set on this daemon
    /// (for tests of renewal; operators keep the default).
    #[arg(long, default_value = "1h", hide = true)]
    pub min_cert_expiry: String,
    /// TCP port of the data path: other nodes' meshes reach this node's tasks there
    /// (Swarm's `--data-path-port` number; 0: any free port). If it is taken, a free
    /// port is used and the daemon says so.
    #[arg(long, default_value_t = crate::mesh::tunnel::DEFAULT_DATA_PATH_PORT)]
    pub data_path_port: u16,
    /// A generic resource this node offers, KIND=N (gpu=2), as dockerd's
    /// `--node-generic-resource`; repeatable. Tasks reserving it are placed against it.
    #[arg(long = "node-generic-resource")]
    pub node_generic_resource: Vec<String>,
    /// Take a backup this often while this node is a manager (each manager its own, of
    /// its own applied state), into DATA_DIR/backups/orc-backup-<time>.orcbak.
    #[arg(long, value_name = "DURATION")]
    pub backup_schedule: Option<String>,
    /// How many scheduled backups to keep (the newest).
    #[arg(long, default_value_t = 5, value_name = "N")]
    pub backup_keep: usize,
    /// Serve Prometheus metrics at http://ADDR/metrics (IP:PORT; off unless given).
    /// Anyone who reaches the address may read them: a non-loopback address is refused
    /// unless --metrics-allow-remote is given too.
    #[arg(long)]
    pub metrics_addr: Option<String>,
    /// Let --metrics-addr be an address other machines can reach (no authentication).
    #[arg(long, requires = "metrics_addr")]
    pub metrics_allow_remote: bool,
    /// Serve the live web dashboard at http://ADDR/ while this node is a manager
    /// (IP:PORT; off unless given). It asks for the token `orc dashboard token` prints.
    /// A non-loopback address is refused unless --dashboard-allow-remote is given too.
    #[arg(long)]
    pub dashboard_addr: Option<String>,
    /// Let --dashboard-addr be an address other machines can reach (plain HTTP: put TLS
    /// in front).
    #[arg(long, requires = "dashboard_addr")]
    pub dashboard_allow_remote: bool,
}

/// The resources of `--node-generic-resource` (the same kind twice adds up).
fn node_generic_resources(flags: &[String]) -> Result<std::collections::BTreeMap<String, u64>> {
    let bad = |w: String| Error::InvalidInput(format!("--node-generic-resource: {w}"));
    let mut out = std::collections::BTreeMap::new();
    for f in flags {
        let (kind, n) = crate::store::service::parse_generic_resource(f).map_err(bad)?;
        let total: &mut u64 = out.entry(kind).or_default();
        *total = total.saturating_add(n);
    }
    crate::store::service::check_generic_resources(&out).map_err(bad)?;
    Ok(out)
}

/// `orc init`.
#[derive(Debug, Args)]
pub struct InitArgs {
    /// Address the other nodes use to reach this one: IP[:PORT] (port 4242 by default).
    #[arg(long)]
    pub advertise_addr: String,
    /// Address the cluster port listens on (default 0.0.0.0:<advertised port>).
    #[arg(long, default_value = "")]
    pub listen_addr: String,
    /// Validity of node certificates.
    #[arg(long, default_value = "90d")]
    pub cert_expiry: String,
    /// Period of node heartbeats (a node is down after 3 missed periods).
    #[arg(long, default_value = "500ms")]
    pub heartbeat_period: String,
    /// Virtual IPs of services and tasks (and the cluster DNS at its second address)
    /// come from this IPv4 network; every node routes it to itself on `lo`, so it must
    /// not be used by anything the nodes or their containers need to reach.
    #[arg(long, default_value = crate::store::vip::DEFAULT_VIP_RANGE)]
    pub vip_range: String,
    /// Lock restarted managers until `orc unlock` is given the unlock key printed here.
    #[arg(long)]
    pub autolock: bool,
    /// Start the new cluster from a backup (`orc cluster backup`): its services,
    /// networks, secrets, configs, node labels and settings (new CA and join tokens).
    #[arg(long, value_name = "FILE")]
    pub restore: Option<PathBuf>,
    /// The unlock key of an autolocked cluster's backup (read from stdin if the backup
    /// needs one and this is not given).
    #[arg(long, requires = "restore")]
    pub unlock_key: Option<String>,
    /// On a surviving manager of a cluster that lost a majority of its managers for
    /// good: make it the only manager, keeping the cluster's state, CA and nodes (the
    /// other managers are removed). Refused while the cluster has a quorum.
    #[arg(
        long,
        conflicts_with_all = ["listen_addr", "cert_expiry", "heartbeat_period", "vip_range", "autolock", "restore"]
    )]
    pub force_new_cluster: bool,
}

/// `orc cluster`.
#[derive(Debug, Subcommand)]
pub enum ClusterCommand {
    /// Change cluster-wide settings.
    Update(ClusterUpdateArgs),
    /// Write a backup of the cluster's state to FILE (mode 0600; secrets stay sealed).
    Backup(BackupArgs),
}

/// `orc cluster backup`.
#[derive(Debug, Args)]
pub struct BackupArgs {
    /// The file to write (replaced atomically).
    pub file: PathBuf,
}

/// `orc cluster update`.
#[derive(Debug, Args)]
pub struct ClusterUpdateArgs {
    /// Lock restarted managers until `orc unlock` (true), or keep the data key in a
    /// 0600 file (false).
    #[arg(long, value_name = "true|false")]
    pub autolock: Option<bool>,
}

/// `orc unlock-key`.
#[derive(Debug, Args)]
pub struct UnlockKeyArgs {
    /// Print the key only.
    #[arg(short, long)]
    pub quiet: bool,
    /// Replace the unlock key; every manager re-wraps its data key with the new one.
    #[arg(long)]
    pub rotate: bool,
}

/// `orc join`.
#[derive(Debug, Args)]
pub struct JoinArgs {
    /// The join token (`orc join-token worker|manager` on a manager prints it).
    #[arg(long)]
    pub token: String,
    /// Address the other nodes use to reach this one: IP[:PORT] (default: the address
    /// that routes to the manager, port 4242).
    #[arg(long, default_value = "")]
    pub advertise_addr: String,
    /// Address the cluster port listens on (default 0.0.0.0:<advertised port>).
    #[arg(long, default_value = "")]
    pub listen_addr: String,
    /// A manager of the cluster: IP[:PORT].
    pub remote_addr: String,
}

/// `orc join-token`.
#[derive(Debug, Args)]
pub struct JoinTokenArgs {
    /// worker or manager.
    pub role: String,
    /// Print the token only.
    #[arg(short, long)]
    pub quiet: bool,
    /// Replace the token's secret: the old token stops working for new joins.
    #[arg(long)]
    pub rotate: bool,
}

/// `orc leave`.
#[derive(Debug, Args)]
pub struct LeaveArgs {
    /// Leave even as a manager.
    #[arg(short, long)]
    pub force: bool,
}

/// `orc info`.
#[derive(Debug, Args)]
pub struct InfoArgs {
    /// Output format.
    #[arg(long, value_enum, default_value_t)]
    pub format: Format,
}

/// Raises the soft limit of open files to the hard one, as dockerd and containerd do:
/// every connection the routing mesh relays holds two descriptors, and the usual soft
/// limit of 1024 would cap a node at about 500 connections.
fn raise_open_files_limit() {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit and setrlimit only read and write the struct passed.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) != 0 || lim.rlim_cur >= lim.rlim_max {
            return;
        }
        let was = lim.rlim_cur;
        lim.rlim_cur = lim.rlim_max;
        if libc::setrlimit(libc::RLIMIT_NOFILE, &lim) == 0 {
            tracing::debug!(from = was, to = lim.rlim_cur, "raised the open files limit");
        }
    }
}

/// Runs a node until SIGINT or SIGTERM.
pub async fn daemon(a: DaemonArgs) -> Result<()> {
    let hb = parse_duration("--raft-heartbeat", &a.raft_heartbeat)?;
    let el = parse_duration("--raft-election-timeout", &a.raft_election_timeout)?;
    if hb.is_zero() || el <= hb {
        return Err(Error::InvalidInput(
            "--raft-election-timeout must be longer than --raft-heartbeat".into(),
        ));
    }
    let dashboard = match &a.dashboard_addr {
        Some(addr) => {
            let (addr, remote) = crate::dashboard::check_addr(addr, a.dashboard_allow_remote)?;
            Some((crate::dashboard::bind(addr).await?, remote))
        }
        None => None,
    };
    let cfg = DaemonConfig {
        data_dir: a.data_dir,
        socket: a.socket.clone(),
        docker_host: a.docker_host,
        raft: RaftTimings {
            heartbeat_ms: hb.as_millis() as u64,
            election_min_ms: el.as_millis() as u64,
            election_max_ms: el.as_millis() as u64 * 2,
            snapshot_logs: a.raft_snapshot_logs.max(2),
        },
        executor: None,
        min_cert_expiry_secs: parse_duration("--min-cert-expiry", &a.min_cert_expiry)?.as_secs(),
        data_path_port: a.data_path_port,
        generic_resources: node_generic_resources(&a.node_generic_resource)?,
        metrics: a.metrics_addr.is_some(),
        dashboard_addr: dashboard.as_ref().map(|((_, bound), _)| *bound),
    };
    let schedule = match &a.backup_schedule {
        Some(every) => {
            let every = parse_duration("--backup-schedule", every)?;
            if every < std::time::Duration::from_secs(1) {
                return Err(Error::InvalidInput(
                    "--backup-schedule: must be at least 1s".into(),
                ));
            }
            if a.backup_keep == 0 {
                return Err(Error::InvalidInput(
                    "--backup-keep: must be at least 1".into(),
                ));
            }
            Some(every)
        }
        None => None,
    };
    let metrics_addr = a
        .metrics_addr
        .as_deref()
        .map(|m| crate::metrics::server::check_addr(m, a.metrics_allow_remote))
        .transpose()?;
    raise_open_files_limit();
    let stop = tokio_util::sync::CancellationToken::new();
    crate::daemon::memory::spawn_trimmer(stop.clone());
    let listener = crate::net::bind_local(&a.socket)?;
    let d = Daemon::open(cfg, stop.clone()).await?;
    if let Some(every) = schedule {
        let dir = d.config().data_dir.join(crate::backup::BACKUP_DIR);
        let d2 = d.clone();
        tokio::spawn(crate::backup::run_schedule(
            dir,
            every,
            a.backup_keep,
            move || d2.manager().ok(),
            stop.clone(),
        ));
    }
    if let Some((addr, remote)) = metrics_addr {
        let d2 = d.clone();
        let refresh: crate::metrics::server::Refresh =
            std::sync::Arc::new(move |_| d2.refresh_metrics());
        let bound =
            crate::metrics::server::serve(addr, d.metrics().clone(), refresh, stop.clone()).await?;
        if remote {
            tracing::warn!(addr = %bound, "metrics served to anyone who reaches this address (no authentication)");
            eprintln!("warning: --metrics-addr {bound} is reachable from other machines; anyone who reaches it may read the metrics");
        }
        tracing::info!(addr = %bound, "metrics at http://{bound}/metrics");
    }
    if let Some(((listener, bound), remote)) = dashboard {
        crate::dashboard::serve(listener, std::sync::Arc::new(d.clone()), stop.clone());
        if remote {
            tracing::warn!(addr = %bound, "dashboard served over plain HTTP to other machines");
            eprintln!("warning: --dashboard-addr {bound} is reachable from other machines over plain HTTP; its token crosses the network in the clear");
        }
        tracing::info!(addr = %bound, "dashboard at http://{bound}/ (orc dashboard token prints its address with the token)");
    }
    let incoming = crate::net::local_incoming(listener, stop.clone());
    let router = crate::api::local_router(d.clone());
    let serve =
        tokio::spawn(router.serve_with_incoming_shutdown(incoming, stop.clone().cancelled_owned()));
    tracing::info!(socket = %a.socket.display(), "orc daemon ready");
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {},
        _ = term.recv() => {},
    }
    tracing::info!("shutting down");
    d.shutdown().await;
    let _ = serve.await;
    let _ = std::fs::remove_file(&a.socket);
    Ok(())
}

async fn local(socket: &Path) -> Result<LocalClient<tonic::transport::Channel>> {
    Ok(LocalClient::new(connect(socket).await?))
}

/// `orc init`.
pub async fn init(socket: &Path, a: InitArgs) -> Result<()> {
    if a.force_new_cluster {
        return force_new_cluster(socket, a.advertise_addr).await;
    }
    let validity = parse_duration("--cert-expiry", &a.cert_expiry)?;
    let hb = parse_duration("--heartbeat-period", &a.heartbeat_period)?;
    if validity.as_secs() < 10 {
        return Err(Error::InvalidInput(
            "--cert-expiry: must be at least 10s".into(),
        ));
    }
    let vip_range = crate::store::vip::VipRange::parse(&a.vip_range)?;
    if hb.as_millis() < 50 {
        return Err(Error::InvalidInput(
            "--heartbeat-period: must be at least 50ms".into(),
        ));
    }
    let (restore_path, restore_unlock_key, restored) = match &a.restore {
        Some(file) => {
            if a.autolock {
                return Err(Error::InvalidInput(
                    "--autolock: a restored cluster is autolocked as its backup was; leave it out with --restore".into(),
                ));
            }
            // Checked here for a clear error; the daemon reads and checks it again.
            let b = crate::backup::Backup::read_file(file)?;
            let key = match (&a.unlock_key, b.meta.autolock) {
                (Some(k), _) => k.clone(),
                (None, true) => tokio::task::spawn_blocking(read_secret_line)
                    .await
                    .map_err(Error::internal)??,
                (None, false) => String::new(),
            };
            let path = std::path::absolute(file)
                .map_err(|e| Error::InvalidInput(format!("{}: {e}", file.display())))?;
            (path.display().to_string(), key, Some(b.meta))
        }
        None => (String::new(), String::new(), None),
    };
    let r = local(socket)
        .await?
        .init(proto::InitRequest {
            advertise_addr: a.advertise_addr,
            listen_addr: a.listen_addr,
            cert_validity_secs: validity.as_secs(),
            heartbeat_period_ms: hb.as_millis() as u64,
            vip_range: vip_range.to_string(),
            autolock: a.autolock,
            restore_path,
            restore_unlock_key,
            ..Default::default()
        })
        .await?
        .into_inner();
    if let Some(m) = restored {
        println!(
            "Cluster restored from a backup of cluster {} at index {}: {} services, {} networks, {} secrets, {} configs, {} nodes (kept as down until their machines rejoin).",
            m.cluster_id, m.index, m.services, m.networks, m.secrets, m.configs, m.nodes
        );
    }
    println!(
        "Cluster initialized: current node ({}) is now a manager.\n",
        r.node_id
    );
    println!("To add a worker to this cluster, run the following command:\n");
    println!(
        "    orc join --token {} {}\n",
        r.worker_token, r.advertise_addr
    );
    println!("To add a manager to this cluster, run the following command:\n");
    println!(
        "    orc join --token {} {}",
        r.manager_token, r.advertise_addr
    );
    if !r.unlock_key.is_empty() {
        print_unlock_key(&r.unlock_key);
    }
    Ok(())
}

/// `orc init --force-new-cluster`.
async fn force_new_cluster(socket: &Path, advertise_addr: String) -> Result<()> {
    let r = local(socket)
        .await?
        .init(proto::InitRequest {
            advertise_addr,
            force_new_cluster: true,
            ..Default::default()
        })
        .await?
        .into_inner();
    println!(
        "Forced a new cluster: current node ({}) is now its only manager, with the cluster's state.",
        r.node_id
    );
    for id in &r.removed_managers {
        println!("Removed manager {id}: it must leave and join again to come back.");
    }
    println!("\nTo add a manager to this cluster, run the following command:\n");
    println!(
        "    orc join --token {} {}",
        r.manager_token, r.advertise_addr
    );
    Ok(())
}

fn print_unlock_key(key: &str) {
    println!("\nTo unlock a restarted manager, run `orc unlock` and give it this key:\n");
    println!("    {key}\n");
    println!("Keep it in a safe place, such as a password manager: a restarted manager serves");
    println!("nothing until it is given. `orc unlock-key` on an unlocked manager shows it again.");
}

/// `orc cluster ...`.
pub async fn cluster(socket: &Path, c: ClusterCommand) -> Result<()> {
    match c {
        ClusterCommand::Backup(a) => backup(socket, &a.file).await,
        ClusterCommand::Update(a) => {
            let Some(autolock) = a.autolock else {
                return Err(Error::InvalidInput(
                    "cluster update: nothing to change: give --autolock=true|false".into(),
                ));
            };
            let r = proto::control_client::ControlClient::new(connect(socket).await?)
                .update_cluster(proto::UpdateClusterRequest {
                    autolock: autolock.to_string(),
                })
                .await?
                .into_inner();
            if !r.unlock_key.is_empty() {
                println!("Autolock is on.");
                print_unlock_key(&r.unlock_key);
            } else if r.autolock {
                println!("Autolock is on (`orc unlock-key` shows the key).");
            } else {
                println!("Autolock is off: managers keep the data key in a 0600 file.");
            }
            Ok(())
        }
    }
}

/// `orc unlock-key`.
pub async fn unlock_key(socket: &Path, a: UnlockKeyArgs) -> Result<()> {
    let r = proto::control_client::ControlClient::new(connect(socket).await?)
        .unlock_key(proto::UnlockKeyRequest { rotate: a.rotate })
        .await?
        .into_inner();
    if a.quiet {
        println!("{}", r.key);
    } else {
        if a.rotate {
            println!(
                "Rotated the unlock key: every manager now wraps its data key with the new one."
            );
            println!("Keep the previous key until every manager has run since: one that was down");
            println!("during the rotation still needs it.");
        }
        print_unlock_key(&r.key);
    }
    Ok(())
}

/// `orc unlock`: the key from stdin (a prompt, without echo, on a terminal).
pub async fn unlock(socket: &Path) -> Result<()> {
    let key = tokio::task::spawn_blocking(read_secret_line)
        .await
        .map_err(Error::internal)??;
    if key.trim().is_empty() {
        return Err(Error::InvalidInput("unlock: no key given on stdin".into()));
    }
    local(socket)
        .await?
        .unlock(proto::UnlockRequest { key })
        .await?;
    Ok(())
}

/// One line from stdin; on a terminal, prompts on stderr and turns echo off meanwhile.
fn read_secret_line() -> Result<String> {
    use std::io::{BufRead, IsTerminal, Write};
    let stdin = std::io::stdin();
    let tty = stdin.is_terminal();
    // SAFETY: termios is plain data; tcgetattr/tcsetattr only read and write it.
    let saved = if tty {
        eprint!("Enter the unlock key: ");
        let _ = std::io::stderr().flush();
        unsafe {
            let mut t: libc::termios = std::mem::zeroed();
            if libc::tcgetattr(0, &mut t) == 0 {
                let saved = t;
                t.c_lflag &= !libc::ECHO;
                libc::tcsetattr(0, libc::TCSANOW, &t);
                Some(saved)
            } else {
                None
            }
        }
    } else {
        None
    };
    let mut line = String::new();
    let r = stdin.lock().read_line(&mut line);
    if let Some(t) = saved {
        // SAFETY: as above.
        unsafe {
            libc::tcsetattr(0, libc::TCSANOW, &t);
        }
    }
    if tty {
        eprintln!();
    }
    r?;
    Ok(line.trim().to_string())
}

/// `orc join`.
pub async fn join(socket: &Path, a: JoinArgs) -> Result<()> {
    // An empty --advertise-addr is filled in by the daemon: the address that routes to
    // the manager from the daemon's network, which may not be the CLI's.
    let advertise = a.advertise_addr;
    let r = local(socket)
        .await?
        .join(proto::JoinRequest {
            token: a.token,
            remote_addr: a.remote_addr,
            advertise_addr: advertise,
            listen_addr: a.listen_addr,
        })
        .await?
        .into_inner();
    println!(
        "This node ({}) joined the cluster as a {}.",
        r.node_id, r.role
    );
    Ok(())
}

/// `orc join-token`.
pub async fn join_token(socket: &Path, a: JoinTokenArgs) -> Result<()> {
    if a.role != "worker" && a.role != "manager" {
        return Err(Error::InvalidInput(format!(
            "join-token: expected worker or manager, found {:?}",
            a.role
        )));
    }
    let r = proto::control_client::ControlClient::new(connect(socket).await?)
        .join_token(proto::JoinTokenRequest {
            role: a.role.clone(),
            rotate: a.rotate,
        })
        .await?
        .into_inner();
    if a.quiet {
        println!("{}", r.token);
    } else {
        if a.rotate {
            println!("Rotated the {} join token.\n", a.role);
        }
        println!(
            "To add a {} to this cluster, run the following command:\n",
            a.role
        );
        println!("    orc join --token {} {}", r.token, r.manager_addr);
    }
    Ok(())
}

/// `orc leave`.
pub async fn leave(socket: &Path, a: LeaveArgs) -> Result<()> {
    local(socket)
        .await?
        .leave(proto::LeaveRequest { force: a.force })
        .await?;
    println!("Node left the cluster.");
    Ok(())
}

/// `orc info`.
pub async fn info(socket: &Path, a: InfoArgs) -> Result<()> {
    let r = local(socket)
        .await?
        .info(proto::Empty {})
        .await?
        .into_inner();
    if a.format == Format::Json {
        let v = serde_json::json!({
            "state": r.state,
            "node_id": r.node_id,
            "role": r.role,
            "cluster_id": r.cluster_id,
            "advertise_addr": r.advertise_addr,
            "leader_id": r.leader_id,
            "leader_addr": r.leader_addr,
            "managers": r.managers,
            "nodes": r.nodes,
            "managers_count": r.managers_count,
            "cert_expires": r.cert_expires,
            "raft_term": r.raft_term,
            "raft_last_applied": r.raft_last_applied,
        });
        println!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(());
    }
    println!("Cluster: {}", r.state);
    if r.state == "locked" {
        println!(" Node ID: {}", r.node_id);
        println!(" Cluster ID: {}", r.cluster_id);
        println!(" Role: {}", r.role);
        println!(" This manager is locked: run `orc unlock` with the cluster's unlock key.");
        return Ok(());
    }
    if r.state != "active" {
        return Ok(());
    }
    println!(" Node ID: {}", r.node_id);
    println!(" Cluster ID: {}", r.cluster_id);
    println!(" Role: {}", r.role);
    println!(" Address: {}", r.advertise_addr);
    println!(" Managers: {}", r.managers.join(", "));
    println!(" Certificate expires: {}", r.cert_expires);
    if r.role == "manager" {
        println!(" Nodes: {} ({} managers)", r.nodes, r.managers_count);
        println!(" Leader: {} ({})", r.leader_id, r.leader_addr);
        println!(
            " Raft: term {}, applied index {}",
            r.raft_term, r.raft_last_applied
        );
    }
    Ok(())
}

/// `orc cluster backup FILE`: receives the backup from the local daemon (bounded),
/// checks it as a restore would, and writes it atomically, mode 0600.
pub async fn backup(socket: &Path, file: &Path) -> Result<()> {
    use tokio_stream::StreamExt;
    let max = (crate::backup::MAGIC.len() + crate::backup::MAX_HEADER_BYTES) as u64
        + crate::backup::MAX_BODY_BYTES;
    let mut stream = local(socket)
        .await?
        .max_decoding_message_size(2 * crate::api::local::BACKUP_CHUNK)
        .backup(proto::Empty {})
        .await?
        .into_inner();
    let mut bytes = vec![];
    while let Some(chunk) = stream.next().await {
        let chunk = chunk?;
        if bytes.len() as u64 + chunk.data.len() as u64 > max {
            return Err(Error::Internal(format!(
                "backup: the daemon sent more than {max} bytes"
            )));
        }
        bytes.extend_from_slice(&chunk.data);
    }
    let b = crate::backup::Backup::decode(&bytes, "the backup received")?;
    crate::backup::write_atomic(file, &bytes)?;
    let m = b.meta;
    println!(
        "Backup of cluster {} at index {} written to {} ({} bytes): {} services, {} tasks, {} networks, {} secrets, {} configs, {} nodes.",
        m.cluster_id,
        m.index,
        file.display(),
        bytes.len(),
        m.services,
        m.tasks,
        m.networks,
        m.secrets,
        m.configs,
        m.nodes
    );
    if m.autolock {
        println!("The cluster is autolocked: a restore asks for its current unlock key.");
    } else {
        println!("It holds the cluster's data key: keep it as safe as a manager's data dir.");
    }
    Ok(())
}
