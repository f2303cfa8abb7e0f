//! The `nats` driver: busbar as one node of a shared NATS bus. Calls and
//! events are core NATS (request/reply, queue groups); dispatch is durable on
//! JetStream (`dispatch.rs`); discovery speaks the NATS micro protocol
//! (`discovery.rs`). The wire contract is in [`wire`].
//!
//! Settings (`[bus] setting = { … }`):
//!
//! | key | meaning |
//! |---|---|
//! | `url` | server URL, or a list of them (default `nats://127.0.0.1:4222`) |
//! | `token` | token authentication |
//! | `user`, `password` | user/password authentication (both or neither) |
//! | `credentials` | a `.creds` file (JWT + NKey) |
//! | `nkey` | a file holding an NKey user seed (`SU…`); not with the other ways to authenticate |
//! | `tls_ca` | a PEM file of the CA certificates that sign the servers' certificates (default: the system's) |
//! | `tls_cert`, `tls_key` | a PEM client certificate and its private key, for servers that verify clients (both or neither) |
//! | `name` | the connection name shown by the server (default: the node id) |
//! | `replicas` | copies of the streams and consumers, 1 to 5 (default 1; 3 on a cluster) |
//! | `dead_max_age` | dead letters older than this are removed and counted (default `30d`) |
//! | `dead_max_bytes` | the dead letters' size limit; the oldest make room (default `1GiB`) |
//! | `bucket_size` | what one key-value bucket may hold (default `256MiB`) |
//!
//! TLS is required when a URL is `tls://` or a `tls_*` key is set. Relative
//! paths in the config file are resolved against its folder. Opening the
//! connection, and why it failed, is `connect.rs`.

mod buckets;
mod connect;
mod dead;
mod discovery;
mod dispatch;
mod pull;
mod streams;
pub mod wire;

use super::{Connection, DRAIN, DeadLetter, Driver, DriverError, Fanout, Inbound, Receipt, ServiceSpec};
use crate::config::ConnectionConfig;
use crate::delivery::Kind;
use crate::delivery::failure::{Failure, FailureClass};
use crate::delivery::{Envelope, Mode, Request};
use crate::stats::{NameStats, NodeInfo, ServiceInfo};
use async_nats::Client;
use bytes::Bytes;
use futures_util::StreamExt;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use wire::Wire;

/// The NATS driver.
#[derive(Debug, Default, Clone)]
pub struct NatsDriver;

#[async_trait::async_trait]
impl Driver for NatsDriver {
    async fn connect(&self, config: &ConnectionConfig, inbound: Inbound) -> Result<Arc<dyn Connection>, DriverError> {
        let settings = connect::Settings::parse(&config.setting)?;
        let node = inbound
            .info()
            .ok_or_else(|| DriverError::ConnectionLost { what: "connecting a node that has stopped".into() })?;
        let keeping = settings.keeping()?;
        let client = connect::open(settings, &node.node).await?;
        let prefix = if config.prefix.is_empty() { format!("{}.", node.project) } else { config.prefix.clone() };
        let wire = Wire::new(&prefix);
        let js = async_nats::jetstream::new(client.clone());
        if keeping.replicas == 1 && client.server_info().cluster.is_some() {
            tracing::warn!(
                "the NATS server is part of a cluster but `replicas` is 1: the work queue and dead letters live \
                 on one server, and stop (or are lost) with it; set `replicas = 3` in `[bus] setting`"
            );
        }
        streams::ensure(&js, &wire, &keeping).await?;
        let group = if config.group.is_empty() { "default".to_string() } else { config.group.clone() };
        let version = client.server_info().version;
        let buckets = Arc::new(buckets::NatsBuckets::new(
            js.clone(),
            wire.kv_prefix(),
            keeping.replicas,
            keeping.bucket_size,
            &version,
        ));
        Ok(Arc::new_cyclic(|me| NatsConnection {
            me: me.clone(),
            buckets,
            client,
            js,
            wire,
            group,
            node,
            keeping,
            profile: config.profile.clone(),
            inbound,
            services: Mutex::default(),
            waiting: Mutex::default(),
            messages: Mutex::default(),
            serving: Mutex::default(),
            started: AtomicBool::new(false),
            cancel: CancellationToken::new(),
            tasks: TaskTracker::new(),
        }))
    }
}

/// Messages a subscription that is being dropped still takes, so that the
/// server and the client stop at the same message.
const LEAVE_QUOTA: u64 = 64;
/// How long a subscription being dropped waits for its next message before
/// it drains instead.
const LEAVE_WAIT: Duration = Duration::from_millis(250);
/// The longest a subscription being dropped goes on taking messages,
/// whatever the traffic: then it drains. A removed handler stops answering
/// within this time.
pub(crate) const LEAVE_AT_MOST: Duration = Duration::from_millis(500);

/// The life of one served name: its subscriptions (and consumer) end when
/// `until` is cancelled; `tasks` tracks them and the deliveries they started.
#[derive(Clone)]
pub(crate) struct Serving {
    until: CancellationToken,
    tasks: TaskTracker,
    /// A service's slots on this node (see [`pull`]).
    slots: Option<Arc<pull::Slots>>,
}

impl Serving {
    fn new(until: CancellationToken, spec: Option<&ServiceSpec>) -> Self {
        let slots = spec.map(|spec| Arc::new(pull::Slots::new(spec.concurrency)));
        Self { until, tasks: TaskTracker::new(), slots }
    }

    /// Runs `work` on `conn`'s tasks, tracked as this name's too.
    fn spawn<F>(&self, conn: &NatsConnection, work: F)
    where
        F: std::future::Future<Output = ()> + Send + 'static,
    {
        conn.tasks.spawn(self.tasks.track_future(work));
    }

    /// Ends the subscriptions and waits, at most [`DRAIN`], until what they
    /// received has been handled.
    async fn end(self) {
        self.until.cancel();
        self.tasks.close();
        if tokio::time::timeout(DRAIN, self.tasks.wait()).await.is_err() {
            tracing::warn!("{} deliveries still running after {DRAIN:?} go on in the background", self.tasks.len());
        }
    }
}

/// One node's connection to a NATS server.
pub(crate) struct NatsConnection {
    me: Weak<NatsConnection>,
    client: Client,
    js: async_nats::jetstream::Context,
    wire: Wire,
    /// The key-value buckets, on JetStream KV.
    buckets: Arc<buckets::NatsBuckets>,
    /// The rolecast queue group (`default` when the node has no group).
    group: String,
    /// The node's identity, as it was at connect time.
    node: NodeInfo,
    /// How the streams are kept.
    keeping: streams::Keeping,
    profile: String,
    inbound: Inbound,
    services: Mutex<BTreeMap<String, ServiceSpec>>,
    /// Jobs waiting in the queue for each name served, as the last job this
    /// node took said: what bounds a served name's `max_pending` here.
    waiting: Mutex<HashMap<String, u64>>,
    messages: Mutex<BTreeSet<String>>,
    /// The subscriptions and consumer of each name served, ended by
    /// cancelling its token (a child of `cancel`).
    serving: Mutex<HashMap<(Kind, String), Serving>>,
    /// Whether subscriptions are live (names registered later start at once).
    started: AtomicBool,
    /// Cancelled by `stop`: subscriptions and consumers end.
    cancel: CancellationToken,
    /// Subscription loops and in-flight deliveries.
    tasks: TaskTracker,
}

impl NatsConnection {
    async fn deliver(&self, envelope: Envelope) -> Result<Vec<u8>, Failure> {
        self.inbound.deliver(envelope).await
    }

    /// Answers calls to `name` (queue group `busbar`, one node answers).
    async fn serve_calls(self: &Arc<Self>, name: &str, serving: &Serving) -> Result<(), DriverError> {
        let subject = self.wire.call(name);
        let subscriber = self
            .client
            .queue_subscribe(subject.clone(), wire::CALL_GROUP.into())
            .await
            .map_err(|e| DriverError::from_cause(format!("subscribing to {subject}"), e))?;
        let name = name.to_string();
        serving.spawn(
            self,
            self.clone().pump(subscriber, serving.clone(), move |conn, msg| {
                let name = name.clone();
                async move { conn.answer_call(&name, msg).await }
            }),
        );
        Ok(())
    }

    async fn answer_call(&self, name: &str, msg: async_nats::Message) {
        let Some(reply) = msg.reply.clone() else {
            tracing::debug!(%name, "call without a reply subject ignored");
            return;
        };
        let result = match wire::caller_timeout(msg.headers.as_ref()) {
            Ok(timeout) => {
                let mut envelope =
                    Envelope::once(name, Mode::Call, msg.payload.to_vec(), wire::headers_from(msg.headers.as_ref()));
                envelope.deadline = timeout.map(crate::limits::deadline_in);
                self.deliver(envelope).await
            }
            Err(refused) => Err(refused),
        };
        let sent = match result {
            Ok(body) => {
                let size = body.len();
                match self.client.publish(reply.clone(), Bytes::from(body)).await {
                    Err(e) => {
                        let failure = Failure::new(
                            FailureClass::Failed,
                            format!("the reply of {size} bytes could not be sent: {e}"),
                        );
                        self.client.publish_with_headers(reply, wire::failure_headers(&failure), Bytes::new()).await
                    }
                    ok => ok,
                }
            }
            Err(failure) => {
                self.client.publish_with_headers(reply, wire::failure_headers(&failure), Bytes::new()).await
            }
        };
        if let Err(e) = sent {
            tracing::warn!(%name, "could not answer a call: {e}");
        }
    }

    /// Listens to events for `name`: every broadcast, and rolecasts for this node's group.
    async fn serve_events(self: &Arc<Self>, name: &str, serving: &Serving) -> Result<(), DriverError> {
        let broadcast = self.wire.event(name);
        let rolecast = self.wire.publish(name);
        let all = self
            .client
            .subscribe(broadcast.clone())
            .await
            .map_err(|e| DriverError::from_cause(format!("subscribing to {broadcast}"), e))?;
        let one = self
            .client
            .queue_subscribe(rolecast.clone(), self.group.clone())
            .await
            .map_err(|e| DriverError::from_cause(format!("subscribing to {rolecast}"), e))?;
        for (subscriber, mode) in [(all, Mode::Broadcast), (one, Mode::Rolecast)] {
            let name = name.to_string();
            serving.spawn(
                self,
                self.clone().pump(subscriber, serving.clone(), move |conn, msg| {
                    let envelope =
                        Envelope::once(&name, mode, msg.payload.to_vec(), wire::headers_from(msg.headers.as_ref()));
                    async move {
                        let _ = conn.deliver(envelope).await;
                    }
                }),
            );
        }
        Ok(())
    }

    /// Runs `handle` on its own task for every message of `subscriber`,
    /// until `serving` ends (the name is dropped or the connection stops),
    /// then leaves without losing a message already on its way (see
    /// [`LEAVE_QUOTA`]).
    async fn pump<F, Fut>(self: Arc<Self>, mut subscriber: async_nats::Subscriber, serving: Serving, handle: F)
    where
        F: Fn(Arc<Self>, async_nats::Message) -> Fut,
        Fut: std::future::Future<Output = ()> + Send + 'static,
    {
        let mut received: u64 = 0;
        loop {
            tokio::select! {
                () = serving.until.cancelled() => break,
                next = subscriber.next() => match next {
                    Some(msg) => {
                        received += 1;
                        serving.spawn(&self, handle(self.clone(), msg));
                    }
                    None => return,
                },
            }
        }
        // async-nats's `drain` forgets the subscription on its next poll,
        // before the server has confirmed the UNSUB, so a request the server
        // routed here just before is dropped and its caller times out.
        // Instead, ask the server to stop after `LEAVE_QUOTA` more messages:
        // both ends then stop at the same message. When the traffic is too
        // light to get there soon, or too heavy to stop by `LEAVE_AT_MOST`,
        // the subscription is drained (a message in flight at that moment is
        // unlikely, not impossible).
        if subscriber.unsubscribe_after(received + LEAVE_QUOTA).await.is_err() {
            return;
        }
        let until = tokio::time::Instant::now() + LEAVE_AT_MOST;
        let mut drained = false;
        loop {
            // Once drained, what the client still holds arrives, then the end.
            let wait = match drained {
                true => LEAVE_WAIT,
                false => LEAVE_WAIT.min(until.saturating_duration_since(tokio::time::Instant::now())),
            };
            match tokio::time::timeout(wait, subscriber.next()).await {
                Ok(Some(msg)) => serving.spawn(&self, handle(self.clone(), msg)),
                Ok(None) => return,
                Err(_) if !drained => {
                    drained = true;
                    if subscriber.drain().await.is_err() {
                        return;
                    }
                }
                Err(_) => return,
            }
            if !drained && tokio::time::Instant::now() >= until {
                drained = true;
                if subscriber.drain().await.is_err() {
                    return;
                }
            }
        }
    }

    /// Starts serving `name` (a service when `spec` is given), unless it is
    /// served already.
    async fn serve(self: &Arc<Self>, name: &str, spec: Option<&ServiceSpec>) -> Result<(), DriverError> {
        let kind = if spec.is_some() { Kind::Service } else { Kind::Message };
        let serving = {
            let mut all = crate::sync::lock(&self.serving);
            if all.contains_key(&(kind, name.to_string())) {
                return Ok(());
            }
            let serving = Serving::new(self.cancel.child_token(), spec);
            all.insert((kind, name.to_string()), serving.clone());
            serving
        };
        let served = match (spec, &serving.slots) {
            (Some(spec), Some(slots)) => match self.serve_calls(name, &serving).await {
                Ok(()) => dispatch::serve_queue(self, name, spec, slots, &serving).await,
                Err(e) => Err(e),
            },
            _ => self.serve_events(name, &serving).await,
        };
        if served.is_err() {
            self.unserve(kind, name).await;
        }
        served
    }

    /// Ends the subscriptions (and consumer) of `name`, once what they
    /// received has been handled.
    async fn unserve(&self, kind: Kind, name: &str) {
        let serving = crate::sync::lock(&self.serving).remove(&(kind, name.to_string()));
        if let Some(serving) = serving {
            serving.end().await;
        }
    }

    /// Waits until the server has seen our subscriptions: a message through
    /// the server to ourselves (a flush alone does not round-trip).
    async fn round_trip(&self) -> Result<(), DriverError> {
        let inbox = self.client.new_inbox();
        let mut sub = self
            .client
            .subscribe(inbox.clone())
            .await
            .map_err(|e| DriverError::from_cause("checking the server", e))?;
        self.client
            .publish(inbox, Bytes::new())
            .await
            .map_err(|e| DriverError::from_cause("checking the server", e))?;
        tokio::time::timeout(Duration::from_secs(10), sub.next())
            .await
            .map_err(|_| DriverError::TimedOut { what: "waiting 10 s for the NATS server".into() })?;
        Ok(())
    }

    /// Removes dead letters past `dead_max_age` now and every
    /// [`dead::TRIM_EVERY`], until the connection stops.
    async fn keep_dead_letters(self: Arc<Self>) {
        loop {
            if let Err(e) = dead::trim(&self).await {
                tracing::debug!("removing old dead letters: {e} (tried again in {:?})", dead::TRIM_EVERY);
            }
            tokio::select! {
                () = self.cancel.cancelled() => return,
                () = tokio::time::sleep(dead::TRIM_EVERY) => {}
            }
        }
    }

    fn me(&self) -> Result<Arc<Self>, DriverError> {
        self.me.upgrade().ok_or_else(|| DriverError::ConnectionLost { what: "using a closed connection".into() })
    }
}

fn request_failure(name: &str, error: async_nats::RequestError, timeout: Duration) -> Failure {
    use async_nats::RequestErrorKind as K;
    match error.kind() {
        K::NoResponders => Failure::not_found(name),
        K::MaxPayloadExceeded | K::InvalidSubject => {
            Failure::new(FailureClass::Invalid, format!("the call to `{name}` cannot be sent: {error}"))
        }
        K::TimedOut => {
            Failure::new(FailureClass::Timeout, format!("no reply from `{name}` within {}ms", timeout.as_millis()))
        }
        _ => Failure::new(FailureClass::Retry, format!("calling `{name}` over NATS failed: {error}")),
    }
}

fn publish_failure(what: &str, error: async_nats::PublishError) -> Failure {
    use async_nats::client::PublishErrorKind as K;
    let class = match error.kind() {
        K::MaxPayloadExceeded | K::InvalidSubject => FailureClass::Invalid,
        _ => FailureClass::Retry,
    };
    Failure::new(class, format!("{what} could not be sent over NATS: {error}"))
}

#[async_trait::async_trait]
impl Connection for NatsConnection {
    fn buckets(&self) -> Arc<dyn crate::keyvalue::Buckets> {
        self.buckets.clone()
    }

    fn is_connected(&self) -> bool {
        self.client.connection_state() == async_nats::connection::State::Connected
    }

    async fn start(&self) -> Result<(), DriverError> {
        let me = self.me()?;
        if self.started.swap(true, Ordering::SeqCst) {
            return Ok(());
        }
        let services: Vec<(String, ServiceSpec)> =
            crate::sync::lock(&self.services).iter().map(|(n, s)| (n.clone(), s.clone())).collect();
        let messages: Vec<String> = crate::sync::lock(&self.messages).iter().cloned().collect();
        for (name, spec) in &services {
            me.serve(name, Some(spec)).await?;
        }
        for name in &messages {
            me.serve(name, None).await?;
        }
        discovery::serve(&me).await?;
        self.tasks.spawn(me.clone().keep_dead_letters());
        self.round_trip().await
    }

    async fn stop(&self) -> Result<(), DriverError> {
        self.cancel.cancel();
        if let Some(left) = super::drain(&self.tasks).await {
            tracing::warn!(
                "{left} deliveries still running after {DRAIN:?}; their dispatches will be redelivered by JetStream"
            );
        }
        Ok(())
    }

    async fn close(&self) -> Result<(), DriverError> {
        if let Err(e) = tokio::time::timeout(Duration::from_secs(5), self.client.flush()).await.unwrap_or(Ok(())) {
            tracing::debug!("flushing the NATS connection: {e}");
        }
        Ok(())
    }

    async fn register_service(&self, name: &str, spec: &ServiceSpec) -> Result<(), DriverError> {
        let old = crate::sync::lock(&self.services).insert(name.into(), spec.clone());
        if self.started.load(Ordering::SeqCst) {
            match old {
                // Served already: each job reads the retry schedule when it
                // arrives; the slots change size; only the ack wait lives
                // on the server.
                Some(old) => {
                    if old.concurrency != spec.concurrency {
                        let serving = crate::sync::lock(&self.serving).get(&(Kind::Service, name.to_string())).cloned();
                        if let Some(slots) = serving.and_then(|s| s.slots) {
                            slots.resize(spec.concurrency);
                        }
                    }
                    if old.timeout != spec.timeout {
                        dispatch::update_consumer(self, name, spec).await?;
                    }
                }
                None => self.me()?.serve(name, Some(spec)).await?,
            }
        }
        Ok(())
    }

    async fn unregister_service(&self, name: &str) -> Result<(), DriverError> {
        crate::sync::lock(&self.services).remove(name);
        self.unserve(Kind::Service, name).await;
        Ok(())
    }

    async fn unregister_message(&self, name: &str) -> Result<(), DriverError> {
        crate::sync::lock(&self.messages).remove(name);
        self.unserve(Kind::Message, name).await;
        Ok(())
    }

    async fn register_message(&self, name: &str) -> Result<(), DriverError> {
        crate::sync::lock(&self.messages).insert(name.into());
        if self.started.load(Ordering::SeqCst) {
            self.me()?.serve(name, None).await?;
        }
        Ok(())
    }

    async fn request(&self, request: Request) -> Result<Vec<u8>, Failure> {
        let Request { name, payload, headers, timeout } = request;
        let name = name.as_str();
        let mut map = wire::headers_to(&headers);
        map.insert(wire::TIMEOUT_HEADER, wire::timeout_value(timeout).as_str());
        let request = async_nats::Request::new().payload(Bytes::from(payload)).headers(map).timeout(Some(timeout));
        let reply = self
            .client
            .send_request(self.wire.call(name), request)
            .await
            .map_err(|e| request_failure(name, e, timeout))?;
        match wire::failure_from(reply.headers.as_ref()) {
            Some(failure) => Err(failure),
            None => Ok(reply.payload.to_vec()),
        }
    }

    async fn enqueue(&self, request: Request) -> Result<Receipt, Failure> {
        dispatch::enqueue(self, request).await
    }

    async fn publish(&self, request: Request, fanout: Fanout) -> Result<(), Failure> {
        let Request { name, payload, headers, .. } = request;
        let name = name.as_str();
        let subject = match fanout {
            Fanout::All => self.wire.event(name),
            Fanout::PerGroup => self.wire.publish(name),
        };
        self.client
            .publish_with_headers(subject, wire::headers_to(&headers), Bytes::from(payload))
            .await
            .map_err(|e| publish_failure("the event", e))
    }

    async fn stats(&self) -> Result<Vec<NameStats>, DriverError> {
        discovery::stats(self).await
    }

    async fn nodes(&self) -> Result<Vec<NodeInfo>, DriverError> {
        discovery::nodes(self).await
    }

    async fn services(&self) -> Result<Vec<ServiceInfo>, DriverError> {
        discovery::services(self).await
    }

    async fn dead_letters(&self) -> Result<Vec<DeadLetter>, DriverError> {
        dead::dead_letters(self).await
    }

    async fn replay_dead_letters(&self, name: &str) -> Result<usize, DriverError> {
        dead::take_dead_letters(self, name, true).await
    }

    async fn drop_dead_letters(&self, name: &str) -> Result<usize, DriverError> {
        dead::take_dead_letters(self, name, false).await
    }
}
