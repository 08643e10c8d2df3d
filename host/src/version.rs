//! Reducer versions: the sha256 of a component's bytes. The runtime
//! compiles by version and the registry stores by version; neither needs the
//! other to name one.

use std::fmt;
use std::str::FromStr;

use sha2::{Digest, Sha256};

/// Identifies one immutable reducer version: the sha256 of its bytes, shown
/// as 64 lowercase hex digits.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Version([u8; 32]);

impl Version {
    /// The version of these component bytes.
    pub fn of(bytes: &[u8]) -> Self {
        Self(Sha256::digest(bytes).into())
    }

    /// The raw digest.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }
}

impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.iter().try_for_each(|b| write!(f, "{b:02x}"))
    }
}

impl fmt::Debug for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Version({self})")
    }
}

/// The text was not 64 hex digits.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("a reducer version is 64 hex digits (a sha256)")]
pub struct ParseVersionError;

impl FromStr for Version {
    type Err = ParseVersionError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let text = text.as_bytes();
        if text.len() != 64 {
            return Err(ParseVersionError);
        }
        let mut digest = [0u8; 32];
        for (byte, pair) in digest.iter_mut().zip(text.chunks_exact(2)) {
            let pair = std::str::from_utf8(pair).map_err(|_| ParseVersionError)?;
            *byte = u8::from_str_radix(pair, 16).map_err(|_| ParseVersionError)?;
        }
        Ok(Self(digest))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_through_text() {
        let v = Version::of(b"component");
        let text = v.to_string();
        assert_eq!(text.len(), 64);
        assert_eq!(text.parse::<Version>().unwrap(), v);
        assert!("zz".repeat(32).parse::<Version>().is_err());
        assert!("ab".parse::<Version>().is_err());
    }
}
