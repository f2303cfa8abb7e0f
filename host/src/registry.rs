//! Which loaded handler serves which name: a table the bus core reads on
//! every delivery. A name is served by one handler per node; the first file
//! (in file-name order) to claim it keeps it.

use crate::handlers::Policy;
use crate::runtime::Compiled;
use crate::stats::{Counters, Kind};
use std::collections::HashMap;
use std::sync::{Arc, RwLock};

/// A loaded handler: its compiled component and its policy.
pub struct Loaded {
    /// Its label (file stem).
    pub stem: Arc<str>,
    /// The compiled component.
    pub compiled: Compiled,
    /// The policy it runs under.
    pub policy: Policy,
}

/// What a lookup hands the bus core: the handler and the name's counters.
#[derive(Clone)]
pub struct Route {
    /// The handler serving the name.
    pub handler: Arc<Loaded>,
    /// The name's statistics.
    pub counters: Arc<Counters>,
}

/// The name → handler table of one node.
#[derive(Default)]
pub struct Registry {
    /// Services and messages, one map each (indexed by [`slot`]).
    routes: RwLock<[HashMap<String, Route>; 2]>,
}

fn slot(kind: Kind) -> usize {
    match kind {
        Kind::Service => 0,
        Kind::Message => 1,
    }
}

impl Registry {
    /// The route for `name` of `kind`.
    pub fn lookup(&self, kind: Kind, name: &str) -> Option<Route> {
        let routes = self.routes.read().unwrap_or_else(|e| e.into_inner());
        routes[slot(kind)].get(name).cloned()
    }

    /// Claims `name` of `kind` for `route`. Returns the stem of the handler
    /// that already holds it, if any (and then changes nothing).
    pub fn claim(&self, kind: Kind, name: &str, route: Route) -> Result<(), Arc<str>> {
        let mut routes = self.routes.write().unwrap_or_else(|e| e.into_inner());
        let routes = &mut routes[slot(kind)];
        match routes.get(name) {
            Some(held) if held.handler.stem != route.handler.stem => Err(held.handler.stem.clone()),
            _ => {
                routes.insert(name.to_string(), route);
                Ok(())
            }
        }
    }

    /// Every name served, with its kind, sorted.
    pub fn names(&self) -> Vec<(Kind, String)> {
        let routes = self.routes.read().unwrap_or_else(|e| e.into_inner());
        let mut names: Vec<_> = [Kind::Service, Kind::Message]
            .into_iter()
            .flat_map(|k| routes[slot(k)].keys().map(move |n| (k, n.clone())))
            .collect();
        names.sort();
        names
    }
}
