//! The handlers folder: which files are handlers (`NAME.wasm`), their
//! `NAME.toml` sidecars, and the policy each handler runs under (names served,
//! retry schedule, timeout, memory), resolved against the node's defaults.

use crate::config::{ConfigError, HandlerDefaults};
use crate::units::serde_units;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The policy a handler runs under.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Policy {
    /// The names it serves (default: the file stem).
    pub names: Vec<String>,
    /// Delays between dispatch attempts.
    pub retry: Vec<Duration>,
    /// Wall-clock limit of one invocation.
    pub timeout: Duration,
    /// Linear-memory limit in bytes.
    pub memory: u64,
    /// How many more invocations one instance may serve after its first
    /// (0: a fresh instance for every invocation).
    pub reuse: u32,
}

/// The keys a `NAME.toml` sidecar accepts.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct Sidecar {
    names: Option<Vec<String>>,
    #[serde(default, with = "serde_units::opt_durations")]
    retry: Option<Vec<Duration>>,
    #[serde(default, with = "serde_units::opt_duration")]
    timeout: Option<Duration>,
    #[serde(default, with = "serde_units::opt_size")]
    memory: Option<u64>,
    reuse: Option<u32>,
}

/// A handler file found in the folder, with its resolved policy.
#[derive(Debug, Clone)]
pub struct HandlerFile {
    /// The file stem: the handler's label in logs and the default name.
    pub stem: String,
    /// The `.wasm` file.
    pub wasm: PathBuf,
    /// The policy, from the sidecar and the node defaults.
    pub policy: Policy,
}

/// A file in the folder that could not be used, and why.
#[derive(Debug, Clone)]
pub struct Skipped {
    /// The file.
    pub path: PathBuf,
    /// Why it was skipped.
    pub reason: String,
}

/// Reads the policy of handler `stem` from its sidecar (if `sidecar` exists).
pub fn policy(stem: &str, sidecar: &Path, defaults: &HandlerDefaults) -> Result<Policy, ConfigError> {
    let side: Sidecar = match std::fs::read_to_string(sidecar) {
        Ok(text) => toml::from_str(&text).map_err(|e| ConfigError::new(sidecar, e.to_string()))?,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Sidecar::default(),
        Err(e) => return Err(ConfigError::new(sidecar, format!("cannot read the sidecar: {e}"))),
    };
    let names = side.names.unwrap_or_else(|| vec![stem.to_string()]);
    if names.is_empty() {
        return Err(ConfigError::new(
            sidecar,
            "`names` is empty; list at least one name, or remove the key to serve the file name",
        ));
    }
    for name in &names {
        crate::name::validate(name).map_err(|e| ConfigError::new(sidecar, format!("in `names`: {e}")))?;
    }
    let timeout = side.timeout.unwrap_or(defaults.timeout);
    if timeout.is_zero() {
        return Err(ConfigError::new(sidecar, "`timeout` must be more than 0s"));
    }
    Ok(Policy {
        names,
        retry: side.retry.or_else(|| defaults.retry.clone()).unwrap_or_default(),
        timeout,
        memory: side.memory.unwrap_or_else(|| defaults.memory_bytes()),
        reuse: side.reuse.unwrap_or(defaults.reuse),
    })
}

/// Lists the handler files of `dir`, sorted by file name. Hidden and
/// temporary files are ignored; files that cannot be handlers are returned as
/// [`Skipped`] with the reason.
pub fn scan(dir: &Path, defaults: &HandlerDefaults) -> std::io::Result<(Vec<HandlerFile>, Vec<Skipped>)> {
    let mut paths: Vec<PathBuf> = std::fs::read_dir(dir)?.filter_map(|e| e.ok().map(|e| e.path())).collect();
    paths.sort();
    let mut found = Vec::new();
    let mut skipped = Vec::new();
    for path in paths {
        let Some(file) = path.file_name().and_then(|f| f.to_str()) else { continue };
        if file.starts_with('.') || file.ends_with('~') || !path.is_file() {
            continue;
        }
        match path.extension().and_then(|e| e.to_str()) {
            Some("wasm") => match handler_file(&path, defaults) {
                Ok(h) => found.push(h),
                Err(reason) => skipped.push(Skipped { path, reason }),
            },
            Some("toml") if !path.with_extension("wasm").exists() => skipped.push(Skipped {
                reason: format!(
                    "sidecar without a handler: there is no `{}` beside it",
                    path.with_extension("wasm").display()
                ),
                path,
            }),
            _ => {}
        }
    }
    Ok((found, skipped))
}

/// The handler of `wasm`, with its sidecar applied.
pub fn handler_file(wasm: &Path, defaults: &HandlerDefaults) -> Result<HandlerFile, String> {
    let stem = wasm.file_stem().and_then(|s| s.to_str()).unwrap_or_default().to_string();
    let sidecar = wasm.with_extension("toml");
    let policy = policy(&stem, &sidecar, defaults).map_err(|e| e.to_string())?;
    if !sidecar.exists() {
        crate::name::validate(&stem).map_err(|e| {
            format!("the file name does not make a valid bus name ({e}); rename it or list `names` in a sidecar")
        })?;
    }
    Ok(HandlerFile { stem, wasm: wasm.to_path_buf(), policy })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sidecar_overrides_defaults_and_rejects_unknown_keys() {
        let dir = tempfile::tempdir().expect("tempdir");
        let side = dir.path().join("order.toml");
        std::fs::write(&side, "names = [\"order.create\", \"order.update\"]\nretry = [\"3s\", \"10s\"]\ntimeout = \"2s\"\nmemory = \"32MiB\"\n")
            .expect("write");
        let p = policy("order", &side, &HandlerDefaults::default()).expect("valid sidecar");
        assert_eq!(p.names, ["order.create", "order.update"]);
        assert_eq!(p.retry, [Duration::from_secs(3), Duration::from_secs(10)]);
        assert_eq!((p.timeout, p.memory), (Duration::from_secs(2), 32 << 20));

        std::fs::write(&side, "timout = \"2s\"\n").expect("write");
        let e = policy("order", &side, &HandlerDefaults::default()).unwrap_err().to_string();
        assert!(e.contains("timout") && e.contains("order.toml"), "{e}");

        std::fs::write(&side, "names = [\"_admin\"]\n").expect("write");
        let e = policy("order", &side, &HandlerDefaults::default()).unwrap_err().to_string();
        assert!(e.contains("reserved"), "{e}");
    }

    #[test]
    fn scan_ignores_hidden_files_and_reports_orphans() {
        let dir = tempfile::tempdir().expect("tempdir");
        for f in ["a.wasm", ".a.wasm.swp", "b.toml", "_x.wasm", "notes.txt"] {
            std::fs::write(dir.path().join(f), b"").expect("write");
        }
        let (found, skipped) = scan(dir.path(), &HandlerDefaults::default()).expect("scan");
        assert_eq!(found.iter().map(|h| h.stem.as_str()).collect::<Vec<_>>(), ["a"]);
        let reasons: Vec<_> = skipped.iter().map(|s| s.reason.clone()).collect();
        assert_eq!(skipped.len(), 2, "{reasons:?}");
        assert!(reasons.iter().any(|r| r.contains("reserved")));
        assert!(reasons.iter().any(|r| r.contains("sidecar without a handler")));
    }
}
