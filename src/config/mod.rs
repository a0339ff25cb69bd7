//! Queue configuration: the user's settings, their defaults and their validation.
//!
//! [`Config::from_json`] reads the object a JavaScript user passes to `new Protoqueue(config)`
//! and rejects every mistake (wrong names, wrong types, out-of-range values, unknown keys) with
//! [`Error::InvalidConfig`](crate::error::Error::InvalidConfig) before anything touches the network.
//!
//! - [`settings`]: the validated [`Config`] and the values derived from it;
//! - [`options`]: reading it (and `processDLQ`'s [`LetterOptions`]) from JSON;
//! - [`defaults`]: each option's default and bounds, as named constants;
//! - [`names`]: the consumers' names and the rules for stream names and subjects;
//! - [`auth`], [`tls`], [`urls`], [`backoff`]: the settings that have parts of their own.

pub mod auth;
pub mod backoff;
pub mod defaults;
pub(crate) mod json;
pub mod names;
pub mod options;
pub mod settings;
pub mod tls;
pub mod urls;

pub use defaults::*;
pub use names::{
    validate_publish_subject, validate_stream_name, CONSUMER_NAME, DEAD_LETTER_CONSUMER_NAME,
    MAX_STREAM_NAME_LEN, MAX_SUBJECT_LEN,
};
pub use options::LetterOptions;
pub use settings::{Config, Keep, RateLimit};
pub use urls::validate_urls;
