//! The feed: every stored event in position order, optionally only those
//! of one reducer name or one log, read a page at a time.
//!
//! Positions are gap-free and become visible in increasing order (see the
//! stores), so a reader that asks for the events after the last position
//! it saw never misses one committed later. A page also says how far it
//! looked ([`FeedPage::through`]): a filtered page may hold few events for
//! a long stretch of positions, and a reader resumes after `through`
//! rather than after its last event.

use uuid::Uuid;

use super::StoredEvent;
use crate::LogId;

/// Which events of the feed a reader wants; the default is all of them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FeedFilter {
    /// Only events of logs bound to this reducer name.
    pub reducer: Option<String>,
    /// Only events of this log.
    pub log_id: Option<LogId>,
}

impl FeedFilter {
    /// Whether an event of `log_id`, bound to `reducer`, passes.
    pub fn matches(&self, log_id: LogId, reducer: &str) -> bool {
        self.reducer.as_deref().is_none_or(|r| r == reducer)
            && self.log_id.is_none_or(|l| l == log_id)
    }
}

/// An event of the feed: a stored event and the reducer name of its log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FeedEvent {
    /// The reducer name the event's log is bound to.
    pub reducer: String,
    /// The event.
    pub event: StoredEvent,
}

/// A page of the feed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FeedPage {
    /// Matching events, in position order.
    pub events: Vec<FeedEvent>,
    /// Every matching event at a position up to this one is in this page
    /// or at or before the page's `after`: the position to read on from.
    /// At least `after`.
    pub through: u64,
    /// The last position committed when the page was read: the page reached
    /// the end of the feed if `through` is (at least) this.
    pub head: u64,
}

/// A feed row: the head as the statement saw it, then the event's log id,
/// index, position, recorded at, payload and reducer (all `NULL` on the
/// one row of an empty page).
pub(crate) type FeedRow = (
    i64,
    Option<Uuid>,
    Option<i64>,
    Option<i64>,
    Option<i64>,
    Option<String>,
    Option<String>,
);

/// The page `rows` make, read after `after` with `limit` and a byte budget
/// of `max_bytes`. A page that may have been cut (by `limit` or by bytes)
/// reaches its last event; a page that was not reaches the head its
/// statement saw.
pub(crate) fn page(rows: Vec<FeedRow>, after: u64, limit: u32, max_bytes: u64) -> FeedPage {
    let head = rows.first().map_or(after, |row| row.0 as u64);
    let events: Vec<FeedEvent> = rows
        .into_iter()
        .filter_map(
            |(_, log_id, index, position, recorded_at, payload, reducer)| {
                Some(FeedEvent {
                    reducer: reducer?,
                    event: StoredEvent {
                        log_id: log_id?.into(),
                        index: index? as u64,
                        position: position? as u64,
                        recorded_at: recorded_at?,
                        payload: payload?,
                    },
                })
            },
        )
        .collect();
    let bytes: u64 = events.iter().map(|e| e.event.payload.len() as u64).sum();
    let cut = events.len() >= limit as usize || bytes >= max_bytes;
    let through = match events.last() {
        Some(last) if cut => last.event.position,
        _ => head,
    };
    FeedPage {
        events,
        through: through.max(after),
        head: head.max(through),
    }
}

/// The SQL of a feed page for a filter's shape, one statement (so one
/// snapshot): the rows and, on each, the head, the counter's value in that
/// snapshot (every position up to it is committed and visible in it, since
/// positions become visible in order); no event past the head is read. Its
/// parameters, PostgreSQL's `$1`… (for SQLite, through `sqlite_sql`), are
/// bound in this order: after, limit, max bytes, then the reducer name and
/// the log id if the filter has them. `payload` is the payload column as
/// text. Each shape is its own statement, so each gets its own plan.
pub(crate) fn page_sql(filter: &FeedFilter, payload: &str) -> String {
    let param = |n: usize| format!("${n}");
    let (after, limit, max_bytes) = (param(1), param(2), param(3));
    let mut next = 4;
    let mut conditions = format!(
        "e.position > {after} AND e.position <= (SELECT last FROM event_positions LIMIT 1)"
    );
    if filter.reducer.is_some() {
        conditions.push_str(&format!(" AND l.reducer = {}", param(next)));
        next += 1;
    }
    if filter.log_id.is_some() {
        conditions.push_str(&format!(" AND e.log_id = {}", param(next)));
    }
    // The head's one row, joined to the page's rows (none: one row of
    // NULLs), so that even an empty page says how far it looked. `LIMIT 1`
    // tells the planner the counter is one row: without statistics it
    // guessed 2,200, costed the page past PostgreSQL's JIT threshold and
    // spent 14 ms compiling each one (46 ms a page instead of 2.4).
    format!(
        "SELECT h.head, page.log_id, page.idx, page.position, page.recorded_at, page.payload, page.reducer
         FROM (SELECT last AS head FROM event_positions LIMIT 1) h LEFT JOIN (
             SELECT e.log_id, e.idx, e.position, e.recorded_at, {payload} AS payload, l.reducer,
                    sum(e.payload_bytes) OVER (ORDER BY e.position) - e.payload_bytes AS before
             FROM events e JOIN logs l ON l.log_id = e.log_id
             WHERE {conditions}
             ORDER BY e.position LIMIT {limit}
         ) page ON page.before < {max_bytes} ORDER BY page.position"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(position: i64, bytes: usize) -> FeedRow {
        (
            9,
            Some(Uuid::nil()),
            Some(position),
            Some(position),
            Some(0),
            Some("x".repeat(bytes)),
            Some("r".into()),
        )
    }

    fn empty(head: i64) -> FeedRow {
        (head, None, None, None, None, None, None)
    }

    #[test]
    fn a_short_page_reaches_the_head_and_a_cut_one_its_last_event() {
        assert_eq!(page(vec![row(3, 1)], 2, 10, 100).through, 9);
        let nothing = page(vec![empty(9)], 2, 10, 100);
        assert!(nothing.events.is_empty());
        assert_eq!((nothing.through, nothing.head), (9, 9));
        assert_eq!(page(vec![row(3, 1), row(5, 1)], 2, 2, 100).through, 5);
        assert_eq!(page(vec![row(3, 60), row(5, 60)], 2, 10, 100).through, 5);
        // Never before where the reader already was.
        assert_eq!(page(vec![empty(5)], 7, 10, 100).through, 7);
    }

    #[test]
    fn filters_match_reducer_and_log() {
        let log = LogId::default();
        let all = FeedFilter::default();
        assert!(all.matches(log, "payment"));
        let payments = FeedFilter {
            reducer: Some("payment".into()),
            log_id: None,
        };
        assert!(payments.matches(log, "payment"));
        assert!(!payments.matches(log, "counter"));
        let one = FeedFilter {
            reducer: None,
            log_id: Some(log),
        };
        assert!(one.matches(log, "counter"));
        assert!(!one.matches(LogId::default(), "counter"));
    }
}
