//! Secrets and configs in the tables: refusals (in use, unknown, taken), rotation that
//! moves the services using one (keeping what a rollback needs), and the plaintext never
//! in the state, its keys, a snapshot or a Raft entry.

use super::*;
use crate::keys::{DataKey, Purpose};
use crate::store::secret::{Kind, Version};

const PLAIN: &[u8] = b"correct horse battery staple";

fn version(dk: &DataKey, v: u64, data: &[u8]) -> Version {
    Version {
        version: v,
        data: dk.seal(Purpose::Secret, data).unwrap(),
        size: data.len() as u64,
        digest: format!("d{v}"),
        created_ms: v,
    }
}

fn secret(dk: &DataKey, id: &str, name: &str) -> Secret {
    Secret {
        id: SecretId(id.into()),
        kind: Kind::Secret,
        name: name.into(),
        labels: Default::default(),
        versions: vec![version(dk, 1, PLAIN)],
        created_ms: 1,
        updated_ms: 1,
    }
}

/// A service `name` using secret `id` at `version`.
fn user(name: &str, id: &str, v: u64) -> Service {
    let mut s = service_on(name, &[]);
    let mut r = SecretRef::to(id);
    r.id = SecretId(id.into());
    r.version = v;
    s.spec.task.secrets.push(r);
    s
}

fn with_secret() -> (State, DataKey) {
    let dk = DataKey::generate().unwrap();
    let mut s = State::default();
    assert_eq!(
        s.apply(&Command::CreateSecret {
            secret: secret(&dk, "s1", "pw")
        })
        .0,
        Response::Ok
    );
    (s, dk)
}

#[test]
fn a_secret_is_created_once_by_name_and_reloads_from_its_key() {
    let (mut s, dk) = with_secret();
    let why = refused(
        &mut s,
        Command::CreateSecret {
            secret: secret(&dk, "s2", "pw"),
        },
    );
    assert!(why.contains("secret pw already exists"), "{why}");
    // The same name is free among configs.
    let mut c = secret(&dk, "c1", "pw");
    c.kind = Kind::Config;
    let (r, keys) = s.apply(&Command::CreateSecret { secret: c });
    assert_eq!((r, keys), (Response::Ok, vec!["config/c1".to_string()]));
    let mut reloaded = State::default();
    for k in s.keys() {
        reloaded.load(&k, &s.value_of(&k).unwrap()).unwrap();
    }
    assert_eq!(reloaded.secrets, s.secrets);
    assert_eq!(reloaded.configs, s.configs);
}

#[test]
fn a_service_cannot_name_a_missing_secret_and_a_secret_in_use_stays() {
    let (mut s, _dk) = with_secret();
    let why = refused(
        &mut s,
        Command::CreateService {
            service: user("web", "nope", 1),
        },
    );
    assert!(why.contains("secrets: secret nope not found"), "{why}");
    // A version that does not exist is as missing.
    let why = refused(
        &mut s,
        Command::CreateService {
            service: user("web", "s1", 7),
        },
    );
    assert!(why.contains("not found"), "{why}");
    assert_eq!(
        s.apply(&Command::CreateService {
            service: user("web", "s1", 1)
        })
        .0,
        Response::Ok
    );
    let why = refused(
        &mut s,
        Command::RemoveSecret {
            kind: Kind::Secret,
            id: SecretId("s1".into()),
        },
    );
    assert_eq!(why, "secret pw is in use by service web");
    s.apply(&Command::RemoveService {
        id: ServiceId("web".into()),
    });
    let (r, keys) = s.apply(&Command::RemoveSecret {
        kind: Kind::Secret,
        id: SecretId("s1".into()),
    });
    assert_eq!((r, keys), (Response::Ok, vec!["secret/s1".to_string()]));
}

#[test]
fn a_rotation_moves_the_services_that_use_it_and_keeps_what_a_rollback_needs() {
    let (mut s, dk) = with_secret();
    s.apply(&Command::CreateService {
        service: user("web", "s1", 1),
    });
    s.apply(&Command::CreateService {
        service: service_on("other", &[]),
    });
    let update = |v: u64| Command::UpdateSecret {
        update: SecretUpdate {
            kind: Kind::Secret,
            id: SecretId("s1".into()),
            version: version(&dk, v, b"new"),
        },
        now_ms: 100 + v,
    };
    // Only the next version applies.
    let why = refused(&mut s, update(3));
    assert!(why.contains("changed meanwhile"), "{why}");
    let (r, keys) = s.apply(&update(2));
    assert_eq!(r, Response::Ok);
    assert!(keys.contains(&"service/web".to_string()), "{keys:?}");
    assert!(!keys.contains(&"service/other".to_string()), "{keys:?}");
    let web = &s.services[&ServiceId("web".into())];
    assert_eq!(web.version, 2);
    assert_eq!(web.spec.task.secrets[0].version, 2);
    assert_eq!(
        web.previous_spec.as_ref().unwrap().task.secrets[0].version,
        1
    );
    assert_eq!(
        s.update_status[&ServiceId("web".into())].state,
        service::UpdateState::Updating
    );
    assert_eq!(s.services[&ServiceId("other".into())].version, 1);
    // Version 1 stays: the previous spec names it. A rollback puts it back.
    let versions = |s: &State| -> Vec<u64> {
        s.secrets[&SecretId("s1".into())]
            .versions
            .iter()
            .map(|v| v.version)
            .collect()
    };
    assert_eq!(versions(&s), vec![1, 2]);
    let (r, _) = s.apply(&Command::RollbackService {
        id: ServiceId("web".into()),
        version: 2,
        message: "failed".into(),
        now_ms: 200,
    });
    assert_eq!(r, Response::Ok);
    assert_eq!(
        s.services[&ServiceId("web".into())].spec.task.secrets[0].version,
        1
    );
    // A third content: version 1 is still in the spec, version 2 in no spec any more
    // once web moves to 3 (its previous spec is then the one with version 1).
    s.apply(&update(3));
    assert_eq!(versions(&s), vec![1, 3]);
}

#[test]
fn a_stack_entry_creates_rotates_and_removes_secrets_or_changes_nothing() {
    let (mut s, dk) = with_secret();
    s.apply(&Command::CreateService {
        service: user("st_a", "s1", 1),
    });
    let old = s.services[&ServiceId("st_a".into())].clone();
    let mut updated = user("st_a", "s1", 2);
    updated.version = old.version + 1;
    let deploy = |remove_secrets: Vec<(Kind, SecretId)>| Command::DeployStack {
        create: vec![user("st_b", "s2", 1)],
        update: vec![updated.clone()],
        remove: vec![],
        create_networks: vec![],
        remove_networks: vec![],
        create_secrets: vec![secret(&dk, "s2", "st_b_pw")],
        update_secrets: vec![SecretUpdate {
            kind: Kind::Secret,
            id: SecretId("s1".into()),
            version: version(&dk, 2, b"new"),
        }],
        remove_secrets,
    };
    // Rotating and removing one secret in one entry: refused whole.
    let why = refused(&mut s, deploy(vec![(Kind::Secret, SecretId("s1".into()))]));
    assert!(why.contains("changed twice"), "{why}");
    let (r, _) = s.apply(&deploy(vec![]));
    assert_eq!(r, Response::Ok);
    let a = &s.services[&ServiceId("st_a".into())];
    // Moved once, by the entry's own update, not again by the rotation.
    assert_eq!((a.version, a.spec.task.secrets[0].version), (2, 2));
    assert!(s.secrets.contains_key(&SecretId("s2".into())));
    // `stack rm` of a stack whose service stays on a secret: refused, naming it.
    let why = refused(
        &mut s,
        Command::DeployStack {
            create: vec![],
            update: vec![],
            remove: vec![ServiceId("st_a".into())],
            create_networks: vec![],
            remove_networks: vec![],
            create_secrets: vec![],
            update_secrets: vec![],
            remove_secrets: vec![(Kind::Secret, SecretId("s2".into()))],
        },
    );
    assert_eq!(why, "secret st_b_pw is in use by service st_b");
}

#[test]
fn the_plaintext_is_in_no_key_no_snapshot_and_no_raft_entry() {
    let (mut s, dk) = with_secret();
    let cmd = Command::UpdateSecret {
        update: SecretUpdate {
            kind: Kind::Secret,
            id: SecretId("s1".into()),
            version: version(&dk, 2, b"another secret text"),
        },
        now_ms: 5,
    };
    let entry = crate::proto::convert::command::encode(&cmd);
    s.apply(&cmd);
    let contains = |hay: &[u8], needle: &[u8]| hay.windows(needle.len()).any(|w| w == needle);
    for needle in [PLAIN, b"another secret text".as_slice()] {
        assert!(!contains(&entry, needle), "in the raft entry");
        for k in s.keys() {
            assert!(!contains(&s.value_of(&k).unwrap(), needle), "under {k}");
        }
        let snap = {
            use prost::Message;
            crate::proto::State::from(s.clone()).encode_to_vec()
        };
        assert!(!contains(&snap, needle), "in the snapshot");
        assert!(!format!("{s:?}")
            .as_bytes()
            .windows(needle.len())
            .any(|w| w == needle));
    }
    // And the data key opens it: it is there, sealed.
    let v = s.secrets[&SecretId("s1".into())].current().clone();
    assert_eq!(
        dk.open(Purpose::Secret, &v.data).unwrap(),
        b"another secret text"
    );
    // Sealed as a secret, it does not open as anything else.
    assert!(dk.open(Purpose::Config, &v.data).is_err());
}
