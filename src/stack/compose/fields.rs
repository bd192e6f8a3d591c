//! Reading typed values from the YAML nodes of a compose file, and the errors that name
//! where they are: `file:line:col: services.web.deploy.replicas: expected a number,
//! found "three"`.

use crate::error::{Error, Result};
use crate::stack::yaml::{Key, Node, Pos, Value};
use crate::store::service::Words;

/// An error at `pos`, about the field at `path`.
pub(crate) fn err(pos: &Pos, path: &str, msg: impl std::fmt::Display) -> Error {
    if path.is_empty() {
        Error::InvalidInput(format!("{pos}: {msg}"))
    } else {
        Error::InvalidInput(format!("{pos}: {path}: {msg}"))
    }
}

pub(super) fn show(n: &Node) -> String {
    match &n.value {
        Value::Str(s) => format!("{s:?}"),
        Value::Null => "nothing".into(),
        Value::Seq(_) => "a list".into(),
        Value::Map(_) => "a mapping".into(),
        _ => n.scalar_text().unwrap_or_default(),
    }
}

pub(super) fn expected(n: &Node, path: &str, what: &str) -> Error {
    err(&n.pos, path, format!("expected {what}, found {}", show(n)))
}

/// The entries of a mapping (an empty mapping for null).
pub(super) fn entries<'a>(n: &'a Node, path: &str) -> Result<&'a [(Key, Node)]> {
    match &n.value {
        Value::Map(m) => Ok(m),
        Value::Null => Ok(&[]),
        _ => Err(expected(n, path, "a mapping")),
    }
}

/// One of an enum's words (`on-failure`), read by the enum's `FromStr`.
pub(super) fn word<T: Words>(n: &Node, path: &str) -> Result<T> {
    string(n, path)?
        .parse()
        .map_err(|_| expected(n, path, T::EXPECTED))
}

pub(super) fn string(n: &Node, path: &str) -> Result<String> {
    match &n.value {
        Value::Str(_) | Value::Int(_) | Value::Float(_) | Value::Bool(_) => {
            Ok(n.scalar_text().unwrap_or_default())
        }
        _ => Err(expected(n, path, "a string")),
    }
}

pub(super) fn uint(n: &Node, path: &str) -> Result<u64> {
    match &n.value {
        Value::Int(i) if *i >= 0 && *i <= u64::MAX as i128 => Ok(*i as u64),
        Value::Str(s) if s.trim().parse::<u64>().is_ok() => Ok(s.trim().parse().unwrap_or(0)),
        _ => Err(expected(n, path, "a whole number of at least 0")),
    }
}

pub(super) fn float(n: &Node, path: &str) -> Result<f64> {
    let v = match &n.value {
        Value::Int(i) => Some(*i as f64),
        Value::Float(f) => Some(*f),
        Value::Str(s) => s.trim().parse::<f64>().ok(),
        _ => None,
    };
    match v {
        Some(f) if f.is_finite() && f >= 0.0 => Ok(f),
        _ => Err(expected(n, path, "a number")),
    }
}

pub(super) fn boolean(n: &Node, path: &str) -> Result<bool> {
    match &n.value {
        Value::Bool(b) => Ok(*b),
        Value::Str(s) if s == "true" || s == "True" || s == "TRUE" => Ok(true),
        Value::Str(s) if s == "false" || s == "False" || s == "FALSE" => Ok(false),
        _ => Err(expected(n, path, "true or false")),
    }
}

/// A Go duration (`1m30s`, `500ms`, `2h`), or a number of seconds; in ms
/// ([`crate::units::duration`]).
pub(super) fn duration_ms(n: &Node, path: &str) -> Result<u64> {
    let bad = || expected(n, path, "a duration such as 10s, 1m30s or 500ms");
    match &n.value {
        Value::Int(i) if *i >= 0 => Ok((*i as u64).saturating_mul(1000)),
        Value::Float(f) if *f >= 0.0 && f.is_finite() => Ok((f * 1000.0) as u64),
        Value::Str(s) => crate::units::duration(s)
            .map(|d| (d.as_secs_f64() * 1000.0).round() as u64)
            .ok_or_else(bad),
        _ => Err(bad()),
    }
}

/// A size: `512M`, `1g`, `100mb`, or a number of bytes.
pub(super) fn bytes(n: &Node, path: &str) -> Result<u64> {
    let text = match &n.value {
        Value::Int(i) if *i >= 0 => return Ok(*i as u64),
        Value::Str(s) => s.clone(),
        _ => return Err(expected(n, path, "a size such as 512M or 1G")),
    };
    crate::units::bytes(&text)
        .map(|b| b as u64)
        .ok_or_else(|| expected(n, path, "a size such as 512M or 1G"))
}

/// A list of strings, or one string split like a shell would.
pub(super) fn command(n: &Node, path: &str) -> Result<Vec<String>> {
    match &n.value {
        Value::Null => Ok(vec![]),
        Value::Seq(items) => items
            .iter()
            .enumerate()
            .map(|(i, x)| string(x, &format!("{path}[{i}]")))
            .collect(),
        Value::Str(s) => {
            shell_split(s).ok_or_else(|| err(&n.pos, path, format!("unbalanced quotes in {s:?}")))
        }
        _ => Err(expected(n, path, "a string or a list of strings")),
    }
}

/// Splits like a POSIX shell (quotes and backslashes; no expansion). `None` when a
/// quote is not closed.
pub(super) fn shell_split(s: &str) -> Option<Vec<String>> {
    let mut out = vec![];
    let mut cur = String::new();
    let mut in_word = false;
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        match c {
            '\'' => {
                in_word = true;
                loop {
                    match chars.next()? {
                        '\'' => break,
                        x => cur.push(x),
                    }
                }
            }
            '"' => {
                in_word = true;
                loop {
                    match chars.next()? {
                        '"' => break,
                        '\\' => match chars.next()? {
                            x @ ('"' | '\\' | '$' | '`') => cur.push(x),
                            x => {
                                cur.push('\\');
                                cur.push(x);
                            }
                        },
                        x => cur.push(x),
                    }
                }
            }
            '\\' => {
                in_word = true;
                if let Some(x) = chars.next() {
                    cur.push(x);
                }
            }
            c if c.is_whitespace() => {
                if in_word {
                    out.push(std::mem::take(&mut cur));
                    in_word = false;
                }
            }
            c => {
                in_word = true;
                cur.push(c);
            }
        }
    }
    if in_word {
        out.push(cur);
    }
    Some(out)
}

pub(super) fn strings(n: &Node, path: &str) -> Result<Vec<String>> {
    match &n.value {
        Value::Null => Ok(vec![]),
        Value::Seq(items) => items
            .iter()
            .enumerate()
            .map(|(i, x)| string(x, &format!("{path}[{i}]")))
            .collect(),
        Value::Str(_) => Ok(vec![string(n, path)?]),
        _ => Err(expected(n, path, "a list of strings")),
    }
}

/// A `K: V` mapping (list forms are already mappings, see `merge::normalize`); null
/// values stay `None`.
pub(super) fn kv_map(n: &Node, path: &str) -> Result<Vec<(String, Option<String>)>> {
    let mut out = vec![];
    for (k, v) in entries(n, path)? {
        let p = format!("{path}.{}", k.name);
        let val = match &v.value {
            Value::Null => None,
            Value::Seq(_) | Value::Map(_) => return Err(expected(v, &p, "a string")),
            _ => Some(string(v, &p)?),
        };
        out.push((k.name.clone(), val));
    }
    Ok(out)
}
