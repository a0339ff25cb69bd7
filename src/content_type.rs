//! Content types of task data, and the task names of a queue of several task types.
//!
//! A task's envelope says how its data is encoded (`Task.content_type`): JSON (what JavaScript
//! enqueues by default, and what the core can check itself) or bytes a worker's serializer decodes
//! (`application/x-protobuf; messageType=pkg.Msg`, `application/x-msgpack`, a user's own). The
//! core never decodes those bytes: it hands them to a worker that said it reads that content type
//! ([`Accepted`]) and dead-letters a task of any other content type at once (`invalidData`).

use crate::error::{Error, Result};

/// The longest content type or task name a producer may give, in bytes.
pub const MAX_LEN: usize = 256;

/// The media type of a content type (what precedes its parameters), trimmed.
pub fn essence(content_type: &str) -> &str {
    content_type.split(';').next().unwrap_or_default().trim()
}

/// Whether a content type says JSON: `application/json` (with parameters such as a charset), or
/// none at all (a foreign producer that did not say).
pub fn is_json(content_type: &str) -> bool {
    let essence = essence(content_type);
    essence.is_empty() || essence.eq_ignore_ascii_case(crate::envelope::JSON)
}

/// Checks a producer's content type: 1 to [`MAX_LEN`] bytes of printable ASCII, with a media
/// type of the form `type/subtype`.
pub fn validate(content_type: &str) -> Result<()> {
    if content_type.is_empty() || content_type.len() > MAX_LEN {
        return Err(Error::InvalidTask(format!(
            "a content type must be 1 to {MAX_LEN} bytes long, got {} bytes",
            content_type.len()
        )));
    }
    if let Some(c) = content_type.chars().find(|c| !(' '..='~').contains(c)) {
        return Err(Error::InvalidTask(format!(
            "a content type may only hold printable ASCII, got {c:?}"
        )));
    }
    let media = essence(content_type);
    let well_formed = media
        .split_once('/')
        .is_some_and(|(kind, sub)| !kind.is_empty() && !sub.is_empty() && !sub.contains('/'));
    if !well_formed || media.contains(' ') {
        return Err(Error::InvalidTask(format!(
            "a content type must look like type/subtype[; parameters], got {content_type:?}"
        )));
    }
    Ok(())
}

/// Checks a task name (`enqueue({ name })`): 1 to [`MAX_LEN`] bytes, no control characters.
pub fn validate_name(name: &str) -> Result<()> {
    if name.is_empty() || name.len() > MAX_LEN {
        return Err(Error::InvalidTask(format!(
            "a task name must be 1 to {MAX_LEN} bytes long, got {} bytes",
            name.len()
        )));
    }
    if let Some(c) = name.chars().find(|c| c.is_control()) {
        return Err(Error::InvalidTask(format!(
            "a task name may not contain control characters, got {c:?}"
        )));
    }
    Ok(())
}

/// The content types besides JSON that a worker's handler side decodes (its serializer's), by
/// media type, compared without regard to case. Empty: JSON only.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Accepted(Vec<String>);

impl Accepted {
    /// The media types of `content_types` (parameters are the decoder's business); JSON types
    /// are left out (the core reads JSON itself). Each must be a valid content type.
    pub fn new<I: IntoIterator<Item = S>, S: AsRef<str>>(content_types: I) -> Result<Self> {
        let mut accepted = Vec::new();
        for content_type in content_types {
            let content_type = content_type.as_ref();
            validate(content_type).map_err(|err| match err {
                Error::InvalidTask(message) => Error::InvalidConfig(message),
                other => other,
            })?;
            if !is_json(content_type) {
                accepted.push(essence(content_type).to_ascii_lowercase());
            }
        }
        Ok(Accepted(accepted))
    }

    /// Whether a task of `content_type` (not JSON) goes to the handler side as bytes.
    pub fn accepts(&self, content_type: &str) -> bool {
        let media = essence(content_type);
        self.0.iter().any(|known| known.eq_ignore_ascii_case(media))
    }

    /// What a worker reads, for error messages: `application/json` and the accepted types.
    pub fn describe(&self) -> String {
        let mut all = vec![crate::envelope::JSON.to_owned()];
        all.extend(self.0.iter().cloned());
        all.join(", ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_types_are_checked() {
        for good in [
            "application/x-protobuf; messageType=shop.v1.Order",
            "application/x-msgpack",
            "application/octet-stream",
            "text/plain; charset=utf-8",
        ] {
            assert!(validate(good).is_ok(), "{good}");
        }
        for bad in [
            "",
            "json",
            "application/",
            "/x",
            "a/b/c",
            "app lication/json",
            "text/plain\n",
            "text/pläin",
            &"a/".repeat(200),
        ] {
            assert!(validate(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn names_are_checked() {
        assert!(validate_name("email").is_ok());
        assert!(validate_name("resize image").is_ok());
        assert!(validate_name("").is_err());
        assert!(validate_name("a\u{0}").is_err());
        assert!(validate_name(&"x".repeat(MAX_LEN + 1)).is_err());
    }

    #[test]
    fn a_worker_accepts_its_media_types_whatever_the_parameters_and_case() {
        let accepted = Accepted::new([
            "application/x-protobuf; messageType=a.B",
            "application/json",
        ])
        .expect("valid");
        assert!(accepted.accepts("application/x-protobuf; messageType=c.D"));
        assert!(accepted.accepts("Application/X-Protobuf"));
        assert!(!accepted.accepts("application/x-msgpack"));
        assert!(!accepted.accepts(""));
        assert_eq!(
            accepted.describe(),
            "application/json, application/x-protobuf"
        );
        assert!(Accepted::new(["nope"]).is_err());
        assert!(!Accepted::default().accepts("text/plain"));
    }
}
