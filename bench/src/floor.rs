//! The floor: the least a host built on wasmtime must do to call a handler
//! with a fresh instance per call. Same WIT, same engine configuration as
//! busbar's `Runtime::new` (pooling allocator with the same pool settings,
//! epoch interruption, async), WASI p2 plus a stub `bus` import, the
//! component pre-instantiated once; per call: a fresh `Store` holding a
//! default `WasiCtx` and an empty `ResourceTable`, an epoch deadline,
//! `instantiate_async`, `GuestIndices::load`, `call_handle`. Nothing else:
//! no memory limiter, no deadline callback, no timer, no routing, no stats.
//!
//! For benchmark 7 it also runs with the limits busbar applies
//! ([`Floor::call_limited`]: memory limiter, epoch deadline callback, a tokio
//! timer) and without any ([`Floor::unlimited`]: epoch interruption off).

use busbar::runtime::{EPOCH_TICK, RuntimeOptions};
use std::path::Path;
use std::time::Duration;
use wasmtime::component::{Component, HasSelf, InstancePre, Linker, ResourceTable};
use wasmtime::{Engine, Store};
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

#[allow(missing_docs)]
mod bindings {
    wasmtime::component::bindgen!({
        path: "../wit",
        world: "handler",
        imports: { default: async | trappable },
        exports: { default: async },
    });
}

use bindings::busbar::handler::{bus, types};
use bindings::exports::busbar::handler::service;

/// What one call's store holds.
struct State {
    wasi: WasiCtx,
    table: ResourceTable,
    limiter: Limiter,
}

impl State {
    fn new() -> Self {
        Self { wasi: WasiCtx::builder().build(), table: ResourceTable::new(), limiter: Limiter }
    }
}

/// A memory limiter like busbar's (64 MiB, tables capped).
struct Limiter;

impl wasmtime::ResourceLimiter for Limiter {
    fn memory_growing(&mut self, _: usize, desired: usize, _: Option<usize>) -> wasmtime::Result<bool> {
        Ok(desired <= 64 << 20)
    }
    fn table_growing(&mut self, _: usize, desired: usize, _: Option<usize>) -> wasmtime::Result<bool> {
        Ok(desired <= 1 << 20)
    }
}

impl WasiView for State {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView { ctx: &mut self.wasi, table: &mut self.table }
    }
}

impl types::Host for State {}

fn refused() -> wasmtime::Result<Result<(), types::BusError>> {
    Ok(Err(types::BusError { class: types::ErrorClass::Denied, message: "the floor harness has no bus".into() }))
}

impl bus::Host for State {
    async fn call(
        &mut self,
        _: String,
        _: Vec<u8>,
        _: Option<u64>,
    ) -> wasmtime::Result<Result<Vec<u8>, types::BusError>> {
        refused().map(|r| r.map(|()| Vec::new()))
    }
    async fn dispatch(&mut self, _: String, _: Vec<u8>) -> wasmtime::Result<Result<(), types::BusError>> {
        refused()
    }
    async fn broadcast(&mut self, _: String, _: Vec<u8>) -> wasmtime::Result<Result<(), types::BusError>> {
        refused()
    }
    async fn rolecast(&mut self, _: String, _: Vec<u8>) -> wasmtime::Result<Result<(), types::BusError>> {
        refused()
    }
}

/// A pre-instantiated service component on its own engine.
pub struct Floor {
    engine: Engine,
    pre: InstancePre<State>,
    indices: service::GuestIndices,
    deadline_ticks: u64,
    /// Whether the engine interrupts by epoch.
    epoch: bool,
    timeout: Duration,
    _ticker: busbar::runtime::EpochTicker,
    /// Idle instances of [`Floor::call_reused`].
    reuse: std::sync::Mutex<Vec<(Store<State>, service::Guest)>>,
}

impl Floor {
    /// Builds the engine exactly as `busbar::runtime::Runtime::new` does for
    /// `options`, starts the same epoch ticker, and pre-instantiates `wasm`.
    /// Each call gets an epoch deadline of `timeout` (in ticks).
    pub fn new(options: &RuntimeOptions, wasm: &Path, timeout: Duration) -> anyhow::Result<Self> {
        Self::build(options, wasm, timeout, true)
    }

    /// The same engine with epoch interruption off: no limits at all.
    pub fn unlimited(options: &RuntimeOptions, wasm: &Path) -> anyhow::Result<Self> {
        Self::build(options, wasm, Duration::from_secs(5), false)
    }

    fn build(options: &RuntimeOptions, wasm: &Path, timeout: Duration, epoch: bool) -> anyhow::Result<Self> {
        let mut config = busbar::runtime::engine_config(options)?;
        config.epoch_interruption(epoch);
        let engine = Engine::new(&config)?;
        let mut linker = Linker::new(&engine);
        wasmtime_wasi::p2::add_to_linker_async(&mut linker)?;
        // The `bus` import (and its types) only: the guests measured here
        // import no buckets.
        types::add_to_linker::<_, HasSelf<State>>(&mut linker, |s| s)?;
        bus::add_to_linker::<_, HasSelf<State>>(&mut linker, |s| s)?;
        let component = Component::from_file(&engine, wasm)?;
        let pre = linker.instantiate_pre(&component)?;
        let indices = service::GuestIndices::new(&pre)?;
        let ticker = busbar::runtime::EpochTicker::start(&engine)?;
        let deadline_ticks = u64::try_from(timeout.as_nanos() / EPOCH_TICK.as_nanos().max(1))?.max(1);
        Ok(Self { engine, pre, indices, deadline_ticks, epoch, timeout, _ticker: ticker, reuse: Default::default() })
    }

    /// One call of the service export in an instance reused from earlier
    /// calls (a new one only when every instance is busy): what an
    /// invocation costs without instantiation and without the store's
    /// reset. Not busbar's model (every call gets a fresh instance), but a
    /// bound on what reusing instances would save.
    pub async fn call_reused(&self, name: &str, payload: &[u8]) -> anyhow::Result<Vec<u8>> {
        let taken = self.reuse.lock().unwrap_or_else(|e| e.into_inner()).pop();
        let (mut store, guest) = match taken {
            Some(x) => x,
            None => {
                let mut store = Store::new(&self.engine, State::new());
                store.set_epoch_deadline(self.deadline_ticks);
                let instance = self.pre.instantiate_async(&mut store).await?;
                let guest = self.indices.load(&mut store, &instance)?;
                (store, guest)
            }
        };
        store.set_epoch_deadline(self.deadline_ticks);
        let ctx = self.context(name);
        let r = guest.call_handle(&mut store, &ctx, payload).await?;
        self.reuse.lock().unwrap_or_else(|e| e.into_inner()).push((store, guest));
        match r {
            Ok(reply) => Ok(reply),
            Err(failure) => anyhow::bail!("the handler failed: {failure:?}"),
        }
    }

    /// The context of a call of `name`, as busbar would pass it.
    fn context(&self, name: &str) -> types::Context {
        types::Context {
            name: name.to_string(),
            delivery: types::Delivery::Call,
            attempt: 1,
            final_: true,
            time_left_ms: self.deadline_ticks * EPOCH_TICK.as_millis() as u64,
            headers: Vec::new(),
        }
    }

    /// [`Floor::call`] under busbar's limits: a memory limiter, an epoch
    /// deadline callback that yields every tick and interrupts at the
    /// deadline, and a tokio timer bounding the whole call.
    pub async fn call_limited(&self, name: &str, payload: &[u8]) -> anyhow::Result<Vec<u8>> {
        let deadline = std::time::Instant::now() + self.timeout;
        let mut store = Store::new(&self.engine, State::new());
        store.limiter(|s| &mut s.limiter);
        store.set_epoch_deadline(1);
        store.epoch_deadline_callback(move |_| {
            if std::time::Instant::now() >= deadline {
                Err(wasmtime::Error::msg("deadline passed"))
            } else {
                Ok(wasmtime::UpdateDeadline::Yield(1))
            }
        });
        let ctx = self.context(name);
        let run = async {
            let instance = self.pre.instantiate_async(&mut store).await?;
            let guest = self.indices.load(&mut store, &instance)?;
            guest.call_handle(&mut store, &ctx, payload).await
        };
        match tokio::time::timeout_at(deadline.into(), run).await?? {
            Ok(reply) => Ok(reply),
            Err(failure) => anyhow::bail!("the handler failed: {failure:?}"),
        }
    }

    /// One call of the service export in a fresh store and instance.
    pub async fn call(&self, name: &str, payload: &[u8]) -> anyhow::Result<Vec<u8>> {
        let mut store = Store::new(&self.engine, State::new());
        if self.epoch {
            store.set_epoch_deadline(self.deadline_ticks);
        }
        let ctx = self.context(name);
        let instance = self.pre.instantiate_async(&mut store).await?;
        let guest = self.indices.load(&mut store, &instance)?;
        match guest.call_handle(&mut store, &ctx, payload).await? {
            Ok(reply) => Ok(reply),
            Err(failure) => anyhow::bail!("the handler failed: {failure:?}"),
        }
    }
}
