//! busbar runs WebAssembly component handlers on a message bus.
//!
//! A node joins a bus through a driver, loads *service* and *message*
//! handlers (wasm components described by `wit/`) from a folder, and invokes
//! them with byte payloads under retry and timeout control.
//!
//! # Layout
//! Data flows one way: driver → bus core (node) → handlers (routing table)
//! → runtime. The folders are the rooms:
//! - [`delivery`]: the delivery rules — the four modes, the envelope and the
//!   outgoing [`delivery::Request`], the retry rule every driver asks
//!   ([`delivery::next_after`]), [`delivery::failure`] classes and
//!   [`delivery::name`]s.
//! - [`driver`]: how a node reaches a bus — the `Driver`/`Connection`
//!   traits; [`driver::default`] is the in-process bus, [`driver::nats`] the
//!   shared NATS bus (wire contract, JetStream dispatch, micro discovery).
//! - [`node`]: the bus core — starts a node, delivers what its connections
//!   receive to its handlers, sends out over a connection picked by weight.
//! - [`handlers`]: the handler lifecycle — the folder and its sidecars
//!   (limits, grants), compiling and swapping versions, the routing table,
//!   admission (concurrency, queue), the folder watch, start-up progress.
//! - [`runtime`]: wasm execution — wasmtime engine, artifact cache, export
//!   checks, sandboxed invocations.
//! - [`ops`]: the operations side — metrics, health and the HTTP gateway,
//!   W3C trace context, the serve lifecycle of `busbar run`.
//! - [`toolkit`]: building handlers — the WIT contract, C bindings,
//!   componentize, `busbar new` scaffolds.
//!
//! Beside them: [`config`] (the TOML config, parsed strictly), [`units`]
//! (durations and sizes as people write them), [`limits`] (the maximum of
//! every value from outside; saturating deadlines), [`fault`] (a host error
//! on a delivery path answers `failed`, never loses the delivery),
//! [`stats`] (per-name counters and the discovery listings) and [`cli`]
//! (the `busbar` command line: arguments in, text out).

#![cfg_attr(test, allow(clippy::unwrap_used, clippy::expect_used, reason = "unit tests fail loudly"))]

pub mod cli;
pub mod config;
pub mod delivery;
pub mod driver;
pub mod fault;
pub mod handlers;
pub mod keyvalue;
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
