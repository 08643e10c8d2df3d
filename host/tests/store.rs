//! One behavioural suite for every event store: run against PostgreSQL (the
//! real server, a fresh database per test) and against embedded SQLite (a
//! fresh file per test).

#[macro_use]
mod common;

use std::sync::Arc;

use common::{events, postgres, sqlite};

use eventlogs_host::LogId;
use eventlogs_host::payload::Payload;
use eventlogs_host::store::postgres::PostgresStore;
use eventlogs_host::store::sqlite::SqliteStore;
use eventlogs_host::store::{
    Appended, EventStore, FeedFilter, StoreError, StoredEvent, Write, Written,
};
use serde_json::{Value, json};

type Store = Arc<dyn EventStore>;

behaviours!(
    create_append_and_page,
    unknown_logs_are_not_found,
    idempotent_create_replays_and_refuses_reuse,
    idempotent_append_replays_even_with_a_stale_expectation,
    batch_append_is_all_or_nothing,
    racing_appends_have_exactly_one_winner_per_index,
    unconditional_appends_all_succeed_in_shared_batches,
    one_bad_request_never_fails_its_batch,
    positions_are_gap_free_in_commit_order,
    payloads_come_back_byte_for_byte,
    bad_requests_store_nothing,
    forgotten_keys_make_a_retry_a_new_request,
    pages_are_cut_at_their_byte_budget,
    a_read_streams_a_range_in_index_order,
    a_long_read_returns_payloads_byte_for_byte,
    a_long_read_dropped_early_leaves_the_store_usable,
);

fn payment(n: i64) -> Value {
    json!({"Captured": {"amount": n, "statement_descriptor": "Widgets, Inc"}})
}

async fn create(store: &Store, values: &[Value]) -> LogId {
    let log_id = LogId::new();
    let created = store
        .write(Write::create(log_id, true, "payment", events(values)))
        .await
        .unwrap();
    let Written::Stored(appended) = created else {
        panic!("a new log is stored, not replayed: {created:?}")
    };
    assert_eq!(
        (appended.log_id, appended.first_index, appended.last_index),
        (log_id, 0, values.len() as u64 - 1)
    );
    log_id
}

/// A new payment log whose events are these JSON texts, kept exactly.
async fn create_exact(store: &Store, texts: &[impl AsRef<str>]) -> LogId {
    let payloads: Vec<Payload> = texts
        .iter()
        .map(|t| Payload::parse(t.as_ref()).unwrap())
        .collect();
    let log_id = LogId::new();
    stored_now(
        store
            .write(Write::create(log_id, true, "payment", payloads.into()))
            .await,
    );
    log_id
}

fn append(log_id: LogId, values: &[Value], expected: Option<u64>, key: Option<&str>) -> Write {
    Write::append(log_id, expected, events(values)).with_key(key)
}

fn stored_now(written: Result<Written, StoreError>) -> Appended {
    match written {
        Ok(Written::Stored(appended)) => appended,
        other => panic!("expected a stored write, got {other:?}"),
    }
}

async fn stored(store: &Store, log_id: LogId) -> Vec<(u64, Value)> {
    let events = store.events(log_id, 0, 100_000, u64::MAX).await.unwrap();
    events
        .into_iter()
        .map(|e| (e.index, serde_json::from_str(&e.payload).unwrap()))
        .collect()
}

async fn create_append_and_page(store: Store) {
    let log_id = create(&store, &[payment(1)]).await;
    let batch = [payment(2), payment(3), payment(4)];
    let appended = stored_now(store.write(append(log_id, &batch, Some(0), None)).await);
    assert_eq!((appended.first_index, appended.last_index), (1, 3));
    assert_eq!(appended.last_position(), appended.first_position + 2);

    let info = store.log(log_id).await.unwrap();
    assert_eq!((info.reducer.as_str(), info.last_index), ("payment", 3));

    let all = store.events(log_id, 0, 101, u64::MAX).await.unwrap();
    assert_eq!(
        all.iter().map(|e| e.index).collect::<Vec<_>>(),
        [0, 1, 2, 3]
    );
    assert!(all.windows(2).all(|w| w[0].recorded_at <= w[1].recorded_at));
    assert!(all.windows(2).all(|w| w[0].position < w[1].position));
    assert_eq!(all[1].position, appended.first_position);
    assert!(all[0].recorded_at >= info.created_at);
    let payloads: Vec<Value> = all
        .iter()
        .map(|e| serde_json::from_str(&e.payload).unwrap())
        .collect();
    assert_eq!(payloads, [payment(1), payment(2), payment(3), payment(4)]);

    let page = store.events(log_id, 2, 1, u64::MAX).await.unwrap();
    assert_eq!(page.len(), 1);
    assert_eq!(page[0].index, 2);
    assert!(
        store
            .events(log_id, 4, 10, u64::MAX)
            .await
            .unwrap()
            .is_empty()
    );
}

/// A page stops before the first event that starts at or past its byte
/// budget, and always holds at least one event.
async fn pages_are_cut_at_their_byte_budget(store: Store) {
    let padded = |n: usize| json!({ "pad": "x".repeat(n) });
    let log_id = create(&store, &[padded(90)]).await;
    let more = [padded(90), padded(90), padded(500), padded(90)];
    stored_now(store.write(append(log_id, &more, Some(0), None)).await);
    let sizes: Vec<usize> = store
        .events(log_id, 0, 10, u64::MAX)
        .await
        .unwrap()
        .iter()
        .map(|e| e.payload.len())
        .collect();
    assert_eq!(sizes, [100, 100, 100, 510, 100]);
    let indexes = |page: Vec<StoredEvent>| page.iter().map(|e| e.index).collect::<Vec<_>>();
    // 100 + 100 = 200 < 250: the third starts within the budget.
    let page = store.events(log_id, 0, 10, 250).await.unwrap();
    assert_eq!(indexes(page), [0, 1, 2]);
    // The fourth (510 bytes) alone exceeds 100: still one event.
    let page = store.events(log_id, 3, 10, 100).await.unwrap();
    assert_eq!(indexes(page), [3]);
    // Exactly at the budget: the next event is left out.
    let page = store.events(log_id, 1, 10, 200).await.unwrap();
    assert_eq!(indexes(page), [1, 2]);
    // The count still bounds it.
    let page = store.events(log_id, 0, 2, u64::MAX).await.unwrap();
    assert_eq!(indexes(page), [0, 1]);
}

/// A fold's read: one stream of a log's events in index order, from an
/// index through an index or the end, exactly what a page would return.
async fn a_read_streams_a_range_in_index_order(store: Store) {
    use futures_util::TryStreamExt;
    let values: Vec<Value> = (0..2_500).map(payment).collect();
    let log_id = create(&store, &values[..1_000]).await;
    for chunk in values[1_000..].chunks(500) {
        stored_now(store.write(append(log_id, chunk, None, None)).await);
    }
    let other = create(&store, &[payment(-1)]).await;
    let paged = store.events(log_id, 0, 100_000, u64::MAX).await.unwrap();
    let read = |from, through| {
        let store = store.clone();
        async move {
            let events: Vec<StoredEvent> = store
                .read(log_id, from, through)
                .try_collect()
                .await
                .unwrap();
            events
        }
    };
    assert_eq!(read(0, None).await, paged, "the whole log, as paged");
    // Long bounded runs (read with COPY on PostgreSQL) and short ones.
    assert_eq!(read(0, Some(2_499)).await, paged, "the whole log, bounded");
    assert_eq!(read(0, Some(9_999)).await, paged, "bounded beyond the end");
    assert_eq!(read(300, Some(2_200)).await, paged[300..=2_200]);
    assert_eq!(read(1_200, Some(1_202)).await, paged[1_200..=1_202]);
    assert_eq!(read(2_499, None).await, paged[2_499..]);
    assert!(read(2_500, None).await.is_empty(), "past the end");
    assert!(read(7, Some(6)).await.is_empty(), "an empty range");
    let theirs: Vec<StoredEvent> = store.read(other, 0, None).try_collect().await.unwrap();
    assert_eq!(theirs.len(), 1, "only the log's own events");
    assert_eq!(theirs[0].payload, payment(-1).to_string());
}

/// A long read (a binary COPY on PostgreSQL) returns what a page returns,
/// byte for byte, whatever the payloads hold.
async fn a_long_read_returns_payloads_byte_for_byte(store: Store) {
    use futures_util::TryStreamExt;
    let mut texts: Vec<String> = [
        r#"{"add": 18446744073709551617}"#,
        r#""é\n\"\\""#,
        "{ \"z\" : 1,\n  \"a\" : { \"y\": [1, 2.50, -0] }, \"z\": 2 }",
        r#""\ud83d\ude00 \u00e9""#,
        "\"\u{1F600} and \u{e9}\"",
    ]
    .map(str::to_owned)
    .to_vec();
    texts.extend((0..1_500).map(|n| payment(n).to_string()));
    let log_id = create_exact(&store, &texts).await;
    let paged = store.events(log_id, 0, 100_000, u64::MAX).await.unwrap();
    let read: Vec<StoredEvent> = store
        .read(log_id, 0, Some(texts.len() as u64 - 1))
        .try_collect()
        .await
        .unwrap();
    assert_eq!(read, paged);
    let back: Vec<&str> = read.iter().map(|e| e.payload.as_str()).collect();
    assert_eq!(back, texts);
}

/// A long read stopped after a few events (a fold that failed, a stale
/// cache entry) leaves every connection of the store usable: on
/// PostgreSQL the rest of the COPY is read before its connection is
/// reused.
async fn a_long_read_dropped_early_leaves_the_store_usable(store: Store) {
    use futures_util::{StreamExt, TryStreamExt};
    let values: Vec<Value> = (0..3_000).map(payment).collect();
    let log_id = create(&store, &values).await;
    for _ in 0..4 {
        let mut read = store.read(log_id, 0, Some(2_999));
        for index in 0..10 {
            assert_eq!(read.next().await.unwrap().unwrap().index, index);
        }
    }
    let reads = (0..12).map(|_| async {
        let info = store.log(log_id).await.unwrap();
        let page = store.events(log_id, 2_990, 100, u64::MAX).await.unwrap();
        (info.last_index, page.len())
    });
    for answer in futures_util::future::join_all(reads).await {
        assert_eq!(answer, (2_999, 10));
    }
    let whole: Vec<StoredEvent> = store
        .read(log_id, 0, Some(2_999))
        .try_collect()
        .await
        .unwrap();
    assert_eq!(whole.len(), 3_000);
    stored_now(
        store
            .write(append(log_id, &[payment(1)], Some(2_999), None))
            .await,
    );
}

async fn unknown_logs_are_not_found(store: Store) {
    let ghost = LogId::new();
    assert_eq!(store.log(ghost).await, Err(StoreError::LogNotFound(ghost)));
    assert_eq!(
        store.events(ghost, 0, 10, u64::MAX).await,
        Err(StoreError::LogNotFound(ghost))
    );
    assert_eq!(
        store.write(append(ghost, &[payment(1)], None, None)).await,
        Err(StoreError::LogNotFound(ghost))
    );
}

async fn idempotent_create_replays_and_refuses_reuse(store: Store) {
    let log_id = LogId::new();
    let request =
        Write::create(log_id, true, "payment", events(&[payment(1)])).with_key(Some("create-1"));
    let created = stored_now(store.write(request.clone()).await);
    assert_eq!(
        store.write(request.clone()).await,
        Ok(Written::Replayed(created))
    );
    assert_eq!(
        store.earlier(&request).await,
        Ok(Some(Written::Replayed(created)))
    );

    // A server-generated id is not part of the request: a retry gets a new
    // one and still replays the original.
    let generated = |id| {
        Write::create(id, false, "payment", events(&[payment(1)])).with_key(Some("create-gen"))
    };
    let original = stored_now(store.write(generated(LogId::new())).await);
    assert_eq!(
        store.write(generated(LogId::new())).await,
        Ok(Written::Replayed(original))
    );

    let other =
        Write::create(log_id, true, "payment", events(&[payment(2)])).with_key(Some("create-1"));
    assert_eq!(
        store.write(other.clone()).await,
        Err(StoreError::IdempotencyKeyReused)
    );
    assert_eq!(
        store.earlier(&other).await,
        Err(StoreError::IdempotencyKeyReused)
    );
    assert_eq!(
        store.write(request.clone().with_key(None)).await,
        Err(StoreError::LogExists(log_id))
    );
    assert_eq!(stored(&store, log_id).await, [(0, payment(1))]);
}

async fn idempotent_append_replays_even_with_a_stale_expectation(store: Store) {
    let log_id = create(&store, &[payment(1)]).await;
    let request = append(log_id, &[payment(2)], Some(0), Some("append-1"));
    let appended = stored_now(store.write(request.clone()).await);
    assert_eq!((appended.first_index, appended.last_index), (1, 1));
    // The retry's expectation (index 0) is stale now; it is still a replay.
    assert_eq!(store.write(request).await, Ok(Written::Replayed(appended)));
    assert_eq!(
        store
            .write(append(log_id, &[payment(3)], Some(1), Some("append-1")))
            .await,
        Err(StoreError::IdempotencyKeyReused)
    );
    assert_eq!(
        stored(&store, log_id).await,
        [(0, payment(1)), (1, payment(2))]
    );
}

async fn batch_append_is_all_or_nothing(store: Store) {
    let log_id = create(&store, &[payment(1)]).await;
    stored_now(
        store
            .write(append(log_id, &[payment(2)], Some(0), None))
            .await,
    );
    let batch = [payment(3), payment(4), payment(5)];
    assert_eq!(
        store
            .write(append(log_id, &batch, Some(0), Some("late")))
            .await,
        Err(StoreError::ConcurrentAppend {
            current_last_index: 1
        })
    );
    assert_eq!(stored(&store, log_id).await.len(), 2);
    // The refused request did not consume its idempotency key.
    let appended = stored_now(
        store
            .write(append(log_id, &batch, Some(1), Some("late")))
            .await,
    );
    assert_eq!((appended.first_index, appended.last_index), (2, 4));
}

async fn racing_appends_have_exactly_one_winner_per_index(store: Store) {
    const WRITERS: u64 = 32;
    const ROUNDS: u64 = 200;
    let log_id = create(&store, &[json!({"round": 0, "writer": 0})]).await;
    for round in 0..ROUNDS {
        let tasks: Vec<_> = (0..WRITERS)
            .map(|writer| {
                let store = store.clone();
                tokio::spawn(async move {
                    let event = [json!({"round": round + 1, "writer": writer})];
                    store.write(append(log_id, &event, Some(round), None)).await
                })
            })
            .collect();
        let mut winners = 0;
        for task in tasks {
            match task.await.unwrap() {
                Ok(written) => {
                    assert_eq!(written.appended().first_index, round + 1);
                    winners += 1;
                }
                Err(StoreError::ConcurrentAppend { current_last_index }) => {
                    assert_eq!(
                        current_last_index,
                        round + 1,
                        "a loser sees the winner's index"
                    );
                }
                Err(other) => panic!("unexpected {other}"),
            }
        }
        assert_eq!(winners, 1, "round {round}");
    }
    let events = stored(&store, log_id).await;
    let indexes: Vec<u64> = events.iter().map(|(i, _)| *i).collect();
    assert_eq!(
        indexes,
        (0..=ROUNDS).collect::<Vec<_>>(),
        "contiguous, no duplicates"
    );
    assert!(events.iter().all(|(i, e)| e["round"] == json!(*i)));
}

/// Appends without an expectation never conflict: concurrent ones to one
/// log chain inside a batch, and many logs share each transaction.
async fn unconditional_appends_all_succeed_in_shared_batches(store: Store) {
    let logs = [
        create(&store, &[json!(0)]).await,
        create(&store, &[json!(0)]).await,
    ];
    let tasks: Vec<_> = (0..400u64)
        .map(|i| {
            let store = store.clone();
            let log_id = logs[(i % 2) as usize];
            tokio::spawn(async move { store.write(append(log_id, &[json!(i)], None, None)).await })
        })
        .collect();
    for task in tasks {
        stored_now(task.await.unwrap());
    }
    for log_id in logs {
        let indexes: Vec<u64> = stored(&store, log_id)
            .await
            .iter()
            .map(|(i, _)| *i)
            .collect();
        assert_eq!(indexes, (0..=200).collect::<Vec<_>>());
    }
}

/// A batch mixing every kind of outcome: each request gets its own.
async fn one_bad_request_never_fails_its_batch(store: Store) {
    let log_id = create(&store, &[payment(1)]).await;
    let taken = create(&store, &[payment(1)]).await;
    let writes = vec![
        append(log_id, &[payment(2)], Some(7), None),
        append(log_id, &[payment(3)], None, Some("mixed")),
        Write::create(taken, true, "payment", events(&[payment(9)])),
        append(LogId::new(), &[payment(4)], None, None),
        append(log_id, &[payment(5)], None, Some("mixed")),
        append(log_id, &[payment(6)], None, Some("mixed")),
        Write::create(LogId::new(), true, "payment", events(&[payment(7)])),
    ];
    let tasks: Vec<_> = writes
        .into_iter()
        .map(|write| {
            let store = store.clone();
            tokio::spawn(async move { store.write(write).await })
        })
        .collect();
    let mut outcomes = Vec::new();
    for task in tasks {
        outcomes.push(task.await.unwrap());
    }
    assert!(matches!(
        outcomes[0],
        Err(StoreError::ConcurrentAppend { .. })
    ));
    assert_eq!(outcomes[2], Err(StoreError::LogExists(taken)));
    assert!(matches!(outcomes[3], Err(StoreError::LogNotFound(_))));
    stored_now(outcomes[6].clone());
    // Three different requests under one key, in whatever order they were
    // queued: one is stored, the other two are reuses.
    let keyed = [&outcomes[1], &outcomes[4], &outcomes[5]];
    let winners: Vec<Appended> = keyed
        .iter()
        .filter_map(|o| match o {
            Ok(Written::Stored(appended)) => Some(*appended),
            _ => None,
        })
        .collect();
    assert_eq!(winners.len(), 1, "{keyed:?}");
    assert_eq!(
        keyed
            .iter()
            .filter(|o| ***o == Err(StoreError::IdempotencyKeyReused))
            .count(),
        2
    );
    let stored_log = stored(&store, log_id).await;
    assert_eq!(stored_log.len(), 2);
    assert_eq!(stored_log[1].0, winners[0].first_index);
    assert_eq!(stored(&store, taken).await, [(0, payment(1))]);
}

/// Positions: unique, gap-free, in commit order, whatever commits
/// concurrently; a reader paging by position sees each event once.
async fn positions_are_gap_free_in_commit_order(store: Store) {
    let all = FeedFilter::default();
    let before = store
        .feed(0, &all, u32::MAX, u64::MAX)
        .await
        .unwrap()
        .events
        .len();
    let log_id = create(&store, &[json!("first")]).await;
    let tasks: Vec<_> = (0..100u64)
        .map(|i| {
            let store = store.clone();
            tokio::spawn(async move {
                // Every third one conflicts and stores nothing.
                let expected = (i % 3 == 0).then_some(u64::MAX - 1);
                store
                    .write(append(log_id, &[json!(i), json!(i)], expected, None))
                    .await
            })
        })
        .collect();
    for task in tasks {
        let _ = task.await.unwrap();
    }
    let mut seen = Vec::new();
    let mut after = 0;
    loop {
        let page = store.feed(after, &all, 7, u64::MAX).await.unwrap();
        if page.events.is_empty() {
            break;
        }
        after = page.through;
        seen.extend(page.events.into_iter().map(|e| e.event));
    }
    assert_eq!(seen.len(), before + 1 + 66 * 2);
    let positions: Vec<u64> = seen.iter().map(|e| e.position).collect();
    assert_eq!(positions, (1..=seen.len() as u64).collect::<Vec<_>>());
    // Within a log, positions follow indexes.
    let ours: Vec<u64> = seen
        .iter()
        .filter(|e| e.log_id == log_id)
        .map(|e| e.index)
        .collect();
    assert_eq!(ours, (0..=132).collect::<Vec<_>>());
}

/// What a client sent comes back byte for byte: big and small numbers,
/// escapes, key order, duplicate keys and whitespace.
async fn payloads_come_back_byte_for_byte(store: Store) {
    let texts = [
        r#"{"add": 18446744073709551617}"#,
        "1e300",
        "0.1",
        r#""é\n\"\\""#,
        "{ \"z\" : 1,\n  \"a\" : { \"y\": [1, 2.50, -0], \"b\": null }, \"z\": 2 }",
        r#""\ud83d\ude00 \u00e9""#,
    ];
    let log_id = create_exact(&store, &texts).await;
    let back: Vec<String> = store
        .events(log_id, 0, 100, u64::MAX)
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.payload)
        .collect();
    assert_eq!(back, texts);
}

async fn bad_requests_store_nothing(store: Store) {
    let log_id = LogId::new();
    assert_eq!(
        store
            .write(Write::create(log_id, true, "payment", events(&[])))
            .await,
        Err(StoreError::NoEvents)
    );
    assert_eq!(
        store.log(log_id).await,
        Err(StoreError::LogNotFound(log_id))
    );
    let existing = create(&store, &[payment(1)]).await;
    assert_eq!(
        store.write(append(existing, &[], None, None)).await,
        Err(StoreError::NoEvents)
    );
    // An expectation beyond the end would leave a gap: refused.
    assert_eq!(
        store
            .write(append(existing, &[payment(2)], Some(5), None))
            .await,
        Err(StoreError::ConcurrentAppend {
            current_last_index: 0
        })
    );
    assert_eq!(stored(&store, existing).await.len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_postgres_pools_race_with_one_winner_per_index() {
    let Some(first) = postgres().await else {
        return;
    };
    let second = PostgresStore::with_pool(
        sqlx::postgres::PgPoolOptions::new()
            .connect_with((*first.pool().connect_options()).clone())
            .await
            .unwrap(),
    )
    .await
    .unwrap();
    let stores: [Store; 2] = [Arc::new(first), Arc::new(second)];
    let log_id = create(&stores[0], &[json!({"round": 0})]).await;
    for round in 0..100u64 {
        let tasks: Vec<_> = (0..16)
            .map(|writer| {
                let store = stores[writer % 2].clone();
                tokio::spawn(async move {
                    let event = [json!({"round": round + 1})];
                    store.write(append(log_id, &event, Some(round), None)).await
                })
            })
            .collect();
        let mut winners = 0;
        for task in tasks {
            winners += task.await.unwrap().is_ok() as u32;
        }
        assert_eq!(winners, 1, "round {round}");
    }
    assert_eq!(stores[1].log(log_id).await.unwrap().last_index, 100);
}

/// Keys stored before the cutoff are deleted (and only those); a retry with
/// a forgotten key is stored as a new request.
async fn forgotten_keys_make_a_retry_a_new_request(store: Store) {
    let log_id = create(&store, &[json!(0)]).await;
    let keyed = || append(log_id, &[json!("once")], None, Some("retry-me"));
    stored_now(store.write(keyed()).await);
    assert!(matches!(
        store.write(keyed()).await,
        Ok(Written::Replayed(_))
    ));
    let long_ago = 1_000_000; // 1970: nothing is that old
    assert_eq!(store.forget_keys(long_ago, 100).await.unwrap(), 0);
    assert!(matches!(
        store.write(keyed()).await,
        Ok(Written::Replayed(_))
    ));
    let tomorrow = (std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_micros()
        + 86_400_000_000) as i64;
    assert_eq!(store.forget_keys(tomorrow, 100).await.unwrap(), 1);
    let again = stored_now(store.write(keyed()).await);
    assert_eq!(again.first_index, 2, "stored as a new request");
}

/// Two stores (two writers, as in two daemon processes) on one database.
async fn two_writers(postgres_db: bool) -> Option<[Store; 2]> {
    if postgres_db {
        let url = common::postgres_database().await?;
        let first = PostgresStore::connect(&url).await.unwrap();
        let second = PostgresStore::connect(&url).await.unwrap();
        Some([Arc::new(first), Arc::new(second)])
    } else {
        let url = common::sqlite_database();
        let first = SqliteStore::connect(&url).await.unwrap();
        let second = SqliteStore::connect(&url).await.unwrap();
        Some([Arc::new(first), Arc::new(second)])
    }
}

/// Appends without an expectation from two writers to one log all succeed
/// (a batch that collides with the other writer's rows is stored again
/// under the write lock), with contiguous indexes and gap-free positions.
async fn two_writers_append_to_one_log(postgres_db: bool) {
    let Some(stores) = two_writers(postgres_db).await else {
        return;
    };
    let log_id = create(&stores[0], &[json!(0)]).await;
    let tasks: Vec<_> = (0..16)
        .map(|writer| {
            let store = stores[writer % 2].clone();
            tokio::spawn(async move {
                for i in 0..25 {
                    let event = [json!({"writer": writer, "i": i})];
                    stored_now(store.write(append(log_id, &event, None, None)).await);
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.unwrap();
    }
    let events = stores[1].events(log_id, 0, 1000, u64::MAX).await.unwrap();
    let indexes: Vec<u64> = events.iter().map(|e| e.index).collect();
    assert_eq!(indexes, (0..=400).collect::<Vec<_>>());
    let mut positions: Vec<u64> = events.iter().map(|e| e.position).collect();
    positions.sort_unstable();
    assert_eq!(positions, (1..=401).collect::<Vec<_>>());
    assert_eq!(stores[0].log(log_id).await.unwrap().last_index, 400);
}

/// The same keyed create sent to two writers at once (a client retrying
/// against another daemon) is stored once and replayed once.
async fn two_writers_store_one_keyed_create_once(postgres_db: bool) {
    let Some(stores) = two_writers(postgres_db).await else {
        return;
    };
    for round in 0..20 {
        let log_id = LogId::new();
        let key = format!("create-{round}");
        let tasks: Vec<_> = stores
            .iter()
            .map(|store| {
                let store = store.clone();
                let write = Write::create(log_id, true, "payment", events(&[payment(round)]))
                    .with_key(Some(&key));
                tokio::spawn(async move { store.write(write).await.unwrap() })
            })
            .collect();
        let mut outcomes = Vec::new();
        for task in tasks {
            outcomes.push(task.await.unwrap());
        }
        let stored: Vec<_> = outcomes
            .iter()
            .filter(|o| matches!(o, Written::Stored(_)))
            .collect();
        assert_eq!(stored.len(), 1, "round {round}: {outcomes:?}");
        assert_eq!(outcomes[0].appended(), outcomes[1].appended());
        assert_eq!(stores[0].log(log_id).await.unwrap().last_index, 0);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_postgres_writers_append_to_one_log() {
    two_writers_append_to_one_log(true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_sqlite_writers_append_to_one_log() {
    two_writers_append_to_one_log(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_postgres_writers_store_one_keyed_create_once() {
    two_writers_store_one_keyed_create_once(true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_sqlite_writers_store_one_keyed_create_once() {
    two_writers_store_one_keyed_create_once(false).await;
}

/// A PostgreSQL writer plans on the log ends it remembers, skipping the
/// read; none of that shows when another writer (another daemon process)
/// or a restored database moved an end: appends land at the log's real
/// end, an expectation of the real end is met, a stale one is refused with
/// the real end, and a retried key is still a replay.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_remembered_log_end_is_never_trusted_over_the_database() {
    let Some(url) = common::postgres_database().await else {
        return;
    };
    let first = PostgresStore::connect(&url).await.unwrap();
    let pool = first.pool().clone();
    let first: Store = Arc::new(first);
    let second: Store = Arc::new(PostgresStore::connect(&url).await.unwrap());
    let log_id = create(&first, &[json!(0)]).await;
    stored_now(first.write(append(log_id, &[json!(1)], None, None)).await);

    // The other writer moves the end from 1 to 4.
    stored_now(
        second
            .write(append(log_id, &[json!(2), json!(3), json!(4)], None, None))
            .await,
    );
    let met = stored_now(
        first
            .write(append(log_id, &[json!(5)], Some(4), None))
            .await,
    );
    assert_eq!(met.first_index, 5, "an expectation of the real end is met");
    stored_now(second.write(append(log_id, &[json!(6)], None, None)).await);
    let unconditional = stored_now(first.write(append(log_id, &[json!(7)], None, None)).await);
    assert_eq!(unconditional.first_index, 7);
    stored_now(second.write(append(log_id, &[json!(8)], None, None)).await);
    match first
        .write(append(log_id, &[json!(9)], Some(7), None))
        .await
    {
        Err(StoreError::ConcurrentAppend { current_last_index }) => {
            assert_eq!(
                current_last_index, 8,
                "the real end, not the remembered one"
            )
        }
        other => panic!("a stale expectation is refused, got {other:?}"),
    }

    // A keyed append, then its retry: the key is not read before the
    // write, but the retry is still answered as a replay.
    let keyed = || append(log_id, &[json!(9)], None, Some("remembered-key"));
    let stored_keyed = stored_now(first.write(keyed()).await);
    assert_eq!(
        first.write(keyed()).await.unwrap(),
        Written::Replayed(stored_keyed)
    );

    // The database goes back to index 2 under the running writer (a
    // restore): the next append fills index 3, leaving no gap.
    sqlx::query("DELETE FROM events WHERE log_id = $1 AND idx > 2")
        .bind(log_id.as_uuid())
        .execute(&pool)
        .await
        .unwrap();
    sqlx::query("UPDATE logs SET last_index = 2 WHERE log_id = $1")
        .bind(log_id.as_uuid())
        .execute(&pool)
        .await
        .unwrap();
    let after_restore = stored_now(first.write(append(log_id, &[json!(3)], None, None)).await);
    assert_eq!(after_restore.first_index, 3, "no gap after a restore");
    let indexes: Vec<u64> = stored(&first, log_id).await.iter().map(|e| e.0).collect();
    assert_eq!(indexes, vec![0, 1, 2, 3]);
}

/// What docs/storage.md says the PostgreSQL schema leaves out for the write
/// path: the log row's end columns are not indexed and its pages keep room,
/// so each batch updates log rows in place; events carry no foreign key.
#[tokio::test]
async fn postgres_log_ends_are_updated_in_place() {
    let Some(store) = postgres().await else {
        return;
    };
    let pool = store.pool().clone();
    let store: Store = Arc::new(store);
    let indexed: Vec<String> = sqlx::query_scalar(
        "SELECT a.attname::text FROM pg_index i
         JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = ANY(i.indkey)
         WHERE i.indrelid = 'logs'::regclass",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    assert!(
        !indexed
            .iter()
            .any(|c| c == "last_index" || c == "last_position"),
        "indexed columns of logs: {indexed:?}"
    );
    let options: Option<Vec<String>> =
        sqlx::query_scalar("SELECT reloptions FROM pg_class WHERE oid = 'logs'::regclass")
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!(options, Some(vec!["fillfactor=50".to_owned()]));
    let foreign_keys: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM pg_constraint WHERE conrelid = 'events'::regclass AND contype = 'f'",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(foreign_keys, 0);
    // An append to a log that does not exist still stores nothing.
    let unknown = store
        .write(append(LogId::new(), &[json!(1)], None, None))
        .await;
    assert!(
        matches!(unknown, Err(StoreError::LogNotFound(_))),
        "{unknown:?}"
    );
    let events: i64 = sqlx::query_scalar("SELECT count(*) FROM events")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(events, 0);
}

/// The PostgreSQL store's pools hand out a connection used within the last
/// second without testing it first (a round trip before every query
/// otherwise), and test one idle longer: after the server dropped every
/// connection, as a restart does, a read and a write after a second's
/// quiet both succeed on new connections.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_the_server_dropped_are_replaced_after_a_quiet_second() {
    use std::time::Duration;
    let Some(url) = common::postgres_database().await else {
        return;
    };
    let store: Store = Arc::new(PostgresStore::connect(&url).await.unwrap());
    let log_id = create(&store, &[json!(0)]).await;
    stored_now(store.write(append(log_id, &[json!(1)], None, None)).await);
    assert_eq!(store.log(log_id).await.unwrap().last_index, 1);

    let dropped = terminate_every_session(&url).await;
    assert!(
        dropped >= 2,
        "the reads' and the writer's connections: {dropped}"
    );

    tokio::time::sleep(Duration::from_millis(1200)).await;
    assert_eq!(store.log(log_id).await.unwrap().last_index, 1);
    let appended = stored_now(store.write(append(log_id, &[json!(2)], None, None)).await);
    assert_eq!(appended.first_index, 2);
}

/// After the server dropped every connection, the one request that finds
/// out fails, and no other: a lost connection makes the pool replace every
/// connection opened before it instead of handing each out to fail once,
/// with no quiet second needed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_lost_connection_retires_every_older_one() {
    let Some(url) = common::postgres_database().await else {
        return;
    };
    let postgres = PostgresStore::connect(&url).await.unwrap();
    let pool = postgres.pool().clone();
    let store: Store = Arc::new(postgres);
    let log_id = create(&store, &[json!(0)]).await;
    // Reads at once, so the pool holds several connections.
    let reads = || futures_util::future::join_all((0..8).map(|_| store.log(log_id)));
    assert!(reads().await.iter().all(Result::is_ok));
    let pooled = pool.size();
    assert!(pooled >= 3, "the pool holds {pooled} connections");

    terminate_every_session(&url).await;

    let mut failed = 0;
    for _ in 0..pooled {
        failed += usize::from(store.log(log_id).await.is_err());
    }
    assert!(
        failed <= 1,
        "{failed} reads failed after one lost connection"
    );
    assert!(reads().await.iter().all(Result::is_ok));
    let appended = stored_now(store.write(append(log_id, &[json!(1)], None, None)).await);
    assert_eq!(appended.first_index, 1);
}

/// Ends every other session on the database at `url`, as a server restart
/// does; how many it ended.
async fn terminate_every_session(url: &str) -> i64 {
    use sqlx::Connection;
    let mut admin = sqlx::PgConnection::connect(url).await.unwrap();
    let ended = sqlx::query_scalar(
        "SELECT count(*) FROM (SELECT pg_terminate_backend(pid) FROM pg_stat_activity
         WHERE datname = current_database() AND pid <> pg_backend_pid()) t",
    )
    .fetch_one(&mut admin)
    .await
    .unwrap();
    admin.close().await.unwrap();
    ended
}
