//! The dead letters on JetStream: a dispatch that failed for good is
//! copied to the dead-letter stream with its reason and attempts, where it
//! can be listed, replayed and dropped. The stream is kept within its
//! limits by busbar, not silently by the server: a letter older than
//! `dead_max_age`, or the oldest when a new one does not fit in
//! `dead_max_bytes`, is removed with a warning and counted
//! (`busbar_dead_letters_dropped_total`). Every node trims; a letter removed
//! by two nodes at once is counted by the one whose delete succeeded.

use super::streams::js_error;
use super::wire;
use super::{DeadLetter, DriverError, NatsConnection};
use crate::delivery::failure::{Failure, FailureClass};
use crate::delivery::{ACCEPT_TIMEOUT, Request};
use crate::stats::rfc3339;
use async_nats::jetstream::stream::Stream;
use std::time::{Duration, SystemTime};

/// How often each node removes dead letters past `dead_max_age`.
pub(super) const TRIM_EVERY: Duration = Duration::from_secs(60);
/// The most old letters removed to make room for one new letter.
const MAX_EVICTIONS: usize = 10_000;

/// Copies a failed dispatch to the dead-letter stream.
pub(super) async fn bury(
    conn: &NatsConnection,
    name: &str,
    msg: &async_nats::jetstream::Message,
    attempts: u32,
    failure: &Failure,
) -> Result<(), String> {
    if let Some(left_out) = crate::ops::lograte::line("dead-lettered", name) {
        tracing::warn!(%name, attempts, "dispatch dead-lettered: {failure}{left_out}");
    }
    let mut map = wire::failure_headers(failure);
    for (k, v) in wire::headers_from(msg.headers.as_ref()) {
        map.append(k.as_str(), v.as_str());
    }
    map.insert(wire::DEAD_ATTEMPTS, attempts.to_string().as_str());
    map.insert(wire::DEAD_AT, rfc3339(SystemTime::now()).as_str());
    for _ in 0..=MAX_EVICTIONS {
        let stored = match conn.js.publish_with_headers(conn.wire.dead(name), map.clone(), msg.payload.clone()).await {
            Ok(ack) => ack.await.map(drop).map_err(|e| e.to_string()),
            Err(e) => Err(e.to_string()),
        };
        match stored {
            Ok(()) => return Ok(()),
            // Full (`dead_max_bytes`, discard new): the oldest letter makes room.
            Err(e) if e.contains("maximum bytes") => {
                let stream = dead_stream(conn).await.map_err(|e| e.to_string())?;
                if !drop_oldest(conn, &stream, |_| true, "to make room under `dead_max_bytes`").await? {
                    tracing::error!(%name, "a dead letter larger than `dead_max_bytes` was dropped: {e}");
                    conn.inbound.dead_letters_dropped(name, 1);
                    return Ok(());
                }
            }
            Err(e) => return Err(e),
        }
    }
    Err(format!("more than {MAX_EVICTIONS} old dead letters would have to go to make room"))
}

async fn dead_stream(conn: &NatsConnection) -> Result<Stream, DriverError> {
    conn.js.get_stream(&conn.wire.dead_stream).await.map_err(|e| js_error("opening the dead letters", e))
}

/// Removes the oldest dead letter when `old(letter's unix time)` says so;
/// returns whether one was removed (`false`: none, or not old).
async fn drop_oldest(
    conn: &NatsConnection,
    stream: &Stream,
    old: impl Fn(i64) -> bool,
    why: &str,
) -> Result<bool, String> {
    let mut stream = stream.clone();
    let state = stream.info().await.map_err(|e| e.to_string())?.state.clone();
    if state.messages == 0 {
        return Ok(false);
    }
    let first = match stream.get_raw_message(state.first_sequence).await {
        Ok(first) => first,
        // Removed meanwhile (by another node): look at the new oldest.
        Err(e) if e.to_string().contains("no message found") => return Ok(true),
        Err(e) => return Err(e.to_string()),
    };
    if !old(first.time.unix_timestamp()) {
        return Ok(false);
    }
    // Another node may remove it first: it counts it then.
    if stream.delete_message(first.sequence).await.unwrap_or(false) {
        let name = conn.wire.name_of_dead(first.subject.as_str()).unwrap_or("?");
        tracing::warn!(%name, "a dead letter of `{name}` was removed {why}");
        conn.inbound.dead_letters_dropped(name, 1);
    }
    Ok(true)
}

/// Removes the dead letters older than `dead_max_age`, oldest first.
pub(super) async fn trim(conn: &NatsConnection) -> Result<(), String> {
    let stream = dead_stream(conn).await.map_err(|e| e.to_string())?;
    let age = conn.keeping.dead_max_age;
    let now = SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).unwrap_or_default();
    let cutoff = i64::try_from(now.saturating_sub(age).as_secs()).unwrap_or(i64::MAX);
    let why = format!("after `dead_max_age` ({})", crate::units::format_duration(age));
    while drop_oldest(conn, &stream, |at| at < cutoff, &why).await? {}
    Ok(())
}

/// Every dead letter, oldest first, with its stream sequence.
async fn read_dead(conn: &NatsConnection) -> Result<Vec<(u64, DeadLetter)>, DriverError> {
    let mut stream = dead_stream(conn).await?;
    let state = stream.info().await.map_err(|e| js_error("reading the dead letters", e))?.state.clone();
    let mut out = Vec::new();
    if state.messages == 0 {
        return Ok(out);
    }
    for seq in state.first_sequence..=state.last_sequence {
        let raw = match stream.get_raw_message(seq).await {
            Ok(raw) => raw,
            // Removed (replayed, dropped, trimmed): a gap in the sequence.
            Err(e) if e.to_string().contains("no message found") => continue,
            // Anything else would make the list look shorter than it is.
            Err(e) => return Err(js_error(&format!("reading dead letter {seq}"), e)),
        };
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
    let stream = dead_stream(conn).await?;
    let mut count = 0;
    for (seq, letter) in read_dead(conn).await?.into_iter().filter(|(_, d)| d.name == name) {
        if replay {
            let request = Request {
                name: name.into(),
                payload: letter.payload,
                headers: letter.headers,
                timeout: ACCEPT_TIMEOUT,
            };
            super::dispatch::enqueue(conn, request)
                .await
                .map_err(|f| DriverError::from_cause(format!("replaying a dead letter of `{name}`"), f))?;
        }
        stream.delete_message(seq).await.map_err(|e| js_error("deleting a dead letter", e))?;
        count += 1;
    }
    Ok(count)
}
