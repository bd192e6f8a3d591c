//! `orc events --filter KEY=VALUE` and `--since`/`--until`: parsing, checking, matching.
//!
//! Keys: `type` (one of [`super::TYPES`]), `event` (an action: `create`, `failed`, ...),
//! `name` (the object's name, or the service a task or update belongs to), `id` (the
//! object's id or a prefix of it), `node` (the node a task runs on, or a node's own
//! id). Filters of one key are alternatives (any may match); filters of different keys
//! must all match, as with `docker events`.
//!
//! Bounds, checked by the CLI and again by the manager (what it may be sent): at most
//! [`MAX_FILTERS`] filters, each value at most [`MAX_VALUE`] bytes; an unknown key or
//! an unknown type is refused with one line naming it.

use std::collections::BTreeMap;

use super::{Event, TYPES};
use crate::error::{Error, Result};

/// Filters one request may carry.
pub const MAX_FILTERS: usize = 32;

/// The longest filter value, bytes.
pub const MAX_VALUE: usize = 256;

/// The filter keys.
pub const KEYS: &[&str] = &["type", "event", "name", "id", "node"];

/// Checked filters: values by key.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Filters {
    by_key: BTreeMap<String, Vec<String>>,
}

impl Filters {
    /// Checks `(key, value)` pairs (see the module doc for what is refused).
    pub fn new(pairs: &[(String, String)]) -> Result<Filters> {
        if pairs.len() > MAX_FILTERS {
            return Err(Error::InvalidInput(format!(
                "--filter: at most {MAX_FILTERS} filters, found {}",
                pairs.len()
            )));
        }
        let mut by_key: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for (k, v) in pairs {
            if !KEYS.contains(&k.as_str()) {
                return Err(Error::InvalidInput(format!(
                    "--filter: unknown key {k:?} (expected {})",
                    KEYS.join(", ")
                )));
            }
            if v.is_empty() || v.len() > MAX_VALUE {
                return Err(Error::InvalidInput(format!(
                    "--filter {k}: expected a value of 1 to {MAX_VALUE} bytes, found {} bytes",
                    v.len()
                )));
            }
            if k == "type" && !TYPES.contains(&v.as_str()) {
                return Err(Error::InvalidInput(format!(
                    "--filter type: unknown type {v:?} (expected {})",
                    TYPES.join(", ")
                )));
            }
            by_key.entry(k.clone()).or_default().push(v.clone());
        }
        Ok(Filters { by_key })
    }

    /// Parses `KEY=VALUE` words (the CLI's `--filter` flags) and checks them.
    pub fn parse(words: &[String]) -> Result<Filters> {
        let pairs = words
            .iter()
            .map(|w| {
                w.split_once('=')
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .ok_or_else(|| {
                        Error::InvalidInput(format!("--filter: expected KEY=VALUE, found {w:?}"))
                    })
            })
            .collect::<Result<Vec<_>>>()?;
        Filters::new(&pairs)
    }

    /// The filters as `(key, value)` pairs, for the wire.
    pub fn pairs(&self) -> Vec<(String, String)> {
        self.by_key
            .iter()
            .flat_map(|(k, vs)| vs.iter().map(move |v| (k.clone(), v.clone())))
            .collect()
    }

    /// True if `e` passes every key's filters.
    pub fn matches(&self, e: &Event) -> bool {
        self.by_key.iter().all(|(k, vs)| {
            vs.iter().any(|v| match k.as_str() {
                "type" => &e.kind == v,
                "event" => &e.action == v,
                "name" => &e.name == v || e.attributes.get("service") == Some(v),
                "id" => e.id.starts_with(v.as_str()),
                "node" => {
                    e.attributes.get("node") == Some(v)
                        || (e.kind == "node" && (e.id == *v || e.name == *v))
                }
                _ => false,
            })
        })
    }
}

/// Parses a `--since`/`--until` time into nanoseconds since the unix epoch: a duration
/// back from `now_nano` (`10m`, `1h30m`, `2d`), an RFC 3339 time
/// (`2026-12-04T10:00:00Z`, fractions allowed), or unix seconds (`1764842400`, or
/// `1764842400.5`).
pub fn parse_time(flag: &str, s: &str, now_nano: u64) -> Result<u64> {
    let bad = || {
        Error::InvalidInput(format!(
            "{flag}: expected a duration back from now (10m, 2h), an RFC 3339 time \
             (2026-12-04T10:00:00Z) or unix seconds, found {s:?}"
        ))
    };
    if s.is_empty() || s.len() > 64 {
        return Err(bad());
    }
    if s.chars().all(|c| c.is_ascii_digit() || c == '.') && s.chars().any(|c| c.is_ascii_digit()) {
        let (secs, frac) = s.split_once('.').unwrap_or((s, ""));
        if frac.contains('.') || frac.len() > 9 {
            return Err(bad());
        }
        let secs: u64 = secs.parse().map_err(|_| bad())?;
        let frac_nano: u64 = if frac.is_empty() {
            0
        } else {
            format!("{frac:0<9}").parse().map_err(|_| bad())?
        };
        return secs
            .checked_mul(1_000_000_000)
            .and_then(|n| n.checked_add(frac_nano))
            .ok_or_else(bad);
    }
    if let Ok(t) = humantime::parse_rfc3339_weak(s) {
        let d = t.duration_since(std::time::UNIX_EPOCH).map_err(|_| bad())?;
        return u64::try_from(d.as_nanos()).map_err(|_| bad());
    }
    if let Some(d) = crate::units::duration(s) {
        let back = u64::try_from(d.as_nanos()).map_err(|_| bad())?;
        return Ok(now_nano.saturating_sub(back));
    }
    Err(bad())
}
