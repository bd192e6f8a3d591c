//! Placement constraints (`KEY OP VALUE`, checked against one node) and placement
//! preferences (`spread=node.labels.zone`), parsed.
//!
//! A constraint is parsed once, where it comes in: from the CLI's `--constraint`, a
//! compose file's `deploy.placement.constraints`, or the wire (`Placement.constraints`
//! is `repeated string`, read in `crate::proto::convert`). A spec holds it parsed
//! ([`Constraint`]), and the scheduler only checks the parsed form against each node
//! (`Constraint::matches`, in `crate::scheduler`: the parsed form lives here, with the
//! specs that carry it, so that the store and the stack loader need not import the
//! scheduler).
//!
//! A constraint is stored, serialised and sent as the text the operator wrote, so the
//! state on disk and `orc service inspect --format json` keep the same strings. Reading
//! that text never fails: text that does not parse becomes [`Constraint::Invalid`],
//! with the reason. `ServiceSpec::validate` refuses it at the control API's door, naming
//! the field (`task.placement.constraints[0]: "node.labels.zone=a": expected ...`), so
//! only a spec stored by an older version, whose grammar was looser, can hold one; there
//! it never matches, and the scheduler leaves the service's tasks pending with the
//! reason.
//!
//! | key | compares | operators |
//! |---|---|---|
//! | `node.id` | the node id, 16 hex digits | `==` `!=` |
//! | `node.hostname` | the host name the node reported | `==` `!=` |
//! | `node.role` | `manager` or `worker` | `==` `!=` |
//! | `node.labels.NAME` | an operator label (`orc node update --label-add`) | `==` `!=` |
//! | `node.platform.os` | the OS the node reported (`linux`) | `==` `!=` |
//! | `node.platform.arch` | the architecture (`x86_64`, alias `amd64`) | `==` `!=` |
//! | `engine.labels.NAME` | a Docker engine label | `==` `!=` |
//! | `node.facts.load1` | the 1-minute load average | `==` `!=` `<` `<=` `>` `>=` |
//! | `node.facts.mem_free` | free memory; the value is a size: `512M`, `2G` | all six |
//! | `node.facts.cpus` | logical CPUs | all six |
//!
//! Text comparisons ignore ASCII case, as in Swarm; a missing label compares as the
//! empty string, so `node.labels.zone!=a` holds on a node without a `zone` label, and
//! `node.labels.zone!=""` means "has a non-empty zone label". The value may be quoted
//! with `"` or `'`. The `node.facts.*` keys compare numbers against the live facts a
//! node sends with its heartbeat; a node whose facts the leader has not heard does not
//! match any of them, whatever the operator.
//!
//! A placement preference ([`Preference`]) is the path after `spread=`:
//! `node.labels.NAME`, `engine.labels.NAME`, or an attribute of the node (`node.id`,
//! `node.hostname`, `node.role`, `node.platform.os`, `node.platform.arch`). It is read the same way: once, where it
//! comes in, stored as its text, and [`Preference::Invalid`] for text an older version
//! stored that this one does not read (refused in a new spec; it groups every node as
//! unlabelled).

use std::fmt;

use crate::error::{Error, Result};

/// The shape every constraint must have; quoted by parse errors.
const EXPECTED: &str = "expected KEY==VALUE, KEY!=VALUE, or a comparison <,<=,>,>= on node.facts.*";

/// The keys a constraint may name; quoted by parse errors.
const KEYS: &str = "node.id, node.hostname, node.role, node.labels.NAME, node.platform.os, \
                    node.platform.arch, engine.labels.NAME, node.facts.load1, \
                    node.facts.mem_free or node.facts.cpus";

/// What a constraint looks at on a node.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum ConstraintKey {
    /// `node.id`: the node's id, 16 hex digits.
    NodeId,
    /// `node.hostname`: the host name in the node's description.
    Hostname,
    /// `node.role`: `manager` or `worker`.
    Role,
    /// `node.labels.NAME`: an operator label of the node (the name keeps its case).
    NodeLabel(String),
    /// `node.platform.os`: the operating system in the node's description.
    Os,
    /// `node.platform.arch`: the architecture in the node's description.
    Arch,
    /// `engine.labels.NAME`: a label of the node's Docker engine.
    EngineLabel(String),
    /// `node.facts.load1`: the live 1-minute load average.
    Load1,
    /// `node.facts.mem_free`: the live free memory, bytes.
    MemFree,
    /// `node.facts.cpus`: the live count of logical CPUs.
    Cpus,
}

impl ConstraintKey {
    /// True for the `node.facts.*` keys, which compare numbers.
    pub fn is_fact(&self) -> bool {
        matches!(
            self,
            ConstraintKey::Load1 | ConstraintKey::MemFree | ConstraintKey::Cpus
        )
    }

    /// Parses a key; the fixed parts ignore ASCII case, label names keep theirs.
    fn parse(text: &str) -> std::result::Result<ConstraintKey, String> {
        let fixed = [
            ("node.id", ConstraintKey::NodeId),
            ("node.hostname", ConstraintKey::Hostname),
            ("node.role", ConstraintKey::Role),
            ("node.platform.os", ConstraintKey::Os),
            ("node.platform.arch", ConstraintKey::Arch),
            ("node.facts.load1", ConstraintKey::Load1),
            ("node.facts.mem_free", ConstraintKey::MemFree),
            ("node.facts.cpus", ConstraintKey::Cpus),
        ];
        for (name, key) in fixed {
            if text.eq_ignore_ascii_case(name) {
                return Ok(key);
            }
        }
        for (prefix, of_engine) in [("node.labels.", false), ("engine.labels.", true)] {
            let head = text.get(..prefix.len());
            if head.is_some_and(|h| h.eq_ignore_ascii_case(prefix)) {
                let name = text[prefix.len()..].to_string();
                if name.is_empty() || name.chars().any(char::is_whitespace) {
                    return Err(format!("expected a label name after {prefix}"));
                }
                return Ok(if of_engine {
                    ConstraintKey::EngineLabel(name)
                } else {
                    ConstraintKey::NodeLabel(name)
                });
            }
        }
        Err(format!("unknown key {text} (expected {KEYS})"))
    }
}

impl fmt::Display for ConstraintKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConstraintKey::NodeId => f.write_str("node.id"),
            ConstraintKey::Hostname => f.write_str("node.hostname"),
            ConstraintKey::Role => f.write_str("node.role"),
            ConstraintKey::NodeLabel(name) => write!(f, "node.labels.{name}"),
            ConstraintKey::Os => f.write_str("node.platform.os"),
            ConstraintKey::Arch => f.write_str("node.platform.arch"),
            ConstraintKey::EngineLabel(name) => write!(f, "engine.labels.{name}"),
            ConstraintKey::Load1 => f.write_str("node.facts.load1"),
            ConstraintKey::MemFree => f.write_str("node.facts.mem_free"),
            ConstraintKey::Cpus => f.write_str("node.facts.cpus"),
        }
    }
}

/// How the node's value is compared with the constraint's.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Operator {
    /// `==`
    Eq,
    /// `!=`
    Ne,
    /// `<` (facts only)
    Lt,
    /// `<=` (facts only)
    Le,
    /// `>` (facts only)
    Gt,
    /// `>=` (facts only)
    Ge,
}

impl Operator {
    /// The operator as written.
    pub fn as_str(&self) -> &'static str {
        match self {
            Operator::Eq => "==",
            Operator::Ne => "!=",
            Operator::Lt => "<",
            Operator::Le => "<=",
            Operator::Gt => ">",
            Operator::Ge => ">=",
        }
    }

    /// Reads the operator at the start of `s`; returns it and its length.
    fn lex(s: &str) -> Option<(Operator, usize)> {
        // Two-character operators first, so that `<=` is not read as `<`.
        let all = [
            ("==", Operator::Eq),
            ("!=", Operator::Ne),
            ("<=", Operator::Le),
            (">=", Operator::Ge),
            ("<", Operator::Lt),
            (">", Operator::Gt),
        ];
        all.into_iter()
            .find(|(text, _)| s.starts_with(text))
            .map(|(text, op)| (op, text.len()))
    }

    /// Compares two numbers.
    pub(crate) fn compare(&self, actual: f64, wanted: f64) -> bool {
        match self {
            Operator::Eq => actual == wanted,
            Operator::Ne => actual != wanted,
            Operator::Lt => actual < wanted,
            Operator::Le => actual <= wanted,
            Operator::Gt => actual > wanted,
            Operator::Ge => actual >= wanted,
        }
    }
}

impl fmt::Display for Operator {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A placement constraint as a spec holds it: parsed, or text that does not parse.
///
/// Serialised as the text the operator wrote. Two constraints are equal when their
/// texts are (as the strings a spec held before were), whatever their canonical forms.
#[derive(Debug, Clone)]
pub enum Constraint {
    /// A constraint that parsed.
    Valid(Condition),
    /// Text that does not parse, kept as written: only a spec stored by an older version
    /// holds one (the control API refuses it in a new spec). It never matches a node.
    Invalid {
        /// The text as written.
        text: String,
        /// Why it does not parse (`expected KEY==VALUE, ...`).
        why: String,
    },
}

impl Constraint {
    /// Reads `text`; never fails: text that does not parse is [`Constraint::Invalid`],
    /// which [`Constraint::check`] refuses.
    pub fn read(text: &str) -> Constraint {
        match Condition::parse(text) {
            Ok(c) => Constraint::Valid(c),
            Err(why) => Constraint::Invalid {
                text: text.to_string(),
                why,
            },
        }
    }

    /// Parses `text`, the constraint at `field`; an error is [`Error::InvalidInput`]
    /// naming the field and the text (`FIELD: "TEXT": why`).
    pub fn parse(field: &str, text: &str) -> Result<Constraint> {
        let c = Constraint::read(text);
        c.check(field)?;
        Ok(c)
    }

    /// The text as written.
    pub fn text(&self) -> &str {
        match self {
            Constraint::Valid(c) => &c.raw,
            Constraint::Invalid { text, .. } => text,
        }
    }

    /// Why the text does not parse, if it does not.
    pub fn why(&self) -> Option<&str> {
        match self {
            Constraint::Valid(_) => None,
            Constraint::Invalid { why, .. } => Some(why),
        }
    }

    /// Refuses an invalid constraint with [`Error::InvalidInput`] naming `field`:
    /// `task.placement.constraints[0]: "node.labels.zone=a": expected ...`.
    pub fn check(&self, field: &str) -> Result<()> {
        match self {
            Constraint::Valid(_) => Ok(()),
            Constraint::Invalid { text, why } => {
                Err(Error::InvalidInput(format!("{field}: {text:?}: {why}")))
            }
        }
    }
}

impl PartialEq for Constraint {
    fn eq(&self, other: &Constraint) -> bool {
        self.text() == other.text()
    }
}

impl Eq for Constraint {}

impl From<&str> for Constraint {
    fn from(text: &str) -> Constraint {
        Constraint::read(text)
    }
}

impl From<String> for Constraint {
    fn from(text: String) -> Constraint {
        Constraint::read(&text)
    }
}

impl From<Constraint> for String {
    fn from(c: Constraint) -> String {
        match c {
            Constraint::Valid(c) => c.raw,
            Constraint::Invalid { text, .. } => text,
        }
    }
}

impl serde::Serialize for Constraint {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.serialize_str(self.text())
    }
}

impl<'de> serde::Deserialize<'de> for Constraint {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        String::deserialize(d).map(Constraint::from)
    }
}

/// The canonical form of a valid constraint ([`Condition`]'s); an invalid one's text.
impl fmt::Display for Constraint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Constraint::Valid(c) => c.fmt(f),
            Constraint::Invalid { text, .. } => f.write_str(text),
        }
    }
}

/// A parsed placement constraint such as `node.labels.zone==a` or `node.facts.load1<2`.
#[derive(Debug, Clone, PartialEq)]
pub struct Condition {
    /// The text as the operator wrote it.
    pub raw: String,
    /// What it looks at.
    pub key: ConstraintKey,
    /// How it compares.
    pub op: Operator,
    /// The value, without its quotes.
    pub value: String,
    /// The value as a number, for the `node.facts.*` keys (bytes for `mem_free`).
    pub(crate) number: Option<f64>,
}

impl Condition {
    /// Parses `KEY==VALUE`, `KEY!=VALUE` or, on `node.facts.*`, a comparison `<`, `<=`,
    /// `>`, `>=`. The error is the reason alone; [`Constraint::check`] names the field.
    pub fn parse(s: &str) -> std::result::Result<Condition, String> {
        let fail = |why: &str| why.to_string();
        let Some(at) = s.find(['=', '!', '<', '>']) else {
            return Err(fail(EXPECTED));
        };
        let key_text = s[..at].trim();
        let Some((op, len)) = Operator::lex(&s[at..]) else {
            return Err(fail(EXPECTED));
        };
        let value_text = s[at + len..].trim();
        if key_text.is_empty() || value_text.starts_with(['=', '!', '<', '>']) {
            return Err(fail(EXPECTED));
        }
        let key = ConstraintKey::parse(key_text)?;
        if value_text.is_empty() {
            return Err(fail(&format!("expected a value after {op}")));
        }
        let value = unquote(value_text)?;
        if !key.is_fact() && !matches!(op, Operator::Eq | Operator::Ne) {
            return Err(fail(&format!(
                "{op} compares numbers: use it on node.facts.load1, node.facts.mem_free \
                 or node.facts.cpus, or use == or != on {key}"
            )));
        }
        let number = match key {
            ConstraintKey::Load1 | ConstraintKey::Cpus => Some(
                value
                    .parse::<f64>()
                    .ok()
                    .filter(|n| n.is_finite() && *n >= 0.0)
                    .ok_or_else(|| {
                        fail(&format!(
                            "{key}: expected a number of 0 or more, found {value:?}"
                        ))
                    })?,
            ),
            ConstraintKey::MemFree => Some(parse_bytes(&value).ok_or_else(|| {
                fail(&format!(
                    "{key}: expected a size such as 512M or 2G, found {value:?}"
                ))
            })?),
            _ => None,
        };
        if key == ConstraintKey::Role
            && !value.eq_ignore_ascii_case("manager")
            && !value.eq_ignore_ascii_case("worker")
        {
            return Err(fail(&format!(
                "node.role: expected manager or worker, found {value:?}"
            )));
        }
        Ok(Condition {
            raw: s.to_string(),
            key,
            op,
            value,
            number,
        })
    }
}

/// The canonical form: `node.labels.zone==a`, the value quoted when it needs quotes.
impl fmt::Display for Condition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let plain = !self.value.is_empty()
            && !self
                .value
                .chars()
                .any(|c| c.is_whitespace() || "\"'=!<>".contains(c));
        if plain {
            write!(f, "{}{}{}", self.key, self.op, self.value)
        } else {
            write!(f, "{}{}{:?}", self.key, self.op, self.value)
        }
    }
}

/// A placement preference: spread the service's tasks evenly over the values of a
/// label (`spread=node.labels.zone`, stored as `node.labels.zone`) or of an attribute
/// of the node (`spread=node.id`: one group per node). Serialised as that text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Preference {
    /// `node.labels.NAME`: an operator label of the node.
    NodeLabel(String),
    /// `engine.labels.NAME`: a label of the node's Docker engine.
    EngineLabel(String),
    /// Text that is none of these, kept as written: only a spec stored by an older
    /// version holds one (the control API refuses it in a new spec).
    Invalid(String),
    /// `node.id`, `node.hostname`, `node.role`, `node.platform.os` or
    /// `node.platform.arch` (the fixed part in any case, as in constraints); never one
    /// of the live `node.facts.*`, which are no grouping.
    Attribute(ConstraintKey),
}

/// What a preference may name; quoted by refusals.
pub const PREFERENCES: &str = "node.labels.NAME, engine.labels.NAME, node.id, node.hostname, \
                               node.role, node.platform.os or node.platform.arch";

impl Preference {
    /// Reads the label path (without `spread=`); never fails: other text is
    /// [`Preference::Invalid`].
    pub fn read(text: &str) -> Preference {
        if let Some(name) = text.strip_prefix("node.labels.") {
            Preference::NodeLabel(name.to_string())
        } else if let Some(name) = text.strip_prefix("engine.labels.") {
            Preference::EngineLabel(name.to_string())
        } else {
            match ConstraintKey::parse(text) {
                Ok(
                    key @ (ConstraintKey::NodeId
                    | ConstraintKey::Hostname
                    | ConstraintKey::Role
                    | ConstraintKey::Os
                    | ConstraintKey::Arch),
                ) => Preference::Attribute(key),
                _ => Preference::Invalid(text.to_string()),
            }
        }
    }

    /// True unless [`Preference::Invalid`].
    pub fn is_valid(&self) -> bool {
        !matches!(self, Preference::Invalid(_))
    }
}

/// The label path: `node.labels.zone`.
impl fmt::Display for Preference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Preference::NodeLabel(name) => write!(f, "node.labels.{name}"),
            Preference::EngineLabel(name) => write!(f, "engine.labels.{name}"),
            Preference::Invalid(text) => f.write_str(text),
            Preference::Attribute(key) => write!(f, "{key}"),
        }
    }
}

impl PartialEq<&str> for Preference {
    fn eq(&self, other: &&str) -> bool {
        match self {
            Preference::NodeLabel(name) => other.strip_prefix("node.labels.") == Some(name),
            Preference::EngineLabel(name) => other.strip_prefix("engine.labels.") == Some(name),
            Preference::Invalid(text) => text == other,
            Preference::Attribute(key) => key.to_string() == *other,
        }
    }
}

impl From<&str> for Preference {
    fn from(text: &str) -> Preference {
        Preference::read(text)
    }
}

impl From<String> for Preference {
    fn from(text: String) -> Preference {
        Preference::read(&text)
    }
}

impl From<Preference> for String {
    fn from(p: Preference) -> String {
        p.to_string()
    }
}

impl serde::Serialize for Preference {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for Preference {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        String::deserialize(d).map(Preference::from)
    }
}

/// Strips one pair of matching quotes (`"` or `'`) around the value; a quote that opens
/// or closes the value without its partner is an error.
fn unquote(text: &str) -> std::result::Result<String, String> {
    for q in ['"', '\''] {
        let opens = text.starts_with(q);
        let closes = text.len() >= 2 && text.ends_with(q);
        if opens && closes {
            return Ok(text[1..text.len() - 1].to_string());
        }
        if opens || text.ends_with(q) {
            return Err(format!("unbalanced {q} in the value {text}"));
        }
    }
    Ok(text.to_string())
}

/// Parses a byte size ([`crate::units::bytes`]). Returns bytes.
pub(crate) fn parse_bytes(text: &str) -> Option<f64> {
    crate::units::bytes(text)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::service::Placement;

    #[test]
    fn stored_as_the_text_written_and_read_back_parsed() {
        let p = Placement {
            constraints: vec!["node.labels.zone == a".into(), "node.facts.cpus>=2".into()],
            ..Placement::default()
        };
        let json = serde_json::to_value(&p).expect("serialises");
        assert_eq!(
            json["constraints"],
            serde_json::json!(["node.labels.zone == a", "node.facts.cpus>=2"])
        );
        let back: Placement = serde_json::from_value(json).expect("deserialises");
        assert_eq!(back, p);
        let Constraint::Valid(c) = &back.constraints[0] else {
            panic!("parsed: {:?}", back.constraints[0]);
        };
        assert_eq!(c.key, ConstraintKey::NodeLabel("zone".into()));
        assert_eq!(c.value, "a");
        // Shown in its canonical form, stored as written.
        assert_eq!(back.constraints[0].to_string(), "node.labels.zone==a");
        assert_eq!(back.constraints[0].text(), "node.labels.zone == a");
    }

    #[test]
    fn old_data_with_a_constraint_that_no_longer_parses_still_loads() {
        let old = r#"{"constraints":["node.labels.zone=a","node.role==worker"],
                      "preferences":[],"max_replicas_per_node":0}"#;
        let p: Placement = serde_json::from_str(old).expect("loads");
        assert_eq!(
            p.constraints[0],
            Constraint::Invalid {
                text: "node.labels.zone=a".into(),
                why: EXPECTED.into(),
            }
        );
        assert_eq!(p.constraints[0].why(), Some(EXPECTED));
        assert!(matches!(p.constraints[1], Constraint::Valid(_)));
        // Written back unchanged.
        let again = serde_json::to_value(&p).expect("serialises");
        assert_eq!(
            again["constraints"],
            serde_json::json!(["node.labels.zone=a", "node.role==worker"])
        );
        // Refused where a new spec comes in, naming the field; a good one passes.
        let e = p.constraints[0]
            .check("task.placement.constraints[0]")
            .expect_err("refused");
        assert_eq!(
            e.to_string(),
            format!("task.placement.constraints[0]: \"node.labels.zone=a\": {EXPECTED}")
        );
        assert!(p.constraints[1]
            .check("task.placement.constraints[1]")
            .is_ok());
    }

    #[test]
    fn preferences_are_stored_as_their_label_path_and_read_back_parsed() {
        let old = r#"{"constraints":[],"preferences":["node.labels.zone","engine.labels.disk","zone"],
                      "max_replicas_per_node":0}"#;
        let p: Placement = serde_json::from_str(old).expect("loads");
        assert_eq!(
            p.preferences,
            [
                Preference::NodeLabel("zone".into()),
                Preference::EngineLabel("disk".into()),
                Preference::Invalid("zone".into()),
            ]
        );
        assert_eq!(
            p.preferences,
            ["node.labels.zone", "engine.labels.disk", "zone"]
        );
        let again = serde_json::to_value(&p).expect("serialises");
        assert_eq!(
            again["preferences"],
            serde_json::json!(["node.labels.zone", "engine.labels.disk", "zone"])
        );
        assert!(p.preferences[0].is_valid() && !p.preferences[2].is_valid());
    }
}
