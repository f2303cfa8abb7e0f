//! Instances kept warm for handlers that opt into reuse (`reuse = N` in the
//! sidecar): after a clean return, a handler's store and instance wait in its
//! idle list for the next invocation instead of being torn down. A store that
//! trapped, timed out or was cut off mid-call is never kept.
//!
//! Idle instances hold pool slots, so the whole process keeps at most a
//! quarter of the pool idle ([`Budget`]); past that, instances are dropped as
//! they would be without reuse.

use super::grants::Grants;
use super::sandbox::Sandbox;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use wasmtime::Store;
use wasmtime::component::Instance;

/// Idle instances one handler keeps at most; more than the invocations that
/// run at once on a few cores, fewer than a burst of waiting calls.
const PER_HANDLER: usize = 16;

/// An instantiated store, ready for another invocation.
pub(crate) struct Warm {
    pub(crate) store: Store<Sandbox>,
    pub(crate) instance: Instance,
    /// Invocations it has served.
    pub(crate) uses: u32,
    /// The grants its WASI context was built with.
    pub(crate) grants: Arc<Grants>,
}

/// The process-wide cap on idle instances.
pub(crate) struct Budget {
    idle: AtomicUsize,
    cap: usize,
}

impl Budget {
    /// Allows `cap` idle instances across all handlers.
    pub(crate) fn new(cap: usize) -> Arc<Self> {
        Arc::new(Self { idle: AtomicUsize::new(0), cap })
    }

    /// Idle instances now.
    pub(crate) fn idle(&self) -> usize {
        self.idle.load(Ordering::Acquire)
    }

    fn reserve(&self) -> bool {
        self.idle.fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| (n < self.cap).then_some(n + 1)).is_ok()
    }

    fn release(&self, n: usize) {
        self.idle.fetch_sub(n, Ordering::AcqRel);
    }
}

/// One handler version's idle instances.
pub(crate) struct Idle {
    list: Mutex<Vec<Warm>>,
    /// The list's length, readable without the lock.
    len: AtomicUsize,
    budget: Arc<Budget>,
}

impl Idle {
    pub(crate) fn new(budget: Arc<Budget>) -> Self {
        Self { list: Mutex::new(Vec::new()), len: AtomicUsize::new(0), budget }
    }

    /// The most recently used idle instance built with `grants`, if any (a
    /// sidecar change may have changed the grants since it was built).
    pub(crate) fn take(&self, grants: &Arc<Grants>) -> Option<Warm> {
        if self.len.load(Ordering::Acquire) == 0 {
            return None;
        }
        let mut list = crate::sync::lock(&self.list);
        let warm = list.pop()?;
        self.len.store(list.len(), Ordering::Release);
        self.budget.release(1);
        drop(list);
        (Arc::ptr_eq(&warm.grants, grants) || *warm.grants == **grants).then_some(warm)
    }

    /// Keeps `warm` for a later invocation, or drops it when the handler's
    /// list or the process's budget is full.
    pub(crate) fn put(&self, warm: Warm) {
        let mut list = crate::sync::lock(&self.list);
        if list.len() < PER_HANDLER && self.budget.reserve() {
            list.push(warm);
            self.len.store(list.len(), Ordering::Release);
        }
    }

    /// Drops every idle instance (the handler stopped reusing them).
    pub(crate) fn clear(&self) {
        if self.len.load(Ordering::Acquire) == 0 {
            return;
        }
        let dropped = {
            let mut list = crate::sync::lock(&self.list);
            self.len.store(0, Ordering::Release);
            std::mem::take(&mut *list)
        };
        self.budget.release(dropped.len());
    }
}

impl Drop for Idle {
    fn drop(&mut self) {
        self.clear();
    }
}
