//! `fail` — a service that fails on request: the payload `CLASS:message`,
//! where CLASS is `invalid`, `denied`, `unauthorized`, `retry` or `failed`,
//! makes it return that failure with that message. Any other payload gets
//! `invalid("expected CLASS:message")`.
//!
//! Build: `cargo build --release --target wasm32-wasip2` in `examples/`
//! (produces `target/wasm32-wasip2/release/fail.wasm`).

use busbar_guest::{Context, Failure, Service};

struct Fail;

impl Service for Fail {
    fn handle(_ctx: Context, payload: Vec<u8>) -> Result<Vec<u8>, Failure> {
        let text = String::from_utf8_lossy(&payload);
        let Some((class, message)) = text.split_once(':') else {
            return Err(Failure::invalid("expected CLASS:message"));
        };
        Err(match class {
            "invalid" => Failure::invalid(message),
            "denied" => Failure::denied(message),
            "unauthorized" => Failure::unauthorized(message),
            "retry" => Failure::retry(message),
            "failed" => Failure::failed(message),
            _ => Failure::invalid("expected CLASS:message"),
        })
    }
}

busbar_guest::export_service!(Fail);
