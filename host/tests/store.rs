//! One behavioural suite for every event store: run against PostgreSQL (the
//! real server, a fresh database per test) and against embedded SQLite (a
//! fresh file per test).

mod common;

use std::sync::Arc;

use common::{postgres, sqlite};

use eventlogs_host::LogId;
use eventlogs_host::store::postgres::PostgresStore;
use eventlogs_host::store::{Append, Appended, Create, EventStore, StoreError};
use serde_json::{Value, json};

type Store = Arc<dyn EventStore>;

/// Runs each behaviour against both stores.
macro_rules! behaviours {
    ($($name:ident),* $(,)?) => {
        mod on_postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $name() {
                    if let Some(store) = super::postgres().await {
                        super::$name(std::sync::Arc::new(store)).await;
                    }
                }
            )*
        }
        mod on_sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $name() {
                    super::$name(std::sync::Arc::new(super::sqlite().await)).await;
                }
            )*
        }
    };
}

behaviours!(
    create_append_and_page,
    unknown_logs_are_not_found,
    idempotent_create_replays_and_refuses_reuse,
    idempotent_append_replays_even_with_a_stale_expectation,
    batch_append_is_all_or_nothing,
    racing_appends_have_exactly_one_winner_per_index,
    bad_requests_store_nothing,
);

fn payment(n: i64) -> Value {
    json!({"Captured": {"amount": n, "statement_descriptor": "Widgets, Inc"}})
}

async fn create(store: &Store, events: &[Value]) -> LogId {
    let log_id = LogId::new();
    let created = store
        .create(Create {
            log_id,
            log_id_chosen: true,
            reducer: "payment",
            events,
            idempotency_key: None,
        })
        .await
        .unwrap();
    assert_eq!(
        created,
        Appended {
            log_id,
            first_index: 0,
            last_index: events.len() as u64 - 1
        }
    );
    log_id
}

fn append<'a>(
    log_id: LogId,
    events: &'a [Value],
    expected: Option<u64>,
    key: Option<&'a str>,
) -> Append<'a> {
    Append {
        log_id,
        events,
        expected_last_index: expected,
        idempotency_key: key,
    }
}

async fn stored(store: &Store, log_id: LogId) -> Vec<(u64, Value)> {
    let events = store.events(log_id, 0, 100_000).await.unwrap();
    events
        .into_iter()
        .map(|e| (e.index, serde_json::from_str(&e.payload).unwrap()))
        .collect()
}

async fn create_append_and_page(store: Store) {
    let log_id = create(&store, &[payment(1)]).await;
    let batch = [payment(2), payment(3), payment(4)];
    let appended = store
        .append(append(log_id, &batch, Some(0), None))
        .await
        .unwrap();
    assert_eq!((appended.first_index, appended.last_index), (1, 3));

    let info = store.log(log_id).await.unwrap();
    assert_eq!((info.reducer.as_str(), info.last_index), ("payment", 3));

    let all = store.events(log_id, 0, 101).await.unwrap();
    assert_eq!(
        all.iter().map(|e| e.index).collect::<Vec<_>>(),
        [0, 1, 2, 3]
    );
    assert!(all.windows(2).all(|w| w[0].recorded_at <= w[1].recorded_at));
    assert!(all[0].recorded_at >= info.created_at);
    let payloads: Vec<Value> = all
        .iter()
        .map(|e| serde_json::from_str(&e.payload).unwrap())
        .collect();
    assert_eq!(payloads, [payment(1), payment(2), payment(3), payment(4)]);

    let page = store.events(log_id, 2, 1).await.unwrap();
    assert_eq!(page.len(), 1);
    assert_eq!(page[0].index, 2);
    assert!(store.events(log_id, 4, 10).await.unwrap().is_empty());
}

async fn unknown_logs_are_not_found(store: Store) {
    let ghost = LogId::new();
    assert_eq!(store.log(ghost).await, Err(StoreError::LogNotFound(ghost)));
    assert_eq!(
        store.events(ghost, 0, 10).await,
        Err(StoreError::LogNotFound(ghost))
    );
    let events = [payment(1)];
    assert_eq!(
        store.append(append(ghost, &events, None, None)).await,
        Err(StoreError::LogNotFound(ghost))
    );
}

async fn idempotent_create_replays_and_refuses_reuse(store: Store) {
    let log_id = LogId::new();
    let events = [payment(1)];
    let request = Create {
        log_id,
        log_id_chosen: true,
        reducer: "payment",
        events: &events,
        idempotency_key: Some("create-1"),
    };
    let created = store.create(request).await.unwrap();
    assert_eq!(
        store.create(request).await,
        Err(StoreError::IdempotentReplay(created))
    );

    // A server-generated id is not part of the request: a retry gets a new
    // one and still replays the original.
    let generated = Create {
        log_id: LogId::new(),
        log_id_chosen: false,
        idempotency_key: Some("create-generated"),
        ..request
    };
    let original = store.create(generated).await.unwrap();
    let retry = Create {
        log_id: LogId::new(),
        ..generated
    };
    assert_eq!(
        store.create(retry).await,
        Err(StoreError::IdempotentReplay(original))
    );

    let other = [payment(2)];
    assert_eq!(
        store
            .create(Create {
                events: &other,
                ..request
            })
            .await,
        Err(StoreError::IdempotencyKeyReused)
    );
    assert_eq!(
        store
            .create(Create {
                idempotency_key: None,
                ..request
            })
            .await,
        Err(StoreError::LogExists(log_id))
    );
    assert_eq!(stored(&store, log_id).await, [(0, payment(1))]);
}

async fn idempotent_append_replays_even_with_a_stale_expectation(store: Store) {
    let log_id = create(&store, &[payment(1)]).await;
    let events = [payment(2)];
    let request = append(log_id, &events, Some(0), Some("append-1"));
    let appended = store.append(request).await.unwrap();
    assert_eq!((appended.first_index, appended.last_index), (1, 1));
    // The retry's expectation (index 0) is stale now; it is still a replay.
    assert_eq!(
        store.append(request).await,
        Err(StoreError::IdempotentReplay(appended))
    );
    let different = [payment(3)];
    assert_eq!(
        store
            .append(append(log_id, &different, Some(1), Some("append-1")))
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
    store
        .append(append(log_id, &[payment(2)], Some(0), None))
        .await
        .unwrap();
    let batch = [payment(3), payment(4), payment(5)];
    assert_eq!(
        store
            .append(append(log_id, &batch, Some(0), Some("late")))
            .await,
        Err(StoreError::ConcurrentAppend {
            current_last_index: 1
        })
    );
    assert_eq!(stored(&store, log_id).await.len(), 2);
    // The refused request did not consume its idempotency key.
    let appended = store
        .append(append(log_id, &batch, Some(1), Some("late")))
        .await
        .unwrap();
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
                    store
                        .append(append(log_id, &event, Some(round), None))
                        .await
                })
            })
            .collect();
        let mut winners = 0;
        for task in tasks {
            match task.await.unwrap() {
                Ok(appended) => {
                    assert_eq!(appended.first_index, round + 1);
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

async fn bad_requests_store_nothing(store: Store) {
    let log_id = LogId::new();
    assert_eq!(
        store
            .create(Create {
                log_id,
                log_id_chosen: true,
                reducer: "payment",
                events: &[],
                idempotency_key: None
            })
            .await,
        Err(StoreError::NoEvents)
    );
    assert_eq!(
        store.log(log_id).await,
        Err(StoreError::LogNotFound(log_id))
    );
    let existing = create(&store, &[payment(1)]).await;
    assert_eq!(
        store.append(append(existing, &[], None, None)).await,
        Err(StoreError::NoEvents)
    );
    // An expectation beyond the end would leave a gap: refused.
    assert_eq!(
        store
            .append(append(existing, &[payment(2)], Some(5), None))
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
                    store
                        .append(append(log_id, &event, Some(round), None))
                        .await
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
