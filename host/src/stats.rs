//! Per-name statistics kept on the serving side (requests, errors, latency in
//! nanoseconds), and the listing types every driver reports: nodes, services,
//! stats.

use crate::delivery::Kind;

use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

/// Lock-free counters of one name; the registry hands them out with the
/// handler so the hot path never looks them up.
#[derive(Debug, Default)]
pub(crate) struct Counters {
    requests: AtomicU64,
    errors: AtomicU64,
    total_ns: AtomicU64,
    reloads: AtomicU64,
}

impl Counters {
    /// Counts one swap of the handler version serving the name.
    pub fn record_reload(&self) {
        self.reloads.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts one finished invocation.
    pub fn record(&self, elapsed: Duration, failed: bool) {
        self.requests.fetch_add(1, Ordering::Relaxed);
        if failed {
            self.errors.fetch_add(1, Ordering::Relaxed);
        }
        self.total_ns.fetch_add(u64::try_from(elapsed.as_nanos()).unwrap_or(u64::MAX), Ordering::Relaxed);
    }
}

/// The counters of every name a node has served; kept across reloads.
#[derive(Debug, Default)]
pub(crate) struct StatsTable {
    names: RwLock<HashMap<String, Arc<Counters>>>,
}

impl StatsTable {
    /// The counters of `name`, created on first use.
    pub fn counters(&self, name: &str) -> Arc<Counters> {
        if let Some(c) = crate::sync::read(&self.names).get(name) {
            return c.clone();
        }
        crate::sync::write(&self.names).entry(name.into()).or_default().clone()
    }

    /// A snapshot, sorted by name.
    pub fn snapshot(&self, node: &str) -> Vec<NameStats> {
        let names = crate::sync::read(&self.names);
        let mut out: Vec<NameStats> = names
            .iter()
            .map(|(name, c)| {
                let requests = c.requests.load(Ordering::Relaxed);
                let total_ns = c.total_ns.load(Ordering::Relaxed);
                NameStats {
                    name: name.clone(),
                    node: node.into(),
                    requests,
                    errors: c.errors.load(Ordering::Relaxed),
                    total_ns,
                    average_ns: total_ns.checked_div(requests).unwrap_or(0),
                    version: String::new(),
                    reloads: c.reloads.load(Ordering::Relaxed),
                }
            })
            .collect();
        out.sort_by(|a, b| a.name.cmp(&b.name));
        out
    }
}

/// Statistics of one name on one node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NameStats {
    /// The bus name.
    pub name: String,
    /// The node that served it.
    pub node: String,
    /// Invocations, failed ones included.
    pub requests: u64,
    /// Failed invocations.
    pub errors: u64,
    /// Total time spent in invocations, in nanoseconds.
    pub total_ns: u64,
    /// `total_ns / requests`.
    pub average_ns: u64,
    /// The version (content hash) of the handler serving it now; empty when
    /// none does.
    #[serde(default)]
    pub version: String,
    /// How many times a new handler version replaced the one serving it.
    #[serde(default)]
    pub reloads: u64,
}

/// One live node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeInfo {
    /// The project it belongs to.
    pub project: String,
    /// Its id.
    pub node: String,
    /// Its group (role).
    pub group: String,
    /// Its profile label.
    pub profile: String,
    /// Service names it serves.
    pub services: Vec<String>,
    /// Message names it listens to.
    pub messages: Vec<String>,
    /// When it started, RFC 3339 UTC.
    pub started: String,
    /// When it was last seen alive, RFC 3339 UTC.
    pub last_seen: String,
}

/// A name on the bus and the nodes that serve it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServiceInfo {
    /// The bus name.
    pub name: String,
    /// Service or message.
    pub kind: Kind,
    /// Ids of the nodes serving it.
    pub nodes: Vec<String>,
}

/// RFC 3339 UTC with milliseconds, e.g. `2026-11-25T08:25:53.123Z`.
pub fn rfc3339(t: std::time::SystemTime) -> String {
    humantime::format_rfc3339_millis(t).to_string()
}
