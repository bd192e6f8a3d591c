//! Namespace hosts for the level-4 tests (tests/hosts/harness.sh, after
//! ../shared/HOSTS.md): each a network namespace with its own address, dockerd and
//! `orc daemon`. The hosts use machine-wide names: a test holds [`HOSTS_LOCK`] (within
//! its binary) and `/tmp/orc-hosts.lock` (across processes) while it has them.

use std::path::PathBuf;
use std::process::Command;
use std::sync::Mutex;
use std::time::Duration;

/// Serialises the tests of one binary that use hosts.
pub static HOSTS_LOCK: Mutex<()> = Mutex::new(());

pub fn harness() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/hosts/harness.sh")
}

/// A set of namespace hosts; torn down on drop. Holds `/tmp/orc-hosts.lock` (flock)
/// meanwhile, which benchmarks and scripts on the same machine take too.
pub struct Hosts {
    pub n: usize,
    _lock: std::fs::File,
}

const LOCK: &str = "/tmp/orc-hosts.lock";

/// Holds [`LOCK`]. Under `flock /tmp/orc-hosts.lock cargo test ...` (as the hosts tests
/// are run) this process inherits the descriptor `flock(1)` locked: a lock belongs to
/// the open file, so locking that descriptor again returns at once, where a new open of
/// the file would wait forever for the lock its own parent holds. Otherwise the file is
/// opened and locked here, waiting for whoever holds it.
fn take_lock() -> std::fs::File {
    use std::os::fd::{AsRawFd, FromRawFd};
    let inherited = std::fs::read_dir("/proc/self/fd")
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| std::fs::read_link(e.path()).is_ok_and(|p| p == std::path::Path::new(LOCK)))
        .filter_map(|e| e.file_name().to_str()?.parse::<libc::c_int>().ok())
        .next();
    let file = match inherited {
        // SAFETY: a dup of a descriptor listed open in /proc/self/fd; the File owns the
        // new one. Both are close-on-exec: no harness or orc process keeps the lock.
        Some(fd) => unsafe {
            libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC);
            let d = libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, 3);
            assert!(d >= 0, "dup of the inherited {LOCK} descriptor");
            std::fs::File::from_raw_fd(d)
        },
        None => std::fs::File::create(LOCK).expect("lock file"),
    };
    // SAFETY: flock on a descriptor the File owns; released when the last descriptor of
    // the open file closes.
    let r = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
    if r != 0 {
        eprintln!("[hosts] waiting for {LOCK} (someone else uses the namespace hosts)");
        // SAFETY: as above.
        let r = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX) };
        assert_eq!(r, 0, "flock {LOCK}");
    }
    file
}

impl Hosts {
    pub fn up(n: usize) -> Hosts {
        let lock = take_lock();
        let h = Hosts { n, _lock: lock };
        h.run(&["up", &n.to_string()]);
        h
    }

    pub fn run(&self, args: &[&str]) -> String {
        let mut c = Command::new("bash");
        c.arg(harness())
            .args(args)
            .env("ORC_BIN", env!("CARGO_BIN_EXE_orc"));
        let o = super::output_within(
            &mut c,
            Duration::from_secs(600),
            &format!("harness {args:?}"),
        )
        .unwrap_or_else(|e| panic!("{e}"));
        assert!(
            o.status.success(),
            "harness {args:?} failed: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        String::from_utf8_lossy(&o.stdout).trim().to_string()
    }

    pub fn addr(&self, i: usize) -> String {
        format!("10.77.0.{}", 10 + i)
    }

    pub fn sock(&self, i: usize) -> String {
        self.run(&["orc-sock", &i.to_string()])
    }

    pub fn start_orc(&self, i: usize) {
        self.run(&["start-orc", &i.to_string()]);
    }

    /// [`Hosts::start_orc`] with extra `orc daemon` flags.
    pub fn start_orc_with(&self, i: usize, args: &[&str]) {
        let n = i.to_string();
        let mut a = vec!["start-orc", n.as_str()];
        a.extend(args);
        self.run(&a);
    }

    pub fn log(&self, i: usize) -> String {
        let dir = self.run(&["dir", &i.to_string()]);
        std::fs::read_to_string(format!("{dir}/orc.log")).unwrap_or_default()
    }

    pub fn orc(&self, i: usize, args: &[&str]) -> std::process::Output {
        let mut c = Command::new(env!("CARGO_BIN_EXE_orc"));
        c.arg("-H").arg(self.sock(i)).args(args);
        super::output_within(
            &mut c,
            super::COMMAND_LIMIT,
            &format!("host {i}: orc {args:?}"),
        )
        .unwrap_or_else(|e| panic!("{e}\n--- orc.log ---\n{}", self.log(i)))
    }

    pub fn ok(&self, i: usize, args: &[&str]) -> String {
        let o = self.orc(i, args);
        assert!(
            o.status.success(),
            "host {i}: orc {args:?}: {}\n--- orc.log ---\n{}",
            String::from_utf8_lossy(&o.stderr),
            self.log(i)
        );
        String::from_utf8_lossy(&o.stdout).into_owned()
    }

    /// Starts orc on hosts 1..=n, inits the cluster on host 1 and joins the others
    /// with the `role` ("manager" or "worker") token; returns `node ls` as host
    /// `seen_from` shows it once all n nodes are ready and no manager is unreachable.
    pub fn form_cluster(&self, n: usize, role: &str, seen_from: usize) -> Vec<serde_json::Value> {
        for i in 1..=n {
            self.start_orc(i);
        }
        self.ok(1, &["init", "--advertise-addr", &self.addr(1)]);
        let token = self.ok(1, &["join-token", role, "-q"]).trim().to_string();
        for i in 2..=n {
            self.ok(i, &["join", "--token", &token, &self.addr(1)]);
        }
        super::wait_for(
            std::time::Duration::from_secs(30),
            &format!("{n} ready nodes"),
            || {
                let ns = self.nodes(seen_from)?;
                (ns.len() == n
                    && ns
                        .iter()
                        .all(|n| n["status"] == "ready" && n["manager_status"] != "unreachable"))
                .then_some(ns)
            },
        )
    }

    /// The id of host `i`'s node in `ns` (a `node ls` of [`Hosts::form_cluster`]).
    pub fn node_id(&self, ns: &[serde_json::Value], i: usize) -> String {
        ns.iter()
            .find(|n| n["address"] == format!("{}:4242", self.addr(i)))
            .unwrap()["id"]
            .as_str()
            .unwrap()
            .to_string()
    }

    pub fn nodes(&self, i: usize) -> Option<Vec<serde_json::Value>> {
        let o = self.orc(i, &["node", "ls", "--format", "json"]);
        if !o.status.success() {
            return None;
        }
        serde_json::from_slice(&o.stdout).ok()
    }
}

impl Drop for Hosts {
    fn drop(&mut self) {
        let _ = Command::new("bash").arg(harness()).arg("down").output();
        let _ = self.n;
    }
}

/// Runs `sh -c script` in host `i`'s namespace (host tools: busybox, socat).
pub fn host_sh(i: usize, script: &str) -> std::process::Output {
    Command::new("bash")
        .arg(harness())
        .args(["exec", &i.to_string(), "sh", "-c", script])
        .output()
        .expect("harness exec")
}

/// The running tasks of `service`, asked of host `i`.
pub fn running_tasks(h: &Hosts, i: usize, service: &str) -> Vec<serde_json::Value> {
    let o = h.orc(i, &["service", "ps", service, "--format", "json"]);
    let v: Vec<serde_json::Value> = serde_json::from_slice(&o.stdout).unwrap_or_default();
    v.into_iter()
        .filter(|t| t["state"] == "running" && t["desired_state"] == "running")
        .collect()
}

/// In the container `ctr` of host `i`: `sh -c script`.
pub fn in_container(h: &Hosts, i: usize, ctr: &str, script: &str) -> std::process::Output {
    let _ = h;
    Command::new("bash")
        .arg(harness())
        .args(["docker", &i.to_string(), "exec", ctr, "sh", "-c", script])
        .output()
        .expect("docker exec")
}
