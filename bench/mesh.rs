//! Mesh benchmark (issue 4): the routing mesh beside a direct connection and beside
//! HAProxy, on namespace hosts (tests/hosts/harness.sh), measured side by side in one
//! run.
//!
//! Set-up: 2 hosts, each with its own engine and `orc daemon`; host 1 is the manager,
//! host 2 a worker. Two 1-replica services of `orc-test/tools:1` (iperf3 and socat
//! copied into a local image with their libraries, tests/images/build.sh) run on host 2:
//! `iperf3 -s` published on 5201, and a TCP echo (`socat TCP-LISTEN:7,fork PIPE`)
//! published on 7007. Every client runs in host 1's network namespace and reaches the
//! same task three ways:
//!
//! - **direct**: host 2's address and the host port Docker mapped for the task (as
//!   `orc node routes` lists the backend), so the kernel's DNAT on host 2 only;
//! - **mesh**: host 1's address and the published port, so orc's mesh on host 1
//!   forwards to that same backend address;
//! - **haproxy**: Debian's HAProxy in host 1's namespace, TCP mode, its defaults (one
//!   thread per core), a frontend on another port with that same backend address.
//!
//! Measured:
//!
//! 1. Throughput of one TCP stream, client to task: `iperf3 -c` (the machine's own
//!    binary, in host 1's namespace), each path in turn for several rounds (default 3
//!    rounds of 5 s after a 1 s warm-up that is left out); Gbit/s per run, medians and
//!    the ratios mesh/direct and mesh/haproxy (issue 4 asks for at least 0.8×
//!    HAProxy), with the CPU the proxy process used meanwhile (100% = one core).
//! 2. Latency of small request/response exchanges (32 bytes each way), timed by this
//!    program itself: it runs itself in host 1's namespace as a client
//!    (`harness.sh exec 1 <this binary> --client ADDR MODE COUNT`, std `TcpStream`,
//!    `TCP_NODELAY`), over one connection and over a new connection per exchange
//!    (connect, send, receive, close), rounds interleaved as above. Printed: p50 and
//!    p99 per path and the latency each proxy adds to direct (p50 and p99 of mesh and
//!    haproxy minus those of direct).
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
//! default, and Debian's, is to copy).

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

/// The paths to the same task.
#[derive(Clone, Copy)]
enum Path {
    Direct,
    Mesh,
    Haproxy,
}

const PATHS: [Path; 3] = [Path::Direct, Path::Mesh, Path::Haproxy];

impl Path {
    fn name(self) -> &'static str {
        match self {
            Path::Direct => "direct",
            Path::Mesh => "mesh",
            Path::Haproxy => "haproxy",
        }
    }
}

/// Where each path reaches one service.
struct Targets {
    direct: String,
    mesh: String,
    haproxy: String,
}

impl Targets {
    fn get(&self, p: Path) -> &str {
        match p {
            Path::Direct => &self.direct,
            Path::Mesh => &self.mesh,
            Path::Haproxy => &self.haproxy,
        }
    }
}

/// One iperf3 run from host 1: received Gbit/s and the sender's retransmits.
fn iperf(h: &Hosts, target: &str, seconds: u64) -> Result<(f64, u64), String> {
    let (ip, port) = target.rsplit_once(':').expect("IP:PORT");
    let o = h.exec(
        1,
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

/// Runs this binary as a latency client in host 1's namespace: the round trip of each
/// exchange, in nanoseconds.
fn exchanges(h: &Hosts, target: &str, mode: &str, count: u64) -> Result<Vec<u64>, String> {
    let me = std::env::current_exe().expect("current exe");
    let me = me.to_str().expect("utf-8 path");
    let o = h.exec(1, &[me, "--client", target, mode, &count.to_string()]);
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

/// The client mode: `--client ADDR one|new COUNT`. Prints the round trip of each
/// exchange in nanoseconds, after a few exchanges left out as warm-up.
fn client(args: &[String]) {
    let [addr, mode, count] = args else {
        eprintln!("usage: mesh --client ADDR one|new COUNT");
        std::process::exit(2);
    };
    let count: usize = count.parse().expect("COUNT");
    let connect = || {
        let s = TcpStream::connect(addr.as_str()).unwrap_or_else(|e| {
            eprintln!("connect {addr}: {e}");
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

/// The first route of `orc node routes` on host 1 for TCP `port` with one backend.
fn backend_of(h: &Hosts, port: u16) -> Option<String> {
    let out = h.orc(1, &["node", "routes", "--format", "json"]).ok()?;
    let v: Vec<serde_json::Value> = serde_json::from_str(&out).ok()?;
    v.iter()
        .filter(|r| r["port"] == port && r["protocol"] == "tcp")
        .find_map(|r| {
            let b = r["backends"].as_array()?;
            (b.len() == 1).then(|| b[0]["address"].as_str().map(String::from))?
        })
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

    eprintln!("[mesh bench] bringing up 2 namespace hosts");
    let mut h = Hosts::up(2);
    h.run(&["start-orc", "1"]);
    h.run(&["start-orc", "2"]);
    h.ok(1, &["init", "--advertise-addr", &addr(1)]);
    let token = h.ok(1, &["join-token", "worker", "-q"]).trim().to_string();
    h.ok(2, &["join", "--token", &token, &addr(1)]);
    let nodes = wait_for(Duration::from_secs(30), "2 ready nodes", || {
        let v: Vec<serde_json::Value> =
            serde_json::from_str(&h.orc(1, &["node", "ls", "--format", "json"]).ok()?).ok()?;
        (v.len() == 2 && v.iter().all(|n| n["status"] == "ready")).then_some(v)
    });
    let host2 = nodes
        .iter()
        .find(|n| n["address"] == format!("{}:4242", addr(2)))
        .and_then(|n| n["id"].as_str())
        .expect("host 2's node")
        .to_string();
    let on_host2 = format!("node.id=={host2}");
    h.ok(
        1,
        &[
            "service",
            "create",
            "-d",
            "--name",
            "iperf",
            "-p",
            &format!("{IPERF_PORT}:5201"),
            "--constraint",
            &on_host2,
            IMAGE,
            "iperf3",
            "-s",
        ],
    );
    h.ok(
        1,
        &[
            "service",
            "create",
            "-d",
            "--name",
            "echo",
            "-p",
            &format!("{ECHO_PORT}:7"),
            "--constraint",
            &on_host2,
            IMAGE,
            "socat",
            "TCP-LISTEN:7,fork,reuseaddr",
            "PIPE",
        ],
    );
    let (iperf_backend, echo_backend) =
        wait_for(Duration::from_secs(60), "both services routed", || {
            Some((backend_of(&h, IPERF_PORT)?, backend_of(&h, ECHO_PORT)?))
        });
    assert!(
        iperf_backend.starts_with(&format!("{}:", addr(2))),
        "iperf3's task is not on host 2: {iperf_backend}"
    );

    let haproxy_pid = h.start_haproxy(
        1,
        &format!(
            "global\n    maxconn 4096\n\
             defaults\n    mode tcp\n{splice}    timeout connect 5s\n\
             \x20   timeout client 1m\n    timeout server 1m\n\
             frontend iperf\n    bind {a}:{HAPROXY_IPERF_PORT}\n    default_backend iperf\n\
             backend iperf\n    server task {iperf_backend}\n\
             frontend echo\n    bind {a}:{HAPROXY_ECHO_PORT}\n    default_backend echo\n\
             backend echo\n    server task {echo_backend}\n",
            a = addr(1),
            splice = if haproxy_splice {
                "    option splice-auto\n"
            } else {
                ""
            },
        ),
    );
    let orc1_pid = h.orc_pid(1);
    let iperf_t = Targets {
        direct: iperf_backend.clone(),
        mesh: format!("{}:{IPERF_PORT}", addr(1)),
        haproxy: format!("{}:{HAPROXY_IPERF_PORT}", addr(1)),
    };
    let echo_t = Targets {
        direct: echo_backend.clone(),
        mesh: format!("{}:{ECHO_PORT}", addr(1)),
        haproxy: format!("{}:{HAPROXY_ECHO_PORT}", addr(1)),
    };
    // Every path answers before anything is timed.
    for p in PATHS {
        wait_for(
            Duration::from_secs(30),
            &format!("echo via {}", p.name()),
            || exchanges(&h, echo_t.get(p), "one", 10).ok(),
        );
        wait_for(
            Duration::from_secs(30),
            &format!("iperf3 via {}", p.name()),
            || iperf(&h, iperf_t.get(p), 1).ok(),
        );
    }
    if h.haproxy
        .as_mut()
        .is_some_and(|c| !matches!(c.try_wait(), Ok(None)))
    {
        panic!("haproxy exited: {}", h.haproxy_log());
    }

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
        "mesh benchmark: 2 namespace hosts, clients in host 1 ({}), one task on host 2",
        addr(1)
    );
    println!(
        "  direct:  {} (host 2, Docker's port mapping)",
        iperf_t.direct
    );
    println!("  mesh:    {} (orc's mesh on host 1)", iperf_t.mesh);
    println!(
        "  haproxy: {} ({haproxy_version}, TCP mode{})",
        iperf_t.haproxy,
        if haproxy_splice { ", splice-auto" } else { "" }
    );
    println!();
    println!(
        "throughput, one TCP stream (iperf3 -t {seconds} -O 1), Gbit/s; \
         proxy CPU (100% = one core):"
    );
    let mut gbps: [Vec<f64>; 3] = Default::default();
    for r in 0..rounds {
        let mut line = format!("  round {}:", r + 1);
        for (i, p) in PATHS.into_iter().enumerate() {
            let pid = match p {
                Path::Direct => None,
                Path::Mesh => Some(orc1_pid),
                Path::Haproxy => Some(haproxy_pid),
            };
            let (c0, t0) = (pid.map(cpu_seconds), Instant::now());
            let (g, retr) = iperf(&h, iperf_t.get(p), seconds)
                .or_else(|e| {
                    eprintln!("[mesh bench] {e}; once more");
                    std::thread::sleep(Duration::from_secs(1));
                    iperf(&h, iperf_t.get(p), seconds)
                })
                .unwrap_or_else(|e| panic!("{e}"));
            let cpu = pid.map(|pid| {
                100.0 * (cpu_seconds(pid) - c0.unwrap_or(0.0)) / t0.elapsed().as_secs_f64()
            });
            gbps[i].push(g);
            line += &format!("  {} {g:6.2} (retr {retr}", p.name());
            if let Some(cpu) = cpu {
                line += &format!(", cpu {cpu:.0}%");
            }
            line += ")";
        }
        println!("{line}");
    }
    let med: Vec<f64> = gbps.iter().map(|v| median(v)).collect();
    println!(
        "  median: direct {:.2}  mesh {:.2}  haproxy {:.2} Gbit/s",
        med[0], med[1], med[2]
    );
    println!(
        "  ratios: mesh/direct {:.2}  mesh/haproxy {:.2} (issue 4: at least 0.80)  \
         haproxy/direct {:.2}",
        med[1] / med[0],
        med[1] / med[2],
        med[2] / med[0]
    );

    for (mode, label, count) in [
        ("one", "over one connection", per_round),
        ("new", "a new connection each", (per_round / 10).max(10)),
    ] {
        println!();
        println!(
            "latency, {MSG}-byte request and answer, {label} \
             ({count} exchanges x {rounds} rounds), us:"
        );
        let mut samples: [Vec<u64>; 3] = Default::default();
        for _ in 0..rounds {
            for (i, p) in PATHS.into_iter().enumerate() {
                let s = exchanges(&h, echo_t.get(p), mode, count);
                samples[i].extend(s.unwrap_or_else(|e| panic!("{e}")));
            }
        }
        let q: Vec<(f64, f64)> = samples
            .iter_mut()
            .map(|s| (quantile_us(s, 0.5), quantile_us(s, 0.99)))
            .collect();
        for (i, p) in PATHS.into_iter().enumerate() {
            let added = if i == 0 {
                String::new()
            } else {
                format!(
                    "   added: p50 {:+7.1}  p99 {:+7.1}",
                    q[i].0 - q[0].0,
                    q[i].1 - q[0].1
                )
            };
            println!(
                "  {:8} p50 {:7.1}  p99 {:7.1}{added}",
                p.name(),
                q[i].0,
                q[i].1
            );
        }
    }
    drop(h);
}
