//! Appends validated by the log's reducer, on PostgreSQL + Redis and on
//! SQLite + the in-process cache: refused and undecodable events store
//! nothing and leave the log readable, the aggregate after each append is
//! written through to the cache, a property test holds the host to the
//! native fold, and a deploy that would break existing logs is refused.

mod common;

use common::events;
use common::manager::{Parts, amount, embedded, on_postgres_and_redis};
use eventlogs_guest::{RawEvent, fold_raw};
use eventlogs_host::LogId;
use eventlogs_host::log_manager::{Append, DeployOptions, LogError, LogManager, LogManagerOptions};
use eventlogs_host::runtime::FailureKind;
use eventlogs_host::store::{StoreError, Written};
use payment::Payment;
use proptest::prelude::*;
use serde_json::{Value, json};

fn append(log_id: LogId, values: &[Value], expected: Option<u64>) -> Append<'static> {
    Append {
        log_id,
        events: events(values),
        expected_last_index: expected,
        idempotency_key: None,
    }
}

async fn new_payment(parts: &Parts, values: &[Value]) -> LogId {
    let log_id = LogId::new();
    let created = parts
        .manager
        .create(Some(log_id), "payment", events(values), None)
        .await;
    assert!(matches!(created, Ok(Written::Stored(_))), "{created:?}");
    log_id
}

/// The failure a refused write reports: its kind and the index it names.
fn refusal(outcome: Result<Written, LogError>) -> (&'static str, u64) {
    match outcome {
        Err(LogError::Reducer(error)) => match error.kind {
            FailureKind::RejectedEvent { index, .. } => ("rejected", index),
            FailureKind::UndecodableEvent { index, .. } => ("undecodable", index),
            other => panic!("unexpected failure {other:?}"),
        },
        other => panic!("expected a refusal, got {other:?}"),
    }
}

async fn refused_events_store_nothing_and_the_log_stays_readable(parts: Parts) {
    let m = &parts.manager;
    let log_id = new_payment(&parts, &[json!({"Authorized": {"amount": 100}})]).await;
    let over_capture = json!({"Captured": {"amount": 999_999}});
    let bogus = json!({"Bogus": {}});
    let capture = json!({"Captured": {"amount": 10}});
    assert_eq!(
        refusal(
            m.append(append(log_id, std::slice::from_ref(&over_capture), None))
                .await
        ),
        ("rejected", 1)
    );
    assert_eq!(
        refusal(
            m.append(append(log_id, std::slice::from_ref(&bogus), Some(0)))
                .await
        ),
        ("undecodable", 1)
    );
    // In the middle of a batch: the index names it, nothing of the batch is
    // stored.
    assert_eq!(
        refusal(
            m.append(append(
                log_id,
                &[capture.clone(), bogus, capture.clone()],
                None
            ))
            .await
        ),
        ("undecodable", 2)
    );
    assert_eq!(
        refusal(
            m.append(append(log_id, &[capture.clone(), over_capture], None))
                .await
        ),
        ("rejected", 2)
    );
    assert_eq!(m.info(log_id).await.unwrap().last_index, 0);
    let reduced = m.reduce(log_id, None).await.unwrap();
    assert_eq!(amount(&reduced, "amount_outstanding"), 100);

    // A create with a refused event creates nothing.
    let refused = LogId::new();
    let outcome = m
        .create(
            Some(refused),
            "payment",
            events(&[json!({"Refunded": {"amount": 5}})]),
            None,
        )
        .await;
    assert_eq!(refusal(outcome), ("rejected", 0));
    assert!(matches!(
        m.info(refused).await,
        Err(LogError::Store(StoreError::LogNotFound(_)))
    ));
}

async fn the_next_reduce_folds_nothing(parts: Parts) {
    let m = &parts.manager;
    let log_id = new_payment(&parts, &[json!({"Authorized": {"amount": 100}})]).await;
    for expected in 0..5 {
        let appended = m
            .append(append(
                log_id,
                &[json!({"Captured": {"amount": 1}})],
                Some(expected),
            ))
            .await
            .unwrap();
        assert_eq!(appended.appended().last_index, expected + 1);
        let reduced = m.reduce(log_id, None).await.unwrap();
        assert_eq!(
            (
                reduced.from_cache,
                reduced.events_folded,
                reduced.through_index
            ),
            (true, 0, expected + 1)
        );
        assert_eq!(amount(&reduced, "amount_captured"), expected as i64 + 1);
    }
}

async fn a_deploy_that_breaks_logs_is_refused_unless_forced(parts: Parts) {
    let m = &parts.manager;
    let short = new_payment(&parts, &[json!({"Authorized": {"amount": 1}})]).await;
    let long = new_payment(
        &parts,
        &[
            json!({"Authorized": {"amount": 1}}),
            json!({"Authorized": {"amount": 2}}),
        ],
    )
    .await;
    let active = parts.registry.active("payment").unwrap().version();
    let strict = common::plugin("fixture_single_event");
    let refused = m
        .deploy("payment", strict.clone(), DeployOptions::default())
        .await;
    match refused {
        Err(LogError::Deploy(error)) => {
            assert_eq!(error.replayed_logs, 2);
            let failing: Vec<LogId> = error.failures.iter().map(|(id, _)| *id).collect();
            assert_eq!(failing, [long]);
        }
        other => panic!("expected a refused deploy, got {other:?}"),
    }
    assert_eq!(parts.registry.active("payment").unwrap().version(), active);
    assert_eq!(m.reducer("payment").await.unwrap().versions.len(), 1);

    let forced = m
        .deploy("payment", strict, DeployOptions { force: true })
        .await
        .unwrap();
    assert_eq!((forced.replayed_logs, forced.failed_logs), (2, vec![long]));
    assert_ne!(parts.registry.active("payment").unwrap().version(), active);
    // The new version refuses appends to the short log's second event.
    assert_eq!(
        refusal(m.append(append(short, &[json!(1)], None)).await),
        ("rejected", 1)
    );
}

/// The guard replays the most recently appended logs first, up to its
/// sample size: a breaking version passes if the sample misses the log it
/// would break.
async fn the_deploy_guard_samples_the_most_recent_logs(parts: Parts) {
    let m = &parts.manager;
    let long = new_payment(
        &parts,
        &[
            json!({"Authorized": {"amount": 1}}),
            json!({"Authorized": {"amount": 2}}),
        ],
    )
    .await;
    let short = new_payment(&parts, &[json!({"Authorized": {"amount": 1}})]).await;
    let options = LogManagerOptions {
        deploy_sample_logs: 1,
        ..LogManagerOptions::default()
    };
    let sampling = LogManager::new(
        parts.store.clone(),
        parts.cache.clone(),
        parts.registry.clone(),
        options,
    );
    let strict = common::plugin("fixture_single_event");
    let deployed = sampling
        .deploy("payment", strict.clone(), DeployOptions::default())
        .await
        .unwrap();
    assert_eq!(
        deployed.replayed_logs, 1,
        "only the most recent log, {short}"
    );
    // Appending to the long log makes it the most recent: now it is sampled.
    let payment = common::plugin("payment");
    m.deploy("payment", payment, DeployOptions { force: true })
        .await
        .unwrap();
    m.append(append(long, &[json!({"Authorized": {"amount": 3}})], None))
        .await
        .unwrap();
    assert!(matches!(
        sampling.deploy("payment", strict, DeployOptions::default()).await,
        Err(LogError::Deploy(error)) if error.failures.len() == 1 && error.failures[0].0 == long
    ));
}

on_both!(1000;
    refused_events_store_nothing_and_the_log_stays_readable,
    the_next_reduce_folds_nothing,
    a_deploy_that_breaks_logs_is_refused_unless_forced,
    the_deploy_guard_samples_the_most_recent_logs,
);

/// One payment event a client might send: valid or not.
fn payment_event() -> impl Strategy<Value = Value> {
    prop_oneof![
        (-5i64..200).prop_map(|amount| json!({"Authorized": {"amount": amount}})),
        (0i64..300).prop_map(|amount| json!({"Captured": {"amount": amount}})),
        (0i64..300).prop_map(|amount| json!({"Refunded": {"amount": amount}})),
        Just(json!({"Bogus": {}})),
        Just(json!({"Captured": "not an object"})),
    ]
}

/// Whether the native payment aggregate accepts `batch` after `state`, and
/// the state after it if so.
fn native_accepts(state: &Payment, batch: &[Value], first_index: u64) -> Option<Payment> {
    let texts: Vec<String> = batch.iter().map(Value::to_string).collect();
    let mut next = state.clone();
    let raw = texts.iter().enumerate().map(|(i, text)| RawEvent {
        index: first_index + i as u64,
        recorded_at: 0,
        payload: text.as_bytes(),
    });
    fold_raw(&mut next, raw).ok().map(|()| next)
}

/// Appends `requests` one by one and checks each is accepted exactly when
/// the native aggregate accepts it, and that the log's aggregate equals the
/// native fold of exactly the accepted events (as stored).
async fn host_agrees_with_the_native_fold(parts: &Parts, requests: Vec<Vec<Value>>) {
    let m = &parts.manager;
    let log_id = new_payment(
        parts,
        &[json!({"Requested": {"request": {"amount_requested": 1}}})],
    )
    .await;
    let mut model = Payment::default();
    let mut accepted = vec![json!({"Requested": {"request": {"amount_requested": 1}}})];
    model.request.amount_requested = 1;
    for batch in requests {
        let next_index = accepted.len() as u64;
        let expected = native_accepts(&model, &batch, next_index);
        let outcome = m.append(append(log_id, &batch, None)).await;
        match (&expected, &outcome) {
            (Some(state), Ok(Written::Stored(_))) => {
                model = state.clone();
                accepted.extend(batch);
            }
            (None, Err(LogError::Reducer(_))) => {}
            _ => panic!("native {expected:?} but host {outcome:?} for {batch:?}"),
        }
    }
    let stored = m.load(log_id, 0, 10_000).await.unwrap();
    let stored_values: Vec<Value> = stored
        .iter()
        .map(|e| serde_json::from_str(&e.payload).unwrap())
        .collect();
    assert_eq!(stored_values, accepted);
    let mut native = Payment::default();
    let raw = stored.iter().map(|e| RawEvent {
        index: e.index,
        recorded_at: e.recorded_at,
        payload: e.payload.as_bytes(),
    });
    fold_raw(&mut native, raw).unwrap();
    let reduced = m.reduce(log_id, None).await.unwrap();
    let host: Value = serde_json::from_str(&reduced.aggregate).unwrap();
    assert_eq!(host, serde_json::to_value(&native).unwrap());
}

fn property(parts: Option<Parts>, runtime: &tokio::runtime::Runtime) {
    let Some(parts) = parts else { return };
    let strategy =
        proptest::collection::vec(proptest::collection::vec(payment_event(), 1..4), 1..12);
    let mut runner = proptest::test_runner::TestRunner::new(ProptestConfig {
        cases: 24,
        ..ProptestConfig::default()
    });
    runner
        .run(&strategy, |requests| {
            runtime.block_on(host_agrees_with_the_native_fold(&parts, requests));
            Ok(())
        })
        .unwrap();
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

#[test]
fn accepted_events_fold_as_natively_on_postgres_and_redis() {
    let rt = runtime();
    let parts = rt.block_on(on_postgres_and_redis(1000));
    property(parts, &rt);
}

#[test]
fn accepted_events_fold_as_natively_embedded() {
    let rt = runtime();
    let parts = rt.block_on(embedded(1000));
    property(Some(parts), &rt);
}
