//! Log identifiers.

use std::fmt;
use std::str::FromStr;

use uuid::Uuid;

/// Identifies one log: a UUIDv7, so new ids sort by creation time and
/// B-tree inserts stay local. Its text form is the hyphenated UUID.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct LogId(Uuid);

impl LogId {
    /// A new, time-ordered id.
    pub fn new() -> Self {
        Self(Uuid::now_v7())
    }

    /// The id as a UUID.
    pub fn as_uuid(&self) -> Uuid {
        self.0
    }
}

impl Default for LogId {
    fn default() -> Self {
        Self::new()
    }
}

impl From<Uuid> for LogId {
    fn from(uuid: Uuid) -> Self {
        Self(uuid)
    }
}

impl fmt::Display for LogId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.hyphenated().fmt(f)
    }
}

impl fmt::Debug for LogId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "LogId({self})")
    }
}

/// The text is not a hyphenated UUID.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("a log id is a hyphenated UUID, such as 01890a5d-ac96-774b-bcce-b302099a8057")]
pub struct ParseLogIdError;

impl FromStr for LogId {
    type Err = ParseLogIdError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        if text.len() != 36 {
            return Err(ParseLogIdError);
        }
        Uuid::parse_str(text).map(Self).map_err(|_| ParseLogIdError)
    }
}
