//! busbar runs WebAssembly component handlers on a message bus.
//!
//! A node joins a bus through a driver, loads *service* and *message*
//! handlers (wasm components described by `wit/`) from a folder, and invokes
//! them with byte payloads under retry and timeout control.
//!
//! # Layout
//! Data flows one way: driver → bus core (node) → registry → runtime.
//! - [`config`]: the node's TOML config, parsed strictly.
//! - [`units`]: durations and byte sizes as people write them.
//! - [`limits`]: the maximum of every value from outside; saturating deadlines.
//! - [`name`]: valid bus names; `_` is reserved.
//! - [`failure`]: failure classes and their retry rule, codes and exit codes.
//! - [`fault`]: host errors on a delivery path become `failed` answers, never
//!   a lost delivery; faults injected there in test builds.
//! - [`delivery`]: the four delivery modes, the envelope, retry arithmetic.
//! - [`driver`]: the `Driver`/`Connection`/`Inbound` traits;
//!   [`driver::default`] is the in-process bus, [`driver::nats`] the shared
//!   NATS bus (wire contract, JetStream dispatch, micro discovery).
//! - [`node`]: the bus core — loads handlers, registers names, delivers.
//! - [`handlers`]: the handlers folder and sidecar policies (limits, grants).
//! - [`gate`]: admission to a handler — concurrency, bounded queue, `overloaded`.
//! - [`registry`]: which handler serves which name (a table swapped whole).
//! - [`reload`]: the handler set and how a change of the folder updates it.
//! - [`progress`]: the start-up progress (a bar on a terminal, log lines otherwise).
//! - [`watch`]: the folder watch (notify), debounced into changed stems.
//! - [`runtime`]: wasmtime — engine, artifact cache, sandboxed invocations.
//! - [`stats`]: per-name counters and the discovery listing types.
//! - [`metrics`]: the node's Prometheus metrics.
//! - [`trace`]: W3C trace context from caller to handler and on.
//! - [`http`]: the optional HTTP listeners — `/metrics`, `/healthz`,
//!   `/readyz`, and the gateway (`POST /call/NAME`, …).
//! - [`weighted`]: weighted round robin over connections.
//! - [`toolkit`]: building handlers — the WIT contract, C bindings,
//!   componentize, `busbar new` scaffolds.
//! - [`cli`]: the `busbar` command line.

#![cfg_attr(test, allow(clippy::unwrap_used, clippy::expect_used, reason = "unit tests fail loudly"))]

pub mod cli;
pub mod config;
pub mod delivery;
pub mod driver;
pub mod fault;
pub mod handlers;
pub mod limits;
pub mod node;
pub mod ops;
#[cfg(test)]
mod outside_input;
pub mod runtime;
pub mod stats;
mod sync;
pub mod toolkit;
pub mod units;

pub use config::Config;
pub use delivery::failure::{Failure, FailureClass};
pub use node::{Node, NodeBuilder};
