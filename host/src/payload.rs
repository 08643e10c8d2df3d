//! An event's payload: the client's JSON text, kept byte for byte.
//!
//! Events are facts, so the host never re-encodes them: a [`Payload`] holds
//! the exact text of one JSON value as the client sent it (whitespace, key
//! order, duplicate keys, number spelling and escapes included), and the
//! stores keep and return that text. Only what no store can hold is refused,
//! on every backend alike: a string containing the NUL character (`\u0000`),
//! which PostgreSQL's text types cannot represent.

use serde_json::value::RawValue;

/// One event's JSON, exactly as sent.
#[derive(Debug, Clone)]
pub struct Payload(Box<RawValue>);

/// Why a JSON value cannot be stored as an event.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PayloadError {
    /// The text is not one JSON value.
    #[error("not a JSON value: {0}")]
    NotJson(String),
    /// A string holds the NUL character, which no store can keep.
    #[error("a string contains the NUL character (\\u0000), which cannot be stored")]
    Nul,
}

impl Payload {
    /// The payload for a JSON text, kept exactly.
    pub fn new(raw: Box<RawValue>) -> Result<Self, PayloadError> {
        if has_nul_escape(raw.get()) {
            return Err(PayloadError::Nul);
        }
        Ok(Self(raw))
    }

    /// Parses `text` as one JSON value and keeps it exactly.
    pub fn parse(text: &str) -> Result<Self, PayloadError> {
        let raw = RawValue::from_string(text.to_owned())
            .map_err(|e| PayloadError::NotJson(e.to_string()))?;
        Self::new(raw)
    }

    /// The payload of a `serde_json::Value`, in its compact form (for tests
    /// and callers that build events in code).
    pub fn from_value(value: &serde_json::Value) -> Result<Self, PayloadError> {
        Self::parse(&value.to_string())
    }

    /// The JSON text.
    pub fn as_str(&self) -> &str {
        self.0.get()
    }

    /// The JSON text as a raw value, for embedding in a response.
    pub fn as_raw(&self) -> &RawValue {
        &self.0
    }
}

impl PartialEq for Payload {
    fn eq(&self, other: &Self) -> bool {
        self.as_str() == other.as_str()
    }
}

impl Eq for Payload {}

/// Whether valid JSON text holds a `\u0000` escape. A raw NUL byte cannot
/// occur in valid JSON (control characters must be escaped), so the escape
/// is the only spelling; it counts only when its backslash is not itself
/// escaped (`"\\u0000"` is a backslash followed by `u0000`).
fn has_nul_escape(json: &str) -> bool {
    let bytes = json.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\' {
            let escaped = bytes.get(i + 1).copied();
            if escaped == Some(b'u') && bytes.get(i + 2..i + 6) == Some(b"0000") {
                return true;
            }
            // Skip the escaped character, so `\\` never starts an escape.
            i += 2;
        } else {
            i += 1;
        }
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_the_text_exactly() {
        for text in [
            r#"{"add": 18446744073709551617}"#,
            "1e300",
            "0.1",
            r#""é\n\"\\""#,
            "{ \"b\" : 1,\n \"a\" : [ 2 , 3 ] , \"b\": 4 }",
            r#""\u00e9""#,
        ] {
            assert_eq!(Payload::parse(text).unwrap().as_str(), text);
        }
    }

    #[test]
    fn refuses_nul_but_not_an_escaped_backslash() {
        assert_eq!(Payload::parse(r#""a\u0000b""#), Err(PayloadError::Nul));
        assert_eq!(Payload::parse(r#"{"k\u0000": 1}"#), Err(PayloadError::Nul));
        assert!(Payload::parse(r#""a\\u0000b""#).is_ok());
        assert_eq!(Payload::parse(r#""a\\\u0000""#), Err(PayloadError::Nul));
        assert!(Payload::parse(r#""\u0001""#).is_ok());
        assert!(matches!(Payload::parse("{"), Err(PayloadError::NotJson(_))));
    }
}
