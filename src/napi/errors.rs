//! Errors at the boundary: a core [`Error`] becomes a napi error whose reason is
//! `"<code>: <message>"`, which the shim turns back into an `Error` with `err.code`.

use napi::Status;

use crate::error::Error;

/// `err` as JavaScript gets it.
pub(super) fn to_js(err: Error) -> napi::Error {
    napi::Error::new(Status::GenericFailure, coded(&err))
}

/// An error as the shim reads it: `"<code>: <message>"`.
pub(super) fn coded(err: &Error) -> String {
    format!("{}: {err}", err.code())
}
