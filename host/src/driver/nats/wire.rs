//! busbar on the NATS wire: subjects, stream and consumer names, and how
//! metadata and failures travel in NATS headers. Plain NATS throughout: any
//! NATS client can call a busbar service with no busbar library.
//!
//! | delivery | subject | who receives |
//! |---|---|---|
//! | call | `call.<prefix><name>` | one node (queue group `busbar`) |
//! | dispatch | `queue.<prefix><name>` | JetStream work queue, one shared durable consumer per service |
//! | broadcast | `event.<prefix><name>` | every node |
//! | rolecast | `publish.<prefix><name>` | one node per group (queue group = the group) |
//!
//! A failed call is answered with an empty body and the NATS micro error
//! headers `Nats-Service-Error` (the message) and `Nats-Service-Error-Code`
//! (the class's code), plus `Busbar-Failure-Class`, which tells apart the
//! classes that share a code (retry/overloaded 503, failed/trapped 500).

use crate::delivery::Headers;
use crate::delivery::failure::{Failure, FailureClass};
use async_nats::HeaderMap;
use std::time::Duration;

/// The queue group every node serving a name joins for calls.
pub const CALL_GROUP: &str = "busbar";
/// NATS micro error message header.
pub const ERROR_HEADER: &str = "Nats-Service-Error";
/// NATS micro error code header.
pub const ERROR_CODE_HEADER: &str = "Nats-Service-Error-Code";
/// The exact failure class.
pub const CLASS_HEADER: &str = "Busbar-Failure-Class";
/// Milliseconds the caller will wait; the handler's deadline is capped by it.
pub const TIMEOUT_HEADER: &str = "Busbar-Timeout-Ms";
/// Headers a dead letter carries besides the original ones.
pub const DEAD_ATTEMPTS: &str = "Busbar-Attempts";
/// The dispatch id of a dead letter (also its `Nats-Msg-Id` when queued).
pub const DISPATCH_ID: &str = "Busbar-Dispatch-Id";
/// When the dispatch was dead-lettered, RFC 3339.
pub const DEAD_AT: &str = "Busbar-Dead-At";
/// JetStream's de-duplication header.
pub const MSG_ID: &str = "Nats-Msg-Id";

/// Subjects and names derived from one prefix (e.g. `shop.`).
#[derive(Debug, Clone)]
pub struct Wire {
    prefix: String,
    /// `SHOP_QUEUE`: the work-queue stream.
    pub queue_stream: String,
    /// `SHOP_DEAD`: the dead-letter stream.
    pub dead_stream: String,
}

impl Wire {
    /// The names for `prefix` (which ends with a dot).
    pub fn new(prefix: &str) -> Self {
        let base: String = prefix
            .trim_end_matches('.')
            .chars()
            .map(|c| if c.is_ascii_alphanumeric() { c.to_ascii_uppercase() } else { '_' })
            .collect();
        Self { prefix: prefix.into(), queue_stream: format!("{base}_QUEUE"), dead_stream: format!("{base}_DEAD") }
    }

    /// `SHOP_KV_`: what the JetStream KV buckets of key-value buckets are
    /// named with, before the bucket's name.
    pub fn kv_prefix(&self) -> String {
        format!("{}KV_", self.queue_stream.trim_end_matches("QUEUE"))
    }

    /// `call.<prefix><name>`.
    pub fn call(&self, name: &str) -> String {
        format!("call.{}{name}", self.prefix)
    }
    /// `queue.<prefix><name>`.
    pub fn queue(&self, name: &str) -> String {
        format!("queue.{}{name}", self.prefix)
    }
    /// `event.<prefix><name>`.
    pub fn event(&self, name: &str) -> String {
        format!("event.{}{name}", self.prefix)
    }
    /// `publish.<prefix><name>`.
    pub fn publish(&self, name: &str) -> String {
        format!("publish.{}{name}", self.prefix)
    }
    /// `dead.<prefix><name>`.
    pub fn dead(&self, name: &str) -> String {
        format!("dead.{}{name}", self.prefix)
    }
    /// Every subject of the work-queue stream.
    pub fn queue_all(&self) -> String {
        format!("queue.{}>", self.prefix)
    }
    /// Every subject of the dead-letter stream.
    pub fn dead_all(&self) -> String {
        format!("dead.{}>", self.prefix)
    }
    /// The bus name in a `dead.<prefix><name>` subject.
    pub fn name_of_dead<'s>(&self, subject: &'s str) -> Option<&'s str> {
        subject.strip_prefix("dead.")?.strip_prefix(self.prefix.as_str())
    }
    /// The durable consumer of service `name` (consumer names allow no dots).
    pub fn consumer(&self, name: &str) -> String {
        let safe: String = name.chars().map(|c| if c.is_ascii_alphanumeric() || c == '-' { c } else { '_' }).collect();
        format!("busbar_{safe}")
    }
}

/// Host-set headers are never taken from the wire as metadata.
fn is_transport(name: &str) -> bool {
    name.starts_with("Nats-") || name.eq_ignore_ascii_case(TIMEOUT_HEADER)
}

/// NATS headers → busbar metadata (transport headers dropped).
pub fn headers_from(map: Option<&HeaderMap>) -> Headers {
    let Some(map) = map else { return Headers::new() };
    let mut out = Headers::new();
    for (name, values) in map.iter() {
        let name: &str = name.as_ref();
        if is_transport(name) {
            continue;
        }
        for value in values {
            out.push((name.to_string(), value.as_str().to_string()));
        }
    }
    out
}

/// busbar metadata → NATS headers.
pub fn headers_to(headers: &Headers) -> HeaderMap {
    let mut map = HeaderMap::new();
    for (name, value) in headers {
        map.append(name.as_str(), value.as_str());
    }
    map
}

/// The first value of header `name`.
pub fn get<'m>(map: Option<&'m HeaderMap>, name: &str) -> Option<&'m str> {
    map?.get(name).map(|v| v.as_str())
}

/// The headers of an error reply.
pub fn failure_headers(failure: &Failure) -> HeaderMap {
    let mut map = HeaderMap::new();
    // Header values are one line: keep the message on it.
    let message: String = failure.message.chars().map(|c| if c.is_control() { ' ' } else { c }).collect();
    let message = crate::delivery::failure::cap(message);
    map.insert(ERROR_HEADER, message.as_str());
    map.insert(ERROR_CODE_HEADER, failure.class.code().to_string().as_str());
    map.insert(CLASS_HEADER, failure.class.as_str());
    map
}

/// The caller's timeout from the [`TIMEOUT_HEADER`] of a call, if it sent
/// one: whole milliseconds, at most [`crate::limits::MAX_TIMEOUT`].
pub fn caller_timeout(map: Option<&HeaderMap>) -> Result<Option<Duration>, Failure> {
    let Some(value) = get(map, TIMEOUT_HEADER) else { return Ok(None) };
    let invalid = |why: String| Failure::new(FailureClass::Invalid, format!("header {TIMEOUT_HEADER}: {why}"));
    let ms: u64 =
        value.trim().parse().map_err(|_| invalid(format!("`{value}` is not a whole number of milliseconds")))?;
    let max = crate::limits::MAX_TIMEOUT;
    if u128::from(ms) > max.as_millis() {
        return Err(invalid(format!("{ms} ms is more than its maximum of {} ms", max.as_millis())));
    }
    Ok(Some(Duration::from_millis(ms)))
}

/// The value of the [`TIMEOUT_HEADER`] for a call that waits `timeout`
/// (capped at the maximum a node accepts: no handler runs longer anyway).
pub fn timeout_value(timeout: Duration) -> String {
    timeout.min(crate::limits::MAX_TIMEOUT).as_millis().to_string()
}

/// The failure an error reply carries, if it is one.
pub fn failure_from(map: Option<&HeaderMap>) -> Option<Failure> {
    let message = get(map, ERROR_HEADER)?;
    let class = get(map, CLASS_HEADER)
        .and_then(class_named)
        .or_else(|| get(map, ERROR_CODE_HEADER).and_then(|c| c.parse().ok()).map(class_of_code))
        .unwrap_or(FailureClass::Failed);
    Some(Failure::new(class, message))
}

/// The class called `name` (kebab-case).
pub fn class_named(name: &str) -> Option<FailureClass> {
    FailureClass::ALL.into_iter().find(|c| c.as_str() == name)
}

/// The class a bare code stands for (when another NATS micro service answered).
fn class_of_code(code: u16) -> FailureClass {
    match code {
        400 => FailureClass::Invalid,
        401 => FailureClass::Unauthorized,
        403 => FailureClass::Denied,
        404 => FailureClass::NotFound,
        503 => FailureClass::Retry,
        504 => FailureClass::Timeout,
        _ => FailureClass::Failed,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subjects_follow_the_seed_scheme() {
        let wire = Wire::new("shop.");
        assert_eq!(wire.call("order.paid"), "call.shop.order.paid");
        assert_eq!(wire.queue("order.paid"), "queue.shop.order.paid");
        assert_eq!(wire.event("order.paid"), "event.shop.order.paid");
        assert_eq!(wire.publish("order.paid"), "publish.shop.order.paid");
        assert_eq!((wire.queue_stream.as_str(), wire.dead_stream.as_str()), ("SHOP_QUEUE", "SHOP_DEAD"));
        assert_eq!(wire.consumer("order.paid"), "busbar_order_paid");
        assert_eq!(wire.name_of_dead("dead.shop.order.paid"), Some("order.paid"));
    }

    #[test]
    fn every_class_survives_the_wire() {
        for class in FailureClass::ALL {
            let failure = Failure::new(class, "line one\nline two");
            let back = failure_from(Some(&failure_headers(&failure))).expect("an error reply");
            assert_eq!((back.class, back.message.as_str()), (class, "line one line two"));
        }
    }

    #[test]
    fn the_caller_timeout_is_bounded() {
        let with = |v: &str| {
            let mut map = HeaderMap::new();
            map.insert(TIMEOUT_HEADER, v);
            caller_timeout(Some(&map))
        };
        assert_eq!(caller_timeout(None), Ok(None));
        assert_eq!(with("250"), Ok(Some(Duration::from_millis(250))));
        assert_eq!(with(&timeout_value(Duration::MAX)), Ok(Some(crate::limits::MAX_TIMEOUT)));
        for bad in ["10000000000000000000", "3600001", "-1", "soon", ""] {
            let e = with(bad).expect_err(bad);
            assert_eq!(e.class, FailureClass::Invalid, "{bad}");
            assert!(e.message.contains(TIMEOUT_HEADER), "{e}");
        }
    }

    #[test]
    fn a_plain_micro_error_maps_by_code() {
        let mut map = HeaderMap::new();
        map.insert(ERROR_HEADER, "nope");
        map.insert(ERROR_CODE_HEADER, "401");
        assert_eq!(failure_from(Some(&map)).map(|f| f.class), Some(FailureClass::Unauthorized));
    }
}
