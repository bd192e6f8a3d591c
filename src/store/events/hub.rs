//! One manager's events: the history ring and the live broadcast.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use tokio::sync::broadcast;

use super::{Event, EventBody, HISTORY, MAX_SUBSCRIBERS, SUBSCRIBER_QUEUE};
use crate::error::{Error, Result};

/// The events of one manager: the last [`HISTORY`] in a ring, and a broadcast to the
/// live subscribers (each may fall [`SUBSCRIBER_QUEUE`] behind).
pub struct Hub {
    /// The ring, and the time of the last event (times never go back).
    ring: Mutex<(VecDeque<Event>, u64)>,
    /// Live events.
    live: broadcast::Sender<Event>,
    /// Subscriptions open now.
    subscribers: Arc<AtomicUsize>,
    /// The ring's bound.
    capacity: usize,
}

impl Default for Hub {
    fn default() -> Self {
        Hub::with_capacity(HISTORY, SUBSCRIBER_QUEUE)
    }
}

impl std::fmt::Debug for Hub {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Hub")
            .field("capacity", &self.capacity)
            .finish()
    }
}

/// A live subscription: the replayed history first, then live events.
pub struct Subscription {
    /// The events of the history at or after the `since` asked for, oldest first.
    pub history: Vec<Event>,
    /// Live events published after the history was taken.
    pub live: broadcast::Receiver<Event>,
    /// True if the ring had dropped events newer than `since` (the history is not
    /// complete).
    pub truncated: bool,
    /// Counts this subscription among the open ones while it lives.
    _guard: SubscriberGuard,
}

struct SubscriberGuard(Arc<AtomicUsize>);

impl Drop for SubscriberGuard {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Nanoseconds since the unix epoch, now.
pub fn now_nano() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
}

impl Hub {
    /// A hub whose ring holds `capacity` events and whose subscribers may fall `queue`
    /// events behind.
    pub fn with_capacity(capacity: usize, queue: usize) -> Hub {
        Hub {
            ring: Mutex::new((VecDeque::new(), 0)),
            live: broadcast::channel(queue.max(1)).0,
            subscribers: Arc::new(AtomicUsize::new(0)),
            capacity: capacity.max(1),
        }
    }

    /// Publishes events, stamped now (never before the previous event).
    pub fn publish(&self, bodies: impl IntoIterator<Item = EventBody>) {
        self.publish_at(now_nano(), bodies)
    }

    /// Publishes events stamped `time_nano` (or just after the previous event).
    pub fn publish_at(&self, time_nano: u64, bodies: impl IntoIterator<Item = EventBody>) {
        let mut ring = self.ring.lock().expect("events lock");
        for body in bodies {
            let t = time_nano.max(ring.1);
            ring.1 = t;
            let e = body.at(t);
            if ring.0.len() == self.capacity {
                ring.0.pop_front();
            }
            ring.0.push_back(e.clone());
            // No receiver is not an error: the event stays in the ring.
            let _ = self.live.send(e);
        }
    }

    /// Subscribes: the history from `since_nano` on (`None`: no history), then live
    /// events. Refused when [`MAX_SUBSCRIBERS`] are open.
    pub fn subscribe(&self, since_nano: Option<u64>) -> Result<Subscription> {
        let open = self.subscribers.fetch_add(1, Ordering::SeqCst);
        let guard = SubscriberGuard(self.subscribers.clone());
        if open >= MAX_SUBSCRIBERS {
            return Err(Error::Unavailable(format!(
                "events: this manager serves {MAX_SUBSCRIBERS} event streams already; try again later"
            )));
        }
        // Under the ring's lock, so that no event is both in the history and live, and
        // none is in neither.
        let ring = self.ring.lock().expect("events lock");
        let live = self.live.subscribe();
        let (history, truncated) = match since_nano {
            None => (vec![], false),
            Some(since) => {
                let history: Vec<Event> = ring
                    .0
                    .iter()
                    .filter(|e| e.time_nano >= since)
                    .cloned()
                    .collect();
                let truncated = ring.0.len() == self.capacity
                    && ring.0.front().is_some_and(|e| e.time_nano > since);
                (history, truncated)
            }
        };
        Ok(Subscription {
            history,
            live,
            truncated,
            _guard: guard,
        })
    }

    /// The newest `n` events of the ring, oldest first (no subscription: the dashboard
    /// reads them each time it draws).
    pub fn latest(&self, n: usize) -> Vec<Event> {
        let ring = self.ring.lock().expect("events lock");
        ring.0
            .iter()
            .skip(ring.0.len().saturating_sub(n))
            .cloned()
            .collect()
    }

    /// Events in the ring now.
    pub fn len(&self) -> usize {
        self.ring.lock().expect("events lock").0.len()
    }

    /// True when the ring is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}
