//! `slow` — a service that works for as many milliseconds as its payload
//! says (decimal; 1000 if empty), then replies `worked N ms`. It keeps the CPU
//! busy rather than sleeping, like real work would, so the host can interrupt
//! it; the tests use it to kill a node in the middle of a handler.
//!
//! Build: `cargo build --release --target wasm32-wasip2` in `examples/`
//! (produces `target/wasm32-wasip2/release/slow.wasm`).

use busbar_guest::{Context, Failure, Service};
use std::time::{Duration, Instant};

struct Slow;

impl Service for Slow {
    fn handle(_ctx: Context, payload: Vec<u8>) -> Result<Vec<u8>, Failure> {
        let ms: u64 = std::str::from_utf8(&payload).ok().and_then(|s| s.trim().parse().ok()).unwrap_or(1000);
        let until = Instant::now() + Duration::from_millis(ms);
        while Instant::now() < until {
            std::hint::black_box(0u64);
        }
        Ok(format!("worked {ms} ms").into_bytes())
    }
}

busbar_guest::export_service!(Slow);
