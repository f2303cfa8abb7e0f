//! What an invocation's `Store` holds: a WASI context with exactly the
//! handler's [`Grants`] (nothing by default), the memory limiter, the
//! invocation's [`Scope`] (deadline, depth, way out), the `bus` import,
//! which forwards to the bus core through [`Outbound`] with the call depth
//! counted, and `wasi:http`'s outgoing handler, which sends only to granted
//! origins ([`super::egress`]). Bus operations and HTTP requests count
//! against one `max_calls`. A store serves one invocation, or several in
//! turn when its handler opts into reuse: each begins with
//! [`Sandbox::begin`] and ends with [`Sandbox::end`].

use super::bindings::busbar::handler::{bus, types};
use super::egress::Outgoing;
use super::grants::Grants;
use super::guest_log::GuestLog;
use crate::delivery::failure::{Failure, FailureClass};
use crate::delivery::{DEPTH_HEADER, Mode, Request};
use std::sync::Arc;
use std::time::{Duration, Instant};
use wasmtime::component::ResourceTable;
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};
use wasmtime_wasi_http::{WasiHttpCtx, WasiHttpCtxView, WasiHttpHooks, WasiHttpView};

/// The way out of a handler: the bus core implements it, so the runtime never
/// learns which driver carries a nested call.
#[async_trait::async_trait]
pub trait Outbound: Send + Sync {
    /// Delivers `request` in `mode`: for a call, waits for the reply at most
    /// the request's timeout; other modes return an empty reply once accepted.
    async fn send(&self, mode: Mode, request: Request) -> Result<Vec<u8>, Failure>;
}

/// What one invocation runs within.
pub(crate) struct Scope {
    /// When the host interrupts the invocation.
    pub(crate) deadline: Instant,
    /// Nesting depth of this invocation; nested deliveries carry depth + 1.
    pub(crate) depth: u32,
    /// The longest chain allowed.
    pub(crate) max_depth: u32,
    /// Bus operations (call, dispatch, broadcast, rolecast) the invocation may make.
    pub(crate) max_calls: u32,
    /// Where nested deliveries go.
    pub(crate) outbound: Arc<dyn Outbound>,
    /// The trace nested deliveries carry on (the invocation as their parent).
    pub(crate) trace: crate::ops::trace::Carried,
    /// The largest HTTP response body the invocation may receive, in bytes.
    pub(crate) max_http_body: u64,
    /// The key-value buckets of the node's bus.
    pub(crate) buckets: Option<Arc<dyn crate::keyvalue::Buckets>>,
}

/// The data of a handler's store.
pub(crate) struct Sandbox {
    wasi: WasiCtx,
    http: WasiHttpCtx,
    table: ResourceTable,
    pub(crate) limiter: MemoryLimiter,
    /// The guest's stdout and stderr, flushed at the end of each invocation.
    logs: [GuestLog; 2],
    egress: Egress,
}

/// The invocation's ways out of the sandbox (bus operations and HTTP
/// requests), counted against its `max_calls`.
struct Egress {
    handler: Arc<str>,
    scope: Scope,
    grants: Arc<Grants>,
    /// Bus operations and HTTP requests made by the current invocation.
    calls: u32,
}

impl Egress {
    /// Counts one more operation, or says why the invocation may make no more.
    fn count(&mut self, what: &dyn std::fmt::Display) -> Result<(), String> {
        let max_calls = self.scope.max_calls;
        if self.calls >= max_calls {
            return Err(format!(
                "{what} refused: this invocation already made {max_calls} bus calls and HTTP requests, its limit (`max_calls`)"
            ));
        }
        self.calls += 1;
        Ok(())
    }
}

/// Bytes of randomness one `get-random-bytes` may ask for; more traps.
const MAX_RANDOM: u64 = 1 << 20;

impl Sandbox {
    pub(crate) fn new(handler: &Arc<str>, memory: u64, scope: Scope, grants: &Arc<Grants>) -> std::io::Result<Self> {
        let logs = GuestLog::pair(handler.clone());
        let mut wasi = WasiCtx::builder();
        wasi.stdout(logs[0].clone()).stderr(logs[1].clone()).max_random_size(MAX_RANDOM);
        grants.apply(&mut wasi)?;
        let wasi = wasi.build();
        let egress = Egress { handler: handler.clone(), scope, grants: grants.clone(), calls: 0 };
        Ok(Self {
            wasi,
            http: WasiHttpCtx::new(),
            table: ResourceTable::new(),
            limiter: MemoryLimiter::new(memory),
            logs,
            egress,
        })
    }

    /// Readies a reused store for its next invocation.
    pub(crate) fn begin(&mut self, memory: u64, scope: Scope) {
        self.limiter = MemoryLimiter::new(memory);
        self.egress.scope = scope;
        self.egress.calls = 0;
    }

    /// Closes an invocation: logs its unfinished output line and gives the
    /// next invocation its own log allowance.
    pub(crate) fn end(&mut self) {
        for log in &self.logs {
            log.finish();
        }
    }

    async fn forward(
        &mut self,
        mode: Mode,
        name: String,
        payload: Vec<u8>,
        timeout: Option<u64>,
    ) -> Result<Vec<u8>, types::BusError> {
        if let Err(message) = self.egress.count(&format_args!("{mode} to `{name}`")) {
            return Err(types::BusError { class: types::ErrorClass::Denied, message });
        }
        let Scope { deadline, depth, max_depth, ref outbound, ref trace, .. } = self.egress.scope;
        if depth >= max_depth {
            return Err(types::BusError {
                class: types::ErrorClass::Denied,
                message: format!(
                    "{mode} to `{name}` refused: the chain of nested bus calls reached the depth limit of {max_depth}"
                ),
            });
        }
        let left = deadline.saturating_duration_since(Instant::now());
        let timeout = timeout.map_or(left, |ms| Duration::from_millis(ms).min(left));
        let mut headers = vec![(DEPTH_HEADER.to_string(), depth.saturating_add(1).to_string())];
        trace.add_to(&mut headers);
        outbound.send(mode, Request { name, payload, headers, timeout }).await.map_err(Into::into)
    }
}

/// What the `wasi:keyvalue` host ([`super::keyvalue`]) reaches.
impl Sandbox {
    pub(super) fn table(&mut self) -> &mut ResourceTable {
        &mut self.table
    }

    pub(super) fn grants(&self) -> &Grants {
        &self.egress.grants
    }

    pub(super) fn handler(&self) -> Arc<str> {
        self.egress.handler.clone()
    }

    pub(super) fn buckets(&self) -> Option<Arc<dyn crate::keyvalue::Buckets>> {
        self.egress.scope.buckets.clone()
    }

    /// Counts one operation against `max_calls`, or says why not.
    pub(super) fn egress_count(&mut self, what: &dyn std::fmt::Display) -> Result<(), String> {
        self.egress.count(what)
    }
}

impl WasiView for Sandbox {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView { ctx: &mut self.wasi, table: &mut self.table }
    }
}

impl WasiHttpView for Sandbox {
    fn http(&mut self) -> WasiHttpCtxView<'_> {
        WasiHttpCtxView { ctx: &mut self.http, table: &mut self.table, hooks: &mut self.egress }
    }
}

impl WasiHttpHooks for Egress {
    fn send_request(
        &mut self,
        request: http::Request<wasmtime_wasi_http::WasiBody>,
        options: Option<wasmtime_wasi_http::RequestOptions>,
        _fut: Box<dyn Future<Output = Result<(), wasmtime_wasi_http::Error>> + Send>,
    ) -> super::egress::Sent {
        let what = format_args!("HTTP request to {}", request.uri());
        if let Err(message) = self.count(&what) {
            if let Some(left_out) = crate::ops::lograte::line("http-limit", &self.handler) {
                tracing::warn!(handler = %self.handler, "handler `{}`: {message}{left_out}", self.handler);
            }
            return Box::new(async { Err(wasmtime_wasi_http::Error::ConnectionLimitReached) });
        }
        let outgoing = Outgoing {
            handler: &self.handler,
            granted: &self.grants.http,
            deadline: self.scope.deadline,
            max_body: self.scope.max_http_body,
            trace: &self.scope.trace,
        };
        outgoing.send(request, options)
    }
}

/// Caps the memory of one instance: all its linear memories and its tables'
/// storage together (a component may be several core instances, each with
/// memories and tables of its own), against one limit. Remembers a refused
/// growth so the resulting trap can be reported as exhaustion rather than a
/// bare `unreachable`.
pub(crate) struct MemoryLimiter {
    limit: usize,
    /// Bytes of linear memory and table storage the instance holds now.
    used: usize,
    /// What the guest asked for when it was refused.
    exceeded: Option<Refused>,
}

/// Bytes one table element takes (a function reference).
const TABLE_ELEMENT_BYTES: usize = 8;

/// A growth the limiter refused.
#[derive(Debug, Clone, Copy)]
enum Refused {
    /// Linear memory, to this many bytes.
    Memory(usize),
    /// A table, to this many elements, past this limit.
    Table(usize, usize),
}

impl MemoryLimiter {
    fn new(memory: u64) -> Self {
        Self { limit: usize::try_from(memory).unwrap_or(usize::MAX), used: 0, exceeded: None }
    }

    /// What was refused, in words, if anything was.
    pub(crate) fn refused(&self) -> Option<String> {
        Some(match self.exceeded? {
            Refused::Memory(desired) => format!(
                "memory limit of {} exceeded (the instance asked for {} in all, linear memories and tables)",
                crate::units::human_bytes(self.limit as u64),
                crate::units::human_bytes(desired as u64)
            ),
            Refused::Table(desired, limit) => {
                format!("table limit of {limit} elements exceeded (the guest asked for {desired})")
            }
        })
    }
}

/// Table elements one instance may have; far above what real guests use.
const MAX_TABLE_ELEMENTS: usize = 1 << 20;

impl MemoryLimiter {
    /// One memory or table of the instance grows from `current` to
    /// `desired` bytes: allowed while the instance's total stays within
    /// the limit. (A growth wasmtime then fails for another reason stays
    /// counted: the total errs on the safe side.)
    fn grow(&mut self, current: usize, desired: usize) -> wasmtime::Result<bool> {
        let total = self.used.saturating_sub(current).saturating_add(desired);
        if total > self.limit {
            self.exceeded = Some(Refused::Memory(total));
            return Ok(false);
        }
        self.used = total;
        Ok(true)
    }
}

impl wasmtime::ResourceLimiter for MemoryLimiter {
    fn memory_growing(&mut self, current: usize, desired: usize, _max: Option<usize>) -> wasmtime::Result<bool> {
        self.grow(current, desired)
    }

    fn table_growing(&mut self, current: usize, desired: usize, max: Option<usize>) -> wasmtime::Result<bool> {
        let limit = max.map_or(MAX_TABLE_ELEMENTS, |m| m.min(MAX_TABLE_ELEMENTS));
        if desired > limit {
            self.exceeded = Some(Refused::Table(desired, limit));
            return Ok(false);
        }
        self.grow(current.saturating_mul(TABLE_ELEMENT_BYTES), desired.saturating_mul(TABLE_ELEMENT_BYTES))
    }
}

impl types::Host for Sandbox {}

impl bus::Host for Sandbox {
    async fn call(
        &mut self,
        name: String,
        payload: Vec<u8>,
        timeout_ms: Option<u64>,
    ) -> wasmtime::Result<Result<Vec<u8>, types::BusError>> {
        Ok(self.forward(Mode::Call, name, payload, timeout_ms).await)
    }

    async fn dispatch(&mut self, name: String, payload: Vec<u8>) -> wasmtime::Result<Result<(), types::BusError>> {
        Ok(self.forward(Mode::Dispatch, name, payload, None).await.map(drop))
    }

    async fn broadcast(&mut self, name: String, payload: Vec<u8>) -> wasmtime::Result<Result<(), types::BusError>> {
        Ok(self.forward(Mode::Broadcast, name, payload, None).await.map(drop))
    }

    async fn rolecast(&mut self, name: String, payload: Vec<u8>) -> wasmtime::Result<Result<(), types::BusError>> {
        Ok(self.forward(Mode::Rolecast, name, payload, None).await.map(drop))
    }
}

impl From<Failure> for types::BusError {
    fn from(f: Failure) -> Self {
        use types::ErrorClass as E;
        let class = match f.class {
            FailureClass::Invalid => E::Invalid,
            FailureClass::Denied => E::Denied,
            FailureClass::Unauthorized => E::Unauthorized,
            FailureClass::NotFound => E::NotFound,
            FailureClass::Retry => E::Retry,
            FailureClass::Overloaded => E::Overloaded,
            FailureClass::Timeout => E::Timeout,
            FailureClass::Failed => E::Failed,
            FailureClass::Trapped => E::Trapped,
        };
        Self { class, message: f.message }
    }
}

impl From<types::Failure> for Failure {
    fn from(f: types::Failure) -> Self {
        match f {
            types::Failure::Invalid(m) => Failure::capped(FailureClass::Invalid, m),
            types::Failure::Denied(m) => Failure::capped(FailureClass::Denied, m),
            types::Failure::Unauthorized(m) => Failure::capped(FailureClass::Unauthorized, m),
            types::Failure::Retry(m) => Failure::capped(FailureClass::Retry, m),
            types::Failure::Failed(m) => Failure::capped(FailureClass::Failed, m),
        }
    }
}
