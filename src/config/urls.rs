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

/// Checks a comma-separated list of server URLs.
pub fn validate_urls(urls: &str) -> Result<()> {
    if urls.trim().is_empty() {
        return Err(invalid("the NATS URL is empty".into()));
    }
    for url in urls.split(',').map(str::trim) {
        if url.is_empty() {
            return Err(invalid(format!(
                "the NATS URL list {:?} has an empty entry",
                redact(urls)
            )));
        }
        url.parse::<async_nats::ServerAddr>().map_err(|err| {
            invalid(format!(
                "{:?} is not a NATS server URL (e.g. nats://localhost:4222): {err}",
                redact(url)
            ))
        })?;
    }
    Ok(())
}

/// One server address without its user info, and the credentials the user info held.
pub fn split_credentials(url: &str) -> Result<(ServerAddr, Option<Auth>)> {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_are_redacted_from_urls() {
        assert_eq!(
            redact("nats://user:secret@host:4222,nats://h2:4222"),
            "nats://***@host:4222,nats://h2:4222"
        );
        assert_eq!(redact("nats://token@host"), "nats://***@host");
        assert_eq!(redact("token@host"), "***@host");
    }
}
