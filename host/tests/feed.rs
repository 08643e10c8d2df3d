//! The feed on both stores: filtered pages that say how far they looked,
//! byte budgets, subscriptions with checkpoints, and followers that see
//! every event once, in order, while writers race, woken only by the
//! store's hints (PostgreSQL `NOTIFY`, SQLite's poll).

#[macro_use]
mod common;

use std::sync::Arc;
use std::time::Duration;

use common::{events, postgres, sqlite};
use eventlogs_host::LogId;
use eventlogs_host::feed::{Feed, FeedOptions, Followed};
use eventlogs_host::store::{EventStore, FeedFilter, ProjectionState, Write, Written};
use serde_json::{Value, json};

type Store = Arc<dyn EventStore>;

behaviours!(
    pages_filter_by_reducer_and_log_and_say_how_far_they_looked,
    pages_are_cut_at_their_byte_budget,
    subscriptions_keep_their_filter_and_checkpoint,
    followers_see_every_event_once_in_order_while_writers_race,
    a_follower_that_falls_out_of_the_buffer_ends_lagged,
    a_closed_feed_ends_its_followers,
    without_hints_the_poll_finds_what_others_committed,
    projection_states_only_move_forward_and_a_new_definition_drops_them,
);

async fn create(store: &Store, reducer: &str, values: &[Value]) -> LogId {
    let log_id = LogId::new();
    let written = store
        .write(Write::create(log_id, true, reducer, events(values)))
        .await
        .unwrap();
    assert!(matches!(written, Written::Stored(_)), "{written:?}");
    log_id
}

async fn append(store: &Store, log_id: LogId, values: &[Value]) {
    store
        .write(Write::append(log_id, None, events(values)))
        .await
        .unwrap();
}

fn filter(reducer: Option<&str>, log_id: Option<LogId>) -> FeedFilter {
    FeedFilter {
        reducer: reducer.map(Into::into),
        log_id,
    }
}

/// Every event passing `filter` after `after`, paged `limit` at a time.
async fn read_all(
    store: &Store,
    after: u64,
    filter: &FeedFilter,
    limit: u32,
) -> Vec<(LogId, u64, u64, String)> {
    let mut after = after;
    let mut seen = Vec::new();
    loop {
        let page = store.feed(after, filter, limit, u64::MAX).await.unwrap();
        assert!(page.through >= after && page.through <= page.head);
        seen.extend(page.events.iter().map(|e| {
            (
                e.event.log_id,
                e.event.index,
                e.event.position,
                e.reducer.clone(),
            )
        }));
        if page.through == page.head {
            return seen;
        }
        after = page.through;
    }
}

async fn pages_filter_by_reducer_and_log_and_say_how_far_they_looked(store: Store) {
    let start = store.feed_head().await.unwrap();
    let a = create(&store, "payment", &[json!(1), json!(2)]).await;
    let b = create(&store, "counter", &[json!({"add": 1})]).await;
    append(&store, a, &[json!(3)]).await;
    append(&store, b, &[json!({"add": 2}), json!({"add": 3})]).await;
    let head = store.feed_head().await.unwrap();
    assert_eq!(head, start + 6);

    let all = read_all(&store, start, &FeedFilter::default(), 2).await;
    let positions: Vec<u64> = all.iter().map(|e| e.2).collect();
    assert_eq!(positions, (start + 1..=head).collect::<Vec<_>>());
    let expected = [
        (a, 0, "payment"),
        (a, 1, "payment"),
        (b, 0, "counter"),
        (a, 2, "payment"),
        (b, 1, "counter"),
        (b, 2, "counter"),
    ];
    for ((log, index, _, reducer), (e_log, e_index, e_reducer)) in all.iter().zip(expected) {
        assert_eq!(
            (*log, *index, reducer.as_str()),
            (e_log, e_index, e_reducer)
        );
    }

    let payments = read_all(&store, start, &filter(Some("payment"), None), 1).await;
    let indexes: Vec<(LogId, u64)> = payments.iter().map(|e| (e.0, e.1)).collect();
    assert_eq!(indexes, [(a, 0), (a, 1), (a, 2)]);
    let of_b = read_all(&store, start, &filter(None, Some(b)), 10).await;
    assert_eq!(of_b.iter().map(|e| e.1).collect::<Vec<_>>(), [0, 1, 2]);
    assert!(
        read_all(&store, start, &filter(Some("payment"), Some(b)), 10)
            .await
            .is_empty()
    );
    assert!(
        read_all(&store, start, &filter(Some("nothing"), None), 10)
            .await
            .is_empty()
    );

    // A short filtered page looked all the way to the head, even when it
    // found nothing: a reader resumes there instead of rescanning.
    let page = store
        .feed(start, &filter(Some("nothing"), None), 10, u64::MAX)
        .await
        .unwrap();
    assert!(page.events.is_empty());
    assert_eq!((page.through, page.head), (head, head));
    // A full page reached its last event only.
    let page = store
        .feed(start, &FeedFilter::default(), 2, u64::MAX)
        .await
        .unwrap();
    assert_eq!(page.through, start + 2);
    // Past the head: nothing, and no going back.
    let page = store
        .feed(head + 10, &FeedFilter::default(), 10, u64::MAX)
        .await
        .unwrap();
    assert!(page.events.is_empty());
    assert_eq!(page.through, head + 10);
}

async fn pages_are_cut_at_their_byte_budget(store: Store) {
    let start = store.feed_head().await.unwrap();
    let big = json!("x".repeat(1000));
    let log = create(&store, "payment", &[big.clone(), big.clone(), big.clone()]).await;
    let only = filter(None, Some(log));
    // Each event is 1,002 bytes: a 1,500-byte budget holds two (the second
    // starts before the budget is reached).
    let page = store.feed(start, &only, 100, 1500).await.unwrap();
    assert_eq!(page.events.len(), 2);
    assert_eq!(page.through, start + 2);
    // At least one event, however small the budget.
    let page = store.feed(start, &only, 100, 1).await.unwrap();
    assert_eq!(page.events.len(), 1);
    assert_eq!(page.through, start + 1);
}

async fn subscriptions_keep_their_filter_and_checkpoint(store: Store) {
    let name = format!("sub-{}", LogId::new());
    assert_eq!(store.subscription(&name).await.unwrap(), None);
    let payments = filter(Some("payment"), None);
    let (created, fresh) = store.put_subscription(&name, &payments, 10).await.unwrap();
    assert!(fresh);
    assert_eq!(
        (created.position, created.filter.clone()),
        (0, payments.clone())
    );
    assert_eq!(
        store
            .checkpoint(&name, 7, 20)
            .await
            .unwrap()
            .unwrap()
            .position,
        7
    );
    // A new filter keeps the checkpoint.
    let log = LogId::new();
    let (changed, fresh) = store
        .put_subscription(&name, &filter(None, Some(log)), 30)
        .await
        .unwrap();
    assert!(!fresh);
    assert_eq!(
        (
            changed.position,
            changed.filter.log_id,
            changed.filter.reducer.clone()
        ),
        (7, Some(log), None)
    );
    assert_eq!((changed.created_at, changed.updated_at), (10, 30));
    assert_eq!(store.subscription(&name).await.unwrap(), Some(changed));
    assert!(
        store
            .subscriptions()
            .await
            .unwrap()
            .iter()
            .any(|s| s.name == name)
    );
    assert!(store.checkpoint("no-such", 1, 40).await.unwrap().is_none());
    assert!(store.delete_subscription(&name).await.unwrap());
    assert!(!store.delete_subscription(&name).await.unwrap());
    assert_eq!(store.subscription(&name).await.unwrap(), None);
}

/// Follows until `count` events arrived (or a minute passed).
async fn follow_until(
    feed: &Feed,
    after: u64,
    filter: FeedFilter,
    count: usize,
) -> Vec<(LogId, u64, u64)> {
    let mut follow = feed.follow(after, filter);
    let mut seen = Vec::new();
    while seen.len() < count {
        let next = tokio::time::timeout(Duration::from_secs(60), follow.next())
            .await
            .unwrap_or_else(|_| panic!("no event within a minute after {} of {count}", seen.len()));
        match next {
            Some(Followed::Events(events)) => {
                seen.extend(
                    events
                        .iter()
                        .map(|e| (e.event.log_id, e.event.index, e.event.position)),
                );
            }
            other => panic!("follower ended: {other:?}"),
        }
    }
    seen
}

/// The fallback poll (`--feed-poll-ms`): with the store's hints off and
/// the writes made past this feed (as another process would), a caught-up
/// follower still gets them.
async fn without_hints_the_poll_finds_what_others_committed(store: Store) {
    let feed = Feed::new(
        store.clone(),
        FeedOptions {
            hints: false,
            poll: Duration::from_millis(50),
            ..FeedOptions::default()
        },
    );
    let start = store.feed_head().await.unwrap();
    let follower = tokio::spawn({
        let feed = feed.clone();
        async move { follow_until(&feed, start, FeedFilter::default(), 3).await }
    });
    // Caught up and waiting on the ring before anything is written.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let log = create(&store, "counter", &[json!(1), json!(2), json!(3)]).await;
    let seen = tokio::time::timeout(Duration::from_secs(10), follower)
        .await
        .expect("the poll found the events within 10 s")
        .unwrap();
    assert_eq!(
        seen.iter().map(|e| (e.0, e.1)).collect::<Vec<_>>(),
        vec![(log, 0), (log, 1), (log, 2)]
    );
}

async fn followers_see_every_event_once_in_order_while_writers_race(store: Store) {
    const WRITERS: u64 = 6;
    const EACH: u64 = 30;
    let start = store.feed_head().await.unwrap();
    // Not told about these writes: woken by the store's hints alone.
    let feed = Feed::new(
        store.clone(),
        FeedOptions {
            buffer_bytes: 4096,
            ..FeedOptions::default()
        },
    );
    let logs = [
        create(&store, "payment", &[json!(0)]).await,
        create(&store, "counter", &[json!(0)]).await,
    ];
    let total = 2 + (WRITERS * EACH * 2) as usize;
    let all = tokio::spawn({
        let feed = feed.clone();
        async move { follow_until(&feed, start, FeedFilter::default(), total).await }
    });
    let counters = tokio::spawn({
        let feed = feed.clone();
        async move { follow_until(&feed, start, filter(Some("counter"), None), total / 2).await }
    });
    let writers: Vec<_> = (0..WRITERS)
        .map(|w| {
            let store = store.clone();
            tokio::spawn(async move {
                for i in 0..EACH {
                    let log = logs[((w + i) % 2) as usize];
                    append(&store, log, &[json!(i), json!(i)]).await;
                    // Half of them start late: the followers go from the
                    // store's pages to the buffer while writes arrive.
                    if i % 7 == 0 {
                        tokio::time::sleep(Duration::from_millis(20)).await;
                    }
                }
            })
        })
        .collect();
    for writer in writers {
        writer.await.unwrap();
    }
    let seen = all.await.unwrap();
    let positions: Vec<u64> = seen.iter().map(|e| e.2).collect();
    assert_eq!(
        positions,
        (start + 1..=start + total as u64).collect::<Vec<_>>()
    );
    for log in logs {
        let indexes: Vec<u64> = seen.iter().filter(|e| e.0 == log).map(|e| e.1).collect();
        assert_eq!(indexes, (0..total as u64 / 2).collect::<Vec<_>>());
    }
    let counted = counters.await.unwrap();
    assert!(counted.iter().all(|e| e.0 == logs[1]));
    assert_eq!(
        counted.iter().map(|e| e.1).collect::<Vec<_>>(),
        (0..total as u64 / 2).collect::<Vec<_>>()
    );
    assert_eq!(feed.followers(), 0);
}

async fn a_follower_that_falls_out_of_the_buffer_ends_lagged(store: Store) {
    let feed = Feed::new(
        store.clone(),
        FeedOptions {
            buffer_bytes: 100,
            ..FeedOptions::default()
        },
    );
    let log = create(&store, "payment", &[json!(0)]).await;
    let head = store.feed_head().await.unwrap();
    let mut follow = feed.follow(head - 1, FeedFilter::default());
    // From the store's page, then caught up: the next one comes from the
    // buffer, and so will everything after it.
    assert!(matches!(follow.next().await, Some(Followed::Events(e)) if e.len() == 1));
    append(&store, log, &[json!(1)]).await;
    feed.stored();
    assert!(matches!(follow.next().await, Some(Followed::Events(e)) if e.len() == 1));
    // Far more than the buffer holds, while it reads nothing.
    for i in 0..20 {
        append(&store, log, &[json!("y".repeat(50 + i))]).await;
    }
    feed.stored();
    let ended = tokio::time::timeout(Duration::from_secs(30), async {
        loop {
            match follow.next().await {
                Some(Followed::Events(_)) => {}
                other => return other,
            }
        }
    })
    .await
    .expect("the follower ends");
    assert!(matches!(ended, Some(Followed::Lagged)), "{ended:?}");
    assert!(follow.next().await.is_none());
    // A new follower from where it was reads everything from the store.
    let again = follow_until(&feed, head + 1, FeedFilter::default(), 20).await;
    assert_eq!(
        again.iter().map(|e| e.1).collect::<Vec<_>>(),
        (2..=21).collect::<Vec<_>>()
    );
}

async fn a_closed_feed_ends_its_followers(store: Store) {
    let feed = Feed::new(store.clone(), FeedOptions::default());
    let head = store.feed_head().await.unwrap();
    let mut follow = feed.follow(head, FeedFilter::default());
    let waiting = tokio::spawn(async move { follow.next().await.is_none() });
    tokio::time::sleep(Duration::from_millis(50)).await;
    feed.close();
    assert!(
        tokio::time::timeout(Duration::from_secs(5), waiting)
            .await
            .unwrap()
            .unwrap()
    );
}

async fn projection_states_only_move_forward_and_a_new_definition_drops_them(store: Store) {
    let name = format!("totals-{}", LogId::new());
    let payments = filter(Some("payment"), None);
    let (created, fresh) = store
        .put_projection(&name, "payment", &payments, 10)
        .await
        .unwrap();
    assert!(fresh);
    assert_eq!(
        (
            created.reducer.as_str(),
            &created.filter,
            created.updated_at
        ),
        ("payment", &payments, 10)
    );
    let v1 = eventlogs_host::Version::of(b"one");
    let state = |position, caught_up| ProjectionState {
        version: v1,
        position,
        events: position,
        aggregate: format!("{{\"n\":{position}}}"),
        caught_up,
        updated_at: 20,
    };
    assert!(
        store
            .save_projection_state(&name, 10, &state(5, false))
            .await
            .unwrap()
    );
    // Not further: not saved. Catching up at the same position: saved.
    assert!(
        !store
            .save_projection_state(&name, 10, &state(3, true))
            .await
            .unwrap()
    );
    assert!(
        !store
            .save_projection_state(&name, 10, &state(5, false))
            .await
            .unwrap()
    );
    assert!(
        store
            .save_projection_state(&name, 10, &state(5, true))
            .await
            .unwrap()
    );
    // For an older definition: never saved.
    assert!(
        !store
            .save_projection_state(&name, 9, &state(8, true))
            .await
            .unwrap()
    );
    assert_eq!(
        store.projection_states(&name).await.unwrap(),
        [state(5, true)]
    );
    // The same definition again keeps the states; another drops them.
    let (same, fresh) = store
        .put_projection(&name, "payment", &payments, 30)
        .await
        .unwrap();
    assert!(!fresh);
    assert_eq!(same.updated_at, 10);
    assert_eq!(store.projection_states(&name).await.unwrap().len(), 1);
    let (changed, _) = store
        .put_projection(&name, "payment", &FeedFilter::default(), 40)
        .await
        .unwrap();
    assert_eq!(
        (changed.filter, changed.updated_at),
        (FeedFilter::default(), 40)
    );
    assert!(store.projection_states(&name).await.unwrap().is_empty());
    assert_eq!(
        store.projection(&name).await.unwrap().unwrap().updated_at,
        40
    );
    assert!(
        store
            .projections()
            .await
            .unwrap()
            .iter()
            .any(|p| p.name == name)
    );
    assert!(
        store
            .save_projection_state(&name, 40, &state(1, false))
            .await
            .unwrap()
    );
    assert!(store.delete_projection(&name).await.unwrap());
    assert!(!store.delete_projection(&name).await.unwrap());
    assert_eq!(store.projection(&name).await.unwrap(), None);
    assert!(store.projection_states(&name).await.unwrap().is_empty());
}

/// A client that reconnects just after the last follower left finds the
/// buffer as that follower left it; when the tail then moves the buffer to
/// the store's head (nobody followed for a moment), the new follower,
/// already reading from the buffer, reads the store: it was not slow, so
/// it does not end as lagged. Single-threaded, so the tail runs only
/// where this test yields.
#[tokio::test(flavor = "current_thread")]
async fn a_follower_that_reconnects_as_the_buffer_moves_is_not_lagged() {
    let store: Store = Arc::new(sqlite().await);
    let feed = Feed::new(store.clone(), FeedOptions::default());
    let log = create(&store, "payment", &[json!(0)]).await;
    let head = store.feed_head().await.unwrap();
    let mut first = feed.follow(head, FeedFilter::default());
    // The tail starts the buffer at the head, then reads the next event
    // into it.
    tokio::time::sleep(Duration::from_millis(50)).await;
    append(&store, log, &[json!(1)]).await;
    feed.stored();
    assert!(matches!(first.next().await, Some(Followed::Events(e)) if e.len() == 1));
    // The last follower leaves, and the tail sees nobody following.
    drop(first);
    feed.stored();
    tokio::time::sleep(Duration::from_millis(50)).await;
    append(&store, log, &[json!(2), json!(3)]).await;
    // The client is back, from before what the buffer still holds: its
    // first step reads the buffer without yielding.
    let mut again = feed.follow(head, FeedFilter::default());
    let from_buffer = again.next().await;
    assert!(
        matches!(&from_buffer, Some(Followed::Events(e)) if e.len() == 1 && e[0].event.position == head + 1),
        "{from_buffer:?}"
    );
    // The tail now moves the buffer to the store's head.
    feed.stored();
    tokio::time::sleep(Duration::from_millis(50)).await;
    let next = tokio::time::timeout(Duration::from_secs(30), again.next())
        .await
        .expect("the follower goes on");
    assert!(
        matches!(&next, Some(Followed::Events(e)) if e.len() == 2),
        "{next:?}"
    );
}
