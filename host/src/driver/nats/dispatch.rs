//! Durable dispatch on JetStream: queuing a job (retried through a leader
//! election, never twice), and running one delivery of it. The streams are
//! [`super::streams`]'s, the dead letters [`super::dead`]'s, the pace at
//! which jobs are taken [`super::pull`]'s. Every service has one durable
//! pull consumer, shared by all nodes serving it, with explicit acks and an
//! ack wait longer than the handler's timeout, so work is never redelivered
//! while it may still run — and is redelivered when a node dies mid-handler.
//!
//! The attempt number is JetStream's delivery count. A retryable failure is
//! negatively acknowledged with the schedule's next delay; the last attempt's
//! failure, or a non-retryable one, is copied to the dead-letter stream with
//! its reason and attempts, then acknowledged, which takes it off the queue.
//! The consumer has no `max_deliver`: a message JetStream stops delivering
//! would stay in the work queue unseen, so the limit is busbar's own.

use super::pull::{Puller, Slots};
use super::streams::js_error;
use super::wire;
use super::{DriverError, NatsConnection, Receipt, ServiceSpec, Serving};
use crate::delivery::failure::{Failure, FailureClass};
use crate::delivery::{self, Envelope, Next, Request};
use async_nats::jetstream::consumer::{AckPolicy, pull};
use async_nats::jetstream::message::AckKind;
use bytes::Bytes;
use std::sync::Arc;
use std::time::Duration;

/// Ack wait beyond the handler's timeout: time to record the outcome.
const ACK_MARGIN: Duration = Duration::from_secs(5);

/// How long a dispatch's publish is retried at most, whatever the caller's
/// deadline: within JetStream's duplicate window (2 minutes by default), so
/// that a retry of a publish that was stored after all is de-duplicated by
/// its `Nats-Msg-Id`, never queued twice.
const PUBLISH_RETRY_WITHIN: Duration = Duration::from_secs(100);
/// The first wait between publish attempts; it doubles up to [`MAX_PUBLISH_BACKOFF`].
const FIRST_PUBLISH_BACKOFF: Duration = Duration::from_millis(25);
const MAX_PUBLISH_BACKOFF: Duration = Duration::from_millis(500);

/// Refuses a dispatch to a name this node serves while the queue holds
/// the handler's `max_pending` jobs for it, as the last job this node took
/// said (a count that lags by the jobs taken since: the bound is close,
/// not exact; the queue's own `max_pending` is exact).
fn refuse_past_max_pending(conn: &NatsConnection, name: &str) -> Result<(), Failure> {
    let Some(max) = crate::sync::lock(&conn.services).get(name).map(|s| u64::from(s.max_pending)) else {
        return Ok(());
    };
    let waiting = crate::sync::lock(&conn.waiting).get(name).copied().unwrap_or(0);
    if waiting < max {
        return Ok(());
    }
    Err(Failure::new(
        FailureClass::Overloaded,
        format!(
            "`{name}` already has {waiting} dispatches waiting in the queue, its `max_pending` is {max}; \
             the dispatch was not queued — send it again later"
        ),
    ))
}

/// Queues a dispatch; returns once JetStream has stored it. A refusal that
/// may pass (a leader election, a lost connection, a full queue) is
/// retried with the same `Nats-Msg-Id`, so the server stores it once, until
/// the request's timeout; then it fails as `retry`.
pub(super) async fn enqueue(conn: &NatsConnection, request: Request) -> Result<Receipt, Failure> {
    use async_nats::jetstream::context::PublishErrorKind as K;
    let Request { name, payload, headers, timeout } = request;
    refuse_past_max_pending(conn, &name)?;
    let id = nuid::next().to_string();
    let mut map = wire::headers_to(&headers);
    map.insert(wire::MSG_ID, id.as_str());
    map.insert(wire::DISPATCH_ID, id.as_str());
    let payload = Bytes::from(payload);
    let started = tokio::time::Instant::now();
    let deadline = started + timeout.min(PUBLISH_RETRY_WITHIN);
    let mut backoff = FIRST_PUBLISH_BACKOFF;
    let mut tries = 0u32;
    loop {
        tries += 1;
        let publish =
            async { conn.js.publish_with_headers(conn.wire.queue(&name), map.clone(), payload.clone()).await?.await };
        let error = match tokio::time::timeout_at(deadline, publish).await {
            Ok(Ok(_ack)) => return Ok(Receipt { id, outcome: None }),
            Ok(Err(e)) if e.kind() == K::MaxPayloadExceeded => {
                return Err(Failure::new(
                    FailureClass::Invalid,
                    format!("JetStream did not accept the dispatch to `{name}`: {e}"),
                ));
            }
            // The queue holds its `max_pending`: waiting would not empty it.
            Ok(Err(e)) if e.to_string().contains("maximum messages exceeded") => {
                return Err(Failure::new(
                    FailureClass::Overloaded,
                    format!(
                        "the work queue {} already holds its maximum of {} dispatches (`[bus] setting max_pending`); \
                         the dispatch to `{name}` was not queued — send it again later",
                        conn.wire.queue_stream, conn.keeping.max_pending
                    ),
                ));
            }
            Ok(Err(e)) => e.to_string(),
            Err(_elapsed) => "no acknowledgement in time".to_string(),
        };
        let now = tokio::time::Instant::now();
        if now + backoff >= deadline {
            return Err(Failure::new(
                FailureClass::Retry,
                format!(
                    "JetStream did not accept the dispatch to `{name}` within {}ms ({tries} tries, the last: {error}); \
                     it was not queued — send it again",
                    (now - started).as_millis()
                ),
            ));
        }
        tracing::debug!(%name, tries, "JetStream refused a dispatch, trying again: {error}");
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(MAX_PUBLISH_BACKOFF);
    }
}

/// Creates the durable consumer of service `name`, or updates its ack wait
/// to cover `spec`'s timeout (the other settings never change).
pub(super) async fn consumer(
    conn: &NatsConnection,
    name: &str,
    spec: &ServiceSpec,
) -> Result<async_nats::jetstream::consumer::PullConsumer, DriverError> {
    let stream =
        conn.js.get_stream(&conn.wire.queue_stream).await.map_err(|e| js_error("opening the work queue", e))?;
    let durable = conn.wire.consumer(name);
    stream
        .create_consumer(pull::Config {
            durable_name: Some(durable.clone()),
            filter_subject: conn.wire.queue(name),
            ack_policy: AckPolicy::Explicit,
            ack_wait: ack_wait(spec),
            max_deliver: -1,
            // Each node takes no more than its slots (see `pull`): the
            // server's default cap of 1,000 jobs in flight across all nodes
            // would only hold back a large deployment.
            max_ack_pending: -1,
            num_replicas: conn.keeping.replicas,
            ..Default::default()
        })
        .await
        .map_err(|e| js_error(&format!("creating the consumer {durable}"), e))
}

/// How long JetStream waits for a job's outcome before it redelivers it.
fn ack_wait(spec: &ServiceSpec) -> Duration {
    spec.timeout.saturating_add(ACK_MARGIN)
}

/// Applies a changed timeout of service `name` to its consumer's ack wait.
pub(super) async fn update_consumer(conn: &NatsConnection, name: &str, spec: &ServiceSpec) -> Result<(), DriverError> {
    consumer(conn, name, spec).await.map(drop)
}

/// Starts taking the jobs of service `name` off its work queue, at most
/// `slots` at a time, until `serving` ends (see [`super::pull`]). A
/// consumer that cannot be created now is created by the loop as soon as
/// JetStream can (a cluster electing a leader); only a server without
/// JetStream, or credentials that may not, fail the start.
pub(super) async fn serve_queue(
    conn: &Arc<NatsConnection>,
    name: &str,
    spec: &ServiceSpec,
    slots: &Slots,
    serving: &Serving,
) -> Result<(), DriverError> {
    let consumer = match consumer(conn, name, spec).await {
        Ok(consumer) => Some(consumer),
        Err(e @ (DriverError::NoJetStream { .. } | DriverError::NotAuthorized { .. })) => return Err(e),
        Err(e) => {
            tracing::warn!(%name, "{e}; taking its dispatches once JetStream answers");
            None
        }
    };
    let puller = Puller::new(conn, name, consumer, slots)
        .await
        .map_err(|e| DriverError::from_cause(format!("subscribing for the jobs of `{name}`"), e))?;
    serving.spawn(conn, puller.run(serving.clone()));
    Ok(())
}

/// Runs one delivery of a dispatch under the service's spec of now, and
/// records its outcome on the stream. While it waits for a slot or runs,
/// JetStream is told it is in progress, so it is not redelivered meanwhile.
pub(super) async fn run(conn: &NatsConnection, name: &str, msg: async_nats::jetstream::Message) {
    let spec = crate::sync::lock(&conn.services).get(name).cloned();
    let Some(spec) = spec else {
        // Dropped meanwhile: leave the job to whoever serves it next.
        let _ = msg.ack_with(AckKind::Nak(None)).await;
        return;
    };
    let attempt = msg.info().map(|i| u32::try_from(i.delivered).unwrap_or(u32::MAX)).unwrap_or(1).max(1);
    let headers = wire::headers_from(msg.headers.as_ref());
    let mut envelope = Envelope::dispatch_attempt(name, msg.payload.to_vec(), headers, attempt, &spec.retry);
    envelope.waits_for_slot = true;
    let outcome = {
        let delivered = conn.deliver(envelope);
        tokio::pin!(delivered);
        let every = ack_wait(&spec) / 2;
        let mut progress = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
        loop {
            tokio::select! {
                outcome = &mut delivered => break outcome,
                _ = progress.tick() => {
                    let _ = msg.ack_with(AckKind::Progress).await;
                }
            }
        }
    };
    let recorded = match outcome {
        Ok(_) => msg.ack().await,
        Err(f) => match delivery::next_after(&spec.retry, attempt, &f) {
            Next::Retry(delay) => {
                tracing::debug!(%name, attempt, ?delay, "dispatch attempt failed, retrying: {f}");
                msg.ack_with(AckKind::Nak(Some(delay))).await
            }
            Next::DeadLetter => match super::dead::bury(conn, name, &msg, attempt, &f).await {
                Ok(()) => {
                    conn.inbound.dead_lettered(name);
                    msg.ack().await
                }
                Err(e) => {
                    tracing::warn!(%name, "could not dead-letter a dispatch ({e}); it will be redelivered");
                    return;
                }
            },
        },
    };
    if let Err(e) = recorded {
        tracing::warn!(%name, attempt, "could not record a dispatch outcome ({e}); JetStream will redeliver it");
    }
}
