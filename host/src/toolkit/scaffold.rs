//! `busbar new`: a handler project in Rust, Python, JavaScript or C that
//! builds as it is. The templates live in `host/templates/LANG/` and are
//! compiled into the binary; `{{name}}` (and for Rust `{{lib}}`, `{{sdk}}`)
//! are filled in. Python and JavaScript projects get their own copy of the
//! WIT contract; C and Rust get theirs from busbar and the guest SDK.

use super::{WIT, WIT_DEPS, WIT_FILE};
use anyhow::{Context as _, Result, bail};
use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

/// The languages `busbar new` writes projects for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lang {
    /// Rust with the `busbar-guest` SDK (cargo, `wasm32-wasip2`).
    Rust,
    /// Python with componentize-py.
    Python,
    /// JavaScript with componentize-js.
    Js,
    /// C with clang, wasi-libc and `busbar guest`.
    C,
}

impl Lang {
    /// Every language, in the order the docs list them.
    pub const ALL: [Lang; 4] = [Lang::Rust, Lang::Python, Lang::Js, Lang::C];

    /// The name used on the command line (`--lang`).
    pub fn as_str(self) -> &'static str {
        match self {
            Lang::Rust => "rust",
            Lang::Python => "python",
            Lang::Js => "js",
            Lang::C => "c",
        }
    }

    /// The language's name in prose.
    pub fn title(self) -> &'static str {
        match self {
            Lang::Rust => "Rust",
            Lang::Python => "Python",
            Lang::Js => "JavaScript",
            Lang::C => "C",
        }
    }

    /// The file stem of the language's guide in `docs/guides/`.
    pub fn guide(self) -> &'static str {
        match self {
            Lang::Js => "javascript",
            other => other.as_str(),
        }
    }

    /// The template files: path in the project, contents.
    fn templates(self) -> &'static [(&'static str, &'static str)] {
        macro_rules! files {
            ($lang:literal: $($path:literal),+ $(,)?) => {
                &[$(($path, include_str!(concat!("../../templates/", $lang, "/", $path)))),+]
            };
        }
        match self {
            Lang::Rust => files!("rust": "Cargo.toml", ".cargo/config.toml", "src/lib.rs", ".gitignore"),
            Lang::Python => files!("python": "app.py", "build.sh", "requirements.txt", ".gitignore"),
            Lang::Js => files!("js": "handler.js", "package.json", ".gitignore"),
            Lang::C => files!("c": "handler.c", "Makefile", ".gitignore"),
        }
    }

    /// The commands that build the project, run in its directory.
    pub fn build_commands(self) -> &'static [&'static str] {
        match self {
            Lang::Rust => &["cargo build --release"],
            Lang::Python => &["pip install -r requirements.txt", "./build.sh"],
            Lang::Js => &["npm install", "npm run build"],
            Lang::C => &["make"],
        }
    }

    /// Where the build leaves the component, relative to the project.
    pub fn artifact(self, name: &str) -> PathBuf {
        match self {
            Lang::Rust => Path::new("target/wasm32-wasip2/release").join(format!("{}.wasm", lib_name(name))),
            Lang::Python | Lang::Js | Lang::C => PathBuf::from(format!("{name}.wasm")),
        }
    }

    /// Whether the project carries its own copy of the WIT contract in `wit/`.
    fn carries_wit(self) -> bool {
        matches!(self, Lang::Python | Lang::Js)
    }
}

impl fmt::Display for Lang {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Lang {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "rust" | "rs" => Ok(Lang::Rust),
            "python" | "py" => Ok(Lang::Python),
            "js" | "javascript" => Ok(Lang::Js),
            "c" => Ok(Lang::C),
            other => Err(format!("unknown language `{other}`: expected rust, python, js or c")),
        }
    }
}

/// What to scaffold.
#[derive(Debug, Clone)]
pub struct Project {
    /// The handler's name: the project directory, the component's file stem
    /// and so the bus name it serves.
    pub name: String,
    /// The language.
    pub lang: Lang,
    /// The directory to create (default: `./NAME`).
    pub dir: PathBuf,
    /// Rust only: the `busbar-guest` SDK directory the project depends on.
    pub sdk: Option<PathBuf>,
}

/// The guest SDK of the source tree busbar was built from, if it is still there.
pub fn default_sdk() -> Option<PathBuf> {
    let sdk = Path::new(env!("CARGO_MANIFEST_DIR")).parent()?.join("guest-sdk");
    sdk.join("Cargo.toml").is_file().then_some(sdk)
}

/// Checks a project name: lowercase letters, digits, `-` and `_`, starting
/// with a letter, so that it works as a directory, a package and a bus name.
pub fn validate_name(name: &str) -> Result<()> {
    let mut chars = name.chars();
    let starts_with_letter = chars.next().is_some_and(|c| c.is_ascii_lowercase());
    if !starts_with_letter || !chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_') {
        bail!(
            "`{name}` cannot name a handler project: use lowercase letters, digits, `-` and `_`, \
             starting with a letter (a handler serves more names through its sidecar's `names`)"
        );
    }
    Ok(())
}

/// Writes the project; returns the files written, relative to its directory.
/// Refuses to write into a directory that exists and is not empty.
pub fn create(project: &Project) -> Result<Vec<PathBuf>> {
    let Project { name, lang, dir, sdk } = project;
    validate_name(name)?;
    if dir.read_dir().is_ok_and(|mut entries| entries.next().is_some()) {
        bail!("{} already exists and is not empty; pick another name or `--dir`", dir.display());
    }
    let sdk = match (lang, sdk) {
        (Lang::Rust, Some(sdk)) => Some(sdk.clone()),
        (Lang::Rust, None) => Some(default_sdk().context(
            "cannot find the busbar-guest SDK (it is not on crates.io yet): \
             pass `--sdk PATH` to the guest-sdk directory of a busbar checkout",
        )?),
        _ => None,
    };
    let sdk = match sdk {
        Some(sdk) => {
            let sdk = std::path::absolute(&sdk).with_context(|| format!("cannot resolve {}", sdk.display()))?;
            if !sdk.join("Cargo.toml").is_file() {
                bail!("{} is not the busbar-guest SDK (no Cargo.toml there)", sdk.display());
            }
            toml::Value::String(sdk.display().to_string()).to_string()
        }
        None => String::new(),
    };
    let fill = |text: &str| text.replace("{{name}}", name).replace("{{lib}}", &lib_name(name)).replace("{{sdk}}", &sdk);

    let mut files: Vec<(PathBuf, String)> =
        lang.templates().iter().map(|(path, text)| (PathBuf::from(path), fill(text))).collect();
    if lang.carries_wit() {
        files.push((Path::new("wit").join(WIT_FILE), WIT.to_string()));
        files.extend(WIT_DEPS.iter().map(|(path, text)| (Path::new("wit").join(path), text.to_string())));
    }
    files.push((PathBuf::from("README.md"), readme(name, *lang)));

    for (path, text) in &files {
        let full = dir.join(path);
        if let Some(parent) = full.parent() {
            std::fs::create_dir_all(parent).with_context(|| format!("cannot create {}", parent.display()))?;
        }
        std::fs::write(&full, text).with_context(|| format!("cannot write {}", full.display()))?;
        if path.extension().is_some_and(|e| e == "sh") {
            make_executable(&full)?;
        }
    }
    Ok(files.into_iter().map(|(path, _)| path).collect())
}

/// The Rust library name of a package: `-` becomes `_`.
fn lib_name(name: &str) -> String {
    name.replace('-', "_")
}

fn readme(name: &str, lang: Lang) -> String {
    let build = lang.build_commands().join("\n");
    format!(
        "# {name}\n\n\
         A busbar service handler in {title}, made by `busbar new --lang {lang} {name}`.\n\n\
         ## Build\n\n```sh\n{build}\n```\n\n\
         ## Run\n\n\
         Drop the component into a node's handlers folder; a running node loads it\n\
         at once and serves it under the name `{name}`:\n\n\
         ```sh\ncp {artifact} HANDLERS/{name}.wasm\nbusbar --handlers HANDLERS call {name} world    # hello, world\n```\n\n\
         The guide: busbar's `docs/guides/{guide}.md`.\n",
        title = lang.title(),
        artifact = lang.artifact(name).display(),
        guide = lang.guide(),
    )
}

#[cfg(unix)]
fn make_executable(path: &Path) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755))
        .with_context(|| format!("cannot make {} executable", path.display()))
}

#[cfg(not(unix))]
fn make_executable(_: &Path) -> Result<()> {
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn project(dir: &Path, lang: Lang) -> Project {
        Project { name: "hello-world".into(), lang, dir: dir.join("hello-world"), sdk: default_sdk() }
    }

    #[test]
    fn every_language_writes_its_files_with_the_name_filled_in() {
        let tmp = tempfile::tempdir().unwrap();
        for lang in Lang::ALL {
            let project = Project { dir: tmp.path().join(lang.as_str()), ..project(tmp.path(), lang) };
            let files = create(&project).unwrap();
            assert!(files.contains(&PathBuf::from("README.md")), "{lang}: {files:?}");
            for file in &files {
                let text = std::fs::read_to_string(project.dir.join(file)).unwrap();
                assert!(!text.contains("{{"), "{lang}: {} has an unfilled placeholder", file.display());
            }
            assert_eq!(project.dir.join("wit").join(WIT_FILE).is_file(), lang.carries_wit(), "{lang}");
        }
    }

    #[test]
    fn a_rust_project_names_its_library_and_sdk() {
        let tmp = tempfile::tempdir().unwrap();
        let project = project(tmp.path(), Lang::Rust);
        create(&project).unwrap();
        let manifest = std::fs::read_to_string(project.dir.join("Cargo.toml")).unwrap();
        let manifest: toml::Table = toml::from_str(&manifest).unwrap();
        assert_eq!(manifest["package"]["name"].as_str(), Some("hello-world"));
        let sdk = manifest["dependencies"]["busbar-guest"]["path"].as_str().unwrap();
        assert!(Path::new(sdk).join("Cargo.toml").is_file(), "{sdk}");
        assert_eq!(Lang::Rust.artifact("hello-world"), Path::new("target/wasm32-wasip2/release/hello_world.wasm"));
    }

    #[test]
    fn bad_names_and_occupied_directories_are_refused() {
        for name in ["", "Hello", "9lives", "a b", "a.b", "../x"] {
            assert!(validate_name(name).is_err(), "{name:?}");
        }
        let tmp = tempfile::tempdir().unwrap();
        std::fs::write(tmp.path().join("keep"), "mine").unwrap();
        let project = Project { dir: tmp.path().to_path_buf(), ..project(tmp.path(), Lang::C) };
        let err = create(&project).unwrap_err().to_string();
        assert!(err.contains("not empty"), "{err}");
        assert_eq!(std::fs::read_to_string(tmp.path().join("keep")).unwrap(), "mine");
    }

    #[test]
    fn languages_parse_by_name_and_alias() {
        for lang in Lang::ALL {
            assert_eq!(lang.as_str().parse::<Lang>(), Ok(lang));
        }
        assert_eq!("py".parse::<Lang>(), Ok(Lang::Python));
        assert!("go".parse::<Lang>().unwrap_err().contains("rust, python, js or c"));
    }
}
