//! busbar's integration tests: real compiled guests on real nodes, one test
//! binary so the wasmtime link happens once.

mod cli;
mod config;
mod deliveries;
mod failures;
mod folder;
mod retries;
mod sandbox;
