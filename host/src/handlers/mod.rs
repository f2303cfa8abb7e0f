//! The handler lifecycle: the handlers folder and its sidecars, compiling
//! and swapping versions, the routing table the bus core reads, admission to
//! each handler, the folder watch and the start-up progress.
//!
//! `Handlers` owns a node's loaded handlers. At start it loads the whole
//! folder; on a change of the folder it re-reads the changed files, builds
//! the routing table the folder now implies and makes it current, telling
//! the bus (through `Bus`) which names stop and start being served.

pub mod folder;
pub(crate) mod gate;
pub mod progress;
pub(crate) mod registry;
pub(crate) mod reload;
pub mod sidecar;
pub(crate) mod watch;

use crate::delivery::Kind;
use crate::driver::ServiceSpec;
use crate::ops::metrics::Metrics;
use crate::runtime::Runtime;
use crate::stats::{NameStats, StatsTable};
use folder::Skipped;
use progress::Progress;
use registry::{Registry, Route, Table};
use reload::{Change, HandlerSet};
use sidecar::Rules;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Instant;

/// What a node start loaded.
#[derive(Debug, Default, Clone)]
pub struct LoadReport {
    /// The handlers loaded.
    pub loaded: Vec<LoadedHandler>,
    /// Files skipped and why.
    pub skipped: Vec<Skipped>,
    /// How many artifacts came from the cache.
    pub cached: usize,
}

/// One handler a start loaded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoadedHandler {
    /// Its file stem.
    pub stem: String,
    /// Its version (short content hash).
    pub version: String,
    /// The names it serves, sorted.
    pub names: Vec<String>,
}

/// The bus side of a node, as the handler lifecycle sees it: where names
/// start and stop being served.
#[async_trait::async_trait]
pub(crate) trait Bus: Send + Sync {
    /// Stops serving `name` of `kind` on every connection.
    async fn stop_serving(&self, kind: Kind, name: &str);
    /// Serves `name` of `kind` (a service under `spec`) on every connection,
    /// or applies a changed `spec`.
    async fn serve(&self, kind: Kind, name: &str, spec: &ServiceSpec);
}

/// The loaded handlers of a node and the routing table they imply.
pub(crate) struct Handlers {
    /// The handlers folder.
    dir: PathBuf,
    /// What sidecars are read against.
    rules: Rules,
    /// Compiles handler files.
    runtime: Arc<Runtime>,
    /// Counts reloads and loaded handlers.
    metrics: Arc<Metrics>,
    /// How the start-up load shows its progress.
    progress: progress::Display,
    /// The routing table the bus core reads on every delivery.
    registry: Registry,
    /// Per-name counters, kept across reloads.
    stats: StatsTable,
    /// The loaded handlers; held while a change of the folder is applied.
    set: tokio::sync::Mutex<HandlerSet>,
    /// The folder watch, while the node watches.
    watch: Mutex<Option<watch::Watch>>,
}

impl Handlers {
    /// The handlers of `dir`, none loaded yet.
    pub(crate) fn new(
        dir: PathBuf,
        rules: Rules,
        runtime: Arc<Runtime>,
        metrics: Arc<Metrics>,
        progress: progress::Display,
    ) -> Self {
        Self {
            dir,
            rules,
            runtime,
            metrics,
            progress,
            registry: Registry::default(),
            stats: StatsTable::default(),
            set: tokio::sync::Mutex::new(HandlerSet::default()),
            watch: Mutex::new(None),
        }
    }

    /// The route of `name` of `kind`: the handler serving it now.
    pub(crate) fn lookup(&self, kind: Kind, name: &str) -> Option<Arc<Route>> {
        self.registry.lookup(kind, name)
    }

    /// The current routing table.
    pub(crate) fn table(&self) -> Arc<Table> {
        self.registry.snapshot()
    }

    /// Per-name statistics of node `node`, with the version serving each name.
    pub(crate) fn stats(&self, node: &str) -> Vec<NameStats> {
        let table = self.table();
        let mut stats = self.stats.snapshot(node);
        for s in &mut stats {
            let route = table.get(Kind::Service, &s.name).or_else(|| table.get(Kind::Message, &s.name));
            s.version = route.map(|r| r.handler.compiled.version.clone()).unwrap_or_default();
        }
        stats
    }

    /// Loads the whole folder (at start, before any connection; blocking:
    /// compiling is CPU-bound).
    pub(crate) fn load_folder(&self) -> std::io::Result<LoadReport> {
        let stems = folder::stems(&self.dir)?;
        let mut set = self.set.blocking_lock();
        let progress = Progress::start(stems.len(), self.progress);
        let changes =
            reload::apply(&self.runtime, &self.dir, &self.rules, &mut set, &stems, &|stem| progress.step(stem));
        drop(progress);
        let table = self.build_table(&set, &[]);
        let mut report = LoadReport::default();
        for (stem, change) in changes {
            match change {
                Change::Added { version } => {
                    let names = table.names_of(&stem);
                    report.cached += set.get(&stem).map_or(0, |l| usize::from(l.compiled.cached));
                    tracing::info!(handler = %stem, %version, ?names, "handler loaded");
                    report.loaded.push(LoadedHandler { stem, version, names });
                }
                Change::Rejected { reason, .. } => {
                    let file = if self.dir.join(format!("{stem}.wasm")).is_file() { "wasm" } else { "toml" };
                    let path = self.dir.join(format!("{stem}.{file}"));
                    tracing::warn!(file = %path.display(), "skipped: {reason}");
                    report.skipped.push(Skipped { path, reason });
                }
                _ => {}
            }
        }
        self.registry.replace(table);
        self.metrics.set_handlers(set.len());
        Ok(report)
    }

    /// Applies a change of handler files `stems`: re-reads them, makes the
    /// routing table the folder now implies current, and tells `bus` which
    /// names came, went or changed their service settings.
    pub(crate) async fn reload(&self, stems: Vec<String>, bus: &dyn Bus) {
        let started = Instant::now();
        let mut set = self.set.lock().await;
        let (runtime, dir, rules) = (self.runtime.clone(), self.dir.clone(), self.rules.clone());
        let mut working = set.clone();
        let applied = tokio::task::spawn_blocking(move || {
            let changes = reload::apply(&runtime, &dir, &rules, &mut working, &stems, &|_| {});
            (changes, working)
        })
        .await;
        let (changes, updated) = match applied {
            Ok(done) => done,
            Err(e) => {
                tracing::error!("applying a change of the handlers folder failed: {e}");
                return;
            }
        };
        *set = updated;
        let changed: Vec<&str> =
            changes.iter().filter(|(_, c)| *c != Change::Unchanged).map(|(s, _)| s.as_str()).collect();
        if changed.is_empty() {
            return;
        }
        let table = self.build_table(&set, &changed);
        self.switch(table, bus).await;
        self.metrics.set_handlers(set.len());
        let took = started.elapsed();
        let now = self.table();
        for (stem, change) in &changes {
            match change {
                Change::Unchanged => {}
                Change::Rejected { .. } => {
                    self.metrics.record_reloads(0, 1);
                    tracing::warn!(handler = %stem, ?took, "handler {change}");
                }
                _ => {
                    self.metrics.record_reloads(1, 0);
                    tracing::info!(handler = %stem, ?took, names = ?now.names_of(stem), "handler {change}");
                }
            }
        }
    }

    /// The routing table of `set`: each name goes to the first handler, in
    /// file-name order, that claims it. Claims lost by a handler in
    /// `changed` (or by any handler, when `changed` is empty) are logged.
    fn build_table(&self, set: &HandlerSet, changed: &[&str]) -> Table {
        let mut table = Table::default();
        for loaded in set.handlers() {
            let exports = loaded.compiled.exports;
            let kinds = [(Kind::Service, exports.service), (Kind::Message, exports.message)];
            for name in &loaded.policy.names {
                for (kind, _) in kinds.iter().filter(|(_, has)| *has) {
                    let route = Route::new(name, loaded.clone(), self.stats.counters(name), self.metrics.series(name));
                    if let Err(holder) = table.claim(*kind, name, route)
                        && (changed.is_empty() || changed.contains(&&*loaded.stem))
                    {
                        tracing::warn!(handler = %loaded.stem, %name, "not serving `{name}`: handler `{holder}` already serves it");
                    }
                }
            }
        }
        table
    }

    /// Makes `new` the routing table: names that go are dropped from the bus
    /// first, then the table is swapped (deliveries already running finish
    /// on the version they started with), then names that came, or whose
    /// service settings changed, are served.
    async fn switch(&self, new: Table, bus: &dyn Bus) {
        let old = self.table();
        for (kind, name, _) in old.routes() {
            if new.get(kind, name).is_none() {
                bus.stop_serving(kind, name).await;
            }
        }
        self.registry.replace(new);
        let new = self.table();
        for (kind, name, route) in new.routes() {
            let before = old.get(kind, name);
            if let Some(before) = before
                && !Arc::ptr_eq(&before.handler.compiled, &route.handler.compiled)
            {
                route.counters.record_reload();
            }
            let serve_again = match before {
                None => true,
                Some(before) => kind == Kind::Service && before.spec() != route.spec(),
            };
            if serve_again {
                bus.serve(kind, name, &route.spec()).await;
            }
        }
    }

    /// Starts watching the folder: each change is applied through `apply`
    /// (which holds the bus core weakly and ends the watch when it is gone);
    /// a second call changes nothing.
    pub(crate) fn watch<F, Fut>(&self, apply: F) -> notify::Result<()>
    where
        F: Fn(Vec<String>) -> Option<Fut> + Send + 'static,
        Fut: std::future::Future<Output = ()> + Send,
    {
        let mut watching = crate::sync::lock(&self.watch);
        if watching.is_some() {
            return Ok(());
        }
        let (watch, mut batches) = watch::start(&self.dir)?;
        *watching = Some(watch);
        tokio::spawn(async move {
            while let Some(stems) = batches.recv().await {
                let Some(applied) = apply(stems) else { break };
                applied.await;
            }
        });
        Ok(())
    }

    /// Stops watching the folder.
    pub(crate) fn unwatch(&self) {
        drop(crate::sync::lock(&self.watch).take());
    }
}
