//! Reading the JavaScript configuration object: JSON types named as a JavaScript user names them,
//! absent keys, unknown keys, and [`Error::InvalidConfig`] for every mistake.

use serde_json::{Map, Value};

use crate::error::{Error, Result};

/// The error for a configuration mistake.
pub(crate) fn invalid(message: String) -> Error {
    Error::InvalidConfig(message)
}

/// A JSON value's type as a JavaScript user would name it.
pub(crate) fn kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// A key that is set to something other than `null`/`undefined`.
pub(crate) fn present<'a>(object: &'a Map<String, Value>, key: &str) -> Option<&'a Value> {
    object.get(key).filter(|v| !v.is_null())
}

/// A key that must be set to a string.
pub(crate) fn required_string(object: &Map<String, Value>, key: &str) -> Result<String> {
    match present(object, key) {
        Some(Value::String(s)) => Ok(s.clone()),
        Some(other) => Err(invalid(format!(
            "config.{key} must be a string, got {}",
            kind(other)
        ))),
        None => Err(invalid(format!("config.{key} is required"))),
    }
}

/// A value that is absent, or a non-empty string.
pub(crate) fn non_empty_string(
    object: &Map<String, Value>,
    what: &str,
    key: &str,
) -> Result<Option<String>> {
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

/// Rejects a key that is not in `known`, naming the known ones.
pub(crate) fn reject_unknown_keys(
    what: &str,
    object: &Map<String, Value>,
    known: &[&str],
) -> Result<()> {
    match object.keys().find(|k| !known.contains(&k.as_str())) {
        Some(key) => Err(invalid(format!(
            "{what} has an unknown key {key:?}; known keys are {}",
            known.join(", ")
        ))),
        None => Ok(()),
    }
}

/// An integer option from `min` to `max`, if present.
pub(crate) fn integer_option(
    options: &Map<String, Value>,
    key: &str,
    min: u64,
    max: u64,
) -> Result<Option<u64>> {
    let Some(value) = present(options, key) else {
        return Ok(None);
    };
    let range = || format!("an integer from {min} to {max}");
    let number = value.as_f64().ok_or_else(|| {
        invalid(format!(
            "options.{key} must be {}, got {}",
            range(),
            kind(value)
        ))
    })?;
    if number.fract() != 0.0 || number < min as f64 || number > max as f64 {
        return Err(invalid(format!(
            "options.{key} must be {}, got {number}",
            range()
        )));
    }
    Ok(Some(number as u64))
}
