//! The payment reducer folded in WebAssembly behaves exactly like the same
//! `Aggregate` compiled natively, however the events are batched.

mod common;

use std::sync::OnceLock;

use common::{batch, load, runtime};
use eventlogs_guest::{FoldError, RawEvent, fold_raw};
use eventlogs_host::runtime::{CachingPolicy, FailureKind, Reducer, Runtime};
use payment::{Payment, PaymentEvent, PaymentRequest};
use proptest::prelude::*;

fn payment_reducer() -> &'static Reducer {
    static LOADED: OnceLock<(Runtime, Reducer)> = OnceLock::new();
    &LOADED
        .get_or_init(|| {
            let rt = runtime(|_| {});
            let reducer = load(&rt, "payment");
            (rt, reducer)
        })
        .1
}

fn json(events: &[PaymentEvent]) -> Vec<String> {
    events
        .iter()
        .map(|e| serde_json::to_string(e).unwrap())
        .collect()
}

fn seed_events() -> Vec<PaymentEvent> {
    vec![
        PaymentEvent::Requested {
            request: PaymentRequest {
                amount_requested: 10000,
            },
        },
        PaymentEvent::Authorized {
            amount: 10000,
            approval_code: Some("xyz123".into()),
        },
        PaymentEvent::Captured {
            amount: 4000,
            statement_descriptor: "Widgets, Inc".into(),
        },
        PaymentEvent::Refunded {
            amount: 6000,
            reference_number: "abc789".into(),
        },
    ]
}

/// The outcome of a fold, comparable across WebAssembly and native.
#[derive(Debug, PartialEq)]
enum Outcome {
    Folded(Payment),
    Rejected { index: u64, message: String },
    Undecodable { index: u64 },
}

/// Folds natively through the SDK's own batch loop.
fn native(payloads: &[String]) -> Outcome {
    let mut payment = Payment::default();
    let raw = payloads.iter().enumerate().map(|(i, p)| RawEvent {
        index: i as u64,
        recorded_at: 1_700_000_000_000_000 + i as i64,
        payload: p.as_bytes(),
    });
    match fold_raw(&mut payment, raw) {
        Ok(()) => Outcome::Folded(payment),
        Err(FoldError::RejectedEvent { index, message }) => Outcome::Rejected { index, message },
        Err(FoldError::UndecodableEvent { index, .. }) => Outcome::Undecodable { index },
        Err(other) => panic!("unexpected native failure {other}"),
    }
}

/// Folds in WebAssembly, one call per chunk; where `resume_after` is set
/// for a chunk, the aggregate is serialised and a fresh instance resumes
/// from the JSON, as a cached reduction would.
fn wasm(payloads: &[String], chunks: &[(usize, bool)]) -> Outcome {
    let reducer = payment_reducer();
    let mut fold = reducer.start().unwrap();
    let mut next = 0;
    for &(size, resume_after) in chunks.iter().chain(std::iter::once(&(usize::MAX, false))) {
        let end = next + size.min(payloads.len() - next);
        if let Err(err) = fold.apply(&batch(next as u64, &payloads[next..end])) {
            return match err.kind {
                FailureKind::RejectedEvent { index, message } => {
                    Outcome::Rejected { index, message }
                }
                FailureKind::UndecodableEvent { index, .. } => Outcome::Undecodable { index },
                other => panic!("unexpected wasm failure {other}"),
            };
        }
        next = end;
        if resume_after {
            let state = fold.to_json().unwrap();
            fold = reducer.resume(state.as_bytes()).unwrap();
        }
        if next == payloads.len() {
            break;
        }
    }
    Outcome::Folded(serde_json::from_str(&fold.finish().unwrap().json).unwrap())
}

#[test]
fn seed_scenario_settles_in_wasm_as_natively() {
    let payloads = json(&seed_events());
    let mut fold = payment_reducer().start().unwrap();
    fold.apply(&batch(0, &payloads)).unwrap();
    let folded = fold.finish().unwrap();
    let payment: Payment = serde_json::from_str(&folded.json).unwrap();
    assert_eq!(payment.amount_approved, 10000);
    assert_eq!(payment.amount_captured, 4000);
    assert_eq!(payment.amount_refunded, 6000);
    assert_eq!(payment.amount_outstanding, 0);
    assert_eq!(
        folded.caching,
        CachingPolicy::Skip,
        "a settled payment declines caching"
    );
    assert_eq!(Outcome::Folded(payment), native(&payloads));
}

#[test]
fn an_open_payment_may_be_cached() {
    let payloads = json(&seed_events()[..3]);
    let mut fold = payment_reducer().start().unwrap();
    fold.apply(&batch(0, &payloads)).unwrap();
    assert_eq!(fold.finish().unwrap().caching, CachingPolicy::Cache);
}

#[test]
fn a_rejected_event_is_data_naming_its_index() {
    let mut events = seed_events();
    events[2] = PaymentEvent::Captured {
        amount: 10001,
        statement_descriptor: String::new(),
    };
    let mut fold = payment_reducer().start().unwrap();
    let err = fold.apply(&batch(0, &json(&events))).unwrap_err();
    assert!(!err.kind.is_trap());
    assert_eq!(
        err.kind,
        FailureKind::RejectedEvent {
            index: 2,
            message: "captured amount 10001 exceeds the 10000 outstanding".into()
        }
    );
}

#[test]
fn an_undecodable_event_is_data_naming_its_index() {
    let mut payloads = json(&seed_events());
    payloads[1] = r#"{"Teleported":{"to":"mars"}}"#.into();
    let mut fold = payment_reducer().start().unwrap();
    let err = fold.apply(&batch(40, &payloads)).unwrap_err();
    assert!(!err.kind.is_trap());
    assert!(
        matches!(&err.kind, FailureKind::UndecodableEvent { index: 41, message } if message.contains("Teleported")),
        "{err}"
    );
}

/// The sandbox checks a batch's payloads as UTF-8 once, all together; an
/// event whose own bytes are not UTF-8 is still undecodable under its own
/// index, after the event before it decoded. The second batch's two
/// payloads are each half of one character: the whole buffer is valid, the
/// events are not.
#[test]
fn a_payload_that_is_not_utf8_is_undecodable_even_when_the_batch_is() {
    let seed = json(&seed_events());
    for (bad, index) in [
        (vec![b"{\"Authorized\":{\"amount\":5}}\xff".to_vec()], 1),
        (vec![b"\"\xc3".to_vec(), b"\xa9\"".to_vec()], 1),
    ] {
        let mut fold = payment_reducer().start().unwrap();
        let mut batch = eventlogs_host::runtime::EventBatch::default();
        batch.push(0, 7, seed[0].as_bytes()).unwrap();
        for (i, payload) in bad.iter().enumerate() {
            batch.push(1 + i as u64, 8, payload).unwrap();
        }
        let err = fold.apply(&batch).unwrap_err();
        assert!(
            matches!(&err.kind, FailureKind::UndecodableEvent { index: i, message } if *i == index && message.contains("utf-8")),
            "{err}"
        );
    }
}

#[test]
fn a_corrupt_cached_state_is_data() {
    let err = payment_reducer()
        .resume(b"{\"amount_approved\":")
        .err()
        .unwrap();
    assert!(
        matches!(err.kind, FailureKind::UndecodableState(_)),
        "{err}"
    );
}

fn payment_event() -> impl Strategy<Value = PaymentEvent> {
    prop_oneof![
        (0i64..20_000).prop_map(|amount_requested| PaymentEvent::Requested {
            request: PaymentRequest { amount_requested }
        }),
        (-10i64..20_000, proptest::option::of("[a-z0-9]{0,8}")).prop_map(
            |(amount, approval_code)| PaymentEvent::Authorized {
                amount,
                approval_code
            }
        ),
        // Printable ASCII (quotes and backslashes are escaped in JSON),
        // and longer text with multi-byte characters: strings of every size
        // the guest allocator sorts into classes, and past them.
        (
            -10i64..8_000,
            prop_oneof!["[ -~]{0,12}", "[ -~é漢😀\n\t]{0,160}"]
        )
            .prop_map(|(amount, statement_descriptor)| {
                PaymentEvent::Captured {
                    amount,
                    statement_descriptor,
                }
            }),
        (-10i64..8_000, "[a-z0-9]{0,8}").prop_map(|(amount, reference_number)| {
            PaymentEvent::Refunded {
                amount,
                reference_number,
            }
        }),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    /// One batch, one event per call, and random splits (some resumed from
    /// serialised state) all give the native outcome, rejections included.
    #[test]
    fn batching_never_changes_the_outcome(
        events in proptest::collection::vec(payment_event(), 0..60),
        splits in proptest::collection::vec((1usize..12, any::<bool>()), 1..20),
    ) {
        let payloads = json(&events);
        let expected = native(&payloads);
        prop_assert_eq!(&wasm(&payloads, &[(usize::MAX, false)]), &expected);
        prop_assert_eq!(&wasm(&payloads, &vec![(1, false); payloads.len()]), &expected);
        prop_assert_eq!(&wasm(&payloads, &splits), &expected);
    }
}
