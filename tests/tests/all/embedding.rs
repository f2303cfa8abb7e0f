//! busbar as a library: a driver of the embedder's own under a name of its
//! own, nodes that share an in-process bus only when given the same hub,
//! and a start that refuses a driver nobody gave it, by name.

use busbar::driver::default::DefaultDriver;
use busbar::driver::{Connection, Driver, DriverError, Inbound};
use busbar::node::StartError;
use busbar::{Config, FailureClass, NodeBuilder};
use busbar_tests::support::{Folder, TEST_TIMEOUT, runtime};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

/// A driver of the embedder's own: the in-process hub, counting connections.
struct Counting {
    hub: DefaultDriver,
    connects: AtomicUsize,
}

#[async_trait::async_trait]
impl Driver for Counting {
    async fn connect(
        &self,
        config: &busbar::config::ConnectionConfig,
        inbound: Inbound,
    ) -> Result<Arc<dyn Connection>, DriverError> {
        self.connects.fetch_add(1, Ordering::Relaxed);
        self.hub.connect(config, inbound).await
    }
}

fn config(folder: &Folder, text: &str) -> Config {
    let mut config = Config::parse(text, Path::new("embed.toml")).expect("valid");
    config.node.handlers = folder.path().to_path_buf();
    config
}

#[tokio::test]
async fn a_driver_of_its_own_serves_under_its_own_name() {
    let folder = Folder::with(&["echo"]);
    let driver = Arc::new(Counting { hub: DefaultDriver::new(), connects: AtomicUsize::new(0) });
    let (node, _) = NodeBuilder::new(config(&folder, "[bus]\ndriver = \"in-house\"\n"))
        .runtime(runtime())
        .driver("in-house", driver.clone())
        .start()
        .await
        .expect("starts on the embedder's driver");
    assert_eq!(node.call("echo", b"mine".to_vec(), TEST_TIMEOUT).await, Ok(b"mine".to_vec()));
    assert_eq!(driver.connects.load(Ordering::Relaxed), 1);
}

#[tokio::test]
async fn a_driver_nobody_gave_is_refused_by_name() {
    let folder = Folder::with(&["echo"]);
    let started = NodeBuilder::new(config(&folder, "[bus]\ndriver = \"in-house\"\n")).runtime(runtime()).start().await;
    match started.err().expect("refused") {
        StartError::Connect { name, error: DriverError::Unknown(driver) } => {
            assert_eq!((name.as_str(), driver.as_str()), ("default", "in-house"));
        }
        other => panic!("{other}"),
    }
}

#[tokio::test]
async fn nodes_share_an_in_process_bus_only_when_given_the_same_hub() {
    let folder = Folder::with(&["echo"]);
    let start = async |hub: Option<DefaultDriver>, client: bool| {
        let builder = NodeBuilder::new(config(&folder, "")).runtime(runtime());
        let builder = match hub {
            Some(hub) => builder.hub(hub),
            None => builder,
        };
        let builder = if client { builder.client() } else { builder };
        builder.start().await.expect("starts").0
    };
    let hub = DefaultDriver::new();
    let _server = start(Some(hub.clone()), false).await;
    let same = start(Some(hub), true).await;
    assert_eq!(same.call("echo", b"shared".to_vec(), TEST_TIMEOUT).await, Ok(b"shared".to_vec()));
    let alone = start(None, true).await;
    let missing = alone.call("echo", b"x".to_vec(), TEST_TIMEOUT).await.expect_err("a hub of its own");
    assert_eq!(missing.class, FailureClass::NotFound);
}
