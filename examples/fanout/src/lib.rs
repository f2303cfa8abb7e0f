//! `fanout` — a service that calls `echo` N times through the bus (N is the
//! payload as a decimal ASCII integer) and replies with the number of calls
//! that succeeded, in decimal.
//!
//! Build: `cargo build --release --target wasm32-wasip2` in `examples/`
//! (produces `target/wasm32-wasip2/release/fanout.wasm`).

use busbar_guest::{Context, Failure, Service, bus};

struct Fanout;

impl Service for Fanout {
    fn handle(_ctx: Context, payload: Vec<u8>) -> Result<Vec<u8>, Failure> {
        let n: u32 = std::str::from_utf8(&payload)
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .ok_or_else(|| Failure::invalid("expected a decimal count"))?;
        let ok = (0..n).filter(|i| bus::call("echo", i.to_string().as_bytes(), None).is_ok()).count();
        Ok(ok.to_string().into_bytes())
    }
}

busbar_guest::export_service!(Fanout);
