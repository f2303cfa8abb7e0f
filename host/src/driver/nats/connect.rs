//! Opening a NATS connection from `[bus] setting`: the settings and their
//! checks (every file named in them is read and checked before the first
//! byte goes out, so a wrong path or a mismatched key names the key and the
//! file), TLS and authentication, and why a connection could not be made.
//!
//! async-nats retries the first connection in the background and reports
//! only the kind of each failure ("IO error"); the whole error of each
//! server's last attempt is in the server pool that its reconnect callback
//! sees. [`Attempts`] keeps it, so that a failure that retrying cannot mend
//! (a certificate refused, credentials refused) ends the start at once with
//! what is wrong and what to do, and a timeout says what the servers answered.

use crate::driver::DriverError;
use async_nats::rustls;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use serde::Deserialize;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// How long the first connection may take (the server may still be starting).
const CONNECT_WAIT: Duration = Duration::from_secs(10);

/// How long the background connector of an abandoned first connection
/// sleeps between attempts: async-nats has no way to stop it, so it is put
/// to sleep instead of knocking on the server every few seconds for as long
/// as the process runs.
const ABANDONED_RETRY: Duration = Duration::from_secs(24 * 60 * 60);

/// `[bus] setting` of a NATS connection.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct Settings {
    #[serde(default)]
    url: Urls,
    token: Option<String>,
    user: Option<String>,
    password: Option<String>,
    credentials: Option<PathBuf>,
    nkey: Option<PathBuf>,
    tls_ca: Option<PathBuf>,
    tls_cert: Option<PathBuf>,
    tls_key: Option<PathBuf>,
    name: Option<String>,
    replicas: Option<usize>,
    #[serde(default, with = "crate::units::serde_units::opt_age")]
    dead_max_age: Option<Duration>,
    #[serde(default, with = "crate::units::serde_units::opt_size")]
    dead_max_bytes: Option<u64>,
    max_pending: Option<u64>,
    #[serde(default, with = "crate::units::serde_units::opt_size")]
    bucket_size: Option<u64>,
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum Urls {
    One(String),
    Many(Vec<String>),
}

impl Default for Urls {
    fn default() -> Self {
        Self::One("nats://127.0.0.1:4222".into())
    }
}

impl Urls {
    fn list(&self) -> Vec<String> {
        match self {
            Self::One(u) => vec![u.clone()],
            Self::Many(us) => us.clone(),
        }
    }
}

impl Settings {
    pub(super) fn parse(setting: &toml::Table) -> Result<Self, DriverError> {
        Self::deserialize(toml::Value::Table(setting.clone())).map_err(|e| DriverError::Setting(e.to_string()))
    }

    /// How the streams are to be kept, checked against the limits.
    pub(super) fn keeping(&self) -> Result<super::streams::Keeping, DriverError> {
        let defaults = super::streams::Keeping::default();
        let keeping = super::streams::Keeping {
            replicas: self.replicas.unwrap_or(defaults.replicas),
            dead_max_age: self.dead_max_age.unwrap_or(defaults.dead_max_age),
            dead_max_bytes: self.dead_max_bytes.unwrap_or(defaults.dead_max_bytes),
            max_pending: self.max_pending.unwrap_or(defaults.max_pending),
            bucket_size: self.bucket_size.unwrap_or(defaults.bucket_size),
        };
        keeping.check().map_err(DriverError::Setting)?;
        Ok(keeping)
    }
}

/// Connects as `default_name` (unless the settings name the connection) and
/// waits, at most [`CONNECT_WAIT`], until the server has answered.
pub(super) async fn open(settings: Settings, default_name: &str) -> Result<async_nats::Client, DriverError> {
    let urls = settings.url.list();
    let addrs: Vec<async_nats::ServerAddr> = urls
        .iter()
        .map(|u| u.parse().map_err(|e| DriverError::Setting(format!("url `{u}`: {e}"))))
        .collect::<Result<_, _>>()?;
    let tls = settings.tls_ca.is_some()
        || settings.tls_cert.is_some()
        || settings.tls_key.is_some()
        || addrs.iter().any(async_nats::ServerAddr::tls_required);
    let attempts = Arc::new(Attempts { client_cert: settings.tls_cert.is_some(), ..Attempts::default() });
    let watcher = attempts.clone();
    let options = async_nats::ConnectOptions::new()
        .name(settings.name.clone().unwrap_or_else(|| default_name.to_string()))
        .retry_on_initial_connect()
        .max_reconnects(None)
        .require_tls(tls)
        .reconnect_to_server_callback(move |servers, _info| std::future::ready(watcher.observe(&servers)));
    let options = authenticate(options, &settings).await?;
    let options = secure(options, &settings).await?;
    let at = format!("connecting to NATS at {}", urls.join(", "));
    // retry_on_initial_connect makes connect return at once and keep
    // trying; wait for the first connection so a wrong URL fails the start.
    let connected = async {
        let client = options.connect(addrs).await.map_err(|e| DriverError::from_cause(at.clone(), e))?;
        client.flush().await.map_err(|e| DriverError::from_cause(at.clone(), e))?;
        Ok::<_, DriverError>(client)
    };
    let outcome = tokio::select! {
        connected = tokio::time::timeout(CONNECT_WAIT, connected) => match connected {
            Ok(connected) => connected,
            Err(_) => Err(attempts.timed_out(&at)),
        },
        () = attempts.hopeless.notified() => Err(attempts.refused(&at)),
    };
    attempts.settle(if outcome.is_ok() { CONNECTED } else { ABANDONED });
    outcome
}

/// Adds the authentication the settings ask for. `nkey` goes alone:
/// async-nats would send it beside the others, and the server would check
/// one of them (or a signature made with the wrong key).
async fn authenticate(
    mut options: async_nats::ConnectOptions,
    settings: &Settings,
) -> Result<async_nats::ConnectOptions, DriverError> {
    if let Some(nkey) = &settings.nkey {
        let others: Vec<&str> = [
            ("credentials", settings.credentials.is_some()),
            ("token", settings.token.is_some()),
            ("user", settings.user.is_some()),
            ("password", settings.password.is_some()),
        ]
        .into_iter()
        .filter_map(|(key, set)| set.then_some(key))
        .collect();
        if !others.is_empty() {
            return Err(DriverError::Setting(format!(
                "`nkey` cannot be combined with `{}`: a NATS connection authenticates one way; keep one",
                others.join("`, `")
            )));
        }
        options = options.nkey(read_seed(nkey).await?);
    }
    if let Some(token) = &settings.token {
        options = options.token(token.clone());
    }
    match (&settings.user, &settings.password) {
        (Some(user), Some(password)) => options = options.user_and_password(user.clone(), password.clone()),
        (None, None) => {}
        _ => return Err(DriverError::Setting("`user` and `password` go together".into())),
    }
    if let Some(creds) = &settings.credentials {
        options = options
            .credentials_file(creds)
            .await
            .map_err(|e| DriverError::Setting(format!("`credentials` {}: {e}", creds.display())))?;
    }
    Ok(options)
}

/// The NKey user seed in the file at `path` (`SU…`, surrounding whitespace
/// ignored).
async fn read_seed(path: &Path) -> Result<String, DriverError> {
    let text = read(path, "nkey").await?;
    let seed = String::from_utf8_lossy(&text).trim().to_string();
    let bad = |why: String| {
        DriverError::Setting(format!(
            "`nkey` {}: {why}; the file must hold an NKey user seed (`SU…`, as `nk -gen user` prints)",
            path.display()
        ))
    };
    let pair = nkeys::KeyPair::from_seed(&seed).map_err(|e| bad(format!("not an NKey seed ({e})")))?;
    match pair.key_pair_type() {
        nkeys::KeyPairType::User => Ok(seed),
        other => Err(bad(format!("the seed is of an NKey of type {other:?}, not a user's"))),
    }
}

/// Adds the TLS files of the settings, each checked first: the CA file must
/// hold usable CA certificates, and the client certificate must hold a
/// certificate that matches the private key.
async fn secure(
    mut options: async_nats::ConnectOptions,
    settings: &Settings,
) -> Result<async_nats::ConnectOptions, DriverError> {
    if let Some(ca) = &settings.tls_ca {
        let mut roots = rustls::RootCertStore::empty();
        for cert in certificates(ca, "tls_ca").await? {
            roots.add(cert).map_err(|e| {
                DriverError::Setting(format!("`tls_ca` {}: not a usable CA certificate: {e}", ca.display()))
            })?;
        }
        options = options.add_root_certificates(ca.clone());
    }
    match (&settings.tls_cert, &settings.tls_key) {
        (Some(cert), Some(key)) => {
            let chain = certificates(cert, "tls_cert").await?;
            let text = read(key, "tls_key").await?;
            let private = PrivateKeyDer::from_pem_slice(&text).map_err(|e| {
                DriverError::Setting(format!(
                    "`tls_key` {}: no PEM private key in it ({e}); it must hold the key of `tls_cert`",
                    key.display()
                ))
            })?;
            let provider = rustls::crypto::ring::default_provider();
            rustls::sign::CertifiedKey::from_der(chain, private, &provider).map_err(|e| {
                DriverError::Setting(format!(
                    "`tls_key` {} is not the private key of `tls_cert` {} ({e}): give the pair that was issued together",
                    key.display(),
                    cert.display()
                ))
            })?;
            options = options.add_client_certificate(cert.clone(), key.clone());
        }
        (None, None) => {}
        _ => {
            return Err(DriverError::Setting(
                "`tls_cert` and `tls_key` go together: the client certificate and its private key".into(),
            ));
        }
    }
    Ok(options)
}

/// The PEM certificates in the file at `path`, at least one.
async fn certificates(path: &Path, key: &str) -> Result<Vec<CertificateDer<'static>>, DriverError> {
    let text = read(path, key).await?;
    let certs = CertificateDer::pem_slice_iter(&text)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| DriverError::Setting(format!("`{key}` {}: bad PEM: {e}", path.display())))?;
    if certs.is_empty() {
        return Err(DriverError::Setting(format!(
            "`{key}` {}: no certificate in it (PEM, `-----BEGIN CERTIFICATE-----`)",
            path.display()
        )));
    }
    Ok(certs)
}

/// The file at `path`, named by setting `key`.
async fn read(path: &Path, key: &str) -> Result<Vec<u8>, DriverError> {
    tokio::fs::read(path)
        .await
        .map_err(|e| DriverError::Setting(format!("`{key}` {}: cannot read it: {e}", path.display())))
}

/// What the first connection's attempts have met, server by server.
#[derive(Default)]
struct Attempts {
    /// Whether busbar presents a client certificate (it changes what a
    /// refused handshake means).
    client_cert: bool,
    /// Each server's last error, as async-nats wrote it.
    errors: Mutex<Vec<(String, String)>>,
    /// Notified once every server has failed in a way that retrying cannot
    /// mend (the first connection is then abandoned).
    hopeless: tokio::sync::Notify,
    /// [`CONNECTING`], [`CONNECTED`] or [`ABANDONED`].
    state: AtomicU8,
}

/// The first connection is being made: attempts are watched.
const CONNECTING: u8 = 0;
/// The first connection was made: reconnections are async-nats's business.
const CONNECTED: u8 = 1;
/// The first connection was given up: the connector is put to sleep.
const ABANDONED: u8 = 2;

impl Attempts {
    /// Called by async-nats before each round of attempts, with the server
    /// pool; `None` lets it pick the server as usual.
    fn observe(&self, servers: &[async_nats::Server]) -> Option<async_nats::ReconnectToServer> {
        let asleep = || {
            servers
                .first()
                .map(|s| async_nats::ReconnectToServer { addr: s.addr.clone(), delay: Some(ABANDONED_RETRY) })
        };
        match self.state.load(Ordering::SeqCst) {
            CONNECTING => {}
            ABANDONED => return asleep(),
            _ => return None,
        }
        let errors: Vec<(String, String)> = servers
            .iter()
            .filter_map(|s| s.last_error.as_ref().map(|e| (s.addr.as_url_str().to_string(), e.clone())))
            .collect();
        let hopeless = !servers.is_empty()
            && servers.iter().all(|s| s.failed_attempts > 0 && s.last_error.as_deref().is_some_and(is_final));
        *crate::sync::lock(&self.errors) = errors;
        if hopeless && self.state.compare_exchange(CONNECTING, ABANDONED, Ordering::SeqCst, Ordering::SeqCst).is_ok() {
            self.hopeless.notify_one();
            return asleep();
        }
        None
    }

    /// Ends the watch of the first connection: [`CONNECTED`] or [`ABANDONED`].
    fn settle(&self, state: u8) {
        self.state.store(state, Ordering::SeqCst);
    }

    /// Every server refused us for good: why, server by server.
    fn refused(&self, at: &str) -> DriverError {
        let errors = crate::sync::lock(&self.errors).clone();
        let said = |(url, error): &(String, String)| match errors.len() {
            1 => explain(error, self.client_cert),
            _ => format!("{url}: {}", explain(error, self.client_cert)),
        };
        let why = errors.iter().map(said).collect::<Vec<_>>().join("; ");
        match errors.iter().all(|(_, e)| is_refused_credentials(e)) {
            true => DriverError::NotAuthorized { what: at.to_string(), source: why.into() },
            false => DriverError::Bus { what: at.to_string(), source: why.into() },
        }
    }

    /// No server answered within [`CONNECT_WAIT`]: what they said meanwhile.
    fn timed_out(&self, at: &str) -> DriverError {
        let errors = crate::sync::lock(&self.errors).clone();
        let what = match errors.as_slice() {
            [] => format!("{at} (is nats-server running?)"),
            [(_, error)] => format!("{at} (is nats-server running? last error: {})", explain(error, self.client_cert)),
            many => {
                let said = many.iter().map(|(url, e)| format!("{url}: {}", explain(e, self.client_cert)));
                format!("{at} (is nats-server running? last errors: {})", said.collect::<Vec<_>>().join("; "))
            }
        };
        DriverError::TimedOut { what }
    }
}

/// Whether an attempt's error is one that retrying cannot mend: the TLS
/// handshake or the credentials were refused.
fn is_final(error: &str) -> bool {
    diagnosis(error, false).is_some() || is_refused_credentials(error)
}

fn is_refused_credentials(error: &str) -> bool {
    let error = error.to_ascii_lowercase();
    error.contains("authorization violation") || error.contains("failed signing nonce")
}

/// What a TLS failure means and what to do about it, from rustls's words;
/// `client_cert` tells whether busbar presented a client certificate.
fn diagnosis(error: &str, client_cert: bool) -> Option<&'static str> {
    const UNTRUSTED: &str = "the server's certificate is not signed by a CA busbar trusts: set `tls_ca` to the CA certificate that signed it";
    const WRONG_NAME: &str = "the server's certificate is not valid for the host in the URL: connect by a name or address the certificate lists";
    const CLIENT_CERT_REQUIRED: &str = "the server requires a client certificate: set `tls_cert` and `tls_key`";
    const CLIENT_CERT_REFUSED: &str =
        "the server refused busbar's client certificate: `tls_cert` must be signed by a CA in the server's `ca_file`";
    let lower = error.to_ascii_lowercase();
    let has = |word: &str| lower.contains(word);
    let refused_certificate = ["badcertificate", "unknownca", "certificateunknown", "unsupportedcertificate"];
    Some(if has("invalid peer certificate") {
        if has("unknownissuer") {
            UNTRUSTED
        } else if has("notvalidforname") || has("not valid for name") {
            WRONG_NAME
        } else if has("expired") {
            "the server's certificate has expired: the server needs a new one"
        } else {
            "the server's certificate was refused"
        }
    } else if has("received fatal alert") {
        // Go sends `certificate_required` (TLS 1.3, Go 1.21 on) or
        // `bad_certificate` (before) when a client certificate is missing.
        if has("certificaterequired") || (!client_cert && has("badcertificate")) {
            CLIENT_CERT_REQUIRED
        } else if client_cert && refused_certificate.iter().any(|alert| has(alert)) {
            CLIENT_CERT_REFUSED
        } else {
            "the server refused the TLS handshake"
        }
    } else if has("corrupt message") {
        "the server does not speak TLS on this port: give it a `tls` block, or connect without TLS (a `nats://` URL and no `tls_*` keys)"
    } else if has("tls error") {
        "TLS could not be set up: check `tls_ca`, `tls_cert` and `tls_key`"
    } else {
        return None;
    })
}

/// An attempt's error for a person: what it means, what to do, and what
/// async-nats said.
fn explain(error: &str, client_cert: bool) -> String {
    match diagnosis(error, client_cert) {
        Some(meaning) => format!("{meaning} ({error})"),
        None if is_refused_credentials(error) => format!(
            "the server refused the credentials: check `token`, `user` and `password`, `credentials` or `nkey` ({error})"
        ),
        None => error.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tls_failures_say_what_to_do() {
        let unknown = explain("IO error: invalid peer certificate: UnknownIssuer", false);
        assert!(unknown.contains("set `tls_ca`") && unknown.contains("UnknownIssuer"), "{unknown}");
        for alert in ["CertificateRequired", "BadCertificate"] {
            let required = explain(&format!("IO error: received fatal alert: {alert}"), false);
            assert!(required.contains("requires a client certificate: set `tls_cert` and `tls_key`"), "{required}");
        }
        let name = explain(
            "IO error: invalid peer certificate: certificate not valid for name \"localhost\"; \
             certificate is only valid for IpAddress(127.0.0.1)",
            false,
        );
        assert!(name.contains("not valid for the host in the URL"), "{name}");
        let plain = explain("IO error: received corrupt message of type InvalidContentType", false);
        assert!(plain.contains("does not speak TLS"), "{plain}");
        let refused = explain("IO error: received fatal alert: BadCertificate", true);
        assert!(refused.contains("refused busbar's client certificate"), "{refused}");
        assert!(is_final("authorization violation: authorization violation"));
        assert!(!is_final("IO error: Connection refused (os error 111)"));
        assert_eq!(explain("timed out", false), "timed out");
    }
}
