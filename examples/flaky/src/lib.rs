//! `flaky` — a service that fails with `retry` for its first N attempts, then
//! succeeds with `ok after {attempt} attempts`. N is the payload as a decimal
//! ASCII integer (2 if the payload is empty or not a number).
//!
//! No state lives in memory (every invocation gets a fresh instance): the
//! attempt number comes from the context, so only a dispatch, which the host
//! retries, ever gets past its failures.
//!
//! Build: `cargo build --release --target wasm32-wasip2` in `examples/`
//! (produces `target/wasm32-wasip2/release/flaky.wasm`).

use busbar_guest::{Context, Failure, Service};

struct Flaky;

impl Service for Flaky {
    fn handle(ctx: Context, payload: Vec<u8>) -> Result<Vec<u8>, Failure> {
        let failures: u32 = std::str::from_utf8(&payload).ok().and_then(|s| s.trim().parse().ok()).unwrap_or(2);
        if ctx.attempt <= failures {
            return Err(Failure::retry(format!("flaky attempt {} final={}", ctx.attempt, ctx.is_final())));
        }
        Ok(format!("ok after {} attempts", ctx.attempt).into_bytes())
    }
}

busbar_guest::export_service!(Flaky);
