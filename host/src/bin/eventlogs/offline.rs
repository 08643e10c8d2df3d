//! The reducer author's offline commands: `check` runs a deploy's
//! validation of a component, `fold` folds a file of events through it, both
//! in the daemon's sandbox and without a daemon or a database.

use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, bail};
use clap::Args;
use eventlogs_host::runtime::{EventBatch, Fold, Limits, Reducer, ReducerError, Runtime};

/// The sandbox's bounds, as the daemon's `serve` flags of the same names
/// set them; unset, the runtime's defaults, which are the daemon's.
#[derive(Args)]
pub struct SandboxArgs {
    /// Wall-clock time one call into the reducer may take (default 1000).
    #[arg(long)]
    reducer_timeout_ms: Option<u64>,
    /// Most linear memory the reducer may use, in bytes (default 64 MiB).
    #[arg(long)]
    reducer_memory_bytes: Option<usize>,
}

impl SandboxArgs {
    fn runtime(&self) -> anyhow::Result<Runtime> {
        let mut limits = Limits::default();
        if let Some(ms) = self.reducer_timeout_ms {
            limits.call_timeout = Duration::from_millis(ms);
        }
        if let Some(bytes) = self.reducer_memory_bytes {
            limits.memory_bytes = bytes;
        }
        Ok(Runtime::new(limits)?)
    }
}

/// `eventlogs check COMPONENT.wasm`.
#[derive(Args)]
pub struct CheckArgs {
    /// The compiled component.
    component: PathBuf,
    #[command(flatten)]
    sandbox: SandboxArgs,
}

/// `eventlogs fold COMPONENT.wasm EVENTS`.
#[derive(Args)]
pub struct FoldArgs {
    /// The compiled component.
    component: PathBuf,
    /// The events: a JSON array, or one JSON value per line (`-` reads
    /// standard input).
    events: PathBuf,
    /// Start from this stored aggregate (the JSON a reduce answered)
    /// instead of a new one.
    #[arg(long)]
    state: Option<PathBuf>,
    /// The index of the first event (the one after the stored aggregate's
    /// `through_index` when `--state` is given).
    #[arg(long, default_value_t = 0)]
    first_index: u64,
    /// The time every event was recorded at, in microseconds since the Unix
    /// epoch (default: now), for output that does not change between runs.
    #[arg(long)]
    recorded_at: Option<i64>,
    /// Events folded per reducer call, as the daemon's `--fold-batch`.
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u32).range(1..))]
    batch: u32,
    #[command(flatten)]
    sandbox: SandboxArgs,
}

/// Validates the component as a deploy would and says what it found.
pub fn check(args: CheckArgs) -> anyhow::Result<()> {
    let reducer = load(&args.sandbox.runtime()?, &args.component)?;
    println!(
        "accepted: version {}, {} appended events",
        reducer.version(),
        if reducer.validates() {
            "validates"
        } else {
            "does not validate"
        }
    );
    Ok(())
}

/// Folds the events through the component and prints the aggregate.
pub fn fold(args: FoldArgs) -> anyhow::Result<()> {
    let reducer = load(&args.sandbox.runtime()?, &args.component)?;
    let events = read_events(&args.events)?;
    let mut fold = match &args.state {
        Some(path) => {
            let state =
                std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
            reducer
                .resume(&state)
                .map_err(|failure| failed(&failure, "resuming the stored aggregate"))?
        }
        None => reducer
            .start()
            .map_err(|failure| failed(&failure, "creating the aggregate"))?,
    };
    let started = Instant::now();
    let progress = Progress::new(events.len());
    let recorded_at = args.recorded_at.unwrap_or_else(now_micros);
    let batch = args.batch as usize;
    for (chunk_number, chunk) in events.chunks(batch).enumerate() {
        let first = args.first_index + (chunk_number * batch) as u64;
        apply(&mut fold, first, recorded_at, chunk)?;
        progress.show(chunk_number * batch + chunk.len());
    }
    let memory = fold.memory_bytes();
    let folded = fold
        .finish()
        .map_err(|failure| failed(&failure, "serialising the aggregate"))?;
    progress.done();
    println!("{}", folded.json);
    let seconds = started.elapsed().as_secs_f64();
    eprintln!(
        "folded {} events in {seconds:.3} s ({:.0} events/s); guest memory {:.1} MiB",
        events.len(),
        events.len() as f64 / seconds.max(1e-9),
        memory as f64 / f64::from(1 << 20)
    );
    Ok(())
}

/// A reducer's failure as the author reads it: its kind (as the daemon's
/// problems name it), what happened, and during what.
fn failed(failure: &ReducerError, during: &str) -> anyhow::Error {
    anyhow::anyhow!("{}: {} ({during})", failure.kind.name(), failure.kind)
}

fn load(runtime: &Runtime, path: &Path) -> anyhow::Result<Reducer> {
    let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    runtime
        .load(&bytes)
        .map_err(|refused| anyhow::anyhow!("refused: {refused}"))
}

/// Folds `events`, the first at index `first`; a failure names the events
/// of the call it happened in when the reducer did not name one.
fn apply(fold: &mut Fold, first: u64, recorded_at: i64, events: &[String]) -> anyhow::Result<()> {
    let mut batch = EventBatch::with_capacity(events.len(), 0);
    for (index, event) in (first..).zip(events) {
        batch
            .push(index, recorded_at, event.as_bytes())
            .with_context(|| format!("event {index}"))?;
    }
    fold.apply(&batch).map_err(|failure| {
        let last = first + events.len() as u64 - 1;
        failed(&failure, &format!("folding events {first} to {last}"))
    })
}

/// The events of `path`: a JSON array, or one JSON value per line.
fn read_events(path: &Path) -> anyhow::Result<Vec<String>> {
    let text = if path == Path::new("-") {
        std::io::read_to_string(std::io::stdin()).context("reading standard input")?
    } else {
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?
    };
    if text.trim_start().starts_with('[') {
        let values: Vec<Box<serde_json::value::RawValue>> = serde_json::from_str(&text)
            .with_context(|| format!("{} is not a JSON array", path.display()))?;
        return Ok(values.into_iter().map(|v| v.get().to_owned()).collect());
    }
    let mut events = Vec::new();
    for (number, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let value: Box<serde_json::value::RawValue> = serde_json::from_str(line)
            .with_context(|| format!("{} line {}", path.display(), number + 1))?;
        events.push(value.get().to_owned());
    }
    if events.is_empty() {
        bail!("{} holds no events", path.display());
    }
    Ok(events)
}

fn now_micros() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as i64)
}

/// A count of events folded on standard error, for a person watching a
/// large input.
struct Progress {
    total: usize,
    shown: bool,
}

impl Progress {
    /// Inputs smaller than this fold too fast to watch.
    const LARGE: usize = 100_000;

    fn new(total: usize) -> Self {
        Self {
            total,
            shown: total >= Self::LARGE && std::io::stderr().is_terminal(),
        }
    }

    fn show(&self, done: usize) {
        if self.shown {
            let percent = done * 100 / self.total.max(1);
            eprint!("\r{done}/{} events ({percent}%)", self.total);
            let _ = std::io::stderr().flush();
        }
    }

    fn done(&self) {
        if self.shown {
            eprintln!();
        }
    }
}
