//! The bus core of a node: an incoming delivery becomes a runtime invocation
//! of the handler the routing table names (within its limits, counted,
//! traced, a host error answered as `failed`), and an outgoing one — the
//! node's own or a handler's nested call — goes out over a connection
//! picked by weight.

use super::outgoing::Outgoing;
use crate::config::Config;
use crate::delivery::failure::{Failure, FailureClass};
use crate::delivery::{Envelope, Kind, Mode, Request};
use crate::driver::{Receipt, ServiceSpec};
use crate::fault::Point;
use crate::handlers::registry::Route;
use crate::handlers::{Bus, Handlers};
use crate::ops::metrics::Metrics;
use crate::ops::trace::Carried;
use crate::runtime::{Invoke, Outbound, Runtime};
use crate::stats::{NameStats, NodeInfo, rfc3339};
use crate::units::human_bytes;
use std::sync::{Arc, OnceLock, Weak};
use std::time::{Instant, SystemTime};
use tracing::Instrument as _;

/// What a node is made of.
pub(crate) struct Core {
    pub(super) config: Config,
    pub(super) runtime: Arc<Runtime>,
    pub(super) metrics: Arc<Metrics>,
    /// The loaded handlers and the routing table.
    pub(super) handlers: Handlers,
    pub(super) started: SystemTime,
    /// The connections, once connected.
    pub(super) outgoing: OnceLock<Outgoing>,
}

/// The bus core as a driver sees it: where incoming deliveries go. A
/// driver receives one when it connects; it holds the node weakly (the node
/// owns its connections), so once the node is gone a delivery fails with
/// [`Failure::node_gone`].
#[derive(Clone)]
pub struct Inbound {
    core: Weak<Core>,
}

impl Inbound {
    pub(super) fn of(core: &Arc<Core>) -> Self {
        Self { core: Arc::downgrade(core) }
    }

    /// Runs one delivery on this node. Services return the reply; messages
    /// an empty reply.
    pub async fn deliver(&self, envelope: Envelope) -> Result<Vec<u8>, Failure> {
        match self.core.upgrade() {
            Some(core) => core.deliver(envelope).await,
            None => Err(Failure::node_gone(&envelope.name)),
        }
    }

    /// A dispatch of `name` went to the dead letters: the driver that wrote
    /// it says so, and the node counts it.
    pub fn dead_lettered(&self, name: &str) {
        if let Some(core) = self.core.upgrade() {
            core.metrics.record_dead_letter(name);
        }
    }

    /// The state of `name`'s share of a durable queue, as the driver that
    /// takes from it sees it: whether it can take work now, and how many
    /// jobs wait (when it knows).
    pub fn queue_state(&self, name: &str, stalled: Option<bool>, pending: Option<u64>) {
        if let Some(core) = self.core.upgrade() {
            if let Some(stalled) = stalled {
                core.metrics.set_queue_stalled(name, stalled);
            }
            if let Some(pending) = pending {
                core.metrics.set_queue_pending(name, pending);
            }
        }
    }

    /// `count` dead letters of `name` were removed by a limit of the
    /// dead-letter store: the driver that removed them says so.
    pub fn dead_letters_dropped(&self, name: &str, count: u64) {
        if let Some(core) = self.core.upgrade() {
            core.metrics.record_dead_letters_dropped(name, count);
        }
    }

    /// This node's per-name statistics (none once it is gone).
    pub fn stats(&self) -> Vec<NameStats> {
        self.core.upgrade().map(|core| core.handlers.stats(&core.config.node.id)).unwrap_or_default()
    }

    /// This node's identity and names, while it exists.
    pub fn info(&self) -> Option<NodeInfo> {
        self.core.upgrade().map(|core| core.info())
    }

    /// Whether `other` leads to the same node.
    pub fn same_node(&self, other: &Inbound) -> bool {
        Weak::ptr_eq(&self.core, &other.core)
    }
}

impl Core {
    /// Runs one incoming delivery: the route, a span of the caller's trace,
    /// the invocation within the handler's limits, its counters.
    async fn deliver(self: Arc<Self>, envelope: Envelope) -> Result<Vec<u8>, Failure> {
        let kind = if envelope.mode.is_service() { Kind::Service } else { Kind::Message };
        let Some(route) = self.handlers.lookup(kind, &envelope.name) else {
            return Err(Failure::not_found(&envelope.name));
        };
        let mut envelope = envelope;
        let (mode, attempt) = (envelope.mode, envelope.attempt);
        let trace = crate::ops::trace::enter(&mut envelope.headers);
        let span_context = trace.parent;
        let version = &route.handler.compiled.version;
        // One span per invocation; the guest's log lines are written inside it.
        let span = tracing::info_span!(
            "invocation",
            // Not `name`: JSON logs put the span's own name under that key.
            bus_name = %route.name,
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
        // The invocation's future is kilobytes (wasmtime's call in it): on
        // the heap once, so that the layers above it move a pointer, not a
        // copy of it, each time they wrap it.
        let run = Box::pin(self.run(&route, envelope, trace, self.clone()));
        let result =
            crate::fault::guard(Point::Deliver, &route.name, &self.metrics, run).instrument(span.clone()).await;
        drop(in_flight);
        let elapsed = start.elapsed();
        route.counters.record(elapsed, result.is_err());
        self.metrics.record_in(&route.series, mode, attempt, elapsed, result.as_ref().map(|_| ()));
        if !span.is_disabled() {
            let outcome = result.as_ref().map_or_else(|f| f.class.as_str(), |_| "ok");
            span.record("outcome", outcome);
            span.record("duration_us", u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX));
            let _entered = span.enter();
            match &result {
                Ok(_) => tracing::debug!(outcome, ?elapsed, "invocation ok"),
                Err(f) => {
                    if let Some(left_out) = crate::ops::lograte::line("invocation failed", &route.name) {
                        tracing::info!(outcome, ?elapsed, "invocation failed: {}{left_out}", f.message);
                    }
                }
            }
        }
        result
    }

    /// The key-value buckets handlers use, once connected.
    fn buckets(&self) -> Option<Arc<dyn crate::keyvalue::Buckets>> {
        self.outgoing.get().and_then(Outgoing::buckets)
    }

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
                    human_bytes(size),
                    handler.stem,
                    human_bytes(policy.max_payload)
                ),
            ));
        }
        let (_slot, _instance) = if envelope.waits_for_slot {
            (handler.gate.wait(&handler.stem).await?, self.runtime.admit(&handler.stem, None).await?)
        } else {
            let own = crate::limits::deadline_in(policy.timeout);
            let deadline = envelope.deadline.map_or(own, |d| d.min(own));
            let slot = handler.gate.enter(&handler.stem, deadline).await?;
            (slot, self.runtime.admit(&handler.stem, Some(deadline)).await?)
        };
        crate::fault::point(Point::Deliver, &route.name);
        let invoke = Invoke {
            handler: handler.stem.clone(),
            envelope,
            timeout: policy.timeout,
            memory: policy.memory,
            max_depth: self.config.handlers.max_depth,
            max_calls: policy.max_calls,
            max_http_body: policy.max_http_body,
            grants: policy.grants.clone(),
            buckets: self.buckets(),
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
                    human_bytes(size),
                    human_bytes(policy.max_reply)
                ),
            ));
        }
        Ok(reply)
    }

    /// Sends an outgoing delivery in `mode` over the next connection: the
    /// reply of a call, an empty reply once an event is accepted.
    pub(super) async fn send(&self, mode: Mode, request: Request) -> Result<Vec<u8>, Failure> {
        self.out(request, async |link, request| link.send(mode, request).await).await
    }

    /// Queues a dispatch over the next connection.
    pub(super) async fn enqueue(&self, request: Request) -> Result<Receipt, Failure> {
        self.out(request, async |link, request| link.enqueue(request).await).await
    }

    /// Sends `request` out by `go` over the next connection: a name that
    /// is not a bus name is `invalid`, a host error on the way answers `failed`.
    async fn out<T>(
        &self,
        request: Request,
        go: impl AsyncFnOnce(&super::outgoing::Link, Request) -> Result<T, Failure>,
    ) -> Result<T, Failure> {
        crate::delivery::name::validate(&request.name)
            .map_err(|e| Failure::new(FailureClass::Invalid, e.to_string()))?;
        let link = self.outgoing()?;
        let name = request.name.clone();
        crate::fault::guard(Point::Send, &name, &self.metrics, async {
            crate::fault::point(Point::Send, &request.name);
            go(link, request).await
        })
        .await
    }

    /// The connection for the next outgoing operation, by weight.
    fn outgoing(&self) -> Result<&super::outgoing::Link, Failure> {
        let out = self
            .outgoing
            .get()
            .ok_or_else(|| Failure::new(FailureClass::NotFound, "the node is not connected to a bus yet"))?;
        out.next().ok_or_else(|| Failure::new(FailureClass::NotFound, "the node has no bus connection"))
    }

    /// This node's identity and the names it serves.
    pub(super) fn info(&self) -> NodeInfo {
        let table = self.handlers.table();
        let names = table.routes();
        let of = |k: Kind| names.iter().filter(|(kind, _, _)| *kind == k).map(|(_, n, _)| n.to_string()).collect();
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

/// A handler's nested deliveries go out through the bus core.
#[async_trait::async_trait]
impl Outbound for Core {
    async fn send(&self, mode: Mode, request: Request) -> Result<Vec<u8>, Failure> {
        Core::send(self, mode, request).await
    }
}

/// A change of the handlers folder reaches every connection.
#[async_trait::async_trait]
impl Bus for Core {
    async fn stop_serving(&self, kind: Kind, name: &str) {
        for link in self.outgoing.get().map_or(&[][..], |o| o.links()) {
            let dropped = match kind {
                Kind::Service => link.connection().unregister_service(name).await,
                Kind::Message => link.connection().unregister_message(name).await,
            };
            if let Err(e) = dropped {
                tracing::warn!(%name, "could not stop serving `{name}`: {e}");
            }
        }
    }

    async fn serve(&self, kind: Kind, name: &str, spec: &ServiceSpec) {
        for link in self.outgoing.get().map_or(&[][..], |o| o.links()) {
            if let Err(e) = link.register(kind, name, spec).await {
                tracing::warn!(%name, "could not serve `{name}` on the bus: {e}");
            }
        }
    }
}
