//! Server URLs: checking a comma-separated list, taking credentials out of a URL, and masking
//! credentials wherever a URL is shown.

use async_nats::ServerAddr;

use crate::{
    config::{
        auth::{Auth, Secret},
        json::invalid,
    },
    error::Result,
};

/// Checks a comma-separated list of server URLs. Messages show the whole list, redacted.
pub fn validate_urls(urls: &str) -> Result<()> {
    parse_list(urls).map(drop)
}

/// Parses a comma-separated list of server URLs into the servers without user info, each with
/// the credentials its user info held. Messages show the whole list, redacted.
///
/// An entry without `@` before one with `@` is refused: it may be the start of a password holding
/// an unencoded `,` (`nats://alice:hunter,2@host`), and it would reach the client as a host.
pub fn parse_list(urls: &str) -> Result<Vec<(ServerAddr, Option<Auth>)>> {
    if urls.trim().is_empty() {
        return Err(invalid("the NATS URL is empty".into()));
    }
    let entries: Vec<&str> = urls.split(',').map(str::trim).collect();
    if entries.iter().any(|url| url.is_empty()) {
        return Err(invalid(format!(
            "the NATS URL list {:?} has an empty entry",
            redact(urls)
        )));
    }
    if let Some(last) = entries.iter().rposition(|url| url.contains('@')) {
        if entries[..last].iter().any(|url| !url.contains('@')) {
            return Err(invalid(format!(
                "the NATS URL list {:?} has a URL without credentials before one with \
                 credentials, as a password with an unencoded ',' would: percent-encode ',' as \
                 %2C, put the credentials in every URL, or use config.auth",
                redact(urls)
            )));
        }
    }
    entries
        .into_iter()
        .map(|url| split_credentials(url, urls))
        .collect()
}

/// One entry of the list `urls`, parsed. An error shows the whole list redacted, never the entry
/// alone: a comma inside a password splits it, and the entry may be part of the password.
///
/// A path (except on WebSocket URLs), a query or a fragment is refused: NATS URLs have none, and
/// an unencoded `/`, `?` or `#` in a password would otherwise turn the start of the password into
/// the host, which the client connects to and logs.
fn parse(url: &str, urls: &str) -> Result<ServerAddr> {
    let server = url
        .parse::<ServerAddr>()
        .map_err(|err| not_a_url(urls, &err.to_string()))?;
    let parsed = server.clone().into_inner();
    let websocket = matches!(parsed.scheme(), "ws" | "wss");
    let path = parsed.path();
    if parsed.query().is_some()
        || parsed.fragment().is_some()
        || path.contains('@')
        || (!websocket && !matches!(path, "" | "/"))
    {
        return Err(not_a_url(
            urls,
            "a NATS URL has no path, query or fragment (a '/', '?' or '#' in user info must be \
             percent-encoded)",
        ));
    }
    Ok(server)
}

fn not_a_url(urls: &str, reason: &str) -> crate::error::Error {
    // The client's "invalid scheme" message repeats the scheme, which may be part of a secret.
    let reason = if reason.contains("scheme") {
        "the scheme must be nats://, tls://, ws:// or wss://"
    } else {
        reason
    };
    invalid(format!(
        "{:?} is not a list of NATS server URLs (e.g. nats://localhost:4222, comma-separated; \
         percent-encode ',', '@', ':', '/', '?' and '#' in user info): {reason}",
        redact(urls)
    ))
}

/// One server address of the list `urls` without its user info, and the credentials the user
/// info held.
fn split_credentials(url: &str, urls: &str) -> Result<(ServerAddr, Option<Auth>)> {
    let server = parse(url, urls)?;
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
    let server = ServerAddr::from_url(bare).map_err(|err| not_a_url(urls, &err.to_string()))?;
    Ok((server, Some(credentials)))
}

/// Percent-decodes URL user info (`p%40ss` is `p@ss`).
fn decode(text: &str) -> String {
    percent_encoding::percent_decode_str(text)
        .decode_utf8_lossy()
        .into_owned()
}

/// A URL list with user info masked, for messages and logs: `nats://***@host:4222`.
///
/// Secrets may hold any character, and the list is split on commas, so no entry is redacted on
/// its own: everything from the first user info to the last `@` of the whole text is masked (a
/// password may hold `,`, `@`, `/` or `://`). Only the scheme of the first URL (when it is one the
/// client knows) and what follows the last `@` are shown; a list with credentials in several URLs
/// shows only its last host. Text without `@` holds no user info and is shown as it is.
pub fn redact(urls: &str) -> String {
    let Some(last_at) = urls.rfind('@') else {
        return urls.to_owned();
    };
    let trimmed = urls.trim_start();
    let leading = urls.len() - trimmed.len();
    let scheme = SCHEMES
        .iter()
        .find(|scheme| {
            trimmed
                .get(..scheme.len())
                .is_some_and(|start| start.eq_ignore_ascii_case(scheme))
        })
        .map_or(0, |scheme| scheme.len());
    let shown_until = (leading + scheme).min(last_at);
    format!("{}***{}", &urls[..shown_until], &urls[last_at..])
}

/// The schemes [`ServerAddr`] accepts, as they start a URL.
const SCHEMES: [&str; 4] = ["nats://", "tls://", "ws://", "wss://"];

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn credentials_are_redacted_from_urls() {
        let cases = [
            (
                "nats://user:secret@host:4222,nats://h2:4222",
                "nats://***@host:4222,nats://h2:4222",
            ),
            ("nats://token@host", "nats://***@host"),
            ("token@host", "***@host"),
            ("nats://alice:hunter,2@host", "nats://***@host"),
            ("nats://alice:hun@ter/2@host:1", "nats://***@host:1"),
            ("nats://a:p@h1,nats://a:p@h2", "nats://***@h2"),
            ("nats://h1, nats://a:p@h2", "nats://***@h2"),
            (" TLS://a:p@h", " TLS://***@h"),
            ("a:p://x@h", "***@h"),
            ("nats://a:p%40ss@h", "nats://***@h"),
            ("nats://alice:hunter2@", "nats://***@"),
            ("nats://host:4222", "nats://host:4222"),
            ("", ""),
            ("@", "***@"),
        ];
        for (url, shown) in cases {
            assert_eq!(redact(url), shown, "{url}");
        }
    }

    #[test]
    fn a_comma_in_a_password_does_not_defeat_masking() {
        for urls in ["nats://alice:hunter,2@127.0.0.1:1", "alice:x,hunter@h"] {
            let err = validate_urls(urls).err().map(|err| err.to_string());
            let err = err.unwrap_or_default();
            assert!(!err.contains("hunter"), "{err}");
        }
        for urls in ["nats://alice:4222,hunter@h", "nats://h1,nats://a:hunter@h2"] {
            let err = parse_list(urls).expect_err(urls);
            assert_eq!(err.code(), "ERR_PQ_INVALID_CONFIG");
            assert!(!err.to_string().contains("hunter"), "{err}");
        }
        let err = split_credentials("nats://alice:hunter", "nats://alice:hunter,2@h")
            .expect_err("an invalid port");
        assert!(!err.to_string().contains("hunter"), "{err}");
    }

    /// Printable text with the characters that split or end URL parts.
    fn password() -> impl Strategy<Value = String> {
        "[ -~äß€]{1,24}".prop_map(|random| format!("Pw{random}"))
    }

    proptest! {
        #[test]
        fn no_password_is_ever_shown(
            password in password(),
            user in "[a-z]{0,6}",
            scheme in prop::sample::select(vec!["nats://", "tls://", "", "NATS://", "http://"]),
            before in prop::sample::select(vec!["", "nats://h0:4222,", "h0,"]),
            after in prop::sample::select(vec!["", ",nats://h2:4222", ",h2"]),
            encode in any::<bool>(),
        ) {
            let secret = if encode {
                percent_encoding::utf8_percent_encode(
                    &password,
                    percent_encoding::NON_ALPHANUMERIC,
                )
                .to_string()
            } else {
                password.clone()
            };
            // A token's first ':' would make what precedes it a user name, which is shown.
            let info = if user.is_empty() {
                secret.replace(':', "%3A")
            } else {
                format!("{user}:{secret}")
            };
            let urls = format!("{before}{scheme}{info}@127.0.0.1:4222{after}");
            // What is shown, and what the client gets to see (and may log): the servers.
            let mut shown = vec![redact(&urls)];
            match parse_list(&urls) {
                Err(err) => shown.push(format!("{err} {err:?}")),
                Ok(servers) => {
                    for (server, credentials) in servers {
                        shown.push(format!("{} {credentials:?}", server.as_url_str()));
                    }
                }
            }
            for text in shown {
                prop_assert!(!text.contains(&password), "{text:?} shows {password:?}");
                prop_assert!(!text.contains("Pw"), "{text:?} shows part of {password:?}");
            }
        }
    }
}
