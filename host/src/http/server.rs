//! Serving the router over TCP with the limits a public daemon needs:
//! a cap on open connections, a deadline for a request's headers (which
//! also closes connections that sit idle), and a graceful shutdown with a
//! deadline, after which connections still open are closed.
//!
//! `axum::serve` has none of these (its hyper runs without a timer, so the
//! header timeout is off), so connections are served here with
//! hyper-util's HTTP/1 + HTTP/2 builder. A connection must send its first
//! byte within the header-read timeout too.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// How connections are accepted, kept and closed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ServerLimits {
    /// Connections open at once; more wait in the listen backlog.
    pub max_connections: usize,
    /// How long a client has to send a request's headers, counted from
    /// when the server is ready to read them (so also how long a connection
    /// may sit idle between requests).
    pub header_read_timeout: Duration,
    /// How long a graceful shutdown waits for open connections to finish
    /// before closing them.
    pub shutdown_timeout: Duration,
}

/// Serves `router` on `listener` until `stop` completes, then shuts down
/// gracefully within [`ServerLimits::shutdown_timeout`].
pub async fn serve(
    listener: TcpListener,
    router: Router,
    limits: ServerLimits,
    stop: impl Future<Output = ()>,
) {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout);
    builder
        .http2()
        .timer(TokioTimer::new())
        .keep_alive_interval(limits.header_read_timeout)
        .keep_alive_timeout(limits.header_read_timeout);
    let builder = Arc::new(builder);
    let slots = Arc::new(Semaphore::new(limits.max_connections.max(1)));
    let graceful = GracefulShutdown::new();
    let connections = TaskTracker::new();
    let abandon = CancellationToken::new();
    let closing = CancellationToken::new();
    tokio::pin!(stop);
    loop {
        let slot = tokio::select! {
            slot = slots.clone().acquire_owned() => slot.expect("the semaphore is never closed"),
            () = &mut stop => break,
        };
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(error) => {
                    // Out of file descriptors, or a connection reset before
                    // it was accepted: wait a little rather than spin.
                    tracing::warn!(%error, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut stop => break,
        };
        let _ = stream.set_nodelay(true);
        let builder = builder.clone();
        let service = TowerToHyperService::new(router.clone());
        let watcher = graceful.watcher();
        let abandon = abandon.clone();
        let closing = closing.clone();
        let first_byte_within = limits.header_read_timeout;
        connections.spawn(async move {
            // Telling HTTP/1 from HTTP/2 waits for the first bytes with no
            // timeout of its own: a connection that sends nothing is
            // closed here, after the header-read timeout.
            let mut probe = [0u8; 1];
            tokio::select! {
                sent = tokio::time::timeout(first_byte_within, stream.peek(&mut probe)) => {
                    if !matches!(sent, Ok(Ok(1..))) {
                        return;
                    }
                }
                () = closing.cancelled() => return,
            }
            let connection = builder.serve_connection(TokioIo::new(stream), service);
            tokio::select! {
                _ = watcher.watch(connection) => {}
                () = abandon.cancelled() => {}
            }
            drop(slot);
        });
    }
    drop(listener);
    closing.cancel();
    connections.close();
    if tokio::time::timeout(limits.shutdown_timeout, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!(
            timeout = ?limits.shutdown_timeout,
            "connections still open at the shutdown deadline; closing them"
        );
        abandon.cancel();
    }
    connections.wait().await;
}
