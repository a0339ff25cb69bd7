//! NATS itself: the connection (with reconnection and credentials applied) and the JetStream
//! objects a queue lives in.

pub mod ack_wait;
pub mod connection;
pub mod credentials;
pub mod direct;
pub(crate) mod elections;
pub mod files;
pub(crate) mod shared;
pub mod topology;

use async_nats::jetstream::{self, message::StreamMessage, response::Response, ErrorCode};
use serde::Deserialize;

use crate::error::{Error, Result};

/// Stream `name`, or `None` when the server has no such stream (a part of a queue made only
/// once it is used: its workers' records, its task history). `what` names the reading in errors.
pub(crate) async fn stream_if_exists(
    js: &jetstream::Context,
    name: String,
    what: &'static str,
) -> Result<Option<jetstream::stream::Stream>> {
    match js.get_stream(name).await {
        Ok(stream) => Ok(Some(stream)),
        Err(err) => match err.kind() {
            jetstream::context::GetStreamErrorKind::JetStream(server)
                if server.error_code() == ErrorCode::STREAM_NOT_FOUND =>
            {
                Ok(None)
            }
            _ => Err(Error::request(what, err)),
        },
    }
}

/// Removes every message of stream `name` on `subject` (the one record or mark a subject holds
/// in the streams beside a queue's tasks); how many. `what` names the removal in errors.
pub(crate) async fn purge_subject(
    js: &jetstream::Context,
    name: String,
    subject: &str,
    what: &'static str,
) -> Result<u64> {
    let stream = js
        .get_stream_no_info(name)
        .await
        .map_err(|err| Error::nats(what, err))?;
    let purged = stream
        .purge()
        .filter(subject)
        .await
        .map_err(|err| Error::nats(what, err))?;
    Ok(purged.purged)
}

/// How many messages `stream` holds on subjects matching `filter` (which may hold wildcards),
/// at a cost that does not grow with the number of distinct subjects under it:
///
/// - a literal subject: the stream's info for that one subject (one entry);
/// - a wildcard on a stream that allows direct gets (`allow_direct`, as Protoqueue creates task
///   streams): one batched direct get of one message (ADR-31, nats-server 2.11+), whose
///   `Nats-Num-Pending` header counts the matching messages after it;
/// - otherwise (a stream made without `allow_direct`, an older server): the stream's subjects
///   under `filter` are listed, one entry per distinct subject (paged by the server).
///
/// `what` names the reading in errors.
pub(crate) async fn stored_on(
    js: &jetstream::Context,
    stream: &jetstream::stream::Stream,
    filter: &str,
    what: &'static str,
) -> Result<u64> {
    let wildcard = filter.split('.').any(|token| token == "*" || token == ">");
    if wildcard && stream.cached_info().config.allow_direct {
        if let Some(count) = direct_count(js, &stream.cached_info().config.name, filter).await? {
            return Ok(count);
        }
    }
    let subjects = stream
        .info_with_subjects(filter)
        .await
        .map_err(|err| Error::request(what, err))?;
    futures::TryStreamExt::try_fold(
        subjects,
        0u64,
        |sum, (_, n)| async move { Ok(sum + n as u64) },
    )
    .await
    .map_err(|err| Error::nats(what, err))
}

/// The header of a batched direct get's message counting the matching messages after it.
const NUM_PENDING: &str = "Nats-Num-Pending";

/// [`stored_on`] with one batched direct get; `None` when the server cannot answer it that way
/// (no direct gets on the stream, a server without batches).
async fn direct_count(js: &jetstream::Context, stream: &str, filter: &str) -> Result<Option<u64>> {
    use async_nats::StatusCode;
    let client = js.client();
    let inbox = client.new_inbox();
    let mut replies = client
        .subscribe(inbox.clone())
        .await
        .map_err(|err| Error::nats("counting the stream's messages", err))?;
    let body = serde_json::json!({ "seq": 1, "next_by_subj": filter, "batch": 1 });
    let request = async_nats::Request::new()
        .inbox(inbox)
        .payload(body.to_string().into());
    js.send_request(format!("DIRECT.GET.{stream}"), request)
        .await
        .map_err(|err| Error::nats("counting the stream's messages", err))?;
    let reply = tokio::time::timeout(
        crate::error::API_TIMEOUT,
        futures::StreamExt::next(&mut replies),
    )
    .await
    .map_err(|_| Error::Timeout {
        operation: "counting the stream's messages".into(),
        after: crate::error::API_TIMEOUT,
        hint: "; is the NATS server reachable?",
    })?;
    let Some(reply) = reply else {
        return Ok(None);
    };
    match reply.status {
        Some(StatusCode::NOT_FOUND) => Ok(Some(0)),
        Some(_) => Ok(None),
        None => Ok(reply
            .headers
            .as_ref()
            .and_then(|headers| headers.get(NUM_PENDING))
            .and_then(|pending| pending.as_str().parse::<u64>().ok())
            .map(|pending| pending + 1)),
    }
}

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
