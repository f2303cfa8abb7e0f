//! The wasmtime side of busbar: one engine per process (pooling allocator,
//! epoch interruption), components validated, compiled once (through the
//! artifact cache) and pre-instantiated, and a fresh sandboxed `Store` for
//! every invocation (or, for a handler that opts in, a warm one that served
//! it before: `warm`). The runtime knows nothing of drivers or NATS.

mod bindings;
mod cache;
pub mod compiler;
mod egress;
mod grants;
mod guest_log;
mod keyvalue;
mod sandbox;
mod signature;
mod warm;

pub use egress::Origin;
pub use grants::{DirGrant, Grants};
pub use sandbox::Outbound;

use crate::delivery::failure::{Failure, FailureClass};
use crate::delivery::{Envelope, Mode};
use bindings::busbar::handler::types;
use bindings::exports::busbar::handler::{message, service};
use cache::ArtifactCache;
use sandbox::{Sandbox, Scope};
use sha2::{Digest, Sha256};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};
use warm::{Budget, Idle, Warm};
use wasmtime::component::{InstancePre, Linker};
use wasmtime::{Engine, InstanceAllocationStrategy, PoolingAllocationConfig, Store, UpdateDeadline};

/// The exported interface of a service handler.
pub const SERVICE_EXPORT: &str = "busbar:handler/service@0.1.0";
/// The exported interface of a message handler.
pub const MESSAGE_EXPORT: &str = "busbar:handler/message@0.1.0";

/// How often the epoch advances: a busy guest yields to other tasks every
/// tick, and a runaway guest is interrupted at the first tick past its
/// deadline at which it runs — one tick late while a core is free for it,
/// about N/W ticks late when N guests loop on W worker threads (64 on 2
/// cores: at most 61 ms; 225 ms with a 5 ms tick, BENCHMARKS.md §7). A 1 ms
/// tick halves that but rotates busy guests through the workers so often
/// that a neighbour's p99 latency grew 20–80x (`tests/tests/cotenancy.rs`).
pub const EPOCH_TICK: Duration = Duration::from_millis(2);

/// Engine-wide settings.
#[derive(Debug, Clone)]
pub struct RuntimeOptions {
    /// Where compiled artifacts are cached; `None` compiles every time.
    pub cache_dir: Option<std::path::PathBuf>,
    /// How many instances may run at once across all handlers (pool size).
    pub max_instances: u32,
    /// Largest linear memory any handler may be granted.
    pub max_memory: u64,
    /// Largest handler file loaded, in bytes.
    pub max_file_size: u64,
    /// Where components are compiled.
    pub compiler: compiler::Compiler,
}

impl Default for RuntimeOptions {
    fn default() -> Self {
        Self {
            cache_dir: None,
            max_instances: 1000,
            max_memory: 4 << 30,
            max_file_size: crate::limits::DEFAULT_HANDLER_SIZE,
            compiler: compiler::Compiler::InProcess,
        }
    }
}

/// Why the wasm runtime could not start.
#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    /// The engine settings are out of range for this machine.
    #[error("the engine settings are invalid: {0}")]
    Settings(String),
    /// wasmtime refused to build the engine or its linker.
    #[error("wasmtime: {0}")]
    Engine(String),
    /// The epoch ticker thread could not start.
    #[error("cannot start the epoch ticker thread: {0}")]
    Ticker(#[from] std::io::Error),
}

impl From<wasmtime::Error> for RuntimeError {
    fn from(e: wasmtime::Error) -> Self {
        Self::Engine(format!("{e:#}"))
    }
}

/// Why a file is not a usable handler.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// The file could not be read.
    #[error("cannot read it: {0}")]
    Io(#[from] std::io::Error),
    /// Not WebAssembly at all.
    #[error("not a WebAssembly file (no `\\0asm` header); is it a half-written copy?")]
    NotWasm,
    /// A core module rather than a component.
    #[error(
        "a core WebAssembly module, not a component; build it for `wasm32-wasip2` or, for a `wasm32-wasi` module (C), turn it into one with `busbar guest componentize`"
    )]
    CoreModule,
    /// Larger than the node loads.
    #[error(
        "the file is {}, larger than the {} this node loads (`[node] max_handler_size`)",
        crate::units::human_bytes(*size),
        crate::units::human_bytes(*max)
    )]
    TooLarge {
        /// The file's size.
        size: u64,
        /// The most the node loads.
        max: u64,
    },
    /// wasmtime refused to compile it.
    #[error("does not compile: {0}")]
    Compile(String),
    /// It exports neither handler interface.
    #[error(
        "exports neither `{SERVICE_EXPORT}` nor `{MESSAGE_EXPORT}` (it exports: {0}); target the `service-handler` or `message-handler` world of wit/"
    )]
    NoHandlerExport(String),
    /// It imports something busbar does not provide.
    #[error("cannot be linked: {0}; a handler may import only WASI 0.2 and `busbar:handler/bus@0.1.0`")]
    Link(String),
    /// An export has the wrong shape (another version of the WIT?).
    #[error("`{0}` does not match busbar's WIT: {1}")]
    Signature(&'static str, String),
}

/// What a handler component exports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct Exports {
    /// Exports `service`: answers call and dispatch.
    pub service: bool,
    /// Exports `message`: receives broadcast and rolecast.
    pub message: bool,
}

/// A validated, compiled and pre-instantiated handler component.
pub struct Compiled {
    /// The SHA-256 of the component file, in hex.
    pub hash: String,
    /// Short content hash (12 hex digits of SHA-256): the version in logs.
    pub version: String,
    /// What it exports.
    pub exports: Exports,
    /// Its imports, for `busbar check`.
    pub imports: Vec<String>,
    /// Whether it came from the artifact cache.
    pub cached: bool,
    pre: InstancePre<Sandbox>,
    service: Option<service::GuestIndices>,
    message: Option<message::GuestIndices>,
    idle: Idle,
}

/// One invocation request.
pub struct Invoke {
    /// The handler's label in logs (its file stem).
    pub handler: Arc<str>,
    /// What to deliver.
    pub envelope: Envelope,
    /// The handler's own timeout; the envelope's deadline wins when sooner.
    pub timeout: Duration,
    /// The handler's memory limit in bytes.
    pub memory: u64,
    /// The longest chain of nested bus calls.
    pub max_depth: u32,
    /// Bus operations and HTTP requests one invocation may make.
    pub max_calls: u32,
    /// The largest HTTP response body one invocation may receive, in bytes.
    pub max_http_body: u64,
    /// What the handler may reach (environment, directories, network).
    pub grants: Arc<Grants>,
    /// Where the handler's `bus` calls go.
    pub outbound: Arc<dyn Outbound>,
    /// The key-value buckets of the node's bus.
    pub buckets: Option<Arc<dyn crate::keyvalue::Buckets>>,
    /// How many more invocations one instance may serve after its first;
    /// 0 gives every invocation a fresh instance.
    pub reuse: u32,
    /// The trace the deliveries it makes carry on.
    pub trace: crate::ops::trace::Carried,
}

/// The process's wasmtime engine, linker and artifact cache.
pub struct Runtime {
    engine: Engine,
    linker: Linker<Sandbox>,
    cache: Option<ArtifactCache>,
    idle_budget: Arc<Budget>,
    /// Instances that may run at once: the pool less the quarter kept for
    /// warm instances (see [`running_slots`]).
    running: Arc<tokio::sync::Semaphore>,
    /// The settings it was built with (the compile worker gets them too).
    options: RuntimeOptions,
    _ticker: EpochTicker,
}

/// The wasmtime configuration of busbar's engine: component model, epoch
/// interruption and the pooling allocator. Public so that benchmarks can
/// compare against raw wasmtime on exactly the same settings.
pub fn engine_config(options: &RuntimeOptions) -> Result<wasmtime::Config, RuntimeError> {
    let max_memory = usize::try_from(options.max_memory)
        .map_err(|_| RuntimeError::Settings(format!("max_memory {} does not fit this machine", options.max_memory)))?;
    let mut pool = PoolingAllocationConfig::new();
    pool.total_component_instances(options.max_instances)
        .total_core_instances(options.max_instances * 8)
        .total_memories(options.max_instances * 2)
        .total_tables(options.max_instances * 8)
        .total_stacks(options.max_instances)
        .max_core_instances_per_component(32)
        .max_memories_per_component(4)
        .max_tables_per_component(32)
        .max_memory_size(max_memory)
        // A fresh instance per call reuses pool slots; resetting a slot
        // with memset instead of madvise avoids TLB shootdowns and page
        // faults, which otherwise cost ~45 µs per call (see BENCHMARKS.md).
        .linear_memory_keep_resident(2 << 20)
        .table_keep_resident(64 << 10)
        .pagemap_scan(wasmtime::Enabled::Auto);
    let mut config = wasmtime::Config::new();
    config
        .wasm_component_model(true)
        .epoch_interruption(true)
        .allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
    Ok(config)
}

/// Advances an engine's epoch every [`EPOCH_TICK`] on a thread of its own,
/// until dropped (or the engine is gone).
pub struct EpochTicker {
    running: Arc<AtomicBool>,
}

impl EpochTicker {
    /// Starts ticking `engine`.
    pub fn start(engine: &Engine) -> std::io::Result<Self> {
        let running = Arc::new(AtomicBool::new(true));
        let ticking = running.clone();
        let engine = engine.weak();
        std::thread::Builder::new().name("busbar-epoch".into()).spawn(move || {
            while ticking.load(Ordering::Relaxed) {
                std::thread::sleep(EPOCH_TICK);
                match engine.upgrade() {
                    Some(engine) => engine.increment_epoch(),
                    None => break,
                }
            }
        })?;
        Ok(Self { running })
    }
}

impl Drop for EpochTicker {
    fn drop(&mut self) {
        self.running.store(false, Ordering::Relaxed);
    }
}

impl Runtime {
    /// Builds the engine and starts its epoch ticker.
    pub fn new(options: &RuntimeOptions) -> Result<Self, RuntimeError> {
        let engine = Engine::new(&engine_config(options)?)?;
        let mut linker = Linker::new(&engine);
        wasmtime_wasi::p2::add_to_linker_async(&mut linker)?;
        wasmtime_wasi_http::p2::add_only_http_to_linker_async(&mut linker)?;
        bindings::Handler::add_to_linker::<_, wasmtime::component::HasSelf<Sandbox>>(&mut linker, |s| s)?;
        let cache = match &options.cache_dir {
            Some(dir) => match ArtifactCache::new(&engine, dir) {
                Ok(cache) => Some(cache),
                Err(e) => {
                    tracing::warn!(dir = %dir.display(), "artifact cache disabled: {e}");
                    None
                }
            },
            None => None,
        };
        let ticker = EpochTicker::start(&engine)?;
        // At most a quarter of the pool waits idle in reused instances; the
        // rest may run, so a running invocation always finds a free slot.
        let idle_budget = Budget::new(options.max_instances as usize / 4);
        let running = Arc::new(tokio::sync::Semaphore::new(running_slots(options.max_instances) as usize));
        Ok(Self { engine, linker, cache, idle_budget, running, options: options.clone(), _ticker: ticker })
    }

    /// Validates, compiles (or loads from the cache) and pre-instantiates a
    /// handler component.
    pub fn load(&self, bytes: &[u8]) -> Result<Compiled, LoadError> {
        self.load_hashed(bytes, content_hash(bytes))
    }

    /// [`Runtime::load`] of `bytes` whose [`content_hash`] the caller has
    /// already computed.
    pub fn load_hashed(&self, bytes: &[u8], hash: String) -> Result<Compiled, LoadError> {
        let size = bytes.len() as u64;
        if size > self.options.max_file_size {
            return Err(LoadError::TooLarge { size, max: self.options.max_file_size });
        }
        match bytes.get(..8) {
            Some([0, b'a', b's', b'm', 1, 0, 0, 0]) => return Err(LoadError::CoreModule),
            Some([0, b'a', b's', b'm', ..]) => {}
            _ => return Err(LoadError::NotWasm),
        }
        let (component, cached) = match self.cache.as_ref().and_then(|c| c.get(&self.engine, &hash)) {
            Some(component) => (component, true),
            None => {
                let component = self.options.compiler.compile(&self.engine, &self.options, bytes)?;
                if let Some(cache) = &self.cache {
                    cache.put(&hash, &component);
                }
                (component, false)
            }
        };
        let ty = component.component_type();
        let export_names: Vec<String> = ty.exports(&self.engine).map(|(name, _)| name.to_string()).collect();
        let imports = ty.imports(&self.engine).map(|(name, _)| name.to_string()).collect();
        let exports = Exports {
            service: export_names.iter().any(|n| n == SERVICE_EXPORT),
            message: export_names.iter().any(|n| n == MESSAGE_EXPORT),
        };
        if !exports.service && !exports.message {
            let found = if export_names.is_empty() { "nothing".into() } else { export_names.join(", ") };
            return Err(LoadError::NoHandlerExport(found));
        }
        if exports.service {
            signature::check::<(types::Context, Vec<u8>), (Result<Vec<u8>, types::Failure>,)>(
                &self.engine,
                &component,
                SERVICE_EXPORT,
                "func(ctx: context, payload: list<u8>) -> result<list<u8>, failure>",
            )?;
        }
        if exports.message {
            signature::check::<(types::Context, Vec<u8>), (Result<(), types::Failure>,)>(
                &self.engine,
                &component,
                MESSAGE_EXPORT,
                "func(ctx: context, payload: list<u8>) -> result<_, failure>",
            )?;
        }
        let pre = self.linker.instantiate_pre(&component).map_err(|e| LoadError::Link(link_error(&e)))?;
        let service = match exports.service {
            true => Some(
                service::GuestIndices::new(&pre).map_err(|e| LoadError::Signature(SERVICE_EXPORT, format!("{e:#}")))?,
            ),
            false => None,
        };
        let message = match exports.message {
            true => Some(
                message::GuestIndices::new(&pre).map_err(|e| LoadError::Signature(MESSAGE_EXPORT, format!("{e:#}")))?,
            ),
            false => None,
        };
        Ok(Compiled {
            version: hash[..12].to_string(),
            hash,
            exports,
            imports,
            cached,
            pre,
            service,
            message,
            idle: Idle::new(self.idle_budget.clone()),
        })
    }

    /// How many invocations of one handler may run at once, whatever its
    /// `concurrency`: half of those that may run, so that one handler never
    /// holds every instance while others wait.
    pub fn handler_share(&self) -> u32 {
        (running_slots(self.pool_size()) / 2).max(1)
    }

    /// Waits for an instance slot, until `deadline` if there is one; the
    /// permit frees it when dropped. All handlers wait in one line, first
    /// come first served.
    pub async fn admit(
        &self,
        handler: &str,
        deadline: Option<Instant>,
    ) -> Result<tokio::sync::OwnedSemaphorePermit, Failure> {
        // A free slot is taken without waiting: `acquire` would spend the
        // task's scheduling budget and, now and then, yield the task behind
        // busy guests, a few ms of needless latency for a call.
        if let Ok(permit) = self.running.clone().try_acquire_owned() {
            return Ok(permit);
        }
        let slot = self.running.clone().acquire_owned();
        let waited = match deadline {
            Some(deadline) => tokio::time::timeout_at(deadline.into(), slot).await,
            None => Ok(slot.await),
        };
        match waited {
            Ok(Ok(permit)) => Ok(permit),
            Ok(Err(_closed)) => Err(Failure::new(FailureClass::Retry, "the node is stopping")),
            Err(_elapsed) => {
                let running = running_slots(self.pool_size());
                Err(pool_full(handler, &format!("all {running} instances that may run are running")))
            }
        }
    }

    /// The largest handler file this runtime loads, in bytes.
    pub fn max_file_size(&self) -> u64 {
        self.options.max_file_size
    }

    /// How many instances may exist at once across all handlers (the pool's size).
    pub fn pool_size(&self) -> u32 {
        self.options.max_instances
    }

    /// How many instances run now (each holds a pool slot).
    pub fn running_instances(&self) -> usize {
        (running_slots(self.pool_size()) as usize).saturating_sub(self.running.available_permits())
    }

    /// How many instances wait warm for reuse now (each holds a pool slot).
    pub fn idle_instances(&self) -> usize {
        self.idle_budget.idle()
    }

    /// Reads and loads a handler file.
    pub fn load_file(&self, path: &Path) -> Result<Compiled, LoadError> {
        self.load(&std::fs::read(path)?)
    }

    /// Runs one invocation in a fresh store, or in a warm one when the
    /// handler allows reuse. Service modes return the reply; message modes
    /// return an empty reply.
    pub async fn invoke(&self, compiled: &Compiled, invoke: Invoke) -> Result<Vec<u8>, Failure> {
        let Invoke {
            handler,
            envelope,
            timeout,
            memory,
            max_depth,
            max_calls,
            max_http_body,
            grants,
            outbound,
            buckets,
            reuse,
            trace,
        } = invoke;
        let start = Instant::now();
        let own = crate::limits::later(start, timeout);
        let deadline = envelope.deadline.map_or(own, |d| d.min(own));
        let budget = deadline.saturating_duration_since(start);
        let export = match (envelope.mode.is_service(), &compiled.service, &compiled.message) {
            (true, Some(service), _) => Export::Service(service),
            (false, _, Some(message)) => Export::Message(message),
            (true, None, _) => return Err(not_exported(&handler, "service")),
            (false, _, None) => return Err(not_exported(&handler, "message")),
        };
        let scope =
            Scope { deadline, depth: envelope.depth(), max_depth, max_calls, outbound, trace, max_http_body, buckets };
        let warm = match reuse {
            0 => {
                compiled.idle.clear();
                None
            }
            _ => compiled.idle.take(&grants),
        };
        let (mut store, instance, uses) = match warm {
            Some(Warm { mut store, instance, uses, .. }) => {
                store.data_mut().begin(memory, scope);
                (store, Some(instance), uses)
            }
            None => {
                let sandbox = Sandbox::new(&handler, memory, scope, &grants).map_err(|e| {
                    Failure::new(FailureClass::Failed, format!("handler `{handler}` cannot start: {e}"))
                })?;
                let mut store = Store::new(&self.engine, sandbox);
                store.limiter(|s| &mut s.limiter);
                (store, None, 0)
            }
        };
        store.set_epoch_deadline(1);
        store.epoch_deadline_callback(move |_| {
            if Instant::now() >= deadline {
                Err(wasmtime::Error::new(Interrupted))
            } else {
                Ok(UpdateDeadline::Yield(1))
            }
        });
        let ctx = types::Context {
            name: envelope.name,
            delivery: match envelope.mode {
                Mode::Call => types::Delivery::Call,
                Mode::Dispatch => types::Delivery::Dispatch,
                Mode::Broadcast => types::Delivery::Broadcast,
                Mode::Rolecast => types::Delivery::Rolecast,
            },
            attempt: envelope.attempt,
            final_: envelope.is_final,
            time_left_ms: u64::try_from(budget.as_millis()).unwrap_or(u64::MAX),
            headers: envelope.headers,
        };
        let payload = envelope.payload;
        let run = async {
            let instance = match instance {
                Some(instance) => instance,
                None => compiled.pre.instantiate_async(&mut store).await?,
            };
            let reply = match export {
                Export::Service(indices) => {
                    let guest = indices.load(&mut store, &instance)?;
                    guest.call_handle(&mut store, &ctx, &payload).await?.map_err(Failure::from)
                }
                Export::Message(indices) => {
                    let guest = indices.load(&mut store, &instance)?;
                    guest.call_handle(&mut store, &ctx, &payload).await?.map(|()| Vec::new()).map_err(Failure::from)
                }
            };
            wasmtime::Result::Ok((instance, reply))
        };
        match tokio::time::timeout_at(deadline.into(), run).await {
            Ok(Ok((instance, reply))) => {
                // The guest returned normally (a reply or its own failure):
                // its instance is sound and may serve again.
                store.data_mut().end();
                if uses < reuse {
                    compiled.idle.put(Warm { store, instance, uses: uses + 1, grants });
                }
                reply
            }
            Ok(Err(trap)) => Err(classify(&handler, &trap, store.data().limiter.refused(), budget)),
            Err(_elapsed) => Err(timed_out(&handler, budget)),
        }
    }
}

/// The export an invocation calls.
enum Export<'a> {
    Service(&'a service::GuestIndices),
    Message(&'a message::GuestIndices),
}

/// A handler file's identity: the SHA-256 of its bytes, in hex. Its first 12
/// digits are the version shown in logs.
pub fn content_hash(bytes: &[u8]) -> String {
    format!("{:x}", Sha256::digest(bytes))
}

/// The epoch callback's verdict: the deadline passed while the guest ran.
#[derive(Debug, thiserror::Error)]
#[error("deadline passed")]
struct Interrupted;

fn not_exported(handler: &str, what: &str) -> Failure {
    Failure::new(FailureClass::NotFound, format!("handler `{handler}` does not export the {what} interface"))
}

fn timed_out(handler: &str, budget: Duration) -> Failure {
    Failure::new(
        FailureClass::Timeout,
        format!("handler `{handler}` did not finish within {}ms and was interrupted", budget.as_millis()),
    )
}

/// How many instances may run at once in a pool of `pool`: all but the
/// quarter that may wait warm for reuse.
fn running_slots(pool: u32) -> u32 {
    (pool - pool / 4).max(1)
}

/// No instance could be had for `handler`: retryable, the node's load, never
/// the guest's fault.
fn pool_full(handler: &str, why: &str) -> Failure {
    Failure::new(
        FailureClass::Overloaded,
        format!(
            "handler `{handler}` got no instance: the node's instance pool is full ({why}; `[node] instances` sets its size)"
        ),
    )
}

/// Turns a wasmtime error into the failure a caller sees: the cause first;
/// the wasm backtrace only in the debug log.
fn classify(handler: &str, error: &wasmtime::Error, refused: Option<String>, budget: Duration) -> Failure {
    if error.is::<Interrupted>() {
        return timed_out(handler, budget);
    }
    // The pool's own limits (memories or tables of many-memory components)
    // are the node's load: no slot could be had.
    let text = cause(error);
    if text.contains("maximum concurrent") && text.contains("limit") {
        return pool_full(handler, &text);
    }
    tracing::debug!(handler, "trap details: {error:?}");
    if let Some(refused) = refused {
        return Failure::new(FailureClass::Trapped, format!("handler `{handler}` trapped: {refused}"));
    }
    let reason = match error.downcast_ref::<wasmtime::Trap>() {
        Some(wasmtime::Trap::UnreachableCodeReached) => "it panicked or aborted (wasm `unreachable`)".to_string(),
        Some(wasmtime::Trap::StackOverflow) => "stack overflow".to_string(),
        Some(wasmtime::Trap::MemoryOutOfBounds) => {
            "out-of-bounds memory access (a stack overflow of the guest's own stack, or a bad pointer)".to_string()
        }
        Some(trap) => trap.to_string(),
        None => match error.downcast_ref::<wasmtime_wasi::I32Exit>() {
            Some(exit) => format!("it exited with status {} (WASI `exit`)", exit.0),
            None => cause(error),
        },
    };
    Failure::new(FailureClass::Trapped, format!("handler `{handler}` trapped: {reason}"))
}

/// What an error says, outermost first, without the wasm backtrace wasmtime
/// attaches as context (that goes to the debug log).
fn cause(error: &wasmtime::Error) -> String {
    // The backtrace is a context of its own (`WasmBacktrace` is no error
    // type to downcast a chain link to): known by its display.
    let parts: Vec<String> = error
        .chain()
        .map(|e| e.to_string())
        .filter(|m| !m.starts_with("error while executing at wasm backtrace"))
        .collect();
    if parts.is_empty() { error.root_cause().to_string() } else { parts.join(": ") }
}

/// A link error of a component, the missing function first: wasmtime says
/// "component imports instance `I`, but a matching implementation was not
/// found in the linker: instance export `f` has the wrong type: function
/// implementation is missing".
fn link_error(error: &wasmtime::Error) -> String {
    let messages: Vec<String> = error.chain().map(|e| e.to_string()).collect();
    let quoted = |m: &str, after: &str| -> Option<String> {
        let rest = m.strip_prefix(after)?;
        let start = rest.find('`')? + 1;
        let end = start + rest[start..].find('`')?;
        Some(rest[start..end].to_string())
    };
    let import = messages.first().and_then(|m| quoted(m, "component imports "));
    let export = messages.iter().rev().find_map(|m| quoted(m, "instance export "));
    let last = messages.last().cloned().unwrap_or_default();
    match (import, export) {
        (Some(import), Some(export)) if last.ends_with("implementation is missing") => {
            format!("it imports `{export}` of `{import}`, which busbar does not provide")
        }
        (Some(import), Some(export)) => {
            format!("its import `{export}` of `{import}` does not match what busbar provides ({last})")
        }
        (Some(import), None) => format!("it imports `{import}`, which busbar does not provide ({last})"),
        _ => cause(error),
    }
}
