//! `fetch` — sends `GET URL` over `wasi:http` and replies `STATUS BODY`.
//! The payload is a URL, or `N URL` to send the request N times (the reply
//! is the last response). Its sidecar must grant the URL's origin
//! (`http = ["http://127.0.0.1:8080"]`); a refused request fails as
//! `denied`, any other HTTP error as `retry`, with the `wasi:http` error code
//! in the message.
//!
//! Build: `cargo build --release --target wasm32-wasip2` in `examples/`.

use busbar_guest::{Context, Failure, Service};

struct Fetch;

impl Service for Fetch {
    fn handle(_ctx: Context, payload: Vec<u8>) -> Result<Vec<u8>, Failure> {
        let text = String::from_utf8(payload).map_err(|_| Failure::Invalid("the payload is not UTF-8".into()))?;
        let (times, url) = match text.trim().split_once(' ') {
            Some((n, url)) => (n.parse::<u32>().map_err(|_| Failure::Invalid(format!("`{n}` is not a count")))?, url),
            None => (1, text.trim()),
        };
        let mut reply = Vec::new();
        for _ in 0..times {
            let response = busbar_guest::http::get(url)?;
            reply = format!("{} ", response.status).into_bytes();
            reply.extend_from_slice(&response.body);
        }
        Ok(reply)
    }
}

busbar_guest::export_service!(Fetch);
