//! Bad configuration is an error that names the key and the file, before
//! anything starts.

use busbar::Config;
use busbar::driver::default::DefaultDriver;
use busbar_tests::support::Folder;
use std::sync::Arc;

#[test]
fn an_unknown_key_names_the_key_and_the_file() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("node.toml");
    std::fs::write(&path, "[handlers]\ntimeout = \"1s\"\nmax_dept = 3\n").expect("write");
    let error = Config::load(&path).unwrap_err().to_string();
    assert!(error.contains("max_dept") && error.contains(&path.display().to_string()), "{error}");
}

#[tokio::test]
async fn an_unknown_driver_setting_stops_the_start() {
    let mut config =
        Config::parse("[bus]\nsetting = { url = \"nats://x\" }\n", std::path::Path::new("t.toml")).expect("parses");
    let folder = Folder::with(&[]);
    config.node.handlers = folder.path().to_path_buf();
    let started = busbar::NodeBuilder::new(config)
        .runtime(busbar_tests::support::runtime())
        .driver("default", Arc::new(DefaultDriver::new()))
        .start()
        .await;
    let error = started.err().expect("refused").to_string();
    assert!(error.contains("url"), "{error}");
}

#[tokio::test]
async fn a_missing_handlers_folder_says_what_to_do() {
    let mut config = Config::default();
    config.node.handlers = "/nonexistent/handlers".into();
    let error = busbar::NodeBuilder::new(config)
        .runtime(busbar_tests::support::runtime())
        .start()
        .await
        .err()
        .expect("refused");
    assert!(error.to_string().contains("/nonexistent/handlers"), "{error}");
}
