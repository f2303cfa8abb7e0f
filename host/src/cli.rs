//! The `busbar` command line: argument parsing and the commands. Each command
//! is a thin layer over the library; errors become messages on stderr and an
//! exit code (0 ok, 1 host error, 2 usage, 10–18 a failure class).

use crate::config::Config;
use crate::delivery::failure::Failure;
use crate::handlers::progress;
use crate::node::{Node, NodeBuilder};
use crate::runtime::{MESSAGE_EXPORT, Runtime, SERVICE_EXPORT};
use crate::toolkit::{self, scaffold, scaffold::Lang, scaffold::Project};
use clap::{Parser, Subcommand};
use std::io::{Read, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

/// busbar: WebAssembly component handlers on a message bus.
#[derive(Debug, Parser)]
#[command(name = "busbar", version, about)]
pub struct Cli {
    /// The node's config file (default: ./busbar.toml if present, else built-in defaults).
    #[arg(long, short, global = true, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// The handlers folder (overrides `node.handlers`).
    #[arg(long = "handlers", global = true, value_name = "DIR")]
    pub handlers: Option<PathBuf>,
    /// How log lines are written (stderr); the level comes from RUST_LOG.
    #[arg(long, global = true, value_enum, env = "BUSBAR_LOG_FORMAT", default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

impl Cli {
    /// Parses the process's arguments (exits with code 2 on a usage error).
    pub fn from_args() -> Self {
        Self::parse()
    }

    /// Parses `args` (the first is the program name); exits on a usage error.
    pub fn from_arguments<I, T>(args: I) -> Self
    where
        I: IntoIterator<Item = T>,
        T: Into<std::ffi::OsString> + Clone,
    {
        Self::parse_from(args)
    }
}

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// One human-readable line per event.
    Text,
    /// One JSON object per line, for log collectors.
    Json,
}

/// The commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run a node that serves the handlers folder until SIGINT or SIGTERM.
    Run {
        /// Serve /metrics, /healthz and /readyz on ADDR (`PORT` alone means 127.0.0.1:PORT).
        #[arg(long, value_name = "ADDR", value_parser = parse_listen)]
        metrics: Option<SocketAddr>,
        /// Serve the HTTP gateway on ADDR (`PORT` alone means 127.0.0.1:PORT). No auth of its own.
        #[arg(long, value_name = "ADDR", value_parser = parse_listen)]
        http: Option<SocketAddr>,
    },
    /// Call a service and print its reply (raw bytes) on stdout.
    Call {
        /// The service name.
        name: String,
        /// The payload; `-` reads stdin; omitted means empty.
        payload: Option<String>,
        /// How long to wait for the reply.
        #[arg(long, default_value = "5s", value_parser = parse_call_timeout)]
        timeout: Duration,
    },
    /// Queue work for a service; on the default driver, wait for its outcome (retries included).
    Dispatch {
        /// The service name.
        name: String,
        /// The payload; `-` reads stdin.
        payload: Option<String>,
    },
    /// Send an event to every listener of a name.
    Broadcast {
        /// The message name.
        name: String,
        /// The payload; `-` reads stdin.
        payload: Option<String>,
    },
    /// Send an event to one listener of a name per group.
    Rolecast {
        /// The message name.
        name: String,
        /// The payload; `-` reads stdin.
        payload: Option<String>,
    },
    /// Say whether a file is a valid handler and what it exports, or exactly why not.
    Check {
        /// The `.wasm` file.
        file: PathBuf,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// List the live nodes.
    Nodes {
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// List the names served and by which nodes.
    Services {
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Per-name statistics (handler version, requests, errors, latency in nanoseconds, reloads).
    Stats {
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Create a handler project that builds as it is (a service replying `hello, <payload>`).
    New {
        /// The handler's name: the project directory and the name it serves.
        name: String,
        /// The language: rust, python, js or c.
        #[arg(long, short)]
        lang: Lang,
        /// Where to create the project (default: ./NAME).
        #[arg(long)]
        dir: Option<PathBuf>,
        /// Rust: the busbar-guest SDK directory (default: the one of the checkout busbar was built from).
        #[arg(long, value_name = "DIR")]
        sdk: Option<PathBuf>,
    },
    /// Validate a config file and print the effective configuration.
    Config {
        /// What to do.
        #[command(subcommand)]
        action: ConfigAction,
    },
    /// Tools for building handlers: the WIT contract, C bindings, componentize.
    Guest {
        /// What to do.
        #[command(subcommand)]
        action: GuestAction,
    },
    /// Inspect, replay or drop exhausted dispatches.
    DeadLetters {
        /// What to do (default: list).
        #[command(subcommand)]
        action: Option<DeadLetterAction>,
        /// Print JSON (for `list`).
        #[arg(long)]
        json: bool,
    },
    /// Read and write key-value buckets: the default driver's state (beside a
    /// running node), or JetStream KV on NATS.
    Kv {
        /// What to do.
        #[command(subcommand)]
        action: KvAction,
    },
    /// Compile the component on stdin to a precompiled artifact on stdout,
    /// under limits (what a node runs to compile a handler).
    #[command(name = "compile-worker", hide = true)]
    CompileWorker(crate::runtime::compiler::WorkerArgs),
}

/// `busbar config` actions.
#[derive(Debug, Subcommand)]
pub enum ConfigAction {
    /// Validate FILE (default: --config, else ./busbar.toml, else the defaults) and print
    /// the configuration a node would run with: defaults filled in, paths resolved,
    /// environment overrides applied, secrets hidden.
    Check {
        /// The config file.
        file: Option<PathBuf>,
    },
}

/// `busbar guest` actions: tools for building handlers.
#[derive(Debug, Subcommand)]
pub enum GuestAction {
    /// Write the WIT contract handlers are built against (`handler.wit`) into DIR.
    Wit {
        /// The directory to write into.
        dir: PathBuf,
    },
    /// Write the C bindings of a handler world into DIR (WORLD.h, WORLD.c, WORLD_component_type.o).
    CBindings {
        /// The directory to write into.
        dir: PathBuf,
        /// The world: service-handler, message-handler or handler (both); add `-http` for wasi:http.
        #[arg(long, default_value = "service-handler")]
        world: String,
    },
    /// Turn a wasm32-wasi core module (built with `-mexec-model=reactor`) into a handler component.
    Componentize {
        /// The core module clang wrote.
        module: PathBuf,
        /// Where to write the component.
        #[arg(long, short)]
        output: PathBuf,
    },
}

/// `busbar kv` actions.
#[derive(Debug, Subcommand)]
pub enum KvAction {
    /// Print the value of KEY (exit code 4 when it is not set).
    Get {
        /// The bucket.
        bucket: String,
        /// The key.
        key: String,
    },
    /// Set KEY to VALUE (`-` or none: standard input).
    Set {
        /// The bucket.
        bucket: String,
        /// The key.
        key: String,
        /// The value.
        value: Option<String>,
    },
    /// Remove KEY.
    Delete {
        /// The bucket.
        bucket: String,
        /// The key.
        key: String,
    },
    /// List the keys, one a line.
    Keys {
        /// The bucket.
        bucket: String,
    },
    /// Add DELTA (default 1) to the counter in KEY and print the sum.
    Increment {
        /// The bucket.
        bucket: String,
        /// The key.
        key: String,
        /// What to add (may be negative).
        #[arg(default_value_t = 1, allow_negative_numbers = true)]
        delta: i64,
    },
}

/// `busbar dead-letters` actions.
#[derive(Debug, Subcommand)]
pub enum DeadLetterAction {
    /// List the dead letters.
    List,
    /// Queue the dead letters of a service again (attempts start over).
    Replay {
        /// The service name.
        name: String,
    },
    /// Delete the dead letters of a service.
    Drop {
        /// The service name.
        name: String,
    },
}

/// `--timeout` of `busbar call`: bounded like every call timeout.
fn parse_call_timeout(text: &str) -> Result<Duration, String> {
    crate::limits::call_timeout("--timeout", text)
}

/// An error that ends the command, with its exit code.
struct Exit {
    code: u8,
    message: String,
}

impl From<Failure> for Exit {
    fn from(f: Failure) -> Self {
        Self { code: f.class.exit_code(), message: f.to_string() }
    }
}

/// A host error (exit code 1).
fn host<E: std::fmt::Display>(e: E) -> Exit {
    Exit { code: 1, message: e.to_string() }
}

/// Runs the CLI; returns the process exit code.
pub async fn main(cli: Cli) -> ExitCode {
    if let Command::CompileWorker(args) = &cli.command {
        return crate::runtime::compiler::run_worker(args);
    }
    match run(cli).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(Exit { code, message }) => {
            let _ = writeln!(std::io::stderr(), "busbar: {message}");
            ExitCode::from(code)
        }
    }
}

/// Sets up logging: `RUST_LOG` wins; otherwise `info` for `run`, `warn` for
/// one-shot commands so their stdout stays the reply alone.
/// In JSON, each line is one object with the event's fields, its message,
/// and the fields of the spans it happened in (`span`, `spans`): an
/// invocation's name, mode, attempt, version, trace id and outcome.
pub fn init_tracing(cli: &Cli) {
    let default = if matches!(cli.command, Command::Run { .. }) { "info" } else { "warn" };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    let subscriber = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    let _ = match cli.log_format {
        LogFormat::Text => subscriber.try_init(),
        LogFormat::Json => subscriber.json().with_current_span(true).with_span_list(true).try_init(),
    };
}

/// The config file a command reads: `--config`, else `./busbar.toml` if
/// present; `None` means the built-in defaults.
fn config_file(cli: &Cli) -> Option<PathBuf> {
    cli.config.clone().or_else(|| Some(PathBuf::from("busbar.toml")).filter(|p| p.exists()))
}

fn load_config(cli: &Cli) -> Result<Config, Exit> {
    let mut config = match config_file(cli) {
        Some(path) => {
            let config = Config::load(&path).map_err(host)?;
            config.check_drivers(&path, &crate::driver::KNOWN).map_err(host)?;
            config
        }
        None => Config::default(),
    };
    if let Some(dir) = &cli.handlers {
        config.node.handlers = dir.clone();
    }
    Ok(config)
}

/// Starts a node for a one-shot command: it serves the handlers folder on the
/// in-process default driver (there is no other node to reach); on a shared
/// bus it is a plain client. (`busbar run` is [`crate::ops::serve::run`].)
async fn start(cli: &Cli) -> Result<Node, Exit> {
    let config = load_config(cli)?;
    let serve = config.connections.iter().all(|c| c.driver == "default");
    // A one-shot node is gone when the command ends: its dispatches live in
    // memory, and the state of a node serving the same folder stays its own.
    let builder =
        NodeBuilder::new(config).compile_worker(this_program()?).hub(crate::driver::default::DefaultDriver::new());
    let builder = if serve { builder } else { builder.client() };
    let (node, _) = builder.start().await.map_err(host)?;
    Ok(node)
}

/// The state directory of the node this config describes, when it runs on
/// the default driver and has one: its dead letters are there (the CLI
/// cannot reach an in-process bus of another process).
fn default_state(cli: &Cli) -> Result<Option<PathBuf>, Exit> {
    let config = load_config(cli)?;
    if !config.connections.iter().all(|c| c.driver == "default") {
        return Ok(None);
    }
    Ok(config.node.state_dir().filter(|dir| crate::driver::default::state::exists(dir)))
}

/// This `busbar` binary, which also runs the compile workers. On Linux
/// `/proc/self/exe`: the very binary this process runs, even after an
/// upgrade replaced the file at its path (a newer busbar's artifacts would
/// not load into this one's engine).
fn this_program() -> Result<PathBuf, Exit> {
    let running = Path::new("/proc/self/exe");
    if running.exists() {
        return Ok(running.to_path_buf());
    }
    std::env::current_exe().map_err(|e| Exit { code: 1, message: format!("cannot find the busbar binary itself: {e}") })
}

fn read_payload(payload: &Option<String>) -> Result<Vec<u8>, Exit> {
    match payload.as_deref() {
        None => Ok(Vec::new()),
        Some("-") => {
            let mut buf = Vec::new();
            std::io::stdin().read_to_end(&mut buf).map_err(host)?;
            Ok(buf)
        }
        Some(text) => Ok(text.as_bytes().to_vec()),
    }
}

fn print_json<T: serde::Serialize>(value: &T) -> Result<(), Exit> {
    let text = serde_json::to_string_pretty(value).map_err(host)?;
    println!("{text}");
    Ok(())
}

async fn run(cli: Cli) -> Result<(), Exit> {
    match &cli.command {
        Command::Run { metrics, http } => {
            // Listen before the node says it serves: a SIGTERM right after
            // that line must stop it cleanly, not kill it.
            let shutdown = crate::ops::serve::shutdown_signal();
            let config = load_config(&cli)?;
            let bar = std::io::IsTerminal::is_terminal(&std::io::stderr());
            let progress = if bar { progress::Display::Bar } else { progress::Display::Lines };
            let compile_worker = Some(this_program()?);
            let options = crate::ops::serve::Options { metrics: *metrics, http: *http, progress, compile_worker };
            crate::ops::serve::run(config, options, shutdown, |_| {}).await.map_err(host)
        }
        Command::Call { name, payload, timeout } => {
            let payload = read_payload(payload)?;
            let node = start(&cli).await?;
            let result = node.call(name, payload, *timeout).await;
            node.stop().await;
            let reply = result?;
            std::io::stdout().write_all(&reply).map_err(host)?;
            Ok(())
        }
        Command::Dispatch { name, payload } => {
            let payload = read_payload(payload)?;
            let node = start(&cli).await?;
            let receipt = node.dispatch(name, payload).await;
            let outcome = match receipt {
                Ok(receipt) => match receipt.outcome {
                    Some(rx) => rx.await.map_err(|_| host("the dispatch was abandoned before it finished")),
                    None => {
                        eprintln!("dispatch {} accepted", receipt.id);
                        node.stop().await;
                        return Ok(());
                    }
                },
                Err(f) => Err(Exit::from(f)),
            };
            node.stop().await;
            let outcome = outcome?;
            for (i, f) in outcome.history.iter().enumerate() {
                eprintln!("attempt {}: {f}", i + 1);
            }
            match outcome.result {
                Ok(reply) => {
                    eprintln!(
                        "dispatch {} to `{}` succeeded on attempt {}",
                        outcome.id, outcome.name, outcome.attempts
                    );
                    std::io::stdout().write_all(&reply).map_err(host)?;
                    Ok(())
                }
                Err(f) => Err(Exit {
                    code: f.class.exit_code(),
                    message: format!(
                        "dispatch {} to `{}` dead-lettered after {} attempt(s): {f}",
                        outcome.id, outcome.name, outcome.attempts
                    ),
                }),
            }
        }
        Command::Broadcast { name, payload } | Command::Rolecast { name, payload } => {
            let payload = read_payload(payload)?;
            let node = start(&cli).await?;
            let sent = match cli.command {
                Command::Broadcast { .. } => node.broadcast(name, payload).await,
                _ => node.rolecast(name, payload).await,
            };
            // Stopping drains the in-process deliveries, so their logs appear before we exit.
            node.stop().await;
            sent?;
            Ok(())
        }
        Command::Check { file, json } => check(&cli, file, *json),
        // `main` runs it before anything else.
        Command::CompileWorker(_) => Err(Exit { code: 2, message: "`compile-worker` is busbar's own".into() }),
        Command::New { name, lang, dir, sdk } => {
            let dir = dir.clone().unwrap_or_else(|| PathBuf::from(name));
            let project = Project { name: name.clone(), lang: *lang, dir, sdk: sdk.clone() };
            let files = scaffold::create(&project).map_err(|e| host(format!("{e:#}")))?;
            eprintln!("created {} ({} files); build it with:", project.dir.display(), files.len());
            eprintln!("  cd {}", project.dir.display());
            for command in lang.build_commands() {
                eprintln!("  {command}");
            }
            eprintln!("then copy {} into a handlers folder as {name}.wasm", lang.artifact(name).display());
            Ok(())
        }
        Command::Guest { action } => guest(action).map_err(|e| host(format!("{e:#}"))),
        Command::Config { action: ConfigAction::Check { file } } => {
            let (config, source) = match file {
                Some(path) => {
                    let config = Config::load(path).map_err(host)?;
                    config.check_drivers(path, &crate::driver::KNOWN).map_err(host)?;
                    (config, path.display().to_string())
                }
                None => {
                    let source = config_file(&cli).map_or_else(|| "<defaults>".into(), |p| p.display().to_string());
                    (load_config(&cli)?, source)
                }
            };
            let text = toml::to_string_pretty(&config.redacted()).map_err(host)?;
            println!("# {source}: valid. The configuration a node runs with (defaults filled in,");
            println!("# paths resolved, environment overrides applied, secrets hidden):\n");
            print!("{text}");
            Ok(())
        }
        Command::DeadLetters { action, json } => match action {
            None | Some(DeadLetterAction::List) => {
                let letters = match default_state(&cli)? {
                    Some(dir) => crate::driver::default::state::read_dead_letters(&dir).map_err(host)?,
                    None => on_the_bus(&cli, async |node| node.dead_letters().await).await?,
                };
                if *json {
                    return print_json(&letters);
                }
                println!("{:<24} {:<24} {:>8} {:<22} FAILURE", "ID", "NAME", "ATTEMPTS", "AT");
                for l in letters {
                    println!("{:<24} {:<24} {:>8} {:<22} {}", l.id, l.name, l.attempts, l.at, l.failure);
                }
                Ok(())
            }
            Some(DeadLetterAction::Replay { name }) => {
                if let Some(dir) = default_state(&cli)? {
                    let state = crate::driver::default::state::State::open(&dir).map_err(host)?;
                    let n = state.requeue_dead_letters(name, std::time::SystemTime::now()).await.map_err(host)?;
                    eprintln!("replayed {n} dead letter(s) of `{name}`: they run when the node starts");
                    return Ok(());
                }
                let n = on_the_bus(&cli, async |node| node.replay_dead_letters(name).await).await?;
                eprintln!("replayed {n} dead letter(s) of `{name}`");
                Ok(())
            }
            Some(DeadLetterAction::Drop { name }) => {
                if let Some(dir) = default_state(&cli)? {
                    let state = crate::driver::default::state::State::open(&dir).map_err(host)?;
                    let n = state.take_dead_letters(name).await.map_err(host)?.len();
                    eprintln!("dropped {n} dead letter(s) of `{name}`");
                    return Ok(());
                }
                let n = on_the_bus(&cli, async |node| node.drop_dead_letters(name).await).await?;
                eprintln!("dropped {n} dead letter(s) of `{name}`");
                Ok(())
            }
        },
        Command::Kv { action } => kv(&cli, action).await,
        Command::Nodes { json } => {
            let nodes = on_the_bus(&cli, async |node| node.nodes().await).await?;
            if *json {
                return print_json(&nodes);
            }
            println!("{:<24} {:<12} {:<10} {:<10} {:<22} NAMES", "NODE", "PROJECT", "GROUP", "PROFILE", "STARTED");
            for n in nodes {
                let names: Vec<_> = n.services.iter().chain(&n.messages).cloned().collect();
                println!(
                    "{:<24} {:<12} {:<10} {:<10} {:<22} {}",
                    n.node,
                    n.project,
                    n.group,
                    n.profile,
                    n.started,
                    names.join(",")
                );
            }
            Ok(())
        }
        Command::Services { json } => {
            let services = on_the_bus(&cli, async |node| node.services().await).await?;
            if *json {
                return print_json(&services);
            }
            println!("{:<32} {:<8} NODES", "NAME", "KIND");
            for s in services {
                let kind = match s.kind {
                    crate::delivery::Kind::Service => "service",
                    crate::delivery::Kind::Message => "message",
                };
                println!("{:<32} {:<8} {}", s.name, kind, s.nodes.join(","));
            }
            Ok(())
        }
        Command::Stats { json } => {
            let stats = on_the_bus(&cli, async |node| node.stats().await).await?;
            if *json {
                return print_json(&stats);
            }
            let row =
                |name: &str, node: &str, version: &str, requests: &str, errors: &str, average: &str, reloads: &str| {
                    println!(
                        "{name:<32} {node:<24} {version:<12} {requests:>10} {errors:>8} {average:>14} {reloads:>8}"
                    )
                };
            row("NAME", "NODE", "VERSION", "REQUESTS", "ERRORS", "AVERAGE_NS", "RELOADS");
            for s in stats {
                let (requests, errors, average, reloads) =
                    (s.requests.to_string(), s.errors.to_string(), s.average_ns.to_string(), s.reloads.to_string());
                row(&s.name, &s.node, &s.version, &requests, &errors, &average, &reloads);
            }
            Ok(())
        }
    }
}

/// Starts a node, asks the bus one question, stops the node.
async fn on_the_bus<T>(
    cli: &Cli,
    ask: impl AsyncFnOnce(&Node) -> Result<T, crate::driver::DriverError>,
) -> Result<T, Exit> {
    let node = start(cli).await?;
    let answer = ask(&node).await;
    node.stop().await;
    answer.map_err(host)
}

/// `busbar kv`: one bucket operation, on the state directory of a node on
/// the default driver (running or not), or over the node's bus.
async fn kv(cli: &Cli, action: &KvAction) -> Result<(), Exit> {
    let config = load_config(cli)?;
    let (KvAction::Get { bucket, .. }
    | KvAction::Set { bucket, .. }
    | KvAction::Delete { bucket, .. }
    | KvAction::Keys { bucket }
    | KvAction::Increment { bucket, .. }) = action;
    crate::keyvalue::check_bucket_name(bucket).map_err(|message| Exit { code: 2, message })?;
    let first = config.connections.first().ok_or_else(|| host("the config has no connection"))?;
    let mut node = None;
    let buckets = if first.driver == "default" {
        let dir = config.node.state_dir().ok_or_else(|| {
            host("this node keeps its buckets in memory (`[node] state = \"\"`): nothing outside it can read them")
        })?;
        crate::driver::default::state_buckets(&dir, &first.setting).map_err(host)?
    } else {
        let started = start(cli).await?;
        let buckets = started.buckets().ok_or_else(|| host("the node has no connection"))?;
        node = Some(started);
        buckets
    };
    let done = kv_action(buckets.as_ref(), action).await;
    if let Some(node) = node {
        node.stop().await;
    }
    done
}

async fn kv_action(buckets: &dyn crate::keyvalue::Buckets, action: &KvAction) -> Result<(), Exit> {
    match action {
        KvAction::Get { bucket, key } => match buckets.get(bucket, key).await.map_err(host)? {
            Some(entry) => std::io::stdout().write_all(&entry.value).map_err(host),
            None => Err(Exit { code: 4, message: format!("key `{key}` is not set in bucket `{bucket}`") }),
        },
        KvAction::Set { bucket, key, value } => {
            let value = match value.as_deref() {
                Some(value) if value != "-" => value.as_bytes().to_vec(),
                _ => {
                    let mut read = Vec::new();
                    std::io::Read::read_to_end(&mut std::io::stdin(), &mut read).map_err(host)?;
                    read
                }
            };
            buckets.set(bucket, key, value).await.map(drop).map_err(host)
        }
        KvAction::Delete { bucket, key } => buckets.delete(bucket, key).await.map_err(host),
        KvAction::Keys { bucket } => {
            let mut after: Option<String> = None;
            loop {
                let page = buckets.keys(bucket, after.as_deref(), crate::keyvalue::PAGE).await.map_err(host)?;
                for key in &page {
                    println!("{key}");
                }
                if page.len() < crate::keyvalue::PAGE {
                    return Ok(());
                }
                after = page.last().cloned();
            }
        }
        KvAction::Increment { bucket, key, delta } => {
            println!("{}", buckets.increment(bucket, key, *delta).await.map_err(host)?);
            Ok(())
        }
    }
}

/// Compiles `file` as a node would (in a compile worker, under the config's
/// limits, without the artifact cache) and says what it is.
fn check(cli: &Cli, file: &Path, json: bool) -> Result<(), Exit> {
    let config = load_config(cli)?;
    let options = crate::runtime::RuntimeOptions {
        cache_dir: None,
        compiler: crate::node::worker(&config, this_program()?),
        ..crate::node::runtime_options(&config)
    };
    let runtime = Runtime::new(&options).map_err(host)?;
    let started = Instant::now();
    let compiled = runtime
        .load_file(file)
        .map_err(|e| Exit { code: 1, message: format!("{} is not a valid handler: {e}", file.display()) })?;
    let elapsed = started.elapsed();
    // What its sidecar grants it, as a node would read it.
    let stem = file.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
    let sidecar = file.with_extension("toml");
    let policy = crate::handlers::sidecar::policy(&stem, &sidecar, &crate::handlers::sidecar::Rules::of(&config))
        .map_err(|e| Exit { code: 1, message: e.to_string() })?;
    let imports_any = |prefix: &str| compiled.imports.iter().any(|i| i.starts_with(prefix));
    let http: Vec<String> = policy.grants.http.iter().map(ToString::to_string).collect();
    let buckets = &policy.grants.keyvalue;
    if json {
        return print_json(&serde_json::json!({
            "file": file,
            "valid": true,
            "version": compiled.version,
            "exports": compiled.exports,
            "imports": compiled.imports,
            "grants": { "http": http, "keyvalue": buckets },
            "compile_ms": elapsed.as_millis(),
        }));
    }
    println!("{} is a valid handler (version {}, compiled in {elapsed:.0?})", file.display(), compiled.version);
    if compiled.exports.service {
        println!("  exports {SERVICE_EXPORT}: answers call and dispatch");
    }
    if compiled.exports.message {
        println!("  exports {MESSAGE_EXPORT}: receives broadcast and rolecast");
    }
    for import in &compiled.imports {
        println!("  imports {import}");
    }
    let file_name = sidecar.file_name().map(|f| f.to_string_lossy().into_owned()).unwrap_or_default();
    if imports_any("wasi:http/outgoing-handler") {
        match http.is_empty() {
            true => println!(
                "  outbound HTTP: no origin granted, every request is denied (grant with `http = [\"https://…\"]` in {file_name}, within `[grants] http`)"
            ),
            false => println!("  outbound HTTP to: {}", http.join(", ")),
        }
    }
    if imports_any("wasi:keyvalue/") {
        match buckets.is_empty() {
            true => println!(
                "  key-value: no bucket granted, every bucket is access-denied (grant with `keyvalue = [\"NAME\"]` in {file_name})"
            ),
            false => println!("  key-value buckets: {}", buckets.join(", ")),
        }
    }
    Ok(())
}

/// A listen address: `HOST:PORT`, or `PORT` alone for loopback.
fn parse_listen(text: &str) -> Result<SocketAddr, String> {
    if let Ok(port) = text.parse::<u16>() {
        return Ok(SocketAddr::from(([127, 0, 0, 1], port)));
    }
    text.parse().map_err(|_| format!("`{text}` is not HOST:PORT (such as 127.0.0.1:9090) or a port"))
}

/// Resolves at SIGINT or SIGTERM. The handlers are installed when this is
/// called, not when the future is first polled.
fn guest(action: &GuestAction) -> anyhow::Result<()> {
    use anyhow::Context as _;
    match action {
        GuestAction::Wit { dir } => {
            let path = toolkit::write_wit(dir)?;
            eprintln!("wrote {}", path.display());
        }
        GuestAction::CBindings { dir, world } => {
            for path in toolkit::c_bindings(world, dir)? {
                eprintln!("wrote {}", path.display());
            }
        }
        GuestAction::Componentize { module, output } => {
            let core = std::fs::read(module).with_context(|| format!("cannot read {}", module.display()))?;
            let component = toolkit::componentize(&core).with_context(|| format!("{}", module.display()))?;
            std::fs::write(output, &component).with_context(|| format!("cannot write {}", output.display()))?;
            eprintln!("wrote {} ({} bytes)", output.display(), component.len());
        }
    }
    Ok(())
}
