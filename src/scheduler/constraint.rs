//! Placement constraints checked against one node: the matching half of
//! [`crate::store::constraint`], which parses them.

use super::NodeFacts;
use crate::store::constraint::{Condition, Constraint, ConstraintKey, Operator};
use crate::store::Node;

impl Constraint {
    /// True if `node` satisfies the constraint. `facts` are the node's live facts, if the
    /// leader has heard them; without them a `node.facts.*` constraint never matches. An
    /// invalid constraint (stored by an older version) never matches.
    pub fn matches(&self, node: &Node, facts: Option<&NodeFacts>) -> bool {
        match self {
            Constraint::Valid(c) => c.matches(node, facts),
            Constraint::Invalid { .. } => false,
        }
    }
}

impl Condition {
    /// True if `node` satisfies the condition (see [`Constraint::matches`]).
    pub fn matches(&self, node: &Node, facts: Option<&NodeFacts>) -> bool {
        let actual: String = match &self.key {
            ConstraintKey::NodeId => node.id.to_string(),
            ConstraintKey::Hostname => node.description.hostname.clone(),
            ConstraintKey::Role => node.role.as_str().to_string(),
            ConstraintKey::NodeLabel(name) => node.labels.get(name).cloned().unwrap_or_default(),
            ConstraintKey::Os => node.description.os.clone(),
            ConstraintKey::Arch => node.description.arch.clone(),
            ConstraintKey::EngineLabel(name) => node
                .description
                .engine_labels
                .get(name)
                .cloned()
                .unwrap_or_default(),
            ConstraintKey::Load1 | ConstraintKey::MemFree | ConstraintKey::Cpus => {
                let (Some(facts), Some(wanted)) = (facts, self.number) else {
                    return false;
                };
                let actual = match self.key {
                    ConstraintKey::Load1 => facts.load1,
                    ConstraintKey::MemFree => facts.mem_free_bytes as f64,
                    _ => f64::from(facts.cpus),
                };
                return self.op.compare(actual, wanted);
            }
        };
        let equal = if self.key == ConstraintKey::Arch {
            canonical_arch(&actual) == canonical_arch(&self.value)
        } else {
            actual.eq_ignore_ascii_case(&self.value)
        };
        match self.op {
            Operator::Eq => equal,
            Operator::Ne => !equal,
            // Refused by `parse` on text keys.
            _ => false,
        }
    }
}

/// The one name of an architecture that goes by several (`amd64` is `x86_64`).
fn canonical_arch(arch: &str) -> String {
    let arch = arch.to_ascii_lowercase();
    match arch.as_str() {
        "amd64" | "x86-64" => "x86_64".into(),
        "arm64" => "aarch64".into(),
        _ => arch,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::Error;
    use crate::store::constraint::parse_bytes;
    use crate::store::{NodeDescription, NodeId, NodeStatus, Role};

    fn node() -> Node {
        Node {
            labels: [("zone".to_string(), "a".to_string())].into(),
            status: NodeStatus::Ready,
            ..Node::new(
                NodeId(0xab),
                "10.0.0.1:4242",
                Role::Worker,
                NodeDescription {
                    hostname: "alpha".into(),
                    cpus: 4,
                    memory_bytes: 8 << 30,
                    os: "linux".into(),
                    arch: "x86_64".into(),
                    engine_version: "27.0".into(),
                    engine_labels: [("disk".to_string(), "ssd".to_string())].into(),
                    data_port: Default::default(),
                    generic_resources: Default::default(),
                },
                0,
            )
        }
    }

    const FACTS: NodeFacts = NodeFacts {
        load1: 1.5,
        mem_free_bytes: 3 << 30,
        cpus: 4,
    };

    #[test]
    fn matches_each_key_and_operator() {
        let n = node();
        let cases: &[(&str, bool)] = &[
            ("node.id==00000000000000ab", true),
            ("node.id==00000000000000AB", true),
            ("node.id!=00000000000000ab", false),
            ("node.hostname==alpha", true),
            ("node.hostname == 'Alpha'", true),
            ("node.hostname!=beta", true),
            ("node.role==worker", true),
            ("node.role==manager", false),
            ("node.role!=manager", true),
            ("node.labels.zone==a", true),
            ("node.labels.zone==\"a\"", true),
            ("node.labels.zone!=a", false),
            ("node.labels.zone==b", false),
            ("node.labels.rack==r1", false),
            ("node.labels.rack!=r1", true),
            ("node.labels.zone!=\"\"", true),
            ("node.labels.rack!=\"\"", false),
            ("node.platform.os==linux", true),
            ("node.platform.os!=windows", true),
            ("node.platform.arch==x86_64", true),
            ("node.platform.arch==amd64", true),
            ("node.platform.arch==aarch64", false),
            ("engine.labels.disk==ssd", true),
            ("engine.labels.disk!=ssd", false),
            ("NODE.LABELS.zone==a", true),
            ("node.labels.ZONE==a", false),
            ("node.facts.load1<2", true),
            ("node.facts.load1<1.5", false),
            ("node.facts.load1<=1.5", true),
            ("node.facts.load1>1", true),
            ("node.facts.load1>=2", false),
            ("node.facts.load1==1.5", true),
            ("node.facts.load1!=1.5", false),
            ("node.facts.mem_free>=1G", true),
            ("node.facts.mem_free>=3G", true),
            ("node.facts.mem_free>3G", false),
            ("node.facts.mem_free<4096M", true),
            ("node.facts.mem_free>512m", true),
            ("node.facts.cpus>=4", true),
            ("node.facts.cpus>4", false),
            ("node.facts.cpus==4", true),
        ];
        for (text, want) in cases {
            let c = Condition::parse(text).unwrap_or_else(|e| panic!("{text}: {e}"));
            assert_eq!(c.matches(&n, Some(&FACTS)), *want, "{text}");
        }
    }

    #[test]
    fn without_facts_no_facts_constraint_matches() {
        let n = node();
        for text in [
            "node.facts.load1<2",
            "node.facts.load1!=100",
            "node.facts.mem_free>=0",
            "node.facts.cpus>=0",
        ] {
            let c = Condition::parse(text).unwrap();
            assert!(!c.matches(&n, None), "{text}");
            assert!(c.matches(&n, Some(&FACTS)), "{text}");
        }
        // Facts do not matter to the other keys.
        let c = Condition::parse("node.labels.zone==a").unwrap();
        assert!(c.matches(&n, None));
    }

    #[test]
    fn parse_errors_name_the_field_and_the_text() {
        let cases: &[(&str, &str)] = &[
            (
                "node.labels.zone=a",
                r#"task.placement.constraints[0]: "node.labels.zone=a": expected KEY==VALUE, KEY!=VALUE, or a comparison <,<=,>,>= on node.facts.*"#,
            ),
            (
                "",
                r#"task.placement.constraints[0]: "": expected KEY==VALUE, KEY!=VALUE, or a comparison <,<=,>,>= on node.facts.*"#,
            ),
            (
                "node.labels.zone",
                r#"task.placement.constraints[0]: "node.labels.zone": expected KEY==VALUE, KEY!=VALUE, or a comparison <,<=,>,>= on node.facts.*"#,
            ),
            (
                "==a",
                r#"task.placement.constraints[0]: "==a": expected KEY==VALUE, KEY!=VALUE, or a comparison <,<=,>,>= on node.facts.*"#,
            ),
            (
                "node.labels.zone===a",
                r#"task.placement.constraints[0]: "node.labels.zone===a": expected KEY==VALUE, KEY!=VALUE, or a comparison <,<=,>,>= on node.facts.*"#,
            ),
            (
                "node.labels.zone!a",
                r#"task.placement.constraints[0]: "node.labels.zone!a": expected KEY==VALUE, KEY!=VALUE, or a comparison <,<=,>,>= on node.facts.*"#,
            ),
            (
                "node.name==a",
                r#"task.placement.constraints[0]: "node.name==a": unknown key node.name (expected node.id, node.hostname, node.role, node.labels.NAME, node.platform.os, node.platform.arch, engine.labels.NAME, node.facts.load1, node.facts.mem_free or node.facts.cpus)"#,
            ),
            (
                "node.labels.==a",
                r#"task.placement.constraints[0]: "node.labels.==a": expected a label name after node.labels."#,
            ),
            (
                "node.hostname==",
                r#"task.placement.constraints[0]: "node.hostname==": expected a value after =="#,
            ),
            (
                "node.hostname<b",
                r#"task.placement.constraints[0]: "node.hostname<b": < compares numbers: use it on node.facts.load1, node.facts.mem_free or node.facts.cpus, or use == or != on node.hostname"#,
            ),
            (
                "node.facts.load1<high",
                r#"task.placement.constraints[0]: "node.facts.load1<high": node.facts.load1: expected a number of 0 or more, found "high""#,
            ),
            (
                "node.facts.cpus>=-1",
                r#"task.placement.constraints[0]: "node.facts.cpus>=-1": node.facts.cpus: expected a number of 0 or more, found "-1""#,
            ),
            (
                "node.facts.mem_free>=lots",
                r#"task.placement.constraints[0]: "node.facts.mem_free>=lots": node.facts.mem_free: expected a size such as 512M or 2G, found "lots""#,
            ),
            (
                "node.facts.mem_free>=2X",
                r#"task.placement.constraints[0]: "node.facts.mem_free>=2X": node.facts.mem_free: expected a size such as 512M or 2G, found "2X""#,
            ),
            (
                "node.role==boss",
                r#"task.placement.constraints[0]: "node.role==boss": node.role: expected manager or worker, found "boss""#,
            ),
            (
                "node.labels.zone==\"a",
                r#"task.placement.constraints[0]: "node.labels.zone==\"a": unbalanced " in the value "a"#,
            ),
        ];
        for (text, want) in cases {
            match Constraint::parse("task.placement.constraints[0]", text) {
                Err(Error::InvalidInput(got)) => assert_eq!(&got, want, "{text}"),
                other => panic!("{text}: expected InvalidInput, got {other:?}"),
            }
        }
    }

    #[test]
    fn parse_reads_keys_operators_and_values() {
        let c = Condition::parse("  node.labels.zone  !=  \"eu west\" ").unwrap();
        assert_eq!(c.key, ConstraintKey::NodeLabel("zone".into()));
        assert_eq!(c.op, Operator::Ne);
        assert_eq!(c.value, "eu west");
        assert_eq!(c.to_string(), r#"node.labels.zone!="eu west""#);
        let c = Condition::parse("node.facts.mem_free>=1.5G").unwrap();
        assert_eq!(c.key, ConstraintKey::MemFree);
        assert_eq!(c.op, Operator::Ge);
        assert_eq!(c.number, Some(1.5 * (1u64 << 30) as f64));
        assert_eq!(c.to_string(), "node.facts.mem_free>=1.5G");
        let c = Condition::parse("engine.labels.a.b==x=y").unwrap();
        assert_eq!(c.key, ConstraintKey::EngineLabel("a.b".into()));
        assert_eq!(c.value, "x=y");
        assert_eq!(c.to_string(), r#"engine.labels.a.b=="x=y""#);
    }

    #[test]
    fn byte_sizes() {
        let cases: &[(&str, Option<f64>)] = &[
            ("0", Some(0.0)),
            ("1024", Some(1024.0)),
            ("1b", Some(1.0)),
            ("2k", Some(2048.0)),
            ("512M", Some(512.0 * 1048576.0)),
            ("512MiB", Some(512.0 * 1048576.0)),
            ("2G", Some(2.0 * 1073741824.0)),
            ("2gb", Some(2.0 * 1073741824.0)),
            ("1T", Some(1099511627776.0)),
            ("0.5G", Some(536870912.0)),
            ("", None),
            ("G", None),
            ("2X", None),
            ("1.2.3M", None),
        ];
        for (text, want) in cases {
            assert_eq!(parse_bytes(text), *want, "{text}");
        }
    }
}
