//! `spin` — a service that never returns: it loops forever, so the host's
//! deadline (epoch interruption / fuel) must stop it.
//!
//! Build: `cargo build --release --target wasm32-wasip2` in `examples/`
//! (produces `target/wasm32-wasip2/release/spin.wasm`).

use busbar_guest::{Context, Failure, Service};

struct Spin;

impl Service for Spin {
    fn handle(_ctx: Context, payload: Vec<u8>) -> Result<Vec<u8>, Failure> {
        let mut n: u64 = 0;
        loop {
            // `black_box` keeps the optimiser from removing the (side-effect
            // free, hence otherwise undefined) infinite loop.
            n = std::hint::black_box(n.wrapping_add(payload.len() as u64 + 1));
        }
    }
}

busbar_guest::export_service!(Spin);
