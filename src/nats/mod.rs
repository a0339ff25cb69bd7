//! NATS itself: the connection (with reconnection and credentials applied) and the JetStream
//! objects a queue lives in.

pub mod ack_wait;
pub mod connection;
pub mod credentials;
pub mod files;
pub(crate) mod shared;
pub mod topology;

use async_nats::jetstream::{self, message::StreamMessage, response::Response, ErrorCode};
use serde::Deserialize;

use crate::error::{Error, Result};

/// The first message on `subject` stored in `stream` at or after sequence `from`; `None` when
/// there is none. `what` names the reading in the error.
pub(crate) async fn next_on_subject(
    stream: &jetstream::stream::Stream,
    subject: &str,
    from: u64,
    what: &'static str,
) -> Result<Option<StreamMessage>> {
    use async_nats::jetstream::stream::RawMessageErrorKind;
    let found = stream
        .raw_message_builder()
        .sequence(from)
        .next_by_subject(subject.to_owned())
        .send()
        .await;
    match found {
        Ok(message) => Ok(Some(message)),
        Err(err) if err.kind() == RawMessageErrorKind::NoMessageFound => Ok(None),
        Err(err) => Err(Error::request(what, err)),
    }
}

/// Whether `stream` holds a message at `sequence`.
pub(crate) async fn is_stored(
    js: &jetstream::Context,
    stream: &str,
    sequence: u64,
) -> Result<bool> {
    use async_nats::jetstream::stream::RawMessageErrorKind;
    let stream = js
        .get_stream_no_info(stream)
        .await
        .map_err(|err| Error::nats("opening a stream", err))?;
    match stream.get_raw_message(sequence).await {
        Ok(_) => Ok(true),
        Err(err) if err.kind() == RawMessageErrorKind::NoMessageFound => Ok(false),
        Err(err) => Err(Error::request("reading a message", err)),
    }
}

/// Deletes message `sequence` of `stream`; `false` when it was gone already. Unlike
/// `Stream::delete_message`, the message is not overwritten on disk first (`no_erase`), which
/// costs the server milliseconds per message.
pub(crate) async fn delete_message(
    js: &jetstream::Context,
    stream: &str,
    sequence: u64,
) -> Result<bool> {
    #[derive(Deserialize)]
    struct Deleted {
        success: bool,
    }
    let request = serde_json::json!({ "seq": sequence, "no_erase": true });
    let response: Response<Deleted> = js
        .request(format!("STREAM.MSG.DELETE.{stream}"), &request)
        .await
        .map_err(|err| Error::request("deleting a message", err))?;
    match response {
        Response::Ok(deleted) => Ok(deleted.success),
        // Not there (the codes differ by server version): another caller removed it first.
        Response::Err { error }
            if [ErrorCode::NO_MESSAGE_FOUND, ErrorCode::SEQUENCE_NOT_FOUND]
                .contains(&error.error_code()) =>
        {
            Ok(false)
        }
        // A failed delete is "gone already" only when the message is gone: a stream that denies
        // deletes answers with this code too, and the message stays.
        Response::Err { error }
            if error.error_code() == ErrorCode::STREAM_MESSAGE_DELETE_FAILED
                && !is_stored(js, stream, sequence).await? =>
        {
            Ok(false)
        }
        Response::Err { error } => Err(Error::nats(
            &format!("deleting message {sequence} of stream {stream:?}"),
            error,
        )),
    }
}
