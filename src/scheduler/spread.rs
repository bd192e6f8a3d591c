//! Ranking: among the nodes that passed the filters, spread the service.
//!
//! Without placement preferences the task goes to the feasible node with the fewest
//! tasks of its service, then the fewest tasks overall, then the lowest node id.
//!
//! Each preference (`spread=node.labels.zone`, stored as `node.labels.zone`; or an
//! attribute such as `spread=node.id`) first splits the feasible nodes into groups by
//! the value of that label or attribute; nodes without the
//! label form a group of their own. The task goes to the group whose nodes, all of them
//! (feasible or not, since the point is to survive the loss of a zone), hold the fewest
//! tasks of the service; ties go to the lowest value, labelled groups before the
//! unlabelled one. The next preference splits that group again, and so on; the last
//! group is ranked as without preferences. Groups are balanced by task count, not by
//! their number of nodes: with two nodes in zone a and one in zone b, four replicas land
//! two in a (one per node) and two in b.

use std::borrow::Cow;
use std::collections::BTreeMap;

use super::nodeinfo::NodeInfo;
use crate::store::constraint::ConstraintKey;
use crate::store::{Node, NodeId, Preference, ServiceId};

/// A group of nodes at one level: labelled groups (`false`) sort before the unlabelled
/// one (`true`), then by value.
type Group<'a> = (bool, Option<Cow<'a, str>>);

/// The node, among `feasible`, that `service`'s next task should go to; `None` if
/// `feasible` is empty. `infos` holds every node, feasible or not.
pub(crate) fn choose(
    infos: &BTreeMap<NodeId, NodeInfo<'_>>,
    feasible: &[NodeId],
    service: &ServiceId,
    preferences: &[Preference],
) -> Option<NodeId> {
    let mut candidates: Vec<&NodeInfo<'_>> =
        feasible.iter().filter_map(|id| infos.get(id)).collect();
    for level in 0..preferences.len() {
        let prefs = &preferences[..=level];
        let mut groups: BTreeMap<Group<'_>, Vec<&NodeInfo<'_>>> = BTreeMap::new();
        for info in candidates {
            let value = preference_value(info.node, &preferences[level]);
            groups
                .entry((value.is_none(), value))
                .or_default()
                .push(info);
        }
        // Every candidate shares the values of the levels above, so the group's path is
        // the path of any of its members.
        let (_, best) = groups.into_iter().min_by_key(|(group, members)| {
            let path = members.first().map(|m| path_of(m.node, prefs));
            let tasks: usize = infos
                .values()
                .filter(|i| Some(path_of(i.node, prefs)) == path)
                .map(|i| i.service_tasks(service))
                .sum();
            (tasks, group.clone())
        })?;
        candidates = best;
    }
    candidates
        .into_iter()
        .min_by_key(|i| (i.service_tasks(service), i.tasks, i.node.id))
        .map(|i| i.node.id)
}

/// The node's values for each of `prefs`.
fn path_of<'a>(node: &'a Node, prefs: &[Preference]) -> Vec<Option<Cow<'a, str>>> {
    prefs.iter().map(|p| preference_value(node, p)).collect()
}

/// The node's value for a preference (`node.labels.zone`, `engine.labels.disk`,
/// `node.id`, ...); `None` without the label, and for an invalid preference (from an
/// older version). An attribute always has a value (maybe empty, as an unreported OS).
pub(crate) fn preference_value<'a>(
    node: &'a Node,
    preference: &Preference,
) -> Option<Cow<'a, str>> {
    match preference {
        Preference::NodeLabel(name) => node.labels.get(name).map(|v| Cow::Borrowed(v.as_str())),
        Preference::EngineLabel(name) => node
            .description
            .engine_labels
            .get(name)
            .map(|v| Cow::Borrowed(v.as_str())),
        Preference::Attribute(key) => Some(match key {
            ConstraintKey::NodeId => Cow::Owned(node.id.to_string()),
            ConstraintKey::Hostname => Cow::Borrowed(node.description.hostname.as_str()),
            ConstraintKey::Role => Cow::Borrowed(node.role.as_str()),
            ConstraintKey::Os => Cow::Borrowed(node.description.os.as_str()),
            ConstraintKey::Arch => Cow::Borrowed(node.description.arch.as_str()),
            // never read as a preference (see `Preference::read`)
            _ => return None,
        }),
        Preference::Invalid(_) => None,
    }
}
