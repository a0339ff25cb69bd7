//! The W3C Trace Context a task carries from the code that enqueued it to its handler
//! (`TraceContext` in the envelope): checked when it is written and again when it is read, so a
//! malformed or foreign one is dropped (the task runs untraced) and never fails a task.
//!
//! The JavaScript layer (`lib/tracing.js`) makes the spans; this module only moves the two values.

use bytes::Bytes;

use crate::envelope::proto::TraceContext;

/// The longest `tracestate` carried, in bytes: the W3C limit a propagating system must keep.
pub const MAX_TRACESTATE_LEN: usize = 512;

/// A trace context worth carrying: a valid `traceparent`, and a `tracestate` when it is valid
/// too (an invalid `tracestate` alone is dropped, as the W3C specification asks).
pub fn checked(traceparent: &str, tracestate: Option<&str>) -> Option<Box<TraceContext>> {
    if !is_valid_traceparent(traceparent.as_bytes()) {
        return None;
    }
    let tracestate = tracestate
        .filter(|state| is_valid_tracestate(state.as_bytes()))
        .map(|state| Bytes::copy_from_slice(state.as_bytes()))
        .unwrap_or_default();
    Some(Box::new(TraceContext {
        traceparent: Bytes::copy_from_slice(traceparent.as_bytes()),
        tracestate,
    }))
}

/// The `traceparent` and `tracestate` (empty: none) of a received context, when its
/// `traceparent` is valid; they are printable ASCII then.
pub fn readable(context: &TraceContext) -> Option<(&str, &str)> {
    if !is_valid_traceparent(&context.traceparent) {
        return None;
    }
    let traceparent = std::str::from_utf8(&context.traceparent).ok()?;
    let tracestate = if is_valid_tracestate(&context.tracestate) {
        std::str::from_utf8(&context.tracestate).unwrap_or_default()
    } else {
        ""
    };
    Some((traceparent, tracestate))
}

/// `version-traceid-parentid-flags`: lowercase hex of 2, 32, 16 and 2 digits; version `ff` and
/// all-zero ids are invalid. A version above `00` may append fields after a `-`.
fn is_valid_traceparent(value: &[u8]) -> bool {
    const LEN: usize = 55;
    let is_hex = |part: &[u8]| {
        part.iter()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(b))
    };
    let all_zero = |part: &[u8]| part.iter().all(|b| *b == b'0');
    if value.len() < LEN || value.len() > 256 {
        return false;
    }
    let (version, trace_id, parent_id, flags) =
        (&value[0..2], &value[3..35], &value[36..52], &value[53..55]);
    let dashes = value[2] == b'-' && value[35] == b'-' && value[52] == b'-';
    let rest_ok = match version {
        b"00" => value.len() == LEN,
        _ => value.len() == LEN || value[LEN] == b'-',
    };
    dashes
        && rest_ok
        && is_hex(version)
        && version != b"ff"
        && is_hex(trace_id)
        && is_hex(parent_id)
        && is_hex(flags)
        && !all_zero(trace_id)
        && !all_zero(parent_id)
        && value[LEN..].iter().all(|b| (0x20..0x7f).contains(b))
}

/// At most [`MAX_TRACESTATE_LEN`] bytes of printable ASCII (the list's own syntax is checked by
/// the tracer that reads it).
fn is_valid_tracestate(value: &[u8]) -> bool {
    value.len() <= MAX_TRACESTATE_LEN && value.iter().all(|b| (0x20..0x7f).contains(b))
}

#[cfg(test)]
mod tests {
    use super::*;

    const VALID: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    #[test]
    fn a_valid_context_is_kept_and_read_back() {
        let context = checked(VALID, Some("congo=t61rcWkgMzE")).expect("valid");
        assert_eq!(readable(&context), Some((VALID, "congo=t61rcWkgMzE")));
        let bare = checked(VALID, None).expect("valid");
        assert_eq!(readable(&bare), Some((VALID, "")));
    }

    #[test]
    fn malformed_traceparents_are_dropped() {
        for bad in [
            "",
            "garbage",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00_4bf92f3577b34da6a3ce929d0e0e4736_00f067aa0ba902b7_01",
            "00-4bf92f3577b34da6a3ce929d0e0e473g-00f067aa0ba902b7-01",
        ] {
            assert_eq!(checked(bad, None), None, "{bad:?}");
        }
        // A later version may append fields.
        let future = "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-ab";
        assert!(checked(future, None).is_some());
    }

    #[test]
    fn a_bad_tracestate_is_dropped_alone() {
        let long = "k=".to_owned() + &"v".repeat(MAX_TRACESTATE_LEN);
        let context = checked(VALID, Some(&long)).expect("traceparent kept");
        assert!(context.tracestate.is_empty());
        let context = checked(VALID, Some("a=\n")).expect("traceparent kept");
        assert!(context.tracestate.is_empty());
    }

    #[test]
    fn foreign_bytes_are_never_read() {
        let foreign = TraceContext {
            traceparent: Bytes::from_static(b"\xff\xfe garbage"),
            tracestate: Bytes::from_static(b"\xff"),
        };
        assert_eq!(readable(&foreign), None);
        let odd_state = TraceContext {
            traceparent: Bytes::from_static(VALID.as_bytes()),
            tracestate: Bytes::from_static(b"\xff\x00"),
        };
        assert_eq!(readable(&odd_state), Some((VALID, "")));
    }
}
