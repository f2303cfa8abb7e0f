//! The two JetStream streams of a prefix, as the `[bus] setting` asks for
//! them: the work queue (`<P>_QUEUE`, subjects `queue.<prefix>>`) and the
//! dead letters (`<P>_DEAD`, subjects `dead.<prefix>>`), each with
//! `replicas` copies. At connect a missing stream is created; one that
//! exists with other settings is updated where JetStream allows it
//! (subjects, replicas, the queue's message limit, the dead letters' byte
//! limit), and refused with what differs where it does not (retention,
//! storage).

use super::DriverError;
use super::wire::Wire;
use async_nats::jetstream::stream::{self, DiscardPolicy, RetentionPolicy, StorageType};
use std::time::Duration;

/// How the streams are kept (`[bus] setting` keys `replicas`,
/// `dead_max_age`, `dead_max_bytes`, `max_pending`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Keeping {
    /// Copies of each stream and consumer, on as many servers (1 to 5).
    pub replicas: usize,
    /// Dead letters older than this are removed (and counted).
    pub dead_max_age: Duration,
    /// The dead letters' size on the server; the oldest go (counted) to
    /// make room for a new one.
    pub dead_max_bytes: u64,
    /// Dispatches the work queue holds at most; past it a dispatch is
    /// refused as `overloaded` when sent.
    pub max_pending: u64,
    /// What one key-value bucket may hold, in bytes.
    pub bucket_size: u64,
}

/// The default `replicas`: one, which every server can hold. A cluster of
/// three or more should say `replicas = 3` (a warning says so).
pub(crate) const DEFAULT_REPLICAS: usize = 1;
/// The most copies JetStream keeps of a stream.
pub(crate) const MAX_REPLICAS: usize = 5;
/// The default `dead_max_age`: 30 days.
pub(crate) const DEFAULT_DEAD_MAX_AGE: Duration = Duration::from_secs(30 * 24 * 3600);
/// The longest `dead_max_age`: ten years.
pub(crate) const MAX_DEAD_MAX_AGE: Duration = Duration::from_secs(3650 * 24 * 3600);
/// The default `dead_max_bytes`: 1 GiB.
pub(crate) const DEFAULT_DEAD_MAX_BYTES: u64 = 1 << 30;
/// The smallest `dead_max_bytes` (a letter larger than the limit is
/// dropped, counted and logged at error level).
pub(crate) const MIN_DEAD_MAX_BYTES: u64 = 1 << 20;

/// The default `max_pending` of the work queue: a million dispatches.
pub(crate) const DEFAULT_MAX_PENDING: u64 = 1_000_000;
/// The largest `max_pending`.
pub(crate) const MAX_MAX_PENDING: u64 = 1_000_000_000;

impl Default for Keeping {
    fn default() -> Self {
        Self {
            replicas: DEFAULT_REPLICAS,
            dead_max_age: DEFAULT_DEAD_MAX_AGE,
            dead_max_bytes: DEFAULT_DEAD_MAX_BYTES,
            max_pending: DEFAULT_MAX_PENDING,
            bucket_size: crate::keyvalue::DEFAULT_BUCKET_BYTES,
        }
    }
}

impl Keeping {
    /// Checks the values against their ranges; the error names the key.
    pub(crate) fn check(&self) -> Result<(), String> {
        if !(1..=MAX_REPLICAS).contains(&self.replicas) {
            return Err(format!("`replicas` is {}; it must be 1 to {MAX_REPLICAS}", self.replicas));
        }
        if self.dead_max_age.is_zero() || self.dead_max_age > MAX_DEAD_MAX_AGE {
            return Err(format!(
                "`dead_max_age` must be more than 0 and at most {}d",
                MAX_DEAD_MAX_AGE.as_secs() / 86400
            ));
        }
        if !(1024..=crate::keyvalue::MAX_BUCKET_BYTES).contains(&self.bucket_size) {
            return Err(format!(
                "`bucket_size` is {}; it must be 1KiB to {}",
                crate::units::human_bytes(self.bucket_size),
                crate::units::human_bytes(crate::keyvalue::MAX_BUCKET_BYTES)
            ));
        }
        if !(1..=MAX_MAX_PENDING).contains(&self.max_pending) {
            return Err(format!("`max_pending` is {}; it must be 1 to {MAX_MAX_PENDING}", self.max_pending));
        }
        if self.dead_max_bytes < MIN_DEAD_MAX_BYTES {
            return Err(format!(
                "`dead_max_bytes` is {}; it must be at least {}",
                crate::units::human_bytes(self.dead_max_bytes),
                crate::units::human_bytes(MIN_DEAD_MAX_BYTES)
            ));
        }
        Ok(())
    }
}

/// A JetStream error while doing `what`, sorted into its kind.
pub(super) fn js_error(what: &str, e: impl std::error::Error + Send + Sync + 'static) -> DriverError {
    match DriverError::from_cause(what, e) {
        // A JetStream API nobody answers: the server has no JetStream.
        DriverError::Bus { what, source } if source.to_string().contains("no responders") => {
            DriverError::NoJetStream { what, source }
        }
        other => other,
    }
}

/// Creates or updates the work-queue and dead-letter streams of `wire`.
pub(super) async fn ensure(
    js: &async_nats::jetstream::Context,
    wire: &Wire,
    keeping: &Keeping,
) -> Result<(), DriverError> {
    let base = |name: &str, subject: String, retention| stream::Config {
        name: name.to_string(),
        subjects: vec![subject],
        retention,
        storage: StorageType::File,
        num_replicas: keeping.replicas,
        ..Default::default()
    };
    let queue = stream::Config {
        // Full is refused: the dispatching call gets `overloaded`.
        max_messages: i64::try_from(keeping.max_pending).unwrap_or(i64::MAX),
        discard: DiscardPolicy::New,
        ..base(&wire.queue_stream, wire.queue_all(), RetentionPolicy::WorkQueue)
    };
    let dead = stream::Config {
        // Full is refused, not trimmed silently: busbar removes the oldest
        // letters itself, and counts them.
        max_bytes: i64::try_from(keeping.dead_max_bytes).unwrap_or(i64::MAX),
        discard: DiscardPolicy::New,
        ..base(&wire.dead_stream, wire.dead_all(), RetentionPolicy::Limits)
    };
    for (what, wanted) in [("work-queue", queue), ("dead-letter", dead)] {
        patiently(what, || ensure_one(js, what, wanted.clone())).await?;
    }
    Ok(())
}

/// How long a node waits at start for a cluster that cannot place the
/// streams yet (its servers still joining, a leader being elected).
const FORMING: Duration = Duration::from_secs(15);

/// Runs `attempt` until it succeeds, fails for good, or [`FORMING`] passes:
/// JetStream's refusals while a cluster forms are tried again.
async fn patiently<F, Fut>(what: &str, attempt: F) -> Result<(), DriverError>
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = Result<(), DriverError>>,
{
    let deadline = tokio::time::Instant::now() + FORMING;
    let mut said = false;
    loop {
        match attempt().await {
            Err(e) if forming(&e) && tokio::time::Instant::now() < deadline => {
                if !said {
                    tracing::warn!("waiting for the JetStream cluster to place the {what} stream: {e}");
                    said = true;
                }
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
            other => return other,
        }
    }
}

/// Whether `e` is what a forming cluster answers (rather than a refusal).
fn forming(e: &DriverError) -> bool {
    let text = e.to_string();
    matches!(e, DriverError::TimedOut { .. })
        || text.contains("no suitable peers")
        || text.contains("JetStream system temporarily unavailable")
}

async fn ensure_one(
    js: &async_nats::jetstream::Context,
    what: &str,
    wanted: stream::Config,
) -> Result<(), DriverError> {
    let name = wanted.name.clone();
    let existing = match js.get_stream(&name).await {
        Ok(stream) => stream,
        Err(_) => match js.create_stream(wanted.clone()).await {
            Ok(_) => return Ok(()),
            // Another node may have created it meanwhile: look again.
            Err(created) => js
                .get_stream(&name)
                .await
                .map_err(|_| js_error(&format!("creating the {what} stream {name}"), created))?,
        },
    };
    let have = existing.cached_info().config.clone();
    let fixed = [
        ("retention", format!("{:?}", have.retention), format!("{:?}", wanted.retention)),
        ("storage", format!("{:?}", have.storage), format!("{:?}", wanted.storage)),
    ];
    if let Some((key, had, want)) = fixed.iter().find(|(_, had, want)| had != want) {
        return Err(DriverError::Setting(format!(
            "the {what} stream {name} exists with {key} {had}, busbar needs {want}, and JetStream cannot change \
             it in place: move its messages and delete it (`nats stream rm {name}`), or use another `[bus] prefix`"
        )));
    }
    let mut update = have.clone();
    let mut changes = Vec::new();
    for subject in &wanted.subjects {
        if !update.subjects.contains(subject) {
            changes.push(format!("subject {subject} added"));
            update.subjects.push(subject.clone());
        }
    }
    if update.num_replicas.max(1) != wanted.num_replicas {
        changes.push(format!("replicas {} → {}", update.num_replicas.max(1), wanted.num_replicas));
        update.num_replicas = wanted.num_replicas;
    }
    let limits_differ =
        update.max_bytes != wanted.max_bytes || update.discard != wanted.discard || !update.max_age.is_zero();
    if wanted.retention == RetentionPolicy::WorkQueue
        && (update.max_messages != wanted.max_messages || update.discard != wanted.discard)
    {
        changes.push(format!(
            "max messages {} → {} (discard new: a full queue refuses a dispatch as `overloaded`)",
            update.max_messages, wanted.max_messages
        ));
        (update.max_messages, update.discard) = (wanted.max_messages, wanted.discard);
    }
    if wanted.retention == RetentionPolicy::Limits && limits_differ {
        changes.push(format!(
            "max bytes {} → {} (discard new; busbar removes and counts the oldest)",
            update.max_bytes, wanted.max_bytes
        ));
        (update.max_bytes, update.discard, update.max_age) = (wanted.max_bytes, wanted.discard, Duration::ZERO);
    }
    if changes.is_empty() {
        return Ok(());
    }
    let changes = changes.join(", ");
    js.update_stream(update)
        .await
        .map_err(|e| js_error(&format!("updating the {what} stream {name} ({changes})"), e))?;
    tracing::warn!(
        "updated the {what} stream {name}: {changes} (nodes of one prefix must share these `[bus] setting` \
         keys, or each changes the stream back at its start)"
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replicas_and_dead_letter_limits_are_checked_by_key() {
        assert_eq!(Keeping::default().check(), Ok(()));
        let with = |f: fn(&mut Keeping)| {
            let mut k = Keeping::default();
            f(&mut k);
            k.check().unwrap_err()
        };
        assert_eq!(with(|k| k.replicas = 0), "`replicas` is 0; it must be 1 to 5");
        assert_eq!(with(|k| k.replicas = 6), "`replicas` is 6; it must be 1 to 5");
        assert!(with(|k| k.dead_max_age = Duration::ZERO).starts_with("`dead_max_age` must be more than 0"));
        assert!(with(|k| k.dead_max_age = MAX_DEAD_MAX_AGE * 2).contains("at most 3650d"));
        assert_eq!(with(|k| k.dead_max_bytes = 1000), "`dead_max_bytes` is 1000 B; it must be at least 1 MiB");
    }
}
