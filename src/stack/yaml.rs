//! A YAML document as a tree of nodes that remember where they came from.
//!
//! serde-saphyr parses the text (anchors and aliases resolved, duplicate keys refused,
//! YAML 1.2 booleans only); each node keeps its file, line and column so that every
//! later error and warning can point at it.
//!
//! `<<` merge keys are applied here, after parsing ([`resolve_merges`]), not by the
//! parser: the parser takes `<<: *empty` (an anchor with no value) as an empty merge and
//! silently drops every key the author meant to merge, where Docker refuses the file
//! (Go's YAML: "map merge requires map or sequence of maps as the value"). orc refuses
//! it too, naming the `<<` key's file, line and column.

use std::fmt;
use std::sync::Arc;

use serde::de::{Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};

use crate::error::{Error, Result};

/// Where a node is: file, line and column (1-based; 0 when unknown).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Pos {
    /// The file as the operator named it.
    pub file: Arc<str>,
    /// Line.
    pub line: u32,
    /// Column.
    pub col: u32,
}

impl fmt::Display for Pos {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.line == 0 {
            write!(f, "{}", self.file)
        } else {
            write!(f, "{}:{}:{}", self.file, self.line, self.col)
        }
    }
}

/// A value.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    /// `~`, `null` or nothing.
    Null,
    /// `true` / `false`.
    Bool(bool),
    /// An integer.
    Int(i128),
    /// A float.
    Float(f64),
    /// A string.
    Str(String),
    /// A sequence.
    Seq(Vec<Node>),
    /// A mapping, in file order, keys as strings.
    Map(Vec<(Key, Node)>),
}

/// A mapping key and where it is.
#[derive(Debug, Clone, PartialEq)]
pub struct Key {
    /// The key as text (`on` stays `on`; `1` becomes `"1"`).
    pub name: String,
    /// Where.
    pub pos: Pos,
}

/// A value and where it is.
#[derive(Debug, Clone, PartialEq)]
pub struct Node {
    /// The value.
    pub value: Value,
    /// Where.
    pub pos: Pos,
}

impl Node {
    /// A node at `pos`.
    pub fn new(value: Value, pos: Pos) -> Self {
        Node { value, pos }
    }

    /// What kind of value this is, for messages.
    pub fn kind(&self) -> &'static str {
        match self.value {
            Value::Null => "nothing",
            Value::Bool(_) => "a boolean",
            Value::Int(_) => "a number",
            Value::Float(_) => "a number",
            Value::Str(_) => "a string",
            Value::Seq(_) => "a list",
            Value::Map(_) => "a mapping",
        }
    }

    /// The value of `key` in a mapping.
    pub fn get(&self, key: &str) -> Option<&Node> {
        match &self.value {
            Value::Map(m) => m.iter().find(|(k, _)| k.name == key).map(|(_, v)| v),
            _ => None,
        }
    }

    /// A scalar as text (numbers and booleans as YAML writes them); `None` for
    /// null, lists and mappings.
    pub fn scalar_text(&self) -> Option<String> {
        match &self.value {
            Value::Bool(b) => Some(b.to_string()),
            Value::Int(i) => Some(i.to_string()),
            Value::Float(f) => Some(f.to_string()),
            Value::Str(s) => Some(s.clone()),
            _ => None,
        }
    }

    fn set_file(&mut self, file: &Arc<str>) {
        self.pos.file = file.clone();
        match &mut self.value {
            Value::Seq(v) => v.iter_mut().for_each(|n| n.set_file(file)),
            Value::Map(m) => m.iter_mut().for_each(|(k, n)| {
                k.pos.file = file.clone();
                n.set_file(file)
            }),
            _ => {}
        }
    }
}

// --- deserialisation from serde-saphyr ---

impl<'de> Deserialize<'de> for Value {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Value, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Value;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("any YAML value")
            }
            fn visit_bool<E>(self, b: bool) -> std::result::Result<Value, E> {
                Ok(Value::Bool(b))
            }
            fn visit_i64<E>(self, i: i64) -> std::result::Result<Value, E> {
                Ok(Value::Int(i.into()))
            }
            fn visit_u64<E>(self, i: u64) -> std::result::Result<Value, E> {
                Ok(Value::Int(i.into()))
            }
            fn visit_i128<E>(self, i: i128) -> std::result::Result<Value, E> {
                Ok(Value::Int(i))
            }
            fn visit_u128<E>(self, i: u128) -> std::result::Result<Value, E> {
                Ok(Value::Int(i128::try_from(i).unwrap_or(i128::MAX)))
            }
            fn visit_f64<E>(self, f: f64) -> std::result::Result<Value, E> {
                Ok(Value::Float(f))
            }
            fn visit_str<E>(self, s: &str) -> std::result::Result<Value, E> {
                Ok(Value::Str(s.to_string()))
            }
            fn visit_string<E>(self, s: String) -> std::result::Result<Value, E> {
                Ok(Value::Str(s))
            }
            fn visit_char<E>(self, c: char) -> std::result::Result<Value, E> {
                Ok(Value::Str(c.to_string()))
            }
            fn visit_unit<E>(self) -> std::result::Result<Value, E> {
                Ok(Value::Null)
            }
            fn visit_none<E>(self) -> std::result::Result<Value, E> {
                Ok(Value::Null)
            }
            fn visit_some<D: Deserializer<'de>>(
                self,
                d: D,
            ) -> std::result::Result<Value, D::Error> {
                Value::deserialize(d)
            }
            fn visit_seq<A: SeqAccess<'de>>(
                self,
                mut a: A,
            ) -> std::result::Result<Value, A::Error> {
                let mut v = vec![];
                while let Some(n) = a.next_element::<Node>()? {
                    v.push(n);
                }
                Ok(Value::Seq(v))
            }
            fn visit_map<A: MapAccess<'de>>(
                self,
                mut a: A,
            ) -> std::result::Result<Value, A::Error> {
                let mut m: Vec<(Key, Node)> = vec![];
                while let Some((k, v)) = a.next_entry::<Node, Node>()? {
                    let name = match &k.value {
                        Value::Null => "null".to_string(),
                        _ => k.scalar_text().unwrap_or_else(|| format!("{:?}", k.value)),
                    };
                    let key = Key { name, pos: k.pos };
                    // The parser refuses duplicate keys; should one come through, the last wins.
                    if let Some(slot) = m.iter_mut().find(|(x, _)| x.name == key.name) {
                        *slot = (key, v);
                    } else {
                        m.push((key, v));
                    }
                }
                Ok(Value::Map(m))
            }
        }
        d.deserialize_any(V)
    }
}

impl<'de> Deserialize<'de> for Node {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Node, D::Error> {
        let s: serde_saphyr::Spanned<Value> = serde_saphyr::Spanned::deserialize(d)?;
        Ok(Node {
            value: s.value,
            pos: Pos {
                file: Arc::from(""),
                line: s.referenced.line() as u32,
                col: s.referenced.column() as u32,
            },
        })
    }
}

/// Parses `text`, read from `file`. A syntax error names the file, line and column.
pub fn parse(file: &str, text: &str) -> Result<Node> {
    let file: Arc<str> = Arc::from(file);
    let mut opts = serde_saphyr::Options::default();
    opts.duplicate_keys = serde_saphyr::DuplicateKeyPolicy::Error;
    // YAML 1.2, as compose reads it: `on`, `yes`, `no` are strings.
    opts.strict_booleans = true;
    // `<<` arrives as an ordinary key; `resolve_merges` applies it.
    opts.merge_keys = serde_saphyr::MergeKeyPolicy::AsOrdinary;
    if text.trim().is_empty() {
        return Err(Error::InvalidInput(format!("{file}: the file is empty")));
    }
    let parsed = catch(|| serde_saphyr::from_str_with_options::<Node>(text, opts));
    match parsed {
        Ok(Ok(mut n)) => {
            n.set_file(&file);
            resolve_merges(&mut n, &mut String::new())?;
            Ok(n)
        }
        Ok(Err(e)) => {
            let pos = e
                .location()
                .map(|l| Pos {
                    file: file.clone(),
                    line: l.line() as u32,
                    col: l.column() as u32,
                })
                .unwrap_or(Pos {
                    file: file.clone(),
                    line: 0,
                    col: 0,
                });
            Err(Error::InvalidInput(format!(
                "{pos}: {}",
                syntax_message(&e.without_snippet().to_string())
            )))
        }
        Err(()) => Err(Error::InvalidInput(format!(
            "{file}: the YAML parser failed on this file"
        ))),
    }
}

/// The key of a merge (`<<: *defaults`).
const MERGE_KEY: &str = "<<";

/// Applies every `<<` merge key under `n` (`path` is where `n` is, for errors), as YAML's
/// merge key type and Docker read it: the value is a mapping, or a list of mappings,
/// whose keys are added unless the mapping already has them (an earlier mapping of the
/// list wins over a later one). The merged keys take the place of the `<<` key, so the
/// file order is kept. Anything else as the value (nothing, `~`, a string, a list with
/// anything but mappings) is refused, as Docker refuses it.
pub fn resolve_merges(n: &mut Node, path: &mut String) -> Result<()> {
    match &mut n.value {
        Value::Seq(items) => {
            for (i, it) in items.iter_mut().enumerate() {
                let len = path.len();
                path.push_str(&format!("[{i}]"));
                resolve_merges(it, path)?;
                path.truncate(len);
            }
        }
        Value::Map(entries) => {
            for (k, v) in entries.iter_mut() {
                let len = path.len();
                if !path.is_empty() {
                    path.push('.');
                }
                path.push_str(&k.name);
                resolve_merges(v, path)?;
                path.truncate(len);
            }
            while let Some(at) = entries.iter().position(|(k, _)| k.name == MERGE_KEY) {
                let (key, value) = entries.remove(at);
                let refuse = |found: &str| {
                    let shown = if path.is_empty() {
                        MERGE_KEY.to_string()
                    } else {
                        format!("{path}.{MERGE_KEY}")
                    };
                    Error::InvalidInput(format!(
                        "{}: {shown}: a merge needs a mapping or a list of mappings, found {found} \
                         (Docker refuses it too: map merge requires map or sequence of maps as the value)",
                        key.pos
                    ))
                };
                let sources = match value.value {
                    Value::Map(m) => vec![m],
                    Value::Seq(items) => {
                        let mut maps = vec![];
                        for it in items {
                            match it.value {
                                Value::Map(m) => maps.push(m),
                                _ => return Err(refuse(&format!("{} in the list", it.kind()))),
                            }
                        }
                        maps
                    }
                    _ => return Err(refuse(value.kind())),
                };
                let mut merged: Vec<(Key, Node)> = vec![];
                for source in sources {
                    for (k, v) in source {
                        let known = entries.iter().any(|(x, _)| x.name == k.name)
                            || merged.iter().any(|(x, _)| x.name == k.name);
                        if !known {
                            merged.push((k, v));
                        }
                    }
                }
                let tail = entries.split_off(at);
                entries.extend(merged);
                entries.extend(tail);
            }
        }
        _ => {}
    }
    Ok(())
}

/// The parser's message on one line, without its own "at line L, column C".
fn syntax_message(m: &str) -> String {
    let first = m.lines().next().unwrap_or("").trim();
    let first = first.strip_prefix("error: ").unwrap_or(first);
    let cut = first
        .rfind(" at line ")
        .map(|i| &first[..i])
        .unwrap_or(first);
    let cut = cut
        .trim_start_matches(|c: char| c != ':' && !c.is_alphabetic())
        .trim();
    let cut = cut.replace(", set DuplicateKeyPolicy in Options if acceptable", "");
    if cut.is_empty() {
        "invalid YAML".into()
    } else if cut.contains("block mapping") || cut.contains("block sequence") {
        format!("{cut} (is the indentation right?)")
    } else {
        cut
    }
}

/// Runs `f`, turning a panic of the parser into an error (no input may crash the CLI).
fn catch<T>(f: impl FnOnce() -> T) -> std::result::Result<T, ()> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)).map_err(|_| ())
}
