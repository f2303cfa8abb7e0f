//! Taking one service's jobs off its work queue, at the handler's pace.
//!
//! The node asks JetStream for no more jobs than it has free slots — the
//! service's `concurrency`, one slot per job from the moment it is asked
//! for until its outcome is recorded — so a backlog waits on the server,
//! not in the node, and drains at the pace the handler runs, on one node or
//! many. A job taken is never refused by the node's own admission (see
//! [`crate::delivery::Envelope::waits_for_slot`]), so load never uses up an
//! attempt.
//!
//! Each pull request asks the server for idle heartbeats. When nothing
//! (job, heartbeat or status) arrives for [`SILENCE`] while a request is
//! out, the request is taken as lost (its server was killed, its leader
//! moved) and asked again; a refusal (no leader yet, the consumer missing)
//! is retried after at most [`MAX_BACKOFF`], re-creating the consumer when it
//! may be gone. So a node takes work again within about two seconds of its
//! consumer being available. A stall is said once, at warn, with its cause,
//! and shown in the node's metrics (`busbar_queue_stalled`) until it ends.

use super::{NatsConnection, Serving, dispatch};
use async_nats::StatusCode;
use async_nats::jetstream::consumer::PullConsumer;
use async_nats::jetstream::consumer::pull::BatchConfig;
use futures_util::StreamExt;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;

/// How long a pull request waits on the server for jobs before it ends
/// (and is asked again): the cost of an idle service is one request per
/// this period per node.
const EXPIRES: Duration = Duration::from_secs(5);
/// How often the server says a waiting pull request is alive.
const HEARTBEAT: Duration = Duration::from_millis(500);
/// Silence after which a pull request is taken as lost.
const SILENCE: Duration = Duration::from_millis(1500);
/// The first wait before asking again after a refusal; it doubles up to
/// [`MAX_BACKOFF`].
const FIRST_BACKOFF: Duration = Duration::from_millis(50);
/// The longest wait before asking again.
const MAX_BACKOFF: Duration = Duration::from_millis(500);
/// The most jobs one pull request asks for.
const MAX_BATCH: usize = 256;
/// How long creating the consumer may take before it is tried again.
const CREATE_TIMEOUT: Duration = Duration::from_secs(1);
/// How long pull requests may go unanswered before the consumer is taken as
/// gone and created again (an election takes a few seconds; a deleted
/// consumer never comes back by itself).
const RECREATE_AFTER: Duration = Duration::from_secs(3);
/// How long a queue being left still takes jobs already on their way.
const LEAVE_WAIT: Duration = Duration::from_millis(250);

/// The slots of one service on this node: `concurrency` permits, resized
/// when the handler's `concurrency` changes.
pub(crate) struct Slots {
    permits: Arc<Semaphore>,
    size: Mutex<u32>,
}

impl Slots {
    pub(crate) fn new(concurrency: u32) -> Self {
        Self { permits: Arc::new(Semaphore::new(concurrency as usize)), size: Mutex::new(concurrency) }
    }

    /// Makes the slots `to`: more at once, fewer as jobs end.
    pub(crate) fn resize(&self, to: u32) {
        let mut size = crate::sync::lock(&self.size);
        if to > *size {
            self.permits.add_permits((to - *size) as usize);
        } else if to < *size {
            let (permits, fewer) = (self.permits.clone(), *size - to);
            tokio::spawn(async move {
                if let Ok(taken) = permits.acquire_many_owned(fewer).await {
                    taken.forget();
                }
            });
        }
        *size = to;
    }
}

/// Why the loop is not taking work, since when.
struct Stall {
    since: Instant,
}

/// The pull loop of one service on one node.
pub(super) struct Puller {
    conn: Arc<NatsConnection>,
    name: String,
    consumer: Option<PullConsumer>,
    inbox: async_nats::Subject,
    jobs: async_nats::Subscriber,
    slots: Arc<Semaphore>,
    /// One slot per job asked for and not yet arrived (or given up).
    asked: Vec<OwnedSemaphorePermit>,
    /// When the server last said something about our requests.
    heard: Instant,
    /// No asking before this (after a refusal).
    not_before: Option<Instant>,
    backoff: Duration,
    stall: Option<Stall>,
}

impl Puller {
    /// A loop for service `name`, taking jobs through `consumer` when it
    /// exists already (else the loop creates it).
    pub(super) async fn new(
        conn: &Arc<NatsConnection>,
        name: &str,
        consumer: Option<PullConsumer>,
        slots: &Slots,
    ) -> Result<Self, async_nats::SubscribeError> {
        let inbox = async_nats::Subject::from(conn.client.new_inbox());
        let jobs = conn.client.subscribe(inbox.clone()).await?;
        Ok(Self {
            conn: conn.clone(),
            name: name.to_string(),
            consumer,
            inbox,
            jobs,
            slots: slots.permits.clone(),
            asked: Vec::new(),
            heard: Instant::now(),
            not_before: None,
            backoff: FIRST_BACKOFF,
            stall: None,
        })
    }

    /// Takes jobs until `serving` ends, then leaves (see [`Puller::leave`]).
    pub(super) async fn run(mut self, serving: Serving) {
        loop {
            if self.consumer.is_none() && self.not_before.is_none() {
                self.create_consumer().await;
            }
            let may_ask = self.consumer.is_some() && self.not_before.is_none();
            let not_before = self.not_before.unwrap_or_else(Instant::now);
            let silent_at = self.heard + SILENCE;
            tokio::select! {
                biased;
                () = serving.until.cancelled() => break,
                next = self.jobs.next() => match next {
                    Some(msg) => self.received(msg, &serving).await,
                    None => return,
                },
                () = tokio::time::sleep_until(not_before), if self.not_before.is_some() => self.not_before = None,
                () = tokio::time::sleep_until(silent_at), if !self.asked.is_empty() => {
                    self.refused(format!("the server said nothing for {}ms about a pending pull request", SILENCE.as_millis()));
                }
                permit = self.slots.clone().acquire_owned(), if may_ask => match permit {
                    Ok(permit) => self.ask(permit).await,
                    Err(_closed) => return,
                },
            }
        }
        self.leave(&serving).await;
    }

    /// Asks for as many jobs as there are free slots (`first` and the others free now).
    async fn ask(&mut self, first: OwnedSemaphorePermit) {
        let mut permits = vec![first];
        while permits.len() < MAX_BATCH {
            match self.slots.clone().try_acquire_owned() {
                Ok(permit) => permits.push(permit),
                Err(_) => break,
            }
        }
        let Some(consumer) = &self.consumer else { return };
        let request = BatchConfig {
            batch: permits.len(),
            expires: Some(EXPIRES),
            idle_heartbeat: HEARTBEAT,
            ..BatchConfig::default()
        };
        match consumer.request_batch(request, self.inbox.clone()).await {
            Ok(()) => {
                if self.asked.is_empty() {
                    self.heard = Instant::now();
                }
                self.asked.extend(permits);
            }
            Err(e) => self.refused(format!("a pull request could not be sent: {e}")),
        }
    }

    /// One message on the inbox: a job, a heartbeat, or the end of a request.
    async fn received(&mut self, msg: async_nats::Message, serving: &Serving) {
        let status = msg.status.unwrap_or(StatusCode::OK);
        if status == StatusCode::OK {
            self.heard();
            let permit = match self.asked.pop() {
                Some(permit) => permit,
                // A job of a request given up as lost: it still gets a slot.
                None => match self.slots.clone().acquire_owned().await {
                    Ok(permit) => permit,
                    Err(_closed) => return,
                },
            };
            let job = async_nats::jetstream::Message { message: msg, context: self.conn.js.clone() };
            if let Ok(info) = job.info() {
                self.conn.inbound.queue_state(&self.name, None, Some(info.pending));
                let mut waiting = crate::sync::lock(&self.conn.waiting);
                match waiting.get_mut(&self.name) {
                    Some(count) => *count = info.pending,
                    None => {
                        waiting.insert(self.name.clone(), info.pending);
                    }
                }
            }
            let (conn, name) = (self.conn.clone(), self.name.clone());
            serving.spawn(&self.conn, async move {
                dispatch::run(&conn, &name, job).await;
                drop(permit);
            });
            return;
        }
        let description = msg.description.as_deref().unwrap_or_default().to_string();
        match status {
            StatusCode::IDLE_HEARTBEAT => self.heard(),
            StatusCode::TIMEOUT | StatusCode::REQUEST_TERMINATED => {
                // The request ended; the jobs it did not bring free their slots.
                let unfilled = msg
                    .headers
                    .as_ref()
                    .and_then(|h| h.get("Nats-Pending-Messages"))
                    .and_then(|v| v.as_str().parse::<usize>().ok())
                    .unwrap_or(self.asked.len());
                self.asked.truncate(self.asked.len().saturating_sub(unfilled));
                if status == StatusCode::TIMEOUT {
                    self.heard();
                } else {
                    if description.contains("Consumer Deleted") {
                        self.consumer = None;
                    }
                    self.refused(format!("the server ended a pull request: {status} {description}"));
                }
            }
            StatusCode::NO_RESPONDERS => {
                // Nobody serves the consumer: no leader yet, or it is gone.
                if self.stall.as_ref().is_some_and(|s| s.since.elapsed() >= RECREATE_AFTER) {
                    self.consumer = None;
                }
                self.refused("no server answers for the consumer (no leader elected yet, or it was deleted)".into());
            }
            other => self.refused(format!("the server answered a pull request with {other} {description}")),
        }
    }

    /// The server answered: the loop works.
    fn heard(&mut self) {
        self.heard = Instant::now();
        self.backoff = FIRST_BACKOFF;
        if let Some(stall) = self.stall.take() {
            tracing::info!(name = %self.name, "taking dispatches again after {:?}", stall.since.elapsed());
            self.conn.inbound.queue_state(&self.name, Some(false), None);
        }
    }

    /// Outstanding requests are given up; ask again after a backoff.
    fn refused(&mut self, why: String) {
        self.asked.clear();
        self.not_before = Some(Instant::now() + self.backoff);
        self.backoff = (self.backoff * 2).min(MAX_BACKOFF);
        if self.stall.is_none() {
            tracing::warn!(
                name = %self.name,
                "this node cannot take dispatches of `{}` now: {why}; it keeps asking",
                self.name
            );
            self.stall = Some(Stall { since: Instant::now() });
            self.conn.inbound.queue_state(&self.name, Some(true), None);
        } else {
            tracing::debug!(name = %self.name, "still cannot take dispatches: {why}");
        }
    }

    /// Creates (or finds) the service's durable consumer.
    async fn create_consumer(&mut self) {
        let spec = crate::sync::lock(&self.conn.services).get(&self.name).cloned();
        let Some(spec) = spec else { return };
        match tokio::time::timeout(CREATE_TIMEOUT, dispatch::consumer(&self.conn, &self.name, &spec)).await {
            Ok(Ok(consumer)) => self.consumer = Some(consumer),
            Ok(Err(e)) => self.refused(format!("its consumer could not be created: {e}")),
            Err(_) => self.refused(format!("creating its consumer took more than {CREATE_TIMEOUT:?}")),
        }
    }

    /// Stops asking, then still runs the jobs already on their way (a job
    /// the server sent that nobody took would wait out its ack wait, and
    /// come back with one attempt used).
    async fn leave(mut self, serving: &Serving) {
        let _ = self.jobs.unsubscribe().await;
        while let Ok(Some(msg)) = tokio::time::timeout(LEAVE_WAIT, self.jobs.next()).await {
            if msg.status.is_none() || msg.status == Some(StatusCode::OK) {
                self.received(msg, serving).await;
            }
        }
    }
}
