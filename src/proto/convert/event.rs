//! Events ([`crate::store::events::Event`]) on the wire (`Control.Events`).

use crate::proto as pb;
use crate::store::events::{format_time, Event};

impl From<Event> for pb::EventMessage {
    fn from(e: Event) -> Self {
        pb::EventMessage {
            time_nano: e.time_nano,
            r#type: e.kind,
            action: e.action,
            id: e.id,
            name: e.name,
            attributes: e.attributes.into_iter().collect(),
            notice: String::new(),
        }
    }
}

/// An event message is always a valid event: its time is rewritten from `time_nano`.
impl From<pb::EventMessage> for Event {
    fn from(m: pb::EventMessage) -> Self {
        Event {
            time: format_time(m.time_nano),
            time_nano: m.time_nano,
            kind: m.r#type,
            action: m.action,
            id: m.id,
            name: m.name,
            attributes: m.attributes.into_iter().collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::store::events::EventBody;

    use super::*;

    #[test]
    fn an_event_crosses_the_wire_unchanged() {
        let e = EventBody::new("task", "failed", "t1", "web.1")
            .attr("error", "exit 137")
            .at(1_764_842_400_123_456_789);
        let back = Event::from(pb::EventMessage::from(e.clone()));
        assert_eq!(back, e);
    }
}
