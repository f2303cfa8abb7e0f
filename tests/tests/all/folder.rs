//! The handlers folder: files that are not valid handlers are skipped with a
//! reason and the rest load; sidecars set names and policy; compiled
//! artifacts are cached across starts.

use busbar::FailureClass;
use busbar::driver::default::DefaultDriver;
use busbar::runtime::{Runtime, RuntimeOptions};
use busbar::{Config, NodeBuilder};
use busbar_tests::support::TEST_TIMEOUT;
use busbar_tests::support::{
    Folder, SERVICE_LIFT, capture_logs, core_handle, guest, service_component, start, start_on, start_watching,
    wrong_world_guest,
};
use std::path::Path;
use std::sync::Arc;

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
    assert_eq!(node.call("echo", b"ok".to_vec(), TEST_TIMEOUT).await, Ok(b"ok".to_vec()));
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
    assert!(node.call("echo", vec![], TEST_TIMEOUT).await.is_ok());
}

#[tokio::test]
async fn the_first_handler_to_claim_a_name_keeps_it() {
    let folder = Folder::with(&["echo"]);
    folder.add("greet", "zzz").sidecar("zzz", "names = [\"echo\"]\n");
    let node = start(&folder).await;
    assert_eq!(node.call("echo", b"me".to_vec(), TEST_TIMEOUT).await, Ok(b"me".to_vec()));
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
        let (node, report) =
            NodeBuilder::new(config).runtime(runtime).hub(DefaultDriver::new()).start().await.expect("starts");
        assert_eq!(node.call("greet", b"cache".to_vec(), TEST_TIMEOUT).await, Ok(b"hello, cache".to_vec()));
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
    assert_eq!(node.call("progress22", b"x".to_vec(), TEST_TIMEOUT).await, Ok(b"x".to_vec()));
    let text = logs.contents();
    assert!(text.contains("loading 23 handlers"), "{text}");
    let steps: Vec<&str> = text.lines().filter(|l| l.contains(" of 23 handlers")).collect();
    assert_eq!(steps.len(), 10, "one line per tenth: {steps:#?}");
    assert!(steps.last().is_some_and(|l| l.contains("loaded 23 of 23 handlers")), "{steps:#?}");
}

/// A service whose `handle` takes only the payload and returns bytes: the
/// export exists, under the right name, with the wrong type.
fn wrong_signature() -> Vec<u8> {
    let core = "(func (export \"handle\") (param i32 i32) (result i32) unreachable)";
    let lift = r#"(func $handle (param "payload" (list u8)) (result (list u8))
    (canon lift (core func $i "handle") (memory (core memory $i "memory")) (realloc (core func $i "realloc"))))"#;
    service_component("", core, "", lift)
}

#[tokio::test]
async fn a_wrong_export_signature_is_refused_at_load_and_the_old_version_keeps_serving() {
    let folder = Folder::with(&["echo"]);
    let node = start_watching(&folder).await;
    folder.put("echo.wasm", &wrong_signature());
    let rejected = busbar_tests::support::eventually(TEST_TIMEOUT, async || node.reloads().rejected == 1).await;
    assert!(rejected, "not rejected: {:?}", node.reloads());
    assert_eq!(node.call("echo", b"old".to_vec(), TEST_TIMEOUT).await, Ok(b"old".to_vec()));

    let error = busbar_tests::support::runtime().load(&wrong_signature()).err().expect("refused").to_string();
    assert!(
        error.contains("busbar:handler/service@0.1.0")
            && error.contains("`handle` is `func(payload: list<u8>) -> list<u8>`")
            && error.contains("expects `func(ctx: context, payload: list<u8>) -> result<list<u8>, failure>`"),
        "{error}"
    );
}

#[tokio::test]
async fn a_missing_import_names_the_function_first() {
    let imports = r#"(import "wasi:cli/environment@0.2.0" (instance $env (export "get-everything" (func (result u32)))))
  (alias export $env "get-everything" (func $get))
  (core func $get-core (canon lower (func $get)))"#;
    let core = format!("(import \"env\" \"get\" (func (result i32))) {}", core_handle("unreachable"));
    let bytes =
        service_component(imports, &core, "(with \"env\" (instance (export \"get\" (func $get-core))))", SERVICE_LIFT);
    let error = busbar_tests::support::runtime().load(&bytes).err().expect("refused").to_string();
    let function = error.find("`get-everything`").unwrap_or(usize::MAX);
    let interface = error.find("`wasi:cli/environment@0.2.0`").unwrap_or(0);
    assert!(function < interface, "the missing function comes first: {error}");
    assert!(error.contains("which busbar does not provide"), "{error}");
}

#[tokio::test]
async fn a_guest_that_exits_reports_its_status_before_anything_else() {
    let imports = r#"(import "wasi:cli/exit@0.2.0" (instance $exit (export "exit" (func (param "status" (result))))))
  (alias export $exit "exit" (func $exit-fn))
  (core func $exit-core (canon lower (func $exit-fn)))"#;
    let core = format!(
        "(import \"wasi\" \"exit\" (func $exit (param i32))) {}",
        core_handle("(call $exit (i32.const 1)) unreachable")
    );
    let bytes = service_component(
        imports,
        &core,
        "(with \"wasi\" (instance (export \"exit\" (func $exit-core))))",
        SERVICE_LIFT,
    );
    let folder = Folder::with(&[]);
    folder.write("quits.wasm", &bytes);
    let node = start(&folder).await;
    let trapped = node.call("quits", vec![], TEST_TIMEOUT).await.expect_err("it exits");
    assert_eq!(trapped.class, FailureClass::Trapped);
    assert_eq!(trapped.message, "handler `quits` trapped: it exited with status 1 (WASI `exit`)");
}

#[tokio::test]
async fn a_reserved_file_name_without_a_sidecar_names_the_file_itself() {
    let folder = Folder::with(&["echo"]);
    folder.add("echo", "_control");
    let (_node, report) = start_on(&DefaultDriver::new(), &folder, "").await;
    let skipped = report.skipped.iter().find(|s| s.path.ends_with("_control.wasm")).expect("skipped");
    let control = folder.path().join("_control.wasm");
    assert!(skipped.reason.starts_with(&control.display().to_string()), "{}", skipped.reason);
    assert!(skipped.reason.contains("reserved") && skipped.reason.contains("rename the file"), "{}", skipped.reason);
}
