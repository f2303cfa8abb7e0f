//! Compile bombs: a node compiles handler files in a child process (the
//! `busbar` binary as `compile-worker`) under `[node] compile_memory` and
//! `compile_timeout`, and refuses files past `max_handler_size`, so that a
//! file made to exhaust the compiler costs the node neither memory nor its
//! other handlers.

use busbar_tests::support::{
    Folder, RunningNode, SERVICE_LIFT, TEST_TIMEOUT, busbar_run, core_handle, service_component, start_own_runtime,
};
use std::path::Path;
use std::time::{Duration, Instant};

/// A 7 MB component of `functions` tiny functions: compiling 300,000 of
/// them takes wasmtime about 1.6 GiB and 9–26 s on a 2-core machine.
fn compile_bomb(functions: usize) -> Vec<u8> {
    let mut core = String::with_capacity(functions * 40);
    for i in 0..functions {
        core.push_str(&format!("(func $f{i} (result i32) i32.const {i})\n"));
    }
    core.push_str(&core_handle("unreachable"));
    service_component("", &core, "", SERVICE_LIFT)
}

/// `busbar run` serving `folder` under `config`, until it says it serves;
/// returns the child, the start-up log and the directory of its config,
/// cache and state.
fn run_node(folder: &Folder, config: &str) -> (RunningNode, Vec<String>, tempfile::TempDir) {
    let home = tempfile::tempdir().expect("tempdir");
    let (child, log, _rest) = busbar_run(Path::new(env!("CARGO_BIN_EXE_busbar")), folder, config, home.path());
    (child, log, home)
}

/// The peak resident memory of process `pid`, in bytes.
fn peak_memory(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("process status");
    let kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmHWM");
    kib << 10
}

#[test]
fn a_compile_bomb_is_refused_for_memory_while_the_node_stays_small() {
    let folder = Folder::with(&["echo"]);
    folder.write("bomb.wasm", &compile_bomb(300_000));
    let (child, log, _home) = run_node(&folder, "[node]\ncompile_memory = \"512MiB\"\n");
    let peak = peak_memory(child.id());
    child.terminate();
    let refused = log.iter().find(|l| l.contains("bomb")).unwrap_or_else(|| panic!("no word of the bomb: {log:#?}"));
    assert!(
        refused.contains("compiling it needed more than 512 MiB, the compile worker's limit (`[node] compile_memory`)"),
        "{refused}"
    );
    assert!(log.iter().any(|l| l.contains("serving")), "{log:#?}");
    eprintln!("node peak {} MiB; {refused}", peak >> 20);
    assert!(peak < 256 << 20, "the node itself grew to {} MiB", peak >> 20);
}

#[test]
fn a_compile_bomb_is_stopped_at_the_compile_timeout() {
    let folder = Folder::with(&["echo"]);
    folder.write("bomb.wasm", &compile_bomb(300_000));
    let started = Instant::now();
    let (child, log, _home) = run_node(&folder, "[node]\ncompile_memory = \"8GiB\"\ncompile_timeout = \"1s\"\n");
    let took = started.elapsed();
    child.terminate();
    let refused = log.iter().find(|l| l.contains("bomb")).unwrap_or_else(|| panic!("no word of the bomb: {log:#?}"));
    assert!(refused.contains("compiling it took longer than 1s, the compile worker's limit"), "{refused}");
    assert!(took < Duration::from_secs(30), "the start took {took:?}");
}

#[tokio::test]
async fn a_handler_file_past_max_handler_size_is_refused_before_it_is_read() {
    let folder = Folder::with(&["echo", "greet"]);
    std::fs::write(folder.path().join("big.wasm"), vec![0u8; 2 << 20]).expect("written");
    // A runtime of the node's own: the tests' shared one has the default limit.
    let (node, report) = start_own_runtime(&folder, "[node]\nmax_handler_size = \"1MiB\"\n").await;
    let skipped: Vec<_> = report.skipped.iter().map(|s| (s.path.clone(), s.reason.clone())).collect();
    assert_eq!(skipped.len(), 1, "{skipped:?}");
    assert!(
        skipped[0].1.contains("the file is 2 MiB, larger than the 1 MiB this node loads (`[node] max_handler_size`)"),
        "{skipped:?}"
    );
    let reply = node.call("greet", b"small".to_vec(), TEST_TIMEOUT).await;
    assert_eq!(reply.as_deref(), Ok(b"hello, small".as_slice()));
}

#[test]
fn a_node_whose_binary_was_replaced_on_disk_still_compiles_new_handlers() {
    // An upgrade replaces the binary while the node runs: its compile
    // workers must still be the running binary (artifacts of another
    // wasmtime build would not load).
    let home = tempfile::tempdir().expect("tempdir");
    let bin = tempfile::tempdir().expect("tempdir");
    let program = bin.path().join("busbar");
    std::fs::copy(env!("CARGO_BIN_EXE_busbar"), &program).expect("binary copied");
    let folder = Folder::with(&["echo"]);
    let (child, _log, rest) = busbar_run(&program, &folder, "[node]\nwatch = true\n", home.path());
    std::fs::remove_file(&program).expect("binary removed");
    std::fs::write(&program, b"#!/bin/sh\nexit 99\n").expect("another file in its place");
    std::fs::copy(busbar_tests::support::guest("greet"), folder.path().join("greet.wasm")).expect("greet added");
    let (found, word) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let line = rest
            .map_while(Result::ok)
            .find(|l| l.contains("greet") && (l.contains("handler added") || l.contains("rejected")));
        let _ = found.send(line);
    });
    let added = word.recv_timeout(Duration::from_secs(60)).ok().flatten();
    child.terminate();
    let added = added.expect("no word of greet");
    assert!(added.contains("handler added"), "{added}");
}
