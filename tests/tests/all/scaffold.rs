//! `busbar new`: the project it writes for each language builds as it is,
//! with that language's own tools, and the component it builds serves calls.

use busbar::FailureClass;
use busbar::toolkit::scaffold::Lang;
use busbar_tests::support::TEST_TIMEOUT;
use busbar_tests::support::{Folder, repo, start};
use std::path::{Path, PathBuf};
use std::process::Command;

/// Runs `program args` in `dir` with componentize-py (from `./dev handlers`)
/// first on PATH; fails the test with its output if it fails.
fn run(dir: &Path, program: &str, args: &[&str], env: &[(&str, &Path)]) {
    let tools = repo().join("target/guest-tools/py/bin");
    let path = std::env::join_paths(
        std::iter::once(tools).chain(std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default())),
    )
    .unwrap();
    let mut command = Command::new(program);
    command.args(args).current_dir(dir).env("PATH", path);
    for (key, value) in env {
        command.env(key, value);
    }
    let out = command.output().unwrap_or_else(|e| panic!("cannot run {program}: {e}"));
    assert!(
        out.status.success(),
        "`{program} {}` in {} failed ({}):\n{}\n{}",
        args.join(" "),
        dir.display(),
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Scaffolds `name` in `lang` under `tmp` with the busbar binary, builds it
/// with the commands the scaffold's README gives, and returns the component.
fn scaffold_and_build(tmp: &Path, lang: Lang, name: &str) -> PathBuf {
    let busbar = Path::new(env!("CARGO_BIN_EXE_busbar"));
    run(tmp, busbar.to_str().unwrap(), &["new", "--lang", lang.as_str(), name], &[]);
    let dir = tmp.join(name);
    match lang {
        // The guest build cache the test build script fills: the SDK and
        // wit-bindgen are compiled once, not per test run.
        Lang::Rust => {
            let target = repo().join("target/guests");
            run(&dir, "cargo", &["build", "--release"], &[("CARGO_TARGET_DIR", &target)]);
            return target.join("wasm32-wasip2/release").join(lang.artifact(name).file_name().unwrap());
        }
        // `pip install -r requirements.txt` is what `./dev handlers` did for
        // the examples (the same pinned componentize-py).
        Lang::Python => run(&dir, "./build.sh", &[], &[]),
        Lang::Js => {
            run(&dir, "npm", &["install", "--prefer-offline", "--no-audit", "--no-fund"], &[]);
            run(&dir, "npm", &["run", "build"], &[]);
        }
        Lang::C => run(&dir, "make", &[], &[("BUSBAR", busbar)]),
    }
    dir.join(lang.artifact(name))
}

async fn a_new_project_builds_and_serves(lang: Lang) {
    let tmp = tempfile::tempdir().unwrap();
    let name = format!("hello-{lang}");
    let component = scaffold_and_build(tmp.path(), lang, &name);

    let folder = Folder::with(&[]);
    folder.add_file(&component, &name);
    let node = start(&folder).await;
    assert_eq!(node.call(&name, b"world".to_vec(), TEST_TIMEOUT).await, Ok(b"hello, world".to_vec()), "{lang}");
    let failure = node.call(&name, Vec::new(), TEST_TIMEOUT).await.unwrap_err();
    assert_eq!((failure.class, failure.message.as_str()), (FailureClass::Invalid, "send a name to greet"), "{lang}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_new_rust_project_builds_and_serves() {
    a_new_project_builds_and_serves(Lang::Rust).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_new_python_project_builds_and_serves() {
    a_new_project_builds_and_serves(Lang::Python).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_new_javascript_project_builds_and_serves() {
    a_new_project_builds_and_serves(Lang::Js).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_new_c_project_builds_and_serves() {
    a_new_project_builds_and_serves(Lang::C).await;
}
