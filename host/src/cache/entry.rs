//! The byte encoding of a cached reduction in a shared cache: a version
//! tag, the through index, the reduction time, the anchor, a MAC, then the
//! aggregate JSON verbatim — so reading an entry never re-parses the
//! aggregate.
//!
//! The MAC (HMAC-SHA256 under the host's cache secret) covers the entry's
//! key, so an entry cannot be forged, nor moved to another log or reducer
//! version, by anyone who can write to the cache but does not hold the
//! secret.

use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;

use super::{Anchor, CacheError, CachedReduction};

const TAG: &str = "eventlogs-reduction-v2";

/// The MAC's hex digits, lower case.
const HEX_DIGITS: &[u8; 16] = b"0123456789abcdef";

/// The secret cache entries are authenticated under, kept keyed: HMAC's
/// key schedule is computed once, and each entry's MAC starts from a copy.
#[derive(Clone)]
pub struct CacheSecret(Hmac<Sha256>);

impl CacheSecret {
    /// A secret of these bytes (at least 16).
    pub fn new(bytes: impl Into<Vec<u8>>) -> Result<Self, CacheError> {
        let bytes = bytes.into();
        if bytes.len() < 16 {
            return Err(CacheError::Unavailable(
                "a cache secret has at least 16 bytes".into(),
            ));
        }
        let keyed = <Hmac<Sha256> as KeyInit>::new_from_slice(&bytes)
            .expect("HMAC takes keys of any length");
        Ok(Self(keyed))
    }

    /// A fresh random secret, as 64 hex digits.
    pub fn generate() -> String {
        let mut bytes = [0u8; 32];
        getrandom::fill(&mut bytes).expect("the operating system's random source");
        bytes.iter().map(|b| format!("{b:02x}")).collect()
    }

    fn mac(&self, key: &str, body: &str) -> Hmac<Sha256> {
        let mut mac = self.0.clone();
        mac.update(key.as_bytes());
        mac.update(b"\n");
        mac.update(body.as_bytes());
        mac
    }
}

impl std::fmt::Debug for CacheSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("CacheSecret(..)")
    }
}

/// The fields the MAC covers besides the key, in their encoded order.
fn body(reduction: &CachedReduction) -> String {
    format!(
        "{}\n{}\n{}\n{}\n{}",
        reduction.through_index,
        reduction.reduced_at,
        reduction.anchor.position,
        reduction.anchor.recorded_at,
        reduction.aggregate
    )
}

/// The entry stored under `key` (its text form).
pub(crate) fn encode(secret: &CacheSecret, key: &str, reduction: &CachedReduction) -> Vec<u8> {
    let body = body(reduction);
    let tag = secret.mac(key, &body).finalize().into_bytes();
    let mut bytes = Vec::with_capacity(TAG.len() + 2 + 2 * tag.len() + body.len());
    bytes.extend_from_slice(TAG.as_bytes());
    bytes.push(b'\n');
    for byte in tag {
        bytes.push(HEX_DIGITS[usize::from(byte >> 4)]);
        bytes.push(HEX_DIGITS[usize::from(byte & 0xf)]);
    }
    bytes.push(b'\n');
    bytes.extend_from_slice(body.as_bytes());
    bytes
}

/// The reduction in an entry read under `key`: [`CacheError::Corrupt`] if
/// it does not decode, [`CacheError::Forged`] if its MAC does not verify.
pub(crate) fn decode(
    secret: &CacheSecret,
    key: &str,
    bytes: &[u8],
) -> Result<CachedReduction, CacheError> {
    let corrupt = |what: &str| CacheError::Corrupt(what.to_owned());
    let text = std::str::from_utf8(bytes).map_err(|_| corrupt("not UTF-8"))?;
    let (tag, rest) = text
        .split_once('\n')
        .ok_or_else(|| corrupt("no format tag"))?;
    if tag != TAG {
        return Err(corrupt("unknown format tag"));
    }
    let (hex, body) = rest.split_once('\n').ok_or_else(|| corrupt("no MAC"))?;
    let claimed = decode_hex(hex).ok_or_else(|| corrupt("bad MAC"))?;
    secret
        .mac(key, body)
        .verify_slice(&claimed)
        .map_err(|_| CacheError::Forged)?;
    let mut parts = body.splitn(5, '\n');
    let mut number = |what: &str| -> Result<i128, CacheError> {
        parts
            .next()
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| corrupt(what))
    };
    let through_index = number("bad through_index")?;
    let reduced_at = number("bad reduced_at")?;
    let position = number("bad anchor position")?;
    let recorded_at = number("bad anchor time")?;
    let aggregate = parts.next().ok_or_else(|| corrupt("no aggregate"))?;
    if serde_json::from_str::<serde::de::IgnoredAny>(aggregate).is_err() {
        return Err(corrupt("aggregate is not JSON"));
    }
    let (Ok(through_index), Ok(reduced_at), Ok(position), Ok(recorded_at)) = (
        u64::try_from(through_index),
        i64::try_from(reduced_at),
        u64::try_from(position),
        i64::try_from(recorded_at),
    ) else {
        return Err(corrupt("number out of range"));
    };
    Ok(CachedReduction {
        through_index,
        reduced_at,
        anchor: Anchor {
            position,
            recorded_at,
        },
        aggregate: aggregate.to_owned(),
    })
}

fn decode_hex(hex: &str) -> Option<Vec<u8>> {
    if !hex.len().is_multiple_of(2) || !hex.is_ascii() {
        return None;
    }
    (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secret(byte: u8) -> CacheSecret {
        CacheSecret::new(vec![byte; 32]).unwrap()
    }

    fn reduction() -> CachedReduction {
        CachedReduction {
            through_index: 41,
            reduced_at: 1_700_000_000_000_000,
            anchor: Anchor {
                position: 9_001,
                recorded_at: 1_699_999_999_999_999,
            },
            aggregate: "{\"a\":\"line\\nbreak\"}".into(),
        }
    }

    #[test]
    fn round_trips_and_refuses_garbage() {
        let encoded = encode(&secret(1), "k", &reduction());
        assert_eq!(decode(&secret(1), "k", &encoded), Ok(reduction()));
        for garbage in [
            &b"\xff\xfe"[..],
            b"",
            b"eventlogs-reduction-v1\n1\n1\n{}",
            b"eventlogs-reduction-v2\nzz\n1\n1\n1\n1\n{}",
            b"other\n1\n1\n{}",
        ] {
            assert!(
                matches!(
                    decode(&secret(1), "k", garbage),
                    Err(CacheError::Corrupt(_))
                ),
                "{garbage:?}"
            );
        }
    }

    #[test]
    fn a_forged_moved_or_altered_entry_does_not_verify() {
        let encoded = encode(&secret(1), "k", &reduction());
        // Another secret.
        assert_eq!(decode(&secret(2), "k", &encoded), Err(CacheError::Forged));
        // Another key (log or version).
        assert_eq!(
            decode(&secret(1), "other", &encoded),
            Err(CacheError::Forged)
        );
        // Any field changed.
        let text = String::from_utf8(encoded).unwrap();
        for (from, to) in [("\n41\n", "\n42\n"), ("9001", "9002"), ("break", "brake")] {
            let altered = text.replacen(from, to, 1);
            assert_ne!(altered, text);
            assert_eq!(
                decode(&secret(1), "k", altered.as_bytes()),
                Err(CacheError::Forged),
                "{from}"
            );
        }
    }

    #[test]
    fn the_mac_is_hmac_sha256_of_key_and_body_in_lower_case_hex() {
        // Entries written by daemons of earlier versions, which keyed the
        // MAC afresh for each entry, still verify: same bytes, same format.
        let encoded = String::from_utf8(encode(&secret(7), "k", &reduction())).unwrap();
        let mut expected = <Hmac<Sha256> as KeyInit>::new_from_slice(&[7; 32]).unwrap();
        expected.update(b"k\n");
        expected.update(body(&reduction()).as_bytes());
        let hex: String = expected
            .finalize()
            .into_bytes()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        let lines: Vec<&str> = encoded.splitn(3, '\n').collect();
        assert_eq!(lines[..2], [TAG, hex.as_str()]);
        assert_eq!(lines[2], body(&reduction()));
    }

    #[test]
    fn short_secrets_are_refused() {
        assert!(CacheSecret::new(vec![0; 15]).is_err());
        assert_eq!(CacheSecret::generate().len(), 64);
    }
}
