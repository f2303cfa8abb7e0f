//! The node's TOML configuration: parsed strictly (an unknown key or a bad
//! value is an error naming the key and the file), resolved into plain values
//! before anything starts.
//!
//! ```toml
//! [node]
//! project = "shop"          # names the node's project (and default bus prefix later)
//! id = "node-a"             # default: <hostname>-<pid>
//! handlers = "handlers"     # the handlers folder, relative to this file
//! cache = ".busbar-cache"   # compiled-artifact cache; default: $XDG_CACHE_HOME/busbar
//! state = "state"            # default driver: accepted dispatches and dead letters
//!                            #   (default: $XDG_STATE_HOME/busbar/<project>; "" keeps them in memory)
//! watch = true              # `busbar run` applies changes of the handlers folder live
//! metrics = "127.0.0.1:9090" # `busbar run` serves /metrics, /healthz, /readyz here (default: off)
//! http = "127.0.0.1:8080"    # `busbar run` serves the HTTP gateway here (default: off)
//! drain = "30s"             # on SIGTERM/SIGINT, how long in-flight work may take to finish
//! instances = 1000           # the instance pool: handler instances that may exist at once
//! max_handler_size = "64MiB" # larger handler files are refused
//! compile_memory = "1GiB"    # `busbar run` compiles each handler in a child process
//! compile_timeout = "120s"   #   with at most this memory and time
//!
//! [handlers]                # defaults for every handler; a NAME.toml sidecar overrides
//! timeout = "5s"
//! memory = "64MiB"
//! retry = ["1s", "5s", "30s"]
//! max_depth = 8             # longest chain of nested bus calls
//! reuse = 0                 # invocations an instance serves after its first (0: always fresh)
//! concurrency = 64          # invocations of one handler at once...
//! queue = 256               # ...and waiting for a slot; past that, `overloaded`
//! max_payload = "1MiB"
//! max_reply = "1MiB"
//! max_calls = 100           # bus operations and HTTP requests one invocation may make
//! max_pending = 10000       # dispatches to one handler pending at once
//! max_http_body = "16MiB"   # largest HTTP response body one request may receive
//!
//! [grants]                  # how far a sidecar's grants may reach (default: nothing beyond the folder)
//! dirs = ["/srv/data"]      # roots for `[[dirs]]` besides the handlers folder
//! net = ["127.0.0.1:*"]     # addresses a sidecar may grant in `net`
//! http = ["https://*.example.com", "http://127.0.0.1:*"] # origins a sidecar may grant in `http`
//!
//! [bus]                     # one connection...
//! driver = "default"
//! group = "workers"
//!
//! [bus.east]                # ...or several named ones, inheriting [bus] keys
//! weight = 3
//! ```

use crate::limits;
use crate::units::serde_units;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// A configuration problem, naming the file and what to fix.
#[derive(Debug, thiserror::Error)]
#[error("{file}: {message}")]
pub struct ConfigError {
    /// The file at fault (or `<defaults>`).
    pub file: String,
    /// What is wrong with it.
    pub message: String,
}

impl ConfigError {
    pub(crate) fn new(file: &Path, message: impl Into<String>) -> Self {
        Self { file: file.display().to_string(), message: message.into() }
    }
}

/// The whole configuration of a node, resolved.
#[derive(Debug, Clone, Serialize)]
pub struct Config {
    /// Identity and folders.
    pub node: NodeConfig,
    /// Defaults applied to every handler.
    pub handlers: HandlerDefaults,
    /// How far a sidecar's grants may reach.
    pub grants: GrantRules,
    /// Bus connections, at least one.
    pub connections: Vec<ConnectionConfig>,
}

/// `[node]`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct NodeConfig {
    /// The project the node belongs to.
    pub project: String,
    /// This node's id, unique on the bus.
    pub id: String,
    /// The handlers folder.
    pub handlers: PathBuf,
    /// Where compiled artifacts are cached; `None` disables the cache.
    pub cache: Option<PathBuf>,
    /// Where a serving node on the `default` driver keeps accepted
    /// dispatches and dead letters, as written (`""`: in memory only);
    /// `None` means the default, see [`NodeConfig::state_dir`].
    pub state: Option<String>,
    /// Whether `busbar run` applies changes of the handlers folder live.
    pub watch: bool,
    /// Where `busbar run` serves `/metrics`, `/healthz` and `/readyz`; off when `None`.
    pub metrics: Option<std::net::SocketAddr>,
    /// Where `busbar run` serves the HTTP gateway; off when `None`.
    pub http: Option<std::net::SocketAddr>,
    /// How long a stopping node waits for in-flight work.
    #[serde(with = "serde_units::duration")]
    pub drain: Duration,
    /// The instance pool's size: how many handler instances may exist at
    /// once across all handlers (running, or kept warm for reuse).
    pub instances: u32,
    /// The largest handler file loaded, in bytes.
    #[serde(with = "serde_units::opt_size")]
    pub max_handler_size: Option<u64>,
    /// The most memory `busbar run`'s compile worker may use for one handler.
    #[serde(with = "serde_units::opt_size")]
    pub compile_memory: Option<u64>,
    /// The longest `busbar run`'s compile worker may take for one handler.
    #[serde(with = "serde_units::duration")]
    pub compile_timeout: Duration,
}

impl NodeConfig {
    /// The state directory of a serving node on the `default` driver:
    /// `state` if set (`""` keeps nothing on disk), else
    /// `$XDG_STATE_HOME/busbar/<project>` (`~/.local/state/busbar/<project>`).
    pub fn state_dir(&self) -> Option<PathBuf> {
        match self.state.as_deref() {
            Some("") => None,
            Some(dir) => Some(PathBuf::from(dir)),
            None => {
                let base = std::env::var_os("XDG_STATE_HOME")
                    .map(PathBuf::from)
                    .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".local/state")))?;
                Some(base.join("busbar").join(&self.project))
            }
        }
    }

    /// `max_handler_size` in bytes.
    pub fn max_handler_size(&self) -> u64 {
        self.max_handler_size.unwrap_or(limits::DEFAULT_HANDLER_SIZE)
    }

    /// `compile_memory` in bytes.
    pub fn compile_memory(&self) -> u64 {
        self.compile_memory.unwrap_or(limits::DEFAULT_COMPILE_MEMORY)
    }
}

impl Default for NodeConfig {
    fn default() -> Self {
        Self {
            project: "busbar".into(),
            id: default_node_id(),
            handlers: "handlers".into(),
            cache: default_cache_dir(),
            state: None,
            watch: true,
            metrics: None,
            http: None,
            drain: Duration::from_secs(30),
            instances: 1000,
            max_handler_size: Some(limits::DEFAULT_HANDLER_SIZE),
            compile_memory: Some(limits::DEFAULT_COMPILE_MEMORY),
            compile_timeout: limits::DEFAULT_COMPILE_TIMEOUT,
        }
    }
}

/// `[handlers]`: defaults for every handler, overridden by its sidecar.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct HandlerDefaults {
    /// Wall-clock limit of one invocation, host-call waits included.
    #[serde(with = "serde_units::duration")]
    pub timeout: Duration,
    /// Linear-memory limit of one instance, in bytes (`"64MiB"`).
    #[serde(with = "serde_units::opt_size")]
    pub memory: Option<u64>,
    /// Delays between dispatch attempts.
    #[serde(with = "serde_units::opt_durations")]
    pub retry: Option<Vec<Duration>>,
    /// The longest chain of nested bus calls before `denied`.
    pub max_depth: u32,
    /// How many more invocations one instance may serve after its first;
    /// 0 (the default) gives every invocation a fresh instance.
    pub reuse: u32,
    /// Invocations of one handler that may run at once.
    pub concurrency: u32,
    /// Invocations that may wait for a free slot; past it, `overloaded`.
    pub queue: u32,
    /// Largest payload a handler accepts, in bytes (`"1MiB"`).
    #[serde(with = "serde_units::opt_size")]
    pub max_payload: Option<u64>,
    /// Largest reply a handler may return, in bytes.
    #[serde(with = "serde_units::opt_size")]
    pub max_reply: Option<u64>,
    /// Bus operations (call, dispatch, broadcast, rolecast) and outbound
    /// HTTP requests one invocation may make.
    pub max_calls: u32,
    /// Dispatches to one handler that may be pending at once.
    pub max_pending: u32,
    /// Largest HTTP response body one request of an invocation may receive.
    #[serde(with = "serde_units::opt_size")]
    pub max_http_body: Option<u64>,
}

impl Default for HandlerDefaults {
    fn default() -> Self {
        Self {
            timeout: Duration::from_secs(5),
            memory: Some(64 << 20),
            retry: Some(Vec::new()),
            max_depth: 8,
            reuse: 0,
            concurrency: 64,
            queue: 256,
            max_payload: Some(1 << 20),
            max_reply: Some(1 << 20),
            max_calls: 100,
            max_pending: 10_000,
            max_http_body: Some(limits::DEFAULT_HTTP_BODY),
        }
    }
}

impl HandlerDefaults {
    /// The memory limit in bytes.
    pub fn memory_bytes(&self) -> u64 {
        self.memory.unwrap_or(64 << 20)
    }
}

/// `[grants]`: how far the grants of a sidecar may reach. Whoever can drop
/// a file into the handlers folder must not get the host: a sidecar may
/// grant only directories inside the handlers folder (never the folder
/// itself) or under a root listed here, and only network addresses that
/// match an entry here (none by default).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct GrantRules {
    /// Host directories under which sidecars may grant `[[dirs]]` besides
    /// the handlers folder (relative to the config file; resolved, so a
    /// symlink counts where it points).
    pub dirs: Vec<PathBuf>,
    /// Addresses sidecars may grant in `net`: `host:port`, where the host
    /// (an IP address or a name) or the port may be `*`; `"*"` alone allows any.
    pub net: Vec<String>,
    /// Origins sidecars may grant in `http`: `scheme://host[:port]`, where
    /// the host may be `*` or start with `*.` and the port may be `*`.
    pub http: Vec<String>,
}

/// One bus connection (`[bus]` or `[bus.NAME]`).
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct ConnectionConfig {
    /// `default` for `[bus]` alone, otherwise the table's name.
    pub name: String,
    /// The driver: `default` (in-process).
    pub driver: String,
    /// Put before every name on the bus.
    pub prefix: String,
    /// The node's role: rolecast delivers once per group.
    pub group: String,
    /// A free-form label shown in discovery.
    pub profile: String,
    /// Share of outgoing operations (weighted round robin); 0 receives only.
    pub weight: u32,
    /// Driver-specific settings.
    pub setting: toml::Table,
}

/// The keys a connection table accepts.
pub const CONNECTION_KEYS: [&str; 6] = ["driver", "prefix", "group", "profile", "weight", "setting"];

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct ConnectionFields {
    driver: Option<String>,
    prefix: Option<String>,
    group: Option<String>,
    profile: Option<String>,
    weight: Option<u32>,
    setting: Option<toml::Table>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    #[serde(default)]
    node: NodeConfig,
    #[serde(default)]
    handlers: HandlerDefaults,
    #[serde(default)]
    grants: GrantRules,
    #[serde(default)]
    bus: toml::Table,
}

impl Default for Config {
    fn default() -> Self {
        let raw = RawConfig {
            node: NodeConfig::default(),
            handlers: HandlerDefaults::default(),
            grants: GrantRules::default(),
            bus: toml::Table::new(),
        };
        Self::resolve(raw, Path::new("<defaults>"), Path::new("."))
            .unwrap_or_else(|_| unreachable!("the built-in defaults are valid"))
    }
}

impl Config {
    /// Reads and validates a config file. Relative paths in it are resolved
    /// against the file's folder.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| ConfigError::new(path, format!("cannot read the config file: {e}")))?;
        Self::parse(&text, path)
    }

    /// Parses config text that came from `file` (used in error messages and
    /// to resolve relative paths), then applies the [`SECRET_KEYS`]
    /// overrides from the environment.
    pub fn parse(text: &str, file: &Path) -> Result<Self, ConfigError> {
        Self::parse_with_env(text, file, |key| std::env::var(key).ok())
    }

    /// [`Config::parse`] with the environment given as a lookup function.
    pub fn parse_with_env(text: &str, file: &Path, env: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let raw: RawConfig = toml::from_str(text).map_err(|e| ConfigError::new(file, e.to_string()))?;
        let base = file.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
        let mut config = Self::resolve(raw, file, base)?;
        for conn in &mut config.connections {
            apply_secret_overrides(conn, &env);
        }
        Ok(config)
    }

    /// The config with secret settings replaced by `***`, for printing.
    pub fn redacted(&self) -> Self {
        let mut config = self.clone();
        for conn in &mut config.connections {
            for key in ["token", "password"] {
                if let Some(value) = conn.setting.get_mut(key) {
                    *value = toml::Value::String("***".into());
                }
            }
        }
        config
    }

    /// Refuses a connection whose driver is none of `known`; `file` is
    /// where the config came from. The CLI knows the built-in drivers
    /// ([`crate::driver::KNOWN`]); an embedder adds its own with
    /// `NodeBuilder::driver`, which checks them when the node starts.
    pub fn check_drivers(&self, file: &Path, known: &[&str]) -> Result<(), ConfigError> {
        match self.connections.iter().find(|c| !known.contains(&c.driver.as_str())) {
            Some(c) => Err(ConfigError::new(
                file,
                format!(
                    "[bus{}] driver `{}` is unknown; known drivers: {}",
                    suffix(&c.name),
                    c.driver,
                    known.join(", ")
                ),
            )),
            None => Ok(()),
        }
    }

    fn resolve(raw: RawConfig, file: &Path, base: &Path) -> Result<Self, ConfigError> {
        let RawConfig { mut node, handlers, mut grants, bus } = raw;
        node.handlers = base.join(&node.handlers);
        node.cache = node.cache.map(|c| base.join(c));
        node.state = node.state.map(|s| if s.is_empty() { s } else { base.join(s).display().to_string() });
        grants.dirs = grants.dirs.iter().map(|d| base.join(d)).collect();
        for entry in &grants.net {
            crate::handlers::sidecar::NetPattern::parse(entry)
                .map_err(|e| ConfigError::new(file, format!("in `grants.net`: {e}")))?;
        }
        for entry in &grants.http {
            crate::handlers::sidecar::OriginPattern::parse(entry)
                .map_err(|e| ConfigError::new(file, format!("in `grants.http`: {e}")))?;
        }
        if node.id.trim().is_empty() {
            return Err(ConfigError::new(file, "node.id cannot be empty"));
        }
        let bounded = || -> Result<(), String> {
            crate::handlers::sidecar::Policy::from_defaults("", &handlers).check("handlers.")?;
            limits::count_within("handlers.max_depth", handlers.max_depth, 0, limits::MAX_DEPTH)?;
            limits::duration_at_most("node.drain", node.drain, limits::MAX_DRAIN)?;
            limits::count_within("node.instances", node.instances, 1, limits::MAX_INSTANCES)?;
            limits::size_within("node.max_handler_size", node.max_handler_size(), 1 << 10, limits::MAX_HANDLER_SIZE)?;
            limits::size_within("node.compile_memory", node.compile_memory(), 64 << 20, limits::MAX_COMPILE_MEMORY)?;
            limits::duration_within(
                "node.compile_timeout",
                node.compile_timeout,
                Duration::from_secs(1),
                limits::MAX_COMPILE_TIMEOUT,
            )?;
            Ok(())
        };
        bounded().map_err(|e| ConfigError::new(file, e))?;
        let mut connections = parse_bus(bus, file)?;
        for conn in &mut connections {
            resolve_setting_paths(conn, base);
        }
        Ok(Self { node, handlers, grants, connections })
    }
}

/// Splits `[bus]` into its own keys (defaults) and `[bus.NAME]` tables.
fn parse_bus(mut bus: toml::Table, file: &Path) -> Result<Vec<ConnectionConfig>, ConfigError> {
    let named: Vec<(String, toml::Table)> = bus
        .keys()
        .filter(|k| !CONNECTION_KEYS.contains(&k.as_str()))
        .cloned()
        .collect::<Vec<_>>()
        .into_iter()
        .map(|key| match bus.remove(&key) {
            Some(toml::Value::Table(t)) => Ok((key, t)),
            _ => Err(ConfigError::new(
                file,
                format!(
                    "unknown key `bus.{key}`; [bus] takes {} or named [bus.NAME] tables",
                    CONNECTION_KEYS.join(", ")
                ),
            )),
        })
        .collect::<Result<_, _>>()?;
    let top = fields(bus, "bus", file)?;
    if named.is_empty() {
        return Ok(vec![connection("default", &top, &ConnectionFields::default(), file)?]);
    }
    named
        .into_iter()
        .map(|(name, table)| {
            let own = fields(table, &format!("bus.{name}"), file)?;
            connection(&name, &own, &top, file)
        })
        .collect()
}

fn fields(table: toml::Table, at: &str, file: &Path) -> Result<ConnectionFields, ConfigError> {
    ConnectionFields::deserialize(toml::Value::Table(table))
        .map_err(|e| ConfigError::new(file, format!("in [{at}]: {}", e.to_string().trim())))
}

fn connection(
    name: &str,
    own: &ConnectionFields,
    inherited: &ConnectionFields,
    file: &Path,
) -> Result<ConnectionConfig, ConfigError> {
    let pick = |a: &Option<String>, b: &Option<String>| a.clone().or_else(|| b.clone()).unwrap_or_default();
    let driver = own.driver.clone().or_else(|| inherited.driver.clone()).unwrap_or_else(|| "default".into());
    if driver.is_empty() || !driver.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_') {
        return Err(ConfigError::new(file, format!("[bus{}] driver `{driver}` is not a driver name", suffix(name))));
    }
    let prefix = pick(&own.prefix, &inherited.prefix);
    if !prefix.is_empty() && !prefix.ends_with('.') {
        return Err(ConfigError::new(file, format!("[bus{}] prefix `{prefix}` must end with a dot", suffix(name))));
    }
    let weight = own.weight.or(inherited.weight).unwrap_or(1);
    limits::count_within(&format!("bus{}.weight", suffix(name)), weight, 0, limits::MAX_WEIGHT)
        .map_err(|e| ConfigError::new(file, e))?;
    Ok(ConnectionConfig {
        name: name.into(),
        driver,
        prefix,
        group: pick(&own.group, &inherited.group),
        profile: pick(&own.profile, &inherited.profile),
        weight,
        setting: own.setting.clone().or_else(|| inherited.setting.clone()).unwrap_or_default(),
    })
}

/// The `setting` keys of a `nats` connection that the environment may set,
/// so that secrets stay out of config files: `BUSBAR_BUS_<KEY>` for every
/// connection, `BUSBAR_BUS_<NAME>_<KEY>` for `[bus.NAME]` (which wins), with
/// the key and name in upper case and `-` or `.` as `_`.
pub const SECRET_KEYS: [&str; 9] =
    ["url", "token", "user", "password", "credentials", "nkey", "tls_ca", "tls_cert", "tls_key"];

/// The `setting` keys of a `nats` connection that name files. A relative
/// path in the config file is resolved against the file's folder; one from
/// the environment ([`SECRET_KEYS`]) is taken as it is (relative to the
/// working directory).
pub const PATH_KEYS: [&str; 5] = ["credentials", "nkey", "tls_ca", "tls_cert", "tls_key"];

/// Resolves the [`PATH_KEYS`] of a `nats` connection against `base`.
fn resolve_setting_paths(conn: &mut ConnectionConfig, base: &Path) {
    if conn.driver != "nats" {
        return;
    }
    for key in PATH_KEYS {
        if let Some(toml::Value::String(path)) = conn.setting.get_mut(key) {
            *path = base.join(&*path).display().to_string();
        }
    }
}

/// The environment variable that sets `key` for connection `connection`
/// (`None`: for every connection).
pub fn secret_env_var(connection: Option<&str>, key: &str) -> String {
    let upper = |s: &str| s.to_ascii_uppercase().replace(['-', '.'], "_");
    match connection {
        Some(name) => format!("BUSBAR_BUS_{}_{}", upper(name), upper(key)),
        None => format!("BUSBAR_BUS_{}", upper(key)),
    }
}

fn apply_secret_overrides(conn: &mut ConnectionConfig, env: &impl Fn(&str) -> Option<String>) {
    if conn.driver != "nats" {
        return;
    }
    for key in SECRET_KEYS {
        let named = (conn.name != "default").then(|| secret_env_var(Some(&conn.name), key));
        let value = named.and_then(|var| env(&var)).or_else(|| env(&secret_env_var(None, key)));
        if let Some(value) = value {
            conn.setting.insert(key.to_string(), toml::Value::String(value));
        }
    }
}

fn suffix(name: &str) -> String {
    if name == "default" { String::new() } else { format!(".{name}") }
}

fn default_node_id() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .ok()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "node".into());
    format!("{host}-{}", std::process::id())
}

fn default_cache_dir() -> Option<PathBuf> {
    let base = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))?;
    Some(base.join("busbar"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Config, ConfigError> {
        Config::parse(text, Path::new("/etc/busbar/node.toml"))
    }

    #[test]
    fn empty_file_means_one_default_connection() {
        let c = parse("").expect("empty config is valid");
        assert_eq!(c.connections.len(), 1);
        assert_eq!(c.connections[0].driver, "default");
        assert_eq!(c.node.handlers, Path::new("/etc/busbar/handlers"));
    }

    #[test]
    fn unknown_keys_name_the_key_and_the_file() {
        let e = parse("[node]\nprojekt = \"x\"\n").unwrap_err().to_string();
        assert!(e.contains("/etc/busbar/node.toml") && e.contains("projekt"), "{e}");
        let e = parse("[bus]\ndriverr = \"default\"\n").unwrap_err().to_string();
        assert!(e.contains("bus.driverr"), "{e}");
        let e = parse("[bus.east]\nwieght = 2\n").unwrap_err().to_string();
        assert!(e.contains("wieght") && e.contains("bus.east"), "{e}");
        let e = parse("[handlers]\ntimeout = \"soon\"\n").unwrap_err().to_string();
        assert!(e.contains("soon"), "{e}");
    }

    #[test]
    fn named_connections_inherit_bus_keys() {
        let c = parse("[bus]\ngroup = \"g\"\n[bus.east]\nweight = 3\n[bus.west]\ngroup = \"w\"\n").expect("valid");
        let by_name = |n: &str| c.connections.iter().find(|c| c.name == n).expect("present").clone();
        assert_eq!((by_name("east").group, by_name("east").weight), ("g".into(), 3));
        assert_eq!((by_name("west").group, by_name("west").weight), ("w".into(), 1));
    }

    #[test]
    fn secrets_come_from_the_environment_and_a_named_connection_wins() {
        let env = |key: &str| match key {
            "BUSBAR_BUS_PASSWORD" => Some("everyone".to_string()),
            "BUSBAR_BUS_EAST_PASSWORD" => Some("east only".to_string()),
            "BUSBAR_BUS_TOKEN" => Some("t".to_string()),
            _ => None,
        };
        let text = "[bus]\ndriver = \"nats\"\nsetting = { user = \"u\", password = \"in the file\" }\n[bus.east]\n[bus.west]\n";
        let c = Config::parse_with_env(text, Path::new("node.toml"), env).expect("valid");
        let setting = |n: &str| c.connections.iter().find(|c| c.name == n).expect("present").setting.clone();
        assert_eq!(setting("east")["password"].as_str(), Some("east only"));
        assert_eq!(setting("west")["password"].as_str(), Some("everyone"));
        assert_eq!(setting("west")["user"].as_str(), Some("u"), "the file's other settings stay");
        assert_eq!(setting("west")["token"].as_str(), Some("t"));
        let printed = toml::to_string(&c.redacted()).expect("serializes");
        assert!(
            !printed.contains("everyone") && !printed.contains("east only") && printed.contains("***"),
            "{printed}"
        );
        // The default driver takes no settings: the environment leaves it alone.
        let c = Config::parse_with_env("", Path::new("node.toml"), env).expect("valid");
        assert!(c.connections[0].setting.is_empty());
    }

    #[test]
    fn nats_file_settings_are_resolved_against_the_config_folder_and_may_come_from_the_environment() {
        let env = |key: &str| match key {
            "BUSBAR_BUS_TLS_KEY" => Some("secrets/client.key".to_string()),
            "BUSBAR_BUS_NKEY" => Some("/run/secrets/seed.nk".to_string()),
            _ => None,
        };
        let text = "[bus]\ndriver = \"nats\"\nsetting = { tls_ca = \"ca.pem\", tls_cert = \"/abs/client.pem\", \
                    credentials = \"../shop.creds\" }\n";
        let c = Config::parse_with_env(text, Path::new("/etc/busbar/node.toml"), env).expect("valid");
        let setting = &c.connections[0].setting;
        let value = |key: &str| setting[key].as_str().expect("a string").to_string();
        assert_eq!(value("tls_ca"), "/etc/busbar/ca.pem");
        assert_eq!(value("tls_cert"), "/abs/client.pem");
        assert_eq!(value("credentials"), "/etc/busbar/../shop.creds");
        assert_eq!(value("tls_key"), "secrets/client.key", "the environment's paths are taken as they are");
        assert_eq!(value("nkey"), "/run/secrets/seed.nk");
        // Another driver's settings are its own business.
        let c = parse("[bus]\ndriver = \"other\"\nsetting = { tls_ca = \"ca.pem\" }\n").expect("valid");
        assert_eq!(c.connections[0].setting["tls_ca"].as_str(), Some("ca.pem"));
        for key in PATH_KEYS {
            assert!(SECRET_KEYS.contains(&key), "`{key}` names a file the environment may set");
        }
    }

    #[test]
    fn unknown_driver_and_bad_prefix_are_errors() {
        let pigeon = parse("[bus]\ndriver = \"carrier-pigeon\"\n").expect("any driver name parses");
        let e = pigeon.check_drivers(Path::new("node.toml"), &crate::driver::KNOWN).unwrap_err().to_string();
        assert!(e.contains("node.toml") && e.contains("carrier-pigeon") && e.contains("default, nats"), "{e}");
        assert!(parse("[bus]\ndriver = \"a b\"\n").is_err());
        assert!(parse("[bus]\nprefix = \"shop\"\n").unwrap_err().to_string().contains("end with a dot"));
    }
}
