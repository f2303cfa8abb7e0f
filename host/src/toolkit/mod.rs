//! The guest toolkit: what a handler author needs from busbar besides a
//! running node. It owns the WIT contract as shipped in the binary, C bindings
//! generated from it (`wit-bindgen`'s C generator), turning a `wasm32-wasi`
//! core module into a component (the WASI preview1 adapter of the wasmtime
//! version busbar runs), and new handler projects ([`scaffold`], `busbar new`).
//!
//! With these, a C handler needs only clang, wasi-libc and busbar itself; a
//! Python or JavaScript handler needs the WIT file, which `busbar new` writes.

pub mod scaffold;

use anyhow::{Context as _, Result, bail};
use std::path::{Path, PathBuf};

/// The WIT package every handler is written against (`wit/handler.wit`).
pub const WIT: &str = include_str!("../../../wit/handler.wit");

/// The packages `handler.wit` uses, as `wit/deps/` holds them (path, text):
/// `wasi:keyvalue@0.2.0-draft2`, and WASI 0.2.12 for `wasi:http`.
pub const WIT_DEPS: [(&str, &str); 12] = [
    ("deps/keyvalue/atomic.wit", include_str!("../../../wit/deps/keyvalue/atomic.wit")),
    ("deps/keyvalue/batch.wit", include_str!("../../../wit/deps/keyvalue/batch.wit")),
    ("deps/keyvalue/store.wit", include_str!("../../../wit/deps/keyvalue/store.wit")),
    ("deps/keyvalue/watch.wit", include_str!("../../../wit/deps/keyvalue/watch.wit")),
    ("deps/keyvalue/world.wit", include_str!("../../../wit/deps/keyvalue/world.wit")),
    ("deps/cli.wit", include_str!("../../../wit/deps/cli.wit")),
    ("deps/clocks.wit", include_str!("../../../wit/deps/clocks.wit")),
    ("deps/filesystem.wit", include_str!("../../../wit/deps/filesystem.wit")),
    ("deps/http.wit", include_str!("../../../wit/deps/http.wit")),
    ("deps/io.wit", include_str!("../../../wit/deps/io.wit")),
    ("deps/random.wit", include_str!("../../../wit/deps/random.wit")),
    ("deps/sockets.wit", include_str!("../../../wit/deps/sockets.wit")),
];

/// The file name the WIT package is written under.
pub const WIT_FILE: &str = "handler.wit";

/// The worlds a handler can be built for: a service, a message handler, or
/// both; each also with `wasi:http/outgoing-handler` (`-http`).
pub const WORLDS: [&str; 6] =
    ["service-handler", "message-handler", "handler", "service-handler-http", "message-handler-http", "handler-http"];

/// Writes the WIT package into `dir` (created if missing) as [`WIT_FILE`],
/// with the packages it uses in `deps/`; returns the main file written.
pub fn write_wit(dir: &Path) -> Result<PathBuf> {
    for (file, text) in [(WIT_FILE, WIT)].into_iter().chain(WIT_DEPS) {
        let path = dir.join(file);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).with_context(|| format!("cannot create {}", parent.display()))?;
        }
        std::fs::write(&path, text).with_context(|| format!("cannot write {}", path.display()))?;
    }
    Ok(dir.join(WIT_FILE))
}

/// The built-in WIT package with the packages it uses, resolved.
fn resolve_wit() -> Result<(wit_parser::Resolve, wit_parser::PackageId)> {
    let parse = |files: &[(&str, &str)]| {
        let mut map = wit_parser::SourceMap::new();
        for (path, text) in files {
            map.push_str(path, *text);
        }
        map.parse().map_err(|(_, e)| anyhow::anyhow!("the built-in WIT does not parse: {e}"))
    };
    // One group per package: keyvalue's five files are one package.
    let (keyvalue, single): (Vec<_>, Vec<_>) =
        WIT_DEPS.iter().copied().partition(|(path, _)| path.starts_with("deps/keyvalue/"));
    let mut deps = vec![parse(&keyvalue)?];
    for file in single {
        deps.push(parse(&[file])?);
    }
    let mut resolve = wit_parser::Resolve::default();
    let package = resolve.push_groups(parse(&[(WIT_FILE, WIT)])?, deps).context("the built-in WIT does not resolve")?;
    Ok((resolve, package))
}

/// Generates the C bindings of `world` (one of [`WORLDS`]) into `dir`:
/// `WORLD.h`, `WORLD.c` and `WORLD_component_type.o` (the world's type
/// information, linked into the module so that [`componentize`] knows its
/// imports and exports). Returns the files written.
pub fn c_bindings(world: &str, dir: &Path) -> Result<Vec<PathBuf>> {
    if !WORLDS.contains(&world) {
        bail!("unknown world `{world}`: expected one of {}", WORLDS.join(", "));
    }
    let (mut resolve, package) = resolve_wit()?;
    let world = resolve.select_world(&[package], Some(world))?;
    let mut files = wit_bindgen_core::Files::default();
    wit_bindgen_c::Opts::default().build().generate(&mut resolve, world, &mut files)?;
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    files
        .iter()
        .map(|(name, bytes)| {
            let path = dir.join(name);
            std::fs::write(&path, bytes).with_context(|| format!("cannot write {}", path.display()))?;
            Ok(path)
        })
        .collect()
}

/// Turns a core module built for `wasm32-wasi` (WASI preview1, reactor model)
/// into a component: its `wasi_snapshot_preview1` imports are served by the
/// preview1 adapter of the wasmtime version busbar runs, and its exports are
/// lifted with the component type the bindings linked in.
pub fn componentize(core: &[u8]) -> Result<Vec<u8>> {
    if wasmparser::Parser::is_component(core) {
        bail!("this file is already a component; drop it into the handlers folder as it is");
    }
    if !wasmparser::Parser::is_core_wasm(core) {
        bail!("this is not a WebAssembly module (expected the `.wasm` that clang wrote)");
    }
    if exports_function(core, "_start")? {
        bail!(
            "the module is a command (it exports `_start`); a handler is a library: \
             build it with `-mexec-model=reactor`"
        );
    }
    let mut encoder = wit_component::ComponentEncoder::default()
        .validate(true)
        .module(core)
        .context(
            "cannot read the module's component type; link the `WORLD_component_type.o` \
             that `busbar guest c-bindings` wrote",
        )?
        .adapter(
            "wasi_snapshot_preview1",
            wasi_preview1_component_adapter_provider::WASI_SNAPSHOT_PREVIEW1_REACTOR_ADAPTER,
        )
        .context("the built-in WASI preview1 adapter does not load")?;
    encoder.encode().context("cannot turn the module into a component")
}

/// Whether the core module `bytes` exports a function named `name`.
fn exports_function(bytes: &[u8], name: &str) -> Result<bool> {
    for payload in wasmparser::Parser::new(0).parse_all(bytes) {
        if let wasmparser::Payload::ExportSection(exports) = payload? {
            for export in exports {
                let export = export?;
                if export.name == name && export.kind == wasmparser::ExternalKind::Func {
                    return Ok(true);
                }
            }
        }
    }
    Ok(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn c_bindings_of_each_world_are_generated() {
        let dir = tempfile::tempdir().unwrap();
        for world in WORLDS {
            let files = c_bindings(world, dir.path()).unwrap();
            let stem = world.replace('-', "_");
            for suffix in [".h", ".c", "_component_type.o"] {
                let expected = dir.path().join(format!("{stem}{suffix}"));
                assert!(files.contains(&expected), "{world}: {expected:?} not in {files:?}");
            }
        }
    }

    #[test]
    fn an_unknown_world_is_refused_with_the_known_ones() {
        let dir = tempfile::tempdir().unwrap();
        let err = c_bindings("services", dir.path()).unwrap_err().to_string();
        assert!(err.contains("service-handler, message-handler, handler"), "{err}");
    }

    #[test]
    fn componentize_refuses_what_is_not_a_core_module() {
        let err = componentize(b"not wasm").unwrap_err().to_string();
        assert!(err.contains("not a WebAssembly module"), "{err}");
        // The smallest component: magic, then the component layer and version.
        let component = [0x00, 0x61, 0x73, 0x6d, 0x0d, 0x00, 0x01, 0x00];
        let err = componentize(&component).unwrap_err().to_string();
        assert!(err.contains("already a component"), "{err}");
    }
}
