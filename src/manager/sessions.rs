//! The leader's memory of its worker sessions: when it last heard from each node, the
//! live facts the node sent, and when its description was last written. Fed by the
//! dispatcher ([`crate::dispatcher`]), read by its down-detector and by the scheduler
//! (the facts); kept in the manager runtime because it lives and dies with leadership.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::Instant;

use crate::proto;
use crate::store::NodeId;

/// The least time between two writes of one node's description.
pub const DESCRIBE_EVERY: Duration = Duration::from_secs(10);

/// How long after a takeover nodes reporting in for the first time still restart every
/// node's deadline ([`Sessions::clock`]).
pub const TAKEOVER_ARRIVALS: Duration = Duration::from_secs(30);

/// When the leader last heard from each node.
#[derive(Default)]
pub struct Sessions {
    inner: Mutex<SessionTable>,
    /// What every heartbeat's reply holds of the state, with the generation of the
    /// state it was made of ([`Sessions::reply`]).
    reply: Mutex<Option<(u64, Arc<Reply>)>>,
}

/// What a heartbeat's reply holds of the state, the same for every node: made once per
/// change of the nodes or the cluster ([`crate::store::changes::Changes::nodes_or_all`])
/// rather than by a walk of every node and a parse of the CA certificate at each of
/// 2,000 heartbeats a second.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    /// The heartbeat period.
    pub period_ms: u64,
    /// The managers' cluster addresses.
    pub managers: Vec<String>,
    /// The roots the nodes must trust, and the one that issues now.
    pub trust: crate::ca::Trust,
}

#[derive(Default)]
struct SessionTable {
    since: Option<Instant>,
    /// The last time a node was heard from for the first time since the takeover.
    arrived: Option<Instant>,
    /// The time this leader could not listen since the takeover ([`Sessions::deaf`]).
    deaf: Duration,
    /// When each node was last heard from, and `deaf` then.
    last: HashMap<NodeId, (Instant, Duration)>,
    facts: HashMap<NodeId, proto::NodeFacts>,
    /// When each node's description was last written to the store.
    described: HashMap<NodeId, Instant>,
}

impl Sessions {
    /// Forgets every session and starts all clocks at `now` (on becoming leader).
    pub fn reset_all(&self, now: Instant) {
        let mut t = self.inner.lock().expect("sessions lock");
        t.since = Some(now);
        t.arrived = None;
        t.deaf = Duration::ZERO;
        t.last.clear();
        t.facts.clear();
        t.described.clear();
    }

    /// True (and the time recorded) when `id`'s description may be written to the
    /// store at `now`: at most once per [`DESCRIBE_EVERY`], so that a node changing its
    /// description with every heartbeat cannot fill the managers' disks.
    pub fn may_describe(&self, id: NodeId, now: Instant) -> bool {
        let mut t = self.inner.lock().expect("sessions lock");
        match t.described.get(&id) {
            Some(at) if now.saturating_duration_since(*at) < DESCRIBE_EVERY => false,
            _ => {
                t.described.insert(id, now);
                true
            }
        }
    }

    /// Starts the clocks of the nodes not heard from since the takeover at `at` instead,
    /// if later: the workers of a forced new cluster first try the managers it removed
    /// ([`crate::daemon::recover`]).
    pub fn postpone_takeover(&self, at: Instant) {
        let mut t = self.inner.lock().expect("sessions lock");
        t.since = Some(t.since.map_or(at, |s| s.max(at)));
    }

    /// How many nodes were heard from within `within` of `now` (the sessions alive).
    pub fn live(&self, now: Instant, within: Duration) -> usize {
        let t = self.inner.lock().expect("sessions lock");
        t.last
            .values()
            .filter(|(at, _)| now.saturating_duration_since(*at) <= within)
            .count()
    }

    /// Records time this leader could not listen to its nodes: its runtime ran `late`
    /// (found by its down-detector, [`crate::dispatcher::run_monitor`]). It counts
    /// against no node's deadline: beats that wait in a busy leader's queues are not
    /// the nodes' silence. At 1,000 nodes, a leader busy with placements marked
    /// nodes down that had sent their beats, and up again when it read them.
    pub fn deaf(&self, late: Duration) {
        self.inner.lock().expect("sessions lock").deaf += late;
    }

    /// The reply made of the state of generation `generation`: the one held when it was
    /// made of that generation, else `make`'s (then held).
    pub fn reply(
        &self,
        generation: u64,
        make: impl FnOnce() -> crate::error::Result<Reply>,
    ) -> crate::error::Result<Arc<Reply>> {
        if let Some((g, r)) = &*self.reply.lock().expect("reply lock") {
            if *g == generation {
                return Ok(r.clone());
            }
        }
        let r = Arc::new(make()?);
        *self.reply.lock().expect("reply lock") = Some((generation, r.clone()));
        Ok(r)
    }

    /// Records a heartbeat.
    pub fn seen(&self, id: NodeId, now: Instant) {
        let mut t = self.inner.lock().expect("sessions lock");
        let deaf = t.deaf;
        if t.last.insert(id, (now, deaf)).is_none() {
            t.arrived = Some(t.arrived.map_or(now, |a| a.max(now)));
        }
    }

    /// Records a node's live facts.
    pub fn set_facts(&self, id: NodeId, facts: proto::NodeFacts) {
        self.inner
            .lock()
            .expect("sessions lock")
            .facts
            .insert(id, facts);
    }

    /// The live facts of every node heard from.
    pub fn facts(&self) -> HashMap<NodeId, proto::NodeFacts> {
        self.inner.lock().expect("sessions lock").facts.clone()
    }

    /// The clock of a node's deadline: its last heartbeat, or, before its first one to
    /// this leader, the moment this leader took over. Either one is moved on to the last
    /// time a node reported in for the first time since the takeover, for
    /// [`TAKEOVER_ARRIVALS`] after it: while nodes are still finding the new leader, it
    /// is busy with their sessions and no silence is held against anyone. At 1,000
    /// nodes and 30,000 tasks, a killed leader's successor had heard from 180 nodes
    /// when the first deadline passed and marked the 818 others down. Then the time
    /// the leader was deaf since ([`Sessions::deaf`]) moves it on again.
    pub fn clock(&self, id: NodeId) -> Option<Clock> {
        let t = self.inner.lock().expect("sessions lock");
        let arrivals = match (t.since, t.arrived) {
            (Some(since), Some(a)) => Some(a.min(since + TAKEOVER_ARRIVALS)),
            _ => None,
        };
        let later = |at: Instant| arrivals.map_or(at, |a| at.max(a));
        match t.last.get(&id) {
            Some((at, deaf)) => Some(Clock::Heard(later(*at) + t.deaf.saturating_sub(*deaf))),
            None => t.since.map(|s| Clock::TookOver(later(s) + t.deaf)),
        }
    }
}

/// What a node's deadline counts from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Clock {
    /// Its last heartbeat to this leader.
    Heard(Instant),
    /// This leader took over and has not heard from the node since.
    TookOver(Instant),
}

impl Clock {
    /// The instant the clock counts from.
    pub fn at(self) -> Instant {
        match self {
            Clock::Heard(t) | Clock::TookOver(t) => t,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reply(period_ms: u64) -> Reply {
        Reply {
            period_ms,
            managers: vec!["10.0.0.1:4242".into()],
            trust: crate::ca::Trust {
                bundle_pem: "pem".into(),
                issuer_digest: "d".into(),
            },
        }
    }

    #[test]
    fn a_heartbeat_reply_is_made_once_per_generation() {
        let sessions = Sessions::default();
        let made = std::cell::Cell::new(0);
        let make = |p| {
            made.set(made.get() + 1);
            Ok(reply(p))
        };
        assert_eq!(sessions.reply(7, || make(500)).unwrap().period_ms, 500);
        // The same generation: the held one, not made again.
        assert_eq!(sessions.reply(7, || make(900)).unwrap().period_ms, 500);
        assert_eq!(made.get(), 1);
        // Another: made again, and held.
        assert_eq!(sessions.reply(8, || make(900)).unwrap().period_ms, 900);
        assert_eq!(sessions.reply(8, || make(100)).unwrap().period_ms, 900);
        assert_eq!(made.get(), 2);
        // A failure is not held.
        let failed = sessions.reply(9, || {
            Err(crate::error::Error::Unavailable("not initialised".into()))
        });
        assert!(failed.is_err());
        assert_eq!(sessions.reply(9, || make(300)).unwrap().period_ms, 300);
    }
}
