//! Rate limits for the log lines a handler can repeat without end — its
//! failures, its dead letters, its output — so that no storm fills the
//! node's disk. Each kind of line gets a budget per handler per window;
//! lines past it are counted and left out — the first one left out says so
//! at once, and the next line written says how many were. The metrics still count every event: past its budget the
//! log samples a storm instead of recording each of its events.

use rustc_hash::FxHashMap;
use std::fmt;
use std::sync::{LazyLock, Mutex};
use std::time::{Duration, Instant};

/// How long a budget lasts.
pub const WINDOW: Duration = Duration::from_secs(10);
/// Lines of one kind per handler per window (failures, dead letters).
pub const LINES: u64 = 100;
/// Bytes of a handler's output per stream per window.
pub const OUTPUT_BYTES: u64 = 1 << 20;
/// Keys tracked at once; past it, windows that ended are forgotten.
const KEYS: usize = 10_000;

/// What was left out before a line that may be written: shown after it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LeftOut(pub u64);

impl fmt::Display for LeftOut {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            0 => Ok(()),
            n => write!(
                f,
                " (and {n} more like this before it, left out of the log: past this handler's budget for {WINDOW:?})"
            ),
        }
    }
}

#[derive(Default)]
struct Budget {
    started: Option<Instant>,
    spent: u64,
    left_out: u64,
}

/// Budgets by kind of line and handler.
#[derive(Default)]
pub struct Limiter {
    budgets: Mutex<FxHashMap<(&'static str, Box<str>), Budget>>,
}

impl Limiter {
    /// Whether a line of `kind` about `handler` costing `cost` of the
    /// window's `budget` may be written at `now`: `Some` with what was left
    /// out since the last line written, or `None` to leave it out.
    pub fn allow(&self, kind: &'static str, handler: &str, cost: u64, budget: u64, now: Instant) -> Option<LeftOut> {
        let mut budgets = crate::sync::lock(&self.budgets);
        if budgets.len() >= KEYS && !budgets.contains_key(&(kind, handler.into())) {
            budgets.retain(|_, b| b.started.is_some_and(|s| now.duration_since(s) < WINDOW));
        }
        let b = budgets.entry((kind, handler.into())).or_default();
        if b.started.is_none_or(|s| now.duration_since(s) >= WINDOW) {
            b.started = Some(now);
            b.spent = 0;
        }
        if b.spent.saturating_add(cost) > budget && b.spent > 0 {
            b.left_out = b.left_out.saturating_add(1);
            if b.left_out == 1 {
                let until = WINDOW.saturating_sub(b.started.map_or(Duration::ZERO, |s| now.duration_since(s)));
                drop(budgets);
                tracing::warn!(
                    handler,
                    "more `{kind}` lines of handler `{handler}` than its budget: they are left out of the log for the next {until:.1?}, and the next one written says how many were"
                );
            }
            return None;
        }
        b.spent = b.spent.saturating_add(cost);
        Some(LeftOut(std::mem::take(&mut b.left_out)))
    }
}

static LIMITER: LazyLock<Limiter> = LazyLock::new(Limiter::default);

/// [`Limiter::allow`] for one line of `kind` about `handler`, on the
/// process's limiter with the [`LINES`] budget.
pub fn line(kind: &'static str, handler: &str) -> Option<LeftOut> {
    LIMITER.allow(kind, handler, 1, LINES, Instant::now())
}

/// [`Limiter::allow`] for `bytes` of `handler`'s output, on the process's
/// limiter with the [`OUTPUT_BYTES`] budget.
pub fn output(stream: &'static str, handler: &str, bytes: usize) -> Option<LeftOut> {
    LIMITER.allow(stream, handler, bytes as u64, OUTPUT_BYTES, Instant::now())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn past_its_budget_a_line_is_left_out_and_the_next_window_says_how_many() {
        let limiter = Limiter::default();
        let t0 = Instant::now();
        for _ in 0..3 {
            assert_eq!(limiter.allow("failed", "storm", 1, 3, t0), Some(LeftOut(0)));
        }
        for _ in 0..5 {
            assert_eq!(limiter.allow("failed", "storm", 1, 3, t0), None);
        }
        // (The first line left out was announced in the log.)
        // Another handler, or another kind of line, has a budget of its own.
        assert_eq!(limiter.allow("failed", "echo", 1, 3, t0), Some(LeftOut(0)));
        assert_eq!(limiter.allow("dead-lettered", "storm", 1, 3, t0), Some(LeftOut(0)));
        assert_eq!(limiter.allow("failed", "storm", 1, 3, t0 + WINDOW), Some(LeftOut(5)));
        assert_eq!(limiter.allow("failed", "storm", 1, 3, t0 + WINDOW), Some(LeftOut(0)));
    }

    #[test]
    fn one_line_larger_than_the_budget_is_written_when_nothing_was_spent() {
        let limiter = Limiter::default();
        let t0 = Instant::now();
        assert_eq!(limiter.allow("stdout", "big", 500, 100, t0), Some(LeftOut(0)));
        assert_eq!(limiter.allow("stdout", "big", 1, 100, t0), None);
    }
}
