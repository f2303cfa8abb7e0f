//! `{{name}}`: a busbar service. It replies `hello, <payload>`; an empty or
//! non-UTF-8 payload is refused as `invalid` (never retried).
//!
//! Build:  cargo build --release
//! Deploy: cp target/wasm32-wasip2/release/{{lib}}.wasm HANDLERS/{{name}}.wasm

use busbar_guest::{Context, Failure, Service};

struct Handler;

impl Service for Handler {
    fn handle(_ctx: Context, payload: Vec<u8>) -> Result<Vec<u8>, Failure> {
        if payload.is_empty() {
            return Err(Failure::invalid("send a name to greet"));
        }
        // Not UTF-8: `invalid` too (`?` converts the error).
        let name = String::from_utf8(payload)?;
        // Another handler is one call away; `?` turns a bus error into a
        // failure of the same retry class:
        //     let reply = busbar_guest::bus::call("echo", name.as_bytes(), None)?;
        Ok(format!("hello, {name}").into_bytes())
    }
}

busbar_guest::export_service!(Handler);
