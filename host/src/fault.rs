//! Host errors on a delivery path. A bug in busbar — a panic while a
//! delivery is handled or sent — must not lose the delivery: `guard` turns
//! it into a `failed` answer saying it is a host error, so the caller gets a
//! reply, the metrics count it and a dispatch follows the normal retry and
//! dead-letter rule.
//!
//! With the `fault-injection` feature (test builds only), `inject` arms a
//! panic at a named point of the delivery path for a given bus name, so the
//! tests prove the rule without a real panic left in the code.

use crate::delivery::failure::{Failure, FailureClass};
use crate::ops::metrics::Metrics;
use futures_util::FutureExt as _;
use std::future::Future;
use std::panic::AssertUnwindSafe;

/// Where on the delivery path a fault can be injected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Point {
    /// The bus core handling an incoming delivery, after admission and
    /// before the handler runs.
    Deliver,
    /// The bus core sending an outgoing delivery, before the driver has it.
    Send,
}

impl Point {
    fn as_str(self) -> &'static str {
        match self {
            Self::Deliver => "handling a delivery",
            Self::Send => "sending a delivery",
        }
    }
}

/// Runs `work` (one delivery of `name` at `point`); a panic inside it becomes
/// a `failed` host error, logged with the panic's message. A combinator, not
/// an `async fn`, so that `work` is stored once, not twice.
pub(crate) fn guard<'a, T>(
    point: Point,
    name: &'a str,
    metrics: &'a Metrics,
    work: impl Future<Output = Result<T, Failure>> + 'a,
) -> impl Future<Output = Result<T, Failure>> + 'a {
    AssertUnwindSafe(work).catch_unwind().map(move |caught| match caught {
        Ok(result) => result,
        Err(panic) => {
            let what = panic
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "a panic without a message".into());
            metrics.record_host_error();
            tracing::error!(%name, "host error while {} (a bug in busbar; please report it): {what}", point.as_str());
            Err(Failure::new(
                FailureClass::Failed,
                format!(
                    "host error: busbar failed while {} to `{name}` ({what}); the node carries on and the node log has the details",
                    point.as_str()
                ),
            ))
        }
    })
}

#[cfg(feature = "fault-injection")]
mod injected {
    use super::Point;
    use std::sync::Mutex;
    use std::sync::atomic::{AtomicBool, Ordering};

    /// Armed faults: point, bus name, how many more times.
    static ARMED: Mutex<Vec<(Point, String, u32)>> = Mutex::new(Vec::new());
    /// Whether any fault was ever armed (the fast path of every check).
    static ANY: AtomicBool = AtomicBool::new(false);

    /// Makes the next `times` deliveries of `name` at `point` panic.
    pub fn inject(point: Point, name: &str, times: u32) {
        crate::sync::lock(&ARMED).push((point, name.to_string(), times));
        ANY.store(true, Ordering::Release);
    }

    pub(crate) fn check(point: Point, name: &str) {
        if !ANY.load(Ordering::Acquire) {
            return;
        }
        let fire = {
            let mut armed = crate::sync::lock(&ARMED);
            match armed.iter_mut().find(|(p, n, left)| *p == point && n == name && *left > 0) {
                Some((_, _, left)) => {
                    *left -= 1;
                    true
                }
                None => false,
            }
        };
        if fire {
            panic!("fault injected at {point:?} for `{name}`");
        }
    }
}

#[cfg(feature = "fault-injection")]
pub use injected::inject;

/// A point on the delivery path where a test build may inject a fault.
#[inline(always)]
pub(crate) fn point(point: Point, name: &str) {
    #[cfg(feature = "fault-injection")]
    injected::check(point, name);
    #[cfg(not(feature = "fault-injection"))]
    let _ = (point, name);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_panic_becomes_a_failed_host_error() {
        let metrics = Metrics::new(1);
        let failed = guard(Point::Deliver, "echo", &metrics, async {
            if "x".len() == 1 {
                panic!("boom");
            }
            Ok::<(), Failure>(())
        })
        .await
        .unwrap_err();
        assert_eq!(failed.class, FailureClass::Failed);
        assert!(failed.message.starts_with("host error") && failed.message.contains("boom"), "{failed}");
        assert_eq!(guard(Point::Send, "echo", &metrics, async { Ok::<_, Failure>(7) }).await, Ok(7));
        assert!(metrics.render().contains("busbar_host_errors_total 1"), "{}", metrics.render());
    }
}
