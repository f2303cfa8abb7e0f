//! Property tests of every parser of outside input — durations, sizes,
//! names, headers, sidecars, config, gateway query parameters: whatever the
//! input, never a panic; an error, or a value within the documented limits
//! ([`crate::limits`]).

use crate::config::Config;
use crate::delivery::{DEPTH_HEADER, Envelope, Mode};
use crate::driver::nats::wire;
use crate::handlers::sidecar::{self as handlers, Rules};
use crate::limits::{self, MAX_DURATION};
use crate::units::{parse_duration, parse_size};
use proptest::prelude::*;
use std::path::Path;

/// Text that looks like a duration or a size (digits, dots, units, noise)
/// more often than arbitrary text would.
fn quantity() -> impl Strategy<Value = String> {
    prop_oneof![
        "[0-9]{0,25}(\\.[0-9]{0,5})?(ns|us|µs|ms|s|m|min|h|B|KiB|MiB|GiB|KB|kB|MB|GB|d|)",
        "[0-9 .eE+-]{0,12}[a-zA-Zµ]{0,4}",
        any::<String>(),
    ]
}

/// A TOML value as a sidecar or config author might (mis)write it.
fn toml_value() -> impl Strategy<Value = String> {
    prop_oneof![
        quantity().prop_map(|q| format!("{q:?}")),
        any::<i64>().prop_map(|n| n.to_string()),
        any::<u64>().prop_map(|n| n.to_string()),
        prop::collection::vec(quantity(), 0..4).prop_map(|v| format!("{v:?}")),
        prop::collection::vec("[a-z_.*>]{0,12}", 0..3).prop_map(|v| format!("{v:?}")),
        Just("true".to_string()),
        Just("{ A = \"b\" }".to_string()),
    ]
}

/// Lines `key = value` with keys drawn from `keys` (and a stranger now and then).
fn table(keys: &'static [&'static str]) -> impl Strategy<Value = String> {
    let key = prop_oneof![4 => prop::sample::select(keys).prop_map(str::to_string), 1 => "[a-z_]{1,10}"];
    prop::collection::vec((key, toml_value()), 0..6).prop_map(|lines| {
        let mut seen = std::collections::HashSet::new();
        lines.into_iter().filter(|(k, _)| seen.insert(k.clone())).map(|(k, v)| format!("{k} = {v}\n")).collect()
    })
}

const HANDLER_KEYS: &[&str] = &[
    "names",
    "retry",
    "timeout",
    "memory",
    "reuse",
    "concurrency",
    "queue",
    "max_payload",
    "max_reply",
    "max_calls",
    "max_pending",
    "max_http_body",
    "env",
    "net",
    "http",
    "keyvalue",
];
const NODE_KEYS: &[&str] = &[
    "project",
    "id",
    "handlers",
    "cache",
    "state",
    "watch",
    "metrics",
    "http",
    "drain",
    "instances",
    "max_handler_size",
    "compile_memory",
    "compile_timeout",
];
const BUS_KEYS: &[&str] = &["driver", "prefix", "group", "profile", "weight", "setting"];
const GRANT_KEYS: &[&str] = &["dirs", "net", "http"];

/// Every limit of `policy` is within its documented maximum.
fn assert_bounded(policy: &handlers::Policy) {
    assert!(!policy.timeout.is_zero() && policy.timeout <= limits::MAX_TIMEOUT, "{policy:?}");
    assert!(policy.retry.len() <= limits::MAX_RETRIES, "{policy:?}");
    assert!(policy.retry.iter().all(|d| *d <= limits::MAX_RETRY_DELAY), "{policy:?}");
    assert!(policy.memory <= limits::MAX_MEMORY, "{policy:?}");
    assert!((1..=limits::MAX_CONCURRENCY).contains(&policy.concurrency), "{policy:?}");
    assert!(policy.queue <= limits::MAX_QUEUE && policy.reuse <= limits::MAX_REUSE, "{policy:?}");
    assert!(policy.max_payload <= limits::MAX_MESSAGE && policy.max_reply <= limits::MAX_MESSAGE, "{policy:?}");
    assert!(policy.max_calls <= limits::MAX_CALLS, "{policy:?}");
    assert!(policy.max_http_body <= limits::MAX_HTTP_BODY, "{policy:?}");
    assert!((1..=limits::MAX_PENDING).contains(&policy.max_pending), "{policy:?}");
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn durations_are_refused_or_bounded(text in quantity()) {
        if let Ok(d) = parse_duration(&text) {
            prop_assert!(d <= MAX_DURATION, "{text} -> {d:?}");
        }
    }

    #[test]
    fn sizes_are_refused_or_exact(text in quantity()) {
        let _ = parse_size(&text);
    }

    #[test]
    fn names_are_refused_or_usable(name in prop_oneof![any::<String>(), "[a-z_.*> -]{0,300}"]) {
        if crate::delivery::name::validate(&name).is_ok() {
            prop_assert!(!name.is_empty() && name.len() <= crate::delivery::name::MAX_LEN && !name.starts_with('_'));
            prop_assert!(name.split('.').all(|t| !t.is_empty() && !t.contains(['*', '>', ' '])));
        }
    }

    #[test]
    fn a_call_timeout_is_refused_or_bounded(text in quantity()) {
        if let Ok(d) = limits::call_timeout("?timeout=", &text) {
            prop_assert!(!d.is_zero() && d <= limits::MAX_TIMEOUT);
        }
    }

    #[test]
    fn headers_from_the_wire_never_panic(value in prop_oneof![any::<String>(), "[0-9]{0,25}", any::<u64>().prop_map(|n| n.to_string())]) {
        let mut map = async_nats::HeaderMap::new();
        map.insert(wire::TIMEOUT_HEADER, value.as_str());
        if let Ok(Some(d)) = wire::caller_timeout(Some(&map)) {
            prop_assert!(d <= limits::MAX_TIMEOUT);
            let _ = limits::deadline_in(d);
        }
        let envelope = Envelope::once("x", Mode::Call, vec![], vec![(DEPTH_HEADER.into(), value.clone())]);
        let _ = envelope.depth().saturating_add(1);
        let _ = crate::ops::trace::SpanContext::parse(&value);
        let _ = wire::failure_from(Some(&map));
    }

    #[test]
    fn sidecars_are_refused_or_bounded(text in table(HANDLER_KEYS)) {
        let dir = tempfile::tempdir().expect("tempdir");
        let sidecar = dir.path().join("h.toml");
        std::fs::write(&sidecar, &text).expect("write");
        if let Ok(policy) = handlers::policy("h", &sidecar, &Rules::default()) {
            assert_bounded(&policy);
        }
    }

    #[test]
    fn configs_are_refused_or_bounded(
        node in table(NODE_KEYS),
        handlers in table(HANDLER_KEYS),
        bus in table(BUS_KEYS),
        grants in table(GRANT_KEYS),
    ) {
        let text = format!("[node]\n{node}\n[handlers]\n{handlers}\n[bus]\n{bus}\n[grants]\n{grants}\n");
        if let Ok(config) = Config::parse_with_env(&text, Path::new("fuzz.toml"), |_| None) {
            assert_bounded(&handlers::Policy::from_defaults("x", &config.handlers));
            prop_assert!(config.node.drain <= limits::MAX_DRAIN);
            prop_assert!((1..=limits::MAX_INSTANCES).contains(&config.node.instances));
            prop_assert!(config.node.max_handler_size() <= limits::MAX_HANDLER_SIZE);
            prop_assert!(config.node.compile_memory() <= limits::MAX_COMPILE_MEMORY);
            prop_assert!(config.node.compile_timeout <= limits::MAX_COMPILE_TIMEOUT);
            prop_assert!(config.handlers.max_depth <= limits::MAX_DEPTH);
            prop_assert!(config.connections.iter().all(|c| c.weight <= limits::MAX_WEIGHT));
        }
    }
}
