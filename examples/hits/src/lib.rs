//! `hits` — a handler that does real work: it GETs the URL in its payload
//! over `wasi:http` and counts the request in key-value bucket `counter`
//! (key `hits`), replying `STATUS BODY COUNT`. With an empty payload it only
//! counts, replying `COUNT`.
//!
//! Its sidecar grants both (`hits.toml`):
//!
//! ```toml
//! http = ["http://127.0.0.1:8080"]
//! keyvalue = ["counter"]
//! ```
//!
//! Build: `cargo build --release --target wasm32-wasip2` in `examples/`.

use busbar_guest::keyvalue::{atomics, store};
use busbar_guest::{Context, Failure, ResultExt, Service};

struct Hits;

impl Service for Hits {
    fn handle(_ctx: Context, payload: Vec<u8>) -> Result<Vec<u8>, Failure> {
        let url = String::from_utf8(payload).or_invalid("the URL")?;
        let url = url.trim();
        let fetched = if url.is_empty() { None } else { Some(busbar_guest::http::get(url)?) };
        let bucket = store::open("counter").or_retry("opening bucket `counter`")?;
        let count = atomics::increment(&bucket, "hits", 1).or_retry("counting in bucket `counter`")?;
        Ok(match fetched {
            Some(response) => format!("{} {} {count}", response.status, String::from_utf8_lossy(&response.body)),
            None => count.to_string(),
        }
        .into_bytes())
    }
}

busbar_guest::export_service!(Hits);
