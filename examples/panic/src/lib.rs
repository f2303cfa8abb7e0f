//! `panic` — a service that panics with "panic handler was asked to panic".
//! On wasm32-wasip2 a panic prints its message to stderr and aborts, which the
//! host sees as a trap.
//!
//! Build: `cargo build --release --target wasm32-wasip2` in `examples/`
//! (produces `target/wasm32-wasip2/release/panic.wasm`).

use busbar_guest::{Context, Failure, Service};

struct Panic;

impl Service for Panic {
    fn handle(_ctx: Context, _payload: Vec<u8>) -> Result<Vec<u8>, Failure> {
        panic!("panic handler was asked to panic");
    }
}

busbar_guest::export_service!(Panic);
