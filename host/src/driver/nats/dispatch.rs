//! Durable dispatch on JetStream. Each prefix has a work-queue stream
//! (`<P>_QUEUE`, subjects `queue.<prefix>>`) and a dead-letter stream
//! (`<P>_DEAD`, subjects `dead.<prefix>>`). Every service has one durable
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

use super::wire::{self, Wire};
use super::{DeadLetter, DriverError, NatsConnection, Receipt, ServiceSpec, Serving};
use crate::delivery::failure::{Failure, FailureClass};
use crate::delivery::{self, Envelope, Headers, Next};
use crate::stats::rfc3339;
use async_nats::jetstream::consumer::{AckPolicy, pull};
use async_nats::jetstream::message::AckKind;
use async_nats::jetstream::stream::{self, RetentionPolicy, StorageType};
use bytes::Bytes;
use futures_util::StreamExt;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

/// Ack wait beyond the handler's timeout: time to record the outcome.
const ACK_MARGIN: Duration = Duration::from_secs(5);

fn js_error(what: &str, e: impl std::error::Error + Send + Sync + 'static) -> DriverError {
    match DriverError::from_cause(what, e) {
        // A JetStream API nobody answers: the server has no JetStream.
        DriverError::Bus { what, source } if source.to_string().contains("no responders") => {
            DriverError::NoJetStream { what, source }
        }
        other => other,
    }
}

/// Creates the work-queue and dead-letter streams if they do not exist.
pub(super) async fn ensure_streams(js: &async_nats::jetstream::Context, wire: &Wire) -> Result<(), DriverError> {
    let streams = [
        ("work-queue", &wire.queue_stream, wire.queue_all(), RetentionPolicy::WorkQueue),
        ("dead-letter", &wire.dead_stream, wire.dead_all(), RetentionPolicy::Limits),
    ];
    for (what, name, subjects, retention) in streams {
        let config = stream::Config {
            name: name.clone(),
            subjects: vec![subjects],
            retention,
            storage: StorageType::File,
            ..Default::default()
        };
        js.get_or_create_stream(config)
            .await
            .map_err(|e| js_error(&format!("creating the {what} stream {name}"), e))?;
    }
    Ok(())
}

/// Queues a dispatch; returns once JetStream has stored it.
pub(super) async fn enqueue(
    conn: &NatsConnection,
    name: &str,
    payload: Vec<u8>,
    headers: Headers,
) -> Result<Receipt, Failure> {
    let id = nuid::next().to_string();
    let mut map = wire::headers_to(&headers);
    map.insert(wire::MSG_ID, id.as_str());
    map.insert(wire::DISPATCH_ID, id.as_str());
    let refused = |e: async_nats::jetstream::context::PublishError| {
        use async_nats::jetstream::context::PublishErrorKind as K;
        let class = if e.kind() == K::MaxPayloadExceeded { FailureClass::Invalid } else { FailureClass::Retry };
        Failure::new(class, format!("JetStream did not accept the dispatch to `{name}`: {e}"))
    };
    let ack = conn.js.publish_with_headers(conn.wire.queue(name), map, Bytes::from(payload)).await.map_err(refused)?;
    ack.await.map_err(refused)?;
    Ok(Receipt { id, outcome: None })
}

/// Creates the durable consumer of service `name`, or updates its ack wait
/// to cover `spec`'s timeout (the other settings never change).
async fn consumer(
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
            ack_wait: spec.timeout.saturating_add(ACK_MARGIN),
            max_deliver: -1,
            ..Default::default()
        })
        .await
        .map_err(|e| js_error(&format!("creating the consumer {durable}"), e))
}

/// Applies a changed timeout of service `name` to its consumer's ack wait.
pub(super) async fn update_consumer(conn: &NatsConnection, name: &str, spec: &ServiceSpec) -> Result<(), DriverError> {
    consumer(conn, name, spec).await.map(drop)
}

/// Starts consuming the work queue of service `name`, until `serving` ends.
/// Each job runs under the service's spec at the time it arrives.
pub(super) async fn serve_queue(
    conn: &Arc<NatsConnection>,
    name: &str,
    spec: &ServiceSpec,
    serving: &Serving,
) -> Result<(), DriverError> {
    let consumer = consumer(conn, name, spec).await?;
    let durable = conn.wire.consumer(name);
    let mut messages = consumer.messages().await.map_err(|e| js_error(&format!("consuming {durable}"), e))?;
    let me = conn.clone();
    let name = name.to_string();
    let job = serving.clone();
    serving.spawn(conn, async move {
        loop {
            tokio::select! {
                () = job.until.cancelled() => break,
                next = messages.next() => match next {
                    Some(Ok(msg)) => {
                        let spec = crate::sync::lock(&me.services).get(&name).cloned();
                        let (conn, name) = (me.clone(), name.clone());
                        job.spawn(&me, async move {
                            match spec {
                                Some(spec) => run(&conn, &name, &spec, msg).await,
                                // Dropped meanwhile: leave the job to whoever serves it next.
                                None => {
                                    let _ = msg.ack_with(AckKind::Nak(None)).await;
                                }
                            }
                        });
                    }
                    Some(Err(e)) => tracing::debug!(%name, "work queue: {e}"),
                    None => break,
                },
            }
        }
    });
    Ok(())
}

/// Runs one delivery of a dispatch and records its outcome on the stream.
async fn run(conn: &NatsConnection, name: &str, spec: &ServiceSpec, msg: async_nats::jetstream::Message) {
    let attempt = msg.info().map(|i| u32::try_from(i.delivered).unwrap_or(u32::MAX)).unwrap_or(1).max(1);
    let headers = wire::headers_from(msg.headers.as_ref());
    let envelope = Envelope::dispatch_attempt(name, msg.payload.to_vec(), headers, attempt, &spec.retry);
    let recorded = match conn.deliver(envelope).await {
        Ok(_) => msg.ack().await,
        Err(f) => match delivery::next_after(&spec.retry, attempt, &f) {
            Next::Retry(delay) => {
                tracing::debug!(%name, attempt, ?delay, "dispatch attempt failed, retrying: {f}");
                msg.ack_with(AckKind::Nak(Some(delay))).await
            }
            Next::DeadLetter => match bury(conn, name, &msg, attempt, &f).await {
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

/// Copies a failed dispatch to the dead-letter stream.
async fn bury(
    conn: &NatsConnection,
    name: &str,
    msg: &async_nats::jetstream::Message,
    attempts: u32,
    failure: &Failure,
) -> Result<(), String> {
    tracing::warn!(%name, attempts, "dispatch dead-lettered: {failure}");
    let mut map = wire::failure_headers(failure);
    for (k, v) in wire::headers_from(msg.headers.as_ref()) {
        map.append(k.as_str(), v.as_str());
    }
    map.insert(wire::DEAD_ATTEMPTS, attempts.to_string().as_str());
    map.insert(wire::DEAD_AT, rfc3339(SystemTime::now()).as_str());
    let ack = conn
        .js
        .publish_with_headers(conn.wire.dead(name), map, msg.payload.clone())
        .await
        .map_err(|e| e.to_string())?;
    ack.await.map_err(|e| e.to_string())?;
    Ok(())
}

/// Every dead letter, oldest first, with its stream sequence.
async fn read_dead(conn: &NatsConnection) -> Result<Vec<(u64, DeadLetter)>, DriverError> {
    let mut stream =
        conn.js.get_stream(&conn.wire.dead_stream).await.map_err(|e| js_error("opening the dead letters", e))?;
    let state = stream.info().await.map_err(|e| js_error("reading the dead letters", e))?.state.clone();
    let mut out = Vec::new();
    if state.messages == 0 {
        return Ok(out);
    }
    for seq in state.first_sequence..=state.last_sequence {
        let Ok(raw) = stream.get_raw_message(seq).await else { continue };
        let Some(name) = conn.wire.name_of_dead(raw.subject.as_str()) else { continue };
        let headers = Some(&raw.headers);
        let failure = wire::failure_from(headers).unwrap_or_else(|| Failure::new(FailureClass::Failed, "unknown"));
        let dead_keys = [wire::CLASS_HEADER, wire::DEAD_ATTEMPTS, wire::DEAD_AT, wire::DISPATCH_ID];
        let metadata = wire::headers_from(headers)
            .into_iter()
            .filter(|(k, _)| !dead_keys.iter().any(|d| k.eq_ignore_ascii_case(d)))
            .collect();
        out.push((
            seq,
            DeadLetter {
                id: wire::get(headers, wire::DISPATCH_ID).unwrap_or_default().to_string(),
                name: name.to_string(),
                payload: raw.payload.to_vec(),
                headers: metadata,
                attempts: wire::get(headers, wire::DEAD_ATTEMPTS).and_then(|a| a.parse().ok()).unwrap_or(0),
                failure,
                at: wire::get(headers, wire::DEAD_AT).unwrap_or_default().to_string(),
            },
        ));
    }
    Ok(out)
}

/// Every dead letter of the prefix.
pub(super) async fn dead_letters(conn: &NatsConnection) -> Result<Vec<DeadLetter>, DriverError> {
    Ok(read_dead(conn).await?.into_iter().map(|(_, d)| d).collect())
}

/// Removes the dead letters of `name`, queuing them again first when `replay`.
pub(super) async fn take_dead_letters(conn: &NatsConnection, name: &str, replay: bool) -> Result<usize, DriverError> {
    let stream =
        conn.js.get_stream(&conn.wire.dead_stream).await.map_err(|e| js_error("opening the dead letters", e))?;
    let mut count = 0;
    for (seq, letter) in read_dead(conn).await?.into_iter().filter(|(_, d)| d.name == name) {
        if replay {
            enqueue(conn, name, letter.payload, letter.headers)
                .await
                .map_err(|f| DriverError::from_cause(format!("replaying a dead letter of `{name}`"), f))?;
        }
        stream.delete_message(seq).await.map_err(|e| js_error("deleting a dead letter", e))?;
        count += 1;
    }
    Ok(count)
}
