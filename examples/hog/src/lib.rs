//! `hog` — a service that allocates memory without bound (1 MiB at a time,
//! touching every page), so the host's memory limit must stop it.
//!
//! Build: `cargo build --release --target wasm32-wasip2` in `examples/`
//! (produces `target/wasm32-wasip2/release/hog.wasm`).

use busbar_guest::{Context, Failure, Service};

struct Hog;

const MIB: usize = 1 << 20;

impl Service for Hog {
    fn handle(_ctx: Context, _payload: Vec<u8>) -> Result<Vec<u8>, Failure> {
        let mut hoard: Vec<Vec<u8>> = Vec::new();
        loop {
            // Filled with a non-zero byte so every page is really written.
            let chunk = vec![0xA5u8; MIB];
            hoard.push(std::hint::black_box(chunk));
        }
    }
}

busbar_guest::export_service!(Hog);
