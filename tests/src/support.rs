//! Test support: handler folders made of real compiled guests, nodes started
//! on a private in-process hub, and one shared wasmtime runtime per test
//! process (as in production: one engine per process).

#![allow(clippy::expect_used, clippy::unwrap_used, reason = "test set-up fails loudly")]

use busbar::driver::default::DefaultDriver;
use busbar::node::LoadReport;
use busbar::runtime::{Runtime, RuntimeOptions};
use busbar::{Config, FailureClass, Node, NodeBuilder};
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

/// How long a test waits for an answer that should come at once: generous
/// on a loaded 2-core machine, short enough that a hang fails the test.
pub const TEST_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

/// The five failure classes a handler can answer, as the `fail` guest
/// spells them (`CLASS:message`) and as the caller receives them.
pub const HANDLER_CLASSES: [(&str, FailureClass); 5] = [
    ("invalid", FailureClass::Invalid),
    ("denied", FailureClass::Denied),
    ("unauthorized", FailureClass::Unauthorized),
    ("retry", FailureClass::Retry),
    ("failed", FailureClass::Failed),
];

/// The suffixes of the example handlers written in other languages than
/// Rust (`echo-py`, `greet-js`, ...): Python, JavaScript, C.
pub const OTHER_LANGUAGES: [&str; 3] = ["py", "js", "c"];

/// The compiled guest `name`: a Rust example (built by this crate's build
/// script from `examples/`) or, named `NAME-py`, `NAME-js` or `NAME-c`, an
/// example in another language, built by `./dev handlers` (which `./dev
/// test` runs first) into `target/handlers`.
pub fn guest(name: &str) -> PathBuf {
    if OTHER_LANGUAGES.iter().any(|lang| name.ends_with(&format!("-{lang}"))) {
        let path = repo().join("target/handlers").join(format!("{name}.wasm"));
        assert!(
            path.exists(),
            "guest {name} was not built: run `./dev handlers` (it installs the Python, JavaScript \
             and C toolchains and builds examples/python, examples/js and examples/c); looked for {}",
            path.display()
        );
        return path;
    }
    let path = Path::new(env!("BUSBAR_GUESTS_DIR")).join(format!("{name}.wasm"));
    assert!(path.exists(), "guest {name} was not built: {}", path.display());
    path
}

/// The repository's root directory.
pub fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("tests/ has a parent").to_path_buf()
}

/// The version busbar reports for guest `name`: its short content hash.
pub fn guest_version(name: &str) -> String {
    busbar::runtime::content_hash(&std::fs::read(guest(name)).expect("guest built"))[..12].to_string()
}

/// The `echo` guest with its export renamed: a component of another world
/// than busbar's (a busbar guest built against the wrong WIT).
pub fn wrong_world_guest() -> Vec<u8> {
    let mut bytes = std::fs::read(guest("echo")).expect("echo built");
    let from = b"busbar:handler/service@0.1.0";
    let at = bytes.windows(from.len()).position(|w| w == from).expect("export name present");
    bytes[at..at + from.len()].copy_from_slice(b"busbar:handler/servixe@0.1.0");
    bytes
}

/// The process's runtime, with an artifact cache under `target/` so repeated
/// test runs do not recompile the guests.
pub fn runtime() -> Arc<Runtime> {
    static RUNTIME: OnceLock<Arc<Runtime>> = OnceLock::new();
    RUNTIME
        .get_or_init(|| {
            let cache = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/test-artifact-cache");
            let options = RuntimeOptions { cache_dir: Some(cache), max_instances: 200, ..RuntimeOptions::default() };
            Arc::new(Runtime::new(&options).expect("the wasm runtime starts"))
        })
        .clone()
}

/// A temporary handlers folder.
pub struct Folder {
    dir: tempfile::TempDir,
    /// A directory of its own beside it, for a `busbar run` child's state
    /// (`XDG_STATE_HOME`).
    state: tempfile::TempDir,
}

impl Folder {
    /// A folder holding the named guests, each as `NAME.wasm`.
    pub fn with(guests: &[&str]) -> Self {
        let folder = Self { dir: tempfile::tempdir().expect("tempdir"), state: tempfile::tempdir().expect("tempdir") };
        for g in guests {
            folder.add(g, g);
        }
        folder
    }

    /// Copies guest `guest` into the folder as `name.wasm`.
    pub fn add(&self, guest_name: &str, name: &str) -> &Self {
        self.add_file(&guest(guest_name), name)
    }

    /// Copies the component at `path` into the folder as `name.wasm`.
    pub fn add_file(&self, path: &Path, name: &str) -> &Self {
        std::fs::copy(path, self.path().join(format!("{name}.wasm")))
            .unwrap_or_else(|e| panic!("copy {}: {e}", path.display()));
        self
    }

    /// Writes the sidecar `name.toml`.
    pub fn sidecar(&self, name: &str, toml: &str) -> &Self {
        self.write(&format!("{name}.toml"), toml.as_bytes())
    }

    /// Puts `bytes` into the folder as `file` the way deployment tools do:
    /// written to a hidden temporary file, then renamed into place (atomic).
    pub fn put(&self, file: &str, bytes: &[u8]) -> &Self {
        let temporary = self.path().join(format!(".{file}.tmp"));
        std::fs::write(&temporary, bytes).expect("write the temporary file");
        std::fs::rename(&temporary, self.path().join(file)).expect("rename into place");
        self
    }

    /// [`Folder::put`] of guest `guest_name` as `name.wasm`.
    pub fn put_guest(&self, guest_name: &str, name: &str) -> &Self {
        self.put(&format!("{name}.wasm"), &std::fs::read(guest(guest_name)).expect("guest built"))
    }

    /// Removes `file` from the folder.
    pub fn remove(&self, file: &str) -> &Self {
        std::fs::remove_file(self.path().join(file)).expect("remove from the folder");
        self
    }

    /// Writes any file into the folder.
    pub fn write(&self, file: &str, bytes: &[u8]) -> &Self {
        std::fs::write(self.path().join(file), bytes).expect("write into the folder");
        self
    }

    /// Where a `busbar run` child serving this folder keeps its state
    /// (give it as `XDG_STATE_HOME`), so that tests never share one.
    pub fn state_home(&self) -> &Path {
        self.state.path()
    }

    /// The folder's path.
    pub fn path(&self) -> &Path {
        self.dir.path()
    }
}

/// Starts a node serving `folder` with `config` (TOML text) on `hub`.
pub async fn start_on(hub: &DefaultDriver, folder: &Folder, config: &str) -> (Node, LoadReport) {
    let mut config = Config::parse(config, Path::new("test.toml")).expect("test config is valid");
    config.node.handlers = folder.path().to_path_buf();
    NodeBuilder::new(config).runtime(runtime()).hub(hub.clone()).start().await.expect("node starts")
}

/// Like [`start_on`] on a private hub, but with a runtime of the node's own,
/// built from `config` (the shared one ignores `[node] instances`).
pub async fn start_own_runtime(folder: &Folder, config: &str) -> (Node, LoadReport) {
    let mut config = Config::parse(config, Path::new("test.toml")).expect("test config is valid");
    config.node.handlers = folder.path().to_path_buf();
    NodeBuilder::new(config).hub(DefaultDriver::new()).start().await.expect("node starts")
}

/// Why handler `stem` of `folder` is skipped at start once its sidecar says
/// `sidecar`, under the node config `config` (TOML); fails the test unless
/// exactly that one file is skipped.
pub async fn refusal(folder: &Folder, stem: &str, sidecar: &str, config: &str) -> String {
    folder.sidecar(stem, sidecar);
    let (_node, report) = start_on(&DefaultDriver::new(), folder, config).await;
    assert_eq!(report.skipped.len(), 1, "{sidecar}: {:?}", report.skipped);
    report.skipped[0].reason.clone()
}

/// Starts a lone node serving `folder` with default config on a private hub.
pub async fn start(folder: &Folder) -> Node {
    start_on(&DefaultDriver::new(), folder, "").await.0
}

/// Starts a lone node on a private hub that serves `folder` and applies its
/// changes live (as `busbar run` does).
pub async fn start_watching(folder: &Folder) -> Node {
    let mut config = Config::parse("", Path::new("test.toml")).expect("test config is valid");
    config.node.handlers = folder.path().to_path_buf();
    NodeBuilder::new(config)
        .runtime(runtime())
        .hub(DefaultDriver::new())
        .watch(true)
        .start()
        .await
        .expect("node starts")
        .0
}

/// Log lines captured from the whole test process (`busbar=info`).
pub struct Logs(Arc<std::sync::Mutex<Vec<u8>>>);

impl Logs {
    /// Everything logged so far.
    pub fn contents(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap_or_else(|e| e.into_inner())).into_owned()
    }
}

struct LogWriter(Arc<std::sync::Mutex<Vec<u8>>>);

impl std::io::Write for LogWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Starts capturing the process's logs (once per process) and returns them.
pub fn capture_logs() -> Logs {
    static BUFFER: OnceLock<Arc<std::sync::Mutex<Vec<u8>>>> = OnceLock::new();
    let buffer = BUFFER
        .get_or_init(|| {
            let buffer = Arc::new(std::sync::Mutex::new(Vec::new()));
            let sink = buffer.clone();
            tracing_subscriber::fmt()
                .with_env_filter("busbar=info")
                .with_ansi(false)
                .with_writer(move || LogWriter(sink.clone()))
                .try_init()
                .expect("no other subscriber in the test process");
            buffer
        })
        .clone();
    Logs(buffer)
}

/// The config of a node named `id` in group `group` on the NATS server at `url`
/// (project `shop`, so subjects are `call.shop.<name>` and so on).
pub fn nats_config(url: &str, id: &str, group: &str, extra: &str) -> String {
    format!(
        "[node]\nid = \"{id}\"\nproject = \"shop\"\n{extra}\n[bus]\ndriver = \"nats\"\ngroup = \"{group}\"\nsetting = {{ url = \"{url}\" }}\n"
    )
}

/// Starts a node serving `folder` on the NATS server at `url`.
pub async fn start_nats(url: &str, folder: &Folder, id: &str, group: &str, extra: &str) -> (Node, LoadReport) {
    nats_node(url, folder, id, group, extra, false).await
}

/// [`start_nats`], applying changes of `folder` live.
pub async fn start_nats_watching(url: &str, folder: &Folder, id: &str) -> Node {
    nats_node(url, folder, id, "", "", true).await.0
}

async fn nats_node(url: &str, folder: &Folder, id: &str, group: &str, extra: &str, watch: bool) -> (Node, LoadReport) {
    start_config(&nats_config(url, id, group, extra), folder, watch).await.expect("node starts on NATS")
}

/// [`nats_config`] of node `id` with more `[bus] setting` keys (`settings`:
/// entries of a TOML inline table, e.g. `replicas = 3`).
pub fn nats_config_with(url: &str, id: &str, settings: &str) -> String {
    nats_config(url, id, "", "").replace(&format!("url = \"{url}\" }}"), &format!("url = \"{url}\", {settings} }}"))
}

/// The config of node `id` on every server of `urls`, the `first`th first
/// (the client library may still pick another), with `replicas` copies of
/// the streams (project `shop`).
pub fn nats_config_on(urls: &[String], id: &str, first: usize, replicas: usize) -> String {
    let mut urls = urls.to_vec();
    let turn = first % urls.len().max(1);
    urls.rotate_left(turn);
    let urls = urls.iter().map(|u| format!("\"{u}\"")).collect::<Vec<_>>().join(", ");
    format!(
        "[node]\nid = \"{id}\"\nproject = \"shop\"\n[bus]\ndriver = \"nats\"\nsetting = {{ url = [{urls}], replicas = {replicas} }}\n"
    )
}

/// Starts a node of config text `config` serving `folder`; the start error, if any.
pub async fn start_config(config: &str, folder: &Folder, watch: bool) -> Result<(Node, LoadReport), String> {
    let mut config = Config::parse(config, Path::new("test.toml")).map_err(|e| e.to_string())?;
    config.node.handlers = folder.path().to_path_buf();
    // Dispatches on the default driver stay in memory unless the test says where.
    config.node.state.get_or_insert_default();
    NodeBuilder::new(config).runtime(runtime()).watch(watch).start().await.map_err(|e| e.to_string())
}

/// A client (serves nothing) on the NATS server at `url`.
pub async fn nats_client(url: &str) -> Node {
    let config = Config::parse(&nats_config(url, "client", "", ""), Path::new("test.toml")).expect("valid config");
    NodeBuilder::new(config).runtime(runtime()).client().start().await.expect("client connects").0
}

/// Callers that call one name back to back until stopped, checking every
/// reply: continuous load for tests that change a node under it.
pub struct CallLoad {
    stop: Arc<std::sync::atomic::AtomicBool>,
    callers: Vec<tokio::task::JoinHandle<(u64, Vec<String>)>>,
}

impl CallLoad {
    /// Starts `callers` tasks calling `name` on `node` with `payload`; a
    /// reply not in `accepted`, or a failure, is recorded.
    pub fn start(
        node: &Node,
        callers: usize,
        name: &'static str,
        payload: &'static [u8],
        accepted: &'static [&'static [u8]],
    ) -> Self {
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let callers = (0..callers)
            .map(|_| {
                let (node, stop) = (node.clone(), stop.clone());
                tokio::spawn(async move {
                    let (mut calls, mut wrong) = (0u64, Vec::new());
                    while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                        match node.call(name, payload.to_vec(), std::time::Duration::from_secs(5)).await {
                            Ok(reply) if accepted.contains(&reply.as_slice()) => {}
                            other => wrong.push(format!("{other:?}")),
                        }
                        calls += 1;
                    }
                    (calls, wrong)
                })
            })
            .collect();
        Self { stop, callers }
    }

    /// Stops the callers; returns how many calls they made and what went
    /// wrong (failures and unexpected replies).
    pub async fn stop(self) -> (u64, Vec<String>) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        let (mut calls, mut wrong) = (0, Vec::new());
        for caller in self.callers {
            let (c, w) = caller.await.expect("a caller task panicked");
            calls += c;
            wrong.extend(w);
        }
        (calls, wrong)
    }
}

/// Waits until `check` holds, polling every 10 ms, for at most `limit`;
/// returns whether it held. For outcomes that arrive asynchronously
/// (events, dispatches), where there is no reply to wait for.
pub async fn eventually(limit: std::time::Duration, mut check: impl AsyncFnMut() -> bool) -> bool {
    let deadline = std::time::Instant::now() + limit;
    loop {
        if check().await {
            return true;
        }
        if std::time::Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
}

/// Requests served for `name` on `node`.
pub fn served(node: &Node, name: &str) -> u64 {
    node.local_stats().iter().find(|s| s.name == name).map_or(0, |s| s.requests)
}

/// The value of `series` (a metric's name with its labels, as
/// `busbar_queue_pending{name="echo"}`) in the Prometheus text `text`.
pub fn metric(text: &str, series: &str) -> Option<f64> {
    let prefix = format!("{series} ");
    text.lines().find_map(|l| l.strip_prefix(&prefix)).and_then(|v| v.trim().parse().ok())
}

/// The value of `metric{name="NAME"}` in `node`'s metrics.
pub fn named_metric(node: &Node, metric_name: &str, name: &str) -> Option<f64> {
    metric(&node.metrics_text(), &format!("{metric_name}{{name=\"{name}\"}}"))
}

/// Dispatches `node` ran for `name` (failed ones included).
pub fn dispatched(node: &Node, name: &str) -> u64 {
    let series = format!("busbar_invocations_total{{name=\"{name}\",mode=\"dispatch\"}}");
    metric(&node.metrics_text(), &series).map_or(0, |v| v as u64)
}

/// Hand-written components (WAT) that no guest toolchain makes: a
/// `busbar:handler/service@0.1.0` export whose `handle` is built from
/// `lift` (a component-level func definition) over the core module `core`,
/// with the busbar types imported the way `wit-component` does it, plus any
/// `imports`.
pub fn service_component(imports: &str, core: &str, instantiate: &str, lift: &str) -> Vec<u8> {
    let text = format!(
        r#"(component
  (import "busbar:handler/types@0.1.0" (instance $types
    (type $delivery (enum "call" "dispatch" "broadcast" "rolecast"))
    (export "delivery" (type $delivery-e (eq $delivery)))
    (type $context (record
      (field "name" string)
      (field "delivery" $delivery-e)
      (field "attempt" u32)
      (field "final" bool)
      (field "time-left-ms" u64)
      (field "headers" (list (tuple string string)))))
    (export "context" (type (eq $context)))
    (type $failure (variant
      (case "invalid" string) (case "denied" string) (case "unauthorized" string)
      (case "retry" string) (case "failed" string)))
    (export "failure" (type (eq $failure)))))
  (alias export $types "context" (type $context))
  (alias export $types "failure" (type $failure))
  {imports}
  (core module $m
    {core}
    (memory (export "memory") 1)
    (global $heap (mut i32) (i32.const 1024))
    (func (export "realloc") (param i32 i32 i32 i32) (result i32)
      (local $p i32)
      (local.set $p (global.get $heap))
      (global.set $heap (i32.and (i32.add (i32.add (global.get $heap) (local.get 3)) (i32.const 7)) (i32.const -8)))
      (local.get $p)))
  (core instance $i (instantiate $m {instantiate}))
  {lift}
  (instance $service (export "handle" (func $handle)))
  (export "busbar:handler/service@0.1.0" (instance $service)))"#
    );
    wat::parse_str(&text).unwrap_or_else(|e| panic!("the WAT is valid: {e}\n{text}"))
}

/// The lift of a `handle` with busbar's service signature over core export `handle`.
pub const SERVICE_LIFT: &str = r#"(func $handle (param "ctx" $context) (param "payload" (list u8)) (result (result (list u8) (error $failure)))
    (canon lift (core func $i "handle") (memory (core memory $i "memory")) (realloc (core func $i "realloc"))))"#;

/// A core `handle` of the service signature's flattened shape that runs `body`.
pub fn core_handle(body: &str) -> String {
    format!("(func (export \"handle\") (param i32 i32 i32 i32 i32 i64 i32 i32 i32 i32) (result i32) {body})")
}

/// Waits for `child` to exit, at most `limit`; kills it and returns `None`
/// if it has not exited by then, so a hanging `busbar` fails the test
/// instead of hanging it.
pub fn wait_within(child: &mut std::process::Child, limit: std::time::Duration) -> Option<std::process::ExitStatus> {
    let deadline = std::time::Instant::now() + limit;
    loop {
        match child.try_wait() {
            Ok(Some(status)) => return Some(status),
            Ok(None) if std::time::Instant::now() < deadline => {
                std::thread::sleep(std::time::Duration::from_millis(10));
            }
            _ => {
                let _ = child.kill();
                let _ = child.wait();
                return None;
            }
        }
    }
}

/// The rest of a `busbar run` child's log, line by line.
pub type ChildLog = std::io::Lines<std::io::BufReader<std::process::ChildStderr>>;

/// A `busbar run` child, killed (SIGKILL) when dropped, so that a failed
/// test leaves no node behind.
pub struct RunningNode {
    child: Option<std::process::Child>,
}

impl RunningNode {
    /// Its process id.
    pub fn id(&self) -> u32 {
        self.child.as_ref().map_or(0, std::process::Child::id)
    }

    /// Kills it with SIGKILL, as a crash would, and reaps it.
    pub fn kill9(mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Sends SIGTERM and waits (at most 10 s) for it to exit.
    pub fn terminate(mut self) -> std::process::ExitStatus {
        let mut child = self.child.take().expect("running");
        let _ = std::process::Command::new("kill").args(["-TERM", &child.id().to_string()]).status();
        wait_within(&mut child, std::time::Duration::from_secs(10)).expect("busbar stops within 10 s of SIGTERM")
    }

    /// Waits (at most `limit`) for it to exit on its own.
    pub fn exit_within(mut self, limit: std::time::Duration) -> Option<std::process::ExitStatus> {
        let mut child = self.child.take().expect("running");
        wait_within(&mut child, limit)
    }
}

impl Drop for RunningNode {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// A `busbar run` child: the binary `program` (usually
/// `CARGO_BIN_EXE_busbar`) serving `folder` under the config text
/// `config`, written with its artifact cache and default state into
/// `home`. Returns once it logged that the node serves, or once it exited:
/// the node, its log so far, and the rest of its log.
pub fn busbar_run(program: &Path, folder: &Folder, config: &str, home: &Path) -> (RunningNode, Vec<String>, ChildLog) {
    use std::io::BufRead;
    let config_file = home.join("busbar.toml");
    std::fs::write(&config_file, config).expect("config written");
    let mut child = std::process::Command::new(program)
        .arg("--config")
        .arg(&config_file)
        .arg("--handlers")
        .arg(folder.path())
        .arg("run")
        .env("RUST_LOG", "busbar=info")
        .env("NO_COLOR", "1")
        .env("XDG_CACHE_HOME", home)
        .env("XDG_STATE_HOME", home)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("busbar runs");
    let mut lines = std::io::BufReader::new(child.stderr.take().expect("stderr")).lines();
    let mut log = Vec::new();
    for line in lines.by_ref().map_while(Result::ok) {
        // `node ID serving DIR` (not the listeners' `serving … on http://…`).
        let serving = line.contains(": node ") && line.contains(" serving ");
        log.push(line);
        if serving {
            break;
        }
    }
    (RunningNode { child: Some(child) }, log, lines)
}
