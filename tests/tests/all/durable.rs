//! Durable dispatch on the default driver: `busbar run` keeps every accepted
//! dispatch, its attempt and due time, and its dead letters in its state
//! directory, so a kill -9 loses nothing, a retry runs at its time after a
//! restart, and a bad state is refused at start with what to do.
//!
//! The work is `hostile`'s `job:PATH:MS:FAILS`: it appends its attempt
//! number to PATH (in a granted directory), works MS ms, and fails with
//! `retry` while the attempt is at most FAILS. The files say what ran, and
//! how often.

use busbar_tests::support::{ChildLog, Folder, RunningNode, busbar_run, eventually};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

const BUSBAR: &str = env!("CARGO_BIN_EXE_busbar");

/// A node's files: its handlers, its home (config, cache, state) and the
/// directory its jobs write to.
struct Site {
    folder: Folder,
    home: tempfile::TempDir,
    out: tempfile::TempDir,
    port: u16,
}

impl Site {
    /// `job` (hostile) granted `/out`, with `sidecar` lines more.
    fn new(sidecar: &str) -> Self {
        let folder = Folder::with(&[]);
        folder.add("hostile", "job");
        let out = tempfile::tempdir().expect("tempdir");
        folder.sidecar(
            "job",
            &format!("{sidecar}\n[[dirs]]\nhost = {:?}\nguest = \"/out\"\nmode = \"rw\"\n", out.path()),
        );
        let port = std::net::TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr").port();
        Self { folder, home: tempfile::tempdir().expect("tempdir"), out, port }
    }

    fn config(&self) -> String {
        format!(
            "[node]\nstate = {:?}\nhttp = \"127.0.0.1:{}\"\n[grants]\ndirs = [{:?}]\n",
            self.state().display().to_string(),
            self.port,
            self.out.path().display().to_string()
        )
    }

    fn state(&self) -> PathBuf {
        self.home.path().join("state")
    }

    /// `busbar run` on this site, serving.
    fn run(&self) -> (RunningNode, Vec<String>, ChildLog) {
        let (child, log, rest) = busbar_run(Path::new(BUSBAR), &self.folder, &self.config(), self.home.path());
        assert!(log.iter().any(|l| l.contains("serving")), "the node did not start: {log:#?}");
        (child, log, rest)
    }

    /// Dispatches `payload` to `job` through the gateway: accepted (202).
    async fn dispatch(&self, client: &reqwest::Client, payload: String) {
        let url = format!("http://127.0.0.1:{}/dispatch/job", self.port);
        let answer = client.post(url).body(payload).send().await.expect("gateway answers");
        assert_eq!(answer.status().as_u16(), 202, "{:?}", answer.text().await);
    }

    /// The attempts recorded in `/out/NAME`, in order.
    fn attempts(&self, name: &str) -> Vec<u32> {
        std::fs::read_to_string(self.out.path().join(name))
            .map(|t| t.lines().filter_map(|l| l.parse().ok()).collect())
            .unwrap_or_default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_killed_with_a_backlog_and_retries_pending_runs_every_job_after_a_restart() {
    const JOBS: usize = 1000;
    const RETRIED: usize = 50;
    let site = Site::new("concurrency = 2\nretry = [\"2s\"]\n");
    let (node, _, _log) = site.run();
    let client = reqwest::Client::new();
    for i in 0..RETRIED {
        site.dispatch(&client, format!("job:/out/retry-{i}:0:1")).await;
    }
    for i in 0..JOBS {
        site.dispatch(&client, format!("job:/out/job-{i}:10:0")).await;
    }
    // Every dispatch was accepted; the retries wait for their second
    // attempt, and most jobs wait for a slot (2 at a time, 10 ms each).
    let ran_before = (0..JOBS).filter(|i| !site.attempts(&format!("job-{i}")).is_empty()).count();
    node.kill9();
    assert!(ran_before < JOBS, "the backlog was gone before the kill");

    let (node, log, _rest) = site.run();
    let all_ran = eventually(Duration::from_secs(120), async || {
        (0..JOBS).all(|i| !site.attempts(&format!("job-{i}")).is_empty())
            && (0..RETRIED).all(|i| site.attempts(&format!("retry-{i}")).contains(&2))
    })
    .await;
    node.terminate();
    let missing: Vec<usize> = (0..JOBS).filter(|i| site.attempts(&format!("job-{i}")).is_empty()).collect();
    assert!(all_ran, "{} jobs never ran, e.g. {:?}; {log:#?}", missing.len(), missing.first());
    let twice = (0..JOBS).filter(|i| site.attempts(&format!("job-{i}")).len() > 1).count();
    let retried_twice = (0..RETRIED).filter(|i| site.attempts(&format!("retry-{i}")).len() > 2).count();
    eprintln!(
        "{JOBS} jobs ({ran_before} before the kill) and {RETRIED} retried ones all ran; run again after the restart: {twice} jobs, {retried_twice} retried ones"
    );
    // At least once: only what was running at the kill (2 at a time), or
    // had just finished with its removal not yet committed, runs again.
    assert!(twice + retried_twice <= 4, "{twice} jobs and {retried_twice} retried ones ran again");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retry_due_after_a_crash_runs_at_its_time_not_at_once_and_not_never() {
    let site = Site::new("retry = [\"4s\"]\n");
    let (node, _, _log) = site.run();
    site.dispatch(&reqwest::Client::new(), "job:/out/late:0:1".into()).await;
    let first = Instant::now();
    assert!(eventually(Duration::from_secs(30), async || site.attempts("late") == [1]).await, "attempt 1 never ran");
    node.kill9();
    let (node, _, _rest) = site.run();
    assert!(eventually(Duration::from_secs(30), async || site.attempts("late") == [1, 2]).await, "attempt 2 never ran");
    let second = first.elapsed();
    node.terminate();
    // Attempt 1 was recorded just before `first` could see it, and failed
    // right after; attempt 2 was due 4 s after that failure.
    assert!(second >= Duration::from_millis(3800), "attempt 2 ran {second:?} after attempt 1");
    assert!(second < Duration::from_secs(20), "attempt 2 ran {second:?} after attempt 1");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dead_letters_survive_a_restart_and_the_cli_reads_drops_and_replays_a_stopped_nodes() {
    let site = Site::new("");
    let (node, _, _log) = site.run();
    site.dispatch(&reqwest::Client::new(), "job:/out/doomed:0:1".into()).await;
    let state = site.state();
    let buried = eventually(Duration::from_secs(30), async || {
        busbar::driver::default::state::read_dead_letters(&state).is_ok_and(|l| l.len() == 1)
    })
    .await;
    assert!(buried, "no dead letter");
    node.terminate();
    let cli = |args: &[&str]| {
        let config = site.home.path().join("busbar.toml");
        std::process::Command::new(BUSBAR)
            .arg("--config")
            .arg(&config)
            .arg("--handlers")
            .arg(site.folder.path())
            .args(args)
            .output()
            .expect("busbar runs")
    };
    let listed = cli(&["dead-letters", "--json"]);
    let text = String::from_utf8_lossy(&listed.stdout);
    assert!(
        listed.status.success() && text.contains("\"name\": \"job\"") && text.contains("fails on purpose"),
        "{text}"
    );
    let replayed = cli(&["dead-letters", "replay", "job"]);
    assert!(String::from_utf8_lossy(&replayed.stderr).contains("replayed 1 dead letter(s)"), "{replayed:?}");
    // The replayed dispatch runs when the node starts: attempt 1 again, and
    // with no retry schedule it is buried again.
    let (node, _, _rest) = site.run();
    assert!(eventually(Duration::from_secs(30), async || site.attempts("doomed") == [1, 1]).await, "not replayed");
    let again = eventually(Duration::from_secs(30), async || {
        busbar::driver::default::state::read_dead_letters(&state).is_ok_and(|l| l.len() == 1)
    })
    .await;
    assert!(again, "not buried again");
    node.terminate();
    let dropped = cli(&["dead-letters", "drop", "job"]);
    assert!(String::from_utf8_lossy(&dropped.stderr).contains("dropped 1 dead letter(s)"), "{dropped:?}");
    assert!(busbar::driver::default::state::read_dead_letters(&state).expect("readable").is_empty());
}

/// `busbar run` on `site` under `config` that must fail to start; its log.
fn refused_start(site: &Site, config: &str) -> String {
    let (node, log, rest) = busbar_run(Path::new(BUSBAR), &site.folder, config, site.home.path());
    let status = node.exit_within(Duration::from_secs(30)).expect("it exits");
    assert!(!status.success(), "it started: {log:#?}");
    let rest: Vec<String> = rest.map_while(Result::ok).collect();
    [log, rest].concat().join("\n")
}

#[test]
fn a_second_node_on_a_state_in_use_is_refused_at_start() {
    let site = Site::new("");
    let (first, _, _log) = site.run();
    // The same state, another gateway port.
    let config = site.config().replace(&format!("127.0.0.1:{}", site.port), "127.0.0.1:0");
    let said = refused_start(&site, &config);
    first.terminate();
    assert!(said.contains("is in use by another busbar node (pid"), "{said}");
}

#[test]
fn a_damaged_state_is_refused_at_start_and_left_as_it_was() {
    let site = Site::new("");
    std::fs::create_dir_all(site.state()).expect("state dir");
    let garbage = b"not a database, but somebody's data".repeat(200);
    std::fs::write(site.state().join("busbar.db"), &garbage).expect("written");
    let said = refused_start(&site, &site.config());
    assert!(said.contains("cannot be read") && said.contains("move it aside"), "{said}");
    assert_eq!(std::fs::read(site.state().join("busbar.db")).expect("still there"), garbage);
}

#[test]
fn a_state_directory_that_cannot_be_written_is_refused_at_start() {
    let site = Site::new("");
    // Its parent is a file: no directory can be made there.
    std::fs::write(site.home.path().join("state"), b"a file").expect("written");
    let said = refused_start(&site, &site.config());
    assert!(said.contains("cannot be written") && said.contains("give `[node] state` a writable directory"), "{said}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backlog_bigger_than_admission_drains_at_the_handlers_pace_with_no_dead_letter() {
    // 4 at once and 4 waiting: a call past them is `overloaded` at once, but
    // an accepted dispatch waits for its slot however long the backlog.
    let folder = Folder::with(&["echo"]);
    folder.sidecar("echo", "concurrency = 4\nqueue = 4\n");
    let state = tempfile::tempdir().expect("tempdir");
    let hub = busbar::driver::default::DefaultDriver::durable(state.path()).expect("state opens");
    let (node, _) = busbar_tests::support::start_on(&hub, &folder, "").await;
    let mut outcomes = Vec::new();
    for i in 0..2000 {
        let receipt = node.dispatch("echo", format!("{i}").into_bytes()).await.expect("accepted");
        outcomes.push(receipt.outcome.expect("an outcome to wait for"));
    }
    for (i, outcome) in outcomes.into_iter().enumerate() {
        let outcome = outcome.await.expect("finished");
        assert_eq!(outcome.result, Ok(format!("{i}").into_bytes()), "job {i} after {} attempts", outcome.attempts);
        assert_eq!(outcome.attempts, 1, "job {i} used up an attempt waiting");
    }
    assert!(node.dead_letters().await.expect("listed").is_empty());
    assert_eq!(busbar_tests::support::dispatched(&node, "echo"), 2000);
}
