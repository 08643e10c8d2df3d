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
//!   (`resume` + `fold` + `to-json`). The emulation also pays a fresh
//!   instance per batch, which a real stateless contract would not; that
//!   cost is printed so it can be discounted.

use std::hint::black_box;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use eventlogs_guest::{RawEvent, fold_raw};
use eventlogs_host::runtime::{EventBatch, Limits, Reducer, Runtime};
use payment::{Payment, PaymentEvent, PaymentRequest};

/// Events folded per measurement; small batches fold fewer so that every
/// measurement takes a similar time.
const EVENTS: usize = 100_000;
const ROUNDS: usize = 11;
/// Batch sizes measured unless `FOLD_BENCH_BATCHES` lists others
/// (comma-separated).
const BATCH_SIZES: [usize; 5] = [1, 10, 100, 1_000, 10_000];

/// One measured configuration: events/s of each contender.
struct Round {
    native: f64,
    wasm: f64,
    stateless: f64,
}

fn main() {
    let payloads = payment_log(EVENTS);
    let bytes: usize = payloads.iter().map(Vec::len).sum();
    let runtime = Runtime::new(Limits::default()).expect("runtime");
    let reducer = runtime.load(&plugin("payment")).expect("payment loads");
    if let Ok(seconds) = std::env::var("FOLD_BENCH_PROFILE_SECONDS") {
        profile_target(&reducer, &payloads, seconds.parse().expect("seconds"));
        return;
    }
    let instantiate = instantiation_cost(&reducer);
    let cached = cached_reduction_cost(&reducer, &payloads);

    println!(
        "fold benchmark: payment events of {} bytes of JSON on average, {ROUNDS} interleaved rounds",
        bytes / EVENTS
    );
    println!("instantiation (fresh store + constructor): {instantiate:?}");
    println!("cached-style reduction (resume from JSON, fold 1 event, finish): {cached:?}");
    println!(
        "{:>7} {:>8} {:>13} {:>13} {:>13} {:>13} {:>14}",
        "batch",
        "events",
        "native ev/s",
        "wasm ev/s",
        "wasm/native",
        "stateless/s",
        "stateless/nat"
    );
    let sizes = batch_sizes().unwrap_or_else(|| BATCH_SIZES.to_vec());
    for size in sizes {
        let events = &payloads[..EVENTS.min(size * 5_000)];
        let rounds: Vec<Round> = (0..ROUNDS)
            .map(|_| {
                let rate = |t: Duration| events.len() as f64 / t.as_secs_f64();
                let native_t = time(|| native(events, size));
                let wasm_t = time(|| wasm(&reducer, events, size).len());
                let stateless_t = time(|| stateless(&reducer, events, size));
                Round {
                    native: rate(native_t),
                    wasm: rate(wasm_t),
                    stateless: rate(stateless_t),
                }
            })
            .collect();
        // Rates: the best round (least disturbed). Ratios: the median of
        // each round's own ratio, as native and wasm ran back to back.
        let best = |f: fn(&Round) -> f64| rounds.iter().map(f).fold(0.0, f64::max);
        let ratio = |f: fn(&Round) -> f64| median(rounds.iter().map(|r| f(r) / r.native).collect());
        println!(
            "{size:>7} {:>8} {:>13.0} {:>13.0} {:>12.2}x {:>13.0} {:>13.2}x",
            events.len(),
            best(|r| r.native),
            best(|r| r.wasm),
            ratio(|r| r.wasm),
            best(|r| r.stateless),
            ratio(|r| r.stateless),
        );
    }
}

/// Folds in WebAssembly only, batches of 1,000 (or the first of
/// `FOLD_BENCH_BATCHES`), for `seconds`: something for `perf record` to
/// watch (with `EVENTLOGS_PERF_MAP=1` so reducer functions have names).
fn profile_target(reducer: &Reducer, payloads: &[Vec<u8>], seconds: u64) {
    let size = batch_sizes().map_or(1_000, |sizes| sizes[0]);
    let until = Instant::now() + Duration::from_secs(seconds);
    let mut folded = 0;
    let started = Instant::now();
    while Instant::now() < until {
        black_box(wasm(reducer, payloads, size));
        folded += payloads.len();
    }
    println!(
        "profile target: {folded} events in batches of {size}, {:.0} events/s",
        folded as f64 / started.elapsed().as_secs_f64()
    );
}

/// The batch sizes `FOLD_BENCH_BATCHES` lists (comma-separated), if set.
fn batch_sizes() -> Option<Vec<usize>> {
    let list = std::env::var("FOLD_BENCH_BATCHES").ok()?;
    Some(
        list.split(',')
            .map(|s| s.trim().parse().expect("batch sizes"))
            .collect(),
    )
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
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

fn wasm(reducer: &Reducer, payloads: &[Vec<u8>], size: usize) -> String {
    let mut fold = reducer.start().unwrap();
    let mut batch = EventBatch::with_capacity(size, size * 96);
    for (n, chunk) in payloads.chunks(size).enumerate() {
        fill(&mut batch, chunk, n * size);
        fold.apply(&batch).unwrap();
    }
    fold.finish().unwrap().json
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

/// What `stateless` pays per batch for its fresh instance: the mean over
/// many instantiations.
fn instantiation_cost(reducer: &Reducer) -> Duration {
    const N: u32 = 2_000;
    let elapsed = time(|| {
        (0..N)
            .map(|_| black_box(reducer.start().unwrap()).version().as_bytes()[0] as usize)
            .sum()
    });
    elapsed / N
}

/// What a reduction starting from a cached aggregate costs when one event
/// is new: a fresh instance, the state handed in, one batch, the state and
/// caching policy handed out. The mean over many.
fn cached_reduction_cost(reducer: &Reducer, payloads: &[Vec<u8>]) -> Duration {
    const N: u32 = 2_000;
    let state = wasm(reducer, &payloads[..1_000], 1_000);
    let mut batch = EventBatch::default();
    fill(&mut batch, &payloads[1_000..1_001], 1_000);
    let elapsed = time(|| {
        (0..N)
            .map(|_| {
                let mut fold = reducer.resume(state.as_bytes()).unwrap();
                fold.apply(&batch).unwrap();
                fold.finish().unwrap().json.len()
            })
            .sum()
    });
    elapsed / N
}

fn time(f: impl FnOnce() -> usize) -> Duration {
    let started = Instant::now();
    black_box(f());
    started.elapsed()
}
