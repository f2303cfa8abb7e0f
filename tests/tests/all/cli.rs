//! The `busbar` command line: replies on stdout as raw bytes, errors on
//! stderr with an exit code per failure class, and a node that stops cleanly
//! on SIGTERM.

use busbar_tests::support::{Folder, guest, wait_within};
use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

/// `busbar --handlers FOLDER ARGS…` with a shared artifact cache and quiet logs.
fn command(folder: &Folder, args: &[&str]) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_busbar"));
    command
        .arg("--handlers")
        .arg(folder.path())
        .args(args)
        .env("XDG_CACHE_HOME", cache_home())
        .env("XDG_STATE_HOME", folder.state_home())
        .env_remove("RUST_LOG");
    command
}

fn busbar(folder: &Folder, args: &[&str]) -> Output {
    command(folder, args).output().expect("busbar runs")
}

fn cache_home() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/test-cli-cache")
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn call_prints_the_raw_reply() {
    let folder = Folder::with(&["echo", "greet"]);
    let out = busbar(&folder, &["call", "greet", "cli"]);
    assert_eq!((out.status.code(), out.stdout.as_slice()), (Some(0), b"hello, cli".as_slice()), "{}", stderr(&out));
}

#[test]
fn call_reads_the_payload_from_stdin() {
    let folder = Folder::with(&["echo"]);
    let mut child = command(&folder, &["call", "echo", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("busbar runs");
    let payload: Vec<u8> = (0..=255).collect();
    child.stdin.take().expect("stdin").write_all(&payload).expect("write stdin");
    let out = child.wait_with_output().expect("busbar exits");
    assert_eq!(out.stdout, payload);
}

#[test]
fn exit_codes_tell_failure_classes_apart() {
    let folder = Folder::with(&["fail"]);
    for (payload, code) in
        [("invalid:x", 10), ("unauthorized:x", 11), ("denied:x", 12), ("retry:x", 14), ("failed:x", 17)]
    {
        let out = busbar(&folder, &["call", "fail", payload]);
        assert_eq!(out.status.code(), Some(code), "{payload}: {}", stderr(&out));
        assert!(out.stdout.is_empty());
        assert!(
            stderr(&out).contains(&format!("{}: x", payload.split(':').next().unwrap_or_default())),
            "{}",
            stderr(&out)
        );
    }
    let out = busbar(&folder, &["call", "nobody"]);
    assert_eq!(out.status.code(), Some(13), "{}", stderr(&out));
}

#[test]
fn a_timeout_exits_with_its_own_code() {
    let folder = Folder::with(&["spin"]);
    let out = busbar(&folder, &["call", "spin", "--timeout", "200ms"]);
    assert_eq!(out.status.code(), Some(16), "{}", stderr(&out));
}

#[test]
fn dispatch_waits_for_the_outcome_with_retries() {
    let folder = Folder::with(&["flaky"]);
    folder.sidecar("flaky", "retry = [\"10ms\", \"10ms\"]\n");
    let out = busbar(&folder, &["dispatch", "flaky", "1"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(out.stdout, b"ok after 2 attempts");
    assert!(stderr(&out).contains("attempt 1: retry: flaky attempt 1 final=false"), "{}", stderr(&out));

    let out = busbar(&folder, &["dispatch", "flaky", "5"]);
    assert_eq!(out.status.code(), Some(14), "{}", stderr(&out));
    assert!(stderr(&out).contains("dead-lettered after 3 attempt(s)"), "{}", stderr(&out));
}

#[test]
fn broadcast_and_rolecast_deliver_before_exiting() {
    let folder = Folder::with(&["audit"]);
    for mode in ["broadcast", "rolecast"] {
        let out = command(&folder, &[mode, "audit", "hello"])
            .env("RUST_LOG", "busbar::guest=info")
            .output()
            .expect("busbar runs");
        assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
        assert!(stderr(&out).contains(&format!("audit: event `audit` ({mode}) of 5 bytes")), "{}", stderr(&out));
    }
}

#[test]
fn check_says_what_a_handler_may_reach() {
    let folder = Folder::with(&["hits"]);
    let hits = folder.path().join("hits.wasm");
    let out = busbar(&folder, &["check", hits.to_str().expect("utf-8 path")]);
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        text.contains("outbound HTTP: no origin granted") && text.contains("key-value: no bucket granted"),
        "{text}"
    );
    folder.sidecar("hits", "keyvalue = [\"counter\"]\n");
    let out = busbar(&folder, &["check", hits.to_str().expect("utf-8 path"), "--json"]);
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
    assert_eq!(report["grants"], serde_json::json!({"http": [], "keyvalue": ["counter"]}), "{report}");
}

#[test]
fn check_tells_a_handler_from_a_bad_file() {
    let folder = Folder::with(&[]);
    let out = busbar(&folder, &["check", guest("whoami").to_str().expect("utf-8 path"), "--json"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
    assert_eq!(report["exports"], serde_json::json!({"service": true, "message": true}));

    folder.write("bad.wasm", b"\0asm\x01\0\0\0");
    let bad = folder.path().join("bad.wasm");
    let out = busbar(&folder, &["check", bad.to_str().expect("utf-8 path")]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("is not a valid handler: a core WebAssembly module"), "{}", stderr(&out));
}

#[test]
fn listings_print_json() {
    let folder = Folder::with(&["echo", "audit"]);
    let out = busbar(&folder, &["services", "--json"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let services: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
    let names: Vec<_> =
        services.as_array().expect("array").iter().map(|s| s["name"].as_str().unwrap_or_default()).collect();
    assert_eq!(names, ["audit", "echo"]);
    let nodes: serde_json::Value = serde_json::from_slice(&busbar(&folder, &["nodes", "--json"]).stdout).expect("JSON");
    assert_eq!(nodes.as_array().map(Vec::len), Some(1));
    let stats: serde_json::Value = serde_json::from_slice(&busbar(&folder, &["stats", "--json"]).stdout).expect("JSON");
    assert!(stats.is_array());
}

#[test]
fn a_bad_config_names_the_key_and_the_file() {
    let folder = Folder::with(&["echo"]);
    folder.write("busbar.toml", b"[node]\nhandlerz = \"x\"\n");
    let config = folder.path().join("busbar.toml");
    let out = busbar(&folder, &["--config", config.to_str().expect("utf-8"), "call", "echo"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("handlerz") && stderr(&out).contains("busbar.toml"), "{}", stderr(&out));
}

#[test]
fn run_serves_until_sigterm_then_stops_cleanly() {
    let folder = Folder::with(&["echo"]);
    let mut child =
        command(&folder, &["run"]).env("RUST_LOG", "busbar=info").stderr(Stdio::piped()).spawn().expect("busbar runs");
    let mut lines = BufReader::new(child.stderr.take().expect("stderr")).lines();
    let serving = lines.by_ref().map_while(Result::ok).find(|l| l.contains("serving"));
    assert!(serving.is_some(), "the node never said it was serving");
    let rest = std::thread::spawn(move || lines.map_while(Result::ok).collect::<Vec<String>>());
    let status = Command::new("kill").args(["-TERM", &child.id().to_string()]).status().expect("kill runs");
    assert!(status.success());
    let exit = wait_within(&mut child, Duration::from_secs(10)).expect("busbar stops within 10 s of SIGTERM");
    let rest = rest.join().expect("stderr read");
    assert_eq!(exit.code(), Some(0), "{rest:?}");
    assert!(rest.iter().any(|l| l.contains("stopped")), "{rest:?}");
}

/// A free loopback port (the OS picks one; it is free again once dropped).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr").port()
}

#[tokio::test(flavor = "multi_thread")]
async fn sigterm_under_load_drains_every_in_flight_call() {
    const CALLS: usize = 6;
    let folder = Folder::with(&["slow"]);
    let port = free_port().to_string();
    let mut child = command(&folder, &["run", "--http", &port, "--metrics", &port])
        .env("RUST_LOG", "busbar=info")
        .stderr(Stdio::piped())
        .spawn()
        .expect("busbar runs");
    let stderr = child.stderr.take().expect("stderr");
    let log = std::thread::spawn(move || BufReader::new(stderr).lines().map_while(Result::ok).collect::<Vec<_>>());
    let url = format!("http://127.0.0.1:{port}");
    let client = reqwest::Client::new();
    let ready = busbar_tests::support::eventually(Duration::from_secs(30), async || {
        client.get(format!("{url}/readyz")).send().await.is_ok_and(|r| r.status() == 200)
    })
    .await;
    assert!(ready, "the node never became ready");

    let calls: Vec<_> = (0..CALLS)
        .map(|_| {
            let (client, url) = (client.clone(), url.clone());
            tokio::spawn(async move {
                let response = client.post(format!("{url}/call/slow")).body("800").send().await.expect("answered");
                (response.status().as_u16(), response.text().await.unwrap_or_default())
            })
        })
        .collect();
    let in_flight = busbar_tests::support::eventually(Duration::from_secs(10), async || {
        let Ok(response) = client.get(format!("{url}/metrics")).send().await else { return false };
        let text = response.text().await.unwrap_or_default();
        text.lines().any(|l| l == format!("busbar_invocations_in_flight {CALLS}"))
    })
    .await;
    assert!(in_flight, "the calls never all ran at once");

    let status = Command::new("kill").args(["-TERM", &child.id().to_string()]).status().expect("kill runs");
    assert!(status.success());
    for call in calls {
        assert_eq!(call.await.unwrap(), (200, "worked 800 ms".to_string()));
    }
    let exit = wait_within(&mut child, Duration::from_secs(40)).expect("busbar stops within its drain time");
    let log = log.join().expect("log read");
    assert_eq!(exit.code(), Some(0), "{log:#?}");
    assert!(
        log.iter().any(|l| l.contains("draining")) && log.last().is_some_and(|l| l.contains("stopped")),
        "{log:#?}"
    );
}

#[test]
fn config_check_prints_the_effective_config_with_secrets_hidden() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("node.toml");
    std::fs::write(&path, "[node]\nproject = \"shop\"\n[bus]\ndriver = \"nats\"\nsetting = { user = \"svc\" }\n")
        .unwrap();
    let folder = Folder::with(&[]);
    let out = command(&folder, &["config", "check", path.to_str().unwrap()])
        .env("BUSBAR_BUS_PASSWORD", "from-the-environment")
        .output()
        .expect("busbar runs");
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let text = String::from_utf8_lossy(&out.stdout);
    let printed: toml::Table = toml::from_str(&text).expect("the output is TOML");
    assert_eq!(printed["node"]["project"].as_str(), Some("shop"));
    assert_eq!(printed["handlers"]["timeout"].as_str(), Some("5s"), "defaults are filled in");
    let setting = &printed["connections"][0]["setting"];
    assert_eq!((setting["user"].as_str(), setting["password"].as_str()), (Some("svc"), Some("***")));
    assert!(!text.contains("from-the-environment"), "{text}");

    std::fs::write(&path, "[handlers]\ntimeuot = \"1s\"\n").unwrap();
    let out = busbar(&folder, &["config", "check", path.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("timeuot") && stderr(&out).contains("node.toml"), "{}", stderr(&out));
}

#[test]
fn json_logs_carry_one_span_per_invocation() {
    let folder = Folder::with(&["fail"]);
    let out = command(&folder, &["--log-format", "json", "call", "fail", "denied:not you"])
        .env("RUST_LOG", "busbar=info")
        .output()
        .expect("busbar runs");
    assert_eq!(out.status.code(), Some(12), "{}", stderr(&out));
    let events: Vec<serde_json::Value> =
        stderr(&out).lines().filter(|l| l.starts_with('{')).map(|l| serde_json::from_str(l).expect("JSON")).collect();
    let failed = events
        .iter()
        .find(|e| e["fields"]["message"].as_str().is_some_and(|m| m.starts_with("invocation failed")))
        .unwrap_or_else(|| panic!("no invocation event in {events:#?}"));
    let span = &failed["span"];
    assert_eq!(span["name"].as_str(), Some("invocation"));
    assert_eq!(
        (span["bus_name"].as_str(), span["mode"].as_str(), span["attempt"].as_u64()),
        (Some("fail"), Some("call"), Some(1))
    );
    assert_eq!(span["outcome"].as_str(), Some("denied"));
    assert_eq!(span["version"].as_str(), Some(busbar_tests::support::guest_version("fail").as_str()));
    assert!(span["trace_id"].as_str().is_some_and(|t| t.len() == 32), "{span}");
    assert!(span["duration_us"].as_u64().is_some(), "{span}");
}
