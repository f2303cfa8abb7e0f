//! Handlers in every language, from one WIT: the Rust, Python, JavaScript and
//! C examples (`examples/`; the last three built by `./dev handlers`) loaded
//! into one node give the same replies and the same failure classes, and each
//! reaches another handler through the `bus` import.
//!
//! Each language has `echo-LANG` and `greet-LANG`, which calls `echo-LANG`
//! (Rust's are plain `echo` and `greet`). Serving `fail` or `slow` under the
//! name `echo-LANG` makes the bus call fail in a chosen way, so the tests see
//! how each language turns a bus error into its own failure.

use busbar::FailureClass;
use busbar_tests::support::TEST_TIMEOUT;
use busbar_tests::support::{Folder, HANDLER_CLASSES, OTHER_LANGUAGES, served, start};

/// Every language's (echo, greet) pair.
fn pairs() -> Vec<(String, String)> {
    let mut pairs = vec![("echo".to_string(), "greet".to_string())];
    pairs.extend(OTHER_LANGUAGES.iter().map(|lang| (format!("echo-{lang}"), format!("greet-{lang}"))));
    pairs
}

/// A folder with every language's greet, and `echo_as` serving each
/// language's echo name (`None`: each language's own echo).
fn greets_with_echo(echo_as: Option<&str>) -> Folder {
    let folder = Folder::with(&[]);
    for (echo, greet) in pairs() {
        folder.add(&greet, &greet).add(echo_as.unwrap_or(&echo), &echo);
    }
    folder
}

#[tokio::test(flavor = "multi_thread")]
async fn every_language_echoes_bytes_unchanged_and_greets_through_the_bus() {
    let node = start(&greets_with_echo(None)).await;
    let big: Vec<u8> = (0..=255u8).cycle().take(256 << 10).collect();
    let payloads: [&[u8]; 4] = [b"hello", b"", &[0, 0xff, 0xfe, 0x80], &big];
    for (echo, greet) in pairs() {
        for payload in payloads {
            let reply = node.call(&echo, payload.to_vec(), TEST_TIMEOUT).await;
            assert_eq!(reply.as_deref(), Ok(payload), "{echo}, {} bytes", payload.len());
        }
        let reply = node.call(&greet, "wörld".as_bytes().to_vec(), TEST_TIMEOUT).await;
        assert_eq!(reply, Ok("hello, wörld".as_bytes().to_vec()), "{greet}");
    }
    for (echo, _) in pairs() {
        assert_eq!(served(&node, &echo), 5, "{echo}: 4 direct calls and 1 from its greet");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn every_language_refuses_a_bad_payload_as_invalid() {
    let node = start(&greets_with_echo(None)).await;
    for (_, greet) in pairs() {
        for (payload, message) in [(&b""[..], "greet needs a name"), (&[b'x', 0xff][..], "the name is not UTF-8")] {
            let failure = node.call(&greet, payload.to_vec(), TEST_TIMEOUT).await.unwrap_err();
            assert_eq!((failure.class, failure.message.as_str()), (FailureClass::Invalid, message), "{greet}");
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn every_language_passes_a_handler_failure_on_with_its_class() {
    let node = start(&greets_with_echo(Some("fail"))).await;
    for (_, greet) in pairs() {
        for (class, expected) in HANDLER_CLASSES {
            let failure = node.call(&greet, format!("{class}:because").into_bytes(), TEST_TIMEOUT).await.unwrap_err();
            assert_eq!((failure.class, failure.message.as_str()), (expected, "because"), "{greet}, {class}");
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn every_language_maps_a_missing_name_to_failed_and_a_timeout_to_retry() {
    // Nobody serves echo-LANG: not-found becomes `failed`.
    let folder = Folder::with(&[]);
    for (_, greet) in pairs() {
        folder.add(&greet, &greet);
    }
    let node = start(&folder).await;
    for (_, greet) in pairs() {
        let failure = node.call(&greet, b"world".to_vec(), TEST_TIMEOUT).await.unwrap_err();
        assert_eq!(failure.class, FailureClass::Failed, "{greet}: {failure}");
        assert!(failure.message.starts_with("not-found: "), "{greet}: {}", failure.message);
    }

    // echo-LANG works longer than it may: a timeout becomes `retry`.
    let folder = greets_with_echo(Some("slow"));
    for (echo, _) in pairs() {
        folder.sidecar(&echo, "timeout = \"100ms\"\n");
    }
    let node = start(&folder).await;
    for (_, greet) in pairs() {
        let failure = node.call(&greet, b"2000".to_vec(), TEST_TIMEOUT).await.unwrap_err();
        assert_eq!(failure.class, FailureClass::Retry, "{greet}: {failure}");
        assert!(failure.message.starts_with("timeout: "), "{greet}: {}", failure.message);
    }
}

/// `hits` in Rust, Python, JavaScript and C: each GETs a URL from a real
/// local HTTP server over `wasi:http` and counts in one shared bucket, and
/// each is refused both without its grants.
#[tokio::test(flavor = "multi_thread")]
async fn every_language_calls_an_http_service_and_counts_in_a_bucket() {
    let web = busbar_tests::web::WebServer::start().await;
    let folder = Folder::with(&[]);
    let hits = ["hits", "hits-py", "hits-js", "hits-c"];
    for name in hits {
        folder.add(name, name).sidecar(name, &format!("http = [{:?}]\nkeyvalue = [\"counter\"]\n", web.origin()));
    }
    let (node, report) =
        busbar_tests::support::start_on(&Default::default(), &folder, "[grants]\nhttp = [\"http://127.0.0.1:*\"]\n")
            .await;
    assert!(report.skipped.is_empty(), "{:?}", report.skipped);
    for (n, name) in hits.iter().enumerate() {
        let reply = node.call(name, web.url("/hello").into_bytes(), TEST_TIMEOUT).await;
        let reply = String::from_utf8(reply.unwrap_or_else(|e| panic!("{name}: {e}"))).expect("text");
        assert_eq!(reply, format!("200 hello {}", n + 1), "{name}: the one counter is shared");
    }
    assert_eq!(web.seen().len(), hits.len());
    let counted = node.call("hits-js", Vec::new(), TEST_TIMEOUT).await.expect("counts only");
    assert_eq!(counted, b"5");

    let bare = Folder::with(&[]);
    for name in hits {
        bare.add(name, name);
    }
    let node = start(&bare).await;
    for name in hits {
        let denied = node.call(name, web.url("/hello").into_bytes(), TEST_TIMEOUT).await.expect_err("no grant");
        // Rust's SDK makes a refused request `denied`; the Python,
        // JavaScript and C examples answer any failed request with `retry`.
        assert!(matches!(denied.class, FailureClass::Denied | FailureClass::Retry), "{name}: {denied}");
        let denied = node.call(name, Vec::new(), TEST_TIMEOUT).await.expect_err("no bucket");
        assert!(denied.message.contains("ccess"), "{name}: {denied}");
    }
    assert_eq!(web.seen().len(), hits.len(), "no request left without a grant");
}
