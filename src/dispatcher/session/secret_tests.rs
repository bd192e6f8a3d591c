//! A task's secrets go inside its own assignment, to its own node, only until its
//! container exists: a node without such a task never receives them.

use super::*;
use crate::keys::{DataKey, Purpose};
use crate::store::secret::{Kind, Version};
use crate::store::service::TaskSpec;
use crate::store::{Secret, SecretId, SecretRef, ServiceId, TaskStatus};

const PLAIN: &[u8] = b"the database password";

fn task(id: &str, node: u64, state: TaskState, spec: &TaskSpec) -> Task {
    Task {
        id: TaskId(id.into()),
        service_id: ServiceId("svc".into()),
        service_name: "db".into(),
        slot: 1,
        node_id: Some(NodeId(node)),
        spec_version: 1,
        spec: spec.clone().into(),
        desired_state: TaskState::Running,
        status: TaskStatus::new(state, "", 0),
        created_ms: 0,
        vip: String::new(),
        endpoint: None,
    }
}

fn state(dk: &DataKey) -> (State, TaskSpec) {
    let mut s = State::default();
    s.secrets.insert(
        SecretId("s1".into()),
        Secret {
            id: SecretId("s1".into()),
            kind: Kind::Secret,
            name: "pw".into(),
            labels: Default::default(),
            versions: vec![Version {
                version: 1,
                data: dk.seal(Purpose::Secret, PLAIN).unwrap(),
                size: PLAIN.len() as u64,
                digest: String::new(),
                created_ms: 0,
            }],
            created_ms: 0,
            updated_ms: 0,
        },
    );
    let mut spec = TaskSpec::default();
    let mut r = SecretRef::to("pw");
    r.id = SecretId("s1".into());
    r.version = 1;
    r.uid = 70;
    spec.secrets.push(r);
    (s, spec)
}

fn bytes_of(a: &BTreeMap<TaskId, proto::Assignment>) -> Vec<u8> {
    use prost::Message;
    a.values().flat_map(|x| x.encode_to_vec()).collect()
}

fn has_plain(b: &[u8]) -> bool {
    b.windows(PLAIN.len()).any(|w| w == PLAIN)
}

#[test]
fn only_the_node_with_a_task_that_uses_a_secret_receives_it() {
    let dk = DataKey::generate().unwrap();
    let (mut s, spec) = state(&dk);
    s.tasks.insert(
        TaskId("t1".into()),
        task("t1", 1, TaskState::Assigned, &spec),
    );
    // Node 2 runs a task of another service, without secrets.
    let plain = TaskSpec::default();
    s.tasks.insert(
        TaskId("t2".into()),
        task("t2", 2, TaskState::Assigned, &plain),
    );

    let one = assignments_for(&s, NodeId(1), &dk);
    let f = &one[&TaskId("t1".into())].files;
    assert_eq!(f.len(), 1);
    assert_eq!(
        (f[0].path.as_str(), f[0].uid, f[0].data.as_slice()),
        ("/run/secrets/pw", 70, PLAIN)
    );
    // Debug of what is sent never shows it.
    assert!(!format!("{one:?}").contains("database password"));

    let two = assignments_for(&s, NodeId(2), &dk);
    assert_eq!(two.len(), 1);
    assert!(two.values().all(|a| a.files.is_empty()));
    assert!(!has_plain(&bytes_of(&two)));
    // A node with no task at all.
    assert!(!has_plain(&bytes_of(&assignments_for(&s, NodeId(3), &dk))));
}

#[test]
fn a_secret_is_sent_only_until_the_container_exists_and_not_to_a_task_to_stop() {
    let dk = DataKey::generate().unwrap();
    let (mut s, spec) = state(&dk);
    s.tasks.insert(
        TaskId("t1".into()),
        task("t1", 1, TaskState::Running, &spec),
    );
    let mut stopping = task("t2", 1, TaskState::Assigned, &spec);
    stopping.desired_state = TaskState::Shutdown;
    s.tasks.insert(TaskId("t2".into()), stopping);
    let one = assignments_for(&s, NodeId(1), &dk);
    assert_eq!(one.len(), 2);
    assert!(!has_plain(&bytes_of(&one)));
    // A version that is gone (or a secret removed) is not sent: the worker refuses the
    // task, naming it.
    s.tasks.insert(
        TaskId("t3".into()),
        task("t3", 1, TaskState::Assigned, &spec),
    );
    s.secrets.clear();
    assert!(assignments_for(&s, NodeId(1), &dk)[&TaskId("t3".into())]
        .files
        .is_empty());
}
