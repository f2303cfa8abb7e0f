//! Admission to one handler: at most `concurrency` invocations run at once,
//! at most `queue` more wait for a slot (each no longer than its deadline),
//! and anything past that is refused at once as `overloaded` — never an
//! unbounded pile-up. A dispatch a durable driver took off its queue
//! waits for a slot outside that bound ([`Gate::wait`]): the driver takes
//! no more than `concurrency` of them, so they cannot pile up either.

use crate::delivery::failure::{Failure, FailureClass};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Instant;
use tokio::sync::{Semaphore, SemaphorePermit};

/// The admission state of one handler.
#[derive(Debug)]
pub struct Gate {
    slots: Semaphore,
    concurrency: u32,
    waiting: AtomicU32,
    queue: u32,
}

impl Gate {
    /// A gate letting `concurrency` run and `queue` wait.
    pub fn new(concurrency: u32, queue: u32) -> Self {
        Self { slots: Semaphore::new(concurrency as usize), concurrency, waiting: AtomicU32::new(0), queue }
    }

    /// Waits for a slot however long it takes, without counting against
    /// `queue`: for work whose sender bounds how much of it waits (see
    /// [`crate::delivery::Envelope::waits_for_slot`]).
    pub async fn wait(&self, handler: &str) -> Result<SemaphorePermit<'_>, Failure> {
        self.slots.acquire().await.map_err(|_closed| Self::unloaded(handler))
    }

    fn unloaded(handler: &str) -> Failure {
        Failure::new(FailureClass::Retry, format!("handler `{handler}` was unloaded"))
    }

    /// Waits for a slot until `deadline`. The permit frees the slot when dropped.
    pub async fn enter(&self, handler: &str, deadline: Instant) -> Result<SemaphorePermit<'_>, Failure> {
        if let Ok(permit) = self.slots.try_acquire() {
            return Ok(permit);
        }
        if self.waiting.fetch_add(1, Ordering::AcqRel) >= self.queue {
            self.waiting.fetch_sub(1, Ordering::AcqRel);
            return Err(Failure::new(
                FailureClass::Overloaded,
                format!(
                    "handler `{handler}` is overloaded: {} invocations running and {} waiting (its `concurrency` and `queue`)",
                    self.concurrency, self.queue
                ),
            ));
        }
        let waited = tokio::time::timeout_at(deadline.into(), self.slots.acquire()).await;
        self.waiting.fetch_sub(1, Ordering::AcqRel);
        match waited {
            Ok(Ok(permit)) => Ok(permit),
            Ok(Err(_closed)) => Err(Self::unloaded(handler)),
            Err(_elapsed) => Err(Failure::new(
                FailureClass::Timeout,
                format!("handler `{handler}` had no free slot before the deadline (all {} busy)", self.concurrency),
            )),
        }
    }
}
