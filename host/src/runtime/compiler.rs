//! Where handler components are compiled. wasmtime's compiler is not
//! hardened against hostile input, and a node compiles whatever file lands
//! in its folder: a component of a few MB can ask for gigabytes and
//! minutes. So a node can compile in a child process — `busbar` itself,
//! re-run as a compile worker — under a memory and a time limit; a compile
//! bomb then costs the child, never the node, and is refused with a message
//! naming the limit it met. Embedders without the `busbar` binary (and the
//! test suite's shared runtime) compile in their own process.

use super::{LoadError, RuntimeOptions, engine_config};
use std::io::{Read, Write};
use std::path::PathBuf;
use std::process::{Command, ExitCode, Stdio};
use std::time::Duration;
use wasmtime::Engine;
use wasmtime::component::Component;

/// The hidden `busbar` subcommand that runs a compile worker.
pub const WORKER_COMMAND: &str = "compile-worker";

/// Bytes of a worker's stderr kept for the message.
const STDERR_KEPT: u64 = 16 << 10;

/// Where components are compiled.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Compiler {
    /// In this process, with no limit.
    InProcess,
    /// In a child process under limits.
    Worker(WorkerLimits),
}

/// A compile worker: the program and its limits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkerLimits {
    /// The `busbar` binary (it runs `busbar compile-worker`).
    pub program: PathBuf,
    /// The most memory the worker may allocate, in bytes (`[node] compile_memory`).
    pub memory: u64,
    /// The longest a compile may take (`[node] compile_timeout`).
    pub timeout: Duration,
}

impl Compiler {
    /// Compiles `bytes` for `engine`, built from `options`.
    pub(crate) fn compile(
        &self,
        engine: &Engine,
        options: &RuntimeOptions,
        bytes: &[u8],
    ) -> Result<Component, LoadError> {
        match self {
            Compiler::InProcess => Component::new(engine, bytes).map_err(|e| LoadError::Compile(format!("{e:#}"))),
            Compiler::Worker(limits) => {
                let artifact = limits.precompile(options, bytes)?;
                // SAFETY: the artifact was made just now by our own binary, from
                // these bytes, for an engine built from the same options
                // (deserialize checks that compatibility too). It never touched
                // the disk, so nobody else could have written it.
                #[expect(unsafe_code, reason = "loading the artifact our own compile worker made is the point")]
                let component = unsafe { Component::deserialize(engine, &artifact) };
                component.map_err(|e| LoadError::Compile(format!("the compile worker's artifact does not load: {e:#}")))
            }
        }
    }
}

impl WorkerLimits {
    /// Runs the worker on `bytes`: the precompiled artifact, or why not.
    fn precompile(&self, options: &RuntimeOptions, bytes: &[u8]) -> Result<Vec<u8>, LoadError> {
        let failed = |what: &str, e: &dyn std::fmt::Display| {
            LoadError::Compile(format!("{what} the compile worker `{}`: {e}", self.program.display()))
        };
        let mut child = Command::new(&self.program)
            .arg(WORKER_COMMAND)
            .args(["--max-memory", &options.max_memory.to_string()])
            .args(["--memory-limit", &self.memory.to_string()])
            // CPU time is a backstop (the wall clock is the limit): compiling
            // runs on every core, so it may use cores × timeout.
            .args(["--cpu-seconds", &cpu_seconds(self.timeout).to_string()])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .env_remove("RUST_LOG")
            .spawn()
            .map_err(|e| failed("cannot start", &e))?;
        let (mut stdin, mut stdout, stderr) = match (child.stdin.take(), child.stdout.take(), child.stderr.take()) {
            (Some(i), Some(o), Some(e)) => (i, o, e),
            _ => return Err(failed("no pipes to", &"stdin, stdout or stderr missing")),
        };
        let (done, outcome) = std::sync::mpsc::channel();
        std::thread::scope(|s| {
            // Each pipe on a thread of its own, so a full one never blocks another.
            s.spawn(move || {
                let _ = stdin.write_all(bytes);
            });
            let errors = s.spawn(move || {
                let mut text = String::new();
                let _ = stderr.take(STDERR_KEPT).read_to_string(&mut text);
                text
            });
            s.spawn(move || {
                let mut artifact = Vec::new();
                let read = stdout.read_to_end(&mut artifact).map(|_| artifact);
                let _ = done.send(read);
            });
            // The artifact is complete when the worker closes stdout, at its exit.
            let artifact = match outcome.recv_timeout(self.timeout) {
                Ok(read) => read.map_err(|e| failed("cannot read from", &e)),
                Err(_) => {
                    let _ = child.kill();
                    let _ = child.wait();
                    return Err(LoadError::Compile(format!(
                        "compiling it took longer than {:?}, the compile worker's limit (`[node] compile_timeout`); it was stopped and the file not loaded",
                        self.timeout
                    )));
                }
            };
            let status = child.wait().map_err(|e| failed("lost", &e))?;
            let errors = errors.join().unwrap_or_default();
            if status.success() {
                return artifact;
            }
            Err(LoadError::Compile(self.why(status, errors.trim())))
        })
    }

    /// What a worker's failure means, from its exit and its stderr.
    fn why(&self, status: std::process::ExitStatus, errors: &str) -> String {
        use std::os::unix::process::ExitStatusExt;
        let memory = crate::units::human_bytes(self.memory);
        if errors.contains("memory allocation of") || errors.contains("out of memory") {
            return format!(
                "compiling it needed more than {memory}, the compile worker's limit (`[node] compile_memory`); the file was not loaded"
            );
        }
        if status.signal() == Some(rustix::process::Signal::XCPU.as_raw()) {
            return format!(
                "compiling it used more CPU time than {:?}, the compile worker's limit (`[node] compile_timeout`); the file was not loaded",
                self.timeout
            );
        }
        match (status.code(), errors) {
            (Some(WORKER_REFUSED), e) => e.to_string(),
            (_, "") => format!("the compile worker ended with {status} (its limit: {memory}); the file was not loaded"),
            (_, e) => format!("the compile worker ended with {status}: {e}"),
        }
    }
}

/// The CPU seconds a worker may use in `timeout` on every core, and one more.
fn cpu_seconds(timeout: Duration) -> u64 {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get() as u64);
    timeout.as_secs().saturating_add(1).saturating_mul(cores)
}

/// The exit code of a worker whose component does not compile (stderr says why).
const WORKER_REFUSED: i32 = 3;

/// Arguments of `busbar compile-worker`.
#[derive(Debug, Clone, clap::Args)]
pub struct WorkerArgs {
    /// The engine's largest linear memory, in bytes.
    #[arg(long)]
    max_memory: u64,
    /// The most memory this process may allocate, in bytes.
    #[arg(long)]
    memory_limit: u64,
    /// The most CPU time this process may use, in seconds.
    #[arg(long)]
    cpu_seconds: u64,
}

/// The compile worker: limits itself, reads a component on stdin, writes
/// its precompiled artifact on stdout, or why it does not compile on stderr
/// (exit code 3).
pub fn run_worker(args: &WorkerArgs) -> ExitCode {
    use rustix::process::{Resource, Rlimit, setrlimit};
    let limit = |resource, value: u64| setrlimit(resource, Rlimit { current: Some(value), maximum: Some(value) });
    if let Err(e) = limit(Resource::Data, args.memory_limit).and_then(|()| limit(Resource::Cpu, args.cpu_seconds)) {
        eprintln!("cannot set the compile worker's limits: {e}");
        return ExitCode::FAILURE;
    }
    let mut bytes = Vec::new();
    if let Err(e) = std::io::stdin().read_to_end(&mut bytes) {
        eprintln!("cannot read the component: {e}");
        return ExitCode::FAILURE;
    }
    // The node's engine settings, but a pool of one instance: the pool's
    // size does not change the code, and its reservations would only cost
    // the worker start-up time.
    let options = RuntimeOptions { max_instances: 1, max_memory: args.max_memory, ..RuntimeOptions::default() };
    let engine = match engine_config(&options)
        .map_err(|e| e.to_string())
        .and_then(|c| Engine::new(&c).map_err(|e| format!("{e:#}")))
    {
        Ok(engine) => engine,
        Err(e) => {
            eprintln!("cannot build the engine: {e}");
            return ExitCode::FAILURE;
        }
    };
    match engine.precompile_component(&bytes) {
        Ok(artifact) => match std::io::stdout().lock().write_all(&artifact) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("cannot write the artifact: {e}");
                ExitCode::FAILURE
            }
        },
        Err(e) => {
            eprint!("{e:#}");
            ExitCode::from(WORKER_REFUSED as u8)
        }
    }
}
