//! Swarm templates: `{{.Node.Hostname}}` and its kin in a container's environment,
//! labels and mount paths, expanded per task as Docker expands them.
//!
//! A service spec keeps its templates as written (`service inspect` and `service ps`
//! show them); each task gets them expanded where it becomes concrete for its node: the
//! dispatcher, when it builds the node's assignment ([`expand_task`]). The dispatcher
//! knows the node's id from its certificate and the store, the service's id, name and
//! labels from the store (the worker does not have the labels), and the node's
//! hostname, OS and architecture from its description, as the node reported them —
//! which is fine for a value a template prints, and nothing else reads it.
//!
//! The language is the subset of Go's `text/template` that SwarmKit's context offers
//! (SwarmKit's `template` package: a `Context` of Service, Node and Task, executed with
//! `missingkey=error`); orc parses it itself:
//!
//! | action | value |
//! |---|---|
//! | `{{.Service.ID}}`, `{{.Service.Name}}` | the service's id and name |
//! | `{{.Service.Labels}}` | the labels as Go prints a map: `map[a:1 b:2]`, keys sorted |
//! | `{{.Service.Labels.KEY}}` | one label; a missing one is refused at the door, as Go's `missingkey=error` fails |
//! | `{{index .Service.Labels "KEY"}}` | one label; empty when missing |
//! | `{{.Node.ID}}`, `{{.Node.Hostname}}` | the node's id and host name |
//! | `{{.Node.Platform.OS}}`, `{{.Node.Platform.Architecture}}` | `linux`, `x86_64` |
//! | `{{.Task.ID}}` | the task's id |
//! | `{{.Task.Name}}` | `SERVICE.SLOT.TASKID` (a global task: `SERVICE.NODEID.TASKID`) |
//! | `{{.Task.Slot}}` | the slot; a global task's is its node's id, as in SwarmKit |
//!
//! `{{-` and `-}}` trim the white space before and after the action, as in Go. Anything
//! else (an unknown field, a function, a comment, a `{{` without `}}`) is refused at the
//! door with the field it is in; a spec stored before templates were checked keeps a
//! bad template as literal text.
//!
//! The fields expanded are listed once, in [`for_each_field`]: the environment's
//! values (`K=V`: only V, as SwarmKit), the container's labels' values, and each mount's
//! source and target.

use std::collections::BTreeMap;

use super::{ContainerSpec, ServiceSpec};
use crate::error::{Error, Result};
use crate::store::{Node, Service, Task};

/// What the fields can be, for messages.
const FIELDS: &str = ".Service.ID, .Service.Name, .Service.Labels, .Node.ID, .Node.Hostname, \
                      .Node.Platform.OS, .Node.Platform.Architecture, .Task.ID, .Task.Name or .Task.Slot";

/// The most a field may grow to once expanded, bytes: a template cannot make a task's
/// spec (sent to a worker, kept in its database) balloon (`{{.Service.Labels}}` a
/// thousand times over).
pub const MAX_EXPANDED: usize = 64 * 1024;

/// The most of a value a node reports about itself (host name, OS, architecture) that
/// a template prints, bytes (a DNS name is at most 253).
const MAX_REPORTED: usize = 255;

/// The longest id orc makes (node, service, task), with room to spare.
const MAX_ID: usize = 64;

/// `s` cut to at most `max` bytes, on a character boundary.
fn capped(s: &str, max: usize) -> String {
    let mut end = s.len().min(max);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s[..end].to_string()
}

/// Everything a template can print, for one task on one node.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Context {
    /// The service's id.
    pub service_id: String,
    /// The service's name.
    pub service_name: String,
    /// The service's labels.
    pub service_labels: BTreeMap<String, String>,
    /// The node's id.
    pub node_id: String,
    /// The node's host name.
    pub node_hostname: String,
    /// The node's operating system.
    pub node_os: String,
    /// The node's architecture.
    pub node_arch: String,
    /// The task's id.
    pub task_id: String,
    /// `SERVICE.SLOT.TASKID`.
    pub task_name: String,
    /// The slot, or the node's id for a global task.
    pub task_slot: String,
}

impl Context {
    /// The context of `task` on `node`, of `service` (`None` if it is gone: the task's
    /// copy of the name is used, without labels).
    pub fn of(task: &Task, service: Option<&Service>, node: Option<&Node>) -> Context {
        let node_id = task.node_id.map(|n| n.to_string()).unwrap_or_default();
        let slot = if task.slot == 0 {
            node_id.clone()
        } else {
            task.slot.to_string()
        };
        let service_name = service
            .map(|s| s.spec.name.clone())
            .unwrap_or_else(|| task.service_name.clone());
        Context {
            service_id: task.service_id.to_string(),
            task_name: format!("{service_name}.{slot}.{}", task.id),
            service_name,
            service_labels: service.map(|s| s.spec.labels.clone()).unwrap_or_default(),
            // What the node reported about itself, bounded.
            node_hostname: node
                .map(|n| capped(&n.description.hostname, MAX_REPORTED))
                .unwrap_or_default(),
            node_os: node
                .map(|n| capped(&n.description.os, MAX_REPORTED))
                .unwrap_or_default(),
            node_arch: node
                .map(|n| capped(&n.description.arch, MAX_REPORTED))
                .unwrap_or_default(),
            node_id,
            task_id: task.id.to_string(),
            task_slot: slot,
        }
    }
}

/// What an action prints.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Field {
    ServiceId,
    ServiceName,
    ServiceLabels,
    /// `.Service.Labels.KEY`: must exist.
    ServiceLabel(String),
    /// `index .Service.Labels "KEY"`: empty when missing.
    IndexServiceLabel(String),
    NodeId,
    NodeHostname,
    NodeOs,
    NodeArch,
    TaskId,
    TaskName,
    TaskSlot,
}

/// One piece of a parsed template.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Part {
    Text(String),
    Action(Field),
}

/// A parsed template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Template {
    parts: Vec<Part>,
}

/// True if `s` holds an action to parse (most values hold none and are left alone).
pub fn is_template(s: &str) -> bool {
    s.contains("{{")
}

impl Template {
    /// Parses `s`; the error says what is wrong, for a message that names the field.
    pub fn parse(s: &str) -> std::result::Result<Template, String> {
        let mut parts = vec![];
        let mut rest = s;
        let mut trim_next = false;
        while let Some(open) = rest.find("{{") {
            let mut text = &rest[..open];
            if trim_next {
                text = text.trim_start();
            }
            let after = &rest[open + 2..];
            let (trim_before, after) = match after.strip_prefix("- ") {
                Some(a) => (true, a),
                None => match after
                    .strip_prefix("-\t")
                    .or_else(|| after.strip_prefix("-\n"))
                {
                    Some(a) => (true, a),
                    None => (false, after),
                },
            };
            if trim_before {
                text = text.trim_end();
            }
            if !text.is_empty() {
                parts.push(Part::Text(text.to_string()));
            }
            let Some(close) = after.find("}}") else {
                return Err("\"{{\" without a closing \"}}\"".into());
            };
            let mut inner = &after[..close];
            trim_next = false;
            if let Some(i) = inner
                .strip_suffix(" -")
                .or_else(|| inner.strip_suffix("\t-"))
                .or_else(|| inner.strip_suffix("\n-"))
            {
                inner = i;
                trim_next = true;
            }
            parts.push(Part::Action(action(inner.trim())?));
            rest = &after[close + 2..];
        }
        let text = if trim_next { rest.trim_start() } else { rest };
        if !text.is_empty() {
            parts.push(Part::Text(text.to_string()));
        }
        Ok(Template { parts })
    }

    /// The template with `ctx`'s values.
    pub fn expand(&self, ctx: &Context) -> String {
        let mut out = String::new();
        for p in &self.parts {
            match p {
                Part::Text(t) => out.push_str(t),
                Part::Action(f) => out.push_str(&value(f, ctx)),
            }
        }
        out
    }

    /// The most it can expand to for a service named `service` with `labels`, bytes.
    fn worst_case(&self, service: &str, labels: &BTreeMap<String, String>) -> usize {
        let longest_label = labels.values().map(String::len).max().unwrap_or(0);
        self.parts
            .iter()
            .map(|p| match p {
                Part::Text(t) => t.len(),
                Part::Action(f) => match f {
                    Field::ServiceLabels => go_map(labels).len(),
                    Field::ServiceLabel(_) | Field::IndexServiceLabel(_) => longest_label,
                    Field::ServiceName => service.len(),
                    Field::TaskName => service.len() + 2 + 2 * MAX_ID,
                    Field::NodeHostname | Field::NodeOs | Field::NodeArch => MAX_REPORTED,
                    Field::ServiceId | Field::NodeId | Field::TaskId | Field::TaskSlot => MAX_ID,
                },
            })
            .fold(0usize, usize::saturating_add)
    }

    /// The `.Service.Labels.KEY` keys it needs (each must exist, as with Go's
    /// `missingkey=error`).
    fn required_labels(&self) -> impl Iterator<Item = &str> {
        self.parts.iter().filter_map(|p| match p {
            Part::Action(Field::ServiceLabel(k)) => Some(k.as_str()),
            _ => None,
        })
    }
}

/// One action's contents: a field path, or `index .Service.Labels "KEY"`.
fn action(inner: &str) -> std::result::Result<Field, String> {
    if inner.is_empty() {
        return Err("an empty action \"{{}}\"".into());
    }
    if let Some(args) = inner
        .strip_prefix("index")
        .filter(|a| a.starts_with([' ', '\t']))
    {
        let args = args.trim_start();
        let Some(key) = args.strip_prefix(".Service.Labels") else {
            return Err(
                "index works on .Service.Labels only (index .Service.Labels \"KEY\")".to_string(),
            );
        };
        if !key.starts_with([' ', '\t']) {
            return Err("expected index .Service.Labels \"KEY\"".into());
        }
        return string_literal(key.trim())
            .map(Field::IndexServiceLabel)
            .ok_or_else(|| "expected index .Service.Labels \"KEY\"".to_string());
    }
    let field = match inner {
        ".Service.ID" => Field::ServiceId,
        ".Service.Name" => Field::ServiceName,
        ".Service.Labels" => Field::ServiceLabels,
        ".Node.ID" => Field::NodeId,
        ".Node.Hostname" => Field::NodeHostname,
        ".Node.Platform.OS" => Field::NodeOs,
        ".Node.Platform.Architecture" => Field::NodeArch,
        ".Task.ID" => Field::TaskId,
        ".Task.Name" => Field::TaskName,
        ".Task.Slot" => Field::TaskSlot,
        _ => match inner.strip_prefix(".Service.Labels.") {
            Some(key)
                if !key.is_empty() && key.chars().all(|c| c.is_alphanumeric() || c == '_') =>
            {
                Field::ServiceLabel(key.to_string())
            }
            _ => return Err(format!("unknown field {inner} (expected {FIELDS})")),
        },
    };
    Ok(field)
}

/// A Go string literal: `"..."` with the common escapes, or `` `...` ``.
fn string_literal(s: &str) -> Option<String> {
    if let Some(raw) = s.strip_prefix('`').and_then(|r| r.strip_suffix('`')) {
        return (!raw.contains('`')).then(|| raw.to_string());
    }
    let body = s.strip_prefix('"')?.strip_suffix('"')?;
    let mut out = String::new();
    let mut chars = body.chars();
    while let Some(c) = chars.next() {
        match c {
            '"' => return None,
            '\\' => match chars.next()? {
                '\\' => out.push('\\'),
                '"' => out.push('"'),
                'n' => out.push('\n'),
                't' => out.push('\t'),
                _ => return None,
            },
            c => out.push(c),
        }
    }
    Some(out)
}

fn value(f: &Field, ctx: &Context) -> String {
    match f {
        Field::ServiceId => ctx.service_id.clone(),
        Field::ServiceName => ctx.service_name.clone(),
        Field::ServiceLabels => go_map(&ctx.service_labels),
        Field::ServiceLabel(k) | Field::IndexServiceLabel(k) => {
            ctx.service_labels.get(k).cloned().unwrap_or_default()
        }
        Field::NodeId => ctx.node_id.clone(),
        Field::NodeHostname => ctx.node_hostname.clone(),
        Field::NodeOs => ctx.node_os.clone(),
        Field::NodeArch => ctx.node_arch.clone(),
        Field::TaskId => ctx.task_id.clone(),
        Field::TaskName => ctx.task_name.clone(),
        Field::TaskSlot => ctx.task_slot.clone(),
    }
}

/// A `map[string]string` as Go's `fmt` prints it: `map[a:1 b:2]`, keys sorted.
fn go_map(m: &BTreeMap<String, String>) -> String {
    let items: Vec<String> = m.iter().map(|(k, v)| format!("{k}:{v}")).collect();
    format!("map[{}]", items.join(" "))
}

/// Calls `f` with each templated field of `c` and its name (`task.container.env[0]`),
/// in order; the one list of what is expanded.
pub fn for_each_field(
    c: &mut ContainerSpec,
    f: &mut dyn FnMut(&str, &mut String) -> Result<()>,
) -> Result<()> {
    for (i, e) in c.env.iter_mut().enumerate() {
        // `K=V`: only the value, as SwarmKit.
        if let Some((k, v)) = e.split_once('=') {
            let (k, was, mut v) = (k.to_string(), v.to_string(), v.to_string());
            f(&format!("task.container.env[{i}]"), &mut v)?;
            if v != was {
                *e = format!("{k}={v}");
            }
        }
    }
    f("task.container.options.hostname", &mut c.options.hostname)?;
    for (k, v) in c.labels.iter_mut() {
        f(&format!("task.container.labels.{k}"), v)?;
    }
    for (i, m) in c.mounts.iter_mut().enumerate() {
        f(&format!("task.container.mounts[{i}].source"), &mut m.source)?;
        f(&format!("task.container.mounts[{i}].target"), &mut m.target)?;
    }
    Ok(())
}

/// What is wrong with `text` as a template, if anything.
pub fn problem(text: &str) -> Option<String> {
    if !is_template(text) {
        return None;
    }
    Template::parse(text).err()
}

/// Checks one field's template; `service` is the service's name and labels, for
/// `.Service.Labels.KEY` and for the most the field can grow to.
pub fn check(
    field: &str,
    text: &str,
    service: Option<(&str, &BTreeMap<String, String>)>,
) -> Result<()> {
    if !is_template(text) {
        return Ok(());
    }
    let t = Template::parse(text)
        .map_err(|why| Error::InvalidInput(format!("{field}: {text:?}: bad template: {why}")))?;
    if let Some((name, labels)) = service {
        let most = t.worst_case(name, labels);
        if most > MAX_EXPANDED {
            return Err(Error::InvalidInput(format!(
                "{field}: bad template: it may expand to {most} bytes, more than the {MAX_EXPANDED} a field may hold"
            )));
        }
        if let Some(k) = t.required_labels().find(|k| !labels.contains_key(*k)) {
            return Err(Error::InvalidInput(format!(
                "{field}: {text:?}: bad template: the service has no label {k} \
                 (use {{{{index .Service.Labels \"{k}\"}}}} for an optional one)"
            )));
        }
    }
    Ok(())
}

/// Checks every template of `spec` (at the control API's door).
pub fn check_spec(spec: &ServiceSpec) -> Result<()> {
    let mut c = spec.task.container.clone();
    for_each_field(&mut c, &mut |field, text| {
        check(field, text, Some((&spec.name, &spec.labels)))
    })
}

/// `c` with its templates expanded for `ctx`; a field whose template does not parse
/// (only a spec stored before templates were checked has one) is left as written.
pub fn expand_container(c: &mut ContainerSpec, ctx: &Context) {
    let _ = for_each_field(c, &mut |_, text| {
        if is_template(text) {
            if let Ok(t) = Template::parse(text) {
                let out = t.expand(ctx);
                // checked at the door; a spec stored before that keeps its text
                if out.len() <= MAX_EXPANDED {
                    *text = out;
                }
            }
        }
        Ok(())
    });
}

/// True if one of the fields [`for_each_field`] lists may hold a template: read only,
/// a superset (an environment entry's key counts too). A task's spec is shared by the
/// service's tasks ([`crate::store::Tasks`]); it was copied for each assignment made, to
/// look, and a busy leader spent 4% of its time on those copies.
fn may_hold_template(c: &ContainerSpec) -> bool {
    c.env.iter().any(|e| is_template(e))
        || is_template(&c.options.hostname)
        || c.labels.values().any(|v| is_template(v))
        || c.mounts
            .iter()
            .any(|m| is_template(&m.source) || is_template(&m.target))
}

/// `task` as its node runs it: its container's templates expanded (its spec copied
/// only then).
pub fn expand_task(task: &Task, service: Option<&Service>, node: Option<&Node>) -> Task {
    let mut t = task.clone();
    if may_hold_template(&task.spec.container) {
        let spec = std::sync::Arc::make_mut(&mut t.spec);
        expand_container(&mut spec.container, &Context::of(task, service, node));
    }
    t
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ctx() -> Context {
        Context {
            service_id: "svc1".into(),
            service_name: "web".into(),
            service_labels: [("b", "2"), ("a", "1")]
                .into_iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            node_id: "00000000000000aa".into(),
            node_hostname: "host-1".into(),
            node_os: "linux".into(),
            node_arch: "x86_64".into(),
            task_id: "t9".into(),
            task_name: "web.3.t9".into(),
            task_slot: "3".into(),
        }
    }

    fn run(s: &str) -> std::result::Result<String, String> {
        Template::parse(s).map(|t| t.expand(&ctx()))
    }

    #[test]
    fn every_field_expands() {
        for (t, want) in [
            ("{{.Service.ID}}", "svc1"),
            ("{{.Service.Name}}", "web"),
            ("{{.Service.Labels}}", "map[a:1 b:2]"),
            ("{{.Service.Labels.a}}", "1"),
            ("{{index .Service.Labels \"b\"}}", "2"),
            ("{{index .Service.Labels `b`}}", "2"),
            ("{{index .Service.Labels \"nope\"}}", ""),
            ("{{.Node.ID}}", "00000000000000aa"),
            ("{{.Node.Hostname}}", "host-1"),
            ("{{.Node.Platform.OS}}", "linux"),
            ("{{.Node.Platform.Architecture}}", "x86_64"),
            ("{{.Task.ID}}", "t9"),
            ("{{.Task.Name}}", "web.3.t9"),
            ("{{.Task.Slot}}", "3"),
            ("{{ .Task.Slot }}", "3"),
            ("db-{{.Task.Slot}}.{{.Node.Hostname}}", "db-3.host-1"),
            ("a {{- .Task.Slot -}} b", "a3b"),
            ("a {{.Task.Slot -}} b", "a 3b"),
            ("plain }} text", "plain }} text"),
            ("no template", "no template"),
        ] {
            assert_eq!(run(t).as_deref(), Ok(want), "{t}");
        }
        let empty = Context::default();
        assert_eq!(
            Template::parse("{{.Service.Labels}}")
                .unwrap()
                .expand(&empty),
            "map[]"
        );
    }

    #[test]
    fn bad_templates_say_what_is_wrong() {
        for (t, why) in [
            ("{{.Node.Hostname", "without a closing"),
            ("x{{", "without a closing"),
            ("{{}}", "empty action"),
            ("{{.Node.hostname}}", "unknown field .Node.hostname"),
            ("{{.Node}}", "unknown field .Node"),
            ("{{.Service.Foo}}", "unknown field .Service.Foo"),
            ("{{printf \"%s\" .Task.ID}}", "unknown field printf"),
            ("{{/* c */}}", "unknown field"),
            (
                "{{index .Node.ID \"x\"}}",
                "index works on .Service.Labels only",
            ),
            (
                "{{index .Service.Labels x}}",
                "expected index .Service.Labels",
            ),
            (
                "{{index .Service.Labels \"x}}",
                "expected index .Service.Labels",
            ),
        ] {
            let e = run(t).unwrap_err();
            assert!(e.contains(why), "{t}: {e}");
        }
    }

    #[test]
    fn check_names_the_field_and_needs_labels_that_are_named() {
        let labels: BTreeMap<String, String> = [("zone".to_string(), "a".to_string())].into();
        let svc = Some(("web", &labels));
        assert!(check("f", "{{.Service.Labels.zone}}", svc).is_ok());
        assert!(check("f", "no template {", svc).is_ok());
        let e = check("f", "{{.Service.Labels.rack}}", svc)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains(
                "f: \"{{.Service.Labels.rack}}\": bad template: the service has no label rack"
            ),
            "{e}"
        );
        let e = check("task.container.env[0]", "{{.Node.Host}}", None)
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with(
                "task.container.env[0]: \"{{.Node.Host}}\": bad template: unknown field .Node.Host"
            ),
            "{e}"
        );
        assert!(!e.contains('\n'));
    }

    #[test]
    fn env_values_labels_mount_paths_and_hostname_expand_and_nothing_else() {
        let mut c = ContainerSpec {
            image: "img{{.Task.Slot}}".into(),
            env: vec![
                "HOST={{.Node.Hostname}}".into(),
                "SLOT={{.Task.Slot}}".into(),
                "{{.Task.Slot}}=kept".into(),
                "BARE".into(),
            ],
            labels: [("k".to_string(), "{{.Service.Name}}".to_string())].into(),
            mounts: vec![super::super::Mount::new(
                super::super::MountKind::Volume,
                "data-{{.Task.Slot}}",
                "/data/{{.Node.ID}}",
            )],
            ..Default::default()
        };
        c.options.hostname = "{{.Node.Hostname}}-{{.Task.Slot}}".into();
        expand_container(&mut c, &ctx());
        assert_eq!(c.options.hostname, "host-1-3");
        assert_eq!(
            c.env,
            ["HOST=host-1", "SLOT=3", "{{.Task.Slot}}=kept", "BARE"]
        );
        assert_eq!(c.labels["k"], "web");
        assert_eq!(c.mounts[0].source, "data-3");
        assert_eq!(c.mounts[0].target, "/data/00000000000000aa");
        assert_eq!(c.image, "img{{.Task.Slot}}");
    }

    #[test]
    fn the_context_of_a_task_names_it_as_docker_does() {
        use crate::store::{NodeId, ServiceId, TaskId, TaskState, TaskStatus};
        let mut task = Task {
            id: TaskId("t1".into()),
            service_id: ServiceId("s1".into()),
            service_name: "old".into(),
            slot: 2,
            node_id: Some(NodeId(10)),
            spec_version: 1,
            spec: Default::default(),
            desired_state: TaskState::Running,
            status: TaskStatus::new(TaskState::Assigned, "", 0),
            created_ms: 0,
            vip: String::new(),
            endpoint: None,
        };
        std::sync::Arc::make_mut(&mut task.spec).container.env =
            vec!["N={{.Task.Name}}".into(), "L={{.Service.Labels}}".into()];
        let ctx = Context::of(&task, None, None);
        assert_eq!(ctx.task_name, "old.2.t1");
        assert_eq!(ctx.task_slot, "2");
        assert_eq!(ctx.node_id, NodeId(10).to_string());
        // A global task's slot is its node's id, in its name too.
        task.slot = 0;
        let ctx = Context::of(&task, None, None);
        assert_eq!(ctx.task_slot, NodeId(10).to_string());
        assert_eq!(ctx.task_name, format!("old.{}.t1", NodeId(10)));
        let expanded = expand_task(&task, None, None);
        assert_eq!(
            expanded.spec.container.env,
            [format!("N=old.{}.t1", NodeId(10)), "L=map[]".to_string()]
        );
        // Nothing to expand: the task as it is.
        std::sync::Arc::make_mut(&mut task.spec).container.env = vec!["A=1".into()];
        assert_eq!(expand_task(&task, None, None), task);
    }

    #[test]
    fn a_template_cannot_make_a_field_balloon() {
        let labels: BTreeMap<String, String> = [("k".to_string(), "v".repeat(1000))].into();
        let svc = Some(("web", &labels));
        let many = "{{.Service.Labels}}".repeat(100);
        let e = check("task.container.env[0]", &many, svc)
            .unwrap_err()
            .to_string();
        assert!(e.contains("may expand to") && e.contains("65536"), "{e}");
        // A few are fine.
        assert!(check("f", &"{{.Service.Labels}}".repeat(10), svc).is_ok());
        // A node's own report is bounded when printed.
        let mut ctx = ctx();
        ctx.node_hostname = capped(&"h".repeat(10_000), MAX_REPORTED);
        assert_eq!(run_with("{{.Node.Hostname}}", &ctx).len(), 255);
        assert_eq!(capped("aé", 2), "a");
        // Past the bound at expansion (a spec stored before the check), the text stays.
        ctx.service_labels = labels;
        let mut c = ContainerSpec {
            env: vec![format!("A={many}")],
            ..Default::default()
        };
        expand_container(&mut c, &ctx);
        assert_eq!(c.env, [format!("A={many}")]);
    }

    fn run_with(s: &str, ctx: &Context) -> String {
        Template::parse(s).unwrap().expand(ctx)
    }

    #[test]
    fn a_stored_bad_template_stays_literal() {
        let mut c = ContainerSpec {
            env: vec!["A={{.Nope}}".into(), "B={{.Task.Slot}}".into()],
            ..Default::default()
        };
        expand_container(&mut c, &ctx());
        assert_eq!(c.env, ["A={{.Nope}}", "B=3"]);
    }

    #[test]
    fn each_field_expanded_is_looked_at_before_a_tasks_spec_is_copied() {
        // One spec per field that `for_each_field` lists, that field alone templated.
        let mut plain = ContainerSpec {
            env: vec!["A=1".into()],
            labels: [("l".to_string(), "v".to_string())].into(),
            mounts: vec![super::super::Mount::new(
                super::super::MountKind::Volume,
                "v",
                "/v",
            )],
            ..Default::default()
        };
        plain.options.hostname = "h".into();
        assert!(!may_hold_template(&plain), "control: nothing templated");
        let mut fields = 0;
        let _ = for_each_field(&mut plain.clone(), &mut |_, _| {
            fields += 1;
            Ok(())
        });
        assert_eq!(fields, 5);
        for i in 0..fields {
            let mut c = plain.clone();
            let mut n = 0;
            let _ = for_each_field(&mut c, &mut |_, text| {
                if n == i {
                    *text = "{{.Task.Slot}}".into();
                }
                n += 1;
                Ok(())
            });
            assert!(may_hold_template(&c), "field {i} of {c:?}");
        }
    }
}
