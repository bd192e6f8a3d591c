//! The events stream: every change of the cluster, one stream per manager (`orc events`).
//!
//! Where events come from:
//!
//! - **Applied Raft entries.** Each manager derives events from the commands it applies,
//!   with [`derive`]: a pure function of the objects a command touches as they were
//!   before ([`Before::capture`]), the state after, the command and its response. Every
//!   manager applies the same entries, so every manager sees the same replicated events
//!   (nodes, services, tasks, updates, networks, secrets and configs, CA rotation, join
//!   token rotation, autolock); Raft membership entries give `membership` events
//!   ([`membership_events`]).
//! - **Manager-local happenings**, published by the part that sees them: a new leader
//!   (`leader elect`, from the Raft metrics), a refused join (`join refuse`, with the
//!   reason and the caller's address as this manager's socket saw it), a certificate
//!   issued to a joining node or renewed (`certificate issue` / `renew`, on the manager
//!   that served the call), a snapshot installed (`cluster snapshot-install`: the
//!   entries it covers give no events here).
//!
//! History: each manager keeps the last [`HISTORY`] events in memory ([`Hub`]), not
//! replicated and not on disk: a restarted manager starts with an empty history (then
//! replays its log's unapplied entries, which give their events again, stamped with the
//! time they are applied). `--since` is served from this ring.
//!
//! Bounds: the ring holds at most [`HISTORY`] events; live events go to subscribers
//! through one broadcast channel of [`SUBSCRIBER_QUEUE`] events; a subscriber that falls
//! further behind is cut off with an error telling it so (never unbounded memory); at
//! most [`MAX_SUBSCRIBERS`] streams at once per manager; filters are bounded in number
//! and length ([`filter`]).
//!
//! What an event never holds: the content of a secret or config, a join token or its
//! secret, an unlock key, a key of any kind. Secret and config events carry the name,
//! id and version number only.
//!
//! The JSON form (`orc events --format json`, one object per line) is a contract; its
//! keys are the fields of [`Event`].

mod derive;
pub mod filter;
mod hub;

pub use derive::{derive, membership_events, Before};
pub use filter::{parse_time, Filters};
pub use hub::{now_nano, Hub, Subscription};

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// Events a manager remembers for `--since` (older ones are dropped first).
pub const HISTORY: usize = 10_000;

/// Live events a subscriber may fall behind by before it is cut off.
pub const SUBSCRIBER_QUEUE: usize = 1024;

/// Event streams one manager serves at once.
pub const MAX_SUBSCRIBERS: usize = 64;

/// The kinds of object an event is about (`type` in JSON, `--filter type=`).
pub const TYPES: &[&str] = &[
    "node",
    "service",
    "task",
    "update",
    "network",
    "secret",
    "config",
    "membership",
    "leader",
    "certificate",
    "join",
    "cluster",
];

/// One event, as `orc events --format json` prints it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Event {
    /// When this manager saw it, RFC 3339 UTC with nanoseconds.
    pub time: String,
    /// The same instant, nanoseconds since the unix epoch.
    pub time_nano: u64,
    /// What kind of object (one of [`TYPES`]).
    #[serde(rename = "type")]
    pub kind: String,
    /// What happened (`create`, `update`, `remove`, `scale`, a task's new state, ...).
    pub action: String,
    /// The object's id (a node id, a service id, a task id, ...; may be empty).
    pub id: String,
    /// The object's name (a service's, a node's hostname, `service.slot` for a task).
    pub name: String,
    /// Details, by key (`service`, `node`, `state`, `error`, `replicas`, ...).
    pub attributes: BTreeMap<String, String>,
}

/// An event before it is stamped with its time: what [`derive`] and the manager-local
/// parts produce.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventBody {
    /// See [`Event::kind`].
    pub kind: &'static str,
    /// See [`Event::action`].
    pub action: String,
    /// See [`Event::id`].
    pub id: String,
    /// See [`Event::name`].
    pub name: String,
    /// See [`Event::attributes`].
    pub attributes: BTreeMap<String, String>,
}

impl EventBody {
    /// An event of `kind` and `action` about `id`/`name`, without attributes.
    pub fn new(
        kind: &'static str,
        action: impl Into<String>,
        id: impl Into<String>,
        name: impl Into<String>,
    ) -> EventBody {
        EventBody {
            kind,
            action: action.into(),
            id: id.into(),
            name: name.into(),
            attributes: BTreeMap::new(),
        }
    }

    /// Adds attribute `k` = `v` (an empty value is left out).
    pub fn attr(mut self, k: &str, v: impl Into<String>) -> EventBody {
        let v = v.into();
        if !v.is_empty() {
            self.attributes.insert(k.to_string(), v);
        }
        self
    }

    /// The event stamped with `time_nano`.
    pub fn at(self, time_nano: u64) -> Event {
        Event {
            time: format_time(time_nano),
            time_nano,
            kind: self.kind.to_string(),
            action: self.action,
            id: self.id,
            name: self.name,
            attributes: self.attributes,
        }
    }
}

/// RFC 3339 UTC with nanoseconds, as Docker prints event times.
pub fn format_time(time_nano: u64) -> String {
    let t = std::time::UNIX_EPOCH + std::time::Duration::from_nanos(time_nano);
    humantime::format_rfc3339_nanos(t).to_string()
}

impl Event {
    /// The one-line form, like `docker events`:
    /// `2026-12-04T10:00:00.000000000Z service create abc123 (name=web, replicas=2)`.
    pub fn line(&self) -> String {
        let mut attrs: Vec<String> = vec![];
        if !self.name.is_empty() {
            attrs.push(format!("name={}", self.name));
        }
        attrs.extend(self.attributes.iter().map(|(k, v)| format!("{k}={v}")));
        let mut out = format!("{} {} {}", self.time, self.kind, self.action);
        if !self.id.is_empty() {
            out.push(' ');
            out.push_str(&self.id);
        }
        if !attrs.is_empty() {
            out.push_str(&format!(" ({})", attrs.join(", ")));
        }
        out
    }
}

#[cfg(test)]
mod tests;
