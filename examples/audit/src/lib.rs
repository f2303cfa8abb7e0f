//! `audit` — a message handler that logs each event (name and size) to
//! stdout. The payload `fail` makes it answer `failed("audit refused")`.
//!
//! Build: `cargo build --release --target wasm32-wasip2` in `examples/`
//! (produces `target/wasm32-wasip2/release/audit.wasm`).

use busbar_guest::{Context, Failure, Message};

struct Audit;

impl Message for Audit {
    fn handle(ctx: Context, payload: Vec<u8>) -> Result<(), Failure> {
        println!("audit: event `{}` ({}) of {} bytes", ctx.name, ctx.delivery.as_str(), payload.len());
        if payload == b"fail" {
            return Err(Failure::failed("audit refused"));
        }
        Ok(())
    }
}

busbar_guest::export_message!(Audit);
