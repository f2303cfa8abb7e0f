//! Watches a handlers folder (notify) and reports which handler stems
//! changed, debounced. A change that marks the end of a write — a file closed
//! after writing, renamed into place, or removed — is reported at once, with
//! the events that arrived with it (a rename is several events); one that may
//! be followed by more writes (a file created or written and still open) only
//! after a quiet time ([`QUIET`]) without newer events. Validation, not
//! timing, is what keeps half-written files out: a file reported too early
//! fails to load, and the event that completes it reports it again.

use crate::handlers::folder::stem_of;
use notify::event::{AccessKind, AccessMode, EventKind, ModifyKind};
use notify::{RecommendedWatcher, RecursiveMode, Watcher};
use std::collections::HashMap;
use std::path::Path;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio::time::Instant;

/// Wait after an event that may be followed by more writes.
pub const QUIET: Duration = Duration::from_millis(300);

/// A running watch; dropping it stops the watch.
pub struct Watch {
    _watcher: RecommendedWatcher,
}

/// Starts watching `dir`; batches of changed stems (sorted, no repeats) go to
/// the returned receiver, which ends when the [`Watch`] is dropped.
pub fn start(dir: &Path) -> notify::Result<(Watch, mpsc::UnboundedReceiver<Vec<String>>)> {
    let (events_tx, events_rx) = mpsc::unbounded_channel();
    let mut watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| match event {
        Ok(event) => {
            let wait = match event.kind {
                EventKind::Access(AccessKind::Close(AccessMode::Write))
                | EventKind::Modify(ModifyKind::Name(_))
                | EventKind::Remove(_) => Duration::ZERO,
                EventKind::Create(_) | EventKind::Modify(_) => QUIET,
                _ => return,
            };
            for stem in event.paths.iter().filter_map(|p| stem_of(p)) {
                let _ = events_tx.send((stem, wait));
            }
        }
        Err(e) => tracing::warn!("watching the handlers folder: {e}"),
    })?;
    watcher.watch(dir, RecursiveMode::NonRecursive)?;
    let (batches_tx, batches_rx) = mpsc::unbounded_channel();
    tokio::spawn(debounce(events_rx, batches_tx));
    Ok((Watch { _watcher: watcher }, batches_rx))
}

/// Holds each stem until its wait has passed with no newer event, then sends
/// every stem that is due as one batch.
async fn debounce(
    mut events: mpsc::UnboundedReceiver<(String, Duration)>,
    batches: mpsc::UnboundedSender<Vec<String>>,
) {
    let mut due: HashMap<String, Instant> = HashMap::new();
    loop {
        let now = Instant::now();
        let mut ready: Vec<String> = due.iter().filter(|(_, at)| **at <= now).map(|(s, _)| s.clone()).collect();
        if !ready.is_empty() {
            due.retain(|_, at| *at > now);
            ready.sort();
            if batches.send(ready).is_err() {
                return;
            }
        }
        let next = due.values().min().copied();
        tokio::select! {
            event = events.recv() => {
                let Some((stem, wait)) = event else { return };
                due.insert(stem, Instant::now() + wait);
                // Take the events that came with it (a rename's other half).
                while let Ok((stem, wait)) = events.try_recv() {
                    due.insert(stem, Instant::now() + wait);
                }
            }
            () = async { tokio::time::sleep_until(next.unwrap_or_else(Instant::now)).await }, if next.is_some() => {}
        }
    }
}
