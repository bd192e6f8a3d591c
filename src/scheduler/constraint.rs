//! Placement constraints.
use crate::error::{Error, Result};

/// A parsed constraint (being written).
#[derive(Debug, Clone, PartialEq)]
pub struct Constraint {
    /// The raw text.
    pub raw: String,
}

impl Constraint {
    /// Parses `key==value` and friends.
    pub fn parse(s: &str) -> Result<Constraint> {
        if s.trim().is_empty() {
            return Err(Error::InvalidInput("--constraint: empty".into()));
        }
        Ok(Constraint { raw: s.to_string() })
    }
}
