//! Credentials and TLS against real `nats-server` processes that require them: user and password,
//! token, NKey, `.creds` files (operator mode, with JWTs built here) and TLS with server and client
//! certificates (made with `openssl` for each test).
//!
//! The right credentials work end to end (connect, enqueue, process); wrong ones are refused with
//! `ERR_PQ_AUTH` / `ERR_PQ_TLS` at once rather than after the connect timeout; configuration
//! mistakes found at connect time are `ERR_PQ_INVALID_CONFIG` before any connection is opened; and
//! no secret reaches a log line, with every crate logging at trace level.

mod common;

use protoqueue::lifecycle;

use std::{
    io::Write,
    net::{Ipv4Addr, TcpListener},
    path::{Path, PathBuf},
    process::Command,
    sync::{Arc, Mutex},
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use base64::{engine::general_purpose::URL_SAFE_NO_PAD, Engine};
use common::*;
use nkeys::KeyPair;
use protoqueue::{config::tls::ClientCert, Auth, Config, Connection, Error, Secret, Tls};
use serde_json::{json, Value};
use tokio::time::Instant;

/// Generous bound for things that normally take milliseconds.
const SOON: Duration = Duration::from_secs(10);
/// The connect timeout of these tests: a refusal must come long before it.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(20);
/// How soon a refusal must arrive.
const PROMPTLY: Duration = Duration::from_secs(4);

// ---------------------------------------------------------------------------------------------
// Helpers

/// What one test logged, from every crate, at every level.
#[derive(Clone, Default)]
struct CapturedLogs(Arc<Mutex<Vec<u8>>>);

impl CapturedLogs {
    /// Routes every log event of the current thread into a buffer until the guard is dropped.
    /// (The addon's load-time set-up already installed the process-wide subscriber, so tests that
    /// capture logs run on a current-thread runtime: the client's tasks run on this thread too.)
    fn start() -> (Self, tracing::subscriber::DefaultGuard) {
        let logs = CapturedLogs::default();
        let writer = logs.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_max_level(tracing::Level::TRACE)
            .with_ansi(false)
            .with_writer(move || writer.clone())
            .finish();
        (logs, tracing::subscriber::set_default(subscriber))
    }

    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap_or_else(|e| e.into_inner())).into_owned()
    }
}

impl Write for CapturedLogs {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// A test config with unique names, the given credentials and TLS settings, and a long connect
/// timeout (so a prompt refusal cannot be the timeout).
fn config_with(auth: Auth, tls: Option<Tls>) -> Config {
    let mut config = test_config();
    config.auth = auth;
    config.tls = tls;
    config.connect_timeout = CONNECT_TIMEOUT;
    config
}

async fn open(config: &Config, url: &str) -> Result<Connection, Error> {
    Connection::open(Arc::new(config.clone()), url).await
}

/// Connects, enqueues a task and has a worker handle it, then disconnects.
async fn assert_works(config: &Config, url: &str) {
    let connection = open(config, url)
        .await
        .unwrap_or_else(|err| panic!("connect to {url} with {config:?}: {err}"));
    let id = lifecycle::enqueue(&connection, task("{}"))
        .await
        .expect("enqueue");
    let recorder = Recorder::new();
    let worker = start_worker(&connection, recording_success(&recorder, 0)).await;
    recorder.wait_distinct(1, SOON).await;
    assert_eq!(recorder.events()[0].id(), id);
    worker.stop().await;
    connection.close().await;
}

/// Expects connecting to fail with `code` well before the connect timeout; returns the error.
async fn assert_refused(config: &Config, url: &str, code: &str) -> Error {
    let started = Instant::now();
    let err = open(config, url)
        .await
        .expect_err("the connection must be refused");
    assert_eq!(err.code(), code, "{err}");
    assert!(
        started.elapsed() < PROMPTLY,
        "refused only after {:?}: {err}",
        started.elapsed()
    );
    err
}

/// [`assert_works`] with these credentials and no TLS.
async fn assert_auth_works(auth: Auth, url: &str) {
    assert_works(&config_with(auth, None), url).await;
}

/// [`assert_refused`] with `ERR_PQ_AUTH`, for these credentials and no TLS.
async fn assert_auth_refused(auth: Auth, url: &str) -> Error {
    assert_refused(&config_with(auth, None), url, "ERR_PQ_AUTH").await
}

fn user_password(user: &str, password: &str) -> Auth {
    Auth::UserPassword {
        user: user.into(),
        password: Secret::new(password),
    }
}

fn seed_of(key: &KeyPair) -> String {
    key.seed().expect("a generated key pair has a seed")
}

fn tls_url(server: &NatsServer) -> String {
    format!("tls://127.0.0.1:{}", server.port())
}

/// `openssl req` arguments for a new P-256 key.
const EC_KEY: &str = "-newkey ec -pkeyopt ec_paramgen_curve:prime256v1";

/// Certificates made with `openssl` in a temporary folder: a CA, a server certificate for
/// 127.0.0.1/localhost and a client certificate signed by it, and a second, untrusted CA with a
/// client certificate of its own.
struct Pki {
    dir: tempfile::TempDir,
}

impl Pki {
    fn new() -> Self {
        let dir = tempfile::Builder::new()
            .prefix("protoqueue-pki-")
            .tempdir()
            .expect("create a folder for certificates");
        let pki = Pki { dir };
        for ca in ["ca", "other-ca"] {
            pki.openssl(&format!(
                "req -x509 {EC_KEY} -nodes -days 2 -subj /CN=protoqueue-test-{ca} \
                 -addext basicConstraints=critical,CA:TRUE \
                 -addext keyUsage=critical,keyCertSign,cRLSign -keyout {ca}.key -out {ca}.pem"
            ));
        }
        pki.issue(
            "server",
            "ca",
            "serverAuth",
            "subjectAltName=IP:127.0.0.1,DNS:localhost\n",
        );
        pki.issue("client", "ca", "clientAuth", "");
        pki.issue("rogue-client", "other-ca", "clientAuth", "");
        pki
    }

    /// A key and a certificate `name.key`/`name.pem` signed by `ca`, for `usage`.
    fn issue(&self, name: &str, ca: &str, usage: &str, extra: &str) {
        let extensions = format!(
            "basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature\n\
             extendedKeyUsage={usage}\n{extra}"
        );
        std::fs::write(self.path(&format!("{name}.ext")), extensions).expect("write extensions");
        self.openssl(&format!(
            "req {EC_KEY} -nodes -subj /CN=protoqueue-test-{name} -keyout {name}.key \
             -out {name}.csr"
        ));
        self.openssl(&format!(
            "x509 -req -days 2 -in {name}.csr -CA {ca}.pem -CAkey {ca}.key -CAcreateserial \
             -extfile {name}.ext -out {name}.pem"
        ));
    }

    /// Runs `openssl` with whitespace-separated arguments in the PKI's folder.
    fn openssl(&self, args: &str) {
        let output = Command::new("openssl")
            .args(args.split_whitespace())
            .current_dir(self.dir.path())
            .output()
            .expect("run openssl (is it installed?)");
        assert!(
            output.status.success(),
            "openssl {args} failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// A server `tls { }` block with this PKI's server certificate; `verify` requires client
    /// certificates signed by the CA.
    fn server_tls(&self, extra: &str) -> String {
        format!(
            "tls {{\n  cert_file: {:?}\n  key_file: {:?}\n  ca_file: {:?}\n  timeout: 5\n  {extra}\n}}\n",
            self.path("server.pem"),
            self.path("server.key"),
            self.path("ca.pem"),
        )
    }

    /// Client TLS settings trusting `ca` (a file of this PKI), with the named client certificate.
    fn client_tls(&self, ca: Option<&str>, client: Option<&str>) -> Tls {
        Tls {
            ca_file: ca.map(|ca| self.path(&format!("{ca}.pem"))),
            client_cert: client.map(|name| ClientCert {
                cert_file: self.path(&format!("{name}.pem")),
                key_file: self.path(&format!("{name}.key")),
            }),
            handshake_first: false,
        }
    }
}

/// A JWT as nats-server reads them: `header.claims.signature`, base64url, signed by `issuer`.
fn jwt(issuer: &KeyPair, subject: &str, name: &str, nats: Value) -> String {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("a clock after 1970")
        .as_secs();
    let header = URL_SAFE_NO_PAD.encode(r#"{"typ":"JWT","alg":"ed25519-nkey"}"#);
    let claims = json!({
        "jti": unique("jti").to_uppercase(),
        "iat": now,
        "iss": issuer.public_key(),
        "name": name,
        "sub": subject,
        "nats": nats,
    });
    let claims = URL_SAFE_NO_PAD.encode(claims.to_string());
    let signed = format!("{header}.{claims}");
    let signature = issuer.sign(signed.as_bytes()).expect("sign a JWT");
    format!("{signed}.{}", URL_SAFE_NO_PAD.encode(signature))
}

/// An account JWT without limits, with JetStream if `jetstream` (never for the system account).
fn account_jwt(operator: &KeyPair, account: &KeyPair, name: &str, jetstream: bool) -> String {
    let mut unlimited = json!({
        "subs": -1, "data": -1, "payload": -1, "imports": -1, "exports": -1,
        "wildcards": true, "conn": -1, "leaf": -1,
    });
    if jetstream {
        for key in ["mem_storage", "disk_storage", "streams", "consumer"] {
            unlimited[key] = json!(-1);
        }
    }
    jwt(
        operator,
        &account.public_key(),
        name,
        json!({"limits": unlimited, "type": "account", "version": 2}),
    )
}

/// A `.creds` file's text for `user`, whose JWT `account` signed.
fn creds(account: &KeyPair, user: &KeyPair) -> String {
    let user_jwt = jwt(
        account,
        &user.public_key(),
        "protoqueue-test-user",
        json!({"pub": {}, "sub": {}, "subs": -1, "data": -1, "payload": -1,
               "type": "user", "version": 2}),
    );
    format!(
        "-----BEGIN NATS USER JWT-----\n{user_jwt}\n------END NATS USER JWT------\n\n\
         ************************* IMPORTANT *************************\n\
         NKEY Seed printed below can be used to sign and prove identity.\n\
         NKEYs are sensitive and should be treated as secrets.\n\n\
         -----BEGIN USER NKEY SEED-----\n{}\n------END USER NKEY SEED------\n\n\
         *************************************************************\n",
        seed_of(user)
    )
}

/// A server in operator mode (decentralized auth): one operator, a system account and one
/// application account, preloaded into a memory resolver. Returns the server and the account
/// key that signs users.
async fn operator_mode_server() -> (NatsServer, KeyPair) {
    let operator = KeyPair::new_operator();
    let system = KeyPair::new_account();
    let account = KeyPair::new_account();
    let operator_jwt = jwt(
        &operator,
        &operator.public_key(),
        "protoqueue-test-operator",
        json!({"type": "operator", "version": 2}),
    );
    let config = format!(
        "operator: {operator_jwt}\nsystem_account: {system}\nresolver: MEMORY\n\
         resolver_preload: {{\n  {system}: {system_jwt}\n  {account}: {account_jwt}\n}}\n",
        system = system.public_key(),
        system_jwt = account_jwt(&operator, &system, "SYS", false),
        account = account.public_key(),
        account_jwt = account_jwt(&operator, &account, "APP", true),
    );
    (NatsServer::start_secured(&config).await, account)
}

fn write_file(dir: &Path, name: &str, text: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).expect("write a test file");
    path
}

// ---------------------------------------------------------------------------------------------
// Credentials

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn user_and_password_work_from_config_and_url_and_wrong_ones_are_refused_at_once() {
    let server =
        NatsServer::start_secured(r#"authorization { user: ada, password: "pa/ss@word" }"#).await;
    let url = server.url();
    let in_url = format!("nats://ada:pa%2Fss%40word@127.0.0.1:{}", server.port());

    assert_auth_works(user_password("ada", "pa/ss@word"), &url).await;
    assert_auth_works(Auth::None, &in_url).await;

    for wrong in [
        user_password("ada", "nope"),
        user_password("eve", "pa/ss@word"),
    ] {
        assert_auth_refused(wrong, &url).await;
    }
    let bad_url = format!("nats://ada:nope@127.0.0.1:{}", server.port());
    assert_auth_refused(Auth::None, &bad_url).await;
    let err = assert_auth_refused(Auth::None, &url).await;
    assert!(err.to_string().contains("requires credentials"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_works_from_config_and_url_and_a_wrong_one_is_refused() {
    let server = NatsServer::start_secured(r#"authorization { token: "t0ken-of-ada" }"#).await;
    let token = |t: &str| Auth::Token(Secret::new(t));

    assert_auth_works(token("t0ken-of-ada"), &server.url()).await;
    let in_url = format!("nats://t0ken-of-ada@127.0.0.1:{}", server.port());
    assert_auth_works(Auth::None, &in_url).await;

    assert_auth_refused(token("wrong"), &server.url()).await;
    assert_auth_refused(Auth::None, &server.url()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_nkey_seed_works_and_an_unknown_one_is_refused() {
    let user = KeyPair::new_user();
    let server = NatsServer::start_secured(&format!(
        "authorization {{ users: [ {{ nkey: {} }} ] }}",
        user.public_key()
    ))
    .await;

    let nkey = |key: &KeyPair| Auth::NKey(Secret::new(seed_of(key)));
    assert_auth_works(nkey(&user), &server.url()).await;
    let stranger = KeyPair::new_user();
    assert_auth_refused(nkey(&stranger), &server.url()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_creds_file_works_in_operator_mode_and_a_foreign_one_is_refused() {
    let (server, account) = operator_mode_server().await;
    let dir = tempfile::tempdir().expect("temporary folder");

    let good = write_file(
        dir.path(),
        "good.creds",
        &creds(&account, &KeyPair::new_user()),
    );
    assert_auth_works(Auth::CredsFile(good), &server.url()).await;

    // Signed by an account the server does not know.
    let foreign = creds(&KeyPair::new_account(), &KeyPair::new_user());
    let foreign = write_file(dir.path(), "foreign.creds", &foreign);
    assert_auth_refused(Auth::CredsFile(foreign), &server.url()).await;
    assert_auth_refused(Auth::None, &server.url()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mistakes_found_at_connect_are_invalid_config_and_open_no_connection() {
    let pki = Pki::new();
    let dir = tempfile::tempdir().expect("temporary folder");
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind a listener");
    listener
        .set_nonblocking(true)
        .expect("non-blocking listener");
    let port = listener.local_addr().expect("address").port();
    let url = format!("nats://127.0.0.1:{port}");

    let not_pem = write_file(dir.path(), "not.pem", "hello");
    let not_creds = write_file(
        dir.path(),
        "not.creds",
        "-----BEGIN NATS USER JWT-----\nx\n",
    );
    let missing = dir.path().join("missing.pem");
    let tls = |ca: Option<&Path>, cert: Option<(&Path, &Path)>| {
        Some(Tls {
            ca_file: ca.map(Path::to_path_buf),
            client_cert: cert.map(|(c, k)| ClientCert {
                cert_file: c.to_path_buf(),
                key_file: k.to_path_buf(),
            }),
            handshake_first: false,
        })
    };
    let (ca, client_pem, client_key) = (
        pki.path("ca.pem"),
        pki.path("client.pem"),
        pki.path("client.key"),
    );
    let token = Auth::Token(Secret::new("t"));
    let cases: Vec<(&str, Config, String)> = vec![
        (
            "creds file missing",
            config_with(Auth::CredsFile(missing.clone()), None),
            url.clone(),
        ),
        (
            "creds file malformed",
            config_with(Auth::CredsFile(not_creds), None),
            url.clone(),
        ),
        (
            "CA file missing",
            config_with(Auth::None, tls(Some(&missing), None)),
            url.clone(),
        ),
        (
            "CA file not PEM",
            config_with(Auth::None, tls(Some(&not_pem), None)),
            url.clone(),
        ),
        (
            "client certificate missing",
            config_with(Auth::None, tls(Some(&ca), Some((&missing, &client_key)))),
            url.clone(),
        ),
        (
            "key file holds no key",
            config_with(Auth::None, tls(Some(&ca), Some((&client_pem, &client_pem)))),
            url.clone(),
        ),
        (
            "credentials in the URL and in config.auth",
            config_with(token, None),
            format!("nats://ada:pw@127.0.0.1:{port}"),
        ),
        (
            "two URLs with different credentials",
            config_with(Auth::None, None),
            format!("nats://ada:pw@127.0.0.1:{port},nats://bob:pw@127.0.0.1:{port}"),
        ),
        (
            "a URL of another scheme",
            config_with(Auth::None, None),
            format!("http://127.0.0.1:{port}"),
        ),
    ];
    for (what, config, url) in cases {
        let err = open(&config, &url).await.expect_err(what);
        assert_eq!(err.code(), "ERR_PQ_INVALID_CONFIG", "{what}: {err}");
    }
    match listener.accept() {
        Err(err) if err.kind() == std::io::ErrorKind::WouldBlock => {}
        other => panic!("a connection was opened before the configuration was checked: {other:?}"),
    }
}

// ---------------------------------------------------------------------------------------------
// TLS

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_with_the_right_ca_works_and_plain_or_untrusting_clients_fail_clearly() {
    let pki = Pki::new();
    let server = NatsServer::start_secured(&pki.server_tls("")).await;

    let trusting = config_with(Auth::None, Some(pki.client_tls(Some("ca"), None)));
    assert_works(&trusting, &tls_url(&server)).await;
    // `config.tls` makes a nats:// URL talk TLS too.
    assert_works(&trusting, &server.url()).await;

    // A plain client: the server requires TLS, and the system's CAs do not know this one.
    let err = assert_refused(&config_with(Auth::None, None), &server.url(), "ERR_PQ_TLS").await;
    assert!(err.to_string().contains("requires TLS"), "{err}");
    assert!(err.to_string().contains("tls.caFile"), "{err}");
    assert_refused(
        &config_with(Auth::None, None),
        &tls_url(&server),
        "ERR_PQ_TLS",
    )
    .await;

    let untrusting = config_with(Auth::None, Some(pki.client_tls(Some("other-ca"), None)));
    let err = assert_refused(&untrusting, &tls_url(&server), "ERR_PQ_TLS").await;
    assert!(err.to_string().contains("tls.caFile"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tls_client_fails_clearly_against_a_plain_server() {
    let pki = Pki::new();
    let server = NatsServer::start().await;
    let tls_client = config_with(Auth::None, Some(pki.client_tls(Some("ca"), None)));
    let err = assert_refused(&tls_client, &server.url(), "ERR_PQ_TLS").await;
    assert!(err.to_string().contains("TLS"), "{err}");
    assert_refused(
        &config_with(Auth::None, None),
        &tls_url(&server),
        "ERR_PQ_TLS",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mutual_tls_needs_a_client_certificate_the_server_trusts() {
    let pki = Pki::new();
    let server = NatsServer::start_secured(&pki.server_tls("verify: true")).await;
    let url = tls_url(&server);

    let with_cert = config_with(Auth::None, Some(pki.client_tls(Some("ca"), Some("client"))));
    assert_works(&with_cert, &url).await;

    let without = config_with(Auth::None, Some(pki.client_tls(Some("ca"), None)));
    let err = assert_refused(&without, &url, "ERR_PQ_TLS").await;
    assert!(err.to_string().contains("tls.certFile"), "{err}");
    let rogue = config_with(
        Auth::None,
        Some(pki.client_tls(Some("ca"), Some("rogue-client"))),
    );
    assert_refused(&rogue, &url, "ERR_PQ_TLS").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_handshake_first_and_credentials_over_tls_work() {
    let pki = Pki::new();
    let server = NatsServer::start_secured(&format!(
        "{}authorization {{ user: ada, password: \"over-tls\" }}\n",
        pki.server_tls("handshake_first: true")
    ))
    .await;
    let mut tls = pki.client_tls(Some("ca"), None);
    tls.handshake_first = true;
    let config = config_with(user_password("ada", "over-tls"), Some(tls.clone()));
    assert_works(&config, &tls_url(&server)).await;
    let wrong = config_with(user_password("ada", "nope"), Some(tls));
    assert_refused(&wrong, &tls_url(&server), "ERR_PQ_AUTH").await;
}

// ---------------------------------------------------------------------------------------------
// Reconnects and logs

#[tokio::test(flavor = "current_thread")]
async fn credentials_refused_on_reconnect_are_logged_not_spun_on_and_recover() {
    let (logs, _guard) = CapturedLogs::start();
    let right = r#"authorization { user: ada, password: "first" }"#;
    let mut server = NatsServer::start_secured(right).await;
    let config = config_with(user_password("ada", "first"), None);
    let connection = open(&config, &server.url()).await.expect("connect");
    let this_server = format!("127.0.0.1:{}", server.port());
    let refusals = || -> Vec<String> {
        logs.text()
            .lines()
            .filter(|line| line.contains("refused to reconnect") && line.contains(&this_server))
            .map(str::to_owned)
            .collect()
    };

    server.set_config(r#"authorization { user: ada, password: "rotated" }"#);
    server.restart().await;
    let first = eventually("a refused reconnect in the log", SOON, || async {
        refusals().into_iter().find(|line| line.contains("WARN"))
    })
    .await;
    assert!(
        first.contains("config.auth"),
        "the warning says what to check: {first}"
    );

    // Observed for a while: retried with a delay (not in a hot loop), and warned about once.
    let counted_from = refusals().len();
    tokio::time::sleep(Duration::from_secs(3)).await;
    let window = &refusals()[counted_from..];
    assert!(
        window.len() <= 30,
        "{} refused attempts in 3 s",
        window.len()
    );
    let warnings = refusals().iter().filter(|l| l.contains("WARN")).count();
    assert_eq!(warnings, 1, "one warning per run of refusals");

    // Accepted again: the connection resumes by itself.
    server.set_config(right);
    server.restart().await;
    lifecycle::enqueue(&connection, task("{}"))
        .await
        .expect("enqueue after the credentials work again");
    connection.close().await;
}

#[tokio::test(flavor = "current_thread")]
async fn secrets_never_reach_the_logs_or_error_messages() {
    let (logs, _guard) = CapturedLogs::start();
    let password = unique("pw_secret");
    let wrong_password = unique("pw_wrong");
    let token = unique("tok_secret");
    let wrong_token = unique("tok_wrong");
    let user = KeyPair::new_user();
    let stranger = KeyPair::new_user();
    let users = NatsServer::start_secured(&format!(
        "authorization {{ users: [ {{ user: ada, password: {password:?} }}, {{ nkey: {} }} ] }}",
        user.public_key()
    ))
    .await;
    let tokens = NatsServer::start_secured(&format!("authorization {{ token: {token:?} }}")).await;
    let secrets = [
        password.clone(),
        wrong_password.clone(),
        token.clone(),
        wrong_token.clone(),
        seed_of(&user),
        seed_of(&stranger),
    ];

    // Five ways to authenticate: with the right secrets, then with wrong ones.
    let ways = |password: &str, token: &str, seed: String| {
        [
            (user_password("ada", password), users.url()),
            (
                Auth::None,
                format!("nats://ada:{password}@127.0.0.1:{}", users.port()),
            ),
            (Auth::NKey(Secret::new(seed)), users.url()),
            (Auth::Token(Secret::new(token)), tokens.url()),
            (
                Auth::None,
                format!("nats://{token}@127.0.0.1:{}", tokens.port()),
            ),
        ]
    };
    let accepted = ways(&password, &token, seed_of(&user));
    let refused = ways(&wrong_password, &wrong_token, seed_of(&stranger));
    let mut shown = Vec::new();
    for (auth, url) in accepted {
        let config = config_with(auth, None);
        shown.push(format!("{config:?}"));
        assert_works(&config, &url).await;
    }
    for (auth, url) in refused {
        let config = config_with(auth, None);
        shown.push(format!("{config:?}"));
        let err = assert_refused(&config, &url, "ERR_PQ_AUTH").await;
        shown.push(format!("{err} {err:?}"));
    }

    let logs = logs.text();
    for server in [&users, &tokens] {
        let connected = format!("connected to NATS url=nats://127.0.0.1:{}", server.port());
        assert!(
            logs.contains(&connected),
            "the test saw the logs of its connections"
        );
    }
    assert!(
        logs.contains("authorization violation"),
        "refusals were logged"
    );
    for secret in &secrets {
        assert!(!logs.contains(secret.as_str()), "a secret is in the logs");
        for text in &shown {
            assert!(!text.contains(secret.as_str()), "a secret is in {text}");
        }
    }
}

#[tokio::test(flavor = "current_thread")]
async fn a_password_with_a_comma_is_never_shown_encoded_or_not() {
    let (logs, _guard) = CapturedLogs::start();
    let password = format!("{},x@y/z:w", unique("pw_comma"));
    let server = NatsServer::start_secured(&format!(
        "authorization {{ user: ada, password: {password:?} }}"
    ))
    .await;
    let port = server.port();
    let encoded =
        percent_encoding::utf8_percent_encode(&password, percent_encoding::NON_ALPHANUMERIC);
    let config = config_with(Auth::None, None);

    // Percent-encoded, it works.
    assert_works(&config, &format!("nats://ada:{encoded}@127.0.0.1:{port}")).await;
    // Written as it is, the comma splits the URL list: refused before anything is sent.
    let mut shown = Vec::new();
    for url in [
        format!("nats://ada:{password}@127.0.0.1:{port}"),
        format!("nats://127.0.0.1:{port},nats://ada:{password}@127.0.0.1:{port}"),
    ] {
        let err = open(&config, &url)
            .await
            .expect_err("an ambiguous URL list");
        assert_eq!(err.code(), "ERR_PQ_INVALID_CONFIG", "{err}");
        shown.push(format!("{err} {err:?}"));
    }
    // Wrong, and encoded: refused by the server; the message and logs show no part of it.
    let wrong = format!("nats://ada:{encoded}nope@127.0.0.1:{port}");
    let err = assert_refused(&config, &wrong, "ERR_PQ_AUTH").await;
    shown.push(format!("{err} {err:?}"));

    let logs = logs.text();
    assert!(logs.contains("connected to NATS"), "the test saw the logs");
    let start = &password[..password.find(',').unwrap_or(password.len())];
    for text in shown.iter().chain([&logs]) {
        assert!(!text.contains(start), "a password is in {text}");
        assert!(
            !text.contains(&encoded.to_string()),
            "a password is in {text}"
        );
    }
}

// ---------------------------------------------------------------------------------------------
// Files named by settings: read off the runtime's thread, bounded in size and time

/// The limit on files settings name (README: Security).
const MAX_FILE_LEN: usize = 1 << 20;

/// A FIFO in `dir`. Until `release` is set, a thread keeps trying to open it for writing (without
/// waiting), after `after`: a reader blocked on it is then let go, so a test without the fix
/// fails on its time bounds instead of hanging.
fn fifo(dir: &Path, after: Duration, release: Arc<std::sync::atomic::AtomicBool>) -> PathBuf {
    use std::os::unix::fs::OpenOptionsExt;
    let path = dir.join("fifo");
    let made = Command::new("mkfifo")
        .arg(&path)
        .status()
        .expect("run mkfifo");
    assert!(made.success(), "mkfifo failed");
    let writer_path = path.clone();
    std::thread::spawn(move || {
        std::thread::sleep(after);
        while !release.load(std::sync::atomic::Ordering::Relaxed) {
            let opened = std::fs::OpenOptions::new()
                .write(true)
                .custom_flags(libc::O_NONBLOCK)
                .open(&writer_path);
            if opened.is_ok() {
                return; // dropped at once: the reader sees the end of the file
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    });
    path
}

/// One runtime thread, as the addon has by default: a read that blocks it stops every queue.
#[tokio::test(flavor = "current_thread")]
async fn a_fifo_as_creds_file_is_refused_within_connect_timeout_and_other_queues_carry_on() {
    let server = NatsServer::start().await;
    let dir = tempfile::tempdir().expect("temporary folder");
    let released = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let connect_timeout = Duration::from_secs(3);
    let fifo = fifo(dir.path(), connect_timeout * 2, released.clone());

    // Another queue of the process, enqueueing all along.
    let busy = connect(&test_config(), &server).await;
    let done = Arc::new(Mutex::new(Vec::<std::time::Instant>::new()));
    let producer = {
        let (busy, done) = (busy.clone(), done.clone());
        tokio::spawn(async move {
            loop {
                lifecycle::enqueue(&busy, task("{}"))
                    .await
                    .expect("enqueue");
                done.lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .push(std::time::Instant::now());
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        })
    };
    eventually("the other queue enqueues", SOON, || async {
        (!done.lock().unwrap_or_else(|e| e.into_inner()).is_empty()).then_some(())
    })
    .await;

    let cases = [
        (
            "credsFile",
            config_with(Auth::CredsFile(fifo.clone()), None),
        ),
        (
            "caFile",
            config_with(
                Auth::None,
                Some(Tls {
                    ca_file: Some(fifo.clone()),
                    ..Tls::default()
                }),
            ),
        ),
    ];
    for (what, mut config) in cases {
        config.connect_timeout = connect_timeout;
        let started = std::time::Instant::now();
        let err = open(&config, &server.url()).await.expect_err(what);
        let waited = started.elapsed();
        assert_eq!(err.code(), "ERR_PQ_INVALID_CONFIG", "{what}: {err}");
        assert!(waited < connect_timeout, "{what}: refused after {waited:?}");
        assert!(
            err.to_string().contains(&fifo.display().to_string()),
            "{err}"
        );
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    released.store(true, std::sync::atomic::Ordering::Relaxed);
    producer.abort();

    let done = done.lock().unwrap_or_else(|e| e.into_inner()).clone();
    let longest_pause = done
        .windows(2)
        .map(|pair| pair[1] - pair[0])
        .max()
        .unwrap_or_default();
    assert!(done.len() > 10, "{} enqueues", done.len());
    assert!(
        longest_pause < Duration::from_secs(1),
        "the other queue stopped for {longest_pause:?}"
    );
    busy.close().await;
}

#[tokio::test(flavor = "current_thread")]
async fn devices_and_files_over_a_mebibyte_are_refused_at_once() {
    let pki = Pki::new();
    let dir = tempfile::tempdir().expect("temporary folder");
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind a listener");
    let url = format!(
        "nats://127.0.0.1:{}",
        listener.local_addr().expect("address").port()
    );
    let zero = PathBuf::from("/dev/zero");
    let mut large_ca = std::fs::read(pki.path("ca.pem")).expect("read the CA");
    large_ca.resize(MAX_FILE_LEN + 1, b'\n');
    let large_ca_path = dir.path().join("large-ca.pem");
    std::fs::write(&large_ca_path, large_ca).expect("write");
    let tls = |ca: &Path, cert: &Path, key: &Path| {
        Some(Tls {
            ca_file: Some(ca.to_path_buf()),
            client_cert: Some(ClientCert {
                cert_file: cert.to_path_buf(),
                key_file: key.to_path_buf(),
            }),
            handshake_first: false,
        })
    };
    let (ca, cert, key) = (
        pki.path("ca.pem"),
        pki.path("client.pem"),
        pki.path("client.key"),
    );
    let cases = [
        (
            "creds",
            config_with(Auth::CredsFile(zero.clone()), None),
            "auth.credsFile",
        ),
        (
            "CA",
            config_with(Auth::None, tls(&zero, &cert, &key)),
            "tls.caFile",
        ),
        (
            "cert",
            config_with(Auth::None, tls(&ca, &zero, &key)),
            "tls.certFile",
        ),
        (
            "key",
            config_with(Auth::None, tls(&ca, &cert, &zero)),
            "tls.keyFile",
        ),
        (
            "large CA",
            config_with(Auth::None, tls(&large_ca_path, &cert, &key)),
            "tls.caFile",
        ),
    ];
    for (what, config, setting) in cases {
        let err = assert_refused(&config, &url, "ERR_PQ_INVALID_CONFIG").await;
        assert!(err.to_string().contains(setting), "{what}: {err}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_creds_file_of_a_mebibyte_works_and_one_byte_more_is_refused() {
    let (server, account) = operator_mode_server().await;
    let dir = tempfile::tempdir().expect("temporary folder");
    let creds = creds(&account, &KeyPair::new_user());
    let padded = |len: usize| {
        let mut text = creds.clone().into_bytes();
        text.resize(len, b'\n');
        text
    };
    let fits = dir.path().join("fits.creds");
    std::fs::write(&fits, padded(MAX_FILE_LEN)).expect("write");
    assert_auth_works(Auth::CredsFile(fits), &server.url()).await;

    let over = dir.path().join("over.creds");
    std::fs::write(&over, padded(MAX_FILE_LEN + 1)).expect("write");
    let err = assert_refused(
        &config_with(Auth::CredsFile(over.clone()), None),
        &server.url(),
        "ERR_PQ_INVALID_CONFIG",
    )
    .await;
    assert!(err.to_string().contains("auth.credsFile"), "{err}");
    assert!(
        err.to_string().contains(&over.display().to_string()),
        "{err}"
    );
}
