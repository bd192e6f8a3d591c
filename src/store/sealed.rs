//! Sealed values as the state tables store them: the CA key, the join secrets and the
//! unlock key, encrypted by [`crate::keys`] before they reach Raft. The store keeps the
//! text and never opens it.

use std::fmt;

use serde::{Deserialize, Serialize};

/// A value encrypted under a data key ([`crate::keys::DataKey`]), as the state stores it: hex of `nonce || ciphertext || tag`. Its
/// `Debug` shows only its length.
#[derive(Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Sealed(String);

impl fmt::Debug for Sealed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Sealed({} bytes)", self.0.len() / 2)
    }
}

impl Sealed {
    /// The hex text, as stored.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// A sealed value from its stored hex text (not checked until opened).
    pub fn from_stored(s: impl Into<String>) -> Sealed {
        Sealed(s.into())
    }
}
