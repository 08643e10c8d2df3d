//! The log manager over real parts: the seed's payment scenario with the
//! WebAssembly payment reducer, on PostgreSQL + Redis and on SQLite + the
//! in-process cache, and cache faults that never change a result.

mod common;

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use common::manager::{Parts, amount, cached_through, embedded, parts};
use common::{events as evs, plugin, sqlite};
use eventlogs_host::LogId;
use eventlogs_host::cache::redis::RedisCache;
use eventlogs_host::cache::{Anchor, CacheKey, CacheSecret, CachedReduction, ReductionCache};
use eventlogs_host::log_manager::{Append, LogError, LogManager, Reduction};
use eventlogs_host::runtime::EventBatch;
use eventlogs_host::store::StoreError;
use serde_json::{Value, json};

async fn seed_payment_scenario(parts: Parts) {
    let m = &parts.manager;
    let log_id = LogId::new();
    let requested = [json!({"Requested": {"request": {"amount_requested": 10000}}})];
    m.create(
        Some(log_id),
        "payment",
        evs(&requested),
        Some(&format!("create-{log_id}")),
    )
    .await
    .unwrap();
    let authorized = [json!({"Authorized": {"amount": 10000, "approval_code": "xyz123"}})];
    let append = |events: &[Value], expected| Append {
        log_id,
        events: evs(events),
        expected_last_index: Some(expected),
        idempotency_key: None,
    };
    m.append(append(&authorized, 0)).await.unwrap();

    // Every append wrote its aggregate through to the cache: reducing folds
    // nothing.
    let first = m.reduce(log_id, None).await.unwrap();
    assert_eq!(
        (first.from_cache, first.events_folded, first.through_index),
        (true, 0, 1)
    );
    assert_eq!(amount(&first, "amount_outstanding"), 10000);
    let key = CacheKey {
        reducer: "payment".into(),
        version: first.reducer_version,
        log_id,
    };
    cached_through(&*parts.cache, &key, 1).await;

    let captured = [json!({"Captured": {"amount": 4000, "statement_descriptor": "Widgets, Inc"}})];
    m.append(append(&captured, first.through_index))
        .await
        .unwrap();
    let second = m.reduce(log_id, None).await.unwrap();
    assert_eq!(
        (
            second.from_cache,
            second.events_folded,
            second.through_index
        ),
        (true, 0, 2)
    );
    assert_eq!(amount(&second, "amount_captured"), 4000);
    assert_eq!(amount(&second, "amount_outstanding"), 6000);
    cached_through(&*parts.cache, &key, 2).await;

    // Nothing new since the cached reduction: it keeps its through index.
    let again = m.reduce(log_id, None).await.unwrap();
    assert_eq!(
        (again.from_cache, again.events_folded, again.through_index),
        (true, 0, 2)
    );
    assert_eq!(again.aggregate, second.aggregate);

    let refunded = [json!({"Refunded": {"amount": 6000, "reference_number": "abc789"}})];
    m.append(append(&refunded, again.through_index))
        .await
        .unwrap();
    let last = m.reduce(log_id, None).await.unwrap();
    assert_eq!(
        (last.from_cache, last.events_folded, last.through_index),
        (true, 1, 3)
    );
    assert_eq!(amount(&last, "amount_approved"), 10000);
    assert_eq!(amount(&last, "amount_captured"), 4000);
    assert_eq!(amount(&last, "amount_refunded"), 6000);
    assert_eq!(amount(&last, "amount_outstanding"), 0);
    // A settled payment declines caching: the entry stays at index 2.
    m.flush_cache_writes().await;
    assert_eq!(
        parts.cache.get(&key).await.unwrap().unwrap().through_index,
        2
    );

    let page = m.load(log_id, 0, 101).await.unwrap();
    assert_eq!(page.len(), 4);
    // Three appends and four reductions, each resumed from the cache.
    assert_eq!(
        m.cache_counters()
            .hits
            .load(std::sync::atomic::Ordering::Relaxed),
        7
    );
}

async fn unknown_logs_and_reducers_are_errors(parts: Parts) {
    let m = &parts.manager;
    let ghost = LogId::new();
    assert!(matches!(
        m.reduce(ghost, None).await,
        Err(LogError::Store(StoreError::LogNotFound(id))) if id == ghost
    ));
    assert!(matches!(
        m.create(Some(LogId::new()), "nonexistent", evs(&[json!({})]), None).await,
        Err(LogError::ReducerNotFound(name)) if name == "nonexistent"
    ));
}

async fn unusable_cache_entries_fold_from_the_start(parts: Parts) {
    // Entries are spoiled in the shared cache: a manager reading it alone.
    let m = &parts.reader();
    let log_id = LogId::new();
    let events = [
        json!({"Authorized": {"amount": 500}}),
        json!({"Captured": {"amount": 200}}),
    ];
    m.create(Some(log_id), "payment", evs(&events), None)
        .await
        .unwrap();
    let honest = m.reduce(log_id, None).await.unwrap();
    assert_eq!((honest.from_cache, honest.events_folded), (true, 0));
    let stored = m.load(log_id, 0, 2).await.unwrap();
    let anchor_of = |index: usize| Anchor {
        position: stored[index].position,
        recorded_at: stored[index].recorded_at,
    };
    let key = CacheKey {
        reducer: "payment".into(),
        version: honest.reducer_version,
        log_id,
    };
    for bogus in [
        // Valid JSON, but not a payment, behind the log's end: resuming it
        // fails. (An entry through the log's last event is answered as it
        // stands, without a resume: the cache's seal and the version in its
        // key make it this version's own fold, as the stale-entry test on
        // Redis shows.)
        CachedReduction {
            through_index: 0,
            reduced_at: 0,
            anchor: anchor_of(0),
            aggregate: r#"{"bogus":true}"#.into(),
        },
        // Further than the log reaches.
        CachedReduction {
            through_index: 99,
            reduced_at: 0,
            anchor: anchor_of(1),
            aggregate: honest.aggregate.clone(),
        },
    ] {
        // Let the honest background write land first, then spoil it.
        cached_through(&*parts.cache, &key, 1).await;
        parts.cache.put(&key, &bogus, None).await.unwrap();
        let reduced = m.reduce(log_id, None).await.unwrap();
        assert_eq!((reduced.from_cache, reduced.events_folded), (false, 2));
        assert_eq!(reduced.aggregate, honest.aggregate);
    }

    // An entry through the log's last event is the answer: no reducer
    // resumes it, so even one that is not a payment comes back as it is.
    cached_through(&*parts.cache, &key, 1).await;
    let at_end = CachedReduction {
        through_index: 1,
        reduced_at: 0,
        anchor: anchor_of(1),
        aggregate: r#"{"bogus":"at the end"}"#.into(),
    };
    parts.cache.put(&key, &at_end, None).await.unwrap();
    let answered = m.reduce(log_id, None).await.unwrap();
    assert_eq!((answered.from_cache, answered.events_folded), (true, 0));
    assert_eq!(answered.aggregate, at_end.aggregate);

    // An older entry is a valid prefix: folding resumes after it.
    let first = m.load(log_id, 0, 1).await.unwrap().remove(0);
    let mut batch = EventBatch::default();
    batch
        .push(first.index, first.recorded_at, first.payload.as_bytes())
        .unwrap();
    let reducer = parts.registry.active("payment").unwrap();
    let mut fold = reducer.start().unwrap();
    fold.apply(&batch).unwrap();
    let prefix = CachedReduction {
        through_index: 0,
        reduced_at: 0,
        anchor: anchor_of(0),
        aggregate: fold.finish().unwrap().json,
    };
    // Let the last background write land, then replace it.
    m.flush_cache_writes().await;
    parts.cache.put(&key, &prefix, None).await.unwrap();
    let resumed = m.reduce(log_id, None).await.unwrap();
    assert_eq!((resumed.from_cache, resumed.events_folded), (true, 1));
    assert_eq!(resumed.aggregate, honest.aggregate);

    // An entry under another reducer version is never read.
    let fresh = LogId::new();
    m.create(Some(fresh), "payment", evs(&events), None)
        .await
        .unwrap();
    let other_version = CacheKey {
        reducer: "payment".into(),
        version: eventlogs_host::Version::of(b"another version"),
        log_id: fresh,
    };
    let bogus = CachedReduction {
        through_index: 1,
        reduced_at: 0,
        anchor: anchor_of(1),
        aggregate: r#"{"bogus":true}"#.into(),
    };
    parts.cache.put(&other_version, &bogus, None).await.unwrap();
    let reduced = m.reduce(fresh, None).await.unwrap();
    // It resumed from its own version's entry, which the create wrote.
    assert_eq!((reduced.from_cache, reduced.events_folded), (true, 0));
    assert_eq!(
        amount(&reduced, "amount_captured"),
        amount(&honest, "amount_captured")
    );
}

/// A fold reads ahead of the reducer: an event refused deep in a long log
/// ends the reduce with that event's refusal, at once, and the read with
/// it. (Appends are validated, so the event is stored behind the log
/// manager's back, as by a version that validated less.)
async fn a_refusal_deep_in_a_long_log_ends_the_read(parts: Parts) {
    use eventlogs_host::runtime::FailureKind;
    use eventlogs_host::store::Write;
    let log_id = LogId::new();
    let captured = || json!({"Captured": {"amount": 1}});
    let mut events = vec![json!({"Authorized": {"amount": 100_000}})];
    events.extend((1..400).map(|_| captured()));
    events.push(json!({"Bogus": {}}));
    events.extend((0..400).map(|_| captured()));
    parts
        .store
        .write(Write::create(log_id, true, "payment", evs(&events)))
        .await
        .unwrap();
    let reduced = tokio::time::timeout(Duration::from_secs(30), parts.manager.reduce(log_id, None))
        .await
        .expect("the reduce ends");
    match reduced {
        Err(LogError::Reducer(error)) => assert!(
            matches!(error.kind, FailureKind::UndecodableEvent { index: 400, .. }),
            "{error}"
        ),
        other => panic!("expected event 400 to be refused, got {other:?}"),
    }
}

on_both!(2;
    seed_payment_scenario,
    unknown_logs_and_reducers_are_errors,
    unusable_cache_entries_fold_from_the_start,
    a_refusal_deep_in_a_long_log_ends_the_read,
);

/// On Redis, an entry whose MAC does not verify under the host's secret
/// (forged), or whose anchor is not the stored event at its index (stale,
/// as after a database restore), is ignored and counted; the reduce folds
/// from the start and answers the true aggregate.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_and_stale_cache_entries_are_ignored_and_counted() {
    let Some(store) = common::postgres().await else {
        return;
    };
    let prefix = format!("eventlogs-test-{}:", LogId::new());
    let shared =
        |secret| Arc::new(RedisCache::new(common::manager::SHARED_REDIS, &prefix, secret).unwrap());
    let parts = parts(store, shared(common::cache_secret()), 2).await;
    // Entries are forged in Redis: a manager reading it alone.
    let m = &parts.reader();
    let log_id = LogId::new();
    let events = [
        json!({"Authorized": {"amount": 500}}),
        json!({"Captured": {"amount": 200}}),
    ];
    m.create(Some(log_id), "payment", evs(&events), None)
        .await
        .unwrap();
    let honest = m.reduce(log_id, None).await.unwrap();
    assert_eq!((honest.from_cache, honest.events_folded), (true, 0));
    let key = CacheKey {
        reducer: "payment".into(),
        version: honest.reducer_version,
        log_id,
    };
    let last = m.load(log_id, 1, 1).await.unwrap().remove(0);
    let true_anchor = Anchor {
        position: last.position,
        recorded_at: last.recorded_at,
    };
    // A valid payment aggregate that is not this log's.
    let lie = honest.aggregate.replace("200", "999");
    assert_ne!(lie, honest.aggregate);
    let rejected = || {
        m.cache_counters()
            .rejected
            .load(std::sync::atomic::Ordering::Relaxed)
    };

    // Forged: written under another secret, with the true anchor.
    let forger = shared(CacheSecret::new(b"not-the-host-secret-000".to_vec()).unwrap());
    let forged = CachedReduction {
        through_index: 1,
        reduced_at: 0,
        anchor: true_anchor,
        aggregate: lie.clone(),
    };
    forger.put(&key, &forged, None).await.unwrap();
    let reduced = m.reduce(log_id, None).await.unwrap();
    assert_eq!((reduced.from_cache, reduced.events_folded), (false, 2));
    assert_eq!(reduced.aggregate, honest.aggregate);
    assert_eq!(rejected(), 1);

    // Stale: signed by the host, but folded through another event 1.
    m.flush_cache_writes().await;
    let stale = CachedReduction {
        anchor: Anchor {
            position: true_anchor.position + 1_000,
            ..true_anchor
        },
        ..forged
    };
    parts.cache.put(&key, &stale, None).await.unwrap();
    let reduced = m.reduce(log_id, None).await.unwrap();
    assert_eq!((reduced.from_cache, reduced.events_folded), (false, 2));
    assert_eq!(reduced.aggregate, honest.aggregate);
    assert_eq!(rejected(), 2);

    // The same entry with the true anchor is used: the checks, not the
    // content, refused the two above.
    m.flush_cache_writes().await;
    let anchored = CachedReduction {
        anchor: true_anchor,
        ..stale
    };
    parts.cache.put(&key, &anchored, None).await.unwrap();
    let reduced = m.reduce(log_id, None).await.unwrap();
    assert_eq!((reduced.from_cache, reduced.events_folded), (true, 0));
    assert_eq!(reduced.aggregate, lie);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_cache_changes_nothing() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let cache = RedisCache::new(
        &format!("redis://127.0.0.1:{port}/"),
        "t:",
        common::cache_secret(),
    )
    .unwrap();
    let parts = parts(sqlite().await, Arc::new(cache), 2).await;
    let log_id = LogId::new();
    let events = [
        json!({"Authorized": {"amount": 500}}),
        json!({"Refunded": {"amount": 100}}),
    ];
    parts
        .manager
        .create(Some(log_id), "payment", evs(&events), None)
        .await
        .unwrap();
    // This process kept the aggregate it failed to write through.
    let reduced = parts.manager.reduce(log_id, None).await.unwrap();
    assert_eq!((reduced.from_cache, reduced.through_index), (true, 1));
    assert_eq!(amount(&reduced, "amount_outstanding"), 400);
    // Another process has nothing but the unreachable cache.
    let reader = parts.reader();
    for _ in 0..2 {
        let reduced = reader.reduce(log_id, None).await.unwrap();
        assert_eq!((reduced.from_cache, reduced.through_index), (false, 1));
        assert_eq!(amount(&reduced, "amount_outstanding"), 400);
    }
    assert!(
        reader
            .cache_counters()
            .errors
            .load(std::sync::atomic::Ordering::Relaxed)
            >= 2
    );
}

/// The cache key of `reduction`'s log and version.
fn key_of(reduction: &Reduction) -> CacheKey {
    CacheKey {
        reducer: reduction.reducer.clone(),
        version: reduction.reducer_version,
        log_id: reduction.log_id,
    }
}

/// A new payment log, created through `m`, of one authorization of 500.
async fn authorized_payment(m: &LogManager) -> LogId {
    let log_id = LogId::new();
    m.create(
        Some(log_id),
        "payment",
        evs(&[json!({"Authorized": {"amount": 500}})]),
        None,
    )
    .await
    .unwrap();
    log_id
}

/// A cache entry anchored at the stored event `index` of `log_id`, whose
/// aggregate is not a payment: whoever answers with it read it.
async fn not_a_payment_through(m: &LogManager, log_id: LogId, index: u64) -> CachedReduction {
    let stored = m.load(log_id, index, 1).await.unwrap().remove(0);
    CachedReduction {
        through_index: index,
        reduced_at: 0,
        anchor: Anchor {
            position: stored.position,
            recorded_at: stored.recorded_at,
        },
        aggregate: r#"{"bogus":true}"#.into(),
    }
}

/// With Redis as the cache, a reduce answers from the aggregate this
/// process folded last, kept in memory, when the log's metadata shows it
/// folded through the log's last event: the shared entry is not read (a
/// spoiled one changes nothing). When another process appended since, the
/// reduce reads the shared cache and resumes from the entry reaching
/// further, so it sees every event.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reduces_answer_from_memory_and_see_other_processes_appends() {
    let Some(parts) = common::manager::on_postgres_and_redis(100).await else {
        return;
    };
    let first = &parts.manager;
    let second = parts.another();
    let log_id = authorized_payment(first).await;
    let honest = first.reduce(log_id, None).await.unwrap();
    assert_eq!((honest.from_cache, honest.events_folded), (true, 0));
    let key = key_of(&honest);
    let spoiled = not_a_payment_through(first, log_id, 0).await;
    parts.cache.put(&key, &spoiled, None).await.unwrap();
    let hits = first.cache_counters().hits.load(Ordering::Relaxed);
    let reduced = first.reduce(log_id, None).await.unwrap();
    assert_eq!(
        reduced.aggregate, honest.aggregate,
        "the shared entry was not read"
    );
    assert_eq!((reduced.from_cache, reduced.events_folded), (true, 0));
    assert_eq!(
        first.cache_counters().hits.load(Ordering::Relaxed),
        hits + 1
    );
    // The spoiled entry is what a process without that memory would read.
    let by_reader = parts.reader().reduce(log_id, None).await.unwrap();
    assert_eq!(by_reader.aggregate, spoiled.aggregate);

    // Another process appends (writing through to Redis): this one's
    // memory is behind the log's end, so the shared entry is read.
    second
        .append(Append {
            log_id,
            events: evs(&[json!({"Captured": {"amount": 100}})]),
            expected_last_index: None,
            idempotency_key: None,
        })
        .await
        .unwrap();
    let moved = first.reduce(log_id, None).await.unwrap();
    assert_eq!(moved.through_index, 1);
    assert_eq!(amount(&moved, "amount_captured"), 100);
    assert_eq!((moved.from_cache, moved.events_folded), (true, 0));

    // With no shared entry further than its own (the spoiled one reaches
    // as far), the reduce resumes from its own and folds the rest.
    second
        .append(Append {
            log_id,
            events: evs(&[json!({"Captured": {"amount": 50}})]),
            expected_last_index: None,
            idempotency_key: None,
        })
        .await
        .unwrap();
    parts.cache.put(&key, &spoiled, None).await.unwrap();
    let resumed = first.reduce(log_id, None).await.unwrap();
    assert_eq!(resumed.through_index, 2);
    assert_eq!(amount(&resumed, "amount_captured"), 150);
    assert_eq!((resumed.from_cache, resumed.events_folded), (true, 2));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hot_swap_finishes_in_flight_folds_and_never_shares_caches() {
    use std::sync::atomic::Ordering::Relaxed;
    let Parts {
        manager,
        cache,
        registry,
        ..
    } = embedded(10).await;
    let a = registry.active("payment").unwrap();

    let log_id = LogId::new();
    let events: Vec<Value> = (0..3_000)
        .map(|_| json!({"Authorized": {"amount": 1}}))
        .collect();
    manager
        .create(Some(log_id), "payment", evs(&events), None)
        .await
        .unwrap();
    // Spoil the entry the create wrote through, so the next reduce is a
    // long fold from the start.
    let a_key = CacheKey {
        reducer: "payment".into(),
        version: a.version(),
        log_id,
    };
    let beyond = CachedReduction {
        through_index: 1_000_000,
        reduced_at: 0,
        anchor: Anchor {
            position: 0,
            recorded_at: 0,
        },
        aggregate: "{}".into(),
    };
    cache.put(&a_key, &beyond, None).await.unwrap();

    // Start a long fold on A; swap to B once it has resolved its reducer
    // (it counts its cache lookup right after).
    let in_flight = tokio::spawn({
        let manager = manager.clone();
        async move { manager.reduce(log_id, None).await }
    });
    while manager.cache_counters().misses.load(Relaxed) == 0 {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    // Version B is another component under the same name (the counter):
    // its results are told apart from A's at a glance.
    let b = registry
        .deploy("payment", plugin("counter"))
        .await
        .unwrap()
        .version
        .version;
    let on_a = in_flight.await.unwrap().unwrap();
    assert_eq!(
        on_a.reducer_version,
        a.version(),
        "the in-flight fold finished on A"
    );
    assert_eq!(amount(&on_a, "amount_approved"), 3_000);
    cached_through(&*cache, &a_key, 2_999).await;

    // New reductions use B, which never reads A's cached aggregate.
    let on_b = manager.reduce(log_id, None).await.unwrap();
    assert_eq!(on_b.reducer_version, b);
    assert_eq!((on_b.from_cache, on_b.events_folded), (false, 3_000));
    assert_eq!(on_b.aggregate, r#"{"count":3000}"#);

    // Rollback: A is active again and its own cache entry serves.
    registry.activate("payment", a.version()).await.unwrap();
    let rolled_back = manager.reduce(log_id, None).await.unwrap();
    assert_eq!(rolled_back.reducer_version, a.version());
    assert_eq!(
        (rolled_back.from_cache, rolled_back.events_folded),
        (true, 0)
    );
    assert_eq!(rolled_back.aggregate, on_a.aggregate);
    // A named version can still be asked for explicitly.
    let named = manager.reduce(log_id, Some(b)).await.unwrap();
    assert_eq!(named.reducer_version, b);
}

/// With Redis as the cache, an append resumes its validation from the
/// aggregate this process wrote through last, kept in memory: a spoiled
/// Redis entry is not even read. When another process (another manager on
/// the same database and cache) appended meanwhile, that memory is stale;
/// the store refuses the write and it is validated again against the real
/// end, so the aggregate stays exact.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn appends_resume_from_their_own_write_through() {
    let Some(parts) = common::manager::on_postgres_and_redis(100).await else {
        return;
    };
    let first = &parts.manager;
    let second = parts.another();
    let log_id = authorized_payment(first).await;
    let capture = || evs(&[json!({"Captured": {"amount": 100}})]);
    let append = |expected| Append {
        log_id,
        events: capture(),
        expected_last_index: expected,
        idempotency_key: None,
    };
    first.append(append(None)).await.unwrap();
    let key = key_of(&first.reduce(log_id, None).await.unwrap());
    let bogus = not_a_payment_through(first, log_id, 1).await;
    parts.cache.put(&key, &bogus, None).await.unwrap();
    let errors = first.cache_counters().errors.load(Ordering::Relaxed);
    let written = first.append(append(Some(1))).await.unwrap();
    assert_eq!(written.appended().last_index, 2);
    assert_eq!(
        first.cache_counters().errors.load(Ordering::Relaxed),
        errors,
        "the spoiled shared entry was not read"
    );

    // Another process appends twice; this one's memory says the log ends
    // at 2, the log ends at 4.
    second.append(append(None)).await.unwrap();
    second.append(append(None)).await.unwrap();
    let written = first.append(append(None)).await.unwrap();
    assert_eq!(written.appended().last_index, 5);
    let reduced = first.reduce(log_id, None).await.unwrap();
    assert_eq!(amount(&reduced, "amount_captured"), 500);
    // The sixth capture would exceed the authorization: refused on the
    // real end, not on a remembered one.
    let refused = first.append(append(None)).await;
    assert!(matches!(refused, Err(LogError::Reducer(_))), "{refused:?}");
}

/// A reducer is deterministic: a reduce that panicked fails again on the
/// same events, so it is answered from memory, without running the
/// reducer, until an event moves the log's end.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reduce_that_panicked_is_answered_again_without_running() {
    use std::sync::atomic::Ordering::Relaxed;
    let Parts {
        manager, registry, ..
    } = embedded(10).await;
    registry
        .deploy("grenade", plugin("fixture_panicking"))
        .await
        .unwrap();
    let log_id = LogId::new();
    manager
        .create(Some(log_id), "grenade", evs(&[json!({"n": 1})]), None)
        .await
        .unwrap();
    let panicked = |outcome: Result<_, LogError>| match outcome {
        Err(LogError::Reducer(error)) => {
            assert_eq!(error.kind.name(), "panic", "{error}");
            error.to_string()
        }
        other => panic!("expected a panic, got {other:?}"),
    };
    let repeated = || manager.cache_counters().failures_repeated.load(Relaxed);
    let first = panicked(manager.reduce(log_id, None).await);
    assert_eq!(repeated(), 0);
    let second = panicked(manager.reduce(log_id, None).await);
    assert_eq!(second, first, "the same failure, word for word");
    assert_eq!(repeated(), 1, "the second reduce ran the reducer");

    // A new event is a new reduce: it runs (and fails again).
    manager
        .append(Append {
            log_id,
            events: evs(&[json!({"n": 2})]),
            expected_last_index: None,
            idempotency_key: None,
        })
        .await
        .unwrap();
    panicked(manager.reduce(log_id, None).await);
    assert_eq!(repeated(), 1);
    panicked(manager.reduce(log_id, None).await);
    assert_eq!(repeated(), 2);
}
