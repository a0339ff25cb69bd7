//! Credentials and TLS applied to the client: where to connect (URLs without user info, the
//! credentials to use), the files the settings name, and how the server's refusals are reported.
//!
//! Credentials in URLs are taken out of the URLs before the client sees them (the client would log
//! the URLs, and ignores their user info). Files (`.creds`, certificates, keys) are read at connect
//! time, before anything is sent, as [`files`] reads them (off the runtime's threads, bounded in
//! size and time), so a missing, malformed or unreadable file is [`Error::InvalidConfig`] naming
//! the setting and the path.

use std::{io, path::Path};

use async_nats::{
    rustls::{
        self,
        pki_types::{pem::PemObject, CertificateDer, PrivateKeyDer},
    },
    ConnectErrorKind, ConnectOptions, ServerAddr,
};

use crate::{
    config::{
        auth::Auth,
        json::invalid,
        tls::{ClientCert, Tls},
        urls::{parse_list, redact},
    },
    error::{Error, Result},
    nats::files::{self, unusable, Deadline},
};

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
        let mut servers = Vec::new();
        let mut from_urls: Option<Auth> = None;
        for (server, credentials) in parse_list(urls)? {
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

    /// Adds the credentials and TLS settings to `options`, reading the files they name by
    /// `deadline` (see [`files`]).
    pub async fn apply(
        &self,
        options: ConnectOptions,
        deadline: Deadline,
    ) -> Result<ConnectOptions> {
        let options = apply_auth(&self.auth, options, deadline).await?;
        match &self.tls {
            Some(tls) => apply_tls(tls, options, deadline).await,
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

/// Hands the credentials to the client. A `.creds` file is read now (see [`files`]).
async fn apply_auth(
    auth: &Auth,
    options: ConnectOptions,
    deadline: Deadline,
) -> Result<ConnectOptions> {
    Ok(match auth {
        Auth::None => options,
        Auth::UserPassword { user, password } => {
            options.user_and_password(user.clone(), password.expose().to_owned())
        }
        Auth::Token(token) => options.token(token.expose().to_owned()),
        Auth::NKey(seed) => options.nkey(seed.expose().to_owned()),
        Auth::CredsFile(path) => {
            let setting = "auth.credsFile";
            let creds = String::from_utf8(files::read(setting, path, deadline).await?)
                .map_err(|_| unusable(setting, path, "it is not UTF-8 text"))?;
            options
                .credentials(&creds)
                .map_err(|err| unusable(setting, path, &err.to_string()))?
        }
    })
}

/// Checks the files (see [`files`]) and hands their paths to the client, which reads them again
/// off the runtime's threads on every connect and reconnect, so renewed certificates are used.
async fn apply_tls(
    tls: &Tls,
    mut options: ConnectOptions,
    deadline: Deadline,
) -> Result<ConnectOptions> {
    options = options.require_tls(true);
    if let Some(ca_file) = &tls.ca_file {
        check_certificates("tls.caFile", ca_file, deadline).await?;
        options = options.add_root_certificates(ca_file.clone());
    }
    if let Some(ClientCert {
        cert_file,
        key_file,
    }) = &tls.client_cert
    {
        check_certificates("tls.certFile", cert_file, deadline).await?;
        check_private_key(key_file, deadline).await?;
        options = options.add_client_certificate(cert_file.clone(), key_file.clone());
    }
    if tls.handshake_first {
        options = options.tls_first();
    }
    Ok(options)
}

/// Checks that `path` is a readable PEM file with at least one certificate.
async fn check_certificates(setting: &str, path: &Path, deadline: Deadline) -> Result<()> {
    let pem = files::read(setting, path, deadline).await?;
    let certificates = CertificateDer::pem_slice_iter(&pem)
        .collect::<std::result::Result<Vec<_>, _>>()
        .map_err(|err| unusable(setting, path, &err.to_string()))?;
    if certificates.is_empty() {
        return Err(unusable(setting, path, "it holds no PEM certificate"));
    }
    Ok(())
}

/// Checks that `path` is a readable PEM file with a private key.
async fn check_private_key(path: &Path, deadline: Deadline) -> Result<()> {
    let setting = "tls.keyFile";
    let pem = files::read(setting, path, deadline).await?;
    PrivateKeyDer::from_pem_slice(&pem)
        .map(drop)
        .map_err(|err| unusable(setting, path, &format!("no PEM private key ({err})")))
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
    use super::*;
    use crate::config::auth::Secret;

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
