//! Image shipping: a task's image that this node's engine lacks, and cannot pull, is
//! loaded from another node of the cluster that has it.
//!
//! No registry need be reachable: an image built or loaded on one node runs everywhere.
//! With each assignment whose container does not exist yet, the dispatcher names the
//! other nodes the image may come from ([`sources_for`]): other ready nodes with a
//! container engine, at most [`MAX_SOURCES`], those that run a container of the
//! service's image first (they surely have it; the others are worth a try, since an
//! image can sit in an engine unused). No
//! inventory of images is kept in the replicated store: it would churn with every pull
//! and still be stale, while asking a node that lacks the image costs one round trip.
//!
//! Preparing a task then goes:
//!
//! ```text
//! image present locally           → use it (no registry call), if its id is the pin
//! else, for each source in turn   → if it has the image, "loading image from HOST":
//!                                   stream its `docker save` (by the pinned id) into
//!                                   this engine's `docker load`, tag it, check the id
//! else pull it                    → use it, if its id is the pin
//! else                            → REJECTED: not present, no node has it, not pullable
//! an id other than the pin        → REJECTED: image X (on this node | sent by HOST |
//!                                   as pulled) is ID, expected PIN (the next source
//!                                   is tried after a bad load)
//! ```
//!
//! # Images by digest
//!
//! A service's image is pinned to the engine's image id the first time one of its
//! tasks starts ([`crate::store::image`]): the agent reports the id it resolved with
//! the task's status, the dispatcher's status command pins it, and assignments carry
//! the pin until the container exists. Every way an image arrives is then checked
//! against it ([`check`], [`load`]): a stale or retagged local image, a node that
//! sends other content, a registry that moved a tag. A sender says which id it sends
//! (response metadata); one that names another id than the pin is refused before
//! anything is loaded, and after a load the pinned id must be present, is tagged with
//! the task's reference (a tar saved by id carries no tag) and must be what the
//! reference names. Before the pin exists, the id the sender named is checked the same
//! way. The tar's own tags are never applied: the Docker executor drops them as the tar
//! streams in ([`super::image_tar`]), so a sender cannot retag other references of
//! this engine either.
//!
//! Who gets an image is decided by the managers ([`grant`]): a node of the cluster
//! (not removed) with a task to run that uses it, and only by its pin; the sending
//! node asks them (`Dispatcher.CheckImageGrant`, [`crate::api::images`]) with the
//! caller's id from its certificate, and saves by the id they answer.
//!
//! An image present anywhere in the cluster is thus used as it is, as a node's own
//! local image already was: the registry is asked only when no node has it. So a
//! cluster without a registry, or whose registry's name does not resolve (a pull there
//! waits out the DNS time-out, 20 s on the test hosts), starts its tasks at once, and
//! the nodes run the very image the others run rather than whatever the tag names in
//! the registry now. Asking a node that lacks the image costs one round trip.
//!
//! The bytes travel over the cluster's mTLS connections as a server stream
//! (`NodeApi.ImageSave`, served in [`crate::api::images`] to the nodes whose tasks use
//! the image)
//! and are fed to the engine chunk by chunk, with HTTP/2 flow control as back-pressure:
//! the tar is never held whole in memory. A source that does not have the image
//! answers `NOT_FOUND` before sending anything. Within each group (known holders, then
//! the rest) sources are tried starting at a place that depends on the task's slot, so
//! that the replicas of a new service do not all load from the same node. Tasks of one
//! node that need the same image take turns ([`super::runner`]): the first loads it,
//! the others then find it present.
//!
//! The runner reaches other nodes through an [`ImageFetcher`], the one seam between it
//! and the network: the daemon's fetcher calls `ImageSave` over gRPC; tests plug in
//! another engine directly.

use std::collections::BTreeSet;
use std::sync::Arc;

use super::executor::{Bytes, Executor, ImageInfo, ImageSource, ImageStream};
use futures::StreamExt;

use crate::error::{Error, Result};
use crate::net::Peers;
use crate::proto::{node_api_client::NodeApiClient, ImageRequest};
use crate::store::image::is_image_id;
use crate::store::{ImagePin, NodeId, NodeStatus, ServiceId, State, Task, TaskState};

/// An image another node sends: the id it says the tar holds, and the tar.
pub struct Fetched {
    /// The image id the sender saved (`sha256:...`); empty if it did not say.
    pub image_id: String,
    /// The `docker save` tar, saved by that id.
    pub tar: ImageStream,
}

/// Streams an image from another node.
#[tonic::async_trait]
pub trait ImageFetcher: Send + Sync {
    /// `image` as the engine of the node at `addr` saves it (by the id the managers
    /// allow this node: the pinned one); `NotFound` if it lacks it, `PermissionDenied`
    /// if this node has no task that uses it.
    async fn fetch(&self, addr: &str, image: &str) -> Result<Fetched>;
}

/// Whether node `requester` may have `image` from another node's `ImageSave`, decided
/// by the managers from the store (pure). Allowed only to a node of the cluster (not
/// removed) with a task that uses the image and that is to run (desired RUNNING or
/// before, not yet ended); the answer is the pin the sender must save by (`None`: the
/// service is not pinned yet, the sender saves what the reference names now). Among
/// several such tasks, one whose container does not exist yet decides the pin.
/// The error is why not, for the refusal.
pub fn grant(
    state: &State,
    requester: NodeId,
    image: &str,
) -> std::result::Result<Option<ImagePin>, String> {
    if !state.nodes.contains_key(&requester) {
        return Err(format!(
            "node {requester} is not part of the cluster (removed?)"
        ));
    }
    let mut tasks: Vec<&Task> = state
        .tasks
        .values()
        .filter(|t| {
            t.node_id == Some(requester)
                && t.spec.container.image == image
                && t.desired_state <= TaskState::Running
                && !t.status.state.is_terminal()
        })
        .collect();
    tasks.sort_by_key(|t| t.status.state >= TaskState::Starting);
    match tasks.first() {
        Some(t) => Ok(state.pin_for(t).cloned()),
        None => Err(format!(
            "node {requester} has no task that uses image {image}"
        )),
    }
}

/// What a task's image was expected to be.
const PINNED: &str = "the service's pinned image";
/// What a sender's image was expected to be, before the service is pinned.
const NAMED: &str = "the image the sender named";

/// The error of a task whose image is not the content expected: `image` as found
/// `where_` (`on this node`, `sent by HOST`, `as pulled`) is `found`, not `expected`
/// (`what` says which: [`PINNED`] or [`NAMED`]).
pub fn mismatch(image: &str, where_: &str, found: &str, expected: &str, what: &str) -> Error {
    Error::Conflict(format!(
        "image {image} {where_} is {found}, expected {expected} ({what}): not starting the task"
    ))
}

/// Checks `found` (what `image` names after a local find or a pull) against the
/// service's pin, if there is one.
pub fn check(image: &str, where_: &str, found: &ImageInfo, pin: Option<&ImagePin>) -> Result<()> {
    match pin {
        Some(p) if p.id != found.id => Err(mismatch(image, where_, &found.id, &p.id, PINNED)),
        _ => Ok(()),
    }
}

/// The most sources an assignment names: with 1,000 nodes, naming every node in every
/// assignment made each message O(nodes), and finding the holders walked every task
/// for each assignment.
pub const MAX_SOURCES: usize = 16;

/// Where the node of `t` may load the task's image from (leader side, with the
/// assignment): other ready nodes whose engine answered, at most [`MAX_SOURCES`], by
/// node id: first those running a container of the image for a task of the same
/// service (STARTING or RUNNING), marked `known`; then others, from a place in the node
/// table that the task's slot picks, so that replicas spread their loads. Empty once
/// the task is STARTING (its container exists), so that nodes coming and going do not
/// resend the assignments of running tasks. The work is bounded by the service's tasks
/// and [`MAX_SOURCES`], not by the cluster's size.
pub fn sources_for(state: &State, t: &Task) -> Vec<ImageSource> {
    sources_with(state, t, &HolderMemo::default())
}

/// The nodes running a container of `image` for a task of `service` (STARTING or
/// RUNNING).
fn holders(state: &State, service: &ServiceId, image: &str) -> BTreeSet<NodeId> {
    state
        .tasks
        .of_service(service)
        .filter(|o| {
            matches!(o.status.state, TaskState::Starting | TaskState::Running)
                && o.spec.container.image == image
        })
        .filter_map(|o| o.node_id)
        .collect()
}

/// The holders of each service's images ([`holders`]) at one generation of the state
/// (`crate::store::Changes::generation`), shared by every session that reads it. Each
/// session asked for its tasks' holders apart, and each time walked the service's
/// tasks: at 300 nodes and 30,000 tasks being placed, one session per node walking
/// 100 tasks for each of its 100 tasks at every applied entry was a third of the
/// leader's CPU. Holds at most one set per service and image; a new generation
/// empties it.
#[derive(Default)]
pub struct HolderMemo(std::sync::Mutex<HolderTable>);

#[derive(Default)]
struct HolderTable {
    generation: Option<u64>,
    sets: std::collections::HashMap<(ServiceId, String), Arc<BTreeSet<NodeId>>>,
}

impl HolderMemo {
    fn get(&self, state: &State, service: &ServiceId, image: &str) -> Arc<BTreeSet<NodeId>> {
        let mut g = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let generation = state.changes.generation();
        if g.generation != Some(generation) {
            g.sets.clear();
            g.generation = Some(generation);
        }
        g.sets
            .entry((service.clone(), image.to_string()))
            .or_insert_with(|| Arc::new(holders(state, service, image)))
            .clone()
    }
}

/// [`sources_for`], the holders taken from `memo`.
pub fn sources_with(state: &State, t: &Task, memo: &HolderMemo) -> Vec<ImageSource> {
    if t.status.state >= TaskState::Starting {
        return vec![];
    }
    let holders = memo.get(state, &t.service_id, &t.spec.container.image);
    let usable = |n: &&crate::store::Node| {
        Some(n.id) != t.node_id
            && n.status == NodeStatus::Ready
            && !n.addr.is_empty()
            && !n.description.engine_version.is_empty()
    };
    let source = |n: &crate::store::Node, known: bool| ImageSource {
        addr: n.addr.clone(),
        hostname: n.description.hostname.clone(),
        known,
    };
    let mut out: Vec<ImageSource> = holders
        .iter()
        .filter_map(|id| state.nodes.get(id))
        .filter(usable)
        .take(MAX_SOURCES)
        .map(|n| source(n, true))
        .collect();
    // Node ids are random: a point in their space picked by the slot starts the walk.
    let start = NodeId(t.slot.wrapping_add(1).wrapping_mul(0x9e37_79b9_7f4a_7c15));
    let others = state
        .nodes
        .range(start..)
        .chain(state.nodes.range(..start))
        .map(|(_, n)| n)
        .filter(usable)
        .filter(|n| !holders.contains(&n.id))
        .take(MAX_SOURCES - out.len())
        .map(|n| source(n, false));
    out.extend(others);
    out
}

/// The order in which to try `sources` for the task in `slot`: the known holders
/// first, then the others, each group rotated by the slot so that replicas spread
/// their loads.
pub fn source_order(sources: &[ImageSource], slot: u64) -> Vec<ImageSource> {
    let (known, rest): (Vec<&ImageSource>, Vec<&ImageSource>) =
        sources.iter().partition(|s| s.known);
    let rotated = |group: Vec<&ImageSource>| -> Vec<ImageSource> {
        if group.is_empty() {
            return vec![];
        }
        let start = (slot % group.len() as u64) as usize;
        group[start..]
            .iter()
            .chain(&group[..start])
            .map(|s| (*s).clone())
            .collect()
    };
    let mut out = rotated(known);
    out.extend(rotated(rest));
    out
}

/// How a source is named in the task's status.
pub fn source_name(s: &ImageSource) -> String {
    if s.hostname.is_empty() {
        s.addr.clone()
    } else {
        s.hostname.clone()
    }
}

/// The error of a task whose image could neither be pulled (`pull`) nor loaded from
/// any of the sources tried (`tried`: the source's name and what it answered).
pub fn shipping_error(image: &str, pull: &Error, tried: &[(String, Error)]) -> Error {
    let pull = pull.to_string();
    if tried.is_empty() {
        return Error::NotFound(pull);
    }
    if tried.iter().all(|(_, e)| matches!(e, Error::NotFound(_))) {
        return Error::NotFound(format!(
            "{pull}; no other node of the cluster has image {image}"
        ));
    }
    let why: Vec<String> = tried
        .iter()
        .filter(|(_, e)| !matches!(e, Error::NotFound(_)))
        .map(|(name, e)| format!("{name}: {e}"))
        .collect();
    Error::Unavailable(format!(
        "{pull}; loading image {image} from another node failed: {}",
        why.join("; ")
    ))
}

/// Loads what the node named `from` sent into `exec` as `image`, and checks it: with a
/// pin, the sender must say it sends the pinned id (else nothing is loaded), and after
/// the load that id must be present; it is then tagged `image` (a tar saved by id
/// carries no tag) and `image` must name it. Without a pin, the id the sender named
/// (if any) is checked the same way. Returns what `image` names then.
pub async fn load(
    exec: &Arc<dyn Executor>,
    fetched: Fetched,
    from: &str,
    image: &str,
    pin: Option<&ImagePin>,
) -> Result<ImageInfo> {
    let sent = fetched.image_id;
    let where_ = format!("sent by {from}");
    if let Some(p) = pin {
        if !sent.is_empty() && sent != p.id {
            return Err(mismatch(image, &where_, &sent, &p.id, PINNED));
        }
    }
    let (want, what) = match pin {
        Some(p) => (Some(p.id.clone()), PINNED),
        None => (is_image_id(&sent).then_some(sent), NAMED),
    };
    exec.load_image(fetched.tar).await?;
    let Some(want) = want else {
        return exec.image_info(image).await?.ok_or_else(|| {
            Error::Internal(format!(
                "loaded what {from} sent, but image {image} is still missing"
            ))
        });
    };
    if exec.image_info(&want).await?.is_some() {
        exec.tag_image(&want, image).await?;
    }
    match exec.image_info(image).await? {
        Some(found) if found.id == want => Ok(found),
        Some(found) => Err(mismatch(image, &where_, &found.id, &want, what)),
        None => Err(mismatch(image, &where_, "not that image", &want, what)),
    }
}

/// The most bytes put into one `Chunk` of `NodeApi.ImageSave`.
pub const MAX_CHUNK: usize = 1024 * 1024;

/// The largest message the fetching side accepts (a chunk and then some).
const MAX_MSG: usize = 4 * MAX_CHUNK;

/// Response metadata of `ImageSave`: the image id the tar holds.
pub const IMAGE_ID_KEY: &str = "orc-image-id";

/// The task runner's [`ImageFetcher`]: `NodeApi.ImageSave` over the cluster's mTLS.
pub struct PeerFetcher {
    /// The channels to the other nodes.
    pub peers: Peers,
}

#[tonic::async_trait]
impl ImageFetcher for PeerFetcher {
    async fn fetch(&self, addr: &str, image: &str) -> Result<Fetched> {
        let ch = self.peers.node_channel(addr)?;
        let r = NodeApiClient::new(ch)
            .max_decoding_message_size(MAX_MSG)
            .image_save(ImageRequest {
                image: image.to_string(),
            })
            .await;
        let s = match r {
            Ok(s) => s,
            Err(e) => {
                if e.code() == tonic::Code::Unavailable {
                    self.peers.forget(addr);
                }
                return Err(Error::from(e));
            }
        };
        let image_id = s
            .metadata()
            .get(IMAGE_ID_KEY)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string();
        let tar = s
            .into_inner()
            .map(|c| c.map(|c| Bytes::from(c.data)).map_err(Error::from))
            .boxed();
        Ok(Fetched { image_id, tar })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::service::TaskSpec;
    use crate::store::{Node, NodeDescription, Role, ServiceId, TaskId, TaskStatus};

    fn src(n: &str) -> ImageSource {
        ImageSource {
            addr: format!("{n}:4242"),
            hostname: n.into(),
            known: false,
        }
    }

    fn known(n: &str) -> ImageSource {
        ImageSource {
            known: true,
            ..src(n)
        }
    }

    fn names(v: &[ImageSource]) -> Vec<String> {
        v.iter().map(source_name).collect()
    }

    #[test]
    fn sources_are_rotated_by_slot() {
        let s = [src("a"), src("b"), src("c")];
        assert_eq!(names(&source_order(&s, 0)), ["a", "b", "c"]);
        assert_eq!(names(&source_order(&s, 1)), ["b", "c", "a"]);
        assert_eq!(names(&source_order(&s, 5)), ["c", "a", "b"]);
        assert!(source_order(&[], 3).is_empty());
    }

    fn node(id: u64, status: NodeStatus, engine: &str) -> Node {
        Node {
            status,
            ..Node::new(
                NodeId(id),
                format!("n{id}:4242"),
                Role::Worker,
                NodeDescription {
                    hostname: format!("n{id}"),
                    engine_version: engine.into(),
                    ..Default::default()
                },
                0,
            )
        }
    }

    fn task(id: &str, node: u64, image: &str, state: TaskState) -> Task {
        let mut spec = TaskSpec::default();
        spec.container.image = image.into();
        Task {
            id: TaskId(id.into()),
            service_id: ServiceId("svc".into()),
            service_name: "web".into(),
            slot: 1,
            node_id: Some(NodeId(node)),
            spec_version: 1,
            spec: spec.into(),
            desired_state: TaskState::Running,
            status: TaskStatus::new(state, "", 0),
            created_ms: 0,
            vip: String::new(),
            endpoint: None,
        }
    }

    #[test]
    fn sources_are_the_other_ready_nodes_with_an_engine_holders_first() {
        let mut s = State::default();
        for n in [
            node(1, NodeStatus::Ready, "27.0"),
            node(2, NodeStatus::Ready, "27.0"),
            node(3, NodeStatus::Ready, ""),
            node(4, NodeStatus::Down, "27.0"),
            node(5, NodeStatus::Ready, "27.0"),
            node(6, NodeStatus::Ready, "27.0"),
        ] {
            s.nodes.insert(n.id, n);
        }
        let me = task("t1", 1, "app:1", TaskState::Preparing);
        for t in [
            me.clone(),
            task("t2", 5, "app:1", TaskState::Running),
            task("t3", 4, "app:1", TaskState::Running),
            task("t4", 2, "app:1", TaskState::Failed),
            task("t5", 6, "other:1", TaskState::Running),
        ] {
            s.tasks.insert(t.id.clone(), t);
        }
        let got = sources_for(&s, &me);
        let mut shown: Vec<(String, bool)> =
            got.iter().map(|x| (source_name(x), x.known)).collect();
        assert_eq!(shown[0], ("n5".to_string(), true));
        assert_eq!(got[0].addr, "n5:4242");
        shown[1..].sort();
        assert_eq!(
            shown[1..],
            [("n2".to_string(), false), ("n6".to_string(), false)]
        );

        // Once its container exists, a task needs no sources.
        let mut started = me;
        started.status.state = TaskState::Starting;
        assert!(sources_for(&s, &started).is_empty());
    }

    #[test]
    fn shared_holders_follow_every_applied_change_and_only_those() {
        let mut s = State::default();
        for n in [
            node(1, NodeStatus::Ready, "27.0"),
            node(5, NodeStatus::Ready, "27.0"),
        ] {
            s.nodes.insert(n.id, n);
        }
        let me = task("t1", 1, "app:1", TaskState::Preparing);
        s.tasks.insert(me.id.clone(), me.clone());
        let holder = task("t2", 5, "app:1", TaskState::Running);
        s.tasks.insert(holder.id.clone(), holder);
        let memo = HolderMemo::default();
        let known = |v: Vec<ImageSource>| v.iter().filter(|x| x.known).count();
        assert_eq!(known(sources_with(&s, &me, &memo)), 1);
        // An applied change is seen at once.
        let (r, _) = s.apply(&crate::store::Command::UpdateTaskStatus {
            updates: vec![(
                TaskId("t2".into()),
                TaskStatus::new(TaskState::Failed, "gone", 1),
            )],
        });
        assert_eq!(r, crate::store::Response::Ok);
        assert_eq!(sources_with(&s, &me, &memo), sources_for(&s, &me));
        assert_eq!(known(sources_with(&s, &me, &memo)), 0);
        // The memo is what answers: a change that bypassed `apply` (no new
        // generation) is not seen through it, while a fresh walk sees it.
        s.tasks.insert(
            TaskId("t3".into()),
            task("t3", 5, "app:1", TaskState::Running),
        );
        assert_eq!(known(sources_for(&s, &me)), 1);
        assert_eq!(known(sources_with(&s, &me, &memo)), 0);
    }

    #[test]
    fn a_large_cluster_names_a_few_sources_known_first_and_slots_start_apart() {
        let mut s = State::default();
        for id in 1..=40u64 {
            // Spread ids over the space, as random ids are.
            let mut n = node(id, NodeStatus::Ready, "27.0");
            n.id = NodeId(id.wrapping_mul(0xd6e8_feb8_6659_fd93));
            s.nodes.insert(n.id, n);
        }
        let ids: Vec<u64> = s.nodes.keys().map(|n| n.0).collect();
        let mut me = task("t0", ids[0], "app:1", TaskState::Preparing);
        let mut holder = task("t1", ids[7], "app:1", TaskState::Running);
        holder.node_id = Some(NodeId(ids[7]));
        me.node_id = Some(NodeId(ids[0]));
        s.tasks.insert(me.id.clone(), me.clone());
        s.tasks.insert(holder.id.clone(), holder);
        let got = sources_for(&s, &me);
        assert_eq!(got.len(), MAX_SOURCES);
        assert!(got[0].known && got[1..].iter().all(|x| !x.known));
        assert!(got
            .iter()
            .all(|x| x.hostname != s.nodes[&NodeId(ids[0])].description.hostname));
        // Another slot starts its walk elsewhere.
        let firsts: BTreeSet<String> = (1..=8)
            .map(|slot| {
                let mut t = me.clone();
                t.slot = slot;
                sources_for(&s, &t)[1].hostname.clone()
            })
            .collect();
        assert!(firsts.len() > 2, "{firsts:?}");
    }

    #[test]
    fn a_node_may_have_only_the_images_of_its_own_tasks_by_their_pin() {
        let mut s = State::default();
        for n in [
            node(1, NodeStatus::Ready, "27.0"),
            node(2, NodeStatus::Ready, "27.0"),
        ] {
            s.nodes.insert(n.id, n);
        }
        let mut done = task("t3", 1, "old:1", TaskState::Running);
        done.desired_state = TaskState::Shutdown;
        for t in [
            task("t1", 1, "app:1", TaskState::Preparing),
            task("t2", 2, "secret:1", TaskState::Running),
            done,
        ] {
            s.tasks.insert(t.id.clone(), t);
        }
        // Its own task's image: allowed, not pinned yet.
        assert_eq!(grant(&s, NodeId(1), "app:1"), Ok(None));
        // Pinned: allowed, by the pin.
        let id = "sha256:aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
        let pin = ImagePin {
            image: "app:1".into(),
            id: id.into(),
            repo_digest: String::new(),
        };
        s.image_pins.insert(ServiceId("svc".into()), pin.clone());
        assert_eq!(grant(&s, NodeId(1), "app:1"), Ok(Some(pin)));
        // Another node's image: refused.
        let e = grant(&s, NodeId(1), "secret:1").expect_err("not its task");
        assert_eq!(
            e,
            "node 0000000000000001 has no task that uses image secret:1"
        );
        assert!(grant(&s, NodeId(2), "secret:1").is_ok(), "control");
        // A task told to stop no longer counts.
        assert!(grant(&s, NodeId(1), "old:1").is_err());
        // A removed node: refused, even for its own (left-over) task.
        s.nodes.remove(&NodeId(2));
        let e = grant(&s, NodeId(2), "secret:1").expect_err("removed");
        assert!(e.contains("not part of the cluster"), "{e}");
    }

    #[test]
    fn known_holders_come_first_each_group_rotated() {
        let s = [known("a"), known("b"), src("c"), src("d"), src("e")];
        assert_eq!(names(&source_order(&s, 0)), ["a", "b", "c", "d", "e"]);
        assert_eq!(names(&source_order(&s, 1)), ["b", "a", "d", "e", "c"]);
        assert_eq!(names(&source_order(&s, 2)), ["a", "b", "e", "c", "d"]);
    }

    #[test]
    fn a_source_without_a_hostname_is_named_by_its_address() {
        let s = ImageSource {
            addr: "10.0.0.1:4242".into(),
            hostname: String::new(),
            known: false,
        };
        assert_eq!(source_name(&s), "10.0.0.1:4242");
    }

    #[test]
    fn the_error_says_whether_any_node_had_the_image() {
        let pull = Error::NotFound(
            "image x:1: not present on this node and could not be pulled: no registry".into(),
        );
        let e = shipping_error("x:1", &pull, &[]);
        assert_eq!(e.to_string(), pull.to_string());

        let none = [
            (
                "a".to_string(),
                Error::NotFound("image x:1: not present".into()),
            ),
            (
                "b".to_string(),
                Error::NotFound("image x:1: not present".into()),
            ),
        ];
        let e = shipping_error("x:1", &pull, &none);
        assert!(matches!(e, Error::NotFound(_)));
        assert!(
            e.to_string()
                .ends_with("; no other node of the cluster has image x:1"),
            "{e}"
        );

        let broken = [
            (
                "a".to_string(),
                Error::NotFound("image x:1: not present".into()),
            ),
            (
                "b".to_string(),
                Error::Unavailable("connection reset".into()),
            ),
        ];
        let e = shipping_error("x:1", &pull, &broken);
        assert!(matches!(e, Error::Unavailable(_)));
        assert!(
            e.to_string().contains("from another node failed: b: ")
                && e.to_string().contains("connection reset")
                && !e.to_string().contains("a: "),
            "{e}"
        );
    }
}
