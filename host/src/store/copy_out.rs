//! Reading a long run of a log's events from PostgreSQL with
//! `COPY (SELECT …) TO STDOUT (FORMAT binary)` instead of a query.
//!
//! A query's rows each go through the driver's row machinery: a row
//! object, a type check and a decode per column, a string per payload.
//! Reducing a long log, that cost the daemon as much CPU as PostgreSQL
//! spent sending the rows (docs/benchmarks.md, "Sixteenth session"). A
//! binary `COPY` arrives as plain bytes, parsed here: four length-prefixed
//! fields per event. It carries no parameters, so the statement is built
//! from values this module formats itself (a UUID and two integers), and
//! it is planned on each call, which only a long read repays: shorter
//! reads keep the prepared query ([`COPY_MIN_EVENTS`]).
//!
//! A `COPY` cannot be abandoned half way on its connection: whatever the
//! server still sends must be read before the connection can run anything
//! else. A read dropped early (a stale cache entry, a failed fold) hands
//! its connection to a task that reads the rest, and the pool gets it back
//! only then.

use bytes::Bytes;
use futures_util::stream::{self, BoxStream};
use futures_util::{StreamExt, TryStreamExt};
use sqlx::postgres::{PgPool, PgPoolCopyExt};

use super::write::{LogEventRow, log_event, unavailable};
use super::{EventStream, StoreError, StoredEvent};
use crate::LogId;

/// The fewest events a bounded read must span to be read with `COPY`.
pub(crate) const COPY_MIN_EVENTS: i64 = 1_000;

/// `log_id`'s events from index `from` through `through`, in index order,
/// read with one binary `COPY`.
pub(crate) fn read(pool: PgPool, log_id: LogId, from: i64, through: i64) -> EventStream<'static> {
    let statement = format!(
        "COPY ({}) TO STDOUT (FORMAT binary)",
        select(log_id, from, through)
    );
    let opened = async move {
        let chunks = pool.copy_out_raw(&statement).await.map_err(unavailable)?;
        Ok::<_, StoreError>(Copying {
            log_id,
            chunks: Some(chunks),
            rows: BinaryRows::default(),
        })
    };
    stream::once(opened)
        .map_ok(|copying| stream::try_unfold(copying, Copying::next_event))
        .try_flatten()
        .boxed()
}

/// The query whose rows the `COPY` sends. Only values formatted here go
/// into it: a UUID's hex digits and two integers.
pub(crate) fn select(log_id: LogId, from: i64, through: i64) -> String {
    format!(
        "SELECT idx, position, recorded_at, payload FROM events
         WHERE log_id = '{}' AND idx >= {from} AND idx <= {through} ORDER BY idx",
        log_id.as_uuid()
    )
}

/// A `COPY` under way: the server's chunks and what is parsed of them.
struct Copying {
    log_id: LogId,
    /// `None` once the server has sent everything (or failed).
    chunks: Option<BoxStream<'static, sqlx::Result<Bytes>>>,
    rows: BinaryRows,
}

impl Copying {
    /// The next event and the rest of the read; `None` at the end.
    async fn next_event(mut self) -> Result<Option<(StoredEvent, Self)>, StoreError> {
        loop {
            if let Some(row) = self.rows.next_row()? {
                return Ok(Some((log_event(self.log_id, row), self)));
            }
            let Some(chunks) = self.chunks.as_mut() else {
                return Ok(None);
            };
            match chunks.next().await {
                Some(Ok(chunk)) => self.rows.extend(&chunk),
                Some(Err(error)) => {
                    // The driver has read up to the server's ready message.
                    self.chunks = None;
                    return Err(unavailable(error));
                }
                None => {
                    self.chunks = None;
                    self.rows.finish()?;
                    return Ok(None);
                }
            }
        }
    }
}

impl Drop for Copying {
    fn drop(&mut self) {
        // Stopped early: the rest is read (and dropped) before the
        // connection goes back to the pool. (Reads run on the daemon's
        // runtime; without one the stream is dropped as it is.)
        if let Some(mut chunks) = self.chunks.take()
            && let Ok(runtime) = tokio::runtime::Handle::try_current()
        {
            runtime.spawn(async move { while let Some(Ok(_)) = chunks.next().await {} });
        }
    }
}

/// The binary `COPY` format's signature, before its flags and header
/// extension.
const SIGNATURE: &[u8; 11] = b"PGCOPY\n\xff\r\n\0";

/// A malformed `COPY` stream: the server sent something this reader does
/// not expect.
fn malformed(what: &str) -> StoreError {
    StoreError::Unavailable(format!("reading events with COPY: {what}"))
}

/// Rows of `(idx, position, recorded_at, payload)` in PostgreSQL's binary
/// `COPY` format, parsed as its bytes arrive in chunks of any size.
#[derive(Default)]
pub(crate) struct BinaryRows {
    buffer: Vec<u8>,
    /// Bytes of `buffer` already parsed.
    at: usize,
    header_read: bool,
    trailer_read: bool,
}

impl BinaryRows {
    /// Appends the next chunk of the stream.
    pub(crate) fn extend(&mut self, chunk: &[u8]) {
        if self.at == self.buffer.len() {
            self.buffer.clear();
            self.at = 0;
        } else if self.at > 1 << 16 {
            self.buffer.drain(..self.at);
            self.at = 0;
        }
        self.buffer.extend_from_slice(chunk);
    }

    /// The next whole row, or `None` if its bytes have not all arrived
    /// (or the trailer has).
    pub(crate) fn next_row(&mut self) -> Result<Option<LogEventRow>, StoreError> {
        if !self.header_read && !self.read_header()? {
            return Ok(None);
        }
        if self.trailer_read {
            return Ok(None);
        }
        let mut cursor = Cursor {
            bytes: &self.buffer[self.at..],
        };
        let Some(fields) = cursor.i16() else {
            return Ok(None);
        };
        if fields == -1 {
            self.trailer_read = true;
            self.at += 2;
            return Ok(None);
        }
        if fields != 4 {
            return Err(malformed(&format!("a row of {fields} fields, not 4")));
        }
        // Each field in turn: one that has not all arrived ends the
        // attempt before the next is looked at.
        let Some(index) = cursor.bigint()? else {
            return Ok(None);
        };
        let Some(position) = cursor.bigint()? else {
            return Ok(None);
        };
        let Some(recorded_at) = cursor.bigint()? else {
            return Ok(None);
        };
        let Some(payload) = cursor.field()? else {
            return Ok(None);
        };
        let payload = String::from_utf8(payload.to_vec())
            .map_err(|_| malformed("a payload that is not UTF-8"))?;
        let consumed = self.buffer.len() - self.at - cursor.bytes.len();
        self.at += consumed;
        Ok(Some((index, position, recorded_at, payload)))
    }

    /// Checks that the stream ended where it should: after the trailer,
    /// with nothing left over.
    pub(crate) fn finish(&self) -> Result<(), StoreError> {
        if !self.trailer_read {
            return Err(malformed("the stream ended before its trailer"));
        }
        if self.at != self.buffer.len() {
            return Err(malformed("bytes after the trailer"));
        }
        Ok(())
    }

    /// Reads the signature, flags and header extension; `false` until
    /// they have all arrived.
    fn read_header(&mut self) -> Result<bool, StoreError> {
        let bytes = &self.buffer[self.at..];
        let fixed = SIGNATURE.len() + 8;
        if bytes.len() < fixed {
            return Ok(false);
        }
        if &bytes[..SIGNATURE.len()] != SIGNATURE {
            return Err(malformed("no binary COPY signature"));
        }
        let mut cursor = Cursor {
            bytes: &bytes[SIGNATURE.len()..],
        };
        let flags = cursor.i32().expect("length checked");
        if flags & (1 << 16) != 0 {
            return Err(malformed("rows with OIDs"));
        }
        let extension = cursor.i32().expect("length checked");
        let Ok(extension) = usize::try_from(extension) else {
            return Err(malformed("a negative header extension length"));
        };
        if bytes.len() < fixed + extension {
            return Ok(false);
        }
        self.at += fixed + extension;
        self.header_read = true;
        Ok(true)
    }
}

/// Big-endian reads from the front of a slice; `None` when it is too
/// short.
struct Cursor<'a> {
    bytes: &'a [u8],
}

impl<'a> Cursor<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let (taken, rest) = self.bytes.split_at_checked(n)?;
        self.bytes = rest;
        Some(taken)
    }

    fn i16(&mut self) -> Option<i16> {
        Some(i16::from_be_bytes(self.take(2)?.try_into().ok()?))
    }

    fn i32(&mut self) -> Option<i32> {
        Some(i32::from_be_bytes(self.take(4)?.try_into().ok()?))
    }

    /// A field's bytes (length-prefixed); NULL is an error, as every
    /// column read is `NOT NULL`.
    fn field(&mut self) -> Result<Option<&'a [u8]>, StoreError> {
        let Some(len) = self.i32() else {
            return Ok(None);
        };
        let Ok(len) = usize::try_from(len) else {
            return Err(malformed("a NULL column"));
        };
        Ok(self.take(len))
    }

    /// A `bigint` field.
    fn bigint(&mut self) -> Result<Option<i64>, StoreError> {
        let Some(bytes) = self.field()? else {
            return Ok(None);
        };
        let bytes: [u8; 8] = bytes
            .try_into()
            .map_err(|_| malformed("a bigint column that is not 8 bytes"))?;
        Ok(Some(i64::from_be_bytes(bytes)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn field(bytes: &[u8]) -> Vec<u8> {
        let mut out = (bytes.len() as i32).to_be_bytes().to_vec();
        out.extend_from_slice(bytes);
        out
    }

    fn row(index: i64, position: i64, recorded_at: i64, payload: &str) -> Vec<u8> {
        let mut out = 4i16.to_be_bytes().to_vec();
        for value in [index, position, recorded_at] {
            out.extend(field(&value.to_be_bytes()));
        }
        out.extend(field(payload.as_bytes()));
        out
    }

    fn stream(rows: &[LogEventRow], extension: &[u8]) -> Vec<u8> {
        let mut out = SIGNATURE.to_vec();
        out.extend(0i32.to_be_bytes());
        out.extend((extension.len() as i32).to_be_bytes());
        out.extend_from_slice(extension);
        for (index, position, recorded_at, payload) in rows {
            out.extend(row(*index, *position, *recorded_at, payload));
        }
        out.extend((-1i16).to_be_bytes());
        out
    }

    fn parse(chunks: &[&[u8]]) -> Result<Vec<LogEventRow>, StoreError> {
        let mut rows = BinaryRows::default();
        let mut parsed = Vec::new();
        for chunk in chunks {
            rows.extend(chunk);
            while let Some(row) = rows.next_row()? {
                parsed.push(row);
            }
        }
        rows.finish()?;
        Ok(parsed)
    }

    fn sample() -> Vec<LogEventRow> {
        vec![
            (0, 17, -5, r#"{"a": 1}"#.to_owned()),
            (1, 18, 1_700_000_000_000_000, r#""é\n\"\\""#.to_owned()),
            (2, i64::MAX, i64::MIN, String::new()),
        ]
    }

    #[test]
    fn rows_parse_whatever_the_chunks_are_cut_at() {
        let bytes = stream(&sample(), b"ext");
        assert_eq!(parse(&[&bytes]).unwrap(), sample());
        for cut in 0..=bytes.len() {
            let (a, b) = bytes.split_at(cut);
            assert_eq!(parse(&[a, b]).unwrap(), sample(), "cut at {cut}");
        }
        let bytewise: Vec<&[u8]> = bytes.chunks(1).collect();
        assert_eq!(parse(&bytewise).unwrap(), sample());
    }

    #[test]
    fn an_empty_read_is_a_header_and_a_trailer() {
        assert_eq!(parse(&[&stream(&[], b"")]).unwrap(), []);
    }

    #[test]
    fn malformed_streams_are_errors() {
        let good = stream(&sample(), b"");
        let truncated = &good[..good.len() - 2];
        assert!(parse(&[truncated]).is_err(), "no trailer");
        let mut extra = good.clone();
        extra.push(0);
        assert!(parse(&[&extra]).is_err(), "bytes after the trailer");
        let mut signature = good.clone();
        signature[0] = b'X';
        assert!(parse(&[&signature]).is_err(), "no signature");
        let mut oids = good.clone();
        oids[11..15].copy_from_slice(&(1i32 << 16).to_be_bytes());
        assert!(parse(&[&oids]).is_err(), "OIDs");
        let header = stream(&[], b"").len() - 2;
        let mut fields = good.clone();
        fields[header..header + 2].copy_from_slice(&3i16.to_be_bytes());
        assert!(parse(&[&fields]).is_err(), "three fields");
        let mut null = good.clone();
        null[header + 2..header + 6].copy_from_slice(&(-1i32).to_be_bytes());
        assert!(parse(&[&null]).is_err(), "a NULL");
        let mut short = good.clone();
        short[header + 2..header + 6].copy_from_slice(&4i32.to_be_bytes());
        assert!(parse(&[&short]).is_err(), "a 4-byte bigint");
        let mut latin1 = stream(&[(0, 1, 2, "x".to_owned())], b"");
        let at = latin1.len() - 3;
        latin1[at] = 0xe9;
        assert!(parse(&[&latin1]).is_err(), "not UTF-8");
    }
}
