//! Bad configuration is an error that names the key and the file, before
//! anything starts; the README documents exactly the keys the parser takes.

use busbar::Config;
use busbar::driver::default::DefaultDriver;
use busbar_tests::support::Folder;
use std::collections::BTreeSet;

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
        .hub(DefaultDriver::new())
        .start()
        .await;
    let error = started.err().expect("refused").to_string();
    assert!(error.contains("url"), "{error}");
}

#[tokio::test]
async fn a_missing_handlers_folder_says_what_to_do() {
    let mut config = Config::default();
    config.node.handlers = "/nonexistent/handlers".into();
    config.node.state = Some(String::new());
    let error = busbar::NodeBuilder::new(config)
        .runtime(busbar_tests::support::runtime())
        .start()
        .await
        .err()
        .expect("refused");
    assert!(error.to_string().contains("/nonexistent/handlers"), "{error}");
}

/// The keys the real parser takes in `[section]`, from its own refusal of an
/// unknown key (serde lists the fields it expected; `[bus]` lists its keys).
fn parser_keys(section: &str) -> BTreeSet<String> {
    let probe = format!("[{section}]\n__probe__ = 0\n");
    let error = Config::parse(&probe, std::path::Path::new("probe.toml")).unwrap_err().to_string();
    let list = match (error.split_once("expected one of "), error.split_once(" takes "), error.split_once("expected `"))
    {
        (Some((_, fields)), _, _) => fields.to_string(),
        (None, Some((_, keys)), _) => keys.split(" or named").next().unwrap_or_default().to_string(),
        // Two fields: "expected `a` or `b`".
        (None, None, Some((_, two))) => format!("`{}", two.replace(" or ", ", ")),
        (None, None, None) => panic!("the parser did not list its keys: {error}"),
    };
    list.split(", ").map(|k| k.trim().trim_matches('`').to_string()).collect()
}

/// The keys of `[section]` in the README's configuration reference table.
fn documented_keys(section: &str) -> BTreeSet<String> {
    let readme = std::fs::read_to_string(busbar_tests::support::repo().join("README.md")).unwrap();
    let table = readme.split("## Configuration reference").nth(1).expect("the section").split("\n## ").next().unwrap();
    let prefix = format!("| `[{section}] ");
    table
        .lines()
        .filter_map(|line| line.strip_prefix(&prefix))
        .flat_map(|rest| {
            let cell = rest.split(" |").next().unwrap_or_default();
            cell.split(", ").map(|k| k.trim_matches('`').to_string()).collect::<Vec<_>>()
        })
        .collect()
}

#[test]
fn the_readme_reference_table_documents_exactly_the_keys_the_parser_takes() {
    for section in ["node", "handlers", "grants", "bus"] {
        let parser = parser_keys(section);
        assert!(parser.len() >= 2, "[{section}]: {parser:?}");
        assert_eq!(documented_keys(section), parser, "[{section}]: README table vs parser");
    }
}

#[test]
fn the_example_production_config_is_valid() {
    let path = busbar_tests::support::repo().join("deploy/busbar.toml");
    let config = Config::load(&path).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(config.connections[0].driver, "nats");
    assert!(config.node.metrics.is_some_and(|a| a.ip().is_loopback()), "metrics stay on loopback");
}

/// `systemd-analyze verify` on the unit, with `ExecStart` pointing at the
/// binary under test; it prints nothing for a unit it fully understands.
#[test]
fn the_systemd_unit_verifies_cleanly() {
    let Ok(version) = std::process::Command::new("systemd-analyze").arg("--version").output() else {
        panic!("systemd-analyze is missing (Debian: systemd); it checks deploy/busbar.service");
    };
    assert!(version.status.success());
    let unit = std::fs::read_to_string(busbar_tests::support::repo().join("deploy/busbar.service")).unwrap();
    assert!(unit.contains("ExecStart=/usr/local/bin/busbar "), "the unit runs the installed binary");
    let dir = tempfile::tempdir().unwrap();
    let copy = dir.path().join("busbar.service");
    std::fs::write(&copy, unit.replace("/usr/local/bin/busbar", env!("CARGO_BIN_EXE_busbar"))).unwrap();
    let out = std::process::Command::new("systemd-analyze").arg("verify").arg(&copy).output().unwrap();
    let said = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success() && said.trim().is_empty(), "systemd-analyze verify: {said}");
}
