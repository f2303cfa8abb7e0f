//! `greet` — a service that calls `echo` through the bus with its payload and
//! replies `hello, <echo's reply>`. A bus error becomes its failure (via `?`).
//!
//! Build: `cargo build --release --target wasm32-wasip2` in `examples/`
//! (produces `target/wasm32-wasip2/release/greet.wasm`).

use busbar_guest::{Context, Failure, Service, bus};

struct Greet;

impl Service for Greet {
    fn handle(_ctx: Context, payload: Vec<u8>) -> Result<Vec<u8>, Failure> {
        let reply = bus::call("echo", &payload, None)?;
        Ok([b"hello, ".as_slice(), &reply].concat())
    }
}

busbar_guest::export_service!(Greet);
