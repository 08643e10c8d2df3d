//! Appends checked together in one reducer instance end exactly as each
//! would alone, whatever else shares the instance.

mod common;

use common::{batch, load, runtime};
use eventlogs_host::runtime::{Checked, FailureKind, Folded, Reducer, ReducerError};
use payment::{PaymentEvent, PaymentRequest};
use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};

fn json(event: &PaymentEvent) -> String {
    serde_json::to_string(event).unwrap()
}

/// A payment event, sometimes one the reducer refuses (a capture or
/// refund larger than the payment allows), sometimes undecodable.
fn any_event() -> impl Strategy<Value = String> {
    prop_oneof![
        (1i64..20_000).prop_map(|amount_requested| json(&PaymentEvent::Requested {
            request: PaymentRequest { amount_requested },
        })),
        (1i64..20_000).prop_map(|amount| json(&PaymentEvent::Authorized {
            amount,
            approval_code: None,
        })),
        (1i64..20_000).prop_map(|amount| json(&PaymentEvent::Captured {
            amount,
            statement_descriptor: "checks".into(),
        })),
        (1i64..20_000).prop_map(|amount| json(&PaymentEvent::Refunded {
            amount,
            reference_number: "r".into(),
        })),
        Just(r#"{"Bogus": {}}"#.to_owned()),
    ]
}

/// A log's history (folded into the aggregate a check resumes) and the
/// events appended to it.
fn any_case() -> impl Strategy<Value = (Vec<String>, Vec<String>)> {
    (
        prop::collection::vec(any_event(), 0..6),
        prop::collection::vec(any_event(), 1..4),
    )
}

/// How a check ended, comparable.
#[derive(Debug, PartialEq)]
enum Outcome {
    Folded(Folded),
    Refused(FailureKind),
    Unresumable(FailureKind),
}

impl From<Checked> for Outcome {
    fn from(checked: Checked) -> Self {
        match checked {
            Checked::Folded(folded) => Self::Folded(folded),
            Checked::Refused(error) => Self::Refused(error.kind),
            Checked::Unresumable(error) => Self::Unresumable(error.kind),
        }
    }
}

/// The aggregate after the longest prefix of `history` the reducer takes.
fn state_after(reducer: &Reducer, history: &[String]) -> String {
    let mut taken = Vec::new();
    for event in history {
        taken.push(event.clone());
        let mut fold = reducer.start().unwrap();
        if fold.apply(&batch(0, &taken)).is_err() {
            taken.pop();
        }
    }
    let mut fold = reducer.start().unwrap();
    fold.apply(&batch(0, &taken)).unwrap();
    fold.to_json().unwrap()
}

/// The check run alone, the long way: a fresh instance of its own.
fn alone(reducer: &Reducer, state: &str, first: u64, events: &[String]) -> Outcome {
    let refused = |e: ReducerError| Outcome::Refused(e.kind);
    match reducer.resume(state.as_bytes()) {
        Err(error) => Outcome::Unresumable(error.kind),
        Ok(mut fold) => match fold.apply(&batch(first, events)) {
            Err(error) => refused(error),
            Ok(()) => fold.finish().map_or_else(refused, Outcome::Folded),
        },
    }
}

#[test]
fn concurrent_checks_end_as_each_would_alone() {
    let rt = runtime(|_| {});
    let reducer = load(&rt, "payment");
    let tokio = tokio::runtime::Runtime::new().unwrap();
    let mut runner = TestRunner::new(Config::with_cases(8));
    runner
        .run(&prop::collection::vec(any_case(), 100..200), |cases| {
            let prepared: Vec<(String, u64, Vec<String>)> = cases
                .iter()
                .map(|(history, appended)| {
                    let state = state_after(&reducer, history);
                    (state, history.len() as u64, appended.clone())
                })
                .collect();
            // A state that is not a payment's sits among them.
            let mut prepared = prepared;
            prepared.insert(prepared.len() / 2, ("[1, 2]".into(), 3, vec!["{}".into()]));
            let together: Vec<Outcome> = tokio.block_on(futures_util::future::join_all(
                prepared.iter().map(|(state, first, events)| {
                    let checked = reducer.check(state.clone().into_bytes(), batch(*first, events));
                    async move { Outcome::from(checked.await) }
                }),
            ));
            for ((state, first, events), outcome) in prepared.iter().zip(together) {
                prop_assert_eq!(outcome, alone(&reducer, state, *first, events));
            }
            Ok(())
        })
        .unwrap();
    assert!(
        reducer.checks_sharing_an_instance() > 0,
        "concurrent checks never shared an instance"
    );
}

#[test]
fn a_check_that_traps_leaves_the_others_their_own_outcome() {
    let rt = runtime(|_| {});
    // Panics on every event; an empty batch folds nothing and succeeds.
    let grenade = load(&rt, "fixture_panicking");
    let state = {
        let fold = grenade.start().unwrap();
        fold.finish().unwrap().json
    };
    let tokio = tokio::runtime::Runtime::new().unwrap();
    let outcomes: Vec<Checked> = tokio.block_on(futures_util::future::join_all((0..40).map(|i| {
        let events = if i % 3 == 1 {
            vec!["{}".to_owned()]
        } else {
            vec![]
        };
        grenade.check(state.clone().into_bytes(), batch(7, &events))
    })));
    for (i, outcome) in outcomes.into_iter().enumerate() {
        match outcome {
            Checked::Folded(folded) if i % 3 != 1 => assert_eq!(folded.json, state),
            Checked::Refused(error) if i % 3 == 1 => {
                assert!(
                    matches!(&error.kind, FailureKind::Panic(message) if message.contains("grenade went off at event 7")),
                    "check {i}: {error}"
                );
            }
            other => panic!("check {i}: {other:?}"),
        }
    }
    assert!(grenade.checks_sharing_an_instance() > 0);
}

#[test]
fn checks_one_after_another_reuse_the_round_s_instance() {
    let rt = runtime(|_| {});
    let reducer = load(&rt, "payment");
    let state = state_after(&reducer, &[]);
    let requested = json(&PaymentEvent::Requested {
        request: PaymentRequest {
            amount_requested: 10,
        },
    });
    let tokio = tokio::runtime::Runtime::new().unwrap();
    // Each check is answered, and the round has had time to end, before
    // the next is queued: only an instance kept between rounds serves both.
    for _ in 0..20 {
        std::thread::sleep(std::time::Duration::from_micros(300));
        let checked = tokio.block_on(reducer.check(
            state.clone().into_bytes(),
            batch(0, std::slice::from_ref(&requested)),
        ));
        assert!(matches!(checked, Checked::Folded(_)), "{checked:?}");
    }
    assert!(
        reducer.checks_sharing_an_instance() >= 10,
        "{} of 20 checks in a row reused an instance",
        reducer.checks_sharing_an_instance()
    );
}

/// A reducer that keeps state in a global (against the contract) traps in
/// an instance another aggregate used first; each such check is run again
/// alone in a fresh instance, so every check ends as it would alone.
#[test]
fn a_check_that_traps_in_a_used_instance_is_run_again_alone() {
    let rt = runtime(|_| {});
    let stateful = load(&rt, "fixture_stateful");
    let state = stateful.start().unwrap().finish().unwrap().json;
    let tokio = tokio::runtime::Runtime::new().unwrap();
    let event = ["{}".to_owned()];
    let one = || stateful.check(state.clone().into_bytes(), batch(0, &event));
    let mut outcomes = Vec::new();
    // One after another (sharing the round's warm instance), then many at
    // once (sharing rounds).
    for _ in 0..10 {
        std::thread::sleep(std::time::Duration::from_micros(300));
        outcomes.push(tokio.block_on(one()));
    }
    outcomes.extend(tokio.block_on(futures_util::future::join_all((0..40).map(|_| one()))));
    for (i, outcome) in outcomes.into_iter().enumerate() {
        match outcome {
            Checked::Folded(folded) => assert_eq!(folded.json, r#"{"count":1}"#, "check {i}"),
            other => panic!("check {i}: {other:?}"),
        }
    }
}

/// An async runtime whose worker threads run checks inline, as the
/// daemon's do.
fn inline_runtime(workers: usize) -> tokio::runtime::Runtime {
    const STACK: usize = 4 << 20;
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(workers)
        .thread_stack_size(STACK)
        .on_thread_start(|| eventlogs_host::runtime::allow_inline_calls(STACK))
        .enable_all()
        .build()
        .unwrap()
}

/// Checks made on threads that allow it run there, each exactly as it
/// would alone, and reuse their instances.
#[test]
fn checks_run_inline_end_as_each_would_alone() {
    let rt = runtime(|_| {});
    let reducer = load(&rt, "payment");
    let tokio = inline_runtime(2);
    let mut runner = TestRunner::new(Config::with_cases(8));
    runner
        .run(&prop::collection::vec(any_case(), 50..100), |cases| {
            let mut prepared: Vec<(String, u64, Vec<String>)> = cases
                .iter()
                .map(|(history, appended)| {
                    let state = state_after(&reducer, history);
                    (state, history.len() as u64, appended.clone())
                })
                .collect();
            prepared.insert(prepared.len() / 2, ("[1, 2]".into(), 3, vec!["{}".into()]));
            let handles: Vec<_> = prepared
                .iter()
                .map(|(state, first, events)| {
                    let (reducer, state) = (reducer.clone(), state.clone().into_bytes());
                    let batch = batch(*first, events);
                    tokio.spawn(async move { Outcome::from(reducer.check(state, batch).await) })
                })
                .collect();
            let inline: Vec<Outcome> = tokio
                .block_on(futures_util::future::try_join_all(handles))
                .unwrap();
            for ((state, first, events), outcome) in prepared.iter().zip(inline) {
                prop_assert_eq!(outcome, alone(&reducer, state, *first, events));
            }
            Ok(())
        })
        .unwrap();
    // A check that used more than its CPU budget (a debug build on a busy
    // machine) sends the next 256 to the call threads; the rest ran inline.
    assert!(
        reducer.checks_run_inline() >= 100,
        "only {} checks ran inline",
        reducer.checks_run_inline()
    );
}

/// A check that traps inline (here: in an instance an earlier check used,
/// against a reducer keeping state in a global, or a panic) is run again
/// the usual way and ends as it would alone.
#[test]
fn checks_that_trap_inline_end_as_they_would_alone() {
    // No tick within the test: on a busy machine a tick could interrupt
    // the check that should trap, and an interrupted check proves nothing
    // about the version, so the next one would run inline again.
    let rt = runtime(|limits| {
        limits.epoch_tick = std::time::Duration::from_secs(3_600);
        limits.call_timeout = limits.epoch_tick;
    });
    let tokio = inline_runtime(2);
    let stateful = load(&rt, "fixture_stateful");
    let state = stateful.start().unwrap().finish().unwrap().json;
    for i in 0..20 {
        let (stateful, state) = (stateful.clone(), state.clone().into_bytes());
        let checked =
            tokio
                .block_on(tokio.spawn(async move {
                    stateful.check(state, batch(0, &["{}".to_owned()])).await
                }))
                .unwrap();
        match checked {
            Checked::Folded(folded) => assert_eq!(folded.json, r#"{"count":1}"#, "check {i}"),
            other => panic!("check {i}: {other:?}"),
        }
    }
    // The first ran inline; the second trapped there, which sent the
    // version's next checks to the call threads.
    assert_eq!(stateful.checks_run_inline(), 1);
    let grenade = load(&rt, "fixture_panicking");
    let state = grenade.start().unwrap().finish().unwrap().json;
    let checked = tokio
        .block_on(tokio.spawn(async move {
            grenade
                .check(state.into_bytes(), batch(7, &["{}".to_owned()]))
                .await
        }))
        .unwrap();
    assert!(
        matches!(&checked, Checked::Refused(error) if matches!(&error.kind, FailureKind::Panic(message) if message.contains("grenade went off at event 7"))),
        "{checked:?}"
    );
}

/// A check that loops holds the thread it started on for one epoch tick at
/// most: it then goes on on a call thread, until its deadline, while the
/// thread serves other tasks.
#[test]
fn a_looping_check_gives_its_thread_back_at_the_first_tick() {
    let rt = runtime(|limits| {
        limits.call_timeout = std::time::Duration::from_secs(2);
    });
    let spinner = load(&rt, "fixture_infinite_loop");
    let state = spinner.start().unwrap().finish().unwrap().json;
    // One worker: while the check holds it, nothing else runs.
    let tokio = inline_runtime(1);
    let started = std::time::Instant::now();
    let looping = tokio.spawn(async move {
        spinner
            .check(state.into_bytes(), batch(0, &["{}".to_owned()]))
            .await
    });
    std::thread::sleep(std::time::Duration::from_millis(5));
    let other = tokio.block_on(tokio.spawn(async move { started.elapsed() }));
    let waited = other.unwrap();
    assert!(
        waited < std::time::Duration::from_millis(500),
        "the worker was held for {waited:?}"
    );
    let checked = tokio.block_on(looping).unwrap();
    assert!(
        matches!(&checked, Checked::Refused(error) if matches!(error.kind, FailureKind::Timeout(_))),
        "{checked:?}"
    );
    assert!(started.elapsed() >= std::time::Duration::from_secs(2));
}

/// Instances kept idle for inline checks are bounded: two per version,
/// eight in the whole runtime.
#[test]
fn inline_checks_keep_few_idle_instances() {
    let rt = runtime(|_| {});
    let tokio = inline_runtime(4);
    let names = [
        "payment",
        "counter",
        "fixture_large",
        "fixture_single_event",
        "fixture_panicking",
    ];
    let reducers: Vec<Reducer> = names.iter().map(|name| load(&rt, name)).collect();
    for _ in 0..5 {
        let checks: Vec<_> = reducers
            .iter()
            .flat_map(|reducer| {
                let state = reducer.start().unwrap().finish().unwrap().json;
                (0..8).map(move |_| {
                    let (reducer, state) = (reducer.clone(), state.clone().into_bytes());
                    async move { reducer.check(state, batch(0, &[])).await }
                })
            })
            .map(|check| tokio.spawn(check))
            .collect();
        for checked in tokio
            .block_on(futures_util::future::try_join_all(checks))
            .unwrap()
        {
            assert!(matches!(checked, Checked::Folded(_)), "{checked:?}");
        }
    }
    let per_version: Vec<usize> = reducers
        .iter()
        .map(Reducer::idle_inline_instances)
        .collect();
    assert!(per_version.iter().all(|&idle| idle <= 2), "{per_version:?}");
    let all = rt.idle_inline_instances();
    assert_eq!(all, per_version.iter().sum::<usize>());
    assert!((3..=8).contains(&all), "{all} idle in all: {per_version:?}");
}
