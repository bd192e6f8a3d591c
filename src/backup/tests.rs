//! The backup file: round trip, and every kind of bad file refused with one line naming
//! it; the restore plan: secrets sealed again under the new key, old nodes kept down,
//! no task carried over; scheduled names and pruning.

use super::*;
use crate::keys::Purpose;
use crate::store::secret::Version;
use crate::store::{
    Cluster, NodeDescription, NodeId, Secret, SecretId, SecretRef, Service, ServiceId, Task,
};

const PLAIN: &[u8] = b"correct horse battery staple";

fn cluster(unlock: Option<Sealed>) -> Cluster {
    Cluster {
        unlock_key: unlock,
        ..crate::store::fixtures::cluster()
    }
}

fn node(id: u64, host: &str, role: Role) -> Node {
    let mut n = Node::new(
        NodeId(id),
        format!("10.0.0.{id}:4242"),
        role,
        NodeDescription {
            hostname: host.into(),
            ..Default::default()
        },
        0,
    );
    n.status = NodeStatus::Ready;
    n
}

/// A service of 2 replicas whose id is its name.
fn service(name: &str) -> Service {
    let mut s = crate::store::fixtures::service(name, 2);
    s.id = ServiceId(name.into());
    s.vip = "10.200.0.2".into();
    s
}

/// A state with a cluster, two nodes (one labelled), a service using a secret, a
/// config, and a task.
fn state(dk: &DataKey, unlock: Option<&UnlockKey>) -> State {
    let mut s = State {
        cluster: Some(cluster(unlock.map(|u| u.seal_with(dk).unwrap()))),
        ..Default::default()
    };
    let mut a = node(1, "alpha", Role::Manager);
    a.labels.insert("zone".into(), "east".into());
    s.nodes.insert(a.id, a);
    let b = node(2, "beta", Role::Manager);
    s.nodes.insert(b.id, b);
    for (kind, id, name) in [(Kind::Secret, "s1", "pw"), (Kind::Config, "c1", "conf")] {
        let purpose = crate::api::secrets::purpose(kind);
        s.table_mut(kind).insert(
            SecretId(id.into()),
            Secret {
                id: SecretId(id.into()),
                kind,
                name: name.into(),
                labels: Default::default(),
                versions: vec![Version {
                    version: 1,
                    data: dk.seal(purpose, PLAIN).unwrap(),
                    size: PLAIN.len() as u64,
                    digest: crate::api::secrets::digest(dk, kind, PLAIN),
                    created_ms: 1,
                }],
                created_ms: 1,
                updated_ms: 1,
            },
        );
    }
    let mut sv = service("web");
    let mut r = SecretRef::to("s1");
    r.id = SecretId("s1".into());
    r.version = 1;
    sv.spec.task.secrets.push(r);
    let t = Task {
        id: crate::store::TaskId("t1".into()),
        service_id: sv.id.clone(),
        service_name: sv.spec.name.clone(),
        slot: 1,
        node_id: Some(NodeId(2)),
        spec_version: 1,
        spec: sv.spec.task.clone().into(),
        desired_state: crate::store::TaskState::Running,
        status: crate::store::TaskStatus::new(crate::store::TaskState::Running, "", 1),
        created_ms: 1,
        vip: String::new(),
        endpoint: None,
    };
    s.tasks.insert(t.id.clone(), t);
    s.services.insert(sv.id.clone(), sv);
    s
}

fn encoded() -> (Vec<u8>, DataKey) {
    let dk = DataKey::generate().unwrap();
    let b = take(state(&dk, None), 42, &dk, 1_700_000_000_000).unwrap();
    (b.encode().unwrap(), dk)
}

fn err(r: Result<Backup>) -> String {
    r.expect_err("refused").to_string()
}

#[test]
fn a_backup_decodes_to_the_same_state_and_key() {
    let dk = DataKey::generate().unwrap();
    let s = state(&dk, None);
    let b = take(s.clone(), 42, &dk, 5).unwrap();
    let back = Backup::decode(&b.encode().unwrap(), "f.orcbak").unwrap();
    assert_eq!(back.state, s);
    assert_eq!(back.meta, b.meta);
    assert_eq!(back.meta.index, 42);
    assert_eq!((back.meta.services, back.meta.tasks), (1, 1));
    assert_eq!((back.meta.secrets, back.meta.configs), (1, 1));
    assert!(!back.meta.autolock);
    let (k, u) = back.open_key(None).unwrap();
    assert_eq!(k, dk);
    assert!(u.is_none());
}

#[test]
fn the_file_holds_no_secret_in_the_clear_but_holds_the_rest() {
    let (bytes, _) = encoded();
    let text = String::from_utf8_lossy(&bytes);
    // Positive control: a plain value of the state is found the same way.
    assert!(text.contains("zone") && text.contains("east"));
    assert!(!text.contains(std::str::from_utf8(PLAIN).unwrap()));
}

#[test]
fn a_changed_byte_anywhere_in_the_body_is_refused() {
    let (bytes, _) = encoded();
    let body_start = bytes.len() - {
        let after_magic = &bytes[MAGIC.len()..];
        let nl = after_magic.iter().position(|&b| b == b'\n').unwrap();
        after_magic.len() - nl - 1
    };
    for at in [body_start, body_start + 17, bytes.len() - 1] {
        let mut bad = bytes.clone();
        bad[at] ^= 0x01;
        let e = err(Backup::decode(&bad, "f.orcbak"));
        assert!(e.starts_with("f.orcbak: damaged: the checksum"), "{e}");
    }
}

#[test]
fn a_header_that_does_not_match_its_body_is_refused() {
    let (bytes, _) = encoded();
    let text = String::from_utf8(bytes).unwrap();
    let bad = text.replacen("\"index\":42", "\"index\":43", 1);
    assert_ne!(bad, text);
    let e = err(Backup::decode(bad.as_bytes(), "f.orcbak"));
    assert!(e.contains("the header does not match the body"), "{e}");
}

#[test]
fn a_truncated_file_is_refused() {
    let (bytes, _) = encoded();
    for cut in [bytes.len() - 1, bytes.len() / 2, MAGIC.len() + 10, 3, 0] {
        let e = err(Backup::decode(&bytes[..cut], "f.orcbak"));
        assert!(e.starts_with("f.orcbak: "), "{e}");
        assert!(
            e.contains("truncated") || e.contains("not an orc backup"),
            "cut at {cut}: {e}"
        );
    }
}

#[test]
fn another_format_version_is_refused() {
    let (bytes, _) = encoded();
    let text = String::from_utf8(bytes).unwrap();
    let bad = text.replacen("{\"format\":1,", "{\"format\":2,", 1);
    let e = err(Backup::decode(bad.as_bytes(), "f.orcbak"));
    assert_eq!(
        e,
        "f.orcbak: backup format version 2 is not supported (this orc reads version 1)"
    );
}

#[test]
fn sizes_beyond_the_limits_are_refused_before_reading_the_body() {
    // A header announcing a huge body.
    let mut bytes = MAGIC.to_vec();
    bytes.extend_from_slice(
        format!(
            "{{\"format\":1,\"meta\":{{\"cluster_id\":\"c\",\"index\":1,\"created_ms\":1,\"autolock\":false,\"nodes\":0,\"services\":0,\"tasks\":0,\"networks\":0,\"secrets\":0,\"configs\":0}},\"body_bytes\":{},\"body_sha256\":\"00\"}}\n",
            MAX_BODY_BYTES + 1
        )
        .as_bytes(),
    );
    let e = err(Backup::decode(&bytes, "f"));
    assert!(e.contains("announces a body of"), "{e}");
    // A header line without end.
    let mut bytes = MAGIC.to_vec();
    bytes.extend(std::iter::repeat_n(b'x', MAX_HEADER_BYTES + 10));
    let e = err(Backup::decode(&bytes, "f"));
    assert!(e.contains("header is larger than"), "{e}");
    // Not a backup at all.
    let e = err(Backup::decode(b"hello", "f"));
    assert!(e.contains("not an orc backup"), "{e}");
}

#[test]
fn read_file_names_the_file_and_refuses_a_damaged_one() {
    let dir = tempfile::tempdir().unwrap();
    let (bytes, _) = encoded();
    let good = dir.path().join("good.orcbak");
    write_atomic(&good, &bytes).unwrap();
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&good).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    assert_eq!(Backup::read_file(&good).unwrap().meta.index, 42);
    assert_eq!(Backup::read_meta(&good).unwrap().index, 42);
    let bad = dir.path().join("bad.orcbak");
    std::fs::write(&bad, &bytes[..bytes.len() - 5]).unwrap();
    let e = Backup::read_file(&bad).unwrap_err().to_string();
    assert!(
        e.starts_with(&format!("{}: truncated", bad.display())),
        "{e}"
    );
    let e = Backup::read_file(&dir.path().join("none"))
        .unwrap_err()
        .to_string();
    assert!(e.contains("none"), "{e}");
}

#[test]
fn an_autolocked_backup_needs_its_unlock_key() {
    let dk = DataKey::generate().unwrap();
    let u = UnlockKey::generate().unwrap();
    let b = take(state(&dk, Some(&u)), 7, &dk, 5).unwrap();
    let bytes = b.encode().unwrap();
    // The data key is not in the file in the clear.
    assert!(!String::from_utf8_lossy(&bytes).contains(&hex::encode(dk.as_bytes())));
    let back = Backup::decode(&bytes, "f").unwrap();
    assert!(back.meta.autolock);
    assert!(back
        .open_key(None)
        .unwrap_err()
        .to_string()
        .contains("--unlock-key"));
    let other = UnlockKey::generate().unwrap();
    assert!(back
        .open_key(Some(&other.reveal()))
        .unwrap_err()
        .to_string()
        .contains("wrong unlock key"));
    let (k, got) = back.open_key(Some(&u.reveal())).unwrap();
    assert_eq!(k, dk);
    assert_eq!(got, Some(u));
}

#[test]
fn a_restore_reseals_secrets_keeps_old_nodes_down_and_carries_no_task() {
    let old = DataKey::generate().unwrap();
    let new = DataKey::generate().unwrap();
    let b = take(state(&old, None), 9, &old, 5).unwrap();
    let me = node(77, "alpha", Role::Manager);
    let plan = plan_restore(&b, &old, &new, me).unwrap();
    // The restoring node has alpha's labels; alpha's old record is not added.
    assert_eq!(plan.me.id, NodeId(77));
    assert_eq!(plan.me.labels.get("zone").map(String::as_str), Some("east"));
    let mut s = State {
        cluster: Some(cluster(None)),
        ..Default::default()
    };
    s.nodes.insert(plan.me.id, plan.me.clone());
    for c in &plan.commands {
        assert_eq!(s.apply(c).0, crate::store::Response::Ok, "{c:?}");
    }
    assert_eq!(s.nodes.len(), 2);
    let beta = &s.nodes[&NodeId(2)];
    assert_eq!((beta.role, beta.status), (Role::Worker, NodeStatus::Down));
    assert!(s.tasks.is_empty());
    assert_eq!(s.services.len(), 1);
    for kind in [Kind::Secret, Kind::Config] {
        let v = s.table(kind).values().next().unwrap().current().clone();
        let purpose = crate::api::secrets::purpose(kind);
        assert_eq!(new.open(purpose, &v.data).unwrap(), PLAIN);
        assert!(old.open(purpose, &v.data).is_err());
        assert_eq!(v.digest, crate::api::secrets::digest(&new, kind, PLAIN));
    }
    // A key that does not open the secrets: refused before anything is planned.
    let e = plan_restore(&b, &new, &new, node(78, "x", Role::Manager)).unwrap_err();
    assert!(e.to_string().contains("secret pw"), "{e}");
    let _ = Purpose::Secret;
}

#[test]
fn scheduled_backups_sort_by_time_and_the_newest_are_kept() {
    let a = scheduled_name(1_700_000_000_000);
    let b = scheduled_name(1_700_000_000_001);
    let c = scheduled_name(1_800_000_000_000);
    assert_eq!(a, "orc-backup-20231114T221320.000Z.orcbak");
    assert!(a < b && b < c);
    let names = vec![c.clone(), "other.txt".into(), a.clone(), b.clone()];
    assert_eq!(to_prune(&names, 2), vec![a.clone()]);
    assert_eq!(to_prune(&names, 5), Vec::<String>::new());
    assert_eq!(to_prune(&names, 1), vec![a, b]);
}
