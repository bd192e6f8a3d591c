//! The routing mesh: every published port answers on every node.
//!
//! No kernel module is involved (no IPVS, no VXLAN): the mesh is a user-space proxy in
//! the daemon. Docker publishes each task's container ports on ephemeral ports of the
//! task's own node, and the worker reports that mapping in the task status. The leader
//! turns the store into an endpoint table ([`table::endpoints`]): for each service
//! with ingress ports, its running tasks as `node IP : host port`. Every node receives
//! the table with its dispatcher session and listens on each published port
//! ([`Mesh::apply`]).
//!
//! - **TCP**: each accepted connection goes to the backend with the fewest active
//!   connections (ties taken in turn); a failed connect (a task that just died, a node
//!   that is gone) is retried on the next backend, so the client does not see it. Bytes
//!   are then copied both ways until either side closes.
//! - **UDP**: each client address gets its own socket to a backend chosen the same way,
//!   kept while datagrams flow and dropped after 30 s of silence.
//! - **Changes**: a task told to stop leaves the table before its agent stops it, and
//!   the table reaches every node with the next store change, so new connections stop
//!   going to it while established ones finish.
//!
//! `mode=host` ports are published by Docker on the task's node only; the mesh leaves
//! them alone. A published port may ask for HAProxy's PROXY protocol
//! ([`proxy_protocol`]): the backend then reads the client's address first.
//!
//! **Service discovery** uses the same proxy. Each service and each task has a virtual
//! IP from the cluster's range ([`crate::store::vip`]). [`Mesh::apply_endpoints`] routes
//! the whole range to `lo` with a single `local` route (this kernel has no dummy
//! device and no IPVS, and a local route needs neither), so a socket can bind any VIP.
//! The mesh then listens on `VIP:port` for each port the service's tasks expose (what
//! Docker mapped for them: published targets, `--expose`, the image's EXPOSE), balanced
//! over the tasks as for a published port, and on each task's VIP to that task alone.
//! Listeners use SO_REUSEPORT, so `VIP:80` coexists with a published `*:80` (the more
//! specific address wins). The cluster DNS ([`dns`]) listens on the range's second
//! address on every node and answers `NAME`, `tasks.NAME` and stack short names
//! ([`Endpoints::names`]); containers get it as their name server, and reach any VIP
//! through their bridge's gateway, that is, their own node's mesh.

pub mod clients;
pub mod dns;
pub mod iptables;
pub mod proxy_protocol;
pub mod relay;
pub mod table;
pub mod tunnel;
pub mod wire;

use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio_util::sync::CancellationToken;

use crate::store::service::{Protocol, ProxyProtocol};
use crate::store::vip::VipRange;
use crate::store::{NetworkId, NodeId};
pub use clients::Clients;
pub use table::{Dest, Endpoints, Route};

/// How long a connect to one backend may take before it is given up.
pub const CONNECT_TIMEOUT: Duration = Duration::from_millis(1000);
/// How long a connect may go unanswered before the next backend is tried beside it
/// (the first to answer gets the connection): a backend on a host that vanished
/// answers nothing at all, and a client should not wait out [`CONNECT_TIMEOUT`] for it.
pub const CONNECT_STAGGER: Duration = Duration::from_millis(200);
/// UDP sessions end after this much silence.
pub const UDP_IDLE: Duration = Duration::from_secs(30);

/// One backend and its load.
#[derive(Debug)]
pub struct BackendState {
    /// How it is shown and told apart ([`Dest::key`]).
    pub addr: String,
    /// Where connections go.
    pub dest: Dest,
    /// Connections (TCP) or sessions (UDP) in progress.
    pub active: AtomicUsize,
}

/// The backends of one route.
#[derive(Debug, Default)]
pub struct Backends {
    list: RwLock<Vec<Arc<BackendState>>>,
    turn: AtomicUsize,
    proxy: RwLock<ProxyProtocol>,
    allowed: RwLock<Option<Vec<NetworkId>>>,
}

impl Backends {
    /// Sets who may connect: `None`, anyone; `Some`, this node's containers on one of
    /// these networks ([`Clients::may_reach`]).
    pub fn set_allowed(&self, networks: Option<Vec<NetworkId>>) {
        *self.allowed.write().expect("backends lock") = networks;
    }

    /// Who may connect: `None`, anyone; `Some`, containers on these networks.
    pub fn allowed(&self) -> Option<Vec<NetworkId>> {
        self.allowed.read().expect("backends lock").clone()
    }

    /// Whether a client at `ip` may connect.
    pub fn admits(&self, clients: &Clients, ip: std::net::IpAddr) -> bool {
        match &*self.allowed.read().expect("backends lock") {
            None => true,
            Some(nets) => clients.may_reach(ip, nets),
        }
    }

    /// Sets the PROXY protocol header new connections send to their backend.
    pub fn set_proxy(&self, p: ProxyProtocol) {
        *self.proxy.write().expect("backends lock") = p;
    }

    /// The PROXY protocol header to send.
    pub fn proxy(&self) -> ProxyProtocol {
        *self.proxy.read().expect("backends lock")
    }

    /// Replaces the list, keeping the load counters of backends that stay.
    pub fn set(&self, dests: &[Dest]) {
        let mut list = self.list.write().expect("backends lock");
        let old: HashMap<String, Arc<BackendState>> =
            list.iter().map(|b| (b.addr.clone(), b.clone())).collect();
        *list = dests
            .iter()
            .map(|d| {
                let key = d.key();
                old.get(&key)
                    .filter(|b| b.dest == *d)
                    .cloned()
                    .unwrap_or_else(|| {
                        Arc::new(BackendState {
                            addr: key,
                            dest: d.clone(),
                            active: AtomicUsize::new(0),
                        })
                    })
            })
            .collect();
    }

    /// The backends in the order to try them: least loaded first; equal loads start at
    /// a rotating position so they share the work.
    pub fn order(&self) -> Vec<Arc<BackendState>> {
        let list = self.list.read().expect("backends lock").clone();
        if list.is_empty() {
            return list;
        }
        let start = self.turn.fetch_add(1, Ordering::Relaxed) % list.len();
        let mut rotated: Vec<Arc<BackendState>> = list[start..]
            .iter()
            .chain(list[..start].iter())
            .cloned()
            .collect();
        rotated.sort_by_key(|b| b.active.load(Ordering::Relaxed));
        rotated
    }

    /// A snapshot: address and load.
    pub fn snapshot(&self) -> Vec<(String, usize)> {
        self.list
            .read()
            .expect("backends lock")
            .iter()
            .map(|b| (b.addr.clone(), b.active.load(Ordering::Relaxed)))
            .collect()
    }
}

/// A route as the mesh serves it, for `node routes`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteView {
    /// tcp or udp.
    pub protocol: Protocol,
    /// The listening address: `*` for every address (a published port), else a VIP.
    pub address: String,
    /// The port listened on.
    pub port: u16,
    /// The service (and task, for a task VIP).
    pub service: String,
    /// The names of the networks whose containers it answers; empty for a published
    /// port, which answers anyone.
    pub networks: Vec<String>,
    /// Each backend with its open connections.
    pub backends: Vec<(String, usize)>,
}

type Key = (Protocol, Option<Ipv4Addr>, u16);

/// The node's data path, once the daemon has set it ([`Mesh::set_data_path`]).
pub type DataSlot = Arc<RwLock<Option<Arc<tunnel::DataPath>>>>;

/// A connection to a backend: direct, or through another node's data path.
enum Upstream {
    Tcp(TcpStream),
    Tunnel(Box<tunnel::TunnelStream>),
}

/// Connects to `b`, giving up after `give_up`.
async fn dial(b: &BackendState, data: &DataSlot, give_up: Duration) -> std::io::Result<Upstream> {
    let fut = async {
        match &b.dest {
            Dest::Direct(a) => TcpStream::connect(a).await.map(Upstream::Tcp),
            Dest::Tunnel {
                node_id,
                node,
                target,
                encrypted,
            } => {
                let dp = data
                    .read()
                    .unwrap_or_else(|e| e.into_inner())
                    .clone()
                    .ok_or_else(|| std::io::Error::other("this node has no data path yet"))?;
                dp.connect(*node_id, *node, target, *encrypted)
                    .await
                    .map(|t| Upstream::Tunnel(Box::new(t)))
                    .map_err(std::io::Error::other)
            }
        }
    };
    tokio::time::timeout(give_up, fut)
        .await
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "connect timed out"))?
}

struct Listener {
    service: String,
    backends: Arc<Backends>,
    stop: CancellationToken,
}

/// The mesh of one node.
pub struct Mesh {
    listeners: Mutex<HashMap<Key, Listener>>,
    bind_ip: String,
    stop: CancellationToken,
    discovery: tokio::sync::Mutex<Discovery>,
    clients: Arc<Clients>,
    data: DataSlot,
    /// The last endpoint table and this node's id, for the data path's questions.
    table: RwLock<Option<(Endpoints, NodeId)>>,
    /// The node's metrics, once set (listeners started before count nothing).
    metrics: std::sync::OnceLock<Arc<crate::metrics::Metrics>>,
}

/// Service discovery state: the VIP range routed to `lo` and the DNS server on it.
#[derive(Default)]
struct Discovery {
    range: Option<VipRange>,
    dns: Option<Arc<dns::DnsServer>>,
}

/// Binds a listening socket that shares its port with the mesh's other listeners:
/// SO_REUSEPORT lets `VIP:80` coexist with a published `*:80`, the kernel preferring
/// the more specific address, and lets several daemons of one cluster on one machine
/// (tests) serve the same VIPs.
pub fn bind_shared(addr: SocketAddr, protocol: Protocol) -> std::io::Result<socket2::Socket> {
    use socket2::{Domain, Socket, Type};
    let ty = match protocol {
        Protocol::Tcp => Type::STREAM,
        Protocol::Udp => Type::DGRAM,
    };
    let s = Socket::new(Domain::for_address(addr), ty, None)?;
    s.set_reuse_address(true)?;
    s.set_reuse_port(true)?;
    s.set_nonblocking(true)?;
    s.bind(&addr.into())?;
    if protocol == Protocol::Tcp {
        s.listen(1024)?;
    }
    Ok(s)
}

impl Mesh {
    /// A mesh listening on `bind_ip` (all addresses: `0.0.0.0`), stopped with `stop`.
    pub fn new(bind_ip: &str, stop: CancellationToken) -> Arc<Mesh> {
        Arc::new(Mesh {
            listeners: Mutex::new(HashMap::new()),
            bind_ip: bind_ip.to_string(),
            stop,
            discovery: Default::default(),
            clients: Default::default(),
            data: Default::default(),
            table: RwLock::new(None),
            metrics: std::sync::OnceLock::new(),
        })
    }

    /// Counts connections, bytes, failed connects and DNS queries into `metrics` (set
    /// once, before the first endpoint table; later calls are ignored).
    pub fn set_metrics(&self, metrics: Arc<crate::metrics::Metrics>) {
        let _ = self.metrics.set(metrics);
    }

    /// The handles a listener of `service` counts with (detached ones without metrics).
    fn meter(&self, service: &str) -> crate::metrics::ServiceMeter {
        match self.metrics.get() {
            Some(m) => m.mesh.meter(service),
            None => Default::default(),
        }
    }

    /// The node's data path, once set.
    pub fn data_path(&self) -> Option<Arc<tunnel::DataPath>> {
        self.data.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Sets the node's data path: remote tasks are reached through it.
    pub fn set_data_path(&self, dp: Arc<tunnel::DataPath>) {
        *self.data.write().unwrap_or_else(|e| e.into_inner()) = Some(dp);
    }

    /// Where a request that came through this node's data path leads: one of this
    /// node's running tasks, on a network its service is on, on a port it exposes, at
    /// its container address; refused otherwise.
    pub fn resolve(&self, req: &tunnel::Request) -> tunnel::Resolution {
        let table = self.table.read().unwrap_or_else(|e| e.into_inner());
        let Some((e, me)) = table.as_ref() else {
            return tunnel::Resolution::Refused;
        };
        let t = &req.target;
        let net = NetworkId(t.network.clone());
        for s in &e.services {
            if !s.networks.iter().any(|a| a.network == net) {
                continue;
            }
            let Some(b) = s
                .backends
                .iter()
                .find(|b| b.task_id == t.task.0 && b.node_id == me.0)
            else {
                continue;
            };
            if !b
                .ports
                .iter()
                .any(|h| h.protocol == t.protocol && h.target == t.port)
            {
                return tunnel::Resolution::Refused;
            }
            let ip = b
                .addresses
                .iter()
                .find(|a| a.network == net)
                .or(b.addresses.first())
                .and_then(|a| a.ip.parse::<std::net::IpAddr>().ok());
            let Some(ip) = ip else {
                return tunnel::Resolution::Refused;
            };
            let encrypted = e.networks.iter().any(|n| n.id == net && n.encrypted);
            return tunnel::Resolution::Local {
                addr: SocketAddr::new(ip, t.port),
                encrypted_network: encrypted,
            };
        }
        tunnel::Resolution::Refused
    }

    /// This node's containers and their networks: who may use a VIP or the DNS.
    pub fn clients(&self) -> &Arc<Clients> {
        &self.clients
    }

    /// Applies a whole endpoint table as node `me` serves it: routes the VIP range to
    /// `lo` and starts the cluster DNS on its first time, then the listeners, then the
    /// DNS names of each network.
    pub async fn apply_endpoints(&self, e: &Endpoints, me: NodeId) {
        let mut d = self.discovery.lock().await;
        if let Ok(range) = VipRange::parse(&e.vip_range) {
            if d.range != Some(range) {
                match route_to_lo(&range) {
                    Ok(()) => tracing::info!(%range, "mesh: virtual IPs routed to lo"),
                    Err(e) => tracing::warn!(%range, "mesh: cannot route virtual IPs to lo: {e}"),
                }
                if let Err(e) = guard_vips(&range) {
                    tracing::warn!(%range, "mesh: virtual IPs not closed to other machines: {e}");
                }
                d.range = Some(range);
                let upstreams = std::fs::read_to_string("/etc/resolv.conf")
                    .map(|t| dns::upstreams_from_resolv_conf(&t))
                    .unwrap_or_default();
                let addr = SocketAddr::from((range.dns(), 53));
                match dns::DnsServer::start(
                    addr,
                    upstreams,
                    table::ZONE.to_string(),
                    self.stop.child_token(),
                )
                .await
                .inspect(|server| {
                    server.set_clients(self.clients.clone());
                    if let Some(m) = self.metrics.get() {
                        server.set_metrics(m.dns.clone());
                    }
                }) {
                    Ok(server) => {
                        tracing::info!(%addr, "cluster DNS listening");
                        d.dns = Some(server);
                    }
                    Err(e) => tracing::warn!(%addr, "cluster DNS cannot listen: {e}"),
                }
            }
        }
        self.clients.set_table(local_clients(e, me));
        *self.table.write().unwrap_or_else(|e| e.into_inner()) = Some((e.clone(), me));
        self.apply(&e.routes(Some(me)));
        if let Some(server) = &d.dns {
            server.set_networks(e.names_by_network());
        }
    }

    /// Makes the listeners and their backends match `routes`.
    pub fn apply(&self, routes: &[Route]) {
        let mut ls = self.listeners.lock().expect("mesh lock");
        let wanted: HashMap<Key, &Route> = routes
            .iter()
            .map(|r| ((r.protocol, r.vip, r.port), r))
            .collect();
        ls.retain(|key, l| {
            let keep = wanted.contains_key(key);
            if !keep {
                tracing::info!(
                    port = key.2,
                    vip = ?key.1,
                    protocol = key.0.as_str(),
                    "mesh: stop listening"
                );
                l.stop.cancel();
            }
            keep
        });
        for (key, route) in wanted {
            if let Some(l) = ls.get(&key) {
                l.backends.set(&route.backends);
                l.backends.set_proxy(route.proxy);
                l.backends.set_allowed(route.networks.clone());
                continue;
            }
            let backends = Arc::new(Backends::default());
            backends.set(&route.backends);
            backends.set_proxy(route.proxy);
            backends.set_allowed(route.networks.clone());
            let stop = self.stop.child_token();
            let ip = match key.1 {
                Some(vip) => vip.to_string(),
                None => self.bind_ip.clone(),
            };
            let addr: SocketAddr = match format!("{ip}:{}", key.2).parse() {
                Ok(a) => a,
                Err(e) => {
                    tracing::warn!(%ip, "mesh: bad listening address: {e}");
                    continue;
                }
            };
            let sock = match bind_shared(addr, key.0) {
                Ok(s) => s,
                Err(e) => {
                    tracing::warn!(%addr, service = %route.service, "mesh: cannot listen: {e}");
                    continue;
                }
            };
            let started = match key.0 {
                Protocol::Tcp => TcpListener::from_std(sock.into()).map(|l| {
                    tokio::spawn(serve_tcp(
                        l,
                        self.meter(&route.service),
                        backends.clone(),
                        self.clients.clone(),
                        self.data.clone(),
                        stop.clone(),
                    ))
                }),
                Protocol::Udp => UdpSocket::from_std(sock.into()).map(|s| {
                    tokio::spawn(serve_udp(
                        Arc::new(s),
                        backends.clone(),
                        self.clients.clone(),
                        self.data.clone(),
                        stop.clone(),
                    ))
                }),
            };
            if let Err(e) = started {
                tracing::warn!(%addr, "mesh: {e}");
                continue;
            }
            tracing::debug!(%addr, protocol = key.0.as_str(), service = %route.service, "mesh: listening");
            ls.insert(
                key,
                Listener {
                    service: route.service.clone(),
                    backends,
                    stop,
                },
            );
        }
        if let Some(m) = self.metrics.get() {
            let live = ls.values().map(|l| l.service.clone()).collect();
            m.mesh.retain(&live);
        }
    }

    /// What the mesh routes now: protocol, address, port, service, and each backend
    /// with its load.
    pub fn routes(&self) -> Vec<RouteView> {
        let names: HashMap<NetworkId, String> = self
            .table
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .as_ref()
            .map(|(e, _)| {
                e.networks
                    .iter()
                    .map(|n| (n.id.clone(), n.name.clone()))
                    .collect()
            })
            .unwrap_or_default();
        let ls = self.listeners.lock().expect("mesh lock");
        let mut out: Vec<RouteView> = ls
            .iter()
            .map(|(k, l)| RouteView {
                protocol: k.0,
                address: k.1.map(|v| v.to_string()).unwrap_or_else(|| "*".into()),
                port: k.2,
                service: l.service.clone(),
                networks: l
                    .backends
                    .allowed()
                    .unwrap_or_default()
                    .iter()
                    .map(|id| names.get(id).cloned().unwrap_or_else(|| id.to_string()))
                    .collect(),
                backends: l.backends.snapshot(),
            })
            .collect();
        out.sort_by(|a, b| {
            let key = |r: &RouteView| {
                (
                    r.address != "*",
                    r.address.clone(),
                    r.port,
                    r.protocol.as_str(),
                )
            };
            key(a).cmp(&key(b))
        });
        out
    }
}

/// Routes every address of `range` to this machine (`ip route replace local RANGE dev
/// lo`), so that the mesh and the DNS can listen on any VIP and containers reach them
/// through their bridge's gateway. No address is added per VIP.
fn route_to_lo(range: &VipRange) -> std::io::Result<()> {
    let mut last = None;
    for ip in ["ip", "/usr/sbin/ip", "/sbin/ip", "/usr/bin/ip", "/bin/ip"] {
        match std::process::Command::new(ip)
            .args(["route", "replace", "local", &range.to_string(), "dev", "lo"])
            .output()
        {
            Ok(o) if o.status.success() => return Ok(()),
            Ok(o) => {
                return Err(std::io::Error::other(
                    String::from_utf8_lossy(&o.stderr).trim().to_string(),
                ))
            }
            Err(e) => last = Some(e),
        }
    }
    Err(last.unwrap_or_else(|| std::io::Error::other("no `ip` command")))
}

/// The `INPUT` rules that keep the VIP range to this node's own containers and itself
/// (argument lists for `iptables -w`): accepted from orc's bridges (`orc+`) and `lo`,
/// dropped from anywhere else, so that another machine routing the range through this
/// node gets no answer at all, not even a connection the mesh would then close.
pub fn vip_guard_rules(range: &VipRange) -> Vec<Vec<String>> {
    let r = range.to_string();
    ["-i orc+ -j ACCEPT", "-i lo -j ACCEPT", "-j DROP"]
        .iter()
        .map(|tail| {
            ["INPUT", "-d", &r]
                .iter()
                .map(|w| w.to_string())
                .chain(tail.split(' ').map(str::to_string))
                .collect()
        })
        .collect()
}

/// Adds [`vip_guard_rules`] where missing, in order, at the top of `INPUT`.
fn guard_vips(range: &VipRange) -> std::io::Result<()> {
    for (i, rule) in vip_guard_rules(range).iter().enumerate() {
        iptables::ensure(rule, iptables::At::Position(i + 1))?;
    }
    Ok(())
}

/// What the endpoint table says of node `me`'s tasks: each container address → the
/// networks of its service.
fn local_clients(e: &Endpoints, me: NodeId) -> HashMap<Ipv4Addr, Vec<NetworkId>> {
    let mut out: HashMap<Ipv4Addr, Vec<NetworkId>> = HashMap::new();
    for s in &e.services {
        for b in s.backends.iter().filter(|b| b.node_id == me.0) {
            for a in &b.addresses {
                if let Ok(ip) = a.ip.parse() {
                    out.entry(ip)
                        .or_default()
                        .extend(s.networks.iter().map(|n| n.network.clone()));
                }
            }
        }
    }
    out
}

async fn serve_tcp(
    l: TcpListener,
    meter: crate::metrics::ServiceMeter,
    backends: Arc<Backends>,
    clients: Arc<Clients>,
    data: DataSlot,
    stop: CancellationToken,
) {
    loop {
        let (client, peer) = tokio::select! {
            _ = stop.cancelled() => return,
            r = l.accept() => match r {
                Ok(x) => x,
                Err(e) => {
                    tracing::debug!("mesh accept: {e}");
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                }
            },
        };
        if !backends.admits(&clients, peer.ip()) {
            tracing::debug!(%peer, "mesh: refused, not a container on the service's networks");
            drop(client);
            continue;
        }
        let (backends, data, meter) = (backends.clone(), data.clone(), meter.clone());
        tokio::spawn(async move {
            let _ = client.set_nodelay(true);
            meter.total.inc();
            meter.active.inc();
            proxy_tcp(client, peer, &backends, &data, &meter).await;
            meter.active.dec();
        });
    }
}

/// Connects to the first backend of `order` that answers: the next one is tried as
/// soon as a connect fails, and beside the pending ones when none has answered within
/// `stagger`; each connect is given up after `give_up` ([`CONNECT_TIMEOUT`]). `None`
/// when none answered.
async fn connect_first(
    order: Vec<Arc<BackendState>>,
    data: &DataSlot,
    failed: &prometheus_client::metrics::counter::Counter,
    peer: SocketAddr,
    stagger: Duration,
    give_up: Duration,
) -> Option<(Arc<BackendState>, Upstream)> {
    use futures::stream::{FuturesUnordered, StreamExt};
    let connect = |b: Arc<BackendState>| async move {
        let r = dial(&b, data, give_up).await;
        (b, r)
    };
    let mut next = order.into_iter();
    let mut pending = FuturesUnordered::new();
    loop {
        if pending.is_empty() {
            pending.push(connect(next.next()?));
        }
        tokio::select! {
            Some((b, r)) = pending.next() => match r {
                Ok(s) => return Some((b, s)),
                Err(e) => {
                    failed.inc();
                    tracing::debug!(backend = %b.addr, %peer, "mesh connect failed, trying the next: {e}");
                    if let Some(b) = next.next() {
                        pending.push(connect(b));
                    }
                }
            },
            _ = tokio::time::sleep(stagger) => {
                if let Some(b) = next.next() {
                    pending.push(connect(b));
                }
            }
        }
    }
}

async fn proxy_tcp(
    mut client: TcpStream,
    peer: SocketAddr,
    backends: &Backends,
    data: &DataSlot,
    meter: &crate::metrics::ServiceMeter,
) {
    let mut order = backends.order();
    while let Some((b, mut upstream)) = connect_first(
        order.clone(),
        data,
        &meter.connect_failures,
        peer,
        CONNECT_STAGGER,
        CONNECT_TIMEOUT,
    )
    .await
    {
        order.retain(|o| !Arc::ptr_eq(o, &b));
        let proxy = backends.proxy();
        if proxy != ProxyProtocol::None {
            let local = client.local_addr().unwrap_or(peer);
            let header = proxy_protocol::header(proxy, peer, local);
            let sent = match &mut upstream {
                Upstream::Tcp(s) => s.write_all(&header).await,
                Upstream::Tunnel(t) => t.write_all(&header).await,
            };
            if let Err(e) = sent {
                tracing::debug!(backend = %b.addr, %peer, "mesh: PROXY header not sent, trying the next: {e}");
                continue;
            }
        }
        b.active.fetch_add(1, Ordering::Relaxed);
        let r = match &mut upstream {
            Upstream::Tcp(s) => {
                let _ = s.set_nodelay(true);
                relay::relay(&mut client, s).await
            }
            // the tunnel's own view: (tunnel → client, client → tunnel)
            Upstream::Tunnel(t) => t.relay(&mut client).await.map(|(out, up)| (up, out)),
        };
        b.active.fetch_sub(1, Ordering::Relaxed);
        match r {
            Ok((up, down)) => {
                meter.bytes_in.inc_by(up);
                meter.bytes_out.inc_by(down);
            }
            Err(e) => tracing::debug!(backend = %b.addr, %peer, "mesh connection ended: {e}"),
        }
        return;
    }
    tracing::debug!(%peer, "mesh: no backend answered");
}

/// Where one UDP client's datagrams go.
#[derive(Clone)]
enum UdpSession {
    /// A socket connected to a backend this node reaches itself.
    Direct(Arc<UdpSocket>),
    /// A tunnel to another node's task: datagrams are queued to the task that frames
    /// them onto it.
    Tunnel(tokio::sync::mpsc::Sender<Vec<u8>>),
}

/// UDP sessions a listener keeps at once; datagrams of further clients are dropped.
pub const MAX_UDP_SESSIONS: usize = 4096;

async fn serve_udp(
    sock: Arc<UdpSocket>,
    backends: Arc<Backends>,
    clients: Arc<Clients>,
    data: DataSlot,
    stop: CancellationToken,
) {
    let sessions: Arc<Mutex<HashMap<SocketAddr, UdpSession>>> = Default::default();
    let mut buf = vec![0u8; 65536];
    loop {
        let (n, client) = tokio::select! {
            _ = stop.cancelled() => return,
            r = sock.recv_from(&mut buf) => match r {
                Ok(x) => x,
                Err(e) => { tracing::debug!("mesh udp: {e}"); continue; }
            },
        };
        let existing = sessions.lock().expect("udp lock").get(&client).cloned();
        let up = match existing {
            Some(up) => up,
            None => {
                if !backends.admits(&clients, client.ip())
                    || sessions.lock().expect("udp lock").len() >= MAX_UDP_SESSIONS
                {
                    continue;
                }
                let Some(b) = backends.order().into_iter().next() else {
                    continue;
                };
                let (sock, sessions2, stop) = (sock.clone(), sessions.clone(), stop.clone());
                let upstream = match &b.dest {
                    Dest::Direct(_) => None,
                    Dest::Tunnel { .. } => match dial(&b, &data, CONNECT_TIMEOUT).await {
                        Ok(u) => Some(u),
                        Err(_) => continue,
                    },
                };
                let up = match (&b.dest, upstream) {
                    (Dest::Direct(addr), _) => {
                        let Ok(u) = UdpSocket::bind("0.0.0.0:0").await else {
                            continue;
                        };
                        if u.connect(addr).await.is_err() {
                            continue;
                        }
                        let u = Arc::new(u);
                        let up2 = u.clone();
                        let b = b.clone();
                        b.active.fetch_add(1, Ordering::Relaxed);
                        tokio::spawn(async move {
                            let mut buf = vec![0u8; 65536];
                            loop {
                                let r = tokio::select! {
                                    _ = stop.cancelled() => break,
                                    r = tokio::time::timeout(UDP_IDLE, up2.recv(&mut buf)) => r,
                                };
                                match r {
                                    Ok(Ok(n)) => {
                                        let _ = sock.send_to(&buf[..n], client).await;
                                    }
                                    _ => break,
                                }
                            }
                            sessions2.lock().expect("udp lock").remove(&client);
                            b.active.fetch_sub(1, Ordering::Relaxed);
                        });
                        UdpSession::Direct(u)
                    }
                    (_, Some(Upstream::Tunnel(t))) => {
                        let (tx, mut rx) = tokio::sync::mpsc::channel::<Vec<u8>>(256);
                        let b = b.clone();
                        b.active.fetch_add(1, Ordering::Relaxed);
                        tokio::spawn(async move {
                            let (mut rd, mut wr) = tokio::io::split(*t);
                            let mut buf = Vec::new();
                            loop {
                                tokio::select! {
                                    _ = stop.cancelled() => break,
                                    d = tokio::time::timeout(UDP_IDLE, rx.recv()) => match d {
                                        Ok(Some(d)) => {
                                            if tunnel::send_datagram(&mut wr, &d).await.is_err() {
                                                break;
                                            }
                                        }
                                        _ => break,
                                    },
                                    r = tunnel::recv_datagram(&mut rd, &mut buf) => match r {
                                        Ok(true) => {
                                            let _ = sock.send_to(&buf, client).await;
                                        }
                                        _ => break,
                                    },
                                }
                            }
                            sessions2.lock().expect("udp lock").remove(&client);
                            b.active.fetch_sub(1, Ordering::Relaxed);
                        });
                        UdpSession::Tunnel(tx)
                    }
                    (_, _) => continue,
                };
                sessions
                    .lock()
                    .expect("udp lock")
                    .insert(client, up.clone());
                up
            }
        };
        match up {
            UdpSession::Direct(u) => {
                let _ = u.send(&buf[..n]).await;
            }
            UdpSession::Tunnel(tx) => {
                let _ = tx.try_send(buf[..n].to_vec());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    async fn echo_server(tag: &'static str) -> (String, tokio::task::JoinHandle<()>) {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap().to_string();
        let h = tokio::spawn(async move {
            loop {
                let Ok((mut s, _)) = l.accept().await else {
                    return;
                };
                tokio::spawn(async move {
                    let mut buf = [0u8; 64];
                    let n = s.read(&mut buf).await.unwrap_or(0);
                    let _ = s.write_all(format!("{tag}:").as_bytes()).await;
                    let _ = s.write_all(&buf[..n]).await;
                });
            }
        });
        (addr, h)
    }

    async fn ask(port: u16) -> String {
        let mut s = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
        s.write_all(b"hi").await.unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).await.unwrap();
        out
    }

    /// A route on every address of this node.
    fn route(protocol: Protocol, port: u16, proxy: ProxyProtocol, backends: Vec<String>) -> Route {
        Route {
            protocol,
            vip: None,
            port,
            proxy,
            service: "test".into(),
            backends: backends.into_iter().map(Dest::Direct).collect(),
            networks: None,
        }
    }

    use crate::test_ports::free_port;

    #[tokio::test]
    async fn tcp_is_balanced_and_a_dead_backend_costs_no_request() {
        let (a, _ha) = echo_server("a").await;
        let (b, _hb) = echo_server("b").await;
        // A backend that refuses: a port nobody listens on.
        let dead = format!("127.0.0.1:{}", free_port());
        let port = free_port();
        let mesh = Mesh::new("127.0.0.1", CancellationToken::new());
        mesh.apply(&[route(
            Protocol::Tcp,
            port,
            ProxyProtocol::None,
            vec![dead.clone(), a.clone(), b.clone()],
        )]);
        let mut seen = std::collections::BTreeMap::new();
        for _ in 0..30 {
            let r = ask(port).await;
            assert!(r.ends_with(":hi"), "{r}");
            *seen.entry(r[..1].to_string()).or_insert(0) += 1;
        }
        assert_eq!(seen.len(), 2, "{seen:?}");
        assert!(seen.values().all(|n| *n >= 10), "unbalanced: {seen:?}");
        // Backends change: only b now.
        mesh.apply(&[route(
            Protocol::Tcp,
            port,
            ProxyProtocol::None,
            vec![b.clone()],
        )]);
        for _ in 0..5 {
            assert_eq!(ask(port).await, "b:hi");
        }
        // The route goes: the port closes.
        mesh.apply(&[]);
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(TcpStream::connect(("127.0.0.1", port)).await.is_err());
    }

    #[tokio::test]
    async fn a_proxy_protocol_port_tells_the_backend_who_the_client_is() {
        let (a, _ha) = echo_server("a").await;
        let port = free_port();
        let mesh = Mesh::new("127.0.0.1", CancellationToken::new());
        for (proxy, want) in [
            (
                ProxyProtocol::V1,
                b"PROXY TCP4 127.0.0.1 127.0.0.1 ".to_vec(),
            ),
            (ProxyProtocol::V2, proxy_protocol::V2_SIGNATURE.to_vec()),
        ] {
            mesh.apply(&[route(Protocol::Tcp, port, proxy, vec![a.clone()])]);
            let mut s = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
            let client = s.local_addr().unwrap();
            s.write_all(b"hi").await.unwrap();
            let mut out = vec![];
            s.read_to_end(&mut out).await.unwrap();
            // The echo server answers "a:" and the first bytes it read: the header.
            assert!(out[2..].starts_with(&want), "{proxy:?}: {out:?}");
            let header =
                proxy_protocol::header(proxy, client, format!("127.0.0.1:{port}").parse().unwrap());
            assert_eq!(
                &out[2..2 + header.len().min(62)],
                &header[..header.len().min(62)]
            );
        }
    }

    #[tokio::test]
    async fn a_backend_that_never_answers_does_not_hold_the_connection() {
        // A listener whose accept queue is full: the kernel drops further SYNs, as
        // nothing answers for a host that vanished.
        use socket2::{Domain, Socket, Type};
        let silent = Socket::new(Domain::IPV4, Type::STREAM, None).unwrap();
        let any: SocketAddr = "127.0.0.1:0".parse().unwrap();
        silent.bind(&any.into()).unwrap();
        silent.listen(0).unwrap();
        let silent_addr = silent.local_addr().unwrap().as_socket().unwrap();
        let mut queued = vec![];
        for _ in 0..3 {
            let c =
                tokio::time::timeout(Duration::from_millis(300), TcpStream::connect(silent_addr));
            if let Ok(Ok(s)) = c.await {
                queued.push(s);
            }
        }
        let c = tokio::time::timeout(Duration::from_millis(300), TcpStream::connect(silent_addr));
        assert!(c.await.is_err(), "the silent listener answered");

        let (live, _h) = echo_server("a").await;
        let backend = |addr: String| {
            Arc::new(BackendState {
                dest: Dest::Direct(addr.clone()),
                addr,
                active: AtomicUsize::new(0),
            })
        };
        let order = vec![backend(silent_addr.to_string()), backend(live.clone())];
        // No connect is given up within the test: only trying the next backend beside
        // the silent one gets a connection.
        let got = tokio::time::timeout(
            Duration::from_secs(30),
            connect_first(
                order,
                &DataSlot::default(),
                &Default::default(),
                any,
                Duration::from_millis(50),
                Duration::from_secs(3600),
            ),
        )
        .await
        .expect("held by the silent backend");
        assert_eq!(got.expect("a backend").0.addr, live);
        drop(queued);
    }

    #[test]
    fn vips_are_open_to_orc_bridges_and_lo_and_dropped_from_elsewhere_in_that_order() {
        let range = VipRange::parse("10.233.0.0/16").unwrap();
        let rules: Vec<String> = vip_guard_rules(&range)
            .iter()
            .map(|r| r.join(" "))
            .collect();
        assert_eq!(
            rules,
            [
                "INPUT -d 10.233.0.0/16 -i orc+ -j ACCEPT",
                "INPUT -d 10.233.0.0/16 -i lo -j ACCEPT",
                "INPUT -d 10.233.0.0/16 -j DROP",
            ]
        );
    }

    #[tokio::test]
    async fn least_connections_prefers_the_idle_backend() {
        let bk = Backends::default();
        bk.set(&["x:1".into(), "y:1".into()]);
        bk.order()[0].active.fetch_add(5, Ordering::Relaxed);
        let busy = bk.snapshot().into_iter().find(|b| b.1 == 5).unwrap().0;
        for _ in 0..4 {
            assert_ne!(bk.order()[0].addr, busy);
        }
        // Counters survive a table update that keeps the backend.
        bk.set(&["y:1".into(), "x:1".into(), "z:1".into()]);
        assert!(bk.snapshot().iter().any(|(a, n)| *a == busy && *n == 5));
    }

    #[tokio::test]
    async fn udp_datagrams_go_to_a_backend_and_answers_come_back() {
        let backend = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let baddr = backend.local_addr().unwrap().to_string();
        tokio::spawn(async move {
            let mut buf = [0u8; 64];
            loop {
                let Ok((n, from)) = backend.recv_from(&mut buf).await else {
                    return;
                };
                let mut reply = b"re:".to_vec();
                reply.extend_from_slice(&buf[..n]);
                let _ = backend.send_to(&reply, from).await;
            }
        });
        let port = {
            let s = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
            s.local_addr().unwrap().port()
        };
        let mesh = Mesh::new("127.0.0.1", CancellationToken::new());
        mesh.apply(&[route(Protocol::Udp, port, ProxyProtocol::None, vec![baddr])]);
        let client = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        client.connect(("127.0.0.1", port)).await.unwrap();
        for i in 0..3 {
            client.send(format!("q{i}").as_bytes()).await.unwrap();
            let mut buf = [0u8; 64];
            let n = tokio::time::timeout(Duration::from_secs(2), client.recv(&mut buf))
                .await
                .unwrap()
                .unwrap();
            assert_eq!(&buf[..n], format!("re:q{i}").as_bytes());
        }
    }
}
