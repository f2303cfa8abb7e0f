//! A handler's `NAME.toml` sidecar: the policy it runs under (names served,
//! retry schedule, limits, grants), resolved against the node's defaults and
//! checked against the operator's bounds on grants (`[grants]`).

use crate::config::{Config, ConfigError, HandlerDefaults};
use crate::limits;
use crate::runtime::{DirGrant, Grants, Origin};
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
    /// Bus operations and HTTP requests one invocation may make.
    pub max_calls: u32,
    /// Largest HTTP response body one request may receive, in bytes.
    pub max_http_body: u64,
    /// Dispatches to this handler that may wait (queued, running or between
    /// attempts) at once; past it a dispatch is refused as `overloaded`.
    pub max_pending: u32,
    /// What the handler may reach.
    pub grants: Arc<Grants>,
}

impl Policy {
    /// The policy every handler gets from `defaults` when its sidecar says nothing.
    pub fn from_defaults(stem: &str, defaults: &HandlerDefaults) -> Self {
        Self {
            names: vec![stem.to_string()],
            retry: defaults.retry.clone().unwrap_or_default(),
            timeout: defaults.timeout,
            memory: defaults.memory_bytes(),
            reuse: defaults.reuse,
            concurrency: defaults.concurrency,
            queue: defaults.queue,
            max_payload: defaults.max_payload.unwrap_or(limits::MAX_MESSAGE),
            max_reply: defaults.max_reply.unwrap_or(limits::MAX_MESSAGE),
            max_calls: defaults.max_calls,
            max_http_body: defaults.max_http_body.unwrap_or(limits::DEFAULT_HTTP_BODY),
            max_pending: defaults.max_pending,
            grants: Arc::default(),
        }
    }

    /// Checks every limit against its documented maximum ([`limits`]);
    /// errors name the key, `prefix` first (`handlers.` for the config's defaults).
    pub fn check(&self, prefix: &str) -> Result<(), String> {
        let key = |name: &str| format!("{prefix}{name}");
        if self.timeout.is_zero() {
            return Err(format!("`{}` must be more than 0s", key("timeout")));
        }
        limits::duration_at_most(&key("timeout"), self.timeout, limits::MAX_TIMEOUT)?;
        if self.retry.len() > limits::MAX_RETRIES {
            return Err(format!(
                "`{}` lists {} delays, more than its maximum of {}",
                key("retry"),
                self.retry.len(),
                limits::MAX_RETRIES
            ));
        }
        for delay in &self.retry {
            limits::duration_at_most(&key("retry"), *delay, limits::MAX_RETRY_DELAY)?;
        }
        limits::size_at_most(&key("memory"), self.memory, limits::MAX_MEMORY)?;
        limits::count_within(&key("reuse"), self.reuse, 0, limits::MAX_REUSE)?;
        limits::count_within(&key("concurrency"), self.concurrency, 1, limits::MAX_CONCURRENCY)?;
        limits::count_within(&key("queue"), self.queue, 0, limits::MAX_QUEUE)?;
        limits::size_at_most(&key("max_payload"), self.max_payload, limits::MAX_MESSAGE)?;
        limits::size_at_most(&key("max_reply"), self.max_reply, limits::MAX_MESSAGE)?;
        limits::count_within(&key("max_calls"), self.max_calls, 0, limits::MAX_CALLS)?;
        limits::size_at_most(&key("max_http_body"), self.max_http_body, limits::MAX_HTTP_BODY)?;
        limits::count_within(&key("max_pending"), self.max_pending, 1, limits::MAX_PENDING)?;
        Ok(())
    }
}

/// What a handler's sidecar is read against: the node's defaults and the
/// operator's bounds on grants.
#[derive(Debug, Clone, Default)]
pub struct Rules {
    /// `[handlers]`: the limits of a handler whose sidecar says nothing.
    pub defaults: HandlerDefaults,
    /// `[grants] dirs`: roots beyond the handlers folder a sidecar may grant.
    pub dir_roots: Vec<PathBuf>,
    /// `[grants] net`, resolved once: the addresses a sidecar may grant.
    pub net: Vec<NetPattern>,
    /// `[grants] http`: the origins a sidecar may grant.
    pub http: Vec<OriginPattern>,
}

impl Rules {
    /// The rules of `config`. Names in `[grants] net` are resolved here,
    /// once per node, not each time a sidecar is read (the config parser
    /// has already refused entries that do not parse).
    pub fn of(config: &Config) -> Self {
        Self {
            defaults: config.handlers.clone(),
            dir_roots: config.grants.dirs.clone(),
            net: config.grants.net.iter().filter_map(|p| NetPattern::parse(p).ok()).collect(),
            http: config.grants.http.iter().filter_map(|p| OriginPattern::parse(p).ok()).collect(),
        }
    }
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
    max_pending: Option<u32>,
    #[serde(default, with = "serde_units::opt_size")]
    max_http_body: Option<u64>,
    #[serde(default)]
    env: BTreeMap<String, String>,
    #[serde(default)]
    net: Vec<String>,
    #[serde(default)]
    http: Vec<String>,
    #[serde(default)]
    keyvalue: Vec<String>,
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

/// Reads the policy of handler `stem` from its sidecar (if `sidecar` exists).
pub fn policy(stem: &str, sidecar: &Path, rules: &Rules) -> Result<Policy, ConfigError> {
    let side: Sidecar = match std::fs::read_to_string(sidecar) {
        Ok(text) => toml::from_str(&text).map_err(|e| ConfigError::new(sidecar, e.to_string()))?,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Sidecar::default(),
        Err(e) => return Err(ConfigError::new(sidecar, format!("cannot read the sidecar: {e}"))),
    };
    let names = match side.names {
        Some(names) if names.is_empty() => {
            return Err(ConfigError::new(
                sidecar,
                "`names` is empty; list at least one name, or remove the key to serve the file name",
            ));
        }
        Some(names) if names.len() > limits::MAX_NAMES => {
            return Err(ConfigError::new(
                sidecar,
                format!("`names` lists {} names, more than its maximum of {}", names.len(), limits::MAX_NAMES),
            ));
        }
        Some(names) => {
            for name in &names {
                crate::delivery::name::validate(name)
                    .map_err(|e| ConfigError::new(sidecar, format!("in `names`: {e}")))?;
            }
            names
        }
        None => {
            crate::delivery::name::validate(stem).map_err(|e| {
                let file = sidecar.file_name().map_or_else(|| format!("{stem}.toml"), |f| f.to_string_lossy().into());
                ConfigError::new(
                    &sidecar.with_extension("wasm"),
                    format!(
                        "the file name does not make a valid bus name ({e}); rename the file, or list `names` in a sidecar `{file}`"
                    ),
                )
            })?;
            vec![stem.to_string()]
        }
    };
    let base = Policy::from_defaults(stem, &rules.defaults);
    let mut policy = Policy {
        names,
        retry: side.retry.unwrap_or(base.retry),
        timeout: side.timeout.unwrap_or(base.timeout),
        memory: side.memory.unwrap_or(base.memory),
        reuse: side.reuse.unwrap_or(base.reuse),
        concurrency: side.concurrency.unwrap_or(base.concurrency),
        queue: side.queue.unwrap_or(base.queue),
        max_payload: side.max_payload.unwrap_or(base.max_payload),
        max_reply: side.max_reply.unwrap_or(base.max_reply),
        max_calls: side.max_calls.unwrap_or(base.max_calls),
        max_http_body: side.max_http_body.unwrap_or(base.max_http_body),
        max_pending: side.max_pending.unwrap_or(base.max_pending),
        grants: Arc::default(),
    };
    policy.check("").map_err(|e| ConfigError::new(sidecar, e))?;
    let mut grants = grants(sidecar, side.env, side.dirs, side.net, rules).map_err(|e| ConfigError::new(sidecar, e))?;
    grants.http = origins(&side.http, &rules.http).map_err(|e| ConfigError::new(sidecar, format!("in `http`: {e}")))?;
    for bucket in &side.keyvalue {
        crate::keyvalue::check_bucket_name(bucket)
            .map_err(|e| ConfigError::new(sidecar, format!("in `keyvalue`: {e}")))?;
    }
    grants.keyvalue = side.keyvalue;
    policy.grants = Arc::new(grants);
    Ok(policy)
}

/// Checks and resolves a sidecar's grants against the operator's `rules`:
/// directories must exist inside the handlers folder (paths are relative to
/// it) or under a root the operator allows, guest paths be absolute, and
/// network entries be `host:port` addresses the operator allows (names are
/// resolved now).
fn grants(
    sidecar: &Path,
    env: BTreeMap<String, String>,
    dirs: Vec<SidecarDir>,
    net: Vec<String>,
    rules: &Rules,
) -> Result<Grants, String> {
    let folder = sidecar.parent().unwrap_or(Path::new("."));
    let mut granted = Grants { env: env.into_iter().collect(), ..Grants::default() };
    for dir in dirs {
        if !dir.guest.starts_with('/') {
            return Err(format!("in `dirs`: guest path `{}` must be absolute", dir.guest));
        }
        let host = granted_dir(folder, &dir.host, &rules.dir_roots).map_err(|e| format!("in `dirs`: {e}"))?;
        granted.dirs.push(DirGrant { host, guest: dir.guest, write: dir.mode == DirMode::Rw });
    }
    for entry in net {
        let (host, port) = host_port(&entry).map_err(|e| format!("in `net`: {e}"))?;
        let port: u16 = port.parse().map_err(|_| format!("in `net`: `{entry}` has no valid port"))?;
        if host.parse::<std::net::IpAddr>().is_err() {
            granted.lookup = true;
        }
        let addrs: Vec<std::net::SocketAddr> = std::net::ToSocketAddrs::to_socket_addrs(&(host, port))
            .map_err(|e| format!("in `net`: cannot resolve `{entry}`: {e}"))?
            .collect();
        if let Some(addr) = addrs.iter().find(|a| !rules.net.iter().any(|p| p.allows(a))) {
            return Err(format!(
                "in `net`: `{entry}` ({addr}) is not an address the operator allows; list it (or `host:*`) under `[grants] net` in busbar.toml"
            ));
        }
        granted.net.extend(addrs);
    }
    Ok(granted)
}

/// The origins of a sidecar's `http`, each one the operator allows.
fn origins(entries: &[String], allowed: &[OriginPattern]) -> Result<Vec<Origin>, String> {
    let mut origins = Vec::with_capacity(entries.len());
    for entry in entries {
        let origin = Origin::parse(entry)?;
        if !allowed.iter().any(|p| p.allows(&origin)) {
            return Err(format!(
                "`{entry}` is not an origin the operator allows; list it (or a pattern such as `https://*.example.com`) under `[grants] http` in busbar.toml"
            ));
        }
        if !origins.contains(&origin) {
            origins.push(origin);
        }
    }
    Ok(origins)
}

/// The real path of a `[[dirs]]` host directory `host` of a sidecar in
/// `folder`: resolved (`..` and symlinks followed), it must lie inside the
/// handlers folder — and be neither the folder nor contain it, since the
/// folder holds every handler and its grants — or under one of `roots`.
fn granted_dir(folder: &Path, host: &Path, roots: &[PathBuf]) -> Result<PathBuf, String> {
    let path = folder.join(host);
    let real = std::fs::canonicalize(&path).map_err(|e| {
        format!("`{}` cannot be granted: {e} (host paths are relative to the handlers folder)", path.display())
    })?;
    if !real.is_dir() {
        return Err(format!("`{}` is not a directory", path.display()));
    }
    let handlers = std::fs::canonicalize(folder)
        .map_err(|e| format!("cannot resolve the handlers folder {}: {e}", folder.display()))?;
    if handlers.starts_with(&real) {
        return Err(format!(
            "`{}` is or contains the handlers folder, which holds every handler and its grants; grant a subdirectory",
            path.display()
        ));
    }
    let under_root =
        roots.iter().filter_map(|root| std::fs::canonicalize(root).ok()).any(|root| real.starts_with(root));
    if !real.starts_with(&handlers) && !under_root {
        return Err(format!(
            "`{}` resolves to `{}`, outside the handlers folder; a sidecar may grant only directories inside the handlers folder or under a root listed in `[grants] dirs` of busbar.toml",
            path.display(),
            real.display()
        ));
    }
    Ok(real)
}

/// `host:port` (or `[v6]:port`) split in two.
fn host_port(entry: &str) -> Result<(&str, &str), String> {
    let (host, port) = entry.rsplit_once(':').ok_or_else(|| format!("`{entry}` is not `host:port`"))?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    if host.is_empty() {
        return Err(format!("`{entry}` has no host"));
    }
    Ok((host, port))
}

/// One entry of `[grants] net`: the addresses sidecars may grant.
#[derive(Debug, Clone, PartialEq)]
pub struct NetPattern {
    /// The host's addresses; `None` for any host (`*`).
    hosts: Option<Vec<std::net::IpAddr>>,
    /// The port; `None` for any port (`*`).
    port: Option<u16>,
}

impl NetPattern {
    /// Reads `*`, `*:PORT`, `HOST:*` or `HOST:PORT` (a name is resolved now).
    pub fn parse(entry: &str) -> Result<Self, String> {
        if entry.trim() == "*" {
            return Ok(Self { hosts: None, port: None });
        }
        let (host, port) = host_port(entry)?;
        let port = match port {
            "*" => None,
            p => Some(p.parse::<u16>().map_err(|_| format!("`{entry}`: the port must be a number or `*`"))?),
        };
        let hosts = match host {
            "*" => None,
            h => Some(match h.parse::<std::net::IpAddr>() {
                Ok(ip) => vec![ip],
                Err(_) => std::net::ToSocketAddrs::to_socket_addrs(&(h, 0))
                    .map_err(|e| format!("`{entry}`: cannot resolve `{h}`: {e}"))?
                    .map(|a| a.ip())
                    .collect(),
            }),
        };
        Ok(Self { hosts, port })
    }

    /// Whether the pattern covers `addr`.
    pub fn allows(&self, addr: &std::net::SocketAddr) -> bool {
        self.port.is_none_or(|p| p == addr.port()) && self.hosts.as_ref().is_none_or(|h| h.contains(&addr.ip()))
    }
}

/// One entry of `[grants] http`: the origins sidecars may grant.
#[derive(Debug, Clone, PartialEq)]
pub struct OriginPattern {
    tls: bool,
    /// The host, or `None` for any (`*`); a leading `*.` matches any
    /// subdomain (not the domain itself).
    host: Option<String>,
    /// The port, or `None` for any (`*`).
    port: Option<u16>,
}

impl OriginPattern {
    /// Reads `scheme://host[:port]` where the host may be `*` or `*.domain`
    /// and the port may be `*` (no port: the scheme's default).
    pub fn parse(entry: &str) -> Result<Self, String> {
        let (scheme, rest) =
            entry.split_once("://").ok_or_else(|| format!("`{entry}` is not `scheme://host[:port]`"))?;
        let rest = rest.strip_suffix('/').unwrap_or(rest);
        let (host, port) = match rest.rsplit_once(':') {
            Some((host, port)) if !port.contains(']') => (host, Some(port)),
            _ => (rest, None),
        };
        if host.is_empty() {
            return Err(format!("`{entry}` has no host; write `*` for any"));
        }
        let wild_host = host == "*" || host.starts_with("*.");
        // The concrete parts must make an origin of their own.
        let probe_host = if wild_host { host.trim_start_matches('*').trim_start_matches('.') } else { host };
        let probe_host = if probe_host.is_empty() { "any" } else { probe_host };
        let probe_port = match port {
            Some("*") | None => String::new(),
            Some(p) => format!(":{p}"),
        };
        let probe = Origin::parse(&format!("{scheme}://{probe_host}{probe_port}")).map_err(|e| {
            format!("`{entry}`: {e}; a pattern may use `*` for the host, a `*.` prefix, or `*` for the port")
        })?;
        Ok(Self {
            tls: probe.tls,
            host: (host != "*").then(|| if wild_host { format!("*.{}", probe.host) } else { probe.host }),
            port: if port == Some("*") { None } else { Some(probe.port) },
        })
    }

    /// Whether the pattern covers `origin`.
    pub fn allows(&self, origin: &Origin) -> bool {
        let host = match self.host.as_deref() {
            None => true,
            Some(pattern) => match pattern.strip_prefix("*.") {
                Some(domain) => origin.host.strip_suffix(domain).is_some_and(|sub| sub.len() > 1 && sub.ends_with('.')),
                None => origin.host == pattern,
            },
        };
        self.tls == origin.tls && host && self.port.is_none_or(|p| p == origin.port)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn http_grants_are_origins_the_operator_allows() {
        let dir = tempfile::tempdir().expect("tempdir");
        let side = dir.path().join("api.toml");
        let patterns = ["https://*.example.com", "http://127.0.0.1:*", "https://api.other.org"];
        let rules = Rules {
            http: patterns.iter().map(|p| OriginPattern::parse(p).expect("pattern")).collect(),
            ..Rules::default()
        };
        std::fs::write(
            &side,
            "http = [\"https://api.example.com\", \"http://127.0.0.1:8080\", \"https://api.other.org:443/\"]\n",
        )
        .expect("write");
        let p = policy("api", &side, &rules).expect("allowed origins");
        let granted: Vec<String> = p.grants.http.iter().map(ToString::to_string).collect();
        assert_eq!(granted, ["https://api.example.com:443", "http://127.0.0.1:8080", "https://api.other.org:443"]);

        for (entry, why) in [
            ("https://example.com", "not an origin the operator allows"),
            ("http://api.example.com", "not an origin the operator allows"),
            ("https://api.other.org:8443", "not an origin the operator allows"),
            ("https://evil.com/.example.com", "not an origin"),
            ("127.0.0.1:8080", "not an origin"),
        ] {
            std::fs::write(&side, format!("http = [{entry:?}]\n")).expect("write");
            let e = policy("api", &side, &rules).unwrap_err().to_string();
            assert!(e.contains(why) && e.contains("`http`"), "{entry}: {e}");
        }
        // Nothing is allowed unless the operator says so.
        std::fs::write(&side, "http = [\"https://api.example.com\"]\n").expect("write");
        let e = policy("api", &side, &Rules::default()).unwrap_err().to_string();
        assert!(e.contains("[grants] http"), "{e}");
        for bad in ["*", "https://", "ftp://*", "https://x:*x", "https://**.x"] {
            assert!(OriginPattern::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn sidecar_overrides_defaults_and_rejects_unknown_keys() {
        let dir = tempfile::tempdir().expect("tempdir");
        let side = dir.path().join("order.toml");
        std::fs::write(&side, "names = [\"order.create\", \"order.update\"]\nretry = [\"3s\", \"10s\"]\ntimeout = \"2s\"\nmemory = \"32MiB\"\n")
            .expect("write");
        let p = policy("order", &side, &Rules::default()).expect("valid sidecar");
        assert_eq!(p.names, ["order.create", "order.update"]);
        assert_eq!(p.retry, [Duration::from_secs(3), Duration::from_secs(10)]);
        assert_eq!((p.timeout, p.memory), (Duration::from_secs(2), 32 << 20));

        std::fs::write(&side, "timout = \"2s\"\n").expect("write");
        let e = policy("order", &side, &Rules::default()).unwrap_err().to_string();
        assert!(e.contains("timout") && e.contains("order.toml"), "{e}");

        std::fs::write(&side, "names = [\"_admin\"]\n").expect("write");
        let e = policy("order", &side, &Rules::default()).unwrap_err().to_string();
        assert!(e.contains("reserved"), "{e}");
    }
}
