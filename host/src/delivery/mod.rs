//! The delivery rules shared by every driver: the four modes, the envelope a
//! driver hands to the bus core, and the retry schedule arithmetic
//! (attempt numbers, the `final` flag, the delay before the next attempt).

pub mod failure;
pub mod name;

use std::time::{Duration, Instant};

/// Metadata headers carried with a payload, in order. Names starting with
/// `busbar-` are set by the host.
pub type Headers = Vec<(String, String)>;

/// Header carrying how many nested bus calls led to this delivery.
pub const DEPTH_HEADER: &str = "busbar-depth";

/// How a payload travels.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// Request/reply to one service.
    Call,
    /// Queued, retried work for one service.
    Dispatch,
    /// An event for every message handler of the name.
    Broadcast,
    /// An event for one message handler per group.
    Rolecast,
}

impl Mode {
    /// Whether the mode targets a service (otherwise a message handler).
    pub fn is_service(self) -> bool {
        matches!(self, Self::Call | Self::Dispatch)
    }

    /// The lowercase name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Call => "call",
            Self::Dispatch => "dispatch",
            Self::Broadcast => "broadcast",
            Self::Rolecast => "rolecast",
        }
    }
}

impl std::fmt::Display for Mode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Whether a name answers (service) or listens (message).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    /// Answers call and dispatch.
    Service,
    /// Receives broadcast and rolecast.
    Message,
}

/// How long a dispatch, broadcast or rolecast sent without a timeout of its
/// own may take to be accepted by the bus.
pub const ACCEPT_TIMEOUT: Duration = Duration::from_secs(30);

/// An outgoing delivery: what goes where, and how long the sender waits —
/// for a call's reply, or for the bus to accept a dispatch or an event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    /// The name to reach.
    pub name: String,
    /// The payload bytes.
    pub payload: Vec<u8>,
    /// Metadata headers.
    pub headers: Headers,
    /// How long the sender waits.
    pub timeout: Duration,
}

impl Request {
    /// A dispatch or event of `payload` to `name`, accepted within [`ACCEPT_TIMEOUT`].
    pub fn accepted(name: &str, payload: Vec<u8>) -> Self {
        Self { name: name.into(), payload, headers: Headers::new(), timeout: ACCEPT_TIMEOUT }
    }
}

/// One delivery as a driver hands it to the bus core.
#[derive(Debug, Clone)]
pub struct Envelope {
    /// The name invoked.
    pub name: String,
    /// How it was delivered.
    pub mode: Mode,
    /// The payload bytes.
    pub payload: Vec<u8>,
    /// Metadata headers.
    pub headers: Headers,
    /// Attempt number, from 1.
    pub attempt: u32,
    /// Whether a failure of this attempt is the last word.
    pub is_final: bool,
    /// When the caller stops waiting (a call's timeout); the handler's own
    /// timeout still applies when it is sooner.
    pub deadline: Option<Instant>,
    /// Taken off a durable queue by a driver that takes only as many as
    /// the handler's `concurrency`: it waits for a free slot however long
    /// (calls may hold them), outside the `queue` bound, and is never
    /// refused as `overloaded` — a node's own load uses up no attempt. Its
    /// timeout starts when it runs.
    pub waits_for_slot: bool,
}

impl Envelope {
    /// A first and only attempt (call, broadcast, rolecast).
    pub fn once(name: impl Into<String>, mode: Mode, payload: Vec<u8>, headers: Headers) -> Self {
        Self {
            name: name.into(),
            mode,
            payload,
            headers,
            attempt: 1,
            is_final: true,
            deadline: None,
            waits_for_slot: false,
        }
    }

    /// Attempt `attempt` (from 1) of a dispatch of `payload` to `name`
    /// under the retry `schedule`: the one way both drivers build it.
    pub fn dispatch_attempt(
        name: &str,
        payload: Vec<u8>,
        headers: Headers,
        attempt: u32,
        schedule: &[Duration],
    ) -> Self {
        Self {
            name: name.into(),
            mode: Mode::Dispatch,
            payload,
            headers,
            attempt,
            is_final: is_final(schedule, attempt),
            deadline: None,
            waits_for_slot: false,
        }
    }

    /// The nesting depth recorded in the headers (0 for a delivery from outside).
    pub fn depth(&self) -> u32 {
        header(&self.headers, DEPTH_HEADER).and_then(|v| v.parse().ok()).unwrap_or(0)
    }
}

/// The first value of header `name`.
pub fn header<'h>(headers: &'h Headers, name: &str) -> Option<&'h str> {
    headers.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
}

/// Sets header `name` to `value`, replacing any earlier value.
pub fn set_header(headers: &mut Headers, name: &str, value: String) {
    headers.retain(|(k, _)| !k.eq_ignore_ascii_case(name));
    headers.push((name.into(), value));
}

/// What follows a failed dispatch attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Next {
    /// Try again after this delay.
    Retry(Duration),
    /// Stop: the dispatch goes to the dead letters.
    DeadLetter,
}

/// The delivery rule, the one place every driver asks: after attempt
/// `attempt` (1-based) of a dispatch failed with `failure`, it is tried again
/// after the schedule's next delay if the failure is retryable and the
/// schedule has one; otherwise it is dead-lettered.
pub fn next_after(schedule: &[Duration], attempt: u32, failure: &crate::delivery::failure::Failure) -> Next {
    match retry_delay(schedule, attempt) {
        Some(delay) if failure.retryable() => Next::Retry(delay),
        _ => Next::DeadLetter,
    }
}

/// Whether attempt `attempt` (1-based) is the last one a schedule allows:
/// with `n` delays there are `n + 1` attempts. Unlike the seed, a service with
/// no schedule reports its only attempt as final.
pub fn is_final(retries: &[Duration], attempt: u32) -> bool {
    attempt as usize > retries.len()
}

/// The delay before the attempt after `attempt`, or `None` when `attempt` was the last.
pub fn retry_delay(retries: &[Duration], attempt: u32) -> Option<Duration> {
    retries.get((attempt as usize).checked_sub(1)?).copied()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn three_delays_allow_four_attempts_and_the_fourth_is_final() {
        let schedule = [Duration::from_secs(3), Duration::from_secs(10), Duration::from_secs(30)];
        let finals: Vec<_> = (1..=4).map(|a| is_final(&schedule, a)).collect();
        assert_eq!(finals, [false, false, false, true]);
        assert_eq!(retry_delay(&schedule, 1), Some(Duration::from_secs(3)));
        assert_eq!(retry_delay(&schedule, 3), Some(Duration::from_secs(30)));
        assert_eq!(retry_delay(&schedule, 4), None);
    }

    #[test]
    fn the_rule_retries_retryable_failures_while_the_schedule_lasts() {
        use crate::delivery::failure::{Failure, FailureClass};
        let schedule = [Duration::from_secs(3)];
        let failed = Failure::new(FailureClass::Failed, "x");
        let invalid = Failure::new(FailureClass::Invalid, "x");
        assert_eq!(next_after(&schedule, 1, &failed), Next::Retry(Duration::from_secs(3)));
        assert_eq!(next_after(&schedule, 2, &failed), Next::DeadLetter);
        assert_eq!(next_after(&schedule, 1, &invalid), Next::DeadLetter);
        assert_eq!(next_after(&[], 1, &failed), Next::DeadLetter);
        assert!(Envelope::dispatch_attempt("x", vec![], vec![], 2, &schedule).is_final);
    }

    #[test]
    fn without_a_schedule_the_only_attempt_is_final() {
        assert!(is_final(&[], 1));
        assert_eq!(retry_delay(&[], 1), None);
    }

    #[test]
    fn depth_comes_from_the_header() {
        let mut env = Envelope::once("x", Mode::Call, vec![], vec![]);
        assert_eq!(env.depth(), 0);
        set_header(&mut env.headers, DEPTH_HEADER, "3".into());
        assert_eq!(env.depth(), 3);
    }
}
