//! Credentials and TLS: the `auth` and `tls` settings, credentials written into server URLs, how
//! they reach the client, and how the server's refusals are reported.
//!
//! Secrets (passwords, tokens, NKey seeds) are held in [`Secret`], whose `Debug` prints `***`, and
//! are never part of an error message or a log line. Credentials in URLs are taken out of the URLs
//! before the client sees them (the client would log the URLs, and ignores their user info).
//! Files (`.creds`, certificates, keys) are read at connect time, before anything is sent, so a
//! missing or malformed file is [`Error::InvalidConfig`] naming the setting and the path.

use std::{
    fmt,
    io::{self, BufReader},
    path::{Path, PathBuf},
};

use async_nats::{
    rustls::{
        self,
        pki_types::{pem::PemObject, CertificateDer, PrivateKeyDer},
    },
    ConnectErrorKind, ConnectOptions, ServerAddr,
};
use serde_json::{Map, Value};

use crate::{
    config::{invalid, kind, present, reject_unknown_keys},
    error::{Error, Result},
};

/// A password, token or NKey seed. Its `Debug` output is `***`, so printing a configuration
/// never shows it.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wraps a secret value.
    pub fn new(value: impl Into<String>) -> Self {
        Secret(value.into())
    }

    /// The secret itself, for handing it to the client.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

/// How the client proves who it is (`config.auth`, or user info in the URL).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum Auth {
    /// No credentials.
    #[default]
    None,
    /// A user name and password (`auth.user`/`auth.pass`, or `nats://user:pass@host`).
    UserPassword {
        /// The user name.
        user: String,
        /// The password.
        password: Secret,
    },
    /// A token (`auth.token`, or `nats://token@host`).
    Token(Secret),
    /// An NKey user seed (`auth.nkeySeed`, starting with `SU`): the client signs the server's
    /// challenge with it; the seed itself is never sent.
    NKey(Secret),
    /// A `.creds` file holding a user JWT and its NKey seed (`auth.credsFile`, decentralized auth).
    CredsFile(PathBuf),
}

/// TLS settings (`config.tls`). When present, the client only talks TLS.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Tls {
    /// PEM file with the CA certificate(s) to trust instead of the system's roots.
    pub ca_file: Option<PathBuf>,
    /// PEM files with the client certificate and its private key, for servers that verify
    /// clients (mutual TLS).
    pub client_cert: Option<ClientCert>,
    /// Start TLS before the server's greeting (the server needs `handshake_first`).
    pub handshake_first: bool,
}

/// A client certificate and its private key, both PEM files.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClientCert {
    /// The certificate (chain).
    pub cert_file: PathBuf,
    /// The private key.
    pub key_file: PathBuf,
}

const AUTH_KEYS: &[&str] = &["user", "pass", "token", "nkeySeed", "credsFile"];
const TLS_KEYS: &[&str] = &["caFile", "certFile", "keyFile", "handshakeFirst"];

impl Auth {
    /// Reads `config.auth`: exactly one of `user` + `pass`, `token`, `nkeySeed`, `credsFile`.
    /// Messages name the setting, never its value.
    pub fn from_json(value: &Value) -> Result<Self> {
        let object = value.as_object().ok_or_else(|| {
            invalid(format!(
                "config.auth must be an object, got {}",
                kind(value)
            ))
        })?;
        reject_unknown_keys("config.auth", object, AUTH_KEYS)?;
        let mut given = Vec::new();
        for key in AUTH_KEYS {
            if let Some(value) = non_empty_string(object, "auth", key)? {
                given.push((*key, value));
            }
        }
        let auth = match given.as_slice() {
            [("user", user), ("pass", pass)] => Auth::UserPassword {
                user: user.clone(),
                password: Secret::new(pass.as_str()),
            },
            [("token", token)] => Auth::Token(Secret::new(token.as_str())),
            [("nkeySeed", seed)] => {
                validate_user_seed(seed)?;
                Auth::NKey(Secret::new(seed.as_str()))
            }
            [("credsFile", path)] => Auth::CredsFile(PathBuf::from(path)),
            [] => {
                return Err(invalid(
                    "config.auth has no credentials; set user and pass, token, nkeySeed or \
                     credsFile (or leave auth out)"
                        .into(),
                ))
            }
            [("user", _)] => return Err(invalid("config.auth.user needs auth.pass".into())),
            [("pass", _)] => return Err(invalid("config.auth.pass needs auth.user".into())),
            several => {
                let keys: Vec<&str> = several.iter().map(|(key, _)| *key).collect();
                return Err(invalid(format!(
                    "config.auth sets {}; choose one way to authenticate: user and pass, token, \
                     nkeySeed or credsFile",
                    keys.join(" and ")
                )));
            }
        };
        Ok(auth)
    }

    /// Whether any credentials are set.
    pub fn is_some(&self) -> bool {
        *self != Auth::None
    }

    /// Hands the credentials to the client. A `.creds` file is read now.
    fn apply(&self, options: ConnectOptions) -> Result<ConnectOptions> {
        Ok(match self {
            Auth::None => options,
            Auth::UserPassword { user, password } => {
                options.user_and_password(user.clone(), password.expose().to_owned())
            }
            Auth::Token(token) => options.token(token.expose().to_owned()),
            Auth::NKey(seed) => options.nkey(seed.expose().to_owned()),
            Auth::CredsFile(path) => {
                let setting = "auth.credsFile";
                let creds = std::fs::read_to_string(path)
                    .map_err(|err| unusable(setting, path, &io_reason(&err)))?;
                options
                    .credentials(&creds)
                    .map_err(|err| unusable(setting, path, &err.to_string()))?
            }
        })
    }
}

impl Tls {
    /// Reads `config.tls`: `true` (TLS with the system's CAs), `false` (as if absent), or an
    /// object with `caFile`, `certFile` + `keyFile` and `handshakeFirst`.
    pub fn from_json(value: &Value) -> Result<Option<Self>> {
        let object = match value {
            Value::Bool(true) => return Ok(Some(Tls::default())),
            Value::Bool(false) => return Ok(None),
            Value::Object(object) => object,
            other => {
                return Err(invalid(format!(
                    "config.tls must be true or an object like {{ caFile, certFile, keyFile }}, \
                     got {}",
                    kind(other)
                )))
            }
        };
        reject_unknown_keys("config.tls", object, TLS_KEYS)?;
        let path = |key: &str| -> Result<Option<PathBuf>> {
            Ok(non_empty_string(object, "tls", key)?.map(PathBuf::from))
        };
        let client_cert = match (path("certFile")?, path("keyFile")?) {
            (Some(cert_file), Some(key_file)) => Some(ClientCert {
                cert_file,
                key_file,
            }),
            (None, None) => None,
            (Some(_), None) => return Err(invalid("config.tls.certFile needs tls.keyFile".into())),
            (None, Some(_)) => return Err(invalid("config.tls.keyFile needs tls.certFile".into())),
        };
        let handshake_first = match present(object, "handshakeFirst") {
            None => false,
            Some(Value::Bool(b)) => *b,
            Some(other) => {
                return Err(invalid(format!(
                    "config.tls.handshakeFirst must be a boolean, got {}",
                    kind(other)
                )))
            }
        };
        Ok(Some(Tls {
            ca_file: path("caFile")?,
            client_cert,
            handshake_first,
        }))
    }

    /// Checks the files and hands them to the client (which reads them again on every connect).
    fn apply(&self, mut options: ConnectOptions) -> Result<ConnectOptions> {
        options = options.require_tls(true);
        if let Some(ca_file) = &self.ca_file {
            check_certificates("tls.caFile", ca_file)?;
            options = options.add_root_certificates(ca_file.clone());
        }
        if let Some(ClientCert {
            cert_file,
            key_file,
        }) = &self.client_cert
        {
            check_certificates("tls.certFile", cert_file)?;
            check_private_key(key_file)?;
            options = options.add_client_certificate(cert_file.clone(), key_file.clone());
        }
        if self.handshake_first {
            options = options.tls_first();
        }
        Ok(options)
    }
}

/// Where and how to connect: the server addresses without user info, and the credentials and
/// TLS settings that apply to all of them.
#[derive(Debug)]
pub struct Target {
    /// The servers, without credentials.
    pub servers: Vec<ServerAddr>,
    /// The URL list as it may be shown (credentials masked).
    pub shown: String,
    /// The credentials: `config.auth`, else the ones from the URLs.
    pub auth: Auth,
    /// The TLS settings (`config.tls`).
    pub tls: Option<Tls>,
    /// Whether TLS was asked for (`config.tls` or a `tls://` URL).
    pub tls_requested: bool,
}

impl Target {
    /// Parses a comma-separated URL list, takes credentials out of the URLs and checks they do
    /// not contradict `config.auth` or each other.
    pub fn new(urls: &str, auth: &Auth, tls: Option<&Tls>) -> Result<Self> {
        crate::config::validate_urls(urls)?;
        let mut servers = Vec::new();
        let mut from_urls: Option<Auth> = None;
        for url in urls.split(',').map(str::trim) {
            let (server, credentials) = split_credentials(url)?;
            servers.push(server);
            let Some(credentials) = credentials else {
                continue;
            };
            match &from_urls {
                Some(seen) if *seen != credentials => {
                    return Err(invalid(format!(
                        "the URLs {} carry different credentials; give one set, in every URL or \
                         in config.auth",
                        redact(urls)
                    )))
                }
                _ => from_urls = Some(credentials),
            }
        }
        let auth = match (auth.is_some(), from_urls) {
            (true, Some(_)) => {
                return Err(invalid(format!(
                    "credentials are given both in the URL {} and in config.auth; give them once",
                    redact(urls)
                )))
            }
            (false, Some(from_urls)) => from_urls,
            _ => auth.clone(),
        };
        let tls_requested = tls.is_some() || servers.iter().any(ServerAddr::tls_required);
        Ok(Target {
            servers,
            shown: redact(urls),
            auth,
            tls: tls.cloned(),
            tls_requested,
        })
    }

    /// Adds the credentials and TLS settings to `options`, reading the files they name.
    pub fn apply(&self, options: ConnectOptions) -> Result<ConnectOptions> {
        let options = self.auth.apply(options)?;
        match &self.tls {
            Some(tls) => tls.apply(options),
            None => Ok(options),
        }
    }

    /// Turns the client's connect error into [`Error::Auth`], [`Error::Tls`] or
    /// [`Error::Connect`], with a reason that says what to change.
    pub fn connect_error(&self, err: &async_nats::ConnectError) -> Error {
        let url = self.shown.clone();
        match err.kind() {
            ConnectErrorKind::AuthorizationViolation | ConnectErrorKind::Authentication => {
                let hint = if self.auth.is_some() {
                    "the server rejected the credentials; check config.auth (or the URL's user info)"
                } else {
                    "the server requires credentials; set config.auth (user and pass, token, \
                     nkeySeed or credsFile) or put them in the URL"
                };
                Error::Auth {
                    url,
                    reason: format!("{}; {hint}", err.kind()),
                }
            }
            kind => match find_tls_error(err) {
                Some(tls) => Error::Tls {
                    url,
                    reason: self.tls_reason(tls),
                },
                None if kind == ConnectErrorKind::Tls => Error::Tls {
                    url,
                    reason: err.to_string(),
                },
                None => Error::Connect {
                    url,
                    reason: err.to_string(),
                },
            },
        }
    }

    fn tls_reason(&self, err: &rustls::Error) -> String {
        use rustls::{AlertDescription as Alert, CertificateError as Cert, Error as E};
        let hint = match err {
            E::InvalidCertificate(Cert::UnknownIssuer | Cert::BadSignature) => {
                "the server's certificate is not signed by a CA this client trusts; set tls.caFile \
                 to the CA that signed it"
            }
            E::InvalidCertificate(Cert::NotValidForName | Cert::NotValidForNameContext { .. }) => {
                "the server's certificate does not name the host in the URL; connect with a host \
                 name the certificate lists"
            }
            E::InvalidCertificate(Cert::Expired | Cert::ExpiredContext { .. }) => {
                "the server's certificate has expired"
            }
            E::AlertReceived(
                Alert::CertificateRequired
                | Alert::BadCertificate
                | Alert::UnknownCA
                | Alert::CertificateUnknown
                | Alert::AccessDenied,
            ) => {
                "the server did not accept a client certificate; set tls.certFile and tls.keyFile \
                 to a certificate signed by a CA the server trusts"
            }
            E::InvalidMessage(_) | E::InappropriateMessage { .. } => {
                "the server did not answer in TLS; is TLS enabled on it? (for a server without \
                 TLS, use a nats:// URL and no tls option)"
            }
            _ => "the TLS handshake failed",
        };
        let required = if self.tls_requested {
            ""
        } else {
            "the server requires TLS, and "
        };
        format!("{required}{hint} ({err})")
    }
}

/// One server address without its user info, and the credentials the user info held.
fn split_credentials(url: &str) -> Result<(ServerAddr, Option<Auth>)> {
    let server = url.parse::<ServerAddr>().map_err(|err| {
        invalid(format!(
            "{:?} is not a NATS server URL (e.g. nats://localhost:4222): {err}",
            redact(url)
        ))
    })?;
    let Some(user) = server.username().map(decode) else {
        return Ok((server, None));
    };
    let credentials = match server.password().map(decode) {
        Some(password) => Auth::UserPassword {
            user,
            password: Secret::new(password),
        },
        None => Auth::Token(Secret::new(user)),
    };
    let mut bare = server.into_inner();
    // Both only fail for URLs without a host, which `ServerAddr` does not accept.
    let _ = bare.set_username("");
    let _ = bare.set_password(None);
    let server =
        ServerAddr::from_url(bare).map_err(|err| invalid(format!("{:?}: {err}", redact(url))))?;
    Ok((server, Some(credentials)))
}

/// Percent-decodes URL user info (`p%40ss` is `p@ss`).
fn decode(text: &str) -> String {
    percent_encoding::percent_decode_str(text)
        .decode_utf8_lossy()
        .into_owned()
}

/// A URL list with user info masked, for messages and logs.
pub fn redact(urls: &str) -> String {
    urls.split(',')
        .map(|url| match (url.find("://"), url.rfind('@')) {
            (Some(scheme), Some(at)) if at > scheme => {
                format!("{}***{}", &url[..scheme + 3], &url[at..])
            }
            (None, Some(at)) => format!("***{}", &url[at..]),
            _ => url.to_owned(),
        })
        .collect::<Vec<_>>()
        .join(",")
}

/// NKey user seeds decode as keys and start with `SU`. The message never shows the value.
fn validate_user_seed(seed: &str) -> Result<()> {
    let hint = "config.auth.nkeySeed is not an NKey user seed (a seed starts with \"SU\"; the \
                public key, starting with \"U\", goes into the server's configuration instead)";
    if !seed.starts_with("SU") || nkeys::KeyPair::from_seed(seed).is_err() {
        return Err(invalid(hint.into()));
    }
    Ok(())
}

/// A value that is absent, or a non-empty string.
fn non_empty_string(object: &Map<String, Value>, what: &str, key: &str) -> Result<Option<String>> {
    match present(object, key) {
        None => Ok(None),
        Some(Value::String(s)) if !s.is_empty() => Ok(Some(s.clone())),
        Some(Value::String(_)) => Err(invalid(format!("config.{what}.{key} must not be empty"))),
        Some(other) => Err(invalid(format!(
            "config.{what}.{key} must be a string, got {}",
            kind(other)
        ))),
    }
}

/// Checks that `path` is a readable PEM file with at least one certificate.
fn check_certificates(setting: &str, path: &Path) -> Result<()> {
    let file = open(setting, path)?;
    let certificates = CertificateDer::pem_reader_iter(BufReader::new(file))
        .collect::<std::result::Result<Vec<_>, _>>()
        .map_err(|err| unusable(setting, path, &err.to_string()))?;
    if certificates.is_empty() {
        return Err(unusable(setting, path, "it holds no PEM certificate"));
    }
    Ok(())
}

/// Checks that `path` is a readable PEM file with a private key.
fn check_private_key(path: &Path) -> Result<()> {
    let setting = "tls.keyFile";
    let file = open(setting, path)?;
    PrivateKeyDer::from_pem_reader(BufReader::new(file))
        .map(drop)
        .map_err(|err| unusable(setting, path, &format!("no PEM private key ({err})")))
}

fn open(setting: &str, path: &Path) -> Result<std::fs::File> {
    std::fs::File::open(path).map_err(|err| unusable(setting, path, &io_reason(&err)))
}

fn unusable(setting: &str, path: &Path, reason: &str) -> Error {
    invalid(format!(
        "config.{setting} {} cannot be used: {reason}",
        path.display()
    ))
}

/// An I/O error's message without the path some of them repeat.
fn io_reason(err: &io::Error) -> String {
    match err.kind() {
        io::ErrorKind::NotFound => "no such file".into(),
        io::ErrorKind::PermissionDenied => "permission denied".into(),
        _ => err.to_string(),
    }
}

/// The rustls error behind a connect error, if TLS is what failed.
fn find_tls_error(err: &async_nats::ConnectError) -> Option<&rustls::Error> {
    let mut next: Option<&(dyn std::error::Error + 'static)> = std::error::Error::source(err);
    while let Some(current) = next {
        if let Some(tls) = current.downcast_ref::<rustls::Error>() {
            return Some(tls);
        }
        // `io::Error::source` skips the error it wraps: look inside it directly.
        next = match current.downcast_ref::<io::Error>() {
            Some(io) => io
                .get_ref()
                .map(|inner| inner as &(dyn std::error::Error + 'static)),
            None => current.source(),
        };
    }
    None
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    const SEED: &str = "SUAIO3FHUX5PNV2LQIIP7TZ3N4L7TX3W53MQGEIVYFIGA635OZCKEYHFLM";

    #[test]
    fn credentials_are_redacted_from_urls() {
        assert_eq!(
            redact("nats://user:secret@host:4222,nats://h2:4222"),
            "nats://***@host:4222,nats://h2:4222"
        );
        assert_eq!(redact("nats://token@host"), "nats://***@host");
        assert_eq!(redact("token@host"), "***@host");
    }

    #[test]
    fn debug_output_hides_secrets() {
        let auths = [
            Auth::UserPassword {
                user: "ada".into(),
                password: Secret::new("hunter2"),
            },
            Auth::Token(Secret::new("hunter2")),
            Auth::NKey(Secret::new("hunter2")),
        ];
        for auth in auths {
            let shown = format!("{auth:?} {auth:#?}");
            assert!(!shown.contains("hunter2"), "{shown}");
            assert!(shown.contains("***"), "{shown}");
        }
    }

    #[test]
    fn auth_is_read() {
        let read = |v: Value| Auth::from_json(&v).expect("valid auth");
        assert_eq!(
            read(json!({"user": "ada", "pass": "p"})),
            Auth::UserPassword {
                user: "ada".into(),
                password: Secret::new("p")
            }
        );
        assert_eq!(read(json!({"token": "t"})), Auth::Token(Secret::new("t")));
        assert_eq!(
            read(json!({"nkeySeed": SEED})),
            Auth::NKey(Secret::new(SEED))
        );
        assert_eq!(
            read(json!({"credsFile": "/a.creds", "token": null})),
            Auth::CredsFile("/a.creds".into())
        );
    }

    #[test]
    fn auth_mistakes_are_invalid_config_and_never_echo_secrets() {
        let bad = [
            json!("user:pass"),
            json!({}),
            json!({"user": "ada"}),
            json!({"pass": "hunter2"}),
            json!({"user": "ada", "pass": ""}),
            json!({"user": "", "pass": "hunter2"}),
            json!({"user": 1, "pass": "hunter2"}),
            json!({"token": 42}),
            json!({"token": "hunter2", "user": "ada", "pass": "hunter2"}),
            json!({"token": "hunter2", "nkeySeed": SEED}),
            json!({"nkeySeed": "hunter2"}),
            json!({"nkeySeed": "UDXU4RCSJNZOIQHZNWXHXORDPRTGNJAHAHFRGZNEEJCPQTT2M7NLCNF4"}),
            json!({"nkeySeed": SEED.replace("SU", "SA")}),
            json!({"credsFile": ""}),
            json!({"credsFile": ["a"]}),
            json!({"password": "hunter2"}),
        ];
        for value in bad {
            let err = Auth::from_json(&value).expect_err(&format!("accepted {value}"));
            assert_eq!(err.code(), "ERR_PQ_INVALID_CONFIG");
            let message = err.to_string();
            assert!(
                !message.contains("hunter2") && !message.contains(&SEED[2..]),
                "{message}"
            );
        }
    }

    #[test]
    fn tls_is_read() {
        assert_eq!(Tls::from_json(&json!(false)).expect("valid"), None);
        assert_eq!(
            Tls::from_json(&json!(true)).expect("valid"),
            Some(Tls::default())
        );
        assert_eq!(
            Tls::from_json(
                &json!({"caFile": "/ca.pem", "certFile": "/c.pem", "keyFile": "/k.pem",
                                   "handshakeFirst": true})
            )
            .expect("valid"),
            Some(Tls {
                ca_file: Some("/ca.pem".into()),
                client_cert: Some(ClientCert {
                    cert_file: "/c.pem".into(),
                    key_file: "/k.pem".into()
                }),
                handshake_first: true,
            })
        );
        let bad = [
            json!("yes"),
            json!(1),
            json!({"caFile": 1}),
            json!({"caFile": ""}),
            json!({"certFile": "/c.pem"}),
            json!({"keyFile": "/k.pem"}),
            json!({"handshakeFirst": "true"}),
            json!({"ca": "/ca.pem"}),
        ];
        for value in bad {
            let err = Tls::from_json(&value).expect_err(&format!("accepted {value}"));
            assert_eq!(err.code(), "ERR_PQ_INVALID_CONFIG");
        }
    }

    #[test]
    fn url_credentials_are_taken_out_of_the_urls() {
        let target = Target::new(
            "nats://ada:p%40ss@127.0.0.1:4222, nats://ada:p%40ss@127.0.0.1:4223",
            &Auth::None,
            None,
        )
        .expect("valid");
        assert_eq!(
            target.auth,
            Auth::UserPassword {
                user: "ada".into(),
                password: Secret::new("p@ss")
            }
        );
        for server in &target.servers {
            assert_eq!(server.username(), None);
            assert_eq!(server.password(), None);
            assert!(!server.as_url_str().contains("p%40ss"));
        }
        assert!(!target.shown.contains("p%40ss"));

        let token = Target::new("tls://s3cr3t@localhost", &Auth::None, None).expect("valid");
        assert_eq!(token.auth, Auth::Token(Secret::new("s3cr3t")));
        assert!(token.tls_requested);

        let plain = Target::new("nats://localhost", &Auth::None, None).expect("valid");
        assert_eq!(plain.auth, Auth::None);
        assert!(!plain.tls_requested);
    }

    #[test]
    fn contradicting_url_credentials_are_invalid_config() {
        let token = Auth::Token(Secret::new("t"));
        let cases = [
            ("nats://a:hunter2@h1,nats://b:hunter2@h2", &Auth::None),
            ("nats://a:hunter2@h1", &token),
            ("nats://a:hunter2@h1:99999", &Auth::None),
        ];
        for (urls, auth) in cases {
            let err = Target::new(urls, auth, None).expect_err(urls);
            assert_eq!(err.code(), "ERR_PQ_INVALID_CONFIG");
            assert!(!err.to_string().contains("hunter2"), "{err}");
        }
    }
}
