//! Benchmark 3: resident memory of an idle `busbar run` process. The real
//! binary is started on a handlers folder, and once it logs that it is
//! serving (and has sat idle for a moment) its `VmRSS` is read from
//! `/proc/PID/status`; then it is killed.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// How long the node sits idle after `serving` before its RSS is read.
pub const SETTLE: Duration = Duration::from_secs(1);
/// How long a node may take to start.
const START_LIMIT: Duration = Duration::from_secs(300);

/// An idle node's memory.
pub struct Idle {
    /// `VmRSS` in KiB.
    pub rss_kib: u64,
    /// The node's `serving` log line (ANSI colours removed).
    pub serving: String,
}

impl Idle {
    /// The `key=value` field of the serving line (`handlers`, `cached`, `elapsed`).
    pub fn field(&self, key: &str) -> Option<&str> {
        let at = self.serving.find(&format!("{key}="))? + key.len() + 1;
        self.serving[at..].split_whitespace().next()
    }
}

/// The `busbar` binary: `$BUSBAR_BIN`, or `target/<profile>/busbar` brought up
/// to date with `cargo build [--release] -p busbar`, in the profile this
/// benchmark was built with (release for real numbers; a debug smoke run
/// must not start a release build of wasmtime).
/// Returns the path and how to name it in the results.
pub fn binary() -> anyhow::Result<(PathBuf, String)> {
    if let Some(bin) = std::env::var_os("BUSBAR_BIN") {
        let label = format!("`$BUSBAR_BIN` = `{}`", Path::new(&bin).display());
        return Ok((bin.into(), label));
    }
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let (profile, args): (&str, &[&str]) = if cfg!(debug_assertions) {
        ("debug", &["build", "-p", "busbar"])
    } else {
        ("release", &["build", "--release", "-p", "busbar"])
    };
    let command = format!("cargo {}", args.join(" "));
    eprintln!("bench: {command} (for the memory benchmark; set BUSBAR_BIN to skip)");
    let mut build = Command::new(cargo);
    build.args(args).current_dir(&root);
    // `cargo run` gives this process the package variables of busbar-bench
    // (`CARGO_PKG_NAME`, `CARGO_MANIFEST_DIR`, …). Build scripts that declare
    // `rerun-if-env-changed` on them (ring's does) would see them change
    // between this build and the next plain one, so both would rebuild ring,
    // rustls, async-nats and everything above them (≈ 25 s each in debug).
    for (key, _) in std::env::vars_os() {
        let key = key.to_string_lossy();
        if key.starts_with("CARGO_PKG_")
            || matches!(
                &*key,
                "CARGO_MANIFEST_DIR"
                    | "CARGO_MANIFEST_PATH"
                    | "CARGO_MANIFEST_LINKS"
                    | "CARGO_CRATE_NAME"
                    | "CARGO_BIN_NAME"
                    | "CARGO_PRIMARY_PACKAGE"
            )
        {
            build.env_remove(&*key);
        }
    }
    let status = build.status()?;
    anyhow::ensure!(status.success(), "{command} failed ({status})");
    let target = std::env::var_os("CARGO_TARGET_DIR").map_or_else(|| root.join("target"), PathBuf::from);
    Ok((target.join(profile).join("busbar"), format!("the {profile} binary, `target/{profile}/busbar`")))
}

/// Writes a node config whose artifact cache is `cache` into `dir`.
pub fn config(dir: &Path, cache: &Path) -> anyhow::Result<PathBuf> {
    let path = dir.join("bench-node.toml");
    // Its dispatches stay in memory: every start of the benchmark is new.
    std::fs::write(
        &path,
        format!("[node]\nid = \"bench\"\ncache = {:?}\nstate = \"\"\n", cache.display().to_string()),
    )?;
    Ok(path)
}

/// Runs `bin run` on `handlers`, waits until it serves, lets it settle, reads
/// its RSS and kills it.
pub fn idle_rss(bin: &Path, config: &Path, handlers: &Path) -> anyhow::Result<Idle> {
    let mut child = Command::new(bin)
        .arg("run")
        .arg("--config")
        .arg(config)
        .arg("--handlers")
        .arg(handlers)
        .env("RUST_LOG", "info")
        .env("NO_COLOR", "1")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()?;
    let stderr = child.stderr.take().ok_or_else(|| anyhow::anyhow!("no stderr pipe"))?;
    let (tx, rx) = mpsc::channel();
    // Keeps draining stderr until the child exits, so it never blocks on a full pipe.
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let line = strip_ansi(&line);
            let _ = tx.send(line);
        }
    });
    let started = Instant::now();
    let result = loop {
        let left = START_LIMIT.saturating_sub(started.elapsed());
        match rx.recv_timeout(left) {
            Ok(line) if line.contains("serving") && !line.contains("not serving") => break Ok(line),
            Ok(_) => continue,
            Err(e) => {
                break Err(anyhow::anyhow!(
                    "`busbar run` did not log `serving` ({e}); exit status: {:?}",
                    child.try_wait()
                ));
            }
        }
    };
    let measured = result.and_then(|serving| {
        std::thread::sleep(SETTLE);
        let status = std::fs::read_to_string(format!("/proc/{}/status", child.id()))?;
        let rss_kib = status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .ok_or_else(|| anyhow::anyhow!("no VmRSS in /proc/{}/status", child.id()))?;
        Ok(Idle { rss_kib, serving })
    });
    let _ = child.kill();
    let _ = child.wait();
    measured
}

fn strip_ansi(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}
