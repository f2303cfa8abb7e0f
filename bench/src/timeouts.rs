//! Benchmark 7, second part: how long after its timeout a guest that never
//! returns (`spin`) is stopped, when N of them loop at once on the
//! benchmark's 2 worker threads. Every call must end `timeout`; the
//! overshoot is each call's time minus the handler's timeout.

use busbar::FailureClass;
use busbar_tests::support::{Folder, start};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The overshoots of `guests` looping guests with timeout `timeout`, sorted.
pub async fn measure(guests: usize, timeout: Duration) -> anyhow::Result<Vec<Duration>> {
    let folder = Folder::with(&["spin"]);
    folder.sidecar("spin", &format!("timeout = \"{}ms\"\nconcurrency = {guests}\n", timeout.as_millis()));
    let node = Arc::new(start(&folder).await);
    let calls: Vec<_> = (0..guests)
        .map(|_| {
            let node = node.clone();
            tokio::spawn(async move {
                let started = Instant::now();
                let outcome = node.call("spin", Vec::new(), timeout * 10).await;
                (started.elapsed(), outcome)
            })
        })
        .collect();
    let mut overshoots = Vec::new();
    for call in calls {
        let (took, outcome) = call.await?;
        let failure = outcome.err().ok_or_else(|| anyhow::anyhow!("`spin` returned"))?;
        anyhow::ensure!(failure.class == FailureClass::Timeout, "`spin` ended {failure}");
        overshoots.push(took.saturating_sub(timeout));
    }
    overshoots.sort();
    Ok(overshoots)
}
