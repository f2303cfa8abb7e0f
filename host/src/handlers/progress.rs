//! Start-up progress: while a node compiles its handlers folder (seconds per
//! handler with a cold cache, minutes for a large folder), a progress bar on
//! a terminal, or a plain log line at every tenth of the way otherwise.

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

/// Below this many handlers a load is quick enough to go without progress lines.
const LINES_FROM: usize = 10;

/// How the progress of a load is shown.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Display {
    /// Log lines (at every tenth, for folders of at least ten handlers).
    #[default]
    Lines,
    /// A bar on stderr, which is a terminal.
    Bar,
}

/// The progress of loading `total` handler files.
pub(crate) struct Progress {
    total: usize,
    done: AtomicUsize,
    started: Instant,
    bar: Option<ProgressBar>,
}

impl Progress {
    /// Starts showing the progress of loading `total` files.
    pub fn start(total: usize, display: Display) -> Self {
        let bar = (display == Display::Bar && total > 1).then(|| {
            let bar = ProgressBar::with_draw_target(Some(total as u64), ProgressDrawTarget::stderr());
            let style =
                ProgressStyle::with_template("{spinner} loading handlers [{bar:30}] {pos}/{len} {elapsed} {wide_msg}")
                    .map(|s| s.progress_chars("=> "))
                    .unwrap_or_else(|_| ProgressStyle::default_bar());
            bar.set_style(style);
            bar
        });
        if bar.is_none() && total >= LINES_FROM {
            tracing::info!("loading {total} handlers");
        }
        Self { total, done: AtomicUsize::new(0), started: Instant::now(), bar }
    }

    /// One more file is loaded (or rejected); `stem` names it.
    pub fn step(&self, stem: &str) {
        let done = self.done.fetch_add(1, Ordering::AcqRel) + 1;
        match &self.bar {
            Some(bar) => {
                bar.set_message(stem.to_string());
                bar.inc(1);
            }
            None if self.total >= LINES_FROM && tenth(done, self.total) > tenth(done - 1, self.total) => {
                tracing::info!(elapsed = ?self.started.elapsed(), "loaded {done} of {} handlers", self.total);
            }
            None => {}
        }
    }

    /// How many files are loaded so far.
    #[cfg(test)]
    pub fn done(&self) -> usize {
        self.done.load(Ordering::Acquire)
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }
}

/// Which tenth of the way `done` of `total` is in.
fn tenth(done: usize, total: usize) -> usize {
    done * 10 / total.max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_come_at_each_tenth() {
        let crossings = |total: usize| (1..=total).filter(|&d| tenth(d, total) > tenth(d - 1, total)).count();
        assert_eq!(crossings(100), 10);
        assert_eq!(crossings(10), 10);
        assert_eq!(crossings(37), 10);
    }

    #[test]
    fn steps_are_counted() {
        let progress = Progress::start(3, Display::Lines);
        for stem in ["a", "b", "c"] {
            progress.step(stem);
        }
        assert_eq!(progress.done(), 3);
    }
}
