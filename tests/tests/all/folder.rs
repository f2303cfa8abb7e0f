//! The handlers folder: files that are not valid handlers are skipped with a
//! reason and the rest load; sidecars set names and policy; compiled
//! artifacts are cached across starts.

use busbar::driver::default::DefaultDriver;
use busbar::runtime::{Runtime, RuntimeOptions};
use busbar::{Config, NodeBuilder};
use busbar_tests::support::{Folder, capture_logs, guest, start, start_on, wrong_world_guest};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

const SECOND: Duration = Duration::from_secs(5);

#[tokio::test]
async fn invalid_files_are_skipped_with_the_reason_and_the_rest_load() {
    let echo = std::fs::read(guest("echo")).expect("echo built");
    let folder = Folder::with(&["echo"]);
    folder
        .write("garbage.wasm", b"this is not wasm at all")
        .write("core.wasm", b"\0asm\x01\0\0\0")
        .write("truncated.wasm", &echo[..echo.len() / 2])
        .write("empty.wasm", b"")
        .write("notes.txt", b"ignored");
    folder.add("echo", "_private");
    let (node, report) = start_on(&DefaultDriver::new(), &folder, "").await;
    let reason = |file: &str| {
        report
            .skipped
            .iter()
            .find(|s| s.path.file_name().is_some_and(|f| f == file))
            .map(|s| s.reason.clone())
            .unwrap_or_else(|| panic!("{file} should be skipped: {:?}", report.skipped))
    };
    assert!(reason("garbage.wasm").contains("not a WebAssembly file"));
    assert!(reason("core.wasm").contains("core WebAssembly module, not a component"));
    assert!(reason("truncated.wasm").contains("does not compile"));
    assert!(reason("empty.wasm").contains("not a WebAssembly file"));
    assert!(reason("_private.wasm").contains("reserved"));
    assert_eq!(report.skipped.len(), 5);
    assert_eq!(report.loaded.len(), 1);
    assert_eq!(node.call("echo", b"ok".to_vec(), SECOND).await, Ok(b"ok".to_vec()));
}

#[tokio::test]
async fn a_component_with_the_wrong_world_is_refused() {
    let folder = Folder::with(&[]);
    folder.write("wrong.wasm", &wrong_world_guest());
    let (_node, report) = start_on(&DefaultDriver::new(), &folder, "").await;
    assert_eq!(report.skipped.len(), 1, "{:?}", report.skipped);
    let reason = &report.skipped[0].reason;
    assert!(reason.contains("exports neither") || reason.contains("does not compile"), "{reason}");
}

#[tokio::test]
async fn a_bad_sidecar_skips_its_handler_and_names_the_key() {
    let folder = Folder::with(&["echo", "greet"]);
    folder.sidecar("greet", "retries = [\"1s\"]\n");
    let (node, report) = start_on(&DefaultDriver::new(), &folder, "").await;
    assert_eq!(report.skipped.len(), 1);
    let reason = &report.skipped[0].reason;
    assert!(reason.contains("greet.toml") && reason.contains("retries"), "{reason}");
    assert!(node.call("echo", vec![], SECOND).await.is_ok());
}

#[tokio::test]
async fn the_first_handler_to_claim_a_name_keeps_it() {
    let folder = Folder::with(&["echo"]);
    folder.add("greet", "zzz").sidecar("zzz", "names = [\"echo\"]\n");
    let node = start(&folder).await;
    assert_eq!(node.call("echo", b"me".to_vec(), SECOND).await, Ok(b"me".to_vec()));
}

#[tokio::test]
async fn the_second_start_loads_compiled_artifacts_from_the_cache() {
    let cache = tempfile::tempdir().expect("tempdir");
    let folder = Folder::with(&["echo", "greet", "audit"]);
    let mut reports = Vec::new();
    for _ in 0..2 {
        let options = RuntimeOptions {
            cache_dir: Some(cache.path().to_path_buf()),
            max_instances: 10,
            ..RuntimeOptions::default()
        };
        let runtime = Arc::new(Runtime::new(&options).expect("runtime"));
        let mut config = Config::parse("", Path::new("test.toml")).expect("valid");
        config.node.handlers = folder.path().to_path_buf();
        let (node, report) = NodeBuilder::new(config)
            .runtime(runtime)
            .driver("default", Arc::new(DefaultDriver::new()))
            .start()
            .await
            .expect("starts");
        assert_eq!(node.call("greet", b"cache".to_vec(), SECOND).await, Ok(b"hello, cache".to_vec()));
        reports.push(report);
    }
    assert_eq!((reports[0].cached, reports[1].cached), (0, 3));
}

#[tokio::test]
async fn loading_a_large_folder_reports_its_progress_in_plain_lines() {
    let logs = capture_logs();
    let folder = Folder::with(&[]);
    for i in 0..23 {
        folder.add("echo", &format!("progress{i:02}"));
    }
    let node = start(&folder).await;
    assert_eq!(node.call("progress22", b"x".to_vec(), SECOND).await, Ok(b"x".to_vec()));
    let text = logs.contents();
    assert!(text.contains("loading 23 handlers"), "{text}");
    let steps: Vec<&str> = text.lines().filter(|l| l.contains(" of 23 handlers")).collect();
    assert_eq!(steps.len(), 10, "one line per tenth: {steps:#?}");
    assert!(steps.last().is_some_and(|l| l.contains("loaded 23 of 23 handlers")), "{steps:#?}");
}
