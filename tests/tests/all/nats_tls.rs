//! The NATS driver over TLS and with NKeys, against a real `nats-server`
//! configured for TLS (`verify: false`), mutual TLS (`verify: true`) or NKey
//! users, with certificates and keys each test makes: a node connects and
//! serves, and every way of getting it wrong — a CA that did not sign the
//! server's certificate, no client certificate, a client certificate from
//! another CA, a refused seed, a missing or mismatched file — stops the start
//! at once with a message that says what to change.

use busbar::{Config, Node, NodeBuilder};
use busbar_tests::nats::NatsServer;
use busbar_tests::support::{Folder, TEST_TIMEOUT, runtime};
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose,
};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// A refusal must come well before the 10 s a node waits for a server
/// that is not up yet.
const FAIL_FAST: Duration = Duration::from_secs(5);

/// A certificate authority that signs certificates for the tests.
struct Authority {
    issuer: Issuer<'static, KeyPair>,
    pem: String,
}

impl Authority {
    fn new(name: &str) -> Self {
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
        params.distinguished_name.push(DnType::CommonName, name);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages =
            vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign, KeyUsagePurpose::DigitalSignature];
        let key = KeyPair::generate().expect("CA key");
        let pem = params.self_signed(&key).expect("CA certificate").pem();
        Self { issuer: Issuer::new(params, key), pem }
    }

    /// A certificate for `names` (DNS names or IP addresses) used for
    /// `usage`, and its private key, both PEM.
    fn sign(&self, common_name: &str, names: &[&str], usage: ExtendedKeyUsagePurpose) -> (String, String) {
        let mut params =
            CertificateParams::new(names.iter().map(ToString::to_string).collect::<Vec<_>>()).expect("params");
        params.distinguished_name.push(DnType::CommonName, common_name);
        params.extended_key_usages = vec![usage];
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        let key = KeyPair::generate().expect("key");
        let cert = params.signed_by(&key, &self.issuer).expect("signed certificate");
        (cert.pem(), key.serialize_pem())
    }
}

/// The files of one test: a CA, the server's certificate for 127.0.0.1 and
/// localhost, a client certificate, and a second, unrelated CA with a
/// client certificate of its own.
struct Pki {
    dir: tempfile::TempDir,
}

impl Pki {
    fn new() -> Self {
        let pki = Self { dir: tempfile::Builder::new().prefix("busbar-tls-").tempdir().expect("tempdir") };
        let ca = Authority::new("busbar test CA");
        let other = Authority::new("some other CA");
        let (server_cert, server_key) =
            ca.sign("nats-server", &["127.0.0.1", "localhost"], ExtendedKeyUsagePurpose::ServerAuth);
        let (client_cert, client_key) =
            ca.sign("busbar node", &["node.busbar.test"], ExtendedKeyUsagePurpose::ClientAuth);
        let (stranger_cert, stranger_key) =
            other.sign("stranger", &["stranger.busbar.test"], ExtendedKeyUsagePurpose::ClientAuth);
        for (name, text) in [
            ("ca.pem", &ca.pem),
            ("other-ca.pem", &other.pem),
            ("server.pem", &server_cert),
            ("server.key", &server_key),
            ("client.pem", &client_cert),
            ("client.key", &client_key),
            ("stranger.pem", &stranger_cert),
            ("stranger.key", &stranger_key),
        ] {
            std::fs::write(pki.path(name), text).expect("write a PEM file");
        }
        pki
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// A nats-server with TLS from these files; `verify` makes it require
    /// client certificates signed by the CA.
    fn server(&self, verify: bool) -> NatsServer {
        let config = format!(
            "tls {{\n  cert_file: {:?}\n  key_file: {:?}\n  ca_file: {:?}\n  verify: {verify}\n  timeout: 5\n}}\n",
            self.path("server.pem"),
            self.path("server.key"),
            self.path("ca.pem"),
        );
        let file = self.path(if verify { "mtls.conf" } else { "tls.conf" });
        std::fs::write(&file, config).expect("write the server config");
        NatsServer::builder().arg("-c").arg(&file).start()
    }
}

/// `tls://127.0.0.1:PORT` of `server`.
fn tls_url(server: &NatsServer) -> String {
    format!("tls://127.0.0.1:{}", server.port())
}

/// `key = "path"` for a `setting` inline table.
fn file_setting(key: &str, path: &Path) -> String {
    format!("{key} = {:?}", path.display().to_string())
}

/// Starts a node named `id` on `url` with more `setting` entries
/// (`settings`, TOML inline-table entries), serving `folder` or, without
/// one, as a client; the start error in words if it fails.
async fn start(url: &str, id: &str, settings: &[String], folder: Option<&Folder>) -> Result<Node, String> {
    let mut entries = vec![format!("url = {url:?}")];
    entries.extend(settings.iter().cloned());
    let text = format!(
        "[node]\nid = \"{id}\"\nproject = \"shop\"\n[bus]\ndriver = \"nats\"\nsetting = {{ {} }}\n",
        entries.join(", ")
    );
    let mut config = Config::parse(&text, Path::new("test.toml")).expect("valid config");
    let builder = match folder {
        Some(folder) => {
            config.node.handlers = folder.path().to_path_buf();
            NodeBuilder::new(config).runtime(runtime())
        }
        None => NodeBuilder::new(config).runtime(runtime()).client(),
    };
    builder.start().await.map(|(node, _)| node).map_err(|e| e.to_string())
}

/// Starts a node that must fail, and its error; it must fail fast.
async fn refused(url: &str, settings: &[String]) -> String {
    let started = Instant::now();
    let error = match start(url, "refused", settings, None).await {
        Ok(_) => panic!("the node started with {settings:?}"),
        Err(error) => error,
    };
    assert!(started.elapsed() < FAIL_FAST, "refused after {:?}: {error}", started.elapsed());
    error
}

/// A call of `echo` from a client node (with `settings`) to the node serving it.
async fn echo_through(url: &str, settings: &[String]) {
    let client = start(url, "caller", settings, None).await.expect("the client connects");
    let reply = client.call("echo", b"sealed".to_vec(), TEST_TIMEOUT).await.expect("echo answers over TLS");
    assert_eq!(reply, b"sealed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_with_the_servers_ca_serves_over_tls() {
    let pki = Pki::new();
    let server = pki.server(false);
    let ca = vec![file_setting("tls_ca", &pki.path("ca.pem"))];
    let folder = Folder::with(&["echo"]);
    let _node = start(&tls_url(&server), "a", &ca, Some(&folder)).await.expect("the node starts over TLS");
    echo_through(&tls_url(&server), &ca).await;
    // A `nats://` URL with `tls_ca` goes over TLS too.
    echo_through(&server.url(), &ca).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_with_a_client_certificate_serves_over_mutual_tls() {
    let pki = Pki::new();
    let server = pki.server(true);
    let mtls = vec![
        file_setting("tls_ca", &pki.path("ca.pem")),
        file_setting("tls_cert", &pki.path("client.pem")),
        file_setting("tls_key", &pki.path("client.key")),
    ];
    let folder = Folder::with(&["echo"]);
    let _node = start(&tls_url(&server), "a", &mtls, Some(&folder)).await.expect("the node starts over mTLS");
    echo_through(&tls_url(&server), &mtls).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_certificate_from_another_ca_is_refused_at_once() {
    let pki = Pki::new();
    let server = pki.server(false);
    let error = refused(&tls_url(&server), &[file_setting("tls_ca", &pki.path("other-ca.pem"))]).await;
    assert!(error.contains("not signed by a CA busbar trusts") && error.contains("set `tls_ca`"), "{error}");
    // Without `tls_ca`, the system's CAs did not sign it either.
    let error = refused(&tls_url(&server), &[]).await;
    assert!(error.contains("not signed by a CA busbar trusts"), "{error}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_that_verifies_clients_refuses_a_node_without_a_certificate_at_once() {
    let pki = Pki::new();
    let server = pki.server(true);
    let ca = file_setting("tls_ca", &pki.path("ca.pem"));
    let error = refused(&tls_url(&server), std::slice::from_ref(&ca)).await;
    assert!(
        error.contains("requires a client certificate") && error.contains("set `tls_cert` and `tls_key`"),
        "{error}"
    );
    // A certificate signed by a CA the server does not know.
    let stranger =
        [ca, file_setting("tls_cert", &pki.path("stranger.pem")), file_setting("tls_key", &pki.path("stranger.key"))];
    let error = refused(&tls_url(&server), &stranger).await;
    assert!(error.contains("refused busbar's client certificate") && error.contains("`ca_file`"), "{error}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_authenticates_with_an_nkey_seed_and_a_wrong_seed_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let user = nkeys::KeyPair::new_user();
    let config = dir.path().join("nkey.conf");
    std::fs::write(&config, format!("authorization {{\n  users = [ {{ nkey: {:?} }} ]\n}}\n", user.public_key()))
        .expect("write the server config");
    let server = NatsServer::builder().arg("-c").arg(&config).start();
    let seed = dir.path().join("user.nk");
    std::fs::write(&seed, format!("{}\n", user.seed().expect("a seed"))).expect("write the seed");
    let nkey = vec![file_setting("nkey", &seed)];
    let folder = Folder::with(&["echo"]);
    let _node = start(&server.url(), "a", &nkey, Some(&folder)).await.expect("the node starts with its NKey");
    echo_through(&server.url(), &nkey).await;

    let stranger = dir.path().join("stranger.nk");
    std::fs::write(&stranger, nkeys::KeyPair::new_user().seed().expect("a seed")).expect("write the seed");
    let error = refused(&server.url(), &[file_setting("nkey", &stranger)]).await;
    assert!(error.contains("not authorised") && error.contains("`nkey`"), "{error}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_and_nkey_files_are_checked_before_connecting() {
    let pki = Pki::new();
    // Nothing listens here: each mistake is found before a connection is tried.
    let url = "tls://127.0.0.1:9";
    let missing = pki.path("missing.pem");
    let cases: Vec<(Vec<String>, &str)> = vec![
        (vec![file_setting("tls_ca", &missing)], "`tls_ca`"),
        (vec![file_setting("tls_ca", &pki.path("client.key"))], "no certificate in it"),
        (vec![file_setting("tls_cert", &pki.path("client.pem"))], "`tls_cert` and `tls_key` go together"),
        (
            vec![file_setting("tls_cert", &pki.path("client.pem")), file_setting("tls_key", &pki.path("server.key"))],
            "is not the private key of `tls_cert`",
        ),
        (
            vec![file_setting("tls_cert", &pki.path("client.pem")), file_setting("tls_key", &pki.path("client.pem"))],
            "no PEM private key",
        ),
        (vec![file_setting("nkey", &pki.path("ca.pem"))], "not an NKey seed"),
        (vec![file_setting("nkey", &missing), "token = \"t\"".into()], "`nkey` cannot be combined with `token`"),
    ];
    for (settings, expected) in cases {
        let error = refused(url, &settings).await;
        assert!(error.contains(expected), "{settings:?}: {error}");
        if expected == "`tls_ca`" {
            assert!(error.contains(&missing.display().to_string()) && error.contains("cannot read it"), "{error}");
        }
    }
    let account = pki.path("account.nk");
    std::fs::write(&account, nkeys::KeyPair::new_account().seed().expect("a seed")).expect("write the seed");
    let error = refused(url, &[file_setting("nkey", &account)]).await;
    assert!(error.contains("not a user's"), "{error}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_that_requires_tls_refuses_a_server_without_it() {
    let pki = Pki::new();
    let server = NatsServer::start();
    let error = refused(&server.url(), &[file_setting("tls_ca", &pki.path("ca.pem"))]).await;
    assert!(error.to_ascii_lowercase().contains("tls"), "{error}");
}
