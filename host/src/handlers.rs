//! The handlers folder: which files are handlers (`NAME.wasm`), their
//! `NAME.toml` sidecars, and the policy each handler runs under (names served,
//! retry schedule, limits, grants), resolved against the node's defaults.

use crate::config::{ConfigError, HandlerDefaults};
use crate::runtime::{DirGrant, Grants};
use crate::units::serde_units;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
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
    /// Invocations that may run at once.
    pub concurrency: u32,
    /// Invocations that may wait for a slot.
    pub queue: u32,
    /// Largest payload accepted, in bytes.
    pub max_payload: u64,
    /// Largest reply allowed, in bytes.
    pub max_reply: u64,
    /// Bus operations one invocation may make.
    pub max_calls: u32,
    /// What the handler may reach.
    pub grants: Arc<Grants>,
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
    concurrency: Option<u32>,
    queue: Option<u32>,
    #[serde(default, with = "serde_units::opt_size")]
    max_payload: Option<u64>,
    #[serde(default, with = "serde_units::opt_size")]
    max_reply: Option<u64>,
    max_calls: Option<u32>,
    #[serde(default)]
    env: BTreeMap<String, String>,
    #[serde(default)]
    net: Vec<String>,
    #[serde(default)]
    dirs: Vec<SidecarDir>,
}

/// A `[[dirs]]` table of a sidecar.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct SidecarDir {
    /// The host directory, relative to the handlers folder.
    host: PathBuf,
    /// The guest path (absolute).
    guest: String,
    /// `"ro"` (default) or `"rw"`.
    #[serde(default)]
    mode: DirMode,
}

#[derive(Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
enum DirMode {
    #[default]
    Ro,
    Rw,
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
    let concurrency = side.concurrency.unwrap_or(defaults.concurrency);
    if concurrency == 0 {
        return Err(ConfigError::new(sidecar, "`concurrency` must be at least 1"));
    }
    let grants = grants(sidecar, side.env, side.dirs, side.net)?;
    Ok(Policy {
        names,
        retry: side.retry.or_else(|| defaults.retry.clone()).unwrap_or_default(),
        timeout,
        memory: side.memory.unwrap_or_else(|| defaults.memory_bytes()),
        reuse: side.reuse.unwrap_or(defaults.reuse),
        concurrency,
        queue: side.queue.unwrap_or(defaults.queue),
        max_payload: side.max_payload.or(defaults.max_payload).unwrap_or(u64::MAX),
        max_reply: side.max_reply.or(defaults.max_reply).unwrap_or(u64::MAX),
        max_calls: side.max_calls.unwrap_or(defaults.max_calls),
        grants: Arc::new(grants),
    })
}

/// Checks and resolves a sidecar's grants: directories must exist (paths are
/// relative to the handlers folder), guest paths be absolute, network
/// entries be `host:port` (names are resolved now).
fn grants(
    sidecar: &Path,
    env: BTreeMap<String, String>,
    dirs: Vec<SidecarDir>,
    net: Vec<String>,
) -> Result<Grants, ConfigError> {
    let folder = sidecar.parent().unwrap_or(Path::new("."));
    let mut granted = Grants { env: env.into_iter().collect(), ..Grants::default() };
    for dir in dirs {
        let host = folder.join(&dir.host);
        if !host.is_dir() {
            return Err(ConfigError::new(
                sidecar,
                format!(
                    "in `dirs`: `{}` is not a directory (host paths are relative to the handlers folder)",
                    host.display()
                ),
            ));
        }
        if !dir.guest.starts_with('/') {
            return Err(ConfigError::new(sidecar, format!("in `dirs`: guest path `{}` must be absolute", dir.guest)));
        }
        granted.dirs.push(DirGrant { host, guest: dir.guest, write: dir.mode == DirMode::Rw });
    }
    for entry in net {
        let Some((host, port)) = entry.rsplit_once(':') else {
            return Err(ConfigError::new(sidecar, format!("in `net`: `{entry}` is not `host:port`")));
        };
        let port: u16 =
            port.parse().map_err(|_| ConfigError::new(sidecar, format!("in `net`: `{entry}` has no valid port")))?;
        let host = host.trim_start_matches('[').trim_end_matches(']');
        if host.parse::<std::net::IpAddr>().is_err() {
            granted.lookup = true;
        }
        let addrs = std::net::ToSocketAddrs::to_socket_addrs(&(host, port))
            .map_err(|e| ConfigError::new(sidecar, format!("in `net`: cannot resolve `{entry}`: {e}")))?;
        granted.net.extend(addrs);
    }
    Ok(granted)
}

/// The handler a file in the folder belongs to: the stem of `NAME.wasm` or
/// `NAME.toml`. Hidden files (`.x`), editor backups (`x~`) and anything else
/// (temporary files of an editor or a copy in progress) belong to none.
pub fn stem_of(path: &Path) -> Option<String> {
    let file = path.file_name()?.to_str()?;
    if file.starts_with('.') || file.ends_with('~') {
        return None;
    }
    let (stem, ext) = file.rsplit_once('.')?;
    matches!(ext, "wasm" | "toml").then(|| stem.to_string()).filter(|s| !s.is_empty())
}

/// The handler stems present in `dir` (by their `.wasm` or `.toml` file),
/// sorted by name.
pub fn stems(dir: &Path) -> std::io::Result<Vec<String>> {
    let mut stems: Vec<String> = std::fs::read_dir(dir)?
        .filter_map(|e| e.ok())
        .filter(|e| e.file_type().is_ok_and(|t| t.is_file()))
        .filter_map(|e| stem_of(&e.path()))
        .collect();
    stems.sort();
    stems.dedup();
    Ok(stems)
}

/// Why handler `stem` of `dir` has no `.wasm` file beside its sidecar.
pub fn orphan_reason(dir: &Path, stem: &str) -> String {
    format!("sidecar without a handler: there is no `{}` beside it", dir.join(format!("{stem}.wasm")).display())
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
    fn stems_ignore_hidden_backup_and_other_files() {
        let dir = tempfile::tempdir().expect("tempdir");
        for f in ["a.wasm", ".a.wasm.swp", "b.toml", "a.wasm~", "notes.txt", "c.wasm.part", ".d.wasm"] {
            std::fs::write(dir.path().join(f), b"").expect("write");
        }
        std::fs::create_dir(dir.path().join("e.wasm")).expect("mkdir");
        assert_eq!(stems(dir.path()).expect("stems"), ["a", "b"]);
    }
}
