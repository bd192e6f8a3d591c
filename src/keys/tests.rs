use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::*;

fn mode(p: &Path) -> u32 {
    std::fs::symlink_metadata(p).unwrap().permissions().mode() & 0o7777
}

/// The mode of `p`, or `None` if it went away since it was listed: a running daemon's
/// sled writes `snap.*.generating`, renames it and removes older snapshots at any time.
fn mode_if_present(p: &Path) -> Option<u32> {
    match std::fs::symlink_metadata(p) {
        Ok(m) => Some(m.permissions().mode() & 0o7777),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => panic!("{}: {e}", p.display()),
    }
}

/// The bytes of `p`, or `None` if it went away since it was listed (as above).
fn read_if_present(p: &Path) -> Option<Vec<u8>> {
    match std::fs::read(p) {
        Ok(b) => Some(b),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => panic!("{}: {e}", p.display()),
    }
}

/// Every path under `dir`, `dir` included (entries that go away meanwhile left out).
fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = vec![dir.to_path_buf()];
    if std::fs::symlink_metadata(dir).is_ok_and(|m| m.is_dir()) {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return out;
        };
        for e in entries.flatten() {
            out.extend(walk(&e.path()));
        }
    }
    out
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    !needle.is_empty() && hay.windows(needle.len()).any(|w| w == needle)
}

#[test]
fn sealed_values_open_with_their_key_and_purpose_only() {
    let k = DataKey::generate().unwrap();
    let s = k
        .seal_str(Purpose::CaKey, "-----BEGIN PRIVATE KEY-----")
        .unwrap();
    // Positive control: the right key and purpose open it.
    assert_eq!(
        k.open_string(Purpose::CaKey, &s).unwrap(),
        "-----BEGIN PRIVATE KEY-----"
    );
    assert!(!s.as_str().contains("PRIVATE"));
    // A fresh nonce each time: the same value seals differently.
    assert_ne!(
        k.seal_str(Purpose::CaKey, "x").unwrap(),
        k.seal_str(Purpose::CaKey, "x").unwrap()
    );

    // A wrong key.
    let other = DataKey::generate().unwrap();
    let e = other.open(Purpose::CaKey, &s).unwrap_err();
    assert!(e.to_string().contains("wrong key or damaged data"), "{e}");
    // Another purpose: a worker secret cannot be passed off as the manager secret.
    let w = k.seal_str(Purpose::WorkerSecret, "secret").unwrap();
    assert!(k.open(Purpose::ManagerSecret, &w).is_err());
    assert_eq!(k.open_string(Purpose::WorkerSecret, &w).unwrap(), "secret");
    // Any flipped bit of nonce, ciphertext or tag.
    let hexs = s.as_str();
    for i in [0, 30, hexs.len() / 2, hexs.len() - 1] {
        let mut b = hexs.as_bytes().to_vec();
        b[i] = if b[i] == b'0' { b'1' } else { b'0' };
        let t = Sealed::from_stored(String::from_utf8(b).unwrap());
        assert!(k.open(Purpose::CaKey, &t).is_err(), "tampered at {i}");
    }
    // Truncated and garbage.
    assert!(k
        .open(Purpose::CaKey, &Sealed::from_stored(&hexs[..20]))
        .is_err());
    assert!(k.open(Purpose::CaKey, &Sealed::from_stored("zz")).is_err());
}

#[test]
fn unlock_keys_wrap_the_data_key_and_a_wrong_one_is_refused() {
    let dk = DataKey::generate().unwrap();
    let u = UnlockKey::generate().unwrap();
    let shown = u.reveal();
    assert!(
        shown.starts_with("ORCKEY-1-") && shown.len() == 9 + 64,
        "{shown}"
    );
    let parsed = UnlockKey::parse(&format!("  {shown}\n")).unwrap();
    assert_eq!(parsed, u);
    let wrapped = u.wrap(&dk).unwrap();
    // Positive control.
    assert_eq!(parsed.unwrap_data_key(&wrapped).unwrap(), dk);
    // A wrong key.
    let e = UnlockKey::generate()
        .unwrap()
        .unwrap_data_key(&wrapped)
        .unwrap_err();
    assert!(e.to_string().starts_with("wrong unlock key"), "{e}");
    assert_eq!(e.to_string().lines().count(), 1);
    // Not keys at all.
    for bad in [
        "",
        "ORCKEY-1-",
        "ORCKEY-2-00",
        &shown[..shown.len() - 1],
        "SWMKEY-1-abc",
    ] {
        let e = UnlockKey::parse(bad).unwrap_err();
        assert!(e.to_string().starts_with("not an unlock key"), "{bad}: {e}");
    }
    // The unlock key in the cluster object, sealed with the data key.
    let s = u.seal_with(&dk).unwrap();
    assert_eq!(UnlockKey::open_with(&dk, &s).unwrap(), u);
    assert!(UnlockKey::open_with(&DataKey::generate().unwrap(), &s).is_err());
}

#[test]
fn debug_output_never_shows_a_key() {
    let dk = DataKey::generate().unwrap();
    let u = UnlockKey::generate().unwrap();
    let s = dk.seal_str(Purpose::WorkerSecret, "abc").unwrap();
    let hexkey = hex::encode(dk.as_bytes());
    let keys = crate::proto::ManagerKeys {
        data_key: dk.as_bytes().to_vec(),
        unlock_key: u.reveal(),
    };
    let resp = crate::proto::CaJoinResponse {
        manager_keys: Some(keys.clone()),
        ..Default::default()
    };
    let join = crate::proto::CaJoinRequest {
        secret: hexkey.clone(),
        ..Default::default()
    };
    let token = crate::proto::JoinTokenResponse {
        token: hexkey.clone(),
        ..Default::default()
    };
    let printed = format!(
        "{dk:?} {u:?} {s:?} {keys:?} {resp:?} {join:?} {token:?} {:?}",
        KeyFile::Plain(dk.clone())
    );
    assert!(!printed.contains(&hexkey), "{printed}");
    assert!(!printed.contains(&u.reveal()[9..]), "{printed}");
    assert!(!printed.contains(s.as_str()), "{printed}");
    // Positive control: the same text does show what is not secret.
    assert!(printed.contains("Sealed("), "{printed}");
}

#[test]
fn key_files_are_0600_and_read_back() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join(DATA_KEY_FILE);
    assert!(KeyFile::read(&p).unwrap().is_none());
    let dk = DataKey::generate().unwrap();
    KeyFile::Plain(dk.clone()).write(&p).unwrap();
    assert_eq!(mode(&p), 0o600);
    assert!(matches!(KeyFile::read(&p).unwrap(), Some(KeyFile::Plain(k)) if k == dk));
    assert_eq!(read_plain_key(dir.path()).unwrap(), dk);
    let u = UnlockKey::generate().unwrap();
    KeyFile::Wrapped(u.wrap(&dk).unwrap()).write(&p).unwrap();
    assert_eq!(mode(&p), 0o600);
    let text = std::fs::read_to_string(&p).unwrap();
    assert!(!text.contains(&hex::encode(dk.as_bytes())));
    match KeyFile::read(&p).unwrap() {
        Some(KeyFile::Wrapped(w)) => assert_eq!(u.unwrap_data_key(&w).unwrap(), dk),
        other => panic!("{other:?}"),
    }
    assert!(read_plain_key(dir.path()).is_err());
    std::fs::write(&p, b"{}").unwrap();
    assert!(KeyFile::read(&p).is_err());
}

#[test]
fn secure_tree_makes_dirs_0700_and_files_0600() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("data");
    std::fs::create_dir_all(root.join("db/sub")).unwrap();
    std::fs::write(root.join("db/conf"), b"x").unwrap();
    std::fs::write(root.join("db/sub/blob"), b"x").unwrap();
    for p in [&root, &root.join("db"), &root.join("db/sub")] {
        std::fs::set_permissions(p, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    std::fs::set_permissions(root.join("db/conf"), std::fs::Permissions::from_mode(0o644)).unwrap();
    // Control: the modes are open before.
    assert_eq!(mode(&root.join("db/conf")), 0o644);
    secure_tree(&root).unwrap();
    for p in walk(&root) {
        let want = if p.is_dir() { 0o700 } else { 0o600 };
        assert_eq!(mode(&p), want, "{}", p.display());
    }
}

/// A daemon in this process with the fake executor, on `dir`.
async fn daemon_on(dir: &Path) -> crate::daemon::Daemon {
    let cfg = crate::daemon::DaemonConfig {
        data_dir: dir.to_path_buf(),
        socket: dir.join("unused.sock"),
        docker_host: Some("unix:///nonexistent/docker.sock".into()),
        raft: Default::default(),
        executor: Some(Arc::new(crate::agent::fake::FakeExecutor::new())),
        min_cert_expiry_secs: 3600,
        data_path_port: 0,
        generic_resources: Default::default(),
        metrics: false,
        dashboard_addr: None,
    };
    crate::daemon::Daemon::open(cfg, tokio_util::sync::CancellationToken::new())
        .await
        .unwrap()
}

use crate::test_ports::free_port;

fn dk_of(data_dir: &Path) -> DataKey {
    read_plain_key(data_dir).unwrap()
}

fn secret_of(token: &str) -> String {
    token.rsplit('-').next().unwrap().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_init_the_data_dir_is_private_and_holds_no_key_in_the_clear() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    // An existing data dir with open modes, as an older orc left it.
    std::fs::create_dir_all(&data).unwrap();
    std::fs::set_permissions(&data, std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::write(data.join("old.log"), b"x").unwrap();
    std::fs::set_permissions(data.join("old.log"), std::fs::Permissions::from_mode(0o644)).unwrap();

    let d = daemon_on(&data).await;
    let r = d
        .init(crate::daemon::InitParams {
            advertise_addr: format!("127.0.0.1:{}", free_port()),
            vip_range: "10.254.7.0/24".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    let m = d.manager().unwrap();
    // One more entry through Raft: a rotated secret travels sealed too. Right after
    // init the first write may meet the election's end (NotLeader: retry, as the
    // control API does).
    let mut tries = 0;
    let rotated = loop {
        match crate::api::nodes::join_token(&m, "worker", true).await {
            Err(crate::Error::NotLeader(e)) if tries < 50 => {
                tries += 1;
                tracing::debug!("retrying: {e}");
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            }
            r => break r.unwrap(),
        }
    };
    // A CA rotation starts: the new root's key travels sealed too.
    crate::api::nodes::ca_rotate(&m, 0).await.unwrap();
    let rotation = m.read(|s| s.ca_rotation.clone()).expect("a rotation");
    let new_root_key = dk_of(&data)
        .open_string(Purpose::CaKey, &rotation.new_key)
        .unwrap();
    assert!(new_root_key.contains("BEGIN PRIVATE KEY"));
    // A second manager joins: it receives the data key with its certificate, and the
    // reply recorded for the join's retries (exactly once) must not hold it.
    let tmp2 = tempfile::tempdir().unwrap();
    let d2 = daemon_on(&tmp2.path().join("data")).await;
    d2.join(crate::proto::JoinRequest {
        token: r.manager_token.clone(),
        remote_addr: r.advertise_addr.clone(),
        advertise_addr: format!("127.0.0.1:{}", free_port()),
        listen_addr: String::new(),
    })
    .await
    .unwrap();
    assert_eq!(
        read_plain_key(&tmp2.path().join("data")).unwrap(),
        read_plain_key(&data).unwrap(),
        "the joined manager holds the cluster's data key"
    );
    // The state machine writes its state as snapshots only: each manager takes one.
    for daemon in [&d, &d2] {
        let m = daemon.manager().unwrap();
        let applied = m.raft.metrics().borrow().last_applied;
        m.raft.trigger().snapshot().await.unwrap();
        m.raft
            .wait(Some(std::time::Duration::from_secs(20)))
            .metrics(
                |x| x.snapshot.is_some() && x.snapshot >= applied,
                "a snapshot",
            )
            .await
            .unwrap();
    }
    for daemon in [&d, &d2] {
        daemon.db().flush_async().await.unwrap();
        daemon.raft_db().unwrap().flush_async().await.unwrap();
    }
    // The Raft log's trees are in a db of their own.
    let tree_of = |daemon: &crate::daemon::Daemon, tree: &str| {
        let db = if tree.starts_with("raft_") {
            daemon.raft_db().unwrap()
        } else {
            daemon.db().clone()
        };
        db.open_tree(tree).unwrap()
    };

    // Modes: the dir and everything in it, sled's files included.
    let paths = walk(&data);
    assert!(paths.iter().any(|p| p.ends_with("data.key")), "{paths:?}");
    assert!(paths.len() > 4, "{paths:?}");
    for p in &paths {
        let want = if p.is_dir() { 0o700 } else { 0o600 };
        if let Some(m) = mode_if_present(p) {
            assert_eq!(m, want, "{}", p.display());
        }
    }

    let secrets = [
        secret_of(&r.worker_token),
        secret_of(&r.manager_token),
        secret_of(&rotated.token),
    ];
    let cluster = m.cluster().unwrap();
    let dk = read_plain_key(&data).unwrap();
    // Positive controls: what is sealed opens to the real values...
    let ca_key = dk.open_string(Purpose::CaKey, &cluster.ca_key).unwrap();
    assert!(ca_key.contains("BEGIN PRIVATE KEY"));
    assert_eq!(
        dk.open_string(Purpose::ManagerSecret, &cluster.manager_secret)
            .unwrap(),
        secrets[1]
    );
    assert_eq!(
        m.join_secret(crate::store::Role::Worker).unwrap(),
        secrets[2]
    );
    assert_eq!(m.root_ca().unwrap().key_pem(), ca_key);
    let member = d.member().unwrap();
    assert!(member.creds.key_pem.contains("BEGIN PRIVATE KEY"));

    // ...and the stores hold none of it in the clear: the trees as Raft and the state
    // machine wrote them, and every file's bytes on disk.
    let mut blobs: Vec<(String, Vec<u8>)> = vec![];
    for tree in ["sm", "raft_log", "raft_meta", "snapshot", "local"] {
        let t = tree_of(&d, tree);
        let mut all = vec![];
        for kv in t.iter() {
            let (k, v) = kv.unwrap();
            all.extend_from_slice(&k);
            all.extend_from_slice(&v);
        }
        blobs.push((format!("tree {tree}"), all));
    }
    for p in &paths {
        if p.is_file() {
            if let Some(b) = read_if_present(p) {
                blobs.push((p.display().to_string(), b));
            }
        }
    }
    let state = &blobs[3].1;
    let log = &blobs[1].1;
    // Positive control: the search reads real data (the CA certificate is public).
    assert!(
        contains(state, b"BEGIN CERTIFICATE"),
        "the snapshot tree is not where the state is"
    );
    assert!(
        contains(log, b"BEGIN CERTIFICATE"),
        "the raft_log tree holds no InitCluster (with the CA certificate)"
    );
    let kinds: Vec<String> = tree_of(&d, "raft_log")
        .iter()
        .filter_map(|kv| {
            use prost::Message;
            let entry = crate::proto::Entry::decode(kv.unwrap().1.as_ref()).unwrap();
            match entry.payload? {
                crate::proto::entry::Payload::Normal(bytes) => {
                    let cmd = crate::proto::convert::command::decode(&bytes).unwrap();
                    Some(format!("{cmd:?}"))
                }
                _ => None,
            }
        })
        .collect();
    assert!(
        kinds.iter().any(|k| k.starts_with("RotateSecret")),
        "the raft_log tree holds the rotation: {kinds:?}"
    );
    assert!(
        blobs
            .iter()
            .any(|(n, b)| n.contains("/db/") && contains(b, b"BEGIN CERTIFICATE")),
        "sled's files are not searched"
    );
    assert!(
        blobs
            .iter()
            .any(|(n, b)| n.contains("/raft/") && contains(b, b"BEGIN CERTIFICATE")),
        "the raft log's sled files are not searched"
    );
    // The joined manager's database too (its data key file aside).
    for p in walk(&tmp2.path().join("data")) {
        if p.is_file() && !p.ends_with(DATA_KEY_FILE) {
            if let Some(b) = read_if_present(&p) {
                blobs.push((p.display().to_string(), b));
            }
        }
    }
    for tree in ["sm", "raft_log", "snapshot", "local"] {
        let t = tree_of(&d2, tree);
        let mut all = vec![];
        for kv in t.iter() {
            let (k, v) = kv.unwrap();
            all.extend_from_slice(&k);
            all.extend_from_slice(&v);
        }
        blobs.push((format!("joined manager's tree {tree}"), all));
    }
    // Positive control: the join's reply is recorded (with the certificate it issued).
    let reply = m
        .read(|s| s.requests.values().find_map(|r| r.reply.clone()))
        .expect("a recorded reply");
    assert!(
        contains(&blobs[3].1, &reply),
        "no recorded reply in the snapshot tree"
    );
    let dk_raw = dk.as_bytes().to_vec();
    let dk_hex = hex::encode(&dk_raw);
    // Bytes in the state's JSON (a recorded reply) are arrays of numbers.
    let dk_json = dk_raw
        .iter()
        .map(|b| b.to_string())
        .collect::<Vec<_>>()
        .join(",");
    for (name, b) in &blobs {
        if !name.ends_with(DATA_KEY_FILE) {
            assert!(!contains(b, &dk_raw), "{name} holds the data key");
            assert!(
                !contains(b, dk_hex.as_bytes()),
                "{name} holds the data key (hex)"
            );
            assert!(
                !contains(b, dk_json.as_bytes()),
                "{name} holds the data key (JSON)"
            );
        }
        assert!(
            !contains(b, b"PRIVATE KEY"),
            "{name} holds a private key in the clear"
        );
        for s in &secrets {
            assert!(
                !contains(b, s.as_bytes()),
                "{name} holds a join secret in the clear"
            );
        }
    }
    d2.shutdown().await;
    d.shutdown().await;
}
