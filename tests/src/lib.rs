//! Integration tests for busbar: they run the host against the example guests
//! in `examples/`, which `build.rs` compiles to components for `wasm32-wasip2`.

/// Paths of the example guest components built by `build.rs`: one constant
/// per example crate (`ECHO`, `GREET`, ...), plus `ALL` as (name, path) pairs.
/// `env!("BUSBAR_GUESTS_DIR")` is the directory holding them.
pub mod guests {
    include!(concat!(env!("OUT_DIR"), "/guests.rs"));
}
pub mod cluster;
pub mod nats;
pub mod support;
pub mod web;
