//! Which loaded handler serves which name: a routing table the bus core reads
//! on every delivery and replaces as a whole when the handlers folder changes,
//! so a delivery sees either the old table or the new one, never a mix.

use crate::delivery::Kind;
use crate::driver::ServiceSpec;
use crate::handlers::gate::Gate;
use crate::handlers::sidecar::Policy;
use crate::ops::metrics::Series;
use crate::runtime::Compiled;
use crate::stats::Counters;
use rustc_hash::FxHashMap;
use std::sync::{Arc, RwLock};

/// A loaded handler: its compiled component and its policy.
pub struct Loaded {
    /// Its label (file stem).
    pub stem: Arc<str>,
    /// The compiled component (shared by the versions of a handler that
    /// differ only in their sidecar).
    pub compiled: Arc<Compiled>,
    /// The policy it runs under.
    pub policy: Policy,
    /// Admission under the policy's `concurrency` and `queue`.
    pub gate: Gate,
}

impl Loaded {
    /// A handler `stem` running `compiled` under `policy`, at most `share`
    /// at once whatever its `concurrency` (see [`crate::runtime::Runtime::handler_share`]).
    pub fn new(stem: Arc<str>, compiled: Arc<Compiled>, policy: Policy, share: u32) -> Self {
        let gate = Gate::new(policy.concurrency.min(share), policy.queue);
        Self { stem, compiled, policy, gate }
    }
}

/// What a lookup hands the bus core: the name, the handler serving it and
/// the name's counters and metric series, found once when the table is
/// built so that a delivery looks nothing up again.
#[derive(Clone)]
pub struct Route {
    /// The name routed.
    pub name: Arc<str>,
    /// The handler serving the name.
    pub handler: Arc<Loaded>,
    /// The name's statistics.
    pub counters: Arc<Counters>,
    /// The name's metric series.
    pub series: Arc<Series>,
}

impl Route {
    /// `name` served by `handler`.
    pub fn new(name: &str, handler: Arc<Loaded>, counters: Arc<Counters>, series: Arc<Series>) -> Self {
        Self { name: name.into(), handler, counters, series }
    }

    /// The service settings a driver needs for this route.
    pub fn spec(&self) -> ServiceSpec {
        let policy = &self.handler.policy;
        ServiceSpec {
            retry: policy.retry.clone(),
            timeout: policy.timeout,
            concurrency: policy.concurrency,
            max_payload: policy.max_payload,
            max_pending: policy.max_pending,
        }
    }
}

/// Every route of a node: services and messages, one map each.
#[derive(Default, Clone)]
pub struct Table {
    services: FxHashMap<String, Arc<Route>>,
    messages: FxHashMap<String, Arc<Route>>,
}

impl Table {
    /// The route for `name` of `kind`.
    pub fn get(&self, kind: Kind, name: &str) -> Option<&Route> {
        self.map(kind).get(name).map(|r| &**r)
    }

    /// Routes `name` of `kind` to `route` unless it is routed already;
    /// returns the stem of the handler that holds it then.
    pub fn claim(&mut self, kind: Kind, name: &str, route: Route) -> Result<(), Arc<str>> {
        let map = match kind {
            Kind::Service => &mut self.services,
            Kind::Message => &mut self.messages,
        };
        match map.get(name) {
            Some(held) => Err(held.handler.stem.clone()),
            None => {
                map.insert(name.to_string(), Arc::new(route));
                Ok(())
            }
        }
    }

    /// Every route with its kind and name, sorted.
    pub fn routes(&self) -> Vec<(Kind, &str, &Route)> {
        let mut all: Vec<_> = [Kind::Service, Kind::Message]
            .into_iter()
            .flat_map(|k| self.map(k).iter().map(move |(n, r)| (k, n.as_str(), &**r)))
            .collect();
        all.sort_by(|a, b| (a.0, a.1).cmp(&(b.0, b.1)));
        all
    }

    /// The names routed to handler `stem`, sorted, once each.
    pub fn names_of(&self, stem: &str) -> Vec<String> {
        let mut names: Vec<String> = self
            .routes()
            .into_iter()
            .filter(|(_, _, r)| &*r.handler.stem == stem)
            .map(|(_, n, _)| n.to_string())
            .collect();
        names.dedup();
        names
    }

    fn map(&self, kind: Kind) -> &FxHashMap<String, Arc<Route>> {
        match kind {
            Kind::Service => &self.services,
            Kind::Message => &self.messages,
        }
    }
}

/// The name → handler table of one node.
#[derive(Default)]
pub struct Registry {
    table: RwLock<Arc<Table>>,
}

impl Registry {
    /// The route for `name` of `kind`.
    pub fn lookup(&self, kind: Kind, name: &str) -> Option<Arc<Route>> {
        crate::sync::read(&self.table).map(kind).get(name).cloned()
    }

    /// The current table.
    pub fn snapshot(&self) -> Arc<Table> {
        crate::sync::read(&self.table).clone()
    }

    /// Makes `table` the current table, in one step.
    pub fn replace(&self, table: Table) {
        *crate::sync::write(&self.table) = Arc::new(table);
    }
}
