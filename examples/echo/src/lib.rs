//! `echo` — a service that replies with its payload unchanged.
//!
//! Build: `cargo build --release --target wasm32-wasip2` in `examples/`
//! (produces `target/wasm32-wasip2/release/echo.wasm`).

use busbar_guest::{Context, Failure, Service};

struct Echo;

impl Service for Echo {
    fn handle(_ctx: Context, payload: Vec<u8>) -> Result<Vec<u8>, Failure> {
        Ok(payload)
    }
}

busbar_guest::export_service!(Echo);
