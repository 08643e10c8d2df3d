//! `eventlogs`: the daemon (`serve`), a small client for operators
//! (`deploy`, `reducers`), and offline commands for reducer authors
//! (`new`, `check`, `fold`).

mod client;
mod offline;
mod scaffold;

use std::io::IsTerminal;

use anyhow::Context;
use clap::{Parser, Subcommand};
use eventlogs_host::config::{LogFormat, ServeConfig};
use eventlogs_host::daemon::Daemon;
use tracing_subscriber::EnvFilter;

/// jemalloc rather than glibc's malloc, with its background thread
/// returning freed memory to the kernel after a few seconds: a load's
/// connections and buffers, once freed, no longer stay resident, which
/// glibc's arenas left them (docs/benchmarks.md has both figures).
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// An event-sourcing host with WebAssembly reducers.
#[derive(Parser)]
#[command(version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the daemon.
    Serve(Box<ServeConfig>),
    /// Deploy a reducer component and activate it.
    Deploy(client::DeployArgs),
    /// List deployed reducers and their versions.
    Reducers(client::Connection),
    /// Create a reducer crate to start from, in a new folder.
    New(scaffold::NewArgs),
    /// Validate a reducer component as a deploy would, without a daemon.
    Check(offline::CheckArgs),
    /// Fold a file of events through a reducer component in the daemon's
    /// sandbox, without a daemon or a database; prints the aggregate.
    Fold(offline::FoldArgs),
}

/// Native stack of the async runtime's threads: room for reducer calls made
/// on them (the largest WebAssembly stack allowed, 1 MiB, and the frames
/// around it); see `eventlogs_host::runtime::allow_inline_calls`.
const THREAD_STACK_BYTES: usize = 4 << 20;

fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Command::Serve(config) => on_async_runtime(serve(*config)),
        Command::Deploy(args) => on_async_runtime(client::deploy(args)),
        Command::Reducers(connection) => on_async_runtime(client::reducers(connection)),
        Command::New(args) => scaffold::new(args),
        // Offline commands run reducers on this thread (8 MiB of stack).
        Command::Check(args) => offline::check(args),
        Command::Fold(args) => offline::fold(args),
    }
}

/// Runs `command` on a multi-threaded async runtime whose threads may run
/// reducer calls inline.
fn on_async_runtime(command: impl Future<Output = anyhow::Result<()>>) -> anyhow::Result<()> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_stack_size(THREAD_STACK_BYTES)
        .on_thread_start(|| eventlogs_host::runtime::allow_inline_calls(THREAD_STACK_BYTES))
        .build()
        .context("cannot start the async runtime")?
        .block_on(command)
}

async fn serve(config: ServeConfig) -> anyhow::Result<()> {
    let filter = EnvFilter::try_from_env("EVENTLOGS_LOG").unwrap_or_else(|_| "info".into());
    // Logs go to stderr; stdout carries only the "listening on" line.
    // Colours only for a person at a terminal, never into a file.
    let logs = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr);
    match config.log_format {
        LogFormat::Text => logs.init(),
        LogFormat::Json => logs.json().init(),
    }
    let daemon = Daemon::start(&config).await.context("cannot start")?;
    println!("eventlogs listening on http://{}", daemon.local_addr());
    shutdown_signal().await;
    tracing::info!("shutting down: finishing in-flight requests and cache writes");
    daemon.shutdown().await?;
    tracing::info!("stopped");
    Ok(())
}

/// SIGINT (Ctrl-C) or SIGTERM.
async fn shutdown_signal() {
    let interrupt = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut terminate =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
                .expect("install the SIGTERM handler");
        tokio::select! {
            _ = interrupt => {}
            _ = terminate.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = interrupt.await;
}
