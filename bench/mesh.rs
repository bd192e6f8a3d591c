//! Mesh benchmark (issues 4 and 14): the routing mesh beside a direct connection and
//! beside HAProxy, and the east-west paths between tasks over a plain and an encrypted
//! network, on namespace hosts (tests/hosts/harness.sh), measured interleaved in one
//! run.
//!
//! Set-up: 2 hosts, each with its own engine and `orc daemon`; host 1 is the manager,
//! host 2 a worker. Every server is a 1-replica service of `orc-test/tools:1` (iperf3
//! and socat copied into a local image with their libraries, tests/images/build.sh) on
//! host 2: `iperf3 -s` on 5201 and a TCP echo (`socat TCP-LISTEN:7,fork PIPE`) on 7.
//! `iperf` and `echo` are on the built-in `default` network and published on 5201 and
//! 7007; `iperf-plain` and `echo-plain` are on the network `plain`, `iperf-secret` and
//! `echo-secret` on `secret` (`orc network create --opt encrypted secret`), none of
//! those four published (`--expose 5201` / `--expose 7`, so that their VIPs listen). A client task `client` (the same image, `sleep`) runs on host
//! 1 on both `plain` and `secret`. The rows:
//!
//! - **direct**: no orc in between. Since issue 14 Docker publishes no task port on a
//!   host port, and a task's container address answers only on its own node, so this
//!   client runs in *host 2's* namespace and connects to `iperf`'s (`echo`'s) container
//!   address (`docker inspect`) on 5201 (7): host 2's bridge only, no link between
//!   hosts. It is the ceiling of the task and the machine, not a path another host has.
//! - **mesh** (north-south, published port): client in host 1's namespace to host 1's
//!   address and the published port; host 1's mesh reaches the task on host 2 through
//!   host 2's data path (TCP 4789, HMAC challenge, then spliced bytes), which connects
//!   to the container address.
//! - **haproxy→mesh2**: HAProxy cannot reach the task from host 1 any more (no host
//!   port on host 2; container addresses answer only on their node), so Debian's
//!   HAProxy in host 1's namespace (TCP mode, its defaults: one thread per core) has
//!   host 2's *published port* as its backend: client in host 1 → HAProxy on host 1 →
//!   host 2's mesh → the task on host 2 (local backend there). This is not the path of
//!   issue 4's row (HAProxy straight to a host port) and has one proxy more than that.
//! - **ew-plain**: east-west, the client task on host 1 to `iperf-plain`
//!   (`echo-plain`) by name over the network `plain`: cluster DNS → VIP → host 1's mesh
//!   → host 2's data path (plain) → the task.
//! - **ew-secret**: the same over `secret`: host 1's mesh → mutual TLS 1.3 to host 2's
//!   data path → the task.
//!
//! The east-west clients run inside the client container (`harness.sh docker 1 exec`):
//! its own `iperf3`, and this program copied into the container (with the shared
//! libraries `ldd` lists that the image lacks) as the latency client. The north-south
//! rows use the machine's iperf3 and this program in the host's namespace.
//!
//! Measured:
//!
//! 1. Throughput of one TCP stream, client to task: `iperf3 -c`, each row in turn for
//!    several rounds (default 3 rounds of 5 s after a 1 s warm-up that is left out);
//!    Gbit/s per run and medians, with the CPU the orc daemons (and HAProxy) used
//!    meanwhile (100% = one core). Ratios: mesh/direct, ew-plain/mesh (issue 14 aims
//!    at ≥ 0.90) and ew-secret's Gbit/s (issue 14 aims at ≥ 3 on one stream).
//! 2. Latency of small request/response exchanges (32 bytes each way), timed by this
//!    program itself as a client (`<this binary> --client ADDR MODE COUNT`, std
//!    `TcpStream`, `TCP_NODELAY`, the name resolved once before timing), over one
//!    connection and over a new connection per exchange (connect, send, receive,
//!    close), rounds interleaved as above. Printed: p50 and p99 per row and the latency
//!    each row adds to direct.
//!
//! It prints its numbers and asserts nothing about them. The hosts are torn down at the
//! end, also on a failure or on SIGINT/SIGTERM.
//!
//! Run, as root, with Docker, `iperf3`, `socat` and `haproxy` installed (`.ci/run`
//! installs them) and the test images built (`tests/images/build.sh`):
//!
//! ```sh
//! flock /tmp/orc-hosts.lock cargo bench --bench mesh
//! ```
//!
//! The namespace hosts are machine-wide: the benchmark holds `/tmp/orc-hosts.lock`
//! (flock) while it runs, as tests/hosts.rs does; started under `flock` on that file it
//! uses the descriptor it inherits. Environment: `ORC_BENCH_ROUNDS` (default 3),
//! `ORC_BENCH_SECONDS` (seconds per iperf3 run, default 5), `ORC_BENCH_EXCHANGES`
//! (exchanges per round over one connection, default 5000; a tenth of it over new
//! connections), `ORC_BENCH_HAPROXY_SPLICE=1` (HAProxy with `option splice-auto`; its
//! default, and Debian's, is to copy), `ORC_BENCH_METRICS=1` (the cost of metrics, see
//! below).
//!
//! # The cost of metrics (`ORC_BENCH_METRICS=1`)
//!
//! A third host joins as a worker, its daemon started with `--metrics-addr
//! 10.77.0.13:9323 --metrics-allow-remote`, and a row **mesh+metrics** is added: the
//! client in host 3's namespace to host 3's published port, host 3's mesh to host 2's
//! data path — the mesh row's path exactly, but through a daemon that counts (hosts 1
//! and 2 serve no metrics, so their meshes count nothing). While the rows run, this
//! program scrapes host 3's `/metrics` once a second (Prometheus scrapes every 15 s or
//! more by default; once a second is harsher). Printed: the scrapes made and the
//! ratios mesh+metrics/mesh of throughput and latency p50 (1.00: no cost).

#[path = "../tests/common/mod.rs"]
mod common;

use common::env_u64;

use std::fs::File;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::os::fd::{AsRawFd, FromRawFd};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

const LOCK: &str = "/tmp/orc-hosts.lock";
const IMAGE: &str = "orc-test/tools:1";
/// Published port of the iperf3 service, and HAProxy's frontend for the same backend.
const IPERF_PORT: u16 = 5201;
const HAPROXY_IPERF_PORT: u16 = 15201;
/// Published port of the echo service, and HAProxy's frontend for it.
const ECHO_PORT: u16 = 7007;
const HAPROXY_ECHO_PORT: u16 = 17007;
/// Bytes of each request and of each answer.
const MSG: usize = 32;

static INTERRUPTED: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_: libc::c_int) {
    INTERRUPTED.store(true, Ordering::SeqCst);
}

/// Stops with a panic (which tears the hosts down) once SIGINT or SIGTERM came.
fn check_interrupted() {
    if INTERRUPTED.load(Ordering::SeqCst) {
        panic!("interrupted");
    }
}

fn harness() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/hosts/harness.sh")
}

fn addr(n: usize) -> String {
    format!("10.77.0.{}", 10 + n)
}

/// Holds `/tmp/orc-hosts.lock`: a descriptor inherited from `flock(1)` already holds it
/// (a lock belongs to the open file, so locking it again returns at once); otherwise
/// the file is opened and locked here, waiting for whoever holds it.
fn take_lock() -> File {
    let inherited = std::fs::read_dir("/proc/self/fd")
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| std::fs::read_link(e.path()).is_ok_and(|p| p == std::path::Path::new(LOCK)))
        .filter_map(|e| e.file_name().to_str()?.parse::<libc::c_int>().ok())
        .next();
    let file = match inherited {
        // SAFETY: dup of a descriptor that is open (listed in /proc/self/fd); the File
        // owns the new descriptor. The inherited one is marked close-on-exec so that no
        // child (haproxy) keeps the lock after this process.
        Some(fd) => unsafe {
            libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC);
            let d = libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, 3);
            assert!(d >= 0, "dup of the inherited lock descriptor");
            File::from_raw_fd(d)
        },
        None => File::create(LOCK).expect("open the lock file"),
    };
    // SAFETY: flock on a descriptor the File owns.
    let r = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
    if r != 0 {
        eprintln!("[mesh bench] waiting for {LOCK} (someone else uses the namespace hosts)");
        // SAFETY: as above.
        let r = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX) };
        assert_eq!(r, 0, "flock {LOCK}");
    }
    file
}

/// The namespace hosts of this run, HAProxy, and a scratch directory; all gone on drop.
struct Hosts {
    _lock: File,
    haproxy: Option<Child>,
    tmp: PathBuf,
    /// The orc daemons' sockets, host 1 first.
    socks: Vec<String>,
}

impl Hosts {
    fn up(n: usize) -> Hosts {
        let lock = take_lock();
        let tmp = std::env::temp_dir().join(format!("orc-bench-mesh-{}", std::process::id()));
        std::fs::create_dir_all(&tmp).expect("scratch directory");
        let mut h = Hosts {
            _lock: lock,
            haproxy: None,
            tmp,
            socks: vec![],
        };
        h.run(&["up", &n.to_string()]);
        h.socks = (1..=n)
            .map(|i| h.run(&["orc-sock", &i.to_string()]))
            .collect();
        h
    }

    fn run(&self, args: &[&str]) -> String {
        check_interrupted();
        let o = Command::new("bash")
            .arg(harness())
            .args(args)
            .env("ORC_BIN", env!("CARGO_BIN_EXE_orc"))
            .stdin(Stdio::null())
            .output()
            .expect("run harness.sh");
        assert!(
            o.status.success(),
            "harness.sh {args:?} failed: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        String::from_utf8_lossy(&o.stdout).trim().to_string()
    }

    /// `CMD` in host `n`'s network namespace.
    fn exec(&self, n: usize, cmd: &[&str]) -> std::process::Output {
        check_interrupted();
        let o = Command::new("bash")
            .arg(harness())
            .args(["exec", &n.to_string()])
            .args(cmd)
            .stdin(Stdio::null())
            .output()
            .expect("harness.sh exec");
        check_interrupted();
        o
    }

    fn orc(&self, n: usize, args: &[&str]) -> Result<String, String> {
        check_interrupted();
        let o = Command::new(env!("CARGO_BIN_EXE_orc"))
            .arg("-H")
            .arg(&self.socks[n - 1])
            .args(args)
            .stdin(Stdio::null())
            .output()
            .expect("run orc");
        if o.status.success() {
            Ok(String::from_utf8_lossy(&o.stdout).into_owned())
        } else {
            Err(format!(
                "host {n}: orc {args:?}: {}",
                String::from_utf8_lossy(&o.stderr).trim()
            ))
        }
    }

    fn ok(&self, n: usize, args: &[&str]) -> String {
        self.orc(n, args).unwrap_or_else(|e| panic!("{e}"))
    }

    /// The pid of host `n`'s orc daemon.
    fn orc_pid(&self, n: usize) -> u32 {
        let dir = self.run(&["dir", &n.to_string()]);
        std::fs::read_to_string(format!("{dir}/orc.pid"))
            .expect("orc.pid")
            .trim()
            .parse()
            .expect("a pid")
    }

    /// Starts HAProxy in host `n`'s namespace, in the foreground, with `cfg`.
    fn start_haproxy(&mut self, n: usize, cfg: &str) -> u32 {
        let path = self.tmp.join("haproxy.cfg");
        std::fs::write(&path, cfg).expect("write haproxy.cfg");
        let log = File::create(self.tmp.join("haproxy.log")).expect("haproxy.log");
        // `harness.sh exec` execs nsenter, which execs haproxy: the child is haproxy.
        let child = Command::new("bash")
            .arg(harness())
            .args(["exec", &n.to_string(), "haproxy", "-db", "-f"])
            .arg(&path)
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .expect("start haproxy");
        let pid = child.id();
        self.haproxy = Some(child);
        pid
    }

    fn haproxy_log(&self) -> String {
        std::fs::read_to_string(self.tmp.join("haproxy.log")).unwrap_or_default()
    }
}

impl Drop for Hosts {
    fn drop(&mut self) {
        if let Some(mut c) = self.haproxy.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        eprintln!("[mesh bench] tearing the hosts down");
        let _ = Command::new("bash")
            .arg(harness())
            .arg("down")
            .stdin(Stdio::null())
            .status();
        let _ = std::fs::remove_dir_all(&self.tmp);
    }
}

/// Polls `f` every 200 ms until it gives a value; panics after `limit`.
fn wait_for<T>(limit: Duration, what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let t0 = Instant::now();
    loop {
        check_interrupted();
        if let Some(v) = f() {
            return v;
        }
        assert!(t0.elapsed() < limit, "timed out after {limit:?}: {what}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// CPU time (user + system) process `pid` has used, in seconds.
fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // fields after "(comm)": state is field 3, utime 14, stime 15
    let rest = stat.rsplit_once(')').map(|x| x.1).unwrap_or("");
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| {
        f.get(i - 3)
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    (ticks(14) + ticks(15)) / hz
}

/// Where a client runs: in a host's network namespace, or in a container of a host.
#[derive(Clone)]
enum Client {
    Host(usize),
    Container(usize, String),
}

/// Where this program is copied into the client container.
const CLIENT_IN_CONTAINER: &str = "/orc-bench-mesh";

impl Hosts {
    /// `CMD` wherever `c` says.
    fn client_cmd(&self, c: &Client, cmd: &[&str]) -> std::process::Output {
        match c {
            Client::Host(n) => self.exec(*n, cmd),
            Client::Container(n, cid) => {
                check_interrupted();
                let o = Command::new("bash")
                    .arg(harness())
                    .args(["docker", &n.to_string(), "exec", cid])
                    .args(cmd)
                    .stdin(Stdio::null())
                    .output()
                    .expect("harness.sh docker exec");
                check_interrupted();
                o
            }
        }
    }

    /// The container of the running task of 1-replica `service`.
    fn container_of(&self, service: &str) -> Option<String> {
        let out = self
            .orc(1, &["service", "ps", service, "--format", "json"])
            .ok()?;
        let v: Vec<serde_json::Value> = serde_json::from_str(&out).ok()?;
        v.iter()
            .filter(|t| t["state"] == "running" && t["desired_state"] == "running")
            .find_map(|t| t["container_id"].as_str().map(String::from))
            .filter(|c| !c.is_empty())
    }

    /// The first address of container `cid` on host `n`.
    fn container_addr(&self, n: usize, cid: &str) -> String {
        let ips = self.run(&[
            "docker",
            &n.to_string(),
            "inspect",
            "-f",
            "{{range .NetworkSettings.Networks}}{{.IPAddress}} {{end}}",
            cid,
        ]);
        ips.split_whitespace()
            .next()
            .unwrap_or_else(|| panic!("no address for container {cid}"))
            .to_string()
    }

    /// Copies this program into container `cid` of host `n`, with the shared libraries
    /// `ldd` lists that the container lacks (same paths, symlinks followed).
    fn copy_client_into(&self, n: usize, cid: &str) {
        let me = std::env::current_exe().expect("current exe");
        let me = me.to_str().expect("utf-8 path");
        let n = n.to_string();
        self.run(&[
            "docker",
            &n,
            "cp",
            "-L",
            me,
            &format!("{cid}:{CLIENT_IN_CONTAINER}"),
        ]);
        let ldd = Command::new("ldd").arg(me).output().expect("ldd");
        let libs: Vec<String> = String::from_utf8_lossy(&ldd.stdout)
            .lines()
            .filter_map(|l| {
                let p = l.split("=>").last()?.split_whitespace().next()?;
                p.starts_with('/').then(|| p.to_string())
            })
            .collect();
        let script = format!("for f in {}; do [ -e $f ] || echo $f; done", libs.join(" "));
        let missing = self.run(&["docker", &n, "exec", cid, "sh", "-c", &script]);
        for lib in missing.split_whitespace() {
            self.run(&["docker", &n, "cp", "-L", lib, &format!("{cid}:{lib}")]);
        }
    }
}

/// The rows: ways from a client to a task on host 2.
#[derive(Clone, Copy, PartialEq)]
enum Path {
    Direct,
    Mesh,
    Haproxy,
    Plain,
    Secret,
    /// The mesh row's path through a daemon serving metrics (`ORC_BENCH_METRICS=1`).
    MeshMetrics,
}

const PATHS: [Path; 6] = [
    Path::Direct,
    Path::Mesh,
    Path::MeshMetrics,
    Path::Haproxy,
    Path::Plain,
    Path::Secret,
];

/// Host 3's metrics address (`ORC_BENCH_METRICS=1`).
fn metrics_addr() -> String {
    format!("{}:9323", addr(3))
}

/// One scrape of `addr`'s `/metrics`: the body's size.
fn scrape(addr: &str) -> Result<usize, String> {
    let mut s = TcpStream::connect(addr).map_err(|e| format!("connect {addr}: {e}"))?;
    s.set_read_timeout(Some(Duration::from_secs(5)))
        .map_err(|e| e.to_string())?;
    write!(
        s,
        "GET /metrics HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .map_err(|e| e.to_string())?;
    let mut out = Vec::new();
    s.read_to_end(&mut out).map_err(|e| e.to_string())?;
    let text = String::from_utf8_lossy(&out);
    if !text.starts_with("HTTP/1.1 200") {
        return Err(format!(
            "scrape of {addr}: {}",
            text.lines().next().unwrap_or("")
        ));
    }
    Ok(text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.len())
        .unwrap_or(0))
}

impl Path {
    fn name(self) -> &'static str {
        match self {
            Path::Direct => "direct",
            Path::Mesh => "mesh",
            Path::Haproxy => "haproxy→mesh2",
            Path::Plain => "ew-plain",
            Path::Secret => "ew-secret",
            Path::MeshMetrics => "mesh+metrics",
        }
    }
}

/// How one row reaches the iperf3 server and the echo.
struct Row {
    path: Path,
    client: Client,
    iperf: String,
    echo: String,
    /// The proxy processes on the way, whose CPU is shown.
    pids: Vec<(&'static str, u32)>,
}

/// One iperf3 run: received Gbit/s and the sender's retransmits.
fn iperf(h: &Hosts, c: &Client, target: &str, seconds: u64) -> Result<(f64, u64), String> {
    let (ip, port) = target.rsplit_once(':').expect("HOST:PORT");
    let o = h.client_cmd(
        c,
        &[
            "iperf3",
            "-c",
            ip,
            "-p",
            port,
            "-t",
            &seconds.to_string(),
            "-O",
            "1",
            "-J",
        ],
    );
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).map_err(|e| {
        format!(
            "iperf3 to {target}: {e}: {}",
            String::from_utf8_lossy(&o.stderr)
        )
    })?;
    if let Some(err) = v["error"].as_str() {
        return Err(format!("iperf3 to {target}: {err}"));
    }
    let bps = v["end"]["sum_received"]["bits_per_second"]
        .as_f64()
        .ok_or_else(|| format!("iperf3 to {target}: no end.sum_received"))?;
    let retr = v["end"]["sum_sent"]["retransmits"].as_u64().unwrap_or(0);
    Ok((bps / 1e9, retr))
}

/// Runs this program as a latency client where `c` says: the round trip of each
/// exchange, in nanoseconds.
fn exchanges(
    h: &Hosts,
    c: &Client,
    target: &str,
    mode: &str,
    count: u64,
) -> Result<Vec<u64>, String> {
    let me = match c {
        Client::Host(_) => std::env::current_exe()
            .expect("current exe")
            .to_str()
            .expect("utf-8 path")
            .to_string(),
        Client::Container(..) => CLIENT_IN_CONTAINER.to_string(),
    };
    let o = h.client_cmd(c, &[&me, "--client", target, mode, &count.to_string()]);
    if !o.status.success() {
        return Err(format!(
            "client {mode} to {target}: {}",
            String::from_utf8_lossy(&o.stderr).trim()
        ));
    }
    String::from_utf8_lossy(&o.stdout)
        .split_whitespace()
        .map(|s| s.parse().map_err(|e| format!("client output: {e}")))
        .collect()
}

/// The client mode: `--client HOST:PORT one|new COUNT`. Resolves the name once, then
/// prints the round trip of each exchange in nanoseconds, after a few exchanges left
/// out as warm-up.
fn client(args: &[String]) {
    let [addr, mode, count] = args else {
        eprintln!("usage: mesh --client HOST:PORT one|new COUNT");
        std::process::exit(2);
    };
    let count: usize = count.parse().expect("COUNT");
    let sa = std::net::ToSocketAddrs::to_socket_addrs(addr.as_str())
        .ok()
        .and_then(|mut a| a.next())
        .unwrap_or_else(|| {
            eprintln!("cannot resolve {addr}");
            std::process::exit(1);
        });
    let connect = || {
        let s = TcpStream::connect(sa).unwrap_or_else(|e| {
            eprintln!("connect {addr} ({sa}): {e}");
            std::process::exit(1);
        });
        s.set_nodelay(true).expect("nodelay");
        s.set_read_timeout(Some(Duration::from_secs(5)))
            .expect("timeout");
        s
    };
    let req = [0x5au8; MSG];
    let mut ans = [0u8; MSG];
    let mut exchange = |s: &mut TcpStream| {
        s.write_all(&req).expect("send");
        s.read_exact(&mut ans).unwrap_or_else(|e| {
            eprintln!("receive from {addr}: {e}");
            std::process::exit(1);
        });
        assert_eq!(ans, req, "the echo answered other bytes");
    };
    let warm = (count / 20).max(10);
    let mut out = Vec::with_capacity(count);
    match mode.as_str() {
        "one" => {
            let mut s = connect();
            for i in 0..warm + count {
                let t0 = Instant::now();
                exchange(&mut s);
                if i >= warm {
                    out.push(t0.elapsed().as_nanos() as u64);
                }
            }
        }
        "new" => {
            for i in 0..warm + count {
                let t0 = Instant::now();
                let mut s = connect();
                exchange(&mut s);
                drop(s);
                if i >= warm {
                    out.push(t0.elapsed().as_nanos() as u64);
                }
            }
        }
        m => {
            eprintln!("unknown mode {m}");
            std::process::exit(2);
        }
    }
    let line: Vec<String> = out.iter().map(|n| n.to_string()).collect();
    println!("{}", line.join(" "));
}

fn median(v: &[f64]) -> f64 {
    let mut v = v.to_vec();
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

/// The `q`-quantile (nearest rank) of samples in nanoseconds, in microseconds.
fn quantile_us(v: &mut [u64], q: f64) -> f64 {
    v.sort_unstable();
    let i = ((q * v.len() as f64).ceil() as usize).clamp(1, v.len()) - 1;
    v[i] as f64 / 1000.0
}

/// Creates a 1-replica service of the tools image.
fn service(h: &Hosts, name: &str, opts: &[&str], cmd: &[&str]) {
    let mut args = vec!["service", "create", "-d", "--name", name];
    args.extend_from_slice(opts);
    args.push(IMAGE);
    args.extend_from_slice(cmd);
    h.ok(1, &args);
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("--client") {
        client(&args[2..]);
        return;
    }
    // SAFETY: the handler only stores to an atomic.
    unsafe {
        libc::signal(libc::SIGINT, on_signal as *const () as libc::sighandler_t);
        libc::signal(libc::SIGTERM, on_signal as *const () as libc::sighandler_t);
    }
    let rounds = env_u64("ORC_BENCH_ROUNDS", 3).max(1) as usize;
    let seconds = env_u64("ORC_BENCH_SECONDS", 5).max(1);
    let per_round = env_u64("ORC_BENCH_EXCHANGES", 5000).max(10);
    let haproxy_splice = env_u64("ORC_BENCH_HAPROXY_SPLICE", 0) == 1;
    let with_metrics = env_u64("ORC_BENCH_METRICS", 0) == 1;
    let host_count = if with_metrics { 3 } else { 2 };

    eprintln!("[mesh bench] bringing up {host_count} namespace hosts");
    let mut h = Hosts::up(host_count);
    h.run(&["start-orc", "1"]);
    h.run(&["start-orc", "2"]);
    if with_metrics {
        h.run(&[
            "start-orc",
            "3",
            "--metrics-addr",
            &metrics_addr(),
            "--metrics-allow-remote",
        ]);
    }
    h.ok(1, &["init", "--advertise-addr", &addr(1)]);
    let token = h.ok(1, &["join-token", "worker", "-q"]).trim().to_string();
    h.ok(2, &["join", "--token", &token, &addr(1)]);
    if with_metrics {
        h.ok(3, &["join", "--token", &token, &addr(1)]);
    }
    let nodes = wait_for(Duration::from_secs(30), "the nodes ready", || {
        let v: Vec<serde_json::Value> =
            serde_json::from_str(&h.orc(1, &["node", "ls", "--format", "json"]).ok()?).ok()?;
        (v.len() == host_count && v.iter().all(|n| n["status"] == "ready")).then_some(v)
    });
    let node_id = |n: usize| {
        nodes
            .iter()
            .find(|v| v["address"] == format!("{}:4242", addr(n)))
            .and_then(|v| v["id"].as_str())
            .unwrap_or_else(|| panic!("host {n}'s node"))
            .to_string()
    };
    let on_host1 = format!("node.id=={}", node_id(1));
    let on_host2 = format!("node.id=={}", node_id(2));
    h.ok(1, &["network", "create", "plain"]);
    h.ok(1, &["network", "create", "--opt", "encrypted", "secret"]);
    let iperf_cmd = ["iperf3", "-s"];
    let echo_cmd = ["socat", "TCP-LISTEN:7,fork,reuseaddr", "PIPE"];
    let published = |p: u16, t: u16| format!("{p}:{t}");
    let iperf_pub = published(IPERF_PORT, 5201);
    let echo_pub = published(ECHO_PORT, 7);
    service(
        &h,
        "iperf",
        &["-p", &iperf_pub, "--constraint", &on_host2],
        &iperf_cmd,
    );
    service(
        &h,
        "echo",
        &["-p", &echo_pub, "--constraint", &on_host2],
        &echo_cmd,
    );
    for net in ["plain", "secret"] {
        // Unpublished: the VIP listens on the ports the task exposes, and the image
        // exposes none.
        let opts = |port| {
            [
                "--network",
                net,
                "--expose",
                port,
                "--constraint",
                &on_host2,
            ]
        };
        service(&h, &format!("iperf-{net}"), &opts("5201"), &iperf_cmd);
        service(&h, &format!("echo-{net}"), &opts("7"), &echo_cmd);
    }
    service(
        &h,
        "client",
        &[
            "--network",
            "plain",
            "--network",
            "secret",
            "--constraint",
            &on_host1,
        ],
        &["sleep", "100000000"],
    );
    let (iperf_cid, echo_cid, client_cid) =
        wait_for(Duration::from_secs(90), "the tasks running", || {
            for s in ["iperf-plain", "echo-plain", "iperf-secret", "echo-secret"] {
                h.container_of(s)?;
            }
            Some((
                h.container_of("iperf")?,
                h.container_of("echo")?,
                h.container_of("client")?,
            ))
        });
    let iperf_ip = h.container_addr(2, &iperf_cid);
    let echo_ip = h.container_addr(2, &echo_cid);
    h.copy_client_into(1, &client_cid);

    let haproxy_pid = h.start_haproxy(
        1,
        &format!(
            "global\n    maxconn 4096\n\
             defaults\n    mode tcp\n{splice}    timeout connect 5s\n\
             \x20   timeout client 1m\n    timeout server 1m\n\
             frontend iperf\n    bind {a}:{HAPROXY_IPERF_PORT}\n    default_backend iperf\n\
             backend iperf\n    server mesh2 {b}:{IPERF_PORT}\n\
             frontend echo\n    bind {a}:{HAPROXY_ECHO_PORT}\n    default_backend echo\n\
             backend echo\n    server mesh2 {b}:{ECHO_PORT}\n",
            a = addr(1),
            b = addr(2),
            splice = if haproxy_splice {
                "    option splice-auto\n"
            } else {
                ""
            },
        ),
    );
    let (orc1, orc2) = (h.orc_pid(1), h.orc_pid(2));
    let in_client = Client::Container(1, client_cid.clone());
    let orc3 = if with_metrics { h.orc_pid(3) } else { 0 };
    let rows: Vec<Row> = PATHS
        .into_iter()
        .filter(|p| with_metrics || *p != Path::MeshMetrics)
        .map(|path| {
            let (client, iperf, echo, pids) = match path {
                Path::Direct => (
                    Client::Host(2),
                    format!("{iperf_ip}:5201"),
                    format!("{echo_ip}:7"),
                    vec![],
                ),
                Path::Mesh => (
                    Client::Host(1),
                    format!("{}:{IPERF_PORT}", addr(1)),
                    format!("{}:{ECHO_PORT}", addr(1)),
                    vec![("orc1", orc1), ("orc2", orc2)],
                ),
                Path::MeshMetrics => (
                    Client::Host(3),
                    format!("{}:{IPERF_PORT}", addr(3)),
                    format!("{}:{ECHO_PORT}", addr(3)),
                    vec![("orc3", orc3), ("orc2", orc2)],
                ),
                Path::Haproxy => (
                    Client::Host(1),
                    format!("{}:{HAPROXY_IPERF_PORT}", addr(1)),
                    format!("{}:{HAPROXY_ECHO_PORT}", addr(1)),
                    vec![("haproxy", haproxy_pid), ("orc2", orc2)],
                ),
                Path::Plain | Path::Secret => {
                    let net = if path == Path::Plain {
                        "plain"
                    } else {
                        "secret"
                    };
                    (
                        in_client.clone(),
                        format!("iperf-{net}:5201"),
                        format!("echo-{net}:7"),
                        vec![("orc1", orc1), ("orc2", orc2)],
                    )
                }
            };
            Row {
                path,
                client,
                iperf,
                echo,
                pids,
            }
        })
        .collect();
    // Every row answers before anything is timed.
    for r in &rows {
        wait_for(
            Duration::from_secs(60),
            &format!("echo via {}", r.path.name()),
            || {
                exchanges(&h, &r.client, &r.echo, "one", 10)
                    .map_err(|e| eprintln!("[mesh bench] not yet: {e}"))
                    .ok()
            },
        );
        wait_for(
            Duration::from_secs(60),
            &format!("iperf3 via {}", r.path.name()),
            || {
                iperf(&h, &r.client, &r.iperf, 1)
                    .map_err(|e| eprintln!("[mesh bench] not yet: {e}"))
                    .ok()
            },
        );
    }
    if h.haproxy
        .as_mut()
        .is_some_and(|c| !matches!(c.try_wait(), Ok(None)))
    {
        panic!("haproxy exited: {}", h.haproxy_log());
    }
    let routes = h
        .orc(1, &["node", "routes"])
        .unwrap_or_else(|e| format!("({e})"));

    let haproxy_version = Command::new("haproxy")
        .arg("-v")
        .output()
        .map(|o| {
            String::from_utf8_lossy(&o.stdout)
                .lines()
                .next()
                .unwrap_or("")
                .to_string()
        })
        .unwrap_or_default();
    println!(
        "mesh benchmark: 2 namespace hosts ({} manager, {} worker), every server task on host 2",
        addr(1),
        addr(2)
    );
    for r in &rows {
        let at = match &r.client {
            Client::Host(n) => format!("host {n}'s namespace"),
            Client::Container(n, c) => format!("container {} on host {n}", &c[..c.len().min(12)]),
        };
        let what = match r.path {
            Path::Direct => "the container address, no orc".to_string(),
            Path::Mesh => "host 1's mesh -> host 2's data path (plain)".to_string(),
            Path::MeshMetrics => format!(
                "host 3's mesh (serving {}/metrics, scraped every 1 s) -> host 2's data path",
                metrics_addr()
            ),
            Path::Haproxy => format!(
                "{haproxy_version}, TCP mode{} -> host 2's published port (its mesh)",
                if haproxy_splice { ", splice-auto" } else { "" }
            ),
            Path::Plain => "by name, network plain: host 1's mesh -> data path".to_string(),
            Path::Secret => {
                "by name, network secret (encrypted): host 1's mesh -> mTLS data path".to_string()
            }
        };
        println!(
            "  {:14} from {at} to {} / {}: {what}",
            r.path.name(),
            r.iperf,
            r.echo
        );
    }
    println!("host 1's `orc node routes`:");
    for l in routes.lines() {
        println!("  {l}");
    }
    println!();
    println!(
        "throughput, one TCP stream (iperf3 -t {seconds} -O 1), Gbit/s; \
         CPU of the proxies on the way (100% = one core):"
    );
    // Scrapes host 3's metrics once a second while the rows run.
    let scraping = std::sync::Arc::new(AtomicBool::new(with_metrics));
    let scraper = {
        let scraping = scraping.clone();
        std::thread::spawn(move || {
            let (mut n, mut last, mut failed) = (0u64, 0usize, 0u64);
            while scraping.load(Ordering::SeqCst) {
                match scrape(&metrics_addr()) {
                    Ok(size) => {
                        n += 1;
                        last = size;
                    }
                    Err(e) => {
                        failed += 1;
                        eprintln!("[mesh bench] {e}");
                    }
                }
                std::thread::sleep(Duration::from_secs(1));
            }
            (n, last, failed)
        })
    };
    let mut gbps: Vec<Vec<f64>> = vec![vec![]; rows.len()];
    for round in 0..rounds {
        println!("  round {}:", round + 1);
        for (i, r) in rows.iter().enumerate() {
            let c0: Vec<f64> = r.pids.iter().map(|p| cpu_seconds(p.1)).collect();
            let t0 = Instant::now();
            let (g, retr) = iperf(&h, &r.client, &r.iperf, seconds)
                .or_else(|e| {
                    eprintln!("[mesh bench] {e}; once more");
                    std::thread::sleep(Duration::from_secs(1));
                    iperf(&h, &r.client, &r.iperf, seconds)
                })
                .unwrap_or_else(|e| panic!("{e}"));
            let dt = t0.elapsed().as_secs_f64();
            gbps[i].push(g);
            let mut line = format!("    {:14} {g:6.2}  retr {retr:<5}", r.path.name());
            for (p, c0) in r.pids.iter().zip(c0) {
                line += &format!(
                    "  {} cpu {:3.0}%",
                    p.0,
                    100.0 * (cpu_seconds(p.1) - c0) / dt
                );
            }
            println!("{line}");
        }
    }

    let mut lat: Vec<[(f64, f64); 2]> = vec![[(0.0, 0.0); 2]; rows.len()];
    let modes = [
        ("one", "over one connection", per_round),
        ("new", "a new connection each", (per_round / 10).max(10)),
    ];
    for (m, (mode, _, count)) in modes.iter().enumerate() {
        let mut samples: Vec<Vec<u64>> = vec![vec![]; rows.len()];
        for _ in 0..rounds {
            for (i, r) in rows.iter().enumerate() {
                let s = exchanges(&h, &r.client, &r.echo, mode, *count);
                samples[i].extend(s.unwrap_or_else(|e| panic!("{e}")));
            }
        }
        for (i, s) in samples.iter_mut().enumerate() {
            lat[i][m] = (quantile_us(s, 0.5), quantile_us(s, 0.99));
        }
    }

    println!();
    println!(
        "summary: Gbit/s median of {rounds}; latency of a {MSG}-byte request and answer, \
         us, over one connection ({}) and a new connection each ({}), x {rounds} rounds",
        modes[0].2, modes[1].2
    );
    println!(
        "  {:14} {:>7}  {:>8} {:>8}  {:>8} {:>8}",
        "row", "Gbit/s", "1c p50", "1c p99", "new p50", "new p99"
    );
    let med: Vec<f64> = gbps.iter().map(|v| median(v)).collect();
    for (i, r) in rows.iter().enumerate() {
        println!(
            "  {:14} {:7.2}  {:8.1} {:8.1}  {:8.1} {:8.1}",
            r.path.name(),
            med[i],
            lat[i][0].0,
            lat[i][0].1,
            lat[i][1].0,
            lat[i][1].1
        );
    }
    println!("  added to direct, us (one connection p50 / p99; new connection p50 / p99):");
    for (i, r) in rows.iter().enumerate().skip(1) {
        println!(
            "    {:14} {:+7.1} / {:+7.1};  {:+7.1} / {:+7.1}",
            r.path.name(),
            lat[i][0].0 - lat[0][0].0,
            lat[i][0].1 - lat[0][0].1,
            lat[i][1].0 - lat[0][1].0,
            lat[i][1].1 - lat[0][1].1
        );
    }
    scraping.store(false, Ordering::SeqCst);
    let (scrapes, scrape_bytes, scrape_failures) = scraper.join().expect("the scraper");
    let row_of = |p: Path| rows.iter().position(|r| r.path == p);
    let g = |p: Path| med[row_of(p).expect("a row")];
    println!(
        "  ratios: mesh/direct {:.2}  ew-plain/mesh {:.2} (issue 14 aims at >= 0.90)  \
         ew-secret/mesh {:.2}  haproxy→mesh2/mesh {:.2}",
        g(Path::Mesh) / g(Path::Direct),
        g(Path::Plain) / g(Path::Mesh),
        g(Path::Secret) / g(Path::Mesh),
        g(Path::Haproxy) / g(Path::Mesh)
    );
    println!(
        "  ew-secret: {:.2} Gbit/s on one stream (issue 14 aims at >= 3)",
        g(Path::Secret)
    );
    if let (Some(m), Some(mm)) = (row_of(Path::Mesh), row_of(Path::MeshMetrics)) {
        println!(
            "  metrics: mesh+metrics/mesh throughput {:.3}, latency p50 one connection {:.3}, \
             new connection {:.3} (1.000: no cost); {scrapes} scrapes of {scrape_bytes} bytes \
             ({scrape_failures} failed)",
            med[mm] / med[m],
            lat[mm][0].0 / lat[m][0].0,
            lat[mm][1].0 / lat[m][1].0,
        );
    }
    drop(h);
}
