//! Reducing a long log keeps memory bounded: events stream from the store
//! in pages and fold in batches, so the peak does not grow with the log.

mod common;

use common::manager::{Parts, amount};
use eventlogs_host::LogId;
use eventlogs_host::cache::{Anchor, CacheKey, CachedReduction};
use eventlogs_host::log_manager::Append;
use serde_json::{Value, json};

const EVENTS: u64 = 200_000;
const PAGE: u64 = 1_000;

/// The process's peak resident set size so far, in KiB.
fn peak_rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("/proc/self/status");
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmHWM:"))
        .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmHWM line")
}

/// Starts a new peak measurement (Linux: writing 5 to clear_refs resets
/// VmHWM to the current RSS).
fn reset_peak_rss() {
    std::fs::write("/proc/self/clear_refs", "5").expect("reset the peak RSS");
}

async fn reducing_200_000_events_keeps_memory_bounded(parts: Parts) {
    let m = &parts.manager;
    let log_id = LogId::new();
    let page: Vec<Value> = (0..PAGE)
        .map(|i| json!({"Authorized": {"amount": 1, "approval_code": format!("code-{i:06}")}}))
        .collect();
    let page = common::events(&page);
    m.create(Some(log_id), "payment", page.clone(), None)
        .await
        .unwrap();
    for _ in 1..EVENTS / PAGE {
        m.append(Append {
            log_id,
            events: page.clone(),
            expected_last_index: None,
            idempotency_key: None,
        })
        .await
        .unwrap();
    }
    drop(page);
    // Appends wrote their aggregate through to the cache; an entry beyond
    // the log's end is ignored, so the reduce below folds every event.
    let key = CacheKey {
        reducer: "payment".into(),
        version: parts.registry.active("payment").unwrap().version(),
        log_id,
    };
    let beyond = CachedReduction {
        through_index: u64::MAX / 2,
        reduced_at: 0,
        anchor: Anchor {
            position: 0,
            recorded_at: 0,
        },
        aggregate: "{}".into(),
    };
    parts.cache.put(&key, &beyond, None).await.unwrap();

    reset_peak_rss();
    let before = common::rss_kib();
    let reduced = m.reduce(log_id, None).await.unwrap();
    let peak = peak_rss_kib();
    assert_eq!(reduced.through_index, EVENTS - 1);
    assert_eq!(amount(&reduced, "amount_approved") as u64, EVENTS);
    let growth = peak.saturating_sub(before);
    eprintln!(
        "reduce of {EVENTS} events: RSS before {before} KiB, peak {peak} KiB, growth {growth} KiB"
    );
    // The events alone are ~13 MiB of JSON; a reduce that held them all
    // would grow by several times that.
    assert!(growth < 24 * 1024, "peak grew by {growth} KiB");
}

on_both!(1000; reducing_200_000_events_keeps_memory_bounded);
