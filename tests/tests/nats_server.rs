//! The NATS test harness itself (`busbar_tests::nats`): a real `nats-server`
//! per test with JetStream on, request/reply through it, and a client that
//! gets its round trips back after the server is killed and restarted on the
//! same port and store directory.
//!
//! `./dev test` runs every test whose name contains `nats` against Debian's
//! 2.9 server and again against a current 2.1x one
//! (`BUSBAR_NATS_SERVER=target/py/bin/nats-server`); the module `nats_server`
//! puts these in that set.

#![allow(clippy::expect_used, clippy::unwrap_used, reason = "a failed expectation is a failed test")]

use async_nats::jetstream;
use busbar_tests::nats::{self, NatsServer};
use bytes::Bytes;
use futures_util::StreamExt;
use std::time::{Duration, Instant};

/// Answers every request on `subject` with its payload.
async fn echo_responder(client: async_nats::Client, subject: &str) -> tokio::task::JoinHandle<()> {
    let mut requests = client.subscribe(subject.to_owned()).await.expect("subscribe");
    tokio::spawn(async move {
        while let Some(request) = requests.next().await {
            if let Some(reply) = request.reply {
                client.publish(reply, request.payload).await.expect("publish the reply");
            }
        }
    })
}

/// Sends `payload` to `subject` until a reply comes, for at most `within`: a
/// responder on another connection may not be registered at the server yet,
/// and after a restart both connections have to reconnect first.
async fn request_eventually(client: &async_nats::Client, subject: &str, payload: &str, within: Duration) -> Bytes {
    let deadline = Instant::now() + within;
    loop {
        let request = async_nats::Request::new()
            .payload(Bytes::from(payload.to_owned()))
            .timeout(Some(Duration::from_millis(500)));
        match client.send_request(subject.to_owned(), request).await {
            Ok(reply) => return reply.payload,
            Err(_) if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Err(e) => panic!("no reply on {subject} within {within:?} (server {}): {e}", nats::server_version()),
        }
    }
}

/// A file-stored stream `name` on `name.>` holding one acknowledged message.
async fn stream_with_one_message(js: &jetstream::Context, name: &str) {
    js.create_stream(jetstream::stream::Config {
        name: name.to_owned(),
        subjects: vec![format!("{name}.>")],
        storage: jetstream::stream::StorageType::File,
        ..Default::default()
    })
    .await
    .expect("create a stream: JetStream is enabled");
    js.publish(format!("{name}.one"), Bytes::from_static(b"kept")).await.expect("publish").await.expect("stored");
}

/// The number of messages in stream `name`, once JetStream answers again
/// (each try bounded: a request written as the connection drops is lost).
async fn messages_in(js: &jetstream::Context, name: &str) -> u64 {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let info = tokio::time::timeout(Duration::from_secs(1), async {
            let mut stream = js.get_stream(name).await.map_err(|e| e.to_string())?;
            stream.info().await.map(|info| info.state.messages).map_err(|e| e.to_string())
        });
        match info.await.unwrap_or_else(|_| Err("timed out".to_owned())) {
            Ok(messages) => return messages,
            Err(_) if Instant::now() < deadline => tokio::time::sleep(Duration::from_millis(50)).await,
            Err(e) => panic!("stream {name} unreadable (server {}): {e}", nats::server_version()),
        }
    }
}

mod nats_server {
    use super::*;

    #[test]
    fn the_server_says_which_version_runs() {
        let version = nats::server_version();
        println!("nats-server {version} ({})", nats::server_binary().display());
        assert!(version.starts_with("v2."), "unexpected version {version:?}");
    }

    #[tokio::test]
    async fn a_responder_answers_a_request_from_another_connection() {
        let server = NatsServer::start();
        assert_eq!(server.url(), format!("nats://127.0.0.1:{}", server.port()));
        let _responder = echo_responder(server.client().await, "smoke.echo").await;
        let requester = server.client().await;

        let reply = request_eventually(&requester, "smoke.echo", "hello", Duration::from_secs(5)).await;
        assert_eq!(reply, "hello");

        let nobody = requester.request("smoke.nobody", Bytes::new()).await.expect_err("nobody serves it");
        assert_eq!(nobody.kind(), async_nats::RequestErrorKind::NoResponders);
    }

    #[tokio::test]
    async fn jetstream_is_enabled_and_stores_in_the_store_dir() {
        let server = NatsServer::start();
        let js = jetstream::new(server.client().await);
        stream_with_one_message(&js, "SMOKE").await;
        assert_eq!(messages_in(&js, "SMOKE").await, 1);
        assert!(
            server.store_dir().join("jetstream").is_dir(),
            "JetStream writes under {}",
            server.store_dir().display()
        );
    }

    // Multi-threaded, so the clients run while the harness blocks in kill9/stop/restart:
    // they see the outage as it happens, not after it, when a request could be
    // written to the dead connection and be lost.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_client_gets_round_trips_back_after_kill9_and_restart() {
        let mut server = NatsServer::start();
        let (port, store) = (server.port(), server.store_dir().to_path_buf());
        let _responder = echo_responder(server.client().await, "smoke.echo").await;
        let requester = server.client().await;
        let js = jetstream::new(requester.clone());
        stream_with_one_message(&js, "KILLED").await;
        assert_eq!(request_eventually(&requester, "smoke.echo", "before", Duration::from_secs(5)).await, "before");

        server.kill9();
        assert!(!server.is_running());
        assert!(std::net::TcpStream::connect(("127.0.0.1", port)).is_err(), "nothing listens after kill9");
        server.restart();

        assert_eq!((server.port(), server.store_dir()), (port, store.as_path()), "same port, same store");
        assert_eq!(request_eventually(&requester, "smoke.echo", "after", Duration::from_secs(15)).await, "after");
        assert_eq!(messages_in(&js, "KILLED").await, 1, "the acknowledged message survived SIGKILL");
    }

    // Multi-threaded: see above.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_graceful_stop_and_restart_keeps_jetstream_data() {
        let mut server = NatsServer::start();
        let client = server.client().await;
        let js = jetstream::new(client.clone());
        stream_with_one_message(&js, "STOPPED").await;

        server.stop_gracefully();
        assert!(!server.is_running());
        server.restart();

        assert_eq!(messages_in(&js, "STOPPED").await, 1);
        assert!(server.log_tail(200).contains("restart on port"), "the log spans both runs");
    }

    #[test]
    #[should_panic(expected = "stayed in use")]
    fn a_restart_on_a_port_taken_meanwhile_fails_and_says_so() {
        let mut server = NatsServer::start();
        server.kill9();
        let _squatter = std::net::TcpListener::bind(("127.0.0.1", server.port())).expect("take the port");
        server.restart();
    }

    #[test]
    #[should_panic(expected = "apt-get install -y nats-server")]
    fn a_missing_binary_fails_with_install_instructions() {
        let _server = NatsServer::builder().binary("/nonexistent/nats-server").start();
    }

    #[tokio::test]
    async fn extra_arguments_reach_the_server() {
        let server = NatsServer::builder().arg("--auth").arg("s3cret").start();
        let client = async_nats::ConnectOptions::with_token("s3cret".into())
            .connect(server.url())
            .await
            .expect("connect with the token");
        assert!(client.server_info().auth_required, "the server was started with --auth");
    }
}
