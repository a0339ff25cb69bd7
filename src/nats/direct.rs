//! Reading many messages of a stream at once without a consumer: batched direct gets (ADR-31,
//! nats-server 2.11+, on a stream with `allow_direct`, as Protoqueue creates task streams). A
//! work-queue stream takes no consumer that overlaps its workers', so this is how a lookup reads
//! the tasks a queue holds.

use async_nats::{HeaderMap, StatusCode};
use bytes::Bytes;
use futures::StreamExt;

use crate::error::{Error, Result, API_TIMEOUT};

/// The headers a direct get adds to each message it returns.
const SEQUENCE: &str = "Nats-Sequence";
const SUBJECT: &str = "Nats-Subject";
const TIME_STAMP: &str = "Nats-Time-Stamp";
/// The status closing a batch.
const END_OF_BATCH: u16 = 204;
/// The most a server returns for one request.
const MAX_BYTES: usize = 4 * 1024 * 1024;

/// Where a batch starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum From {
    /// At this stream sequence or the first after it.
    Sequence(u64),
    /// At the first message stored at or after this time, ms since the epoch.
    Time(i64),
}

/// One stored message, as a direct get returns it.
#[derive(Debug, Clone)]
pub struct Stored {
    pub sequence: u64,
    pub subject: String,
    /// When the server stored it (RFC 3339), as it said.
    pub time: String,
    /// The message's own headers (and the direct get's).
    pub headers: HeaderMap,
    pub payload: Bytes,
}

/// Up to `batch` messages of stream `stream` from `from` on, on subjects matching `filter` (all
/// when `None`), oldest first: fewer at the stream's end or past 4 MiB, none past the end.
/// `what` names the reading in errors.
pub async fn batch(
    js: &async_nats::jetstream::Context,
    stream: &str,
    from: From,
    filter: Option<&str>,
    batch: usize,
    what: &'static str,
) -> Result<Vec<Stored>> {
    let client = js.client();
    let inbox = client.new_inbox();
    let mut replies = client
        .subscribe(inbox.clone())
        .await
        .map_err(|err| Error::nats(what, err))?;
    let mut body = serde_json::json!({ "batch": batch.max(1), "max_bytes": MAX_BYTES });
    match from {
        From::Sequence(sequence) => body["seq"] = sequence.max(1).into(),
        From::Time(ms) => body["start_time"] = crate::schedules::rfc3339(ms).into(),
    }
    if let Some(filter) = filter {
        body["next_by_subj"] = filter.into();
    }
    let request = async_nats::Request::new()
        .inbox(inbox)
        .payload(body.to_string().into());
    js.send_request(format!("DIRECT.GET.{stream}"), request)
        .await
        .map_err(|err| Error::nats(what, err))?;
    let mut stored = Vec::new();
    loop {
        let reply = tokio::time::timeout(API_TIMEOUT, replies.next())
            .await
            .map_err(|_| Error::Timeout {
                operation: what.into(),
                after: API_TIMEOUT,
                hint: "; is the NATS server reachable?",
            })?;
        let Some(reply) = reply else {
            return Ok(stored);
        };
        match reply.status {
            None => {}
            // No message from there on, or the end of the batch (204 EOB).
            Some(StatusCode::NOT_FOUND) => return Ok(stored),
            Some(status) if status.as_u16() == END_OF_BATCH => return Ok(stored),
            Some(status) => {
                return Err(Error::Nats(format!(
                    "{what}: the server answered {status} {}",
                    reply.description.unwrap_or_default()
                )))
            }
        }
        let headers = reply.headers.unwrap_or_default();
        let header = |name: &str| headers.get(name).map(|value| value.as_str().to_owned());
        let Some(sequence) = header(SEQUENCE).and_then(|seq| seq.parse().ok()) else {
            return Err(Error::Nats(format!(
                "{what}: a direct get without a sequence"
            )));
        };
        stored.push(Stored {
            sequence,
            subject: header(SUBJECT).unwrap_or_default(),
            time: header(TIME_STAMP).unwrap_or_default(),
            headers,
            payload: reply.payload,
        });
        if stored.len() >= batch {
            // The end-of-batch status follows; the subscription is dropped without it.
            return Ok(stored);
        }
    }
}
