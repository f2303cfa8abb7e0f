//! The serve lifecycle of `busbar run`, in the shape of mini-redis's
//! `server::run(listener, shutdown)`: the HTTP listeners come up first (so
//! probes get `starting` while the handlers compile), then the node; when
//! `shutdown` resolves the node turns unready, the listeners stop accepting
//! and finish their requests (they need the node), then the node stops
//! receiving and finishes its deliveries — all within `[node] drain`. One
//! [`Metrics`] is wired to the node and the listeners here.

use crate::config::Config;
use crate::handlers::progress;
use crate::node::{Node, NodeBuilder, StartError};
use crate::ops::http::{self, Ops, Server};
use crate::ops::metrics::Metrics;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

/// What to serve, beyond the config.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// Where to serve `/metrics`, `/healthz` and `/readyz` (overrides `[node] metrics`).
    pub metrics: Option<SocketAddr>,
    /// Where to serve the HTTP gateway (overrides `[node] http`).
    pub http: Option<SocketAddr>,
    /// How the start-up load shows its progress.
    pub progress: progress::Display,
    /// The `busbar` binary that compiles handlers in child processes
    /// ([`NodeBuilder::compile_worker`]); `None` compiles in this process.
    pub compile_worker: Option<std::path::PathBuf>,
}

/// Why serving ended badly.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// A listener could not bind its address.
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        /// The address.
        addr: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
    /// The node did not start.
    #[error(transparent)]
    Start(#[from] StartError),
    /// The drain time ran out with work still in flight.
    #[error("the drain time of {} ran out with work still in flight (raise [node] drain)", humantime::format_duration(*.0))]
    Drain(Duration),
}

/// Serves `config`'s node and listeners until `shutdown` resolves, then
/// drains. `on_ready` hears of the node once it serves (`busbar run` prints
/// nothing more; an embedder may keep the node to call through it).
pub async fn run(
    config: Config,
    options: Options,
    shutdown: impl Future<Output = ()>,
    on_ready: impl FnOnce(&Node),
) -> Result<(), ServeError> {
    let drain = config.node.drain;
    let (metrics_addr, http_addr) = (options.metrics.or(config.node.metrics), options.http.or(config.node.http));
    let metrics = Arc::new(Metrics::new(u64::from(crate::node::runtime_options(&config).max_instances)));
    let ops = Ops::new(metrics.clone());
    let stop_listening = CancellationToken::new();
    let mut servers = Vec::new();
    for (addr, router) in http::routers(&ops, metrics_addr, http_addr) {
        let server = Server::start(addr, router, stop_listening.clone())
            .await
            .map_err(|source| ServeError::Listen { addr, source })?;
        let what = match (Some(addr) == metrics_addr, Some(addr) == http_addr) {
            (true, true) => "metrics, health and the HTTP gateway",
            (true, false) => "metrics and health (/metrics, /healthz, /readyz)",
            _ => "the HTTP gateway",
        };
        tracing::info!("serving {what} on http://{}", server.local_addr());
        servers.push(server);
    }
    let started = Instant::now();
    let watch = config.node.watch;
    let mut builder = NodeBuilder::new(config).watch(watch).progress(options.progress).metrics(metrics);
    if let Some(program) = options.compile_worker {
        builder = builder.compile_worker(program);
    }
    let (node, report) = builder.start().await?;
    // The gateway answers for the node before the log says it serves.
    ops.attach(node.clone());
    tracing::info!(
        handlers = report.loaded.len(),
        skipped = report.skipped.len(),
        cached = report.cached,
        elapsed = ?started.elapsed(),
        "node {} serving {}",
        node.config().node.id,
        node.config().node.handlers.display()
    );
    on_ready(&node);
    shutdown.await;
    ops.drain();
    tracing::info!(?drain, "stopping: draining in-flight work");
    stop_listening.cancel();
    let drained = tokio::time::timeout(drain, async {
        for server in servers {
            if let Err(e) = server.finished().await {
                tracing::warn!("an HTTP listener failed: {e}");
            }
        }
        node.stop().await;
    })
    .await;
    if drained.is_err() {
        return Err(ServeError::Drain(drain));
    }
    tracing::info!("stopped");
    Ok(())
}

/// Resolves on SIGTERM or SIGINT (Ctrl-C). Listening starts when this is
/// called, so a signal right after it is not lost.
pub fn shutdown_signal() -> impl Future<Output = ()> {
    let term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate());
    let mut interrupt = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt());
    async move {
        match (term, &mut interrupt) {
            (Ok(mut term), Ok(interrupt)) => {
                tokio::select! {
                    _ = interrupt.recv() => {}
                    _ = term.recv() => {}
                }
            }
            (Ok(mut term), Err(_)) => {
                term.recv().await;
            }
            (Err(_), _) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
}
