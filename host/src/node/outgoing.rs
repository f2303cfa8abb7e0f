//! A node's connections for outgoing deliveries: picked by weight, with the
//! in-process hub reached directly (no boxed future on the hot path) and
//! every other driver through the [`Connection`] trait.

use super::weighted::WeightedPicker;
use crate::delivery::failure::Failure;
use crate::delivery::{Kind, Mode, Request};
use crate::driver::default::DefaultConnection;
use crate::driver::{Connection, DriverError, Fanout, Receipt, ServiceSpec};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

/// One connection of a node.
#[derive(Clone)]
pub(crate) enum Link {
    /// The in-process hub, called directly.
    Local(Arc<DefaultConnection>),
    /// Any other driver.
    Driver(Arc<dyn Connection>),
}

impl Link {
    /// The connection, for everything but the hot path.
    pub(crate) fn connection(&self) -> &dyn Connection {
        match self {
            Link::Local(c) => &**c,
            Link::Driver(c) => &**c,
        }
    }

    /// A call (the reply), broadcast or rolecast (an empty reply once accepted).
    pub(crate) async fn send(&self, mode: Mode, request: Request) -> Result<Vec<u8>, Failure> {
        match (self, mode) {
            (Link::Local(c), Mode::Call) => c.call(request).await,
            (Link::Driver(c), Mode::Call) => c.request(request).await,
            (link, Mode::Broadcast) => link.connection().publish(request, Fanout::All).await.map(|()| Vec::new()),
            (link, Mode::Rolecast) => link.connection().publish(request, Fanout::PerGroup).await.map(|()| Vec::new()),
            (link, Mode::Dispatch) => link.enqueue(request).await.map(|_| Vec::new()),
        }
    }

    /// Queues a dispatch.
    pub(crate) async fn enqueue(&self, request: Request) -> Result<Receipt, Failure> {
        self.connection().enqueue(request).await
    }

    /// Serves `name` of `kind` (a service under `spec`).
    pub(crate) async fn register(&self, kind: Kind, name: &str, spec: &ServiceSpec) -> Result<(), DriverError> {
        match kind {
            Kind::Service => self.connection().register_service(name, spec).await,
            Kind::Message => self.connection().register_message(name).await,
        }
    }
}

/// The connections of a node and how much each carried.
pub(crate) struct Outgoing {
    links: Vec<Link>,
    /// Operations sent through each connection, for `Node::connections`.
    sent: Vec<AtomicU64>,
    picker: WeightedPicker,
    /// The key-value buckets handlers use: the first connection's.
    buckets: Option<Arc<dyn crate::keyvalue::Buckets>>,
}

impl Outgoing {
    /// `links`, picked in proportion to `weights`.
    pub(crate) fn new(links: Vec<Link>, weights: &[u32]) -> Self {
        let sent = links.iter().map(|_| AtomicU64::new(0)).collect();
        let buckets = links.first().map(|link| link.connection().buckets());
        Self { links, sent, picker: WeightedPicker::new(weights), buckets }
    }

    /// The key-value buckets of the node's handlers (on its first connection).
    pub(crate) fn buckets(&self) -> Option<Arc<dyn crate::keyvalue::Buckets>> {
        self.buckets.clone()
    }

    /// The connection for the next outgoing operation, counted.
    pub(crate) fn next(&self) -> Option<&Link> {
        let i = self.picker.pick()?;
        self.sent[i].fetch_add(1, Ordering::Relaxed);
        self.links.get(i)
    }

    /// Every connection, in config order.
    pub(crate) fn links(&self) -> &[Link] {
        &self.links
    }

    /// The first connection (discovery and dead letters ask it).
    pub(crate) fn first(&self) -> Option<&Link> {
        self.links.first()
    }

    /// Operations sent through each connection, in config order.
    pub(crate) fn sent(&self) -> impl Iterator<Item = u64> + '_ {
        self.sent.iter().map(|s| s.load(Ordering::Relaxed))
    }
}
