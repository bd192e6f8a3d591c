//! A test cluster of real `orc daemon` processes on 127.0.0.1, each with its own data
//! dir, socket and cluster port. Nodes can be killed with SIGKILL and restarted on the
//! same directories.
#![allow(dead_code)]

pub mod browser;
pub mod hosts;

use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// The orc binary under test: `ORC_TEST_BIN` if set (a copy of the binary, when several
/// worktrees share one target dir and rebuild its `orc` under a running test), else
/// cargo's.
pub fn bin() -> PathBuf {
    std::env::var_os("ORC_TEST_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_orc")))
}

pub mod ports;
pub use ports::free_port;

/// One daemon.
pub struct Node {
    pub dir: tempfile::TempDir,
    pub port: u16,
    /// Extra `orc daemon` flags.
    pub daemon_args: Vec<String>,
    /// A program (and its arguments) that runs the daemon, given the binary and its
    /// arguments after its own (empty: the binary itself).
    pub launcher: Vec<String>,
    /// Extra environment variables of the daemon.
    pub env: Vec<(String, String)>,
    child: Option<Child>,
}

impl Node {
    /// A node, not started.
    pub fn new() -> Node {
        Node {
            dir: tempfile::tempdir().expect("tempdir"),
            port: free_port(),
            daemon_args: vec![],
            launcher: vec![],
            env: vec![],
            child: None,
        }
    }

    pub fn sock(&self) -> PathBuf {
        self.dir.path().join("orc.sock")
    }

    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("daemon.log")).unwrap_or_default()
    }

    /// Starts the daemon and waits until its socket answers.
    pub fn start(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join("daemon.log"))
            .expect("log");
        let mut command = match self.launcher.split_first() {
            Some((program, args)) => {
                let mut c = Command::new(program);
                c.args(args).arg(bin());
                c
            }
            None => Command::new(bin()),
        };
        let child = command
            .args(["daemon", "--data-path-port", "0", "--data-dir"])
            .arg(self.dir.path().join("data"))
            .arg("--socket")
            .arg(self.sock())
            .args(&self.daemon_args)
            .env("ORC_LOG", "info,orc=debug")
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawn orc daemon");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if std::os::unix::net::UnixStream::connect(self.sock()).is_ok() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("daemon did not start:\n{}", self.log());
    }

    /// The daemon's process id, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(|c| c.id())
    }

    /// SIGKILL.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Runs a CLI command against this node (at most [`COMMAND_LIMIT`]: a command that
    /// hangs fails the test with the daemon's log instead of stalling the suite).
    pub fn orc(&self, args: &[&str]) -> Output {
        let mut c = Command::new(bin());
        c.arg("-H").arg(self.sock()).args(args);
        output_within(&mut c, COMMAND_LIMIT, &format!("orc {args:?}"))
            .unwrap_or_else(|e| panic!("{e}\n--- daemon log ---\n{}", tail(&self.log())))
    }

    /// Runs a CLI command that must succeed; returns its stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        let o = self.orc(args);
        assert!(
            o.status.success(),
            "orc {args:?} failed: {}\n--- daemon log ---\n{}",
            String::from_utf8_lossy(&o.stderr),
            tail(&self.log())
        );
        String::from_utf8_lossy(&o.stdout).into_owned()
    }

    /// Runs a CLI command that must fail; returns its stderr (one `error:` line).
    pub fn fails(&self, args: &[&str]) -> String {
        let o = self.orc(args);
        assert!(
            !o.status.success(),
            "orc {args:?} should have failed, printed: {}",
            String::from_utf8_lossy(&o.stdout)
        );
        let err = String::from_utf8_lossy(&o.stderr).into_owned();
        assert!(err.starts_with("error: "), "not an error line: {err:?}");
        assert_eq!(
            err.trim_end().lines().count(),
            1,
            "more than one line: {err:?}"
        );
        err
    }

    /// `--format json` output of a command.
    pub fn json(&self, args: &[&str]) -> serde_json::Value {
        let mut a = args.to_vec();
        a.extend(["--format", "json"]);
        serde_json::from_str(&self.ok(&a)).expect("json")
    }

    /// `orc node ls --format json`.
    pub fn nodes(&self) -> Vec<serde_json::Value> {
        self.json(&["node", "ls"])
            .as_array()
            .expect("array")
            .clone()
    }

    /// `orc info --format json`.
    pub fn info(&self) -> serde_json::Value {
        self.json(&["info"])
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.kill();
    }
}

fn tail(s: &str) -> String {
    let lines: Vec<&str> = s.lines().collect();
    lines[lines.len().saturating_sub(40)..].join("\n")
}

/// Opens a stopped daemon's database. The lock is retried for a while: in a CI run it
/// was still held just after the daemon was killed and reaped (most likely by a child
/// the daemon was spawning, such as its `ip route`, which shares the open file until it
/// execs).
pub fn open_stopped_db(db_dir: &std::path::Path) -> sled::Db {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        match sled::open(db_dir) {
            Ok(db) => return db,
            Err(e) if std::time::Instant::now() < deadline => {
                eprintln!("open db (retrying): {e}");
                std::thread::sleep(Duration::from_millis(100));
            }
            Err(e) => panic!("open db: {e:?}"),
        }
    }
}

/// The cluster object of a stopped manager (its data dir `data`), as its Raft log's
/// first entry created it: the state machine keeps the state tables in memory and
/// writes them as snapshots only, and a young cluster has none.
pub fn read_cluster(data: &std::path::Path) -> orc::store::Cluster {
    use prost::Message;
    let db = open_stopped_db(&data.join("raft"));
    let log = db.open_tree("raft_log").unwrap();
    for kv in log.iter() {
        let (_, v) = kv.unwrap();
        let entry = orc::proto::Entry::decode(v.as_ref()).unwrap();
        if let Some(orc::proto::entry::Payload::Normal(bytes)) = entry.payload {
            if let Ok(orc::store::Command::InitCluster { cluster, .. }) =
                orc::proto::convert::command::decode(&bytes)
            {
                return cluster;
            }
        }
    }
    panic!("no InitCluster in {}'s log", data.display())
}

/// Reads one key of a stopped daemon's database.
pub fn read_tree(db_dir: &std::path::Path, tree: &str, key: &str) -> Vec<u8> {
    let db = open_stopped_db(db_dir);
    let v = db.open_tree(tree).unwrap().get(key).unwrap().expect("key");
    v.to_vec()
}

/// Polls `f` until it returns `Some`, for at most `within`.
pub fn wait_for<T>(within: Duration, what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + within;
    loop {
        if let Some(v) = f() {
            return v;
        }
        if Instant::now() > deadline {
            panic!("timed out after {within:?} waiting for {what}");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A started cluster: `managers` managers (node 0 initialised it) then `workers`
/// workers.
pub fn cluster(managers: usize, workers: usize, init_args: &[&str]) -> Vec<Node> {
    cluster_with(managers, workers, init_args, &[])
}

/// [`cluster`] with extra `orc daemon` flags on every node.
pub fn cluster_with(
    managers: usize,
    workers: usize,
    init_args: &[&str],
    daemon_args: &[&str],
) -> Vec<Node> {
    cluster_env(managers, workers, init_args, daemon_args, &[])
}

/// [`cluster_with`] with extra environment variables on every daemon.
pub fn cluster_env(
    managers: usize,
    workers: usize,
    init_args: &[&str],
    daemon_args: &[&str],
    env: &[(&str, &str)],
) -> Vec<Node> {
    let mut nodes: Vec<Node> = (0..managers + workers).map(|_| Node::new()).collect();
    for n in nodes.iter_mut() {
        n.daemon_args = daemon_args.iter().map(|s| s.to_string()).collect();
        n.env = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
    }
    form_cluster(nodes, managers, init_args)
}

/// Starts `nodes` (made by [`Node::new`], their flags set) and forms a cluster of them:
/// the first `managers` are managers (node 0 initialised it), the others workers.
pub fn form_cluster(mut nodes: Vec<Node>, managers: usize, init_args: &[&str]) -> Vec<Node> {
    for n in nodes.iter_mut() {
        n.start();
    }
    let adv = nodes[0].addr();
    // Clusters of parallel tests share this machine's network namespace: each gets its
    // own VIP range so their VIPs and DNS addresses do not meet (unless it names one).
    let vips = random_vip_range();
    let mut args = vec!["init", "--advertise-addr", adv.as_str()];
    if !init_args.contains(&"--vip-range") {
        args.extend(["--vip-range", vips.as_str()]);
    }
    args.extend(init_args);
    nodes[0].ok(&args);
    let mt = nodes[0]
        .ok(&["join-token", "manager", "-q"])
        .trim()
        .to_string();
    let wt = nodes[0]
        .ok(&["join-token", "worker", "-q"])
        .trim()
        .to_string();
    for (i, n) in nodes.iter().enumerate().skip(1) {
        let token = if i < managers { &mt } else { &wt };
        n.ok(&[
            "join",
            "--token",
            token,
            "--advertise-addr",
            &n.addr(),
            &adv,
        ]);
    }
    let total = nodes.len();
    wait_for(Duration::from_secs(20), "all nodes ready", || {
        let ns = nodes[0].nodes();
        (ns.len() == total && ns.iter().all(|n| n["status"] == "ready")).then_some(())
    });
    nodes
}

/// The index of the node that is the current leader, as seen from `from`.
pub fn leader_index(nodes: &[Node], from: usize) -> usize {
    let info = nodes[from].info();
    let addr = info["leader_addr"].as_str().expect("leader").to_string();
    nodes
        .iter()
        .position(|n| n.addr() == addr)
        .expect("leader among nodes")
}

/// A /24 in 10.240.0.0/12 picked at random, for one test cluster's VIPs.
pub fn random_vip_range() -> String {
    let r: u32 = std::process::id()
        ^ (std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .subsec_nanos());
    static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let r =
        (r ^ N.fetch_add(0x9e37, std::sync::atomic::Ordering::Relaxed)).wrapping_mul(2654435761);
    format!("10.{}.{}.0/24", 240 + (r >> 28), (r >> 20) & 0xff)
}

/// `service update` arguments for the max-failure-ratio tests: a bind mount of `dir` at
/// `/r` (a new mount replaces every task) and a health check by which each new container
/// takes a number from `dir` at its first check (one at a time with parallelism 1), the
/// odd ones being unhealthy; failure action pause with `ratio`.
pub fn ratio_update_args(dir: &str, ratio: &str, service: &str) -> Vec<String> {
    let health = "f=/r/$(cat /etc/hostname); [ -e $f ] || { n=$(ls /r | wc -l); echo $n > $f; }; \
                  [ $(( $(cat $f) % 2 )) -eq 0 ]";
    [
        "service",
        "update",
        "--mount-add",
        &format!("type=bind,source={dir},target=/r"),
        "--health-cmd",
        health,
        "--health-interval",
        "300ms",
        "--health-retries",
        "1",
        "--update-monitor",
        "1s",
        "--update-failure-action",
        "pause",
        "--update-max-failure-ratio",
        ratio,
        service,
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

/// `service create` arguments of the service the max-failure-ratio tests update: 4
/// sleeping replicas that are never restarted.
pub fn ratio_create_args(service: &str) -> Vec<String> {
    [
        "service",
        "create",
        "--name",
        service,
        "--replicas",
        "4",
        "--stop-grace-period",
        "1s",
        "--restart-condition",
        "none",
        "orc-test/busybox:1",
        "sleep",
        "3600",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

/// The resident set of a process, bytes (0 when it is gone).
pub fn rss_bytes(pid: u32) -> u64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    s.lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|kb| kb.parse::<u64>().ok())
        .unwrap_or(0)
        * 1024
}

/// The peak resident set of a process, sampled every `every` on a thread of its own
/// until [`PeakRss::stop`].
pub struct PeakRss {
    peak: std::sync::Arc<std::sync::atomic::AtomicU64>,
    sampling: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: std::thread::JoinHandle<()>,
}

impl PeakRss {
    /// Starts sampling `pid`, from `idle` bytes.
    pub fn start(pid: u32, idle: u64, every: Duration) -> PeakRss {
        use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
        let peak = std::sync::Arc::new(AtomicU64::new(idle));
        let sampling = std::sync::Arc::new(AtomicBool::new(true));
        let (p, s) = (peak.clone(), sampling.clone());
        let thread = std::thread::spawn(move || {
            while s.load(Ordering::SeqCst) {
                p.fetch_max(rss_bytes(pid), Ordering::SeqCst);
                std::thread::sleep(every);
            }
        });
        PeakRss {
            peak,
            sampling,
            thread,
        }
    }

    /// Stops sampling; the peak seen, bytes.
    pub fn stop(self) -> u64 {
        use std::sync::atomic::Ordering;
        self.sampling.store(false, Ordering::SeqCst);
        self.thread.join().expect("sampler");
        self.peak.load(Ordering::SeqCst)
    }
}

/// A channel without a certificate (a stranger), pinned to the root CA of `digest`,
/// as every join token shows it.
pub fn anonymous(addr: &str, digest: &str) -> tonic::transport::Channel {
    orc::net::tls_channel(
        addr,
        orc::ca::join_client_config(digest).expect("join config"),
        Duration::from_secs(120),
    )
}

/// A number from the environment (benchmark settings), or `default`.
pub fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Builds the test images (`tests/images/build.sh`) if the engine lacks any of those
/// the engine tests use.
pub fn ensure_images() {
    sweep_bridges();
    let present = Command::new("docker")
        .args([
            "image",
            "inspect",
            "orc-test/web:1",
            "orc-test/busybox:1",
            "orc-test/postgres:1",
        ])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    if !present {
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/images/build.sh");
        let out = Command::new("bash")
            .arg(script)
            .output()
            .expect("run build.sh");
        assert!(
            out.status.success(),
            "tests/images/build.sh failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

/// Removes the orc bridges of this engine that no container is on and that are over
/// two minutes old: those of earlier tests' daemons, killed before their tasks ended
/// (a live daemon removes its own, see `agent::networks`). Docker's default address
/// pools hold about 30 bridges; a suite that left every one would run out.
pub fn sweep_bridges() {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0);
    let ids = docker(&["network", "ls", "-q", "--filter", "label=orc.network.id"]);
    for id in ids.lines() {
        let about = docker(&[
            "network",
            "inspect",
            "-f",
            "{{.Name}} {{.Created.Unix}} {{len .Containers}}",
            id,
        ]);
        let f: Vec<&str> = about.split(' ').collect();
        let [name, created, containers] = f[..] else {
            continue;
        };
        let old = created.parse::<i64>().is_ok_and(|c| now - c > 120);
        if name != "orc_default" && containers == "0" && old {
            docker(&["network", "rm", id]);
        }
    }
}

/// `docker ARGS` on this machine's engine: its trimmed stdout. A command still running
/// after 60 s is killed and gives "" (the engine can leave a `docker exec` hanging when
/// its container stops under it, which tests that poll a rolling service do).
pub fn docker(args: &[&str]) -> String {
    let mut c = Command::new("docker");
    c.args(args);
    match output_within(&mut c, Duration::from_secs(60), &format!("docker {args:?}")) {
        Ok(o) => String::from_utf8_lossy(&o.stdout).trim().to_string(),
        Err(e) => {
            eprintln!("{e}");
            String::new()
        }
    }
}

/// The longest any one CLI command of a test may take: the slowest (a stack deploy that
/// waits for its services) takes well under a minute; a command still running after this
/// hangs, and the test fails naming it instead of stalling CI.
pub const COMMAND_LIMIT: Duration = Duration::from_secs(300);

/// Runs `cmd` to completion like [`Command::output`], but kills it and returns an error
/// naming `what` once `limit` has passed.
pub fn output_within(cmd: &mut Command, limit: Duration, what: &str) -> Result<Output, String> {
    use std::io::Read;
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("{what}: cannot start: {e}"))?;
    let drain = |r: Option<Box<dyn Read + Send>>| {
        std::thread::spawn(move || {
            let mut buf = vec![];
            if let Some(mut r) = r {
                let _ = r.read_to_end(&mut buf);
            }
            buf
        })
    };
    let out = drain(
        child
            .stdout
            .take()
            .map(|r| Box::new(r) as Box<dyn Read + Send>),
    );
    let err = drain(
        child
            .stderr
            .take()
            .map(|r| Box::new(r) as Box<dyn Read + Send>),
    );
    let deadline = Instant::now() + limit;
    let status = loop {
        match child.try_wait() {
            Ok(Some(s)) => break s,
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(20)),
            _ => {
                let _ = child.kill();
                let _ = child.wait();
                let printed = String::from_utf8_lossy(&out.join().unwrap_or_default()).into_owned();
                let errs = String::from_utf8_lossy(&err.join().unwrap_or_default()).into_owned();
                return Err(format!(
                    "{what} still running after {limit:?}: killed\n--- its stdout ---\n{}\n--- its stderr ---\n{}",
                    tail(&printed),
                    tail(&errs)
                ));
            }
        }
    };
    Ok(Output {
        status,
        stdout: out.join().unwrap_or_default(),
        stderr: err.join().unwrap_or_default(),
    })
}

/// Every file under `dir` whose bytes contain `needle`.
pub fn files_containing(dir: &std::path::Path, needle: &[u8]) -> Vec<String> {
    let mut found = vec![];
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in entries.flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else if let Ok(bytes) = std::fs::read(&p) {
                if bytes.windows(needle.len()).any(|w| w == needle) {
                    found.push(p.display().to_string());
                }
            }
        }
    }
    found
}

/// One raw HTTP/1.1 exchange with `addr`: the status code, the head (status line and
/// headers) and the body; `None` when the server closed the connection without an
/// answer. The request should say `Connection: close`.
pub fn http_head(addr: &str, request: &[u8]) -> Option<(u16, String, String)> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    // the server may answer (and close) before it has read all of a large request
    let _ = s.write_all(request);
    // Read until the answer is complete by its own length (some servers keep the
    // connection open after it, `Connection: close` or not), or until the server closes.
    let mut out = Vec::new();
    let mut buf = [0u8; 16 * 1024];
    loop {
        if let Some(end) = out.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&out[..end]).to_ascii_lowercase();
            let length = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .and_then(|v| v.trim().parse::<usize>().ok());
            let body = &out[end + 4..];
            match length {
                Some(n) if body.len() >= n => break,
                None if head.contains("transfer-encoding: chunked")
                    && body.ends_with(b"0\r\n\r\n") =>
                {
                    break
                }
                _ => {}
            }
        }
        match s.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => out.extend_from_slice(&buf[..n]),
        }
    }
    let text = String::from_utf8_lossy(&out).into_owned();
    let status = text.split(' ').nth(1)?.parse().ok()?;
    let (head, body) = text
        .split_once("\r\n\r\n")
        .map(|(h, b)| (h.to_string(), b.to_string()))
        .unwrap_or((text.clone(), String::new()));
    Some((status, head, body))
}

/// [`http_head`] without the head.
pub fn http(addr: &str, request: &[u8]) -> Option<(u16, String)> {
    http_head(addr, request).map(|(status, _, body)| (status, body))
}

/// Removes the containers of the named services at the end of a test, even when it
/// fails.
pub struct RemoveContainers(pub Vec<String>);

impl Drop for RemoveContainers {
    fn drop(&mut self) {
        for s in &self.0 {
            let filter = format!("label=orc.service.name={s}");
            let ids = docker(&["ps", "-aq", "--filter", &filter]);
            let ids: Vec<&str> = ids.lines().collect();
            if !ids.is_empty() {
                let mut args = vec!["rm", "-f"];
                args.extend(ids);
                docker(&args);
            }
        }
    }
}
