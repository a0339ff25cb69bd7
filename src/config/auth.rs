//! Credentials: the `auth` setting and [`Secret`], which keeps passwords, tokens and NKey seeds
//! out of every `Debug` output.
//!
//! Secrets are never part of an error message or a log line.

use std::{fmt, path::PathBuf};

use serde_json::Value;

use crate::{
    config::json::{invalid, kind, non_empty_string, reject_unknown_keys},
    error::Result,
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

const AUTH_KEYS: &[&str] = &["user", "pass", "token", "nkeySeed", "credsFile"];

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

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    const SEED: &str = "SUAIO3FHUX5PNV2LQIIP7TZ3N4L7TX3W53MQGEIVYFIGA635OZCKEYHFLM";

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
}
