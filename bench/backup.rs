//! Backup and restore benchmark (issue 16): a state of 1,000 services and 10,000 tasks
//! (and 10 nodes, 100 secrets), built through the store directly; prints the time to
//! take and write a backup, the time to read, check and plan its restore and apply the
//! restore's commands to a fresh state (what every manager's state machine does with
//! them; the Raft round trips of a real restore are not in it), and the file's size.
//!
//! Run: `cargo bench --bench backup`. `ORC_BENCH_SERVICES` and `ORC_BENCH_TASKS` change
//! the sizes.

#[path = "common/state.rs"]
mod state;

use std::time::Instant;

use orc::backup::{plan_restore, write_atomic, Backup};
use orc::keys::{DataKey, Purpose, Sealed};
use orc::store::secret::{Kind, Version};
use orc::store::{
    Cluster, Command, Node, NodeDescription, NodeId, Response, Role, Secret, SecretId, Settings,
    State,
};

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn cluster(id: &str) -> Cluster {
    Cluster {
        vip_cursor: 0,
        id: id.into(),
        ca_cert_pem: "-----BEGIN CERTIFICATE-----\n...\n-----END CERTIFICATE-----\n".into(),
        ca_key: Sealed::from_stored("00"),
        worker_secret: Sealed::from_stored("01"),
        manager_secret: Sealed::from_stored("02"),
        unlock_key: None,
        settings: Settings::default(),
        created_ms: 1,
    }
}

fn build(dk: &DataKey, services: usize, tasks: usize) -> State {
    let mut s = State {
        cluster: Some(cluster("bench")),
        ..Default::default()
    };
    for i in 1..=10u64 {
        let role = if i <= 3 { Role::Manager } else { Role::Worker };
        let mut n = state::ready_node(i, format!("10.0.0.{i}:4242"), role);
        n.labels.insert("zone".into(), format!("z{}", i % 3));
        s.nodes.insert(n.id, n);
    }
    for i in 0..100 {
        let plain = format!("secret-{i:04}-content");
        s.secrets.insert(
            SecretId(format!("sec{i:04}")),
            Secret {
                id: SecretId(format!("sec{i:04}")),
                kind: Kind::Secret,
                name: format!("pw{i:04}"),
                labels: Default::default(),
                versions: vec![Version {
                    version: 1,
                    data: dk.seal(Purpose::Secret, plain.as_bytes()).unwrap(),
                    size: plain.len() as u64,
                    digest: orc::api::secrets::digest(dk, Kind::Secret, plain.as_bytes()),
                    created_ms: 1,
                }],
                created_ms: 1,
                updated_ms: 1,
            },
        );
    }
    let per = tasks.div_ceil(services.max(1));
    let mut made = 0;
    for i in 0..services {
        let sv = state::service(i, |spec| {
            spec.task.container.args = vec!["serve".into(), "--port".into(), "8080".into()];
        });
        for slot in 1..=per as u64 {
            if made == tasks {
                break;
            }
            made += 1;
            let t = state::running_task(i, &sv, slot, NodeId(1 + (made as u64 % 10)));
            s.tasks.insert(t.id.clone(), t);
        }
        s.services.insert(sv.id.clone(), sv);
    }
    s
}

fn main() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let services = env_usize("ORC_BENCH_SERVICES", 1000);
    let tasks = env_usize("ORC_BENCH_TASKS", 10_000);
    let dk = DataKey::generate().unwrap();
    let state = build(&dk, services, tasks);
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("bench.orcbak");
    let mut backup_times = vec![];
    let mut restore_times = vec![];
    let mut size = 0;
    for _ in 0..5 {
        let t0 = Instant::now();
        let b = orc::backup::take(state.clone(), 123_456, &dk, orc::units::now_ms()).unwrap();
        let bytes = b.encode().unwrap();
        write_atomic(&file, &bytes).unwrap();
        backup_times.push(t0.elapsed());
        size = bytes.len();

        let t0 = Instant::now();
        let b = Backup::read_file(&file).unwrap();
        let (old, _) = b.open_key(None).unwrap();
        let new = DataKey::generate().unwrap();
        let me = Node::new(
            NodeId(0xabc),
            "10.0.1.1:4242",
            Role::Manager,
            NodeDescription {
                hostname: "host1".into(),
                ..Default::default()
            },
            1,
        );
        let plan = plan_restore(&b, &old, &new, me).unwrap();
        let mut fresh = State::default();
        let init = Command::InitCluster {
            cluster: cluster("restored"),
            node: plan.me.clone(),
        };
        assert_eq!(fresh.apply(&init).0, Response::Ok);
        for c in &plan.commands {
            assert_eq!(fresh.apply(c).0, Response::Ok);
        }
        restore_times.push(t0.elapsed());
        assert_eq!(fresh.services.len(), services);
        assert_eq!(fresh.secrets.len(), 100);
        assert_eq!(plan.commands.len(), 9 + 100 + services);
    }
    backup_times.sort();
    restore_times.sort();
    println!(
        "backup of {services} services, {tasks} tasks, 10 nodes, 100 secrets ({} commands to restore)",
        9 + 100 + services
    );
    println!(
        "backup (take + encode + checksum + atomic write): median {:?} (min {:?}, max {:?})",
        backup_times[2], backup_times[0], backup_times[4]
    );
    println!(
        "restore (read + verify + reseal secrets + plan + apply): median {:?} (min {:?}, max {:?})",
        restore_times[2], restore_times[0], restore_times[4]
    );
    println!(
        "file size: {size} bytes ({:.1} MiB)",
        size as f64 / 1048576.0
    );
}
