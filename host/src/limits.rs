//! The documented maximum of every duration, size and count that enters
//! busbar from outside — config, sidecars, CLI flags, gateway query
//! parameters, NATS headers — and deadline arithmetic that saturates instead
//! of overflowing. A value past its maximum is refused with an error naming
//! the key or parameter and the limit; nothing downstream has to check again.

use crate::units::format_duration;
use std::time::{Duration, Instant};

/// The longest duration any busbar setting takes; longer text is refused by
/// [`crate::units::parse_duration`] before any key-specific check.
pub const MAX_DURATION: Duration = Duration::from_secs(24 * 3600);
/// A handler's `timeout`, and the timeout of a call (`busbar call --timeout`,
/// the gateway's `?timeout=`, the `Busbar-Timeout-Ms` NATS header).
pub const MAX_TIMEOUT: Duration = Duration::from_secs(3600);
/// One delay of a `retry` schedule.
pub const MAX_RETRY_DELAY: Duration = MAX_DURATION;
/// Delays in one `retry` schedule (so at most 101 attempts).
pub const MAX_RETRIES: usize = 100;
/// `[node] drain`.
pub const MAX_DRAIN: Duration = Duration::from_secs(3600);
/// `[node] max_handler_size` by default: room for a Python or JavaScript
/// component (18 and 12 MB for `echo`) with libraries of its own.
pub const DEFAULT_HANDLER_SIZE: u64 = 64 << 20;
/// `[node] max_handler_size` at most.
pub const MAX_HANDLER_SIZE: u64 = 1 << 30;
/// `[node] compile_memory` by default: compiling the Python or the
/// JavaScript `echo` peaks at 360–390 MiB; the 7 MB compile bomb of the
/// tests (300,000 functions) at 1.6 GiB.
pub const DEFAULT_COMPILE_MEMORY: u64 = 1 << 30;
/// `[node] compile_memory` at most.
pub const MAX_COMPILE_MEMORY: u64 = 64 << 30;
/// `[node] compile_timeout` by default.
pub const DEFAULT_COMPILE_TIMEOUT: Duration = Duration::from_secs(120);
/// `[node] compile_timeout` at most.
pub const MAX_COMPILE_TIMEOUT: Duration = Duration::from_secs(3600);
/// A handler's `memory` (the engine's own ceiling for a linear memory).
pub const MAX_MEMORY: u64 = 4 << 30;
/// `max_payload` and `max_reply` (the gateway reads bodies up to this size too).
pub const MAX_MESSAGE: u64 = 64 << 20;
/// `max_http_body` of a handler by default.
pub const DEFAULT_HTTP_BODY: u64 = 16 << 20;
/// `max_http_body` of a handler at most.
pub const MAX_HTTP_BODY: u64 = 1 << 30;
/// `concurrency` of one handler.
pub const MAX_CONCURRENCY: u32 = 10_000;
/// `queue` of one handler.
pub const MAX_QUEUE: u32 = 1_000_000;
/// `max_calls` of one invocation.
pub const MAX_CALLS: u32 = 100_000;
/// `reuse` of one instance.
pub const MAX_REUSE: u32 = 1_000_000;
/// `[handlers] max_depth`.
pub const MAX_DEPTH: u32 = 64;
/// Names one sidecar may list in `names`.
pub const MAX_NAMES: usize = 1000;
/// The `weight` of a connection.
pub const MAX_WEIGHT: u32 = 1_000_000;
/// `max_pending` of a handler, and a node's.
pub const MAX_PENDING: u32 = 10_000_000;
/// `[node] instances` (each pool slot reserves address space for its memories).
pub const MAX_INSTANCES: u32 = 10_000;

/// A value past the maximum of `key`, in words.
fn too_large(key: &str, value: &str, max: &str) -> String {
    format!("`{key}` is {value}, more than its maximum of {max}")
}

/// `value` of `key`, if it is at most `max`.
pub fn duration_at_most(key: &str, value: Duration, max: Duration) -> Result<Duration, String> {
    if value > max {
        return Err(too_large(key, &format_duration(value), &format_duration(max)));
    }
    Ok(value)
}

/// `value` bytes of `key`, if at most `max`.
pub fn size_at_most(key: &str, value: u64, max: u64) -> Result<u64, String> {
    if value > max {
        return Err(too_large(key, &crate::units::human_bytes(value), &crate::units::human_bytes(max)));
    }
    Ok(value)
}

/// `value` bytes of `key`, if they lie in `min..=max`.
pub fn size_within(key: &str, value: u64, min: u64, max: u64) -> Result<u64, String> {
    if value < min {
        return Err(format!(
            "`{key}` is {}; it must be at least {}",
            crate::units::human_bytes(value),
            crate::units::human_bytes(min)
        ));
    }
    size_at_most(key, value, max)
}

/// `value` of `key`, if it lies in `min..=max`.
pub fn duration_within(key: &str, value: Duration, min: Duration, max: Duration) -> Result<Duration, String> {
    if value < min {
        return Err(format!("`{key}` is {}; it must be at least {}", format_duration(value), format_duration(min)));
    }
    duration_at_most(key, value, max)
}

/// `value` of `key`, if it lies in `min..=max`.
pub fn count_within(key: &str, value: u32, min: u32, max: u32) -> Result<u32, String> {
    if value < min {
        return Err(format!("`{key}` is {value}; it must be at least {min}"));
    }
    if value > max {
        return Err(too_large(key, &value.to_string(), &max.to_string()));
    }
    Ok(value)
}

/// A call timeout written as a duration (`"250ms"`), given as `key` (a
/// flag or query parameter): more than 0 and at most [`MAX_TIMEOUT`].
pub fn call_timeout(key: &str, text: &str) -> Result<Duration, String> {
    let timeout = crate::units::parse_duration(text).map_err(|e| format!("`{key}`: {e}"))?;
    if timeout.is_zero() {
        return Err(format!("`{key}` must be more than 0s"));
    }
    duration_at_most(key, timeout, MAX_TIMEOUT)
}

/// How far ahead a deadline may lie at most: far enough that nothing busbar
/// allows reaches it, near enough for every clock and timer to represent.
const FAR_FUTURE: Duration = Duration::from_secs(30 * 365 * 24 * 3600);

/// `from + after`, saturating at a far-future instant instead of panicking.
pub fn later(from: Instant, after: Duration) -> Instant {
    from.checked_add(after.min(FAR_FUTURE)).unwrap_or(from)
}

/// The deadline `after` from now, saturating (see [`later`]).
pub fn deadline_in(after: Duration) -> Instant {
    later(Instant::now(), after)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deadlines_saturate() {
        let now = Instant::now();
        assert!(later(now, Duration::MAX) > later(now, Duration::from_secs(3600 * 24 * 365)));
        assert_eq!(later(now, Duration::from_secs(1)), now + Duration::from_secs(1));
        let _ = deadline_in(Duration::MAX);
    }

    #[test]
    fn errors_name_the_key_and_the_limit() {
        let e = duration_at_most("timeout", Duration::from_secs(7200), MAX_TIMEOUT).unwrap_err();
        assert_eq!(e, "`timeout` is 2h, more than its maximum of 1h");
        let e = size_at_most("max_payload", 1 << 30, MAX_MESSAGE).unwrap_err();
        assert_eq!(e, "`max_payload` is 1 GiB, more than its maximum of 64 MiB");
        assert!(count_within("concurrency", 0, 1, MAX_CONCURRENCY).unwrap_err().contains("at least 1"));
    }
}
