//! Several `-c` files merged with compose's override rules, and the list forms of
//! mappings turned into mappings first (so that they merge key by key).
//!
//! Mappings merge key by key, the later file winning. Sequences: `command`,
//! `entrypoint` and `healthcheck.test` are replaced; a service's `volumes` merge by
//! target path; other sequences (ports, expose, env_file, constraints, ...) are
//! appended, without repeating an equal entry. Scalars are replaced.

use super::yaml::{Key, Node, Value};

/// Turns `environment`, `labels`, `deploy.labels` lists (`K=V`, `K`), `depends_on` and
/// `networks` lists into mappings, in every service of `doc`; and the `labels` lists
/// of the top-level networks.
pub fn normalize(doc: &mut Node) {
    let Value::Map(top) = &mut doc.value else {
        return;
    };
    if let Some((
        _,
        Node {
            value: Value::Map(nets),
            ..
        },
    )) = top.iter_mut().find(|(k, _)| k.name == "networks")
    {
        for (_, net) in nets.iter_mut() {
            if let Value::Map(fields) = &mut net.value {
                for (k, v) in fields.iter_mut() {
                    if k.name == "labels" {
                        list_to_map(v);
                    }
                }
            }
        }
    }
    let Some((_, services)) = top.iter_mut().find(|(k, _)| k.name == "services") else {
        return;
    };
    let Value::Map(services) = &mut services.value else {
        return;
    };
    for (_, svc) in services.iter_mut() {
        let Value::Map(fields) = &mut svc.value else {
            continue;
        };
        for (k, v) in fields.iter_mut() {
            match k.name.as_str() {
                "environment" | "labels" => list_to_map(v),
                "depends_on" => depends_list_to_map(v),
                "networks" => names_to_map(v),
                "deploy" => {
                    if let Value::Map(d) = &mut v.value {
                        for (k, v) in d.iter_mut() {
                            if k.name == "labels" {
                                list_to_map(v);
                            }
                        }
                    }
                }
                _ => {}
            }
        }
    }
}

fn list_to_map(n: &mut Node) {
    let Value::Seq(items) = &n.value else {
        return;
    };
    let mut m: Vec<(Key, Node)> = vec![];
    for it in items {
        let Some(text) = it.scalar_text() else {
            return; // left as is: the converter names the bad entry
        };
        let (k, v) = match text.split_once('=') {
            Some((k, v)) => (k.to_string(), Value::Str(v.to_string())),
            None => (text.clone(), Value::Null),
        };
        let entry = (
            Key {
                name: k,
                pos: it.pos.clone(),
            },
            Node::new(v, it.pos.clone()),
        );
        match m.iter_mut().find(|(x, _)| x.name == entry.0.name) {
            Some(slot) => *slot = entry,
            None => m.push(entry),
        }
    }
    n.value = Value::Map(m);
}

/// `[a, b]` → `{a: null, b: null}` (a service's `networks:` list); a list with anything
/// but strings is left as is, for the converter to name.
fn names_to_map(n: &mut Node) {
    let Value::Seq(items) = &n.value else {
        return;
    };
    let mut m: Vec<(Key, Node)> = vec![];
    for it in items {
        let Value::Str(name) = &it.value else {
            return;
        };
        if !m.iter().any(|(k, _)| &k.name == name) {
            let key = Key {
                name: name.clone(),
                pos: it.pos.clone(),
            };
            m.push((key, Node::new(Value::Null, it.pos.clone())));
        }
    }
    n.value = Value::Map(m);
}

fn depends_list_to_map(n: &mut Node) {
    let Value::Seq(items) = &n.value else {
        return;
    };
    let mut m: Vec<(Key, Node)> = vec![];
    for it in items {
        let Value::Str(name) = &it.value else {
            return;
        };
        let cond = Node::new(
            Value::Map(vec![(
                Key {
                    name: "condition".into(),
                    pos: it.pos.clone(),
                },
                Node::new(Value::Str("service_started".into()), it.pos.clone()),
            )]),
            it.pos.clone(),
        );
        if !m.iter().any(|(k, _)| &k.name == name) {
            m.push((
                Key {
                    name: name.clone(),
                    pos: it.pos.clone(),
                },
                cond,
            ));
        }
    }
    n.value = Value::Map(m);
}

/// `over` merged onto `base`; `path` is where they are (`services`, `web`, ...).
pub fn merge(base: Node, over: Node, path: &mut Vec<String>) -> Node {
    match (base.value, over.value) {
        (Value::Map(mut b), Value::Map(o)) => {
            for (k, v) in o {
                match b.iter().position(|(x, _)| x.name == k.name) {
                    Some(i) => {
                        let old = b[i].1.clone();
                        path.push(k.name.clone());
                        let merged = merge(old, v, path);
                        path.pop();
                        b[i] = (k, merged);
                    }
                    None => b.push((k, v)),
                }
            }
            Node::new(Value::Map(b), base.pos)
        }
        (Value::Seq(mut b), Value::Seq(o)) => {
            let p: Vec<&str> = path.iter().map(String::as_str).collect();
            let replaced = matches!(
                p.as_slice(),
                ["services", _, "command"]
                    | ["services", _, "entrypoint"]
                    | ["services", _, "healthcheck", "test"]
            );
            if replaced {
                return Node::new(Value::Seq(o), over.pos);
            }
            let by_target = matches!(p.as_slice(), ["services", _, "volumes"]);
            for v in o {
                if by_target {
                    if let Some(t) = volume_target(&v) {
                        if let Some(i) =
                            b.iter().position(|x| volume_target(x).as_ref() == Some(&t))
                        {
                            b[i] = v;
                            continue;
                        }
                    }
                }
                if !b.iter().any(|x| x.value == v.value) {
                    b.push(v);
                }
            }
            Node::new(Value::Seq(b), base.pos)
        }
        (_, o) => Node::new(o, over.pos),
    }
}

/// The container path of a volume entry, short (`src:/target[:mode]`) or long.
fn volume_target(n: &Node) -> Option<String> {
    match &n.value {
        Value::Str(s) => {
            let parts: Vec<&str> = s.split(':').collect();
            match parts.len() {
                1 => Some(parts[0].to_string()),
                _ => Some(parts[1].to_string()),
            }
        }
        Value::Map(_) => n.get("target").and_then(Node::scalar_text),
        _ => None,
    }
}
