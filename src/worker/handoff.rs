//! How tasks cross into JavaScript: as JSON text already in the shape the handler receives
//! (`TaskData` in `index.d.ts`), a whole batch in one string.
//!
//! One `JSON.parse` of a batch costs far less than building each task's object through napi
//! property by property and then parsing its data and metadata one by one. The task's data and
//! metadata are JSON already (the producer wrote them as JSON text), so they are spliced in as they
//! are, after a check: an envelope from another producer whose data is not JSON, or whose
//! metadata is not a JSON object, can never be handled; it is refused here (and dead-lettered
//! as `invalidData`) instead of breaking its whole batch.
//!
//! Data of a content type the worker's serializer reads ([`Accepted`]: Protobuf, MessagePack,
//! raw bytes, a user's own) crosses as base64 text with a `"contentType"` beside it, and the
//! JavaScript side decodes it; JSON data crosses as before.

use std::fmt::Write as _;

use base64::{engine::general_purpose::STANDARD as BASE64, Engine as _};
use serde::de::IgnoredAny;

use crate::{
    content_type::{self, Accepted},
    worker::executor::{Attempt, Failure},
};

/// One task as the JSON object text of a `TaskData`: `{"id","data","metadata","attempt",
/// "maxAttempts"}` (plus `"name"` when it has one, and `"contentType"` beside base64 `"data"` for
/// a content type of `accepted`), with the enqueue time added to the metadata as `timestamp`, unless the
/// user's metadata has a `timestamp` of its own that is a number (as the original Protoqueue
/// kept it). A task whose data or metadata no handler could take is an error.
pub fn task_json(attempt: &Attempt, accepted: &Accepted) -> Result<String, Failure> {
    let task = &attempt.task;
    // A content type the worker's serializer reads: its bytes go over as base64, with the
    // content type, and the handler side decodes them.
    let bytes = if content_type::is_json(&task.content_type) {
        None
    } else if accepted.accepts(&task.content_type) {
        Some(BASE64.encode(&task.data))
    } else {
        return Err(Failure::new(format!(
            "task {} has content type {:?}; this worker reads {}",
            task.id,
            crate::logging::shorten(&task.content_type),
            accepted.describe()
        )));
    };
    let data = match &bytes {
        Some(_) => "",
        None => json_text(&task.data)
            .ok_or_else(|| Failure::new(format!("task {} has data that is not JSON", task.id)))?,
    };
    // The fields of the metadata object: valid JSON that starts with `{` ends with `}`.
    let metadata =
        json_text(&task.metadata).and_then(|text| text.trim().strip_prefix('{')?.strip_suffix('}'));
    let metadata = match (task.metadata.is_empty(), metadata) {
        (true, _) => "",
        (false, Some(fields)) => fields.trim(),
        (false, None) => {
            return Err(Failure::new(format!(
                "task {} has metadata that is not a JSON object",
                task.id
            )))
        }
    };
    let id = serde_json::to_string(&task.id)
        .map_err(|err| Failure::new(format!("task id is not representable: {err}")))?;

    let extra = bytes
        .as_ref()
        .map_or(0, |b| b.len() + task.content_type.len())
        + task.name.len();
    let mut json = String::with_capacity(data.len() + extra + metadata.len() + id.len() + 96);
    let _ = write!(json, "{{\"id\":{id},\"data\":");
    match &bytes {
        None => json.push_str(data),
        Some(base64) => {
            let content_type = serde_json::to_string(&task.content_type)
                .map_err(|err| Failure::new(format!("content type not representable: {err}")))?;
            let _ = write!(json, "\"{base64}\",\"contentType\":{content_type}");
        }
    }
    if !task.name.is_empty() {
        let name = serde_json::to_string(&task.name)
            .map_err(|err| Failure::new(format!("task name not representable: {err}")))?;
        let _ = write!(json, ",\"name\":{name}");
    }
    json.push_str(",\"metadata\":{");
    if !metadata.is_empty() {
        json.push_str(metadata);
    }
    if !has_numeric_timestamp(metadata) {
        if !metadata.is_empty() {
            json.push(',');
        }
        // Last, so it overrides a `timestamp` of the user's that is not a number.
        let _ = write!(json, "\"timestamp\":{}", task.enqueued_at_ms);
    }
    let _ = write!(
        json,
        "}},\"attempt\":{},\"maxAttempts\":{}",
        attempt.number, attempt.max
    );
    if let Some(route) = &attempt.route {
        if let Some(subject) = route
            .subject
            .as_deref()
            .and_then(|s| serde_json::to_string(s).ok())
        {
            let _ = write!(json, ",\"subject\":{subject}");
        }
        if let Some(priority) = route.priority {
            let _ = write!(json, ",\"priority\":{priority}");
        }
    }
    // Last, so the JavaScript layer can take it off the object cheaply.
    if let Some((traceparent, tracestate)) = task
        .trace_context
        .as_deref()
        .and_then(crate::trace_context::readable)
    {
        let text = |value: &str| serde_json::to_string(value).unwrap_or_else(|_| "\"\"".into());
        let _ = write!(
            json,
            ",\"trace\":{{\"traceparent\":{},\"tracestate\":{}}}",
            text(traceparent),
            text(tracestate)
        );
    }
    json.push('}');
    Ok(json)
}

/// Whether the fields of a metadata object hold a `timestamp` that is a number. Parsed only
/// when the text could hold one, so most tasks pay a substring search at most.
fn has_numeric_timestamp(fields: &str) -> bool {
    #[derive(serde::Deserialize)]
    struct Stamp {
        timestamp: Option<serde_json::Value>,
    }
    // `\u`: a key may spell `timestamp` with escapes.
    if !fields.contains("timestamp") && !fields.contains("\\u") {
        return false;
    }
    serde_json::from_str::<Stamp>(&format!("{{{fields}}}"))
        .is_ok_and(|stamp| matches!(stamp.timestamp, Some(serde_json::Value::Number(_))))
}

/// The message that closes the receiving dispatcher: it drops the tasks it has not started and
/// starts no other.
pub const CLOSE_JSON: &str = r#"{"close":true}"#;

/// Attempts ended before their outcomes came, as one JSON text:
/// `{"abort":[[token,"timeout"|"cancelled"|"shutdown"],…]}`.
pub fn abort_json(aborted: &[(u32, crate::worker::abort::AbortReason)]) -> String {
    let mut json = String::with_capacity(12 + aborted.len() * 20);
    json.push_str("{\"abort\":[");
    for (i, (token, reason)) in aborted.iter().enumerate() {
        if i > 0 {
            json.push(',');
        }
        let _ = write!(json, "[{token},\"{}\"]", reason.name());
    }
    json.push_str("]}");
    json
}

/// A batch as one JSON text: `{"limit":…,"tokens":[…],"tasks":[…]}`, the tokens in the order of
/// the tasks; `limit` is how many tasks the receiver may run at once (`batchSize`).
pub fn batch_json(limit: u32, batch: &[(u32, String)]) -> String {
    let length: usize = batch.iter().map(|(_, task)| task.len() + 12).sum();
    let mut json = String::with_capacity(length + 40);
    let _ = write!(json, "{{\"limit\":{limit},\"tokens\":[");
    for (i, (token, _)) in batch.iter().enumerate() {
        if i > 0 {
            json.push(',');
        }
        let _ = write!(json, "{token}");
    }
    json.push_str("],\"tasks\":[");
    for (i, (_, task)) in batch.iter().enumerate() {
        if i > 0 {
            json.push(',');
        }
        json.push_str(task);
    }
    json.push_str("]}");
    json
}

/// `bytes` as text when they are exactly one JSON value.
pub(crate) fn json_text(bytes: &[u8]) -> Option<&str> {
    serde_json::from_slice::<IgnoredAny>(bytes).ok()?;
    std::str::from_utf8(bytes).ok()
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;
    use serde_json::{json, Value};

    use super::*;
    use crate::envelope::Task;

    #[test]
    fn aborts_are_one_json_text() {
        use crate::worker::abort::AbortReason;
        let json = abort_json(&[(3, AbortReason::Cancelled), (9, AbortReason::Timeout)]);
        assert_eq!(json, r#"{"abort":[[3,"cancelled"],[9,"timeout"]]}"#);
        let parsed: serde_json::Value = serde_json::from_str(&json).expect("json");
        assert_eq!(parsed["abort"][1][1], "timeout");
    }

    fn attempt(data: &str, metadata: &str) -> Attempt {
        Attempt {
            task: Task {
                id: "id-\"1\"".into(),
                data: Bytes::from(data.to_owned()),
                metadata: Bytes::from(metadata.to_owned()),
                enqueued_at_ms: 1_700_000_000_123,
                ..Task::default()
            },
            number: 2,
            max: 4,
            route: None,
            abort: Default::default(),
        }
    }

    fn parsed(data: &str, metadata: &str) -> Value {
        let text = task_json(&attempt(data, metadata), &Accepted::default()).expect("a valid task");
        serde_json::from_str(&text).expect("task_json writes JSON")
    }

    #[test]
    fn a_valid_trace_context_is_handed_over_last_and_a_malformed_one_not_at_all() {
        let traceparent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        let mut traced = attempt("{}", "");
        traced.task.trace_context = crate::trace_context::checked(traceparent, Some("a=\"b\""));
        let text = task_json(&traced, &Accepted::default()).expect("a valid task");
        assert!(text.ends_with("}}"), "{text}");
        let value: Value = serde_json::from_str(&text).expect("JSON");
        assert_eq!(value["trace"]["traceparent"], traceparent);
        assert_eq!(value["trace"]["tracestate"], "a=\"b\"");

        let mut foreign = attempt("{}", "");
        foreign.task.trace_context = Some(Box::new(crate::envelope::proto::TraceContext {
            traceparent: Bytes::from_static(b"garbage\"}"),
            tracestate: Bytes::from_static(b"\xff"),
        }));
        let value: Value = serde_json::from_str(
            &task_json(&foreign, &Accepted::default()).expect("runs untraced"),
        )
        .expect("JSON");
        assert!(value.get("trace").is_none());
    }

    #[test]
    fn a_task_becomes_the_handlers_task_data() {
        assert_eq!(
            parsed(
                r#"{"to":"a@example.com","n":[1,2]}"#,
                r#" {"priority": 1, "tags": ["x"], "deep": {"a": {}}} "#
            ),
            json!({
                "id": "id-\"1\"",
                "data": {"to": "a@example.com", "n": [1, 2]},
                "metadata": {
                    "priority": 1, "tags": ["x"], "deep": {"a": {}},
                    "timestamp": 1_700_000_000_123_i64
                },
                "attempt": 2,
                "maxAttempts": 4,
            })
        );
    }

    #[test]
    fn any_json_value_is_data_and_metadata_may_be_absent_or_empty() {
        for data in [
            "\"text\"",
            "0",
            "-1.5e3",
            "null",
            "true",
            "[]",
            "{}",
            " [1, {\"a\": null}] ",
        ] {
            let value = parsed(data, "");
            assert_eq!(
                value["data"],
                serde_json::from_str::<Value>(data).expect("json")
            );
            assert_eq!(
                value["metadata"],
                json!({"timestamp": 1_700_000_000_123_i64})
            );
        }
        assert_eq!(
            parsed("1", "{ }")["metadata"],
            json!({"timestamp": 1_700_000_000_123_i64})
        );
    }

    #[test]
    fn a_numeric_user_timestamp_is_kept_anything_else_gets_the_enqueue_time() {
        for (metadata, timestamp) in [
            (r#"{"timestamp": 5}"#, json!(5)),
            (r#"{"a": 1, "timestamp": -1.5e3}"#, json!(-1500.0)),
            (r#"{"times\u0074amp": 7}"#, json!(7)),
            (
                r#"{"timestamp": "yesterday"}"#,
                json!(1_700_000_000_123_i64),
            ),
            (r#"{"timestamp": null}"#, json!(1_700_000_000_123_i64)),
            (r#"{"timestamp": {"at": 5}}"#, json!(1_700_000_000_123_i64)),
            (
                r#"{"nested": {"timestamp": 5}}"#,
                json!(1_700_000_000_123_i64),
            ),
            (r#"{"note": "timestamp"}"#, json!(1_700_000_000_123_i64)),
        ] {
            // Duplicate keys: JSON.parse keeps the last, so the enqueue time (written last) wins
            // whenever it is written.
            assert_eq!(
                parsed("1", metadata)["metadata"]["timestamp"],
                timestamp,
                "{metadata}"
            );
        }
    }

    #[test]
    fn data_that_is_not_json_and_metadata_that_is_no_object_fail_the_attempt() {
        for (data, metadata) in [
            ("{oops", ""),
            ("", ""),
            ("1 2", ""),
            ("\"\u{1}\"", ""),
            ("1", "[1]"),
            ("1", "\"text\""),
            ("1", "{\"a\":"),
        ] {
            let failure =
                task_json(&attempt(data, metadata), &Accepted::default()).expect_err("must fail");
            assert!(failure.error.contains("id-\"1\""), "{failure:?}");
        }
    }

    #[test]
    fn only_json_content_types_reach_the_handler() {
        for (content_type, accepted) in [
            ("application/json", true),
            ("application/json; charset=utf-8", true),
            ("Application/JSON", true),
            ("", true),
            ("text/plain", false),
            ("application/x-msgpack", false),
            ("application/jsonx", false),
        ] {
            let mut task = attempt("123", "");
            task.task.content_type = content_type.into();
            assert_eq!(
                task_json(&task, &Accepted::default()).is_ok(),
                accepted,
                "{content_type:?}"
            );
        }
    }

    #[test]
    fn accepted_content_types_cross_as_base64_with_their_content_type_and_name() {
        let accepted = Accepted::new(["application/x-protobuf; messageType=a.B"]).expect("valid");
        let mut task = attempt("", "{\"k\":1}");
        task.task.data = Bytes::from_static(b"\x08\x96\x01\xff");
        task.task.content_type = "application/x-protobuf; messageType=a.B".into();
        task.task.name = "em\"ail".into();
        let value: Value =
            serde_json::from_str(&task_json(&task, &accepted).expect("accepted")).expect("JSON");
        assert_eq!(value["data"], json!("CJYB/w=="));
        assert_eq!(
            value["contentType"],
            json!("application/x-protobuf; messageType=a.B")
        );
        assert_eq!(value["name"], json!("em\"ail"));
        assert_eq!(value["metadata"]["k"], json!(1));
        // Another media type is refused, naming it and what the worker reads.
        task.task.content_type = "application/x-msgpack".into();
        let failure = task_json(&task, &accepted).expect_err("not accepted");
        assert!(
            failure.error.contains("application/x-msgpack"),
            "{failure:?}"
        );
        assert!(
            failure.error.contains("application/x-protobuf"),
            "{failure:?}"
        );
        // JSON tasks are unchanged: no contentType, and no name unless given.
        let plain = task_json(&attempt("1", ""), &accepted).expect("json");
        assert!(!plain.contains("contentType") && !plain.contains("\"name\""));
    }

    #[test]
    fn a_batch_is_one_json_text_with_tokens_in_task_order() {
        let batch = vec![
            (
                7,
                task_json(&attempt("1", ""), &Accepted::default()).expect("valid"),
            ),
            (
                3,
                task_json(&attempt("[2]", "{\"k\":\"v\"}"), &Accepted::default()).expect("valid"),
            ),
        ];
        let value: Value = serde_json::from_str(&batch_json(10, &batch)).expect("JSON");
        assert_eq!(value["limit"], json!(10));
        assert_eq!(value["tokens"], json!([7, 3]));
        assert_eq!(value["tasks"][1]["data"], json!([2]));
        assert_eq!(value["tasks"][1]["metadata"]["k"], json!("v"));
        assert_eq!(batch_json(1, &[]), r#"{"limit":1,"tokens":[],"tasks":[]}"#);
    }
}
