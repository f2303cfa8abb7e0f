//! Discovery over the NATS micro protocol: every node answers `$SRV.PING`,
//! `$SRV.INFO` and `$SRV.STATS` (and their `.<service>` and
//! `.<service>.<id>` forms) with the `io.nats.micro.v1.*_response` JSON
//! shapes, so stock NATS tooling sees busbar nodes. The micro service name
//! is the project; the id is the node id. A node answers only while it is
//! started, so a stopped node is gone from the listings at once, and a
//! crashed one as soon as it stops answering.
//!
//! The listings (`nodes`, `services`, `stats`) scatter a request to
//! `$SRV.<verb>.<project>` and gather the replies that arrive until the bus
//! has been quiet for [`QUIET`].

use super::wire::CALL_GROUP;
use super::{DriverError, NatsConnection};
use crate::delivery::Kind;
use crate::stats::{NameStats, NodeInfo, ServiceInfo, rfc3339};
use bytes::Bytes;
use futures_util::StreamExt;
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

/// Gathering stops once no reply has come for this long…
const QUIET: Duration = Duration::from_millis(250);
/// …or after this long in all.
const GATHER: Duration = Duration::from_secs(2);

/// The micro service name of a project: `^[a-zA-Z0-9_-]+$`.
pub(super) fn service_name(project: &str) -> String {
    let name: String =
        project.chars().map(|c| if c.is_ascii_alphanumeric() || c == '-' || c == '_' { c } else { '_' }).collect();
    if name.is_empty() { "busbar".into() } else { name }
}

/// The endpoint name of a bus name (`order.paid` → `order-paid`; events get `-event`).
fn endpoint_name(name: &str, kind: Kind) -> String {
    let base: String =
        name.chars().map(|c| if c.is_ascii_alphanumeric() || c == '-' || c == '_' { c } else { '-' }).collect();
    match kind {
        Kind::Service => base,
        Kind::Message => format!("{base}-event"),
    }
}

/// The version busbar reports (semver).
const VERSION: &str = env!("CARGO_PKG_VERSION");

impl NatsConnection {
    fn metadata(&self) -> Value {
        json!({
            "busbar": VERSION,
            "project": self.node.project,
            "node": self.node.node,
            "group": self.group,
            "profile": self.profile,
            "started": self.node.started,
        })
    }

    /// The node's names, as (name, kind), sorted.
    fn names(&self) -> Vec<(String, Kind)> {
        let services = crate::sync::lock(&self.services).keys().map(|n| (n.clone(), Kind::Service)).collect::<Vec<_>>();
        let messages = crate::sync::lock(&self.messages).iter().map(|n| (n.clone(), Kind::Message)).collect::<Vec<_>>();
        services.into_iter().chain(messages).collect()
    }

    fn endpoint(&self, name: &str, kind: Kind) -> Value {
        // Every endpoint names a queue group (stock clients such as nats-py
        // require the key): calls share `busbar`; a broadcast has none.
        let (subject, queue_group) = match kind {
            Kind::Service => (self.wire.call(name), CALL_GROUP),
            Kind::Message => (self.wire.event(name), ""),
        };
        let kind_name = if kind == Kind::Service { "service" } else { "message" };
        let endpoint = json!({
            "name": endpoint_name(name, kind),
            "subject": subject,
            "queue_group": queue_group,
            "metadata": { "name": name, "kind": kind_name },
        });
        endpoint
    }

    fn reply(&self, verb: &str) -> Option<Value> {
        let name = service_name(&self.node.project);
        let head = |kind: &str| json!({ "type": kind, "name": name, "id": self.node.node, "version": VERSION, "metadata": self.metadata() });
        match verb {
            "PING" => Some(head("io.nats.micro.v1.ping_response")),
            "INFO" => {
                let mut info = head("io.nats.micro.v1.info_response");
                info["description"] = json!(format!("busbar node {}", self.node.node));
                info["endpoints"] = self.names().iter().map(|(n, k)| self.endpoint(n, *k)).collect();
                Some(info)
            }
            "STATS" => {
                let local: BTreeMap<String, NameStats> =
                    self.inbound.stats().into_iter().map(|s| (s.name.clone(), s)).collect();
                let mut stats = head("io.nats.micro.v1.stats_response");
                stats["started"] = json!(self.node.started);
                stats["endpoints"] = self
                    .names()
                    .iter()
                    .map(|(n, k)| {
                        let mut e = self.endpoint(n, *k);
                        let s = local.get(n);
                        e["num_requests"] = json!(s.map_or(0, |s| s.requests));
                        e["num_errors"] = json!(s.map_or(0, |s| s.errors));
                        e["last_error"] = json!("");
                        e["processing_time"] = json!(s.map_or(0, |s| s.total_ns));
                        e["average_processing_time"] = json!(s.map_or(0, |s| s.average_ns));
                        e["data"] = json!({
                            "version": s.map_or("", |s| s.version.as_str()),
                            "reloads": s.map_or(0, |s| s.reloads),
                        });
                        e
                    })
                    .collect();
                Some(stats)
            }
            _ => None,
        }
    }
}

/// Answers `$SRV.*` for this node until the connection stops.
pub(super) async fn serve(conn: &Arc<NatsConnection>) -> Result<(), DriverError> {
    let subscriber =
        conn.client.subscribe("$SRV.>").await.map_err(|e| DriverError::from_cause("subscribing to $SRV.>", e))?;
    let serving = super::Serving::new(conn.cancel.clone(), None);
    serving.spawn(
        conn,
        conn.clone().pump(subscriber, serving.clone(), |conn, msg| async move {
            let tokens: Vec<&str> = msg.subject.split('.').collect();
            let ours = service_name(&conn.node.project);
            let addressed = match tokens.as_slice() {
                [_, _] => true,
                [_, _, name] => *name == ours,
                [_, _, name, id] => *name == ours && *id == conn.node.node,
                _ => false,
            };
            let (Some(reply), true) = (msg.reply.clone(), addressed) else { return };
            let Some(body) = conn.reply(tokens[1]) else { return };
            if let Err(e) = conn.client.publish(reply, Bytes::from(body.to_string())).await {
                tracing::debug!("discovery reply: {e}");
            }
        }),
    );
    Ok(())
}

/// Replies of every node of the project to `$SRV.<verb>.<project>`.
async fn gather(conn: &NatsConnection, verb: &str) -> Result<Vec<Value>, DriverError> {
    let inbox = conn.client.new_inbox();
    let mut replies =
        conn.client.subscribe(inbox.clone()).await.map_err(|e| DriverError::from_cause("asking for discovery", e))?;
    let subject = format!("$SRV.{verb}.{}", service_name(&conn.node.project));
    conn.client
        .publish_with_reply(subject, inbox, Bytes::new())
        .await
        .map_err(|e| DriverError::from_cause("asking for discovery", e))?;
    let until = Instant::now() + GATHER;
    let mut out = Vec::new();
    while let Ok(Some(msg)) =
        tokio::time::timeout(QUIET.min(until.saturating_duration_since(Instant::now())), replies.next()).await
    {
        match serde_json::from_slice::<Value>(&msg.payload) {
            Ok(v) if v["metadata"]["busbar"].is_string() => out.push(v),
            _ => {}
        }
    }
    Ok(out)
}

fn text(v: &Value) -> String {
    v.as_str().unwrap_or_default().to_string()
}

/// The bus names of an INFO reply's endpoints, by kind.
fn names_of(info: &Value, kind: &str) -> Vec<String> {
    let mut names: Vec<String> = info["endpoints"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|e| e["metadata"]["kind"] == kind)
        .map(|e| text(&e["metadata"]["name"]))
        .collect();
    names.sort();
    names
}

/// Every live node of the project.
pub(super) async fn nodes(conn: &NatsConnection) -> Result<Vec<NodeInfo>, DriverError> {
    let now = rfc3339(SystemTime::now());
    let mut nodes: Vec<NodeInfo> = gather(conn, "INFO")
        .await?
        .iter()
        .map(|info| {
            let meta = &info["metadata"];
            NodeInfo {
                project: text(&meta["project"]),
                node: text(&info["id"]),
                group: text(&meta["group"]),
                profile: text(&meta["profile"]),
                services: names_of(info, "service"),
                messages: names_of(info, "message"),
                started: text(&meta["started"]),
                last_seen: now.clone(),
            }
        })
        .collect();
    nodes.sort_by(|a, b| a.node.cmp(&b.node));
    Ok(nodes)
}

/// Every name served in the project, with its nodes.
pub(super) async fn services(conn: &NatsConnection) -> Result<Vec<ServiceInfo>, DriverError> {
    let mut by_name: BTreeMap<(String, Kind), Vec<String>> = BTreeMap::new();
    for node in nodes(conn).await? {
        for name in node.services {
            by_name.entry((name, Kind::Service)).or_default().push(node.node.clone());
        }
        for name in node.messages {
            by_name.entry((name, Kind::Message)).or_default().push(node.node.clone());
        }
    }
    Ok(by_name.into_iter().map(|((name, kind), nodes)| ServiceInfo { name, kind, nodes }).collect())
}

/// Per-name statistics of every live node of the project.
pub(super) async fn stats(conn: &NatsConnection) -> Result<Vec<NameStats>, DriverError> {
    let mut out = Vec::new();
    for reply in gather(conn, "STATS").await? {
        for e in reply["endpoints"].as_array().into_iter().flatten() {
            let requests = e["num_requests"].as_u64().unwrap_or(0);
            let total_ns = e["processing_time"].as_u64().unwrap_or(0);
            out.push(NameStats {
                name: text(&e["metadata"]["name"]),
                node: text(&reply["id"]),
                requests,
                errors: e["num_errors"].as_u64().unwrap_or(0),
                total_ns,
                average_ns: e["average_processing_time"].as_u64().unwrap_or(0),
                version: text(&e["data"]["version"]),
                reloads: e["data"]["reloads"].as_u64().unwrap_or(0),
            });
        }
    }
    out.sort_by(|a, b| (&a.name, &a.node).cmp(&(&b.name, &b.node)));
    Ok(out)
}
