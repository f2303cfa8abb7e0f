//! The driver abstraction: how a node reaches a bus. A [`Driver`] opens
//! [`Connection`]s; a connection carries the node's outgoing deliveries and
//! hands incoming ones to the bus core through [`Inbound`]. Drivers know
//! nothing of wasm; the bus core knows nothing of transports.

pub mod default;
pub mod nats;

use crate::config::ConnectionConfig;
use crate::delivery::failure::Failure;
use crate::delivery::{Headers, Request};
use crate::stats::{NameStats, NodeInfo, ServiceInfo};
use std::sync::Arc;
use std::time::Duration;

/// The drivers this build knows, by config name.
pub const KNOWN: [&str; 2] = ["default", "nats"];

/// How long a connection waits, when it stops, for deliveries still running.
pub(crate) const DRAIN: std::time::Duration = std::time::Duration::from_secs(10);

/// Lets the tasks of `tasks` finish, for at most [`DRAIN`]; returns how many
/// were still running then.
pub(crate) async fn drain(tasks: &tokio_util::task::TaskTracker) -> Option<usize> {
    tasks.close();
    match tokio::time::timeout(DRAIN, tasks.wait()).await {
        Ok(()) => None,
        Err(_) => Some(tasks.len()),
    }
}

/// The cause of a [`DriverError`], as the transport reported it.
pub type Cause = Box<dyn std::error::Error + Send + Sync>;

/// A driver-level failure (connecting, registering, listing): its kind, so
/// that a caller can tell a timeout from a refusal, what was being done,
/// and the cause.
#[derive(Debug, thiserror::Error)]
pub enum DriverError {
    /// A `[bus] setting` is missing or wrong; the message says which.
    #[error("[bus] setting: {0}")]
    Setting(String),
    /// No driver of that name was given to the node.
    #[error("no driver named `{0}` (built in: default, nats; an embedder adds its own with `NodeBuilder::driver`)")]
    Unknown(String),
    /// The bus did not answer in time.
    #[error("{what}: the bus did not answer in time")]
    TimedOut {
        /// What was being done.
        what: String,
    },
    /// The bus refused the credentials or the operation.
    #[error("{what}: not authorised: {source}")]
    NotAuthorized {
        /// What was being done.
        what: String,
        /// What the bus said.
        source: Cause,
    },
    /// The NATS server has no JetStream, which durable dispatch needs.
    #[error("{what}: {source}; is JetStream enabled (`nats-server -js`)?")]
    NoJetStream {
        /// What was being done.
        what: String,
        /// What the bus said.
        source: Cause,
    },
    /// The connection to the bus is closed or lost.
    #[error("{what}: the connection to the bus is lost")]
    ConnectionLost {
        /// What was being done.
        what: String,
    },
    /// Anything else the bus answered.
    #[error("{what}: {source}")]
    Bus {
        /// What was being done.
        what: String,
        /// What the bus said.
        source: Cause,
    },
    /// The default driver's durable state cannot be used.
    #[error("{0}")]
    State(#[from] default::state::StateError),
}

impl DriverError {
    /// `cause` met while doing `what`, sorted into its kind by what the
    /// transport says (async-nats reports most kinds only in its text).
    pub fn from_cause(what: impl Into<String>, cause: impl Into<Cause>) -> Self {
        let (what, source) = (what.into(), cause.into());
        let text = source.to_string().to_ascii_lowercase();
        if text.contains("timed out") || text.contains("timeout") {
            Self::TimedOut { what }
        } else if text.contains("authoriz") || text.contains("authentic") || text.contains("permission") {
            Self::NotAuthorized { what, source }
        } else if text.contains("jetstream not enabled") || text.contains("jetstream unavailable") {
            Self::NoJetStream { what, source }
        } else if text.contains("disconnect") || text.contains("connection closed") || text.contains("broken pipe") {
            Self::ConnectionLost { what }
        } else {
            Self::Bus { what, source }
        }
    }
}

pub use crate::node::Inbound;

/// A way to reach a bus.
#[async_trait::async_trait]
pub trait Driver: Send + Sync {
    /// Opens a connection described by `config` for the node behind
    /// `inbound` (which holds the node weakly: the node owns its connections).
    async fn connect(&self, config: &ConnectionConfig, inbound: Inbound) -> Result<Arc<dyn Connection>, DriverError>;
}

/// The outcome of a dispatch, for drivers that can report it (the in-process
/// default driver does; a durable driver returns once the bus has stored it).
#[derive(Debug, Clone, serde::Serialize)]
pub struct DispatchOutcome {
    /// The dispatch id.
    pub id: String,
    /// The service name.
    pub name: String,
    /// Attempts made.
    pub attempts: u32,
    /// The reply of the successful attempt, or the final failure.
    pub result: Result<Vec<u8>, Failure>,
    /// The failures of every failed attempt, in order.
    pub history: Vec<Failure>,
}

/// What `enqueue` returns once the bus has accepted a dispatch.
#[derive(Debug)]
pub struct Receipt {
    /// The dispatch id.
    pub id: String,
    /// Resolves with the outcome, where the driver can observe it.
    pub outcome: Option<tokio::sync::oneshot::Receiver<DispatchOutcome>>,
}

/// An exhausted or refused dispatch, kept so it can be inspected and replayed.
#[derive(Debug, Clone, serde::Serialize)]
pub struct DeadLetter {
    /// The dispatch id.
    pub id: String,
    /// The service name.
    pub name: String,
    /// The payload, unchanged.
    pub payload: Vec<u8>,
    /// Its headers.
    pub headers: Headers,
    /// Attempts made.
    pub attempts: u32,
    /// The last failure.
    pub failure: Failure,
    /// When it was dead-lettered, RFC 3339.
    pub at: String,
}

/// What a driver needs to know to serve a service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceSpec {
    /// Delays between dispatch attempts.
    pub retry: Vec<Duration>,
    /// The handler's timeout: a durable driver must not redeliver work that
    /// may still be running.
    pub timeout: Duration,
    /// How many invocations of the handler run at once on this node: a
    /// driver with a queue takes no more than this many jobs at a time.
    pub concurrency: u32,
    /// The largest payload the handler accepts: a driver that knows it when
    /// a dispatch is sent refuses a larger one there, as `invalid`, rather
    /// than queuing work that can only be refused.
    pub max_payload: u64,
    /// How many dispatches to the handler may be pending (queued, running or
    /// between attempts) at once: a driver that can count them refuses one
    /// more as `overloaded` at the dispatching call.
    pub max_pending: u32,
}

/// Event fan-out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fanout {
    /// Every node with a handler.
    All,
    /// One node per group.
    PerGroup,
}

/// One open connection to a bus (the seed's `Connection`, async).
#[async_trait::async_trait]
pub trait Connection: Send + Sync {
    /// Starts receiving deliveries for the registered names.
    async fn start(&self) -> Result<(), DriverError>;
    /// Stops receiving; deliveries already running finish.
    async fn stop(&self) -> Result<(), DriverError>;
    /// Releases the connection.
    async fn close(&self) -> Result<(), DriverError>;
    /// Serves service `name` under `spec`; called again for a served name,
    /// applies the new `spec`. Works before and after `start`.
    async fn register_service(&self, name: &str, spec: &ServiceSpec) -> Result<(), DriverError>;
    /// Listens to message `name`.
    async fn register_message(&self, name: &str) -> Result<(), DriverError>;
    /// Stops serving service `name`; deliveries already running finish, and
    /// work still queued for it stays queued.
    async fn unregister_service(&self, name: &str) -> Result<(), DriverError>;
    /// Stops listening to message `name`.
    async fn unregister_message(&self, name: &str) -> Result<(), DriverError>;
    /// Calls the service `request` names, waiting at most its timeout.
    async fn request(&self, request: Request) -> Result<Vec<u8>, Failure>;
    /// Queues a dispatch to the service `request` names; returns once the
    /// bus has it (giving up after the request's timeout).
    async fn enqueue(&self, request: Request) -> Result<Receipt, Failure>;
    /// Sends an event to the message `request` names.
    async fn publish(&self, request: Request, fanout: Fanout) -> Result<(), Failure>;
    /// Per-name statistics of every node on the bus.
    async fn stats(&self) -> Result<Vec<NameStats>, DriverError>;
    /// Every live node.
    async fn nodes(&self) -> Result<Vec<NodeInfo>, DriverError>;
    /// Every name served, with its nodes.
    async fn services(&self) -> Result<Vec<ServiceInfo>, DriverError>;
    /// Dispatches that were exhausted or refused.
    async fn dead_letters(&self) -> Result<Vec<DeadLetter>, DriverError>;
    /// Queues the dead letters of service `name` again (attempts start over);
    /// returns how many.
    async fn replay_dead_letters(&self, name: &str) -> Result<usize, DriverError>;
    /// Deletes the dead letters of service `name`; returns how many.
    async fn drop_dead_letters(&self, name: &str) -> Result<usize, DriverError>;
    /// Whether the connection reaches its bus now (an in-process bus always does).
    fn is_connected(&self) -> bool {
        true
    }
    /// The bus's key-value buckets, which handlers reach through
    /// `wasi:keyvalue`.
    fn buckets(&self) -> Arc<dyn crate::keyvalue::Buckets>;
}
