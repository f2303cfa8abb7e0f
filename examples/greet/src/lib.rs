//! `greet` — a service that calls `echo` through the bus with its payload and
//! replies `hello, <echo's reply>`. An empty or non-UTF-8 payload is
//! `invalid`; a bus error becomes its failure with the same retry behaviour
//! (via `?`). The Python, JavaScript and C examples (`greet-py`, `greet-js`,
//! `greet-c`) behave the same way.
//!
//! Build: `cargo build --release --target wasm32-wasip2` in `examples/`
//! (produces `target/wasm32-wasip2/release/greet.wasm`).

use busbar_guest::{Context, Failure, Service, bus};

struct Greet;

impl Service for Greet {
    fn handle(_ctx: Context, payload: Vec<u8>) -> Result<Vec<u8>, Failure> {
        if payload.is_empty() {
            return Err(Failure::invalid("greet needs a name"));
        }
        if std::str::from_utf8(&payload).is_err() {
            return Err(Failure::invalid("the name is not UTF-8"));
        }
        let reply = bus::call("echo", &payload, None)?;
        Ok([b"hello, ".as_slice(), &reply].concat())
    }
}

busbar_guest::export_service!(Greet);
