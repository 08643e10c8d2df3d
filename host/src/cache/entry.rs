//! The byte encoding of a cached reduction: a version tag, the through
//! index, the reduction time, then the aggregate JSON verbatim — so reading
//! an entry never re-parses the aggregate.

use super::{CacheError, CachedReduction};

const TAG: &str = "eventlogs-reduction-v1";

pub(crate) fn encode(reduction: &CachedReduction) -> Vec<u8> {
    format!(
        "{TAG}\n{}\n{}\n{}",
        reduction.through_index, reduction.reduced_at, reduction.aggregate
    )
    .into_bytes()
}

pub(crate) fn decode(bytes: &[u8]) -> Result<CachedReduction, CacheError> {
    let corrupt = |what: &str| CacheError::Corrupt(what.to_owned());
    let text = std::str::from_utf8(bytes).map_err(|_| corrupt("not UTF-8"))?;
    let mut parts = text.splitn(4, '\n');
    if parts.next() != Some(TAG) {
        return Err(corrupt("unknown format tag"));
    }
    let through_index = parts
        .next()
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| corrupt("bad through_index"))?;
    let reduced_at = parts
        .next()
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| corrupt("bad reduced_at"))?;
    let aggregate = parts.next().ok_or_else(|| corrupt("no aggregate"))?;
    if serde_json::from_str::<serde::de::IgnoredAny>(aggregate).is_err() {
        return Err(corrupt("aggregate is not JSON"));
    }
    Ok(CachedReduction {
        through_index,
        reduced_at,
        aggregate: aggregate.to_owned(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_refuses_garbage() {
        let reduction = CachedReduction {
            through_index: 41,
            reduced_at: 1_700_000_000_000_000,
            aggregate: "{\"a\":\"line\\nbreak\"}".into(),
        };
        assert_eq!(decode(&encode(&reduction)), Ok(reduction));
        for garbage in [
            &b"\xff\xfe"[..],
            b"",
            b"eventlogs-reduction-v1\nx\n1\n{}",
            b"eventlogs-reduction-v1\n1\n1\n{",
            b"other\n1\n1\n{}",
        ] {
            assert!(
                matches!(decode(garbage), Err(CacheError::Corrupt(_))),
                "{garbage:?}"
            );
        }
    }
}
