//! Join tokens: `ORC-1-<root CA digest>-<secret>`.

use std::fmt;
use std::str::FromStr;

use rand::Rng;

use crate::error::{Error, Result};

/// The number of characters of a join secret.
pub const SECRET_LEN: usize = 25;

/// The alphabet of join secrets.
const SECRET_ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";

/// What every token starts with: the product and the format version.
const PREFIX: &str = "ORC-1-";

/// The length of a root CA digest in hex digits (SHA-256).
const DIGEST_LEN: usize = 64;

/// The expected shape, repeated in every parse error.
const EXPECTED: &str = "join token: expected ORC-1-<digest>-<secret>";

/// A join token: the digest of the root CA certificate the joining node must find, and
/// the secret that decides its role. Shown as `ORC-1-<ca_digest>-<secret>`.
///
/// `Debug` hides the secret; `Display` shows the whole token (that is its purpose).
#[derive(Clone, PartialEq, Eq)]
pub struct Token {
    /// SHA-256 of the root CA certificate (DER), 64 lowercase hex digits.
    pub ca_digest: String,
    /// The join secret, [`SECRET_LEN`] characters of `[a-z0-9]`.
    pub secret: String,
}

impl fmt::Display for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{PREFIX}{}-{}", self.ca_digest, self.secret)
    }
}

impl fmt::Debug for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Token")
            .field("ca_digest", &self.ca_digest)
            .field("secret", &"[elided]")
            .finish()
    }
}

impl FromStr for Token {
    type Err = Error;

    /// Parses a token strictly (only surrounding whitespace, as left by copy and paste, is
    /// ignored); the error says which part is wrong but never echoes the secret.
    fn from_str(s: &str) -> Result<Self> {
        let bad = |what: &str| Error::InvalidInput(format!("{EXPECTED}: {what}"));
        let s = s.trim();
        let rest = s
            .strip_prefix(PREFIX)
            .ok_or_else(|| bad("it does not start with ORC-1-"))?;
        let (digest, secret) = rest
            .split_once('-')
            .ok_or_else(|| bad("the secret is missing"))?;
        if digest.len() != DIGEST_LEN || !digest.bytes().all(is_lower_hex) {
            return Err(bad("the digest is not 64 lowercase hex digits"));
        }
        if secret.len() != SECRET_LEN || !secret.bytes().all(|b| SECRET_ALPHABET.contains(&b)) {
            return Err(bad("the secret is not 25 characters of a-z and 0-9"));
        }
        Ok(Token {
            ca_digest: digest.to_string(),
            secret: secret.to_string(),
        })
    }
}

/// A new join secret: [`SECRET_LEN`] random characters of `[a-z0-9]` (about 129 bits),
/// drawn from the thread-local CSPRNG.
pub fn new_secret() -> String {
    let mut rng = rand::rng();
    (0..SECRET_LEN)
        .map(|_| char::from(SECRET_ALPHABET[rng.random_range(0..SECRET_ALPHABET.len())]))
        .collect()
}

/// Compares two secrets in time that depends only on their lengths, not on where they
/// differ, so that a caller cannot guess a secret one character at a time.
pub fn secrets_equal(a: &str, b: &str) -> bool {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    if a.len() != b.len() {
        return false;
    }
    a.iter()
        .zip(b)
        .fold(0u8, |acc, (x, y)| std::hint::black_box(acc | (x ^ y)))
        == 0
}

fn is_lower_hex(b: u8) -> bool {
    matches!(b, b'0'..=b'9' | b'a'..=b'f')
}
