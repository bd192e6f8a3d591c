//! Assignment streams and status batching (leader side).
//!
//! A worker opens one `Session` stream to the leader. The leader sends the node's whole
//! set of assignments first, then, each time the store changes, only what changed for
//! that node (tasks added or changed, task ids removed). An assignment is the task plus
//! the service's published ports, which the worker needs to publish the container, and,
//! until the container exists, where its image may come from and the id it must have
//! (the service's pin, [`crate::store::image`]).
//!
//! Observed statuses come back as `UpdateTaskStatus` calls. The leader merges the calls
//! that arrive within a few milliseconds into one Raft proposal (the batcher), and
//! answers each caller once its updates are committed.

use std::collections::BTreeMap;
use std::sync::Arc;

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::agent::executor::TaskNetwork;
use crate::agent::runner::Assignment;
use crate::agent::secrets::TaskFile;
use crate::error::Result;
use crate::keys::DataKey;
pub use crate::manager::batch::StatusBatcher;
use crate::manager::Manager;
use crate::proto;
use crate::store::secret::Kind;
use crate::store::service::STACK_LABEL;
use crate::store::vip::VipRange;
use crate::store::{NodeId, State, Task, TaskId, TaskState};

/// What every session reads of the state at one applied index, made once for all of
/// them: the mesh's endpoint table and the members (each node's tasks come from the
/// task table's index by node, [`crate::store::Tasks::on_node`]). With
/// 1,000 sessions and 100,000 tasks, each session walking every task (and the endpoint
/// table walking every task once per service) at every applied entry was what the
/// leader spent its time on.
pub struct View {
    /// Which manager runtime and applied index it was made at.
    at: (usize, u64),
    /// When it was made.
    made: tokio::time::Instant,
    /// The state's generation it was made at ([`crate::store::Changes::generation`]).
    generation: u64,
    /// The applied index of the state it was made from: its endpoint table is that
    /// state's, whichever manager makes it, which a node presents with its digest when
    /// it opens a session with another leader ([`View::endpoints_resumed`]).
    pub state_index: u64,
    /// The endpoint table (the same `Arc` while it does not change).
    pub endpoints: Arc<crate::mesh::Endpoints>,
    /// Every member and its role (the same `Arc` while it does not change).
    pub members: Arc<BTreeMap<NodeId, crate::store::Role>>,
    /// The endpoint table's digest, and the member table's: what a node that opens a
    /// session again presents to show it holds them.
    pub endpoints_digest: crate::mesh::wire::Digest,
    pub members_digest: crate::mesh::wire::Digest,
    /// What changed in the endpoint table since the view before, made and encoded
    /// once for every session that was sent that one's table: (the previous table,
    /// the encoded changes).
    endpoint_changes: Option<(Arc<crate::mesh::Endpoints>, prost::bytes::Bytes)>,
    /// What changed in the member table since the view before, made once for every
    /// session that was sent that one's table: (the previous table, the changes).
    member_changes: Option<(Arc<BTreeMap<NodeId, crate::store::Role>>, proto::Members)>,
    /// The whole table encoded, once a session needed it.
    whole: std::sync::OnceLock<prost::bytes::Bytes>,
    /// The changes from older tables, encoded once for every session that was sent
    /// one of them (a session that fell behind by a view or more), the last
    /// [`OLDER_KEPT`].
    older: std::sync::Mutex<
        std::collections::VecDeque<(Arc<crate::mesh::Endpoints>, prost::bytes::Bytes)>,
    >,
    /// What made the tables of earlier states current ([`View::endpoints_resumed`]),
    /// by their applied index, the last [`OLDER_KEPT`].
    resumed: std::sync::Mutex<std::collections::VecDeque<(u64, prost::bytes::Bytes)>>,
}

/// How many older tables' changes a view keeps encoded ([`View::endpoints_for`]).
const OLDER_KEPT: usize = 8;

/// An endpoint message as the session sends it: encoded.
fn encoded(e: proto::Endpoints) -> prost::bytes::Bytes {
    use prost::Message;
    e.encode_to_vec().into()
}

impl View {
    /// The view of `state`, as of applied index `state_index`; `prev`'s tables are kept
    /// (shared) where they did not change.
    fn of(state: &State, at: (usize, u64), state_index: u64, prev: Option<&View>) -> View {
        let members = members(state);
        // Only the services that changed since the view before are made again.
        let after = prev.map(|p| {
            let changed = state.changes.services_since(Some(p.generation));
            (
                p,
                crate::mesh::table::endpoints_after(state, &p.endpoints, &changed),
            )
        });
        use crate::mesh::wire::Digest;
        let (endpoints, endpoint_changes, whole, endpoints_digest) = match after {
            Some((p, None)) => (
                p.endpoints.clone(),
                p.endpoint_changes.clone(),
                p.whole.clone(),
                p.endpoints_digest,
            ),
            Some((p, Some((table, changes)))) => {
                let digest = p
                    .endpoints_digest
                    .after(&p.endpoints, &table, &changes.service_ids());
                (
                    Arc::new(table),
                    Some((p.endpoints.clone(), encoded(changes.into()))),
                    Default::default(),
                    digest,
                )
            }
            None => {
                let table = crate::mesh::table::endpoints(state);
                let digest = Digest::of(&table);
                (Arc::new(table), None, Default::default(), digest)
            }
        };
        let (members, member_changes, members_digest) = match prev {
            Some(p) if *p.members == members => (
                p.members.clone(),
                p.member_changes.clone(),
                p.members_digest,
            ),
            Some(p) => {
                let changes = crate::proto::convert::command::member_changes(&p.members, &members);
                let digest = Digest(crate::proto::convert::command::members_digest(&members));
                (
                    Arc::new(members),
                    Some((p.members.clone(), changes)),
                    digest,
                )
            }
            None => {
                let digest = Digest(crate::proto::convert::command::members_digest(&members));
                (Arc::new(members), None, digest)
            }
        };
        View {
            at,
            made: tokio::time::Instant::now(),
            generation: state.changes.generation(),
            state_index,
            endpoints,
            endpoint_changes,
            whole,
            older: Default::default(),
            resumed: Default::default(),
            members,
            member_changes,
            endpoints_digest,
            members_digest,
        }
    }

    /// The member message for a session that was sent `sent`: none when it has this
    /// table, else what changed (made once for the sessions that have the view
    /// before's). With 1,000 nodes joining, each session was sent every member, and
    /// every pair key, at each join.
    pub fn members_from(
        &self,
        sent: &Arc<BTreeMap<NodeId, crate::store::Role>>,
    ) -> Option<proto::Members> {
        if Arc::ptr_eq(sent, &self.members) {
            return None;
        }
        let changes = match &self.member_changes {
            Some((from, changes)) if Arc::ptr_eq(from, sent) => changes.clone(),
            _ => crate::proto::convert::command::member_changes(sent, &self.members),
        };
        (!changes.roles.is_empty() || !changes.removed.is_empty()).then_some(changes)
    }

    /// The endpoint message for a session that was sent `sent` (`None`: nothing yet),
    /// encoded: none when it has this table; the changes when it has an older one;
    /// else the whole table. A node of 1,000 gets only what changed, not 100,000
    /// backends each time one task starts; and each message is encoded once for all
    /// the sessions that need it (a clone of the bytes is a count, not a copy).
    pub fn endpoints_for(
        &self,
        sent: Option<&Arc<crate::mesh::Endpoints>>,
    ) -> Option<prost::bytes::Bytes> {
        let Some(s) = sent else {
            return Some(
                self.whole
                    .get_or_init(|| encoded((*self.endpoints).clone().into()))
                    .clone(),
            );
        };
        if Arc::ptr_eq(s, &self.endpoints) {
            return None;
        }
        if let Some((from, changes)) = &self.endpoint_changes {
            if Arc::ptr_eq(from, s) {
                return Some(changes.clone());
            }
        }
        let mut older = self.older.lock().expect("older changes lock");
        if let Some((_, b)) = older.iter().find(|(from, _)| Arc::ptr_eq(from, s)) {
            return Some(b.clone());
        }
        let b = encoded(self.endpoints.changes_from(s).into());
        if older.len() == OLDER_KEPT {
            older.pop_front();
        }
        older.push_back((s.clone(), b.clone()));
        Some(b)
    }

    /// The endpoint message that makes the table of the state as of applied index
    /// `index` (which a node says it holds, from this leader or one before) this
    /// view's: the services in `ids` (those that may differ since, from
    /// [`crate::store::Changes::services_since_index`]) whole, or as gone; encoded once
    /// for every node that holds that table. What a node claims only ever shapes what
    /// it is itself sent.
    pub fn endpoints_resumed(
        &self,
        index: u64,
        ids: &std::collections::BTreeSet<crate::store::ServiceId>,
    ) -> prost::bytes::Bytes {
        let mut resumed = self.resumed.lock().expect("resumed changes lock");
        if let Some((_, b)) = resumed.iter().find(|(i, _)| *i == index) {
            return b.clone();
        }
        let services: Vec<_> = self
            .endpoints
            .services
            .iter()
            .filter(|s| ids.contains(&crate::store::ServiceId(s.id.clone())))
            .cloned()
            .collect();
        let removed = ids
            .iter()
            .filter(|id| !services.iter().any(|s| s.id == id.0))
            .map(|id| id.0.clone())
            .collect();
        let b = encoded(
            crate::mesh::table::EndpointChanges {
                changed: crate::mesh::Endpoints {
                    services,
                    vip_range: self.endpoints.vip_range.clone(),
                    networks: self.endpoints.networks.clone(),
                },
                removed,
                backends_gone: Default::default(),
            }
            .into(),
        );
        if resumed.len() == OLDER_KEPT {
            resumed.pop_front();
        }
        resumed.push_back((index, b.clone()));
        b
    }
}

/// How long a view serves the sessions after it was made, whatever was applied since
/// ([`View::serves`]). Each applied entry made a new view, and each session was sent
/// that view's endpoint changes, cloned and encoded for it: 25% of the leader's CPU
/// at 300 nodes while tasks were placed. Views at most this often send the changes of
/// several entries at once. A backend leaves the other nodes' tables at most this much
/// later: well within the [`crate::agent::runner::MESH_DRAIN`] an agent waits before
/// it stops a task. A node's assignments are read afresh at every entry, as before.
pub const VIEW_EVERY: std::time::Duration = std::time::Duration::from_millis(100);

impl View {
    /// True if this view may serve a session that saw applied index `index` of the
    /// manager runtime `runtime` at `now`: it is of that runtime, and of that index or
    /// younger than [`VIEW_EVERY`].
    fn serves(&self, runtime: usize, index: u64, now: tokio::time::Instant) -> bool {
        self.at.0 == runtime
            && (self.at.1 == index || now.saturating_duration_since(self.made) < VIEW_EVERY)
    }

    /// When a session that was served this view, having seen applied index `index`,
    /// must look again even if nothing more is applied: once the view may be replaced,
    /// if it is older than that index (`None`: it is not).
    fn stale_until(&self, index: u64) -> Option<tokio::time::Instant> {
        (self.at.1 < index).then_some(self.made + VIEW_EVERY)
    }
}

/// The last [`View`] made, shared by the sessions of one node's dispatcher, and the
/// holders of each service's images at the state's latest generation.
#[derive(Default)]
pub struct Views {
    /// The last view made, and the one being made.
    last: std::sync::Mutex<Latest>,
    /// The holders of each service's images.
    holders: crate::agent::images::HolderMemo,
}

/// The last view made, and, while a new one is being made, where it will be announced.
#[derive(Default)]
struct Latest {
    view: Option<Arc<View>>,
    making: Option<tokio::sync::watch::Receiver<Option<Arc<View>>>>,
}

impl Views {
    /// A view of `m`'s state for a session that saw applied index `index`: the one made
    /// already if it serves ([`View::serves`]), or a new one. A new one is made on a
    /// thread of its own while the runtime's threads go on reading the nodes' beats
    /// (sessions that waited for it on a lock held both of a 2-core leader's runtime
    /// threads), and every session that asks meanwhile is woken at once when it is
    /// there (not one after another, as a queue on an async lock would: 1,000
    /// sessions then lagged seconds behind).
    pub async fn at(self: &Arc<Self>, m: &Arc<Manager>, index: u64) -> Arc<View> {
        let runtime = Arc::as_ptr(m) as usize;
        loop {
            let mut ready = {
                let mut g = self.last.lock().expect("views lock");
                if let Some(v) = g
                    .view
                    .as_ref()
                    .filter(|v| v.serves(runtime, index, tokio::time::Instant::now()))
                {
                    return v.clone();
                }
                match &g.making {
                    Some(rx) => rx.clone(),
                    None => {
                        let (tx, rx) = tokio::sync::watch::channel(None);
                        g.making = Some(rx.clone());
                        let prev = g.view.clone().filter(|v| v.at.0 == runtime);
                        self.make(m.clone(), (runtime, index), prev, tx);
                        rx
                    }
                }
            };
            // `None` only when the making failed (its thread panicked): asked again.
            if ready.wait_for(Option::is_some).await.is_ok() {
                if let Some(v) = ready.borrow().clone() {
                    return v;
                }
            }
        }
    }

    /// Makes the view at `at` from `prev` on a blocking thread, keeps it as the last
    /// and announces it on `tx`.
    fn make(
        self: &Arc<Self>,
        m: Arc<Manager>,
        at: (usize, u64),
        prev: Option<Arc<View>>,
        tx: tokio::sync::watch::Sender<Option<Arc<View>>>,
    ) {
        let made = tokio::task::spawn_blocking(move || {
            Arc::new(m.sm.read_at(|s, i| View::of(s, at, i, prev.as_deref())))
        });
        let views = self.clone();
        tokio::spawn(async move {
            let v = made.await.ok();
            let mut g = views.last.lock().expect("views lock");
            g.making = None;
            if let Some(v) = v {
                g.view = Some(v.clone());
                let _ = tx.send(Some(v));
            }
        });
    }
}

/// Each assignment of `node`, by task id, as its session sends it. Tasks the scheduler
/// has not yet given to a node (Pending and before) are not sent. A task's secrets and
/// configs are opened with `dk` and sent inside its own assignment only, and only
/// until its container exists ([`task_files`]).
pub fn assignments_for(
    state: &State,
    node: NodeId,
    dk: &DataKey,
) -> BTreeMap<TaskId, proto::Assignment> {
    assignments_with(state, node, dk, &Default::default())
}

/// [`assignments_for`], the image holders taken from `holders` (shared by the sessions).
pub fn assignments_with(
    state: &State,
    node: NodeId,
    dk: &DataKey,
    holders: &crate::agent::images::HolderMemo,
) -> BTreeMap<TaskId, proto::Assignment> {
    state
        .tasks
        .on_node(node)
        .filter(|t| t.status.state >= TaskState::Assigned)
        .map(|t| (t.id.clone(), assignment(state, t, node, dk, holders)))
        .collect()
}

/// The assignment of each of `ids` on `node` as [`assignments_with`] makes it, or
/// `None` for a task that is not one of them (gone, on no node or another, or not yet
/// given to a node).
pub fn assignments_of(
    state: &State,
    node: NodeId,
    ids: impl IntoIterator<Item = TaskId>,
    dk: &DataKey,
    holders: &crate::agent::images::HolderMemo,
) -> Vec<(TaskId, Option<proto::Assignment>)> {
    ids.into_iter()
        .map(|id| {
            let a = state
                .tasks
                .get(&id)
                .filter(|t| t.node_id == Some(node) && t.status.state >= TaskState::Assigned)
                .map(|t| assignment(state, t, node, dk, holders));
            (id, a)
        })
        .collect()
}

/// The assignment of task `t` on `node`.
fn assignment(
    state: &State,
    t: &Task,
    node: NodeId,
    dk: &DataKey,
    holders: &crate::agent::images::HolderMemo,
) -> proto::Assignment {
    Assignment {
        // Swarm templates (`{{.Node.Hostname}}`) expanded for this node.
        task: crate::store::service::template::expand_task(
            t,
            state.services.get(&t.service_id),
            state.nodes.get(&node),
        ),
        net: task_network(state, t, holders),
        // Like the sources, only until the container exists.
        image_pin: (t.status.state < TaskState::Starting)
            .then(|| state.pin_for(t).cloned())
            .flatten(),
        files: task_files(state, t, dk),
        volume_source: crate::agent::volumes::source_for(state, t, node),
    }
    .into()
}

/// The secrets and configs task `t` needs, opened: only while its container is still
/// to be made (desired running, observed before STARTING). A version that cannot be
/// found or opened is left out (the worker then refuses to start the task, naming it).
pub fn task_files(state: &State, t: &Task, dk: &DataKey) -> Vec<TaskFile> {
    if t.status.state >= TaskState::Starting || t.desired_state > TaskState::Running {
        return vec![];
    }
    let mut out = vec![];
    for kind in [Kind::Secret, Kind::Config] {
        for r in t.spec.refs(kind) {
            let Some(v) = state
                .table(kind)
                .get(&r.id)
                .and_then(|s| s.version(r.version))
            else {
                continue;
            };
            let purpose = match kind {
                Kind::Secret => crate::keys::Purpose::Secret,
                Kind::Config => crate::keys::Purpose::Config,
            };
            match dk.open(purpose, &v.data) {
                Ok(data) => out.push(TaskFile::of(kind, r, data)),
                Err(e) => tracing::warn!(task = %t.id, "{kind} {}: {e}", r.name),
            }
        }
    }
    out
}

/// Every member of the cluster and its role, as sent to workers so that they can refuse
/// a removed node or a demoted manager (see [`crate::api::auth`]).
pub fn members(state: &State) -> BTreeMap<NodeId, crate::store::Role> {
    state.nodes.values().map(|n| (n.id, n.role)).collect()
}

/// What the container of `t` needs of the cluster's networking: its own ports
/// ([`Task::endpoint`]),
/// the cluster DNS (the second address of the VIP range, which every node serves), and
/// its stack's search domain; until its container exists, the other nodes it may load
/// its image from ([`crate::agent::images::sources_for`]).
pub fn task_network(
    state: &State,
    t: &Task,
    holders: &crate::agent::images::HolderMemo,
) -> TaskNetwork {
    let svc = state.services.get(&t.service_id);
    let dns = state
        .cluster
        .as_ref()
        .and_then(|c| VipRange::parse(&c.settings.vip_range).ok())
        .map(|r| vec![r.dns().to_string()])
        .unwrap_or_default();
    let dns_search = svc
        .and_then(|s| s.spec.labels.get(STACK_LABEL))
        .map(|stack| vec![crate::mesh::Endpoints::search_domain(stack)])
        .unwrap_or_default();
    let dns_options = if dns_search.is_empty() {
        vec![]
    } else {
        vec!["ndots:2".to_string()]
    };
    let endpoint = t.endpoint(svc);
    let networks = endpoint
        .attachments()
        .iter()
        .filter_map(|a| state.network(&a.network))
        .map(|n| crate::agent::executor::AssignedNetwork {
            id: n.id,
            name: n.spec.name,
            internal: n.spec.internal,
            encrypted: n.spec.encrypted,
        })
        .collect();
    TaskNetwork {
        networks,
        ports: endpoint.ports,
        expose: endpoint.expose,
        dns,
        dns_search,
        dns_options,
        image_sources: crate::agent::images::sources_with(state, t, holders),
    }
}

/// What a session keeps of the assignments it sent its node: a keyed 128-bit hash of
/// each one's encoding, not the assignment. The assignments the sessions held were as
/// big as the whole state (2.2 KiB a task against 2.0 at 100,000 tasks, `cargo bench
/// --bench passes`). The keys are drawn for each session: what a hash names cannot be
/// chosen from outside. The buffer an assignment is encoded into is wiped after each
/// hash (an assignment carries its secrets opened).
#[derive(Default)]
pub struct Sent {
    keys: (std::hash::RandomState, std::hash::RandomState),
    by_task: BTreeMap<TaskId, u128>,
    buf: Vec<u8>,
}

impl Sent {
    fn digest(&mut self, a: &proto::Assignment) -> u128 {
        use std::hash::BuildHasher;
        self.buf.clear();
        prost::Message::encode(a, &mut self.buf).expect("a Vec grows as needed");
        let (h1, h2) = (
            self.keys.0.hash_one(&self.buf[..]),
            self.keys.1.hash_one(&self.buf[..]),
        );
        // An assignment carries its task's secrets opened: not kept here.
        self.buf.fill(0);
        (u128::from(h1) << 64) | u128::from(h2)
    }

    /// How many assignments the node holds (as sent).
    pub fn len(&self) -> usize {
        self.by_task.len()
    }

    /// True when the node was sent no assignment.
    pub fn is_empty(&self) -> bool {
        self.by_task.is_empty()
    }

    /// The difference between what the node was sent and `now`, what it should have:
    /// the assignments new or changed, and the ids of those gone. `now` is kept as
    /// sent.
    pub fn update(
        &mut self,
        now: BTreeMap<TaskId, proto::Assignment>,
    ) -> (Vec<proto::Assignment>, Vec<String>) {
        let mut by_task = BTreeMap::new();
        let mut changed = vec![];
        for (id, a) in now {
            let d = self.digest(&a);
            if self.by_task.get(&id) != Some(&d) {
                changed.push(a);
            }
            by_task.insert(id, d);
        }
        let removed = self
            .by_task
            .keys()
            .filter(|id| !by_task.contains_key(*id))
            .map(|id| id.0.clone())
            .collect();
        self.by_task = by_task;
        (changed, removed)
    }

    /// [`Sent::update`] for some tasks only: each of `now` is the assignment the node
    /// should have of that task now (`None`: none). The others stand as sent.
    pub fn update_some(
        &mut self,
        now: Vec<(TaskId, Option<proto::Assignment>)>,
    ) -> (Vec<proto::Assignment>, Vec<String>) {
        let mut changed = vec![];
        let mut removed = vec![];
        for (id, a) in now {
            match a {
                Some(a) => {
                    let d = self.digest(&a);
                    if self.by_task.insert(id, d) != Some(d) {
                        changed.push(a);
                    }
                }
                None => {
                    if self.by_task.remove(&id).is_some() {
                        removed.push(id.0);
                    }
                }
            }
        }
        (changed, removed)
    }
}

/// The data path's keys ([`crate::mesh::tunnel`]) of `node`: one per pair (`node`, a
/// member), derived from a master key that is itself derived from the cluster's root
/// CA key (HMAC-SHA256, labels of their own). So they are the same on every manager,
/// never stored, and change with `ca rotate`; the id is the first four bytes of the
/// master's SHA-256. Only managers can derive a pair's key; a node gets those of its
/// own pairs, and only inside its session (mutual TLS), so it can speak for no other
/// node, and a removed node's pairs leave every member's ring with the next member table.
pub fn data_keys(m: &Manager, node: NodeId, members: &[NodeId]) -> Result<proto::DataPathKeys> {
    let c = m.cluster()?;
    let ca_key = m
        .data_key()
        .open_string(crate::keys::Purpose::CaKey, &c.ca_key)?;
    Ok(pair_keys(ca_key.as_bytes(), node, members))
}

/// The id of the data path's keys ([`data_keys`]) as they are now.
pub fn data_keys_id(m: &Manager) -> Result<u32> {
    let c = m.cluster()?;
    let ca_key = m
        .data_key()
        .open_string(crate::keys::Purpose::CaKey, &c.ca_key)?;
    Ok(master_key(ca_key.as_bytes()).1)
}

/// The data path's master key derived from the CA key's bytes, and its id. Pure.
fn master_key(ca_key: &[u8]) -> (ring::hmac::Key, u32) {
    use ring::hmac;
    use sha2::Digest;
    let master = hmac::sign(
        &hmac::Key::new(hmac::HMAC_SHA256, ca_key),
        b"orc data path key v2",
    );
    let digest = sha2::Sha256::digest(master.as_ref());
    let id = u32::from_be_bytes([digest[0], digest[1], digest[2], digest[3]]);
    (hmac::Key::new(hmac::HMAC_SHA256, master.as_ref()), id)
}

/// [`data_keys`] from the CA key's bytes. Pure.
pub fn pair_keys(ca_key: &[u8], node: NodeId, members: &[NodeId]) -> proto::DataPathKeys {
    use ring::hmac;
    let (master, id) = master_key(ca_key);
    let keys = members
        .iter()
        .map(|peer| {
            let (lo, hi) = (node.0.min(peer.0), node.0.max(peer.0));
            let mut label = b"orc data path pair v2".to_vec();
            label.extend_from_slice(&lo.to_be_bytes());
            label.extend_from_slice(&hi.to_be_bytes());
            proto::DataPathKey {
                id,
                key: hmac::sign(&master, &label).as_ref().to_vec(),
                peer: peer.0,
            }
        })
        .collect();
    proto::DataPathKeys {
        keys,
        partial: false,
        removed: vec![],
    }
}

/// What a node that opens a session says it holds from an earlier one
/// ([`proto::SessionRequest`]): its endpoint table's digest, its member table's, and
/// its data path keys' id. Only the node itself is misled by a false claim: it is then
/// sent no table it lacks.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Held {
    pub endpoints: Option<crate::mesh::wire::Digest>,
    /// The applied index of the state its endpoint table is of (`None`: not said).
    pub endpoints_index: Option<u64>,
    pub members: Option<crate::mesh::wire::Digest>,
    pub keys_id: Option<u32>,
}

impl Held {
    /// What `r` claims (a digest that is not 16 bytes claims nothing).
    pub fn of(r: &proto::SessionRequest) -> Held {
        use crate::mesh::wire::Digest;
        Held {
            endpoints: Digest::from_bytes(&r.endpoints_digest),
            endpoints_index: (r.endpoints_index != 0).then_some(r.endpoints_index),
            members: Digest::from_bytes(&r.members_digest),
            keys_id: (r.keys_id != 0).then_some(r.keys_id),
        }
    }
}

/// Which of `view`'s tables a node that says it holds `held` is not sent again as its
/// session starts: (the endpoint table, the member table, the pair keys); `keys_id`
/// gives the keys' id now. Keys are held only with the members they were made for.
fn already_held(
    held: &Held,
    view: &View,
    keys_id: impl FnOnce() -> Option<u32>,
) -> (bool, bool, bool) {
    let endpoints = held.endpoints == Some(view.endpoints_digest);
    let members = held.members == Some(view.members_digest);
    let keys = members && held.keys_id.is_some() && held.keys_id == keys_id();
    (endpoints, members, keys)
}

/// A node's assignments made again: all of them, or those of some tasks only
/// ([`Sent::update_some`]).
enum Fresh {
    All(BTreeMap<TaskId, proto::Assignment>),
    Some(Vec<(TaskId, Option<proto::Assignment>)>),
}

/// Streams a node's assignments until the client goes away or leadership is lost. What
/// the node holds (`held`) and the leader's tables match is not sent again: after a
/// leader change, a thousand nodes were each sent the whole endpoint table (30,000
/// backends) and every pair key again, and the new leader was too busy to hear their
/// heartbeats.
pub fn stream(
    m: Arc<Manager>,
    views: Arc<Views>,
    node: NodeId,
    held: Held,
    leading: CancellationToken,
) -> mpsc::Receiver<Result<proto::SessionMessage, tonic::Status>> {
    // Two messages at most wait for a node that reads slowly (what it is sent is what
    // changed since the message before, so the changes of many entries then go in one
    // message): 16 of them, each a table whole, were the leader's memory at 300 nodes.
    let (tx, rx) = mpsc::channel(2);
    tokio::spawn(async move {
        let mut applied = m.sm.subscribe();
        let mut sent = Sent::default();
        let mut sent_endpoints = Arc::new(crate::mesh::Endpoints::default());
        let mut sent_members = Arc::new(BTreeMap::new());
        let mut sent_drops = vec![];
        // The CA key the keys sent were derived from; true while the node must be sent
        // every key again (the last try to derive them failed).
        let mut keys_for = None;
        let mut keys_whole = false;
        let mut first = true;
        let mut read_at: Option<u64> = None;
        loop {
            let index = *applied.borrow_and_update();
            let view = views.at(&m, index).await;
            // What this node is sent is made again only when something it depends on
            // changed since the last time ([`crate::store::changes`]).
            let (present, fresh, ca_key) = m.read(|s| {
                use crate::store::changes::NodeChanged;
                let now = match s
                    .changes
                    .node_since(node, read_at, || s.tasks.on_node(node))
                {
                    NodeChanged::Nothing => None,
                    NodeChanged::All => Some(Fresh::All(assignments_with(
                        s,
                        node,
                        m.data_key(),
                        &views.holders,
                    ))),
                    NodeChanged::Tasks(ids) => Some(Fresh::Some(assignments_of(
                        s,
                        node,
                        ids,
                        m.data_key(),
                        &views.holders,
                    ))),
                };
                let fresh = now.map(|now| (now, crate::store::volume::to_drop(s, node)));
                read_at = Some(s.changes.generation());
                let ca_key = s.cluster.as_ref().map(|c| c.ca_key.clone());
                (s.nodes.contains_key(&node), fresh, ca_key)
            });
            // Unchanged: what was sent stands (`None`), nothing to compare.
            let (now, drops) = match fresh {
                Some((now, drops)) => (Some(now), Some(drops)),
                None => (None, None),
            };
            let (endpoints, members) = (view.endpoints.clone(), view.members.clone());
            if !present {
                // Removed: the session ends here, and the node learns why.
                let _ = tx
                    .send(Err(tonic::Status::permission_denied(format!(
                        "node {node} has been removed from the cluster"
                    ))))
                    .await;
                return;
            }
            // What the node holds already, at the start.
            let (has_endpoints, has_members, has_keys) = if first {
                already_held(&held, &view, || data_keys_id(&m).ok())
            } else {
                (false, false, false)
            };
            // A node that holds another table, of a state this manager applied too (from
            // the leader before, say), and not later than the view's, is sent what
            // changed since that state only.
            let resume = held
                .endpoints_index
                .filter(|i| first && !has_endpoints && *i <= view.state_index)
                .filter(|_| held.endpoints.is_some())
                .and_then(|i| Some((i, m.read(|s| s.changes.services_since_index(i))?)));
            let endpoints_msg = if has_endpoints {
                None
            } else if let Some((i, ids)) = resume {
                Some(view.endpoints_resumed(i, &ids))
            } else {
                view.endpoints_for((!first).then_some(&sent_endpoints))
            };
            let members_msg = if has_members {
                None
            } else if first {
                Some(crate::proto::convert::command::members_out(&members))
            } else {
                view.members_from(&sent_members)
            };
            // The pair keys change only with the members or the CA key: all of them
            // derived again when the CA key changed; else those of the members that
            // came, and the peers of those gone.
            let keys_msg = if has_keys {
                keys_for = ca_key;
                None
            } else if first || ca_key != keys_for || (keys_whole && members_msg.is_some()) {
                keys_for = ca_key;
                let all: Vec<NodeId> = members.keys().copied().collect();
                let k = data_keys(&m, node, &all);
                keys_whole = k.is_err();
                k.map_err(|e| tracing::warn!("data path keys: {e}")).ok()
            } else {
                members_msg.as_ref().and_then(|mm| {
                    let came: Vec<NodeId> = mm
                        .roles
                        .keys()
                        .map(|id| NodeId(*id))
                        .filter(|id| !sent_members.contains_key(id))
                        .collect();
                    if came.is_empty() && mm.removed.is_empty() {
                        return None;
                    }
                    match data_keys(&m, node, &came) {
                        Ok(k) => Some(proto::DataPathKeys {
                            partial: true,
                            removed: mm.removed.clone(),
                            ..k
                        }),
                        Err(e) => {
                            tracing::warn!("data path keys: {e}");
                            keys_whole = true;
                            None
                        }
                    }
                })
            };
            let drops = drops.unwrap_or_else(|| sent_drops.clone());
            let drops_msg = (first || drops != sent_drops).then(|| proto::VolumeDrops {
                volumes: drops
                    .iter()
                    .map(|d| proto::VolumeDrop {
                        name: d.name.clone(),
                        service_id: d.service_id.0.clone(),
                    })
                    .collect(),
            });
            sent_drops = drops;
            // The tables' digests go with the tables.
            let endpoints_digest = endpoints_msg
                .as_ref()
                .map(|_| view.endpoints_digest.to_bytes())
                .unwrap_or_default();
            let endpoints_index = endpoints_msg.as_ref().map_or(0, |_| view.state_index);
            let members_digest = members_msg
                .as_ref()
                .map(|_| view.members_digest.to_bytes())
                .unwrap_or_default();
            // Unchanged (`None`): nothing changed or went.
            let (changed, removed) = match now {
                Some(Fresh::All(now)) => sent.update(now),
                Some(Fresh::Some(now)) => sent.update_some(now),
                None => Default::default(),
            };
            let msg = if first {
                Some(proto::SessionMessage {
                    full: true,
                    assignments: changed,
                    removed: vec![],
                    endpoints: endpoints_msg,
                    members: members_msg,
                    data_keys: keys_msg,
                    drop_volumes: drops_msg,
                    endpoints_digest,
                    endpoints_index,
                    members_digest,
                })
            } else {
                (!changed.is_empty()
                    || !removed.is_empty()
                    || endpoints_msg.is_some()
                    || members_msg.is_some()
                    || keys_msg.is_some()
                    || drops_msg.is_some())
                .then_some(proto::SessionMessage {
                    full: false,
                    assignments: changed,
                    removed,
                    endpoints: endpoints_msg,
                    members: members_msg,
                    data_keys: keys_msg,
                    drop_volumes: drops_msg,
                    endpoints_digest,
                    endpoints_index,
                    members_digest,
                })
            };
            first = false;
            sent_endpoints = endpoints;
            sent_members = members;
            if let Some(msg) = msg {
                if tx.send(Ok(msg)).await.is_err() {
                    return;
                }
            }
            // A view older than what this session saw is replaced in a moment: look
            // again then, even if nothing more is applied.
            let stale = view.stale_until(index);
            tokio::select! {
                _ = leading.cancelled() => {
                    let _ = tx.send(Err(tonic::Status::unavailable("leadership changed"))).await;
                    return;
                }
                _ = tx.closed() => return,
                r = applied.changed() => if r.is_err() { return },
                _ = async {
                    match stale {
                        Some(t) => tokio::time::sleep_until(t).await,
                        None => std::future::pending().await,
                    }
                } => {}
            }
        }
    });
    rx
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn what_a_session_keeps_of_what_it_sent_finds_every_change_and_every_task_gone() {
        let a = |id: &str, image: &str| {
            let task = proto::Task {
                id: id.into(),
                spec: Some(proto::TaskSpec {
                    container: Some(proto::ContainerSpec {
                        image: image.into(),
                        ..Default::default()
                    }),
                    ..Default::default()
                }),
                ..Default::default()
            };
            (
                TaskId(id.into()),
                proto::Assignment {
                    task: Some(task),
                    ..Default::default()
                },
            )
        };
        let ids = |v: &[proto::Assignment]| -> Vec<String> {
            v.iter()
                .map(|a| a.task.as_ref().unwrap().id.clone())
                .collect()
        };
        let mut sent = Sent::default();
        // Everything is new at first.
        let (changed, removed) = sent.update(BTreeMap::from([a("t1", "web:1"), a("t2", "web:1")]));
        assert_eq!(
            (ids(&changed), removed),
            (vec!["t1".into(), "t2".into()], vec![])
        );
        assert_eq!(sent.len(), 2);
        // The same again: nothing.
        let (changed, removed) = sent.update(BTreeMap::from([a("t1", "web:1"), a("t2", "web:1")]));
        assert!(changed.is_empty() && removed.is_empty());
        // One field of one: that one; a task gone: its id; a new one: it.
        let (changed, removed) = sent.update(BTreeMap::from([a("t1", "web:2"), a("t3", "web:1")]));
        assert_eq!(ids(&changed), vec!["t1".to_string(), "t3".into()]);
        assert_eq!(removed, vec!["t2".to_string()]);
        // Back to what it was before is a change too.
        let (changed, _) = sent.update(BTreeMap::from([a("t1", "web:1"), a("t3", "web:1")]));
        assert_eq!(ids(&changed), vec!["t1".to_string()]);
        // Another session's hashes are keyed apart.
        let mut other = Sent::default();
        let one = a("t1", "web:1").1;
        assert_ne!(other.digest(&one), sent.digest(&one));
        assert_eq!(sent.digest(&one), sent.digest(&one));
    }

    #[test]
    fn a_view_serves_later_entries_for_a_moment_and_its_sessions_look_again_after() {
        let s = State::default();
        let v = View::of(&s, (1, 10), 10, None);
        let (soon, later) = (
            v.made + VIEW_EVERY / 2,
            v.made + VIEW_EVERY + std::time::Duration::from_millis(1),
        );
        // Its own index: always.
        assert!(v.serves(1, 10, later));
        // A later index: only while it is young.
        assert!(v.serves(1, 12, soon));
        assert!(!v.serves(1, 12, later));
        // Another manager runtime: never.
        assert!(!v.serves(2, 10, soon));
        // A session that saw a later index looks again once the view may be replaced;
        // one that saw the view's own index waits for the next entry.
        assert_eq!(v.stale_until(12), Some(v.made + VIEW_EVERY));
        assert_eq!(v.stale_until(10), None);
        // The drain an agent waits before it stops a task leaves room for a view's age.
        assert!(VIEW_EVERY * 5 <= crate::agent::runner::MESH_DRAIN);
    }

    #[test]
    fn a_node_that_holds_a_views_tables_is_not_sent_them_again_and_a_false_claim_gets_them_all() {
        use crate::store::fixtures;
        let mut s = State {
            cluster: Some(fixtures::cluster()),
            ..Default::default()
        };
        for n in 1..=2 {
            s.nodes.insert(NodeId(n), fixtures::node(n));
        }
        let svc = fixtures::service("web", 1);
        s.services.insert(svc.id.clone(), svc.clone());
        let mut t = fixtures::task("t0", &svc, 1);
        t.node_id = Some(NodeId(1));
        t.status.state = TaskState::Running;
        s.tasks.insert(t.id.clone(), t);
        let v = View::of(&s, (1, 10), 10, None);
        assert_eq!(
            v.endpoints_digest,
            crate::mesh::wire::Digest::of(&v.endpoints)
        );
        assert_eq!(
            v.members_digest.0,
            crate::proto::convert::command::members_digest(&v.members)
        );
        let request = |e: Vec<u8>, m: Vec<u8>, k: u32| {
            Held::of(&proto::SessionRequest {
                node_id: "1".into(),
                endpoints_digest: e,
                members_digest: m,
                keys_id: k,
                endpoints_index: 0,
            })
        };
        let (e, m) = (v.endpoints_digest.to_bytes(), v.members_digest.to_bytes());
        // Positive control: it holds all three.
        let held = |h: Held| already_held(&h, &v, || Some(7));
        assert_eq!(held(request(e.clone(), m.clone(), 7)), (true, true, true));
        // Keys of another CA key, or keys without the members they were made for.
        assert_eq!(held(request(e.clone(), m.clone(), 8)), (true, true, false));
        assert_eq!(held(request(e.clone(), vec![], 7)), (true, false, false));
        assert_eq!(
            already_held(&request(e.clone(), m.clone(), 7), &v, || None),
            (true, true, false)
        );
        // Nothing held, another table, digests cut short or too long: everything again.
        assert_eq!(held(request(vec![], vec![], 0)), (false, false, false));
        let mut other = e.clone();
        other[0] ^= 1;
        assert!(!held(request(other, m.clone(), 7)).0);
        assert_eq!(
            held(request(e[..15].to_vec(), m[..15].to_vec(), 7)),
            (false, false, false)
        );
        let mut long = e.clone();
        long.push(0);
        assert!(!held(request(long, m.clone(), 7)).0);
        // The next view after a change has another digest: the table held is stale.
        s.tasks.get_mut(&TaskId("t0".into())).unwrap().status.state = TaskState::Shutdown;
        s.changes = Default::default();
        let v2 = View::of(&s, (1, 11), 11, Some(&v));
        assert_ne!(v2.endpoints_digest, v.endpoints_digest);
        assert_eq!(
            v2.endpoints_digest,
            crate::mesh::wire::Digest::of(&v2.endpoints)
        );
        assert!(!already_held(&request(e, m, 7), &v2, || Some(7)).0);
    }

    /// A new leader's first message to a node that holds the table of an earlier state
    /// (from the leader before): the services changed or gone since, which make the
    /// node's table the new leader's; far smaller than the table whole.
    #[test]
    fn a_table_held_of_an_earlier_state_is_made_current_by_the_services_changed_since() {
        use crate::store::{fixtures, Command, ServiceId, TaskStatus};
        let mut s = State {
            cluster: Some(fixtures::cluster()),
            ..Default::default()
        };
        for n in 1..=3 {
            s.nodes.insert(NodeId(n), fixtures::node(n));
        }
        for name in ["a", "b", "c", "d", "e"] {
            let svc = fixtures::service(name, 3);
            for slot in 1..=3u64 {
                let mut t = fixtures::task(&format!("{name}{slot}"), &svc, slot);
                t.node_id = Some(NodeId(slot));
                t.status.state = TaskState::Running;
                s.tasks.insert(t.id.clone(), t);
            }
            s.services.insert(svc.id.clone(), svc);
        }
        s.changes = Default::default();
        s.changes.mark_applied(10);
        // The node's table, from the old leader, as of entry 10.
        let old = View::of(&s, (1, 10), 10, None);
        let held = (*old.endpoints).clone();
        // Then: a task of b stops, c goes with its tasks, node 3 (a task of each
        // service left) is marked down.
        s.apply(&Command::UpdateTaskStatus {
            updates: vec![(
                TaskId("b1".into()),
                TaskStatus::new(TaskState::Failed, "", 5),
            )],
        });
        s.changes.mark_applied(11);
        s.apply(&Command::RemoveService {
            id: ServiceId("id-c".into()),
        });
        s.apply(&Command::DeleteTasks {
            ids: ["c1", "c2", "c3"].map(|t| TaskId(t.into())).to_vec(),
        });
        s.changes.mark_applied(12);
        let mut later = s.clone();
        later.apply(&Command::UpdateNodeStatus {
            id: NodeId(3),
            status: crate::store::NodeStatus::Down,
            description: None,
            addr: None,
            now_ms: 6,
        });
        later.changes.mark_applied(13);
        // The new leader's first view, at 12 (its state moved on to 13 since).
        let new = View::of(&s, (2, 12), 12, None);
        let ids = later.changes.services_since_index(10).expect("10 is kept");
        assert_eq!(ids.len(), 5, "b and c changed, and every service on node 3");
        let ids = s.changes.services_since_index(10).expect("10 is kept");
        assert_eq!(ids, ["b", "c"].map(|n| ServiceId(format!("id-{n}"))).into());
        let bytes = new.endpoints_resumed(10, &ids);
        let made = crate::mesh::wire::receive_bytes(Some(held.clone()), &bytes)
            .expect("decodes")
            .expect("applies to the table held");
        assert_eq!(made, *new.endpoints);
        assert_eq!(crate::mesh::wire::Digest::of(&made), new.endpoints_digest);
        let whole = new.endpoints_for(None).expect("whole");
        assert!(
            bytes.len() * 2 < whole.len(),
            "{} vs {}",
            bytes.len(),
            whole.len()
        );
        // Encoded once for every node that holds that table.
        assert_eq!(new.endpoints_resumed(10, &ids), bytes);
        // The superset the state moved on to gives the same table too.
        let all = later.changes.services_since_index(10).expect("kept");
        let made = crate::mesh::wire::receive_bytes(
            Some(held.clone()),
            &View::of(&s, (2, 12), 12, None).endpoints_resumed(10, &all),
        )
        .unwrap()
        .unwrap();
        assert_eq!(made, *new.endpoints);
        // Control: the old table with nothing applied is not the new one.
        assert_ne!(held, *new.endpoints);
    }

    #[test]
    fn each_node_is_sent_its_given_tasks_and_a_view_keeps_its_tables_while_they_do_not_change() {
        use crate::store::fixtures;
        let mut s = State {
            cluster: Some(fixtures::cluster()),
            ..Default::default()
        };
        for n in 1..=3 {
            s.nodes.insert(NodeId(n), fixtures::node(n));
        }
        let svc = fixtures::service("web", 4);
        s.services.insert(svc.id.clone(), svc.clone());
        for (i, (node, state)) in [
            (Some(1), TaskState::Running),
            (Some(1), TaskState::Assigned),
            (Some(2), TaskState::Running),
            (None, TaskState::Pending),
        ]
        .into_iter()
        .enumerate()
        {
            let mut t = fixtures::task(&format!("t{i}"), &svc, i as u64 + 1);
            t.node_id = node.map(NodeId);
            t.status.state = state;
            s.tasks.insert(t.id.clone(), t);
        }
        let v1 = View::of(&s, (1, 10), 10, None);
        let ids = |n| -> Vec<String> {
            assignments_for(&s, NodeId(n), &DataKey::generate().unwrap())
                .keys()
                .map(|t| t.0.clone())
                .collect()
        };
        assert_eq!(ids(1), ["t0", "t1"]);
        assert_eq!(ids(2), ["t2"]);
        assert!(ids(3).is_empty());
        assert_eq!(*v1.endpoints, crate::mesh::table::endpoints(&s));
        // Nothing the tables show changed: the next view shares them.
        s.tasks.get_mut(&TaskId("t1".into())).unwrap().status.state = TaskState::Starting;
        let v2 = View::of(&s, (1, 11), 11, Some(&v1));
        assert!(Arc::ptr_eq(&v1.endpoints, &v2.endpoints));
        assert!(Arc::ptr_eq(&v1.members, &v2.members));
        // A task starts running, a node leaves: both tables are new. (Changed in place,
        // not through a command: the state counts as changed everywhere, as one
        // loaded afresh does.)
        s.tasks.get_mut(&TaskId("t1".into())).unwrap().status.state = TaskState::Running;
        s.nodes.remove(&NodeId(3));
        s.changes = Default::default();
        let v3 = View::of(&s, (1, 12), 12, Some(&v2));
        assert!(!Arc::ptr_eq(&v2.endpoints, &v3.endpoints));
        assert!(!Arc::ptr_eq(&v2.members, &v3.members));
        assert_eq!(*v3.endpoints, crate::mesh::table::endpoints(&s));
        assert_eq!(v3.members.len(), 2);
        // What each session is sent of the endpoint table.
        assert!(v3.endpoints_for(Some(&v3.endpoints)).is_none(), "it has it");
        let decode = |b: prost::bytes::Bytes| {
            <proto::Endpoints as prost::Message>::decode(b).expect("an endpoint table")
        };
        let fresh = decode(
            v3.endpoints_for(None)
                .expect("a new session gets the table"),
        );
        assert!(!fresh.partial);
        assert_eq!(
            crate::mesh::wire::receive(None, fresh).unwrap().as_ref(),
            Some(&*v3.endpoints)
        );
        let from_v2 = v3.endpoints_for(Some(&v2.endpoints)).expect("changes");
        // Encoded once: every session behind by one view shares the same bytes.
        let again = v3.endpoints_for(Some(&v2.endpoints)).unwrap();
        assert_eq!(
            from_v2.as_ptr(),
            again.as_ptr(),
            "the same bytes, not a copy"
        );
        assert!(decode(from_v2.clone()).partial);
        let rebuilt =
            crate::mesh::wire::receive_bytes(Some((*v2.endpoints).clone()), &from_v2).unwrap();
        assert_eq!(rebuilt.as_ref(), Some(&*v3.endpoints));
        // A session further behind (a table no view remembers) gets its own changes,
        // and the next session as far behind the same bytes.
        let old = Arc::new(crate::mesh::Endpoints::default());
        let from_old = v3.endpoints_for(Some(&old)).expect("changes");
        let again = v3.endpoints_for(Some(&old)).unwrap();
        assert_eq!(
            from_old.as_ptr(),
            again.as_ptr(),
            "the same bytes, not a copy"
        );
        let rebuilt = crate::mesh::wire::receive_bytes(Some((*old).clone()), &from_old).unwrap();
        assert_eq!(rebuilt.as_ref(), Some(&*v3.endpoints));
        // At most OLDER_KEPT older tables are kept.
        for _ in 0..OLDER_KEPT * 2 {
            let t = Arc::new(crate::mesh::Endpoints::default());
            v3.endpoints_for(Some(&t)).unwrap();
        }
        assert_eq!(v3.older.lock().unwrap().len(), OLDER_KEPT);
    }

    proptest::proptest! {
        #[test]
        fn a_node_sent_again_only_what_changed_has_all_its_assignments_as_they_are_now(
            ops in proptest::collection::vec((0u8..6, 0usize..9, 0u8..3), 1..10),
        ) {
            use crate::store::{fixtures, Command, NodeStatus, TaskStatus};
            // Service k's tasks on nodes 1..=k+1: node 1 runs all three services, node
            // 3 only s2.
            let (mut s, svcs, ids) = fixtures::three_services_on_three_nodes(|i| {
                (i / 3) as u64 % (i as u64 % 3 + 1) + 1
            });
            // Nodes others may fetch images from, and every other task still to be
            // started there: a node's status changes what those tasks are sent with.
            for n in s.nodes.values_mut() {
                n.description.engine_version = "28.2".into();
            }
            let to_start: Vec<Task> = ids
                .iter()
                .step_by(2)
                .filter_map(|id| s.tasks.get(id).cloned())
                .map(|mut t| {
                    t.status.state = TaskState::Assigned;
                    t
                })
                .collect();
            s.apply(&Command::DeleteTasks { ids: to_start.iter().map(|t| t.id.clone()).collect() });
            s.apply(&Command::CreateTasks { tasks: to_start });
            let dk = DataKey::generate().unwrap();
            let mut sent: Vec<_> = (1..=3)
                .map(|n| (assignments_for(&s, NodeId(n), &dk), s.changes.generation()))
                .collect();
            for (kind, i, x) in ops {
                let cmd = match kind {
                    0 => {
                        let Some(t) = s.tasks.get(&ids[i]) else { continue };
                        let mut st = TaskStatus::new(TaskState::Shutdown, "", 2);
                        st.timestamp_ms = t.status.timestamp_ms + 1;
                        Command::UpdateTaskStatus { updates: vec![(ids[i].clone(), st)] }
                    }
                    1 => Command::SetTaskDesired { updates: vec![(ids[i].clone(), TaskState::Shutdown)] },
                    2 => {
                        let mut svc = s.services.get(&svcs[i % 3].id).cloned().unwrap_or_else(|| svcs[i % 3].clone());
                        svc.version += 1;
                        // Its stack: its tasks' DNS search domain changes.
                        svc.spec.labels.insert(STACK_LABEL.into(), format!("st{x}"));
                        Command::UpdateService { service: svc }
                    }
                    3 => Command::UpdateNodeStatus {
                        id: NodeId(i as u64 % 3 + 1),
                        status: [NodeStatus::Down, NodeStatus::Ready, NodeStatus::Down][x as usize],
                        description: None,
                        addr: None,
                        now_ms: 1,
                    },
                    4 => Command::RemoveService { id: svcs[i % 3].id.clone() },
                    _ => Command::DeleteTasks { ids: vec![ids[i].clone()] },
                };
                s.apply(&cmd);
                for n in 1..=3u64 {
                    let (was, at) = &sent[n as usize - 1];
                    let now = assignments_for(&s, NodeId(n), &dk);
                    // As a session does: what was not touched is not read again, and
                    // the generation read moves on either way.
                    use crate::store::changes::NodeChanged;
                    match s.changes.node_since(NodeId(n), Some(*at), || s.tasks.on_node(NodeId(n))) {
                        NodeChanged::Nothing => {
                            proptest::prop_assert_eq!(unranked(&now), unranked(was), "node {} after {:?}", n, cmd);
                        }
                        // Those tasks' assignments made again, the others as sent.
                        NodeChanged::Tasks(changed) => {
                            let mut mended = was.clone();
                            for (id, a) in assignments_of(&s, NodeId(n), changed, &dk, &Default::default()) {
                                match a {
                                    Some(a) => mended.insert(id, a),
                                    None => mended.remove(&id),
                                };
                            }
                            proptest::prop_assert_eq!(unranked(&now), unranked(&mended), "node {} after {:?}", n, cmd);
                        }
                        NodeChanged::All => {}
                    }
                    sent[n as usize - 1] = (now, s.changes.generation());
                }
            }
        }
    }

    /// `assignments` without the ranks of their image sources: which of them are
    /// known to hold the image, and so their order, are a hint as of when the
    /// assignments were made ([`crate::store::Changes::node_since`]).
    fn unranked(
        assignments: &BTreeMap<TaskId, proto::Assignment>,
    ) -> BTreeMap<TaskId, proto::Assignment> {
        let mut out = assignments.clone();
        for a in out.values_mut() {
            if let Some(net) = a.net.as_mut() {
                for s in &mut net.image_sources {
                    s.known = false;
                }
                net.image_sources.sort_by(|a, b| a.addr.cmp(&b.addr));
            }
        }
        out
    }

    fn key_for(keys: &proto::DataPathKeys, peer: u64) -> Vec<u8> {
        keys.keys
            .iter()
            .find(|k| k.peer == peer)
            .map(|k| k.key.clone())
            .unwrap()
    }

    #[test]
    fn each_node_gets_its_own_pairs_keys_the_same_on_both_ends_and_no_other_pairs() {
        let members = [NodeId(1), NodeId(2), NodeId(3)];
        let of = |n| pair_keys(b"ca key", NodeId(n), &members);
        let (k1, k2, k3) = (of(1), of(2), of(3));
        for k in [&k1, &k2, &k3] {
            assert_eq!(k.keys.len(), 3);
            assert!(k.keys.iter().all(|x| x.key.len() == 32));
        }
        // both ends of a pair hold the same key
        assert_eq!(key_for(&k1, 2), key_for(&k2, 1));
        assert_eq!(key_for(&k2, 3), key_for(&k3, 2));
        // node 3's keys are none of the pair (1, 2)'s
        let k12 = key_for(&k1, 2);
        assert!(k3.keys.iter().all(|x| x.key != k12));
        // one id for all, changed (with every key) by another CA key
        let other = pair_keys(b"another ca key", NodeId(1), &members);
        assert_ne!(other.keys[0].id, k1.keys[0].id);
        assert_ne!(key_for(&other, 2), k12);
        assert!(k1.keys.iter().all(|x| x.id == k1.keys[0].id));
    }
}

#[cfg(test)]
mod secret_tests;
