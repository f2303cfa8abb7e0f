//! busbar's integration tests: real compiled guests on real nodes, one test
//! binary so the wasmtime link happens once.

#![allow(clippy::expect_used, clippy::unwrap_used, reason = "a failed expectation is a failed test")]

mod bounds;
mod cli;
mod compile;
mod config;
mod deliveries;
mod durable;
mod embedding;
mod failures;
mod folder;
mod http;
mod keyvalue;
mod languages;
mod limits;
mod nats;
mod nats_cluster;
mod nats_cluster_work;
mod nats_flow;
mod nats_interop;
mod nats_keyvalue;
mod nats_reload;
mod nats_tls;
mod ops;
mod reload;
mod retries;
mod sandbox;
mod scaffold;
mod trace_context;
