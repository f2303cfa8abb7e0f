//! The bus core: a node. It loads the handlers folder into the registry,
//! registers every name on every connection, turns incoming deliveries into
//! runtime invocations (counting statistics), and sends outgoing ones — its
//! own and its handlers' nested calls — over a connection picked by weight.

use crate::config::Config;
use crate::delivery::{Envelope, Headers, Mode};
use crate::driver::default::DefaultDriver;
use crate::driver::{Connection, DeadLetter, Driver, DriverError, Fanout, Inbound, Receipt, ServiceSpec};
use crate::failure::{Failure, FailureClass};
use crate::handlers::{self, HandlerFile, Skipped};
use crate::registry::{Loaded, Registry, Route};
use crate::runtime::{Invoke, Outbound, Runtime, RuntimeOptions};
use crate::stats::{Kind, NameStats, NodeInfo, ServiceInfo, StatsTable, rfc3339};
use crate::weighted::WeightedPicker;
use std::collections::HashMap;
use std::sync::{Arc, OnceLock, Weak};
use std::time::{Duration, Instant, SystemTime};

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
    runtime: Arc<Runtime>,
    registry: Registry,
    stats: StatsTable,
    started: SystemTime,
    outgoing: OnceLock<Outgoing>,
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
}

impl NodeBuilder {
    /// A builder for `config`.
    pub fn new(config: Config) -> Self {
        Self { config, runtime: None, drivers: HashMap::new(), serve: true }
    }

    /// Makes a client: it connects and sends, but loads no handlers, serves
    /// nothing and does not show up in discovery (what the CLI uses on a
    /// shared bus).
    pub fn client(mut self) -> Self {
        self.serve = false;
        self
    }

    /// Shares an existing runtime (one engine per process).
    pub fn runtime(mut self, runtime: Arc<Runtime>) -> Self {
        self.runtime = Some(runtime);
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
        let core = Arc::new_cyclic(|me| Core {
            me: me.clone(),
            config: self.config,
            runtime,
            registry: Registry::default(),
            stats: StatsTable::default(),
            started: SystemTime::now(),
            outgoing: OnceLock::new(),
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
            for (kind, name) in core.registry.names() {
                let registered = match kind {
                    Kind::Service => {
                        let spec = core
                            .registry
                            .lookup(kind, &name)
                            .map(|r| ServiceSpec {
                                retry: r.handler.policy.retry.clone(),
                                timeout: r.handler.policy.timeout,
                            })
                            .unwrap_or(ServiceSpec { retry: Vec::new(), timeout: core.config.handlers.timeout });
                        c.register_service(&name, &spec).await
                    }
                    Kind::Message => c.register_message(&name).await,
                };
                registered.map_err(|error| StartError::Connect { name: conn.name.clone(), error })?;
            }
            if self.serve {
                c.start().await.map_err(|error| StartError::Connect { name: conn.name.clone(), error })?;
            }
            connections.push(c);
        }
        let weights: Vec<u32> = core.config.connections.iter().map(|c| c.weight).collect();
        let sent = connections.iter().map(|_| Default::default()).collect();
        let _ = core.outgoing.set(Outgoing { connections, sent, picker: WeightedPicker::new(&weights) });
        Ok((Node { core }, report))
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
    fn load_folder(&self) -> Result<LoadReport, StartError> {
        let dir = &self.config.node.handlers;
        let (files, skipped) = handlers::scan(dir, &self.config.handlers)
            .map_err(|source| StartError::Folder { path: dir.display().to_string(), source })?;
        let mut report = LoadReport { skipped, ..LoadReport::default() };
        let compiled = compile_all(&self.runtime, &files);
        for (file, result) in files.into_iter().zip(compiled) {
            match result {
                Ok(compiled) => {
                    report.cached += usize::from(compiled.cached);
                    let version = compiled.version.clone();
                    let loaded = Arc::new(Loaded { stem: file.stem.as_str().into(), compiled, policy: file.policy });
                    let served = self.install(&loaded);
                    tracing::info!(handler = %file.stem, %version, names = ?served, "handler loaded");
                    report.loaded.push((file.stem, version, served));
                }
                Err(reason) => report.skipped.push(Skipped { path: file.wasm, reason }),
            }
        }
        for s in &report.skipped {
            tracing::warn!(file = %s.path.display(), "skipped: {}", s.reason);
        }
        Ok(report)
    }

    /// Claims the handler's names in the registry; returns the names it got.
    fn install(&self, loaded: &Arc<Loaded>) -> Vec<String> {
        let exports = loaded.compiled.exports;
        let kinds = [(Kind::Service, exports.service), (Kind::Message, exports.message)];
        let mut served = Vec::new();
        for name in &loaded.policy.names {
            for (kind, _) in kinds.iter().filter(|(_, has)| *has) {
                let route = Route { handler: loaded.clone(), counters: self.stats.counters(name) };
                match self.registry.claim(*kind, name, route) {
                    Ok(()) => served.push(name.clone()),
                    Err(holder) => {
                        tracing::warn!(handler = %loaded.stem, %name, "not serving `{name}`: handler `{holder}` already serves it")
                    }
                }
            }
        }
        served.dedup();
        served
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
            return Err(Failure::new(FailureClass::Retry, "the node is shutting down"));
        };
        let (name, mode, attempt) = (envelope.name.clone(), envelope.mode, envelope.attempt);
        let policy = &route.handler.policy;
        let start = Instant::now();
        let result = self
            .runtime
            .invoke(
                &route.handler.compiled,
                Invoke {
                    handler: route.handler.stem.clone(),
                    envelope,
                    timeout: policy.timeout,
                    memory: policy.memory,
                    max_depth: self.config.handlers.max_depth,
                    outbound: me,
                    reuse: policy.reuse,
                },
            )
            .await;
        let elapsed = start.elapsed();
        route.counters.record(elapsed, result.is_err());
        match &result {
            Ok(_) => tracing::debug!(%name, %mode, attempt, version = %route.handler.compiled.version, ?elapsed, "ok"),
            Err(f) => {
                tracing::info!(%name, %mode, attempt, version = %route.handler.compiled.version, ?elapsed, class = %f.class, "failed: {}", f.message)
            }
        }
        result
    }

    fn stats(&self) -> Vec<NameStats> {
        self.stats.snapshot(&self.config.node.id)
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
        crate::name::validate(name).map_err(|e| Failure::new(FailureClass::Invalid, e.to_string()))?;
        let conn = self.outgoing()?;
        match mode {
            Mode::Call => conn.request(name, payload, headers, timeout).await,
            Mode::Dispatch => conn.enqueue(name, payload, headers).await.map(|_| Vec::new()),
            Mode::Broadcast => conn.publish(name, payload, headers, Fanout::All).await.map(|()| Vec::new()),
            Mode::Rolecast => conn.publish(name, payload, headers, Fanout::PerGroup).await.map(|()| Vec::new()),
        }
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
        crate::name::validate(name).map_err(|e| Failure::new(FailureClass::Invalid, e.to_string()))?;
        let conn = self.core.outgoing()?;
        conn.enqueue(name, payload, Headers::new()).await
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

    /// Stops receiving and closes every connection.
    pub async fn stop(&self) {
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

/// Compiles every handler file, in parallel over the machine's cores.
fn compile_all(runtime: &Runtime, files: &[HandlerFile]) -> Vec<Result<crate::runtime::Compiled, String>> {
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get()).min(files.len().max(1));
    let mut results: Vec<Option<Result<crate::runtime::Compiled, String>>> = (0..files.len()).map(|_| None).collect();
    let next = std::sync::atomic::AtomicUsize::new(0);
    let slots = std::sync::Mutex::new(&mut results);
    std::thread::scope(|scope| {
        for _ in 0..threads {
            scope.spawn(|| {
                loop {
                    let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    let Some(file) = files.get(i) else { break };
                    let result = runtime.load_file(&file.wasm).map_err(|e| e.to_string());
                    slots.lock().unwrap_or_else(|e| e.into_inner())[i] = Some(result);
                }
            });
        }
    });
    results.into_iter().map(|r| r.unwrap_or_else(|| Err("not compiled".into()))).collect()
}
