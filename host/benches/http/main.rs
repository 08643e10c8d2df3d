//! The daemon's benchmark: HTTP figures beside baselines measured in the
//! same run, on PostgreSQL + Redis.
//!
//! Run with `scripts/bench` (it builds the plugins and the optimised
//! daemon). Every daemon figure has its baseline next to it:
//! - appends, 16 and 64 clients each on its own log, validated (payment)
//!   and not (counter), versus raw sqlx doing single-row inserts with the
//!   same concurrency and versus the seed library (`eventlogs` 0.2.1)
//!   in-process; 16 clients appending to one log without `If-Match`;
//! - 16 clients racing on one log with `If-Match` (winners and conflicts per
//!   second) and 100-event batch appends (events per second), beside the
//!   single-event figure;
//! - the feed: delivery lag from an append's answer to the event's arrival
//!   on a stream subscriber under the 16-client load (target p99 <= 50 ms),
//!   feed pages beside sqlx reading `events` by position, and appends with
//!   1,000 idle subscribers beside appends without (and the RSS they cost);
//! - reduce of a 10,000-event log, uncached versus cached with one new event,
//!   each beside the seed library's (its `PostgresEventStore` and
//!   `RedisReductionCache`, in-process, on the same servers), the two
//!   measured in alternating rounds;
//! - the daemon's peak RSS while reducing a 1,000,000-event log, beside its
//!   RSS at rest;
//! - a hot deploy of a ~1 MiB component under an append-and-reduce load:
//!   time to active, failed requests;
//! - the payment load's p99 reduce latency with hostile reducers (a loop, a
//!   memory hog, a panic, deep recursion) called beside it, against the
//!   same load alone, and the daemon's RSS around it.
//!
//! The table is printed and written as JSON to `results/bench-http.json`.
//! `BENCH_SECONDS` sets each load phase's length (default 10);
//! `BENCH_REDUCES_ONLY` runs the reduce and memory figures alone;
//! `BENCH_APPENDS_ONLY` stops after the own-log append phases,
//! `BENCH_STOP_AFTER_FEED` after the feed's, `BENCH_FEED_ONLY` runs
//! the feed's alone and `BENCH_HOSTILE_ONLY` the hostile reducers' alone;
//! `BENCH_BIG_LOG` the long log's length (default 1,000,000).

mod baseline;
mod daemon;
mod feed;
mod load;
mod mixed;
mod report;
mod seed;

use std::time::Duration;

use report::{Figure, Report};

#[tokio::main]
async fn main() {
    let seconds: u64 = env_or("BENCH_SECONDS", 10);
    let big_log: u64 = env_or("BENCH_BIG_LOG", 1_000_000);
    let phase = Duration::from_secs(seconds);
    let admin = std::env::var("EVENTLOGS_TEST_POSTGRES")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into());

    let database = daemon::new_database(&admin).await;
    let daemon = daemon::Daemon::start(&database).await;
    let client = load::Client::new(&daemon.url);
    let mut report = Report::default();

    let feed_only = std::env::var_os("BENCH_FEED_ONLY").is_some();
    if std::env::var_os("BENCH_REDUCES_ONLY").is_some() {
        reduce_phases(&client, &daemon, &database, big_log, &mut report).await;
        daemon.stop();
        report.print();
        return;
    }
    if std::env::var_os("BENCH_HOSTILE_ONLY").is_some() {
        hostile_phase(&client, &daemon, phase, &mut report).await;
        daemon.stop();
        report.print();
        return;
    }
    let mut single_event_appends = 0.0;
    for clients in if feed_only { vec![] } else { vec![16, 64] } {
        eprintln!("appends: {clients} clients, each on its own log, {seconds} s per phase");
        let validated = load::own_logs(&client, "payment", clients, phase).await;
        let unvalidated = load::own_logs(&client, "counter", clients, phase).await;
        let raw = baseline::inserts(&database, clients, phase).await;
        let seed = seed::appends(&database, clients, phase).await;
        if clients == 16 {
            single_event_appends = validated.per_second();
        }
        report.push(Figure::ratio(
            &format!("append throughput, {clients} clients, validated by payment (req/s)"),
            validated.per_second(),
            raw.per_second(),
            &format!("raw sqlx single-row inserts, {clients} tasks"),
            1.0,
        ));
        report.push(Figure::ratio(
            &format!("append throughput, {clients} clients, validated by payment (req/s)"),
            validated.per_second(),
            seed.per_second(),
            &format!("seed library in-process, {clients} tasks"),
            1.0,
        ));
        report.push(Figure::ratio(
            &format!("append throughput, {clients} clients, counter (no validation) (req/s)"),
            unvalidated.per_second(),
            raw.per_second(),
            &format!("raw sqlx single-row inserts, {clients} tasks"),
            1.0,
        ));
        report.push(Figure::ratio(
            &format!("append throughput, {clients} clients, counter (no validation) (req/s)"),
            unvalidated.per_second(),
            seed.per_second(),
            &format!("seed library in-process, {clients} tasks"),
            1.0,
        ));
        for (name, ours) in [("payment", &validated), ("counter", &unvalidated)] {
            report.push(Figure::latency(
                &format!("append latency p50, {clients} clients, {name} (ms) vs raw"),
                ours.p50(),
                raw.p50(),
            ));
            report.push(Figure::latency(
                &format!("append latency p99, {clients} clients, {name} (ms) vs raw"),
                ours.p99(),
                raw.p99(),
            ));
        }
        report.push(Figure::plain(
            &format!("seed library latency p50, {clients} tasks (ms)"),
            seed.p50(),
            "p99 (ms)",
            seed.p99(),
        ));
    }

    if feed_only {
        feed_phases(&client, &daemon, &database, phase, &mut report).await;
        daemon.stop();
        report.print();
        return;
    }
    let metrics = client.metrics().await;
    let batch_stat = |name: &str| {
        metrics
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    let (sum, count) = (
        batch_stat("eventlogs_write_batch_size_sum"),
        batch_stat("eventlogs_write_batch_size_count"),
    );
    report.push(Figure::plain(
        "write batches in the append phases",
        count,
        "mean requests per batch",
        sum / count.max(1.0),
    ));
    report.push(Figure::plain(
        "Redis put batches in the append phases",
        batch_stat("eventlogs_cache_put_batch_size_count"),
        "mean puts per batch",
        batch_stat("eventlogs_cache_put_batch_size_sum")
            / batch_stat("eventlogs_cache_put_batch_size_count").max(1.0),
    ));
    report.push(Figure::plain(
        "mean time to store a batch (ms)",
        batch_stat("eventlogs_write_batch_seconds_sum") * 1000.0
            / batch_stat("eventlogs_write_batch_seconds_count").max(1.0),
        "batches",
        batch_stat("eventlogs_write_batch_seconds_count"),
    ));
    report.push(Figure::plain(
        "reducer calls demoted in the append phases",
        batch_stat("eventlogs_reducer_calls_demoted_total"),
        "reducer calls made busy (503)",
        batch_stat("eventlogs_reducer_busy_total"),
    ));
    if std::env::var_os("BENCH_APPENDS_ONLY").is_some() {
        daemon.stop();
        report.print();
        return;
    }

    eprintln!("one log: 16 clients without If-Match, {seconds} s");
    let one = load::one_log(&client, 16, phase).await;
    report.push(Figure::limit(
        "one log, 16 clients without If-Match: non-2xx answers",
        one.failed as f64,
        one.per_second,
        "appends/s",
        0.0,
    ));

    eprintln!("racing: 16 clients on one log with If-Match, {seconds} s");
    let race = load::racing(&client, 16, phase).await;
    report.push(Figure::plain(
        "racing on one log: winners/s",
        race.winners_per_second,
        "conflicts/s",
        race.conflicts_per_second,
    ));

    eprintln!("batches: 16 clients appending 100 events per request, {seconds} s");
    let batches = load::batches(&client, 16, 100, phase).await;
    report.push(Figure::ratio(
        "batch appends of 100 (events/s)",
        batches.per_second() * 100.0,
        single_event_appends,
        "single-event appends (events/s)",
        1.0,
    ));

    feed_phases(&client, &daemon, &database, phase, &mut report).await;
    if std::env::var_os("BENCH_STOP_AFTER_FEED").is_some() {
        daemon.stop();
        report.print();
        return;
    }

    reduce_phases(&client, &daemon, &database, big_log, &mut report).await;

    eprintln!("hot deploy of a 1 MiB component under load, {seconds} s");
    let deploy = mixed::hot_deploy(&client, phase).await;
    report.push(Figure::limit(
        &format!(
            "hot deploy of {} KiB: upload to active (ms)",
            deploy.bytes / 1024
        ),
        deploy.deploy.as_secs_f64() * 1000.0,
        deploy.first_use.as_secs_f64() * 1000.0,
        "then to first use (ms)",
        1000.0,
    ));
    report.push(Figure::plain(
        &format!(
            "hot deploy, guard replaying {} logs (ms)",
            deploy.replayed_logs
        ),
        deploy.deploy.as_secs_f64() * 1000.0,
        "guard with no logs to replay (ms)",
        deploy.deploy_unguarded.as_secs_f64() * 1000.0,
    ));
    report.push(Figure::limit(
        "failed requests during the hot deploy",
        deploy.failed as f64,
        0.0,
        "",
        0.0,
    ));

    hostile_phase(&client, &daemon, phase, &mut report).await;

    daemon.stop();
    report.print();
    report.write("results/bench-http.json");
}

/// The payment load alone, then beside hostile reducers (issue 10, item 6).
async fn hostile_phase(
    client: &load::Client,
    daemon: &daemon::Daemon,
    phase: Duration,
    report: &mut Report,
) {
    eprintln!(
        "hostile reducers beside the payment load, 2 x {} s",
        phase.as_secs()
    );
    let hostile = mixed::hostile(client, daemon, phase).await;
    report.push(Figure::limit(
        "payment reduce p99 with hostile reducers / without",
        hostile.beside_p99 / hostile.alone_p99,
        hostile.alone_p99,
        "p99 without (ms)",
        // Issue 10, item 6.
        1.3,
    ));
    report.push(Figure::plain(
        "daemon RSS after the hostile phase (MiB)",
        hostile.rss_after as f64 / 1024.0,
        "before (MiB)",
        hostile.rss_before as f64 / 1024.0,
    ));
    report.push(Figure::plain(
        "hostile calls (all failed, as they must)",
        hostile.hostile_calls as f64,
        "failed payment requests",
        hostile.failed as f64,
    ));
}

/// The feed's phases: delivery lag, page throughput, idle subscribers.
async fn feed_phases(
    client: &load::Client,
    daemon: &daemon::Daemon,
    database: &str,
    phase: Duration,
    report: &mut Report,
) {
    eprintln!(
        "feed: delivery lag under 16 appending clients, {} s",
        phase.as_secs()
    );
    let lag = feed::delivery_lag(client, 16, phase).await;
    report.push(Figure::limit(
        "feed stream delivery lag p99, append answered to event arrived (ms)",
        lag.p99(),
        lag.p50(),
        "p50 (ms)",
        50.0,
    ));
    report.push(Figure::plain(
        "appends measured for the delivery lag",
        lag.appends as f64,
        "",
        0.0,
    ));
    eprintln!("feed: pages of 1,000 over HTTP against sqlx on the events table");
    let (pages, direct) = feed::page_throughput(client, database).await;
    // No target: the daemon adds HTTP, JSON and the reducer names.
    report.push(Figure::plain(
        "feed pages of 1,000 over HTTP (events/s)",
        pages,
        "sqlx reading events by position, pages of 1,000 (events/s)",
        direct,
    ));
    eprintln!(
        "feed: appends with 1,000 idle stream subscribers, 2 x {} s",
        phase.as_secs()
    );
    let without = load::own_logs(client, "payment", 16, phase).await;
    let (with, grown) =
        feed::appends_with_idle_subscribers(client, 1000, phase, || daemon.rss_kib()).await;
    report.push(Figure::ratio(
        "appends, 16 clients, payment, with 1,000 idle subscribers (req/s)",
        with.per_second(),
        without.per_second(),
        "the same without subscribers",
        0.9,
    ));
    report.push(Figure::plain(
        "daemon RSS growth opening 1,000 idle subscribers (MiB)",
        grown as f64 / 1024.0,
        "per subscriber (KiB)",
        grown as f64 / 1000.0,
    ));
}

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// The reduce figures: a 10,000-event log uncached and cached beside the
/// seed library, and the memory and speed of reducing a `big_log`-event
/// log.
async fn reduce_phases(
    client: &load::Client,
    daemon: &daemon::Daemon,
    database: &str,
    big_log: u64,
    report: &mut Report,
) {
    eprintln!("reduce: a 10,000-event log, uncached and cached, beside the seed library");
    // Logs are written through another daemon, so the one measured holds
    // nothing of them in memory when it first reduces them.
    let writer = daemon.beside(database).await;
    let writing = load::Client::new(&writer.url);
    // Five rounds each, taken in turns, so that a slower spell of the
    // machine weighs on both sides alike.
    let (mut ours, mut theirs) = (Vec::new(), Vec::new());
    for _ in 0..5 {
        let prefix = &daemon.redis_prefix;
        ours.push(load::reduce_latency(client, &writing, prefix, 10_000, 1).await);
        theirs.push(seed::reduces(database, daemon::REDIS_URL, 10_000, 1).await);
    }
    let (reduce, seed) = (load::Reduce::merge(ours), load::Reduce::merge(theirs));
    report.push(Figure::ratio(
        "reduce 10k events, cached (right after an append): speed-up",
        reduce.uncached.p50() / reduce.cached.p50(),
        1.0,
        "uncached reduce",
        10.0,
    ));
    for (what, ours, theirs) in [
        ("uncached", &reduce.uncached, &seed.uncached),
        ("after 1 new event, cached", &reduce.cached, &seed.cached),
    ] {
        // Issue 12: at most the seed library's time, in-process.
        report.push(Figure::limit(
            &format!(
                "reduce 10k events {what}, p50: eventlogs over HTTP / seed library in-process"
            ),
            ours.p50() / theirs.p50(),
            theirs.p50(),
            "seed library p50 (ms)",
            1.0,
        ));
        report.push(Figure::plain(
            &format!("reduce 10k events {what}, eventlogs p50 (ms)"),
            ours.p50(),
            "p99 (ms)",
            ours.p99(),
        ));
        report.push(Figure::plain(
            &format!("reduce 10k events {what}, seed library p50 (ms)"),
            theirs.p50(),
            "p99 (ms)",
            theirs.p99(),
        ));
    }

    eprintln!("memory: reducing a {big_log}-event log");
    let at_rest = daemon.rss_kib();
    let log = load::long_log(&writing, big_log).await;
    writer.stop();
    // Its appends wrote the aggregate through to the cache: remove it, so
    // the reduce folds every event.
    daemon::evict(&daemon.redis_prefix, &log).await;
    daemon.reset_peak_rss();
    let started = std::time::Instant::now();
    let reduced = client.reduce(&log).await;
    let took = started.elapsed();
    assert_eq!(reduced["through_index"], big_log - 1, "{reduced}");
    assert_eq!(reduced["events_folded"], big_log, "{reduced}");
    let peak = daemon.peak_rss_kib();
    report.push(Figure::limit(
        &format!("daemon peak RSS reducing {big_log} events (MiB)"),
        peak as f64 / 1024.0,
        at_rest as f64 / 1024.0,
        "RSS at rest before loading it (MiB)",
        100.0,
    ));
    report.push(Figure::plain(
        &format!("reduce {big_log} events uncached (s)"),
        took.as_secs_f64(),
        "events/s",
        big_log as f64 / took.as_secs_f64(),
    ));
}
