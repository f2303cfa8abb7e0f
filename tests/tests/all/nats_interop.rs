//! A NATS client nobody here wrote drives busbar: `tests/interop/interop_check.py`
//! (the Python nats-py client, no busbar code) calls `echo`, gets a typed error
//! reply from `fail`, broadcasts to `audit`, dispatches to `echo` through
//! JetStream, and validates busbar's `$SRV.INFO|PING|STATS` replies against the
//! NATS micro JSON Schemas in `../shared/contracts/nats-micro-v1`. It runs on
//! the project venv's Python (`target/py`, made by `./dev test`); the module
//! name contains `nats`, so `./dev test` runs it on both server versions.

use busbar_tests::nats::{NatsServer, interop_dir, interop_python, server_version, shared_dir};
use busbar_tests::support::{Folder, eventually, served, start_nats};
use serde_json::Value;
use std::io::Read;
use std::path::PathBuf;
use std::process::{Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

const WAIT: Duration = Duration::from_secs(20);

/// The script waits at most 5 s per step (about 40 s in all); this bounds a
/// hung interpreter.
const SCRIPT_LIMIT: Duration = Duration::from_secs(90);

/// What the script did.
struct Outcome {
    status: ExitStatus,
    stdout: String,
    stderr: String,
}

impl Outcome {
    /// The JSON summary: the last line of stdout.
    fn summary(&self) -> Option<Value> {
        serde_json::from_str(self.stdout.lines().last()?).ok()
    }

    /// Everything the script said, for a failure message.
    fn report(&self) -> String {
        let stdout = self.summary().map_or_else(
            || self.stdout.clone(),
            |s| serde_json::to_string_pretty(&s).unwrap_or_else(|_| self.stdout.clone()),
        );
        format!("exit: {}\n---- stdout ----\n{stdout}\n---- stderr ----\n{}", self.status, self.stderr)
    }
}

/// Reads a child's pipe to the end on a blocking thread.
fn drain(pipe: Option<impl Read + Send + 'static>) -> tokio::task::JoinHandle<String> {
    tokio::task::spawn_blocking(move || {
        let mut bytes = Vec::new();
        if let Some(mut pipe) = pipe {
            pipe.read_to_end(&mut bytes).ok();
        }
        String::from_utf8_lossy(&bytes).into_owned()
    })
}

/// Runs `python script args…` without blocking the runtime: the pipes are
/// read on blocking threads, the exit is polled; killed after [`SCRIPT_LIMIT`].
async fn run_python(python: PathBuf, script: PathBuf, args: &[String]) -> Outcome {
    let mut child = Command::new(&python)
        .arg(&script)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {} {}: {e}", python.display(), script.display()));
    let (stdout, stderr) = (drain(child.stdout.take()), drain(child.stderr.take()));
    let deadline = Instant::now() + SCRIPT_LIMIT;
    let status = loop {
        if let Some(status) = child.try_wait().expect("poll the script") {
            break status;
        }
        if Instant::now() >= deadline {
            child.kill().ok();
            let status = child.wait().expect("reap the script");
            let (stdout, stderr) = (stdout.await.unwrap_or_default(), stderr.await.unwrap_or_default());
            panic!(
                "{} did not finish within {SCRIPT_LIMIT:?} (killed)\n{}",
                script.display(),
                Outcome { status, stdout, stderr }.report()
            );
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    Outcome { status, stdout: stdout.await.expect("stdout read"), stderr: stderr.await.expect("stderr read") }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nats_py_calls_dispatches_broadcasts_and_reads_schema_valid_discovery() {
    // Fail first on what is missing, with what to do about it.
    let python = interop_python();
    let contracts = shared_dir().join("contracts/nats-micro-v1");
    assert!(
        contracts.join("info_response.json").is_file(),
        "the NATS micro schemas are missing: expected {} (the project's shared/ folder beside the repository)",
        contracts.display()
    );

    let server = NatsServer::start();
    let (node, _) = start_nats(&server.url(), &Folder::with(&["echo", "fail", "audit"]), "py-node", "", "").await;
    let args = [server.url(), contracts.display().to_string()]
        .into_iter()
        .chain(["--project", "shop", "--node", "py-node"].map(String::from))
        .collect::<Vec<_>>();
    let outcome = run_python(python, interop_dir().join("interop_check.py"), &args).await;
    let on = format!("nats-server {}", server_version());
    let missing = if outcome.status.code() == Some(3) {
        " — the Python lacks nats-py or jsonschema: run ./dev test, which installs them into target/py"
    } else {
        ""
    };
    assert!(outcome.status.success(), "the nats-py interop check failed on {on}{missing}\n{}", outcome.report());
    let summary = outcome.summary().unwrap_or_else(|| panic!("no JSON summary\n{}", outcome.report()));
    let report = outcome.report();

    assert_eq!(summary["ok"], true, "{report}");
    assert_eq!(summary["failures"], Value::Array(vec![]), "{report}");
    assert_eq!(summary["call"]["same_bytes"], true, "echo returned other bytes\n{report}");
    let error = &summary["error"];
    assert_eq!(
        (error["code"].as_str(), error["message"].as_str(), error["class"].as_str()),
        (Some("400"), Some("bad input"), Some("invalid")),
        "{report}"
    );
    assert_eq!(summary["broadcast"]["published"], true, "{report}");
    assert_eq!(summary["dispatch"]["stream"], "SHOP_QUEUE", "{report}");
    assert!(summary["dispatch"]["seq"].as_u64().is_some_and(|seq| seq >= 1), "{report}");
    for verb in ["info", "ping", "stats"] {
        let reply = &summary["discovery"][verb];
        assert_eq!(reply["schema_errors"], Value::Array(vec![]), "$SRV.{verb} is off the schema on {on}\n{report}");
        assert_eq!(reply["valid"], true, "{report}");
        assert_eq!(reply["reply"]["id"], "py-node", "{report}");
    }

    // busbar's side: the broadcast and the dispatch the script sent ran.
    assert!(eventually(WAIT, async || served(&node, "audit") == 1).await, "the broadcast did not run on {on}");
    // One call plus one dispatch.
    assert!(
        eventually(WAIT, async || served(&node, "echo") >= 2).await,
        "the dispatch did not run on {on} (echo served {})",
        served(&node, "echo")
    );
    assert_eq!(served(&node, "echo"), 2, "the dispatch ran more than once");
    assert_eq!(served(&node, "fail"), 1);
}
