//! `whoami` — both a service and a message handler (world `handler`).
//!
//! As a service it replies with its context as one line of JSON:
//! `{"name":..,"delivery":"call|dispatch|broadcast|rolecast","attempt":N,"final":bool,"time_left_ms":N,"headers":[["k","v"],...]}`.
//! As a message handler it does nothing and returns `Ok`.
//!
//! Build: `cargo build --release --target wasm32-wasip2` in `examples/`
//! (produces `target/wasm32-wasip2/release/whoami.wasm`).

use std::fmt::Write as _;

use busbar_guest::{Context, Failure, Message, Service};

struct WhoAmI;

impl Service for WhoAmI {
    fn handle(ctx: Context, _payload: Vec<u8>) -> Result<Vec<u8>, Failure> {
        Ok(context_json(&ctx).into_bytes())
    }
}

impl Message for WhoAmI {
    fn handle(_ctx: Context, _payload: Vec<u8>) -> Result<(), Failure> {
        Ok(())
    }
}

busbar_guest::export_handler!(WhoAmI);

/// The context as one line of JSON, written by hand to keep the guest small.
fn context_json(ctx: &Context) -> String {
    let mut out = String::from("{\"name\":");
    push_str(&mut out, &ctx.name);
    let _ = write!(
        out,
        ",\"delivery\":\"{}\",\"attempt\":{},\"final\":{},\"time_left_ms\":{},\"headers\":[",
        ctx.delivery.as_str(),
        ctx.attempt,
        ctx.is_final(),
        ctx.time_left_ms
    );
    for (i, (name, value)) in ctx.headers.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push('[');
        push_str(&mut out, name);
        out.push(',');
        push_str(&mut out, value);
        out.push(']');
    }
    out.push_str("]}");
    out
}

/// Appends `s` as a JSON string literal.
fn push_str(out: &mut String, s: &str) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
}
