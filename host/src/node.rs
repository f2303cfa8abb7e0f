//! The bus core: a node. It loads the handlers folder into the registry,
//! registers every name on every connection, applies later changes of the
//! folder live (a new routing table swapped in at once, names added to and
//! dropped from the connections), turns incoming deliveries into runtime
//! invocations (counting statistics), and sends outgoing ones — its own and
//! its handlers' nested calls — over a connection picked by weight.

use crate::config::Config;
use crate::delivery::{Envelope, Headers, Mode};
use crate::driver::default::DefaultDriver;
use crate::driver::{Connection, DeadLetter, Driver, DriverError, Fanout, Inbound, Receipt, ServiceSpec};
use crate::failure::{Failure, FailureClass};
use crate::fault::Point;
use crate::handlers::{self, Skipped};
use crate::metrics::Metrics;
use crate::progress::{self, Progress};
use crate::registry::{Registry, Route, Table};
use crate::reload::{self, Change, HandlerSet};
use crate::runtime::{Invoke, Outbound, Runtime, RuntimeOptions};
use crate::stats::{Kind, NameStats, NodeInfo, ServiceInfo, StatsTable, rfc3339};
use crate::trace::Carried;
use crate::weighted::WeightedPicker;
use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::time::{Duration, Instant, SystemTime};
use tracing::Instrument as _;

/// A problem starting a node.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The wasmtime engine could not be built.
    #[error("cannot start the wasm runtime: {0:#}")]
    Runtime(anyhow::Error),
    /// The handlers folder could not be read.
    #[error("cannot read the handlers folder {path}: {source}; create it or point --handlers at one")]
    Folder {
        /// The folder.
        path: String,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The handlers folder cannot be watched.
    #[error("cannot watch the handlers folder: {0}; set `[node] watch = false` to serve without live reload")]
    Watch(notify::Error),
    /// A connection could not be opened.
    #[error("bus connection `{name}`: {error}")]
    Connect {
        /// The connection's name.
        name: String,
        /// What the driver said.
        error: DriverError,
    },
}

/// What a node start loaded.
#[derive(Debug, Default, Clone)]
pub struct LoadReport {
    /// Handlers loaded: stem, version, the names it got.
    pub loaded: Vec<(String, String, Vec<String>)>,
    /// Files skipped and why.
    pub skipped: Vec<Skipped>,
    /// How many artifacts came from the cache.
    pub cached: usize,
}

/// A running node. Cheap to clone.
#[derive(Clone)]
pub struct Node {
    core: Arc<Core>,
}

struct Core {
    me: Weak<Core>,
    config: Config,
    /// What sidecars are read against (from `config`).
    rules: handlers::Rules,
    runtime: Arc<Runtime>,
    metrics: Arc<Metrics>,
    /// How the start-up load shows its progress.
    progress: progress::Display,
    registry: Registry,
    stats: StatsTable,
    started: SystemTime,
    outgoing: OnceLock<Outgoing>,
    /// The loaded handlers; held while a change of the folder is applied.
    handlers: tokio::sync::Mutex<HandlerSet>,
    /// The folder watch, while the node watches.
    watch: Mutex<Option<crate::watch::Watch>>,
}

/// How many changes of the handlers folder a node applied and rejected.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize)]
pub struct ReloadStats {
    /// Handlers added, replaced, re-configured or removed.
    pub applied: u64,
    /// New files that did not make a valid handler (the old version kept serving).
    pub rejected: u64,
}

struct Outgoing {
    connections: Vec<Arc<dyn Connection>>,
    /// Operations sent through each connection, for [`Node::connections`].
    sent: Vec<std::sync::atomic::AtomicU64>,
    picker: WeightedPicker,
}

/// One bus connection of a node and how much it carried.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ConnectionUse {
    /// The connection's name (`default` or the `[bus.NAME]` table).
    pub name: String,
    /// Its weight.
    pub weight: u32,
    /// Outgoing operations sent through it.
    pub sent: u64,
}

/// Builds a node: config, runtime and drivers can be supplied, for tests and
/// embedding; otherwise they are made from the config.
pub struct NodeBuilder {
    config: Config,
    runtime: Option<Arc<Runtime>>,
    drivers: HashMap<String, Arc<dyn Driver>>,
    /// Whether the node serves handlers; a client only sends.
    serve: bool,
    /// Whether the node applies changes of its handlers folder live.
    watch: bool,
    /// Where the node records its metrics (a fresh set if none is given).
    metrics: Option<Arc<Metrics>>,
    /// How the start-up load shows its progress.
    progress: progress::Display,
}

impl NodeBuilder {
    /// A builder for `config`.
    pub fn new(config: Config) -> Self {
        Self {
            config,
            runtime: None,
            drivers: HashMap::new(),
            serve: true,
            watch: false,
            metrics: None,
            progress: progress::Display::default(),
        }
    }

    /// Makes a client: it connects and sends, but loads no handlers, serves
    /// nothing and does not show up in discovery (what the CLI uses on a
    /// shared bus).
    pub fn client(mut self) -> Self {
        self.serve = false;
        self
    }

    /// Watches the handlers folder and applies every change while serving
    /// (what `busbar run` does unless `[node] watch = false`).
    pub fn watch(mut self, watch: bool) -> Self {
        self.watch = watch;
        self
    }

    /// Shares an existing runtime (one engine per process).
    pub fn runtime(mut self, runtime: Arc<Runtime>) -> Self {
        self.runtime = Some(runtime);
        self
    }

    /// Records into `metrics` (shared with an HTTP listener started before
    /// the node, so that `/metrics` and `/readyz` answer while it loads).
    pub fn metrics(mut self, metrics: Arc<Metrics>) -> Self {
        self.metrics = Some(metrics);
        self
    }

    /// How loading the handlers folder at start shows its progress (log
    /// lines by default; `busbar run` draws a bar when stderr is a terminal).
    pub fn progress(mut self, display: progress::Display) -> Self {
        self.progress = display;
        self
    }

    /// Uses `driver` for connections whose `driver` key is `name`.
    pub fn driver(mut self, name: &str, driver: Arc<dyn Driver>) -> Self {
        self.drivers.insert(name.into(), driver);
        self
    }

    /// Loads the handlers folder, connects, registers every name and starts
    /// receiving.
    pub async fn start(self) -> Result<(Node, LoadReport), StartError> {
        let runtime = match self.runtime {
            Some(r) => r,
            None => Arc::new(Runtime::new(&runtime_options(&self.config)).map_err(StartError::Runtime)?),
        };
        let metrics = self.metrics.unwrap_or_else(|| Arc::new(Metrics::new(u64::from(runtime.pool_size()))));
        let core = Arc::new_cyclic(|me| Core {
            me: me.clone(),
            rules: handlers::Rules::of(&self.config),
            config: self.config,
            runtime,
            metrics,
            progress: self.progress,
            registry: Registry::default(),
            stats: StatsTable::default(),
            started: SystemTime::now(),
            outgoing: OnceLock::new(),
            handlers: tokio::sync::Mutex::new(HandlerSet::default()),
            watch: Mutex::new(None),
        });
        let report = match self.serve {
            // Compiling is CPU-bound (seconds for a cold cache): off the async workers.
            true => {
                let loader = core.clone();
                tokio::task::spawn_blocking(move || loader.load_folder())
                    .await
                    .map_err(|e| StartError::Runtime(anyhow::anyhow!("loading the handlers folder panicked: {e}")))??
            }
            false => LoadReport::default(),
        };
        let mut connections = Vec::new();
        for conn in &core.config.connections {
            let driver = match self.drivers.get(&conn.driver) {
                Some(d) => d.clone(),
                None => builtin_driver(&conn.driver)
                    .map_err(|error| StartError::Connect { name: conn.name.clone(), error })?,
            };
            let inbound: Arc<dyn Inbound> = core.clone();
            let c = driver
                .connect(conn, inbound)
                .await
                .map_err(|error| StartError::Connect { name: conn.name.clone(), error })?;
            for (kind, name, route) in core.registry.snapshot().routes() {
                register(&*c, kind, name, route)
                    .await
                    .map_err(|error| StartError::Connect { name: conn.name.clone(), error })?;
            }
            if self.serve {
                c.start().await.map_err(|error| StartError::Connect { name: conn.name.clone(), error })?;
            }
            connections.push(c);
        }
        let weights: Vec<u32> = core.config.connections.iter().map(|c| c.weight).collect();
        let sent = connections.iter().map(|_| Default::default()).collect();
        let _ = core.outgoing.set(Outgoing { connections, sent, picker: WeightedPicker::new(&weights) });
        let node = Node { core };
        if self.serve && self.watch {
            node.watch().map_err(StartError::Watch)?;
        }
        Ok((node, report))
    }
}

/// The driver called `name` when none was supplied to the builder. Every
/// `default` connection in the process shares one in-process hub.
fn builtin_driver(name: &str) -> Result<Arc<dyn Driver>, DriverError> {
    static HUB: OnceLock<DefaultDriver> = OnceLock::new();
    match name {
        "default" => Ok(Arc::new(HUB.get_or_init(DefaultDriver::new).clone())),
        "nats" => Ok(Arc::new(crate::driver::nats::NatsDriver)),
        other => Err(DriverError(format!("no driver named `{other}` in this build"))),
    }
}

/// Engine settings derived from a config.
pub fn runtime_options(config: &Config) -> RuntimeOptions {
    RuntimeOptions { cache_dir: config.node.cache.clone(), ..RuntimeOptions::default() }
}

impl Core {
    /// Runs one delivery on `route`'s handler within its limits: payload
    /// size, admission (concurrency and queue), the invocation, reply size.
    async fn run(&self, route: &Route, envelope: Envelope, trace: Carried, me: Arc<Core>) -> Result<Vec<u8>, Failure> {
        let handler = &route.handler;
        let policy = &handler.policy;
        let size = envelope.payload.len() as u64;
        if size > policy.max_payload {
            return Err(Failure::new(
                FailureClass::Invalid,
                format!(
                    "the payload of {} is larger than handler `{}` accepts ({}, its `max_payload`)",
                    crate::units::human_bytes(size),
                    handler.stem,
                    crate::units::human_bytes(policy.max_payload)
                ),
            ));
        }
        let own = crate::limits::deadline_in(policy.timeout);
        let deadline = envelope.deadline.map_or(own, |d| d.min(own));
        let _slot = handler.gate.enter(&handler.stem, deadline).await?;
        crate::fault::point(Point::Deliver, &envelope.name);
        let invoke = Invoke {
            handler: handler.stem.clone(),
            envelope,
            timeout: policy.timeout,
            memory: policy.memory,
            max_depth: self.config.handlers.max_depth,
            max_calls: policy.max_calls,
            grants: policy.grants.clone(),
            outbound: me,
            reuse: policy.reuse,
            trace,
        };
        let reply = self.runtime.invoke(&handler.compiled, invoke).await?;
        let size = reply.len() as u64;
        if size > policy.max_reply {
            return Err(Failure::new(
                FailureClass::Failed,
                format!(
                    "handler `{}` replied with {}, more than its `max_reply` of {}; the reply was dropped",
                    handler.stem,
                    crate::units::human_bytes(size),
                    crate::units::human_bytes(policy.max_reply)
                ),
            ));
        }
        Ok(reply)
    }

    /// Loads the whole handlers folder (at start, before any connection).
    fn load_folder(&self) -> Result<LoadReport, StartError> {
        let dir = &self.config.node.handlers;
        let stems =
            handlers::stems(dir).map_err(|source| StartError::Folder { path: dir.display().to_string(), source })?;
        let mut set = self.handlers.blocking_lock();
        let progress = Progress::start(stems.len(), self.progress);
        let changes = reload::apply(&self.runtime, dir, &self.rules, &mut set, &stems, &|stem| progress.step(stem));
        drop(progress);
        let table = self.table(&set, &[]);
        let mut report = LoadReport::default();
        for (stem, change) in changes {
            match change {
                Change::Added { version } => {
                    let served = names_of(&table, &stem);
                    report.cached += set.get(&stem).map_or(0, |l| usize::from(l.compiled.cached));
                    tracing::info!(handler = %stem, %version, names = ?served, "handler loaded");
                    report.loaded.push((stem, version, served));
                }
                Change::Rejected { reason, .. } => {
                    let file = if dir.join(format!("{stem}.wasm")).is_file() { "wasm" } else { "toml" };
                    let path = dir.join(format!("{stem}.{file}"));
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

    /// Applies a change of handler files `stems`: re-reads them, swaps in the
    /// routing table the folder now implies, and tells every connection which
    /// names came, went or changed their service settings.
    async fn reload(&self, stems: Vec<String>) {
        let started = Instant::now();
        let mut set = self.handlers.lock().await;
        let (runtime, dir, rules) = (self.runtime.clone(), self.config.node.handlers.clone(), self.rules.clone());
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
        let table = self.table(&set, &changed);
        self.switch(table).await;
        self.metrics.set_handlers(set.len());
        let took = started.elapsed();
        let now = self.registry.snapshot();
        for (stem, change) in &changes {
            match change {
                Change::Unchanged => {}
                Change::Rejected { .. } => {
                    self.metrics.record_reloads(0, 1);
                    tracing::warn!(handler = %stem, ?took, "handler {change}");
                }
                _ => {
                    self.metrics.record_reloads(1, 0);
                    tracing::info!(handler = %stem, ?took, names = ?names_of(&now, stem), "handler {change}");
                }
            }
        }
    }

    /// The routing table of `set`: each name goes to the first handler, in
    /// file-name order, that claims it. Claims lost by a handler in
    /// `changed` (or by any handler, when `changed` is empty) are logged.
    fn table(&self, set: &HandlerSet, changed: &[&str]) -> Table {
        let mut table = Table::default();
        for loaded in set.handlers() {
            let exports = loaded.compiled.exports;
            let kinds = [(Kind::Service, exports.service), (Kind::Message, exports.message)];
            for name in &loaded.policy.names {
                for (kind, _) in kinds.iter().filter(|(_, has)| *has) {
                    let route = Route { handler: loaded.clone(), counters: self.stats.counters(name) };
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

    /// Makes `new` the routing table: names that go are dropped from the
    /// connections first, then the table is swapped (deliveries already
    /// running finish on the version they started with), then names that
    /// came, or whose service settings changed, are registered.
    async fn switch(&self, new: Table) {
        let old = self.registry.snapshot();
        let connections = self.outgoing.get().map(|o| o.connections.clone()).unwrap_or_default();
        for (kind, name, _) in old.routes() {
            if new.get(kind, name).is_some() {
                continue;
            }
            for c in &connections {
                let dropped = match kind {
                    Kind::Service => c.unregister_service(name).await,
                    Kind::Message => c.unregister_message(name).await,
                };
                if let Err(e) = dropped {
                    tracing::warn!(%name, "could not stop serving `{name}`: {e}");
                }
            }
        }
        self.registry.replace(new);
        let new = self.registry.snapshot();
        for (kind, name, route) in new.routes() {
            let before = old.get(kind, name);
            if let Some(before) = before
                && !Arc::ptr_eq(&before.handler.compiled, &route.handler.compiled)
            {
                route.counters.record_reload();
            }
            let register_again = match before {
                None => true,
                Some(before) => kind == Kind::Service && spec_of(before) != spec_of(route),
            };
            if !register_again {
                continue;
            }
            for c in &connections {
                if let Err(e) = register(&**c, kind, name, route).await {
                    tracing::warn!(%name, "could not serve `{name}` on the bus: {e}");
                }
            }
        }
    }

    /// The connection for the next outgoing operation, by weight.
    fn outgoing(&self) -> Result<&Arc<dyn Connection>, Failure> {
        let out = self
            .outgoing
            .get()
            .ok_or_else(|| Failure::new(FailureClass::NotFound, "the node is not connected to a bus yet"))?;
        let i =
            out.picker.pick().ok_or_else(|| Failure::new(FailureClass::NotFound, "the node has no bus connection"))?;
        out.sent[i].fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        Ok(&out.connections[i])
    }
}

#[async_trait::async_trait]
impl Inbound for Core {
    async fn deliver(&self, envelope: Envelope) -> Result<Vec<u8>, Failure> {
        let kind = if envelope.mode.is_service() { Kind::Service } else { Kind::Message };
        let Some(route) = self.registry.lookup(kind, &envelope.name) else {
            return Err(Failure::not_found(&envelope.name));
        };
        let Some(me) = self.me.upgrade() else {
            return Err(Failure::node_gone(&envelope.name));
        };
        let mut envelope = envelope;
        let (name, mode, attempt) = (envelope.name.clone(), envelope.mode, envelope.attempt);
        let trace = crate::trace::enter(&mut envelope.headers);
        let span_context = trace.parent;
        let version = &route.handler.compiled.version;
        // One span per invocation; the guest's log lines are written inside it.
        let span = tracing::info_span!(
            "invocation",
            // Not `name`: JSON logs put the span's own name under that key.
            bus_name = %name,
            %mode,
            attempt,
            %version,
            trace_id = %span_context.trace_id_hex(),
            span_id = %format_args!("{:016x}", span_context.span_id),
            outcome = tracing::field::Empty,
            duration_us = tracing::field::Empty,
        );
        let start = Instant::now();
        let in_flight = self.metrics.start();
        let result = crate::fault::guard(Point::Deliver, &name, &self.metrics, self.run(&route, envelope, trace, me))
            .instrument(span.clone())
            .await;
        drop(in_flight);
        let elapsed = start.elapsed();
        route.counters.record(elapsed, result.is_err());
        self.metrics.record(&name, mode, attempt, elapsed, result.as_ref().map(|_| ()));
        let outcome = result.as_ref().map_or_else(|f| f.class.as_str(), |_| "ok");
        span.record("outcome", outcome);
        span.record("duration_us", u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX));
        let _entered = span.enter();
        match &result {
            Ok(_) => tracing::debug!(outcome, ?elapsed, "invocation ok"),
            Err(f) => tracing::info!(outcome, ?elapsed, "invocation failed: {}", f.message),
        }
        result
    }

    fn dead_lettered(&self, name: &str) {
        self.metrics.record_dead_letter(name);
    }

    fn stats(&self) -> Vec<NameStats> {
        let table = self.registry.snapshot();
        let mut stats = self.stats.snapshot(&self.config.node.id);
        for s in &mut stats {
            let route = table.get(Kind::Service, &s.name).or_else(|| table.get(Kind::Message, &s.name));
            s.version = route.map(|r| r.handler.compiled.version.clone()).unwrap_or_default();
        }
        stats
    }

    fn info(&self) -> NodeInfo {
        let names = self.registry.names();
        let of = |k: Kind| names.iter().filter(|(kind, _)| *kind == k).map(|(_, n)| n.clone()).collect();
        let conn = self.config.connections.first();
        NodeInfo {
            project: self.config.node.project.clone(),
            node: self.config.node.id.clone(),
            group: conn.map(|c| c.group.clone()).unwrap_or_default(),
            profile: conn.map(|c| c.profile.clone()).unwrap_or_default(),
            services: of(Kind::Service),
            messages: of(Kind::Message),
            started: rfc3339(self.started),
            last_seen: rfc3339(SystemTime::now()),
        }
    }
}

#[async_trait::async_trait]
impl Outbound for Core {
    async fn send(
        &self,
        mode: Mode,
        name: &str,
        payload: Vec<u8>,
        headers: Headers,
        timeout: Duration,
    ) -> Result<Vec<u8>, Failure> {
        match mode {
            Mode::Dispatch => self.enqueue(name, payload, headers).await.map(|_| Vec::new()),
            Mode::Call | Mode::Broadcast | Mode::Rolecast => {
                crate::name::validate(name).map_err(|e| Failure::new(FailureClass::Invalid, e.to_string()))?;
                let conn = self.outgoing()?;
                crate::fault::guard(Point::Send, name, &self.metrics, async {
                    crate::fault::point(Point::Send, name);
                    match mode {
                        Mode::Broadcast => conn.publish(name, payload, headers, Fanout::All).await.map(|()| Vec::new()),
                        Mode::Rolecast => {
                            conn.publish(name, payload, headers, Fanout::PerGroup).await.map(|()| Vec::new())
                        }
                        _ => conn.request(name, payload, headers, timeout).await,
                    }
                })
                .await
            }
        }
    }
}

impl Core {
    /// Queues a dispatch to `name` over the next connection.
    async fn enqueue(&self, name: &str, payload: Vec<u8>, headers: Headers) -> Result<Receipt, Failure> {
        crate::name::validate(name).map_err(|e| Failure::new(FailureClass::Invalid, e.to_string()))?;
        let conn = self.outgoing()?;
        crate::fault::guard(Point::Send, name, &self.metrics, async {
            crate::fault::point(Point::Send, name);
            conn.enqueue(name, payload, headers).await
        })
        .await
    }
}

impl Node {
    /// Starts a node from `config` with the default drivers.
    pub async fn start(config: Config) -> Result<(Node, LoadReport), StartError> {
        NodeBuilder::new(config).start().await
    }

    /// This node's config.
    pub fn config(&self) -> &Config {
        &self.core.config
    }

    /// Calls service `name` and waits at most `timeout` for its reply.
    pub async fn call(&self, name: &str, payload: Vec<u8>, timeout: Duration) -> Result<Vec<u8>, Failure> {
        self.call_with(name, payload, Headers::new(), timeout).await
    }

    /// [`Node::call`] with metadata headers.
    pub async fn call_with(
        &self,
        name: &str,
        payload: Vec<u8>,
        headers: Headers,
        timeout: Duration,
    ) -> Result<Vec<u8>, Failure> {
        self.core.send(Mode::Call, name, payload, headers, timeout).await
    }

    /// Queues work for service `name`; returns once the bus accepted it.
    pub async fn dispatch(&self, name: &str, payload: Vec<u8>) -> Result<Receipt, Failure> {
        self.core.enqueue(name, payload, Headers::new()).await
    }

    /// Sends an event to every listener of `name`.
    pub async fn broadcast(&self, name: &str, payload: Vec<u8>) -> Result<(), Failure> {
        self.core.send(Mode::Broadcast, name, payload, Headers::new(), Duration::ZERO).await.map(drop)
    }

    /// Sends an event to one listener of `name` per group.
    pub async fn rolecast(&self, name: &str, payload: Vec<u8>) -> Result<(), Failure> {
        self.core.send(Mode::Rolecast, name, payload, Headers::new(), Duration::ZERO).await.map(drop)
    }

    /// The node's bus connections and the outgoing operations each carried.
    pub fn connections(&self) -> Vec<ConnectionUse> {
        let Some(out) = self.core.outgoing.get() else { return Vec::new() };
        self.core
            .config
            .connections
            .iter()
            .zip(&out.sent)
            .map(|(c, sent)| ConnectionUse {
                name: c.name.clone(),
                weight: c.weight,
                sent: sent.load(std::sync::atomic::Ordering::Relaxed),
            })
            .collect()
    }

    /// This node's own statistics.
    pub fn local_stats(&self) -> Vec<NameStats> {
        Inbound::stats(&*self.core)
    }

    /// This node's identity and names.
    pub fn info(&self) -> NodeInfo {
        self.core.info()
    }

    fn first_connection(&self) -> Result<&Arc<dyn Connection>, DriverError> {
        self.core
            .outgoing
            .get()
            .and_then(|o| o.connections.first())
            .ok_or_else(|| DriverError("the node has no bus connection".into()))
    }

    /// Statistics of every node on the bus.
    pub async fn stats(&self) -> Result<Vec<NameStats>, DriverError> {
        self.first_connection()?.stats().await
    }

    /// Every live node on the bus.
    pub async fn nodes(&self) -> Result<Vec<NodeInfo>, DriverError> {
        self.first_connection()?.nodes().await
    }

    /// Every name served on the bus.
    pub async fn services(&self) -> Result<Vec<ServiceInfo>, DriverError> {
        self.first_connection()?.services().await
    }

    /// Exhausted or refused dispatches.
    pub async fn dead_letters(&self) -> Result<Vec<DeadLetter>, DriverError> {
        self.first_connection()?.dead_letters().await
    }

    /// Queues the dead letters of `name` again; returns how many.
    pub async fn replay_dead_letters(&self, name: &str) -> Result<usize, DriverError> {
        self.first_connection()?.replay_dead_letters(name).await
    }

    /// Deletes the dead letters of `name`; returns how many.
    pub async fn drop_dead_letters(&self, name: &str) -> Result<usize, DriverError> {
        self.first_connection()?.drop_dead_letters(name).await
    }

    /// Starts applying changes of the handlers folder live (see
    /// [`NodeBuilder::watch`]); a second call changes nothing.
    pub fn watch(&self) -> notify::Result<()> {
        let mut watching = crate::sync::lock(&self.core.watch);
        if watching.is_some() {
            return Ok(());
        }
        let (watch, mut batches) = crate::watch::start(&self.core.config.node.handlers)?;
        *watching = Some(watch);
        let core = Arc::downgrade(&self.core);
        tokio::spawn(async move {
            while let Some(stems) = batches.recv().await {
                let Some(core) = core.upgrade() else { break };
                core.reload(stems).await;
            }
        });
        Ok(())
    }

    /// Changes of the handlers folder applied and rejected so far.
    pub fn reloads(&self) -> ReloadStats {
        let (applied, rejected) = self.core.metrics.reloads();
        ReloadStats { applied, rejected }
    }

    /// Whether every connection reaches its bus now.
    pub fn is_connected(&self) -> bool {
        self.core.outgoing.get().is_some_and(|out| out.connections.iter().all(|c| c.is_connected()))
    }

    /// The node's metrics in the Prometheus text format.
    pub fn metrics_text(&self) -> String {
        self.core.metrics.set_idle_instances(self.core.runtime.idle_instances());
        self.core.metrics.render()
    }

    /// Stops receiving and closes every connection.
    pub async fn stop(&self) {
        // No more changes of the folder: they would register names again.
        drop(crate::sync::lock(&self.core.watch).take());
        if let Some(out) = self.core.outgoing.get() {
            for c in &out.connections {
                if let Err(e) = c.stop().await {
                    tracing::warn!("stopping a connection: {e}");
                }
                if let Err(e) = c.close().await {
                    tracing::warn!("closing a connection: {e}");
                }
            }
        }
    }
}

/// The service settings a driver needs for `route`.
fn spec_of(route: &Route) -> ServiceSpec {
    ServiceSpec { retry: route.handler.policy.retry.clone(), timeout: route.handler.policy.timeout }
}

/// Registers `name` of `kind` (served by `route`) on connection `c`.
async fn register(c: &dyn Connection, kind: Kind, name: &str, route: &Route) -> Result<(), DriverError> {
    match kind {
        Kind::Service => c.register_service(name, &spec_of(route)).await,
        Kind::Message => c.register_message(name).await,
    }
}

/// The names `table` routes to handler `stem`, sorted.
fn names_of(table: &Table, stem: &str) -> Vec<String> {
    let mut names: Vec<String> = table
        .routes()
        .into_iter()
        .filter(|(_, _, r)| &*r.handler.stem == stem)
        .map(|(_, n, _)| n.to_string())
        .collect();
    names.dedup();
    names
}
