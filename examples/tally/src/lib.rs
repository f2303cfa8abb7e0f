//! `tally` — a service that counts its invocations in a global and replies
//! with the count. With a fresh instance per invocation (the default) the
//! reply is always `1`: the tests use it to prove that no state leaks between
//! invocations, and, with `reuse = N` in its sidecar, that an instance serves
//! at most N + 1 invocations. The payload `trap` makes it panic after
//! counting, to show that an instance that trapped is never reused.
//!
//! Build: `cargo build --release --target wasm32-wasip2` in `examples/`
//! (produces `target/wasm32-wasip2/release/tally.wasm`).

use busbar_guest::{Context, Failure, Service};
use std::sync::atomic::{AtomicU32, Ordering};

static CALLS: AtomicU32 = AtomicU32::new(0);

struct Tally;

impl Service for Tally {
    fn handle(_ctx: Context, payload: Vec<u8>) -> Result<Vec<u8>, Failure> {
        let n = CALLS.fetch_add(1, Ordering::SeqCst) + 1;
        if payload == b"trap" {
            panic!("tally was asked to trap after {n} calls");
        }
        Ok(n.to_string().into_bytes())
    }
}

busbar_guest::export_service!(Tally);
