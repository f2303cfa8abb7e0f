//! `recurse` — a service that calls its own name through the bus with the
//! same payload and returns the reply, forever: the host's depth limit must
//! stop the chain (the innermost call fails with `denied`, which `?` passes
//! back up as the failure of every level).
//!
//! Build: `cargo build --release --target wasm32-wasip2` in `examples/`
//! (produces `target/wasm32-wasip2/release/recurse.wasm`).

use busbar_guest::{Context, Failure, Service, bus};

struct Recurse;

impl Service for Recurse {
    fn handle(ctx: Context, payload: Vec<u8>) -> Result<Vec<u8>, Failure> {
        Ok(bus::call(&ctx.name, &payload, None)?)
    }
}

busbar_guest::export_service!(Recurse);
