//! `tally` — a service that counts its invocations in a global and replies
//! with the count. Because every invocation gets a fresh instance, the reply
//! is always `1`: the tests use it to prove that no state leaks between
//! invocations.
//!
//! Build: `cargo build --release --target wasm32-wasip2` in `examples/`
//! (produces `target/wasm32-wasip2/release/tally.wasm`).

use busbar_guest::{Context, Failure, Service};
use std::sync::atomic::{AtomicU32, Ordering};

static CALLS: AtomicU32 = AtomicU32::new(0);

struct Tally;

impl Service for Tally {
    fn handle(_ctx: Context, _payload: Vec<u8>) -> Result<Vec<u8>, Failure> {
        let n = CALLS.fetch_add(1, Ordering::SeqCst) + 1;
        Ok(n.to_string().into_bytes())
    }
}

busbar_guest::export_service!(Tally);
