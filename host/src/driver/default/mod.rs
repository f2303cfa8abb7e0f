//! The `default` driver: an in-process bus. Every node connected through the
//! same [`DefaultDriver`] value shares one hub, so several nodes can live in
//! one process (as the tests do). Deliveries follow the seed's semantics:
//! call with a timeout, dispatch retried in the background on the service's
//! schedule with exhausted work kept in a dead-letter list (bounded in count
//! and bytes), broadcast to every listener, rolecast to one listener per
//! group. Pending dispatches are bounded per name (`max_pending`) and per
//! node, and wait for a free slot of their handler rather than fail as
//! `overloaded`. A hub opened on a state directory ([`DefaultDriver::durable`])
//! stores every accepted dispatch before `dispatch` returns, with its
//! attempt number and due time, and its dead letters ([`state`]): a
//! restart runs each one again at its time. Its key-value buckets live in
//! the same database ([`buckets`]), or in one in memory without a state.

mod buckets;
pub mod state;

use super::{
    Connection, DRAIN, DeadLetter, DispatchOutcome, Driver, DriverError, Fanout, Inbound, Receipt, ServiceSpec,
};
use crate::config::ConnectionConfig;
use crate::delivery::Kind;
use crate::delivery::failure::{Failure, FailureClass};
use crate::delivery::{self, Envelope, Headers, Mode, Next, Request};
use crate::stats::{NameStats, NodeInfo, ServiceInfo, rfc3339};
use rustc_hash::FxHashMap;
use std::collections::{BTreeMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, SystemTime};
use tokio_util::task::TaskTracker;

/// Dead letters kept per hub before the oldest are dropped (with a warning
/// and a count).
pub const DEAD_LETTER_LIMIT: usize = 10_000;
/// Bytes of dead letters (payloads, headers, messages) kept per hub before
/// the oldest are dropped (with a warning and a count).
pub const DEAD_LETTER_BYTES: usize = 64 << 20;

/// Dispatches one node may have pending (queued, running or between
/// attempts) on the hub, unless its `[bus] setting max_pending` says
/// otherwise.
pub const NODE_MAX_PENDING: u32 = 100_000;

/// The in-process driver. Clone it to connect several nodes to one hub.
#[derive(Clone, Default)]
pub struct DefaultDriver {
    hub: Arc<Hub>,
}

impl DefaultDriver {
    /// A driver with a hub of its own.
    pub fn new() -> Self {
        Self::default()
    }

    /// A driver with a hub of its own that keeps accepted dispatches and
    /// dead letters in the state directory `dir`, and runs those a former
    /// process left there once the first node connects and starts.
    pub fn durable(dir: &std::path::Path) -> Result<Self, state::StateError> {
        let state = state::State::open(dir)?;
        Ok(Self { hub: Arc::new(Hub { state: Some(state), ..Hub::default() }) })
    }

    /// A driver with a hub of its own that keeps at most `count` dead
    /// letters and `bytes` of them (defaults: [`DEAD_LETTER_LIMIT`] and
    /// [`DEAD_LETTER_BYTES`]).
    pub fn with_dead_letter_limits(count: usize, bytes: usize) -> Self {
        let hub = Hub {
            dead: Mutex::new(DeadLetters { limit: count, max_bytes: bytes, ..DeadLetters::default() }),
            ..Hub::default()
        };
        Self { hub: Arc::new(hub) }
    }
}

#[derive(Default)]
struct Hub {
    members: RwLock<Vec<Arc<Member>>>,
    /// Round-robin cursor for choosing among members serving a name.
    cursor: AtomicUsize,
    dead: Mutex<DeadLetters>,
    next_id: AtomicU64,
    /// Dispatches pending per name.
    pending: Mutex<FxHashMap<String, u32>>,
    /// Where accepted dispatches and dead letters are kept, if on disk.
    state: Option<state::State>,
    /// Whether the dispatches found in `state` at open were resumed.
    resumed: std::sync::atomic::AtomicBool,
    /// The buckets of a hub without a state, in memory (opened at first use).
    memory: std::sync::OnceLock<Result<state::State, String>>,
}

/// The hub's dead letters, oldest first, their size and their limits.
struct DeadLetters {
    letters: VecDeque<DeadLetter>,
    bytes: usize,
    limit: usize,
    max_bytes: usize,
}

impl Default for DeadLetters {
    fn default() -> Self {
        Self { letters: VecDeque::new(), bytes: 0, limit: DEAD_LETTER_LIMIT, max_bytes: DEAD_LETTER_BYTES }
    }
}

impl DeadLetters {
    /// The bytes `letter` holds that a sender chose (payload, headers, message).
    fn size(letter: &DeadLetter) -> usize {
        let headers: usize = letter.headers.iter().map(|(k, v)| k.len() + v.len()).sum();
        letter.payload.len() + headers + letter.failure.message.len() + letter.name.len() + letter.id.len()
    }

    /// Adds `letter`; returns the oldest letters dropped to stay within the
    /// limits (never the new one).
    fn push(&mut self, letter: DeadLetter) -> Vec<DeadLetter> {
        self.bytes += Self::size(&letter);
        self.letters.push_back(letter);
        let mut dropped = Vec::new();
        while self.letters.len() > 1 && (self.letters.len() > self.limit || self.bytes > self.max_bytes) {
            let Some(old) = self.letters.pop_front() else { break };
            self.bytes -= Self::size(&old);
            dropped.push(old);
        }
        dropped
    }

    /// Removes and returns the letters of `name`.
    fn take(&mut self, name: &str) -> Vec<DeadLetter> {
        let (taken, kept): (Vec<_>, Vec<_>) =
            std::mem::take(&mut self.letters).into_iter().partition(|l| l.name == name);
        self.letters = kept.into();
        self.bytes = self.letters.iter().map(Self::size).sum();
        taken
    }
}

/// What the hub knows of a service a member serves.
#[derive(Clone)]
struct Served {
    /// The retry schedule.
    retry: Arc<[Duration]>,
    /// The handler's `max_payload`.
    max_payload: u64,
    /// The handler's `max_pending`.
    max_pending: u32,
}

/// One connection's presence on the hub.
struct Member {
    id: u64,
    group: String,
    /// The node behind the connection, held weakly: the node owns its
    /// connections, so a strong reference here would keep it alive forever.
    inbound: Inbound,
    services: RwLock<FxHashMap<String, Served>>,
    messages: RwLock<HashSet<String>>,
}

impl Member {
    /// Delivers to the node, if it still exists.
    async fn deliver(&self, envelope: Envelope) -> Result<Vec<u8>, Failure> {
        self.inbound.deliver(envelope).await
    }

    fn serves(&self, kind: Kind, name: &str) -> bool {
        match kind {
            Kind::Service => crate::sync::read(&self.services).contains_key(name),
            Kind::Message => crate::sync::read(&self.messages).contains(name),
        }
    }
}

impl Hub {
    /// Every node serving `name`, once per node even when the node reaches
    /// this hub through several connections.
    fn serving(&self, kind: Kind, name: &str) -> Vec<Arc<Member>> {
        let members = crate::sync::read(&self.members);
        let mut serving: Vec<Arc<Member>> = Vec::new();
        for m in members.iter().filter(|m| m.serves(kind, name)) {
            if !serving.iter().any(|s| s.inbound.same_node(&m.inbound)) {
                serving.push(m.clone());
            }
        }
        serving
    }

    /// One member serving `name`, in turn.
    fn pick(&self, kind: Kind, name: &str) -> Option<Arc<Member>> {
        let members = crate::sync::read(&self.members);
        let n = members.len();
        let start = self.cursor.fetch_add(1, Ordering::Relaxed);
        (0..n).map(|i| &members[(start + i) % n]).find(|m| m.serves(kind, name)).cloned()
    }

    /// Keeps `letter` (in the state if there is one, where it also ends the
    /// dispatch), dropping the oldest past the limits; `sent` (the node that
    /// wrote it) counts each one dropped.
    async fn dead_letter(&self, letter: DeadLetter, sent: &Inbound) {
        if let Some(left_out) = crate::ops::lograte::line("dead-lettered", &letter.name) {
            let (name, id, attempts) = (&letter.name, &letter.id, letter.attempts);
            tracing::warn!(%name, %id, attempts, "dispatch dead-lettered: {}{left_out}", letter.failure);
        }
        let (dropped, limit, max_bytes) = match &self.state {
            Some(state) => {
                let (name, id) = (letter.name.clone(), letter.id.clone());
                let dropped = state.bury(letter).await.unwrap_or_else(|e| {
                    tracing::error!(%name, %id, "could not keep a dead letter: {e}; the dispatch runs again after a restart");
                    Vec::new()
                });
                (dropped, DEAD_LETTER_LIMIT, DEAD_LETTER_BYTES)
            }
            None => {
                let mut dead = crate::sync::lock(&self.dead);
                let dropped = dead.push(letter);
                (dropped, dead.limit, dead.max_bytes)
            }
        };
        for old in dropped {
            tracing::warn!(
                name = %old.name,
                id = %old.id,
                "dead letters past {limit} or {}: dropped the oldest",
                crate::units::human_bytes(max_bytes as u64)
            );
            sent.dead_letters_dropped(&old.name, 1);
        }
    }

    /// The retry schedule of service `name` as a member serving it says
    /// (none if no member serves it now).
    fn schedule_of(&self, name: &str) -> Arc<[Duration]> {
        self.pick(Kind::Service, name)
            .and_then(|m| crate::sync::read(&m.services).get(name).map(|s| s.retry.clone()))
            .unwrap_or_else(|| Arc::from([]))
    }

    /// Removes and returns the dead letters of `name`.
    async fn take_dead(&self, name: &str) -> Result<Vec<DeadLetter>, DriverError> {
        match &self.state {
            Some(state) => Ok(state.take_dead_letters(name).await?),
            None => Ok(crate::sync::lock(&self.dead).take(name)),
        }
    }

    /// Records a step of dispatch `id` in the state, if there is one. A
    /// failure to record is logged: the dispatch may run again after a
    /// restart (at least once), it is never lost.
    async fn record(&self, id: &str, name: &str, step: Step) {
        let Some(state) = &self.state else { return };
        let recorded = match step {
            Step::Done => state.done(id).await,
            Step::Retry { attempt, due } => state.retry(id, attempt, due).await,
        };
        if let Err(e) = recorded {
            tracing::error!(%name, %id, "could not record a dispatch's progress: {e}; it may run again after a restart");
        }
    }

    /// Runs a dispatch to completion: attempts on the service's schedule,
    /// then success or a dead letter, which the node that `sent` it counts.
    async fn run_dispatch(self: Arc<Self>, sent: Inbound, dispatch: Dispatch) -> DispatchOutcome {
        let Dispatch { id, name, payload, headers, retry, mut attempt, due } = dispatch;
        let mut history = Vec::new();
        if let Ok(wait) = due.duration_since(SystemTime::now()) {
            tokio::time::sleep(wait).await;
        }
        loop {
            let result = match self.pick(Kind::Service, &name) {
                Some(member) => {
                    let mut envelope =
                        Envelope::dispatch_attempt(&name, payload.clone(), headers.clone(), attempt, &retry);
                    // Flow control: an accepted dispatch waits for its
                    // handler's slot, at the handler's pace, instead of
                    // using up an attempt as `overloaded`.
                    envelope.waits_for_slot = true;
                    member.deliver(envelope).await
                }
                None => Err(Failure::not_found(&name)),
            };
            let failure = match result {
                Ok(reply) => {
                    self.record(&id, &name, Step::Done).await;
                    return DispatchOutcome { id, name, attempts: attempt, result: Ok(reply), history };
                }
                Err(failure) => failure,
            };
            history.push(failure.clone());
            match delivery::next_after(&retry, attempt, &failure) {
                Next::Retry(delay) => {
                    tracing::debug!(%name, %id, attempt, ?delay, "dispatch attempt failed, retrying: {failure}");
                    let due = SystemTime::now() + delay;
                    self.record(&id, &name, Step::Retry { attempt: attempt + 1, due }).await;
                    tokio::time::sleep(delay).await;
                    attempt += 1;
                }
                Next::DeadLetter => {
                    self.dead_letter(
                        DeadLetter {
                            id: id.clone(),
                            name: name.clone(),
                            payload,
                            headers,
                            attempts: attempt,
                            failure: failure.clone(),
                            at: rfc3339(SystemTime::now()),
                        },
                        &sent,
                    )
                    .await;
                    sent.dead_lettered(&name);
                    return DispatchOutcome { id, name, attempts: attempt, result: Err(failure), history };
                }
            }
        }
    }
}

/// A dispatch counted as pending, for its name on the hub and for the node
/// that sent it, until dropped (when its outcome is known).
struct Pending {
    hub: Arc<Hub>,
    /// The sending node, whose `busbar_queue_pending` shows the count.
    inbound: Inbound,
    /// Empty while only the node's count holds it.
    name: String,
    node: Arc<AtomicUsize>,
}

impl Drop for Pending {
    fn drop(&mut self) {
        self.node.fetch_sub(1, Ordering::AcqRel);
        if self.name.is_empty() {
            return;
        }
        let mut pending = crate::sync::lock(&self.hub.pending);
        let left = pending.get_mut(&self.name).map_or(0, |n| {
            *n = n.saturating_sub(1);
            *n
        });
        if left == 0 {
            pending.remove(&self.name);
        }
        drop(pending);
        self.inbound.queue_state(&self.name, None, Some(u64::from(left)));
    }
}

/// A dispatch the hub runs.
struct Dispatch {
    id: String,
    name: String,
    payload: Vec<u8>,
    headers: Headers,
    /// The service's retry schedule when it was accepted.
    retry: Arc<[Duration]>,
    /// The attempt to run first (from 1), and when.
    attempt: u32,
    due: SystemTime,
}

impl Dispatch {
    /// The dispatch of stored `job`; `schedule` is the handler's retry
    /// schedule now, for a job stored without one.
    fn resumed(job: state::Job, schedule: impl FnOnce() -> Arc<[Duration]>) -> Self {
        let state::Job { id, name, payload, headers, retry, attempt, due } = job;
        let retry = retry.map_or_else(schedule, Into::into);
        Self { id, name, payload, headers, retry, attempt, due }
    }
}

/// A step of a dispatch that the state records.
enum Step {
    Done,
    Retry { attempt: u32, due: SystemTime },
}

impl DefaultDriver {
    /// Joins the hub as the node behind `inbound` (the node calls the
    /// connection directly: no boxed future per call).
    pub(crate) fn connect_local(
        &self,
        config: &ConnectionConfig,
        inbound: Inbound,
    ) -> Result<Arc<DefaultConnection>, DriverError> {
        let Settings { max_pending, bucket_size } = settings(&config.setting)?;
        let member = Arc::new(Member {
            id: self.hub.next_id.fetch_add(1, Ordering::Relaxed),
            group: config.group.clone(),
            inbound,
            services: RwLock::default(),
            messages: RwLock::default(),
        });
        Ok(Arc::new(DefaultConnection {
            hub: self.hub.clone(),
            member,
            tasks: TaskTracker::new(),
            pending: Arc::default(),
            max_pending,
            bucket_size,
        }))
    }
}

/// The buckets of the state in `dir` as `busbar kv` reaches them, beside a
/// node that may be running on it, with the `[bus] setting` of `setting`.
pub fn state_buckets(
    dir: &std::path::Path,
    setting: &toml::Table,
) -> Result<Arc<dyn crate::keyvalue::Buckets>, DriverError> {
    let Settings { bucket_size, .. } = settings(setting)?;
    Ok(Arc::new(buckets::SqlBuckets::of_dir(dir, bucket_size)))
}

/// The default driver's `[bus] setting` keys.
struct Settings {
    /// Dispatches one node may have pending ([`NODE_MAX_PENDING`] unless set).
    max_pending: u32,
    /// Bytes one key-value bucket may hold.
    bucket_size: u64,
}

fn settings(setting: &toml::Table) -> Result<Settings, DriverError> {
    let mut settings = Settings { max_pending: NODE_MAX_PENDING, bucket_size: crate::keyvalue::DEFAULT_BUCKET_BYTES };
    for (key, value) in setting {
        match key.as_str() {
            "max_pending" => {
                settings.max_pending = value
                    .as_integer()
                    .and_then(|n| u32::try_from(n).ok())
                    .filter(|n| (1..=crate::limits::MAX_PENDING).contains(n))
                    .ok_or_else(|| {
                        DriverError::Setting(format!(
                            "`max_pending` must be a whole number from 1 to {}, not {value}",
                            crate::limits::MAX_PENDING
                        ))
                    })?;
            }
            "bucket_size" => {
                settings.bucket_size = crate::keyvalue::bucket_size(value).map_err(DriverError::Setting)?;
            }
            _ => {
                return Err(DriverError::Setting(format!(
                    "`{key}` is unknown: the default driver takes `max_pending` and `bucket_size`"
                )));
            }
        }
    }
    Ok(settings)
}

#[async_trait::async_trait]
impl Driver for DefaultDriver {
    async fn connect(&self, config: &ConnectionConfig, inbound: Inbound) -> Result<Arc<dyn Connection>, DriverError> {
        Ok(self.connect_local(config, inbound)?)
    }
}

/// A node's connection to the in-process hub.
pub(crate) struct DefaultConnection {
    hub: Arc<Hub>,
    member: Arc<Member>,
    /// Events and dispatches this connection sent and that still run, so
    /// `close` can let them finish.
    tasks: TaskTracker,
    /// Dispatches this node sent that are pending, and how many may be.
    pending: Arc<AtomicUsize>,
    max_pending: u32,
    /// Bytes one bucket may hold (`[bus] setting bucket_size`).
    bucket_size: u64,
}

impl DefaultConnection {
    fn leave(&self) {
        crate::sync::write(&self.hub.members).retain(|m| m.id != self.member.id);
    }

    /// Counts one more dispatch to `name` as pending, unless `name` already
    /// has `max` pending or this node its own maximum: then the dispatch is
    /// refused as `overloaded`, so no storm of dispatches can grow the
    /// process without bound.
    fn reserve(&self, name: &str, max: u32) -> Result<Pending, Failure> {
        self.count_pending(name, Some(max))
    }

    /// [`DefaultConnection::reserve`], or with `max` `None` counting a
    /// dispatch already accepted (one resumed from the state) whatever the
    /// bounds.
    fn count_pending(&self, name: &str, max: Option<u32>) -> Result<Pending, Failure> {
        let sent = self.pending.fetch_add(1, Ordering::AcqRel);
        // Counts for the node now; for `name` once that is counted too.
        let mut counted = Pending {
            hub: self.hub.clone(),
            inbound: self.member.inbound.clone(),
            name: String::new(),
            node: self.pending.clone(),
        };
        if max.is_some() && sent >= self.max_pending as usize {
            return Err(Failure::new(
                FailureClass::Overloaded,
                format!(
                    "this node already has {} dispatches pending on the in-process bus, its maximum (`[bus] setting max_pending`); the dispatch to `{name}` was not queued — send it again later",
                    self.max_pending
                ),
            ));
        }
        let mut pending = crate::sync::lock(&self.hub.pending);
        let count = pending.entry(name.to_string()).or_default();
        if let Some(max) = max.filter(|max| *count >= *max) {
            return Err(Failure::new(
                FailureClass::Overloaded,
                format!(
                    "`{name}` already has {max} dispatches pending, its `max_pending`; the dispatch was not queued — send it again later"
                ),
            ));
        }
        *count += 1;
        let now = u64::from(*count);
        drop(pending);
        self.member.inbound.queue_state(name, None, Some(now));
        counted.name = name.to_string();
        Ok(counted)
    }

    /// Runs `dispatch` on the hub, counted as pending until its outcome,
    /// which the receiver gets.
    fn spawn_dispatch(&self, dispatch: Dispatch, pending: Pending) -> tokio::sync::oneshot::Receiver<DispatchOutcome> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        let job = self.hub.clone().run_dispatch(self.member.inbound.clone(), dispatch);
        self.tasks.spawn(async move {
            let outcome = job.await;
            drop(pending);
            let _ = tx.send(outcome);
        });
        rx
    }

    /// Runs the dispatches a former process left in the state, each at its
    /// due time, once per hub (by the first node that starts on it).
    async fn resume(&self) -> Result<(), DriverError> {
        let Some(state) = &self.hub.state else { return Ok(()) };
        if self.hub.resumed.swap(true, Ordering::AcqRel) {
            return Ok(());
        }
        let jobs = state.jobs().await?;
        if !jobs.is_empty() {
            tracing::info!(dir = %state.dir().display(), "resuming {} dispatches accepted before the restart", jobs.len());
        }
        for job in jobs {
            let Ok(pending) = self.count_pending(&job.name, None) else { continue };
            let name = job.name.clone();
            let dispatch = Dispatch::resumed(job, || self.hub.schedule_of(&name));
            drop(self.spawn_dispatch(dispatch, pending));
        }
        Ok(())
    }

    /// Calls the service `request` names on a node serving it, in turn.
    pub(crate) async fn call(&self, request: Request) -> Result<Vec<u8>, Failure> {
        let Request { name, payload, headers, timeout } = request;
        let Some(member) = self.hub.pick(Kind::Service, &name) else { return Err(Failure::not_found(&name)) };
        let mut envelope = Envelope::once(name, Mode::Call, payload, headers);
        envelope.deadline = Some(crate::limits::deadline_in(timeout));
        member.deliver(envelope).await
    }
}

#[async_trait::async_trait]
impl Connection for DefaultConnection {
    fn buckets(&self) -> Arc<dyn crate::keyvalue::Buckets> {
        Arc::new(buckets::SqlBuckets::of_hub(self.hub.clone(), self.bucket_size))
    }

    async fn start(&self) -> Result<(), DriverError> {
        {
            let mut members = crate::sync::write(&self.hub.members);
            if !members.iter().any(|m| m.id == self.member.id) {
                members.push(self.member.clone());
            }
        }
        // Its names are registered by now: what waited in the state runs.
        self.resume().await
    }

    async fn stop(&self) -> Result<(), DriverError> {
        self.leave();
        Ok(())
    }

    async fn close(&self) -> Result<(), DriverError> {
        self.leave();
        if let Some(left) = super::drain(&self.tasks).await {
            tracing::warn!(
                "{left} in-process events or dispatches still running after {DRAIN:?} are abandoned{}",
                if self.hub.state.is_some() {
                    " (the dispatches stay in the state and run after a restart)"
                } else {
                    " (set `[node] state` or use the nats driver for durable dispatch)"
                }
            );
        }
        Ok(())
    }

    async fn register_service(&self, name: &str, spec: &ServiceSpec) -> Result<(), DriverError> {
        let served = Served {
            retry: spec.retry.as_slice().into(),
            max_payload: spec.max_payload,
            max_pending: spec.max_pending,
        };
        crate::sync::write(&self.member.services).insert(name.into(), served);
        Ok(())
    }

    async fn register_message(&self, name: &str) -> Result<(), DriverError> {
        crate::sync::write(&self.member.messages).insert(name.into());
        Ok(())
    }

    async fn unregister_service(&self, name: &str) -> Result<(), DriverError> {
        crate::sync::write(&self.member.services).remove(name);
        Ok(())
    }

    async fn unregister_message(&self, name: &str) -> Result<(), DriverError> {
        crate::sync::write(&self.member.messages).remove(name);
        Ok(())
    }

    async fn request(&self, request: Request) -> Result<Vec<u8>, Failure> {
        self.call(request).await
    }

    async fn enqueue(&self, request: Request) -> Result<Receipt, Failure> {
        let Request { name, payload, headers, .. } = request;
        let member = self.hub.pick(Kind::Service, &name).ok_or_else(|| Failure::not_found(&name))?;
        let served = crate::sync::read(&member.services).get(name.as_str()).cloned();
        let Some(Served { retry, max_payload, max_pending }) = served else { return Err(Failure::not_found(&name)) };
        let size = payload.len() as u64;
        if size > max_payload {
            return Err(Failure::new(
                FailureClass::Invalid,
                format!(
                    "the payload of {} is larger than handler `{name}` accepts ({}, its `max_payload`); the dispatch was not queued",
                    crate::units::human_bytes(size),
                    crate::units::human_bytes(max_payload)
                ),
            ));
        }
        let pending = self.reserve(&name, max_pending)?;
        let now = SystemTime::now();
        let dispatch = match &self.hub.state {
            // Stored before `dispatch` returns; an id no restart repeats.
            Some(state) => {
                let job = state::Job {
                    id: format!("d{}", nuid::next()),
                    name,
                    payload,
                    headers,
                    retry: Some(retry.to_vec()),
                    attempt: 1,
                    due: now,
                };
                state.accept(job.clone()).await.map_err(|e| {
                    Failure::new(
                        FailureClass::Retry,
                        format!(
                            "the dispatch to `{}` could not be stored ({e}); it was not queued — send it again",
                            job.name
                        ),
                    )
                })?;
                Dispatch::resumed(job, || Arc::from([]))
            }
            None => {
                let id = format!("d{}", self.hub.next_id.fetch_add(1, Ordering::Relaxed));
                Dispatch { id, name, payload, headers, retry, attempt: 1, due: now }
            }
        };
        let id = dispatch.id.clone();
        let outcome = self.spawn_dispatch(dispatch, pending);
        Ok(Receipt { id, outcome: Some(outcome) })
    }

    async fn publish(&self, request: Request, fanout: Fanout) -> Result<(), Failure> {
        let Request { name, payload, headers, .. } = request;
        let name = name.as_str();
        let mut targets = self.hub.serving(Kind::Message, name);
        if targets.is_empty() {
            return Err(Failure::not_found(name));
        }
        let mode = match fanout {
            Fanout::All => Mode::Broadcast,
            Fanout::PerGroup => {
                // One member per group, rotating within each group.
                let turn = self.hub.cursor.fetch_add(1, Ordering::Relaxed);
                let mut groups: BTreeMap<String, Vec<Arc<Member>>> = BTreeMap::new();
                for m in targets {
                    groups.entry(m.group.clone()).or_default().push(m);
                }
                targets = groups.into_values().map(|g| g[turn % g.len()].clone()).collect();
                Mode::Rolecast
            }
        };
        // Events are fire-and-forget: each listener runs on its own task, and a
        // listener's failure is its node's to log and count.
        for member in targets {
            let envelope = Envelope::once(name, mode, payload.clone(), headers.clone());
            self.tasks.spawn(async move {
                let _ = member.deliver(envelope).await;
            });
        }
        Ok(())
    }

    async fn stats(&self) -> Result<Vec<NameStats>, DriverError> {
        let members = crate::sync::read(&self.hub.members).clone();
        Ok(members.iter().flat_map(|m| m.inbound.stats()).collect())
    }

    async fn nodes(&self) -> Result<Vec<NodeInfo>, DriverError> {
        let members = crate::sync::read(&self.hub.members).clone();
        let now = rfc3339(SystemTime::now());
        Ok(members
            .iter()
            .filter_map(|m| m.inbound.info())
            .map(|info| NodeInfo { last_seen: now.clone(), ..info })
            .collect())
    }

    async fn services(&self) -> Result<Vec<ServiceInfo>, DriverError> {
        let members = crate::sync::read(&self.hub.members).clone();
        let mut by_name: BTreeMap<(String, Kind), Vec<String>> = BTreeMap::new();
        for m in &members {
            let Some(node) = m.inbound.info().map(|info| info.node) else { continue };
            for name in crate::sync::read(&m.services).keys() {
                by_name.entry((name.clone(), Kind::Service)).or_default().push(node.clone());
            }
            for name in crate::sync::read(&m.messages).iter() {
                by_name.entry((name.clone(), Kind::Message)).or_default().push(node.clone());
            }
        }
        Ok(by_name.into_iter().map(|((name, kind), nodes)| ServiceInfo { name, kind, nodes }).collect())
    }

    async fn dead_letters(&self) -> Result<Vec<DeadLetter>, DriverError> {
        match &self.hub.state {
            Some(state) => Ok(state.dead_letters().await?),
            None => Ok(crate::sync::lock(&self.hub.dead).letters.iter().cloned().collect()),
        }
    }

    async fn replay_dead_letters(&self, name: &str) -> Result<usize, DriverError> {
        let letters = self.hub.take_dead(name).await?;
        let count = letters.len();
        for letter in letters {
            let request =
                Request { headers: letter.headers.clone(), ..Request::accepted(&letter.name, letter.payload.clone()) };
            if let Err(f) = self.enqueue(request).await {
                self.hub.dead_letter(DeadLetter { failure: f, ..letter }, &self.member.inbound).await;
            }
        }
        Ok(count)
    }

    async fn drop_dead_letters(&self, name: &str) -> Result<usize, DriverError> {
        Ok(self.hub.take_dead(name).await?.len())
    }
}
