//! Folding throughput: the payment reducer in WebAssembly versus the same
//! `Aggregate` compiled natively, JSON decoding included in both, at several
//! batch sizes, with deadline enforcement on.
//!
//! Run with `scripts/bench-fold` (it builds the plugins first). Each figure
//! is the best of several interleaved rounds, so native and WebAssembly see
//! the same machine noise; ratios are what to compare across machines.
//!
//! Columns:
//! - `native`: `eventlogs_guest::fold_raw` over the stored payload bytes,
//!   then the aggregate serialised once — the reducer's own code, natively.
//! - `wasm`: the host's path: events packed into an `EventBatch`, one `fold`
//!   call per batch on an aggregate kept inside the instance, one `to-json`
//!   at the end (the resource design of `wit/reducer.wit`).
//! - `stateless`: the alternative design, `apply(state, events) -> state`,
//!   emulated by handing the state over as JSON around every batch
//!   (`resume` + `fold` + `to-json`); the per-batch instantiation this
//!   emulation adds is measured and subtracted.

use std::hint::black_box;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use eventlogs_guest::{RawEvent, fold_raw};
use eventlogs_host::runtime::{EventBatch, Limits, Reducer, Runtime};
use payment::{Payment, PaymentEvent, PaymentRequest};

const EVENTS: usize = 200_000;
const ROUNDS: usize = 5;
const BATCH_SIZES: [usize; 5] = [1, 10, 100, 1_000, 10_000];

fn main() {
    let payloads = payment_log(EVENTS);
    let bytes: usize = payloads.iter().map(Vec::len).sum();
    let runtime = Runtime::new(Limits::default()).expect("runtime");
    let reducer = runtime.load(&plugin("payment")).expect("payment loads");
    let instantiate = instantiation_cost(&reducer);

    println!(
        "fold benchmark: {EVENTS} payment events ({} bytes of JSON each on average), best of {ROUNDS} rounds",
        bytes / EVENTS
    );
    println!("instantiation (fresh store + constructor): {instantiate:?}");
    println!(
        "{:>7} {:>14} {:>14} {:>7} {:>14} {:>7}",
        "batch", "native ev/s", "wasm ev/s", "ratio", "stateless ev/s", "ratio"
    );
    let mut best_ratio: f64 = 0.0;
    for size in BATCH_SIZES {
        let (mut native_t, mut wasm_t, mut stateless_t) =
            (Duration::MAX, Duration::MAX, Duration::MAX);
        for _ in 0..ROUNDS {
            native_t = native_t.min(time(|| native(&payloads, size)));
            wasm_t = wasm_t.min(time(|| wasm(&reducer, &payloads, size)));
            stateless_t = stateless_t.min(time(|| stateless(&reducer, &payloads, size)));
        }
        let batches = EVENTS.div_ceil(size) as u32;
        let stateless_t = stateless_t.saturating_sub(instantiate * batches);
        let rate = |t: Duration| EVENTS as f64 / t.as_secs_f64();
        let ratio = rate(wasm_t) / rate(native_t);
        best_ratio = best_ratio.max(ratio);
        println!(
            "{size:>7} {:>14.0} {:>14.0} {ratio:>6.2}x {:>14.0} {:>6.2}x",
            rate(native_t),
            rate(wasm_t),
            rate(stateless_t),
            rate(stateless_t) / rate(native_t),
        );
    }
    println!("best wasm/native ratio: {best_ratio:.2}x (target >= 0.50x)");
}

fn plugin(name: &str) -> Vec<u8> {
    let dir = std::env::var_os("EVENTLOGS_PLUGIN_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/wasm32-wasip2/plugin")
        });
    let path = dir.join(format!("{name}.wasm"));
    std::fs::read(&path)
        .unwrap_or_else(|e| panic!("{}: {e}; run scripts/build-plugins", path.display()))
}

/// A long-lived payment: requested, a large authorisation, then a steady
/// mix of captures, refunds and further authorisations, each valid.
fn payment_log(events: usize) -> Vec<Vec<u8>> {
    let mut log = vec![
        PaymentEvent::Requested {
            request: PaymentRequest {
                amount_requested: 1 << 40,
            },
        },
        PaymentEvent::Authorized {
            amount: 1 << 40,
            approval_code: Some("xyz123".into()),
        },
    ];
    for i in 0..events - 2 {
        log.push(match i % 3 {
            0 => PaymentEvent::Captured {
                amount: 40 + (i % 7) as i64,
                statement_descriptor: "Widgets, Inc".into(),
            },
            1 => PaymentEvent::Refunded {
                amount: 25 + (i % 5) as i64,
                reference_number: format!("abc{i}"),
            },
            _ => PaymentEvent::Authorized {
                amount: 100,
                approval_code: None,
            },
        });
    }
    log.iter().map(|e| serde_json::to_vec(e).unwrap()).collect()
}

fn raw(payloads: &[Vec<u8>], first: usize) -> impl Iterator<Item = RawEvent<'_>> {
    payloads.iter().enumerate().map(move |(i, p)| RawEvent {
        index: (first + i) as u64,
        recorded_at: 1_700_000_000_000_000 + (first + i) as i64,
        payload: p,
    })
}

fn native(payloads: &[Vec<u8>], size: usize) -> usize {
    let mut payment = Payment::default();
    for (n, chunk) in payloads.chunks(size).enumerate() {
        fold_raw(&mut payment, raw(chunk, n * size)).unwrap();
    }
    serde_json::to_string(&payment).unwrap().len()
}

fn fill(batch: &mut EventBatch, chunk: &[Vec<u8>], first: usize) {
    batch.clear();
    for e in raw(chunk, first) {
        batch.push(e.index, e.recorded_at, e.payload).unwrap();
    }
}

fn wasm(reducer: &Reducer, payloads: &[Vec<u8>], size: usize) -> usize {
    let mut fold = reducer.start().unwrap();
    let mut batch = EventBatch::with_capacity(size, size * 96);
    for (n, chunk) in payloads.chunks(size).enumerate() {
        fill(&mut batch, chunk, n * size);
        fold.apply(&batch).unwrap();
    }
    fold.finish().unwrap().json.len()
}

fn stateless(reducer: &Reducer, payloads: &[Vec<u8>], size: usize) -> usize {
    let mut state = reducer.start().unwrap().finish().unwrap().json;
    let mut batch = EventBatch::with_capacity(size, size * 96);
    for (n, chunk) in payloads.chunks(size).enumerate() {
        fill(&mut batch, chunk, n * size);
        let mut fold = reducer.resume(state.as_bytes()).unwrap();
        fold.apply(&batch).unwrap();
        state = fold.to_json().unwrap();
    }
    state.len()
}

/// What `stateless` pays per batch for its fresh instance, which a real
/// stateless contract would not: the mean over many instantiations.
fn instantiation_cost(reducer: &Reducer) -> Duration {
    const N: u32 = 2_000;
    let elapsed = time(|| {
        (0..N)
            .map(|_| black_box(reducer.start().unwrap()).version().as_bytes()[0] as usize)
            .sum()
    });
    elapsed / N
}

fn time(f: impl FnOnce() -> usize) -> Duration {
    let started = Instant::now();
    black_box(f());
    started.elapsed()
}
