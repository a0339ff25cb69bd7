//! TLS: the `tls` setting (CA file, client certificate and key, handshake first).

use std::path::PathBuf;

use serde_json::Value;

use crate::{
    config::json::{invalid, kind, non_empty_string, present, reject_unknown_keys},
    error::Result,
};

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

const TLS_KEYS: &[&str] = &["caFile", "certFile", "keyFile", "handshakeFirst"];

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
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

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
}
