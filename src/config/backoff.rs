//! Retry backoff: how long a failed task waits before its next attempt (`options.backoff`, or a
//! task's own `backoff` given at enqueue).
//!
//! - `fixed`: every retry waits `delay` (what `options.retryDelay` always did).
//! - `exponential`: the retry after attempt `n` waits `delay × 2^(n−1)` (`delay`, `2 × delay`,
//!   `4 × delay`, …), never more than `maxDelay` (default: the longest duration an option takes).
//! - `jitter` `j` (0 to 1, default 0): each wait is drawn uniformly from `[d × (1 − j), d]`, where
//!   `d` is the wait above. It only ever shortens a wait, so `maxDelay` still bounds it, and
//!   `j = 0` is exact.

use std::{
    hash::{BuildHasher, RandomState},
    sync::atomic::{AtomicU64, Ordering},
    time::Duration,
};

use serde_json::{Map, Value};

use crate::{
    config::{defaults::MAX_DURATION_MS, json::kind},
    envelope::{BackoffEnvelope, BackoffType},
    error::{Error, Result},
};

/// How the wait grows from one retry to the next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BackoffKind {
    /// The same wait every time.
    Fixed,
    /// The wait doubles after every failed attempt.
    Exponential,
}

/// A validated backoff.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Backoff {
    /// How the wait grows.
    pub kind: BackoffKind,
    /// The first wait.
    pub delay: Duration,
    /// The longest wait (exponential only; `None`: [`MAX_DURATION_MS`]).
    pub max_delay: Option<Duration>,
    /// The fraction (0..=1) of each wait that is randomly taken off.
    pub jitter: f64,
}

impl Backoff {
    /// The same wait after every failure, no jitter.
    pub fn fixed(delay: Duration) -> Self {
        Backoff {
            kind: BackoffKind::Fixed,
            delay,
            max_delay: None,
            jitter: 0.0,
        }
    }

    /// Reads `{ type, delay, maxDelay?, jitter? }`; `what` names it in errors, and `error` makes
    /// the error (invalid config for `options.backoff`, invalid task for a task's own).
    pub fn from_json(what: &str, value: &Value, error: fn(String) -> Error) -> Result<Self> {
        let object = value.as_object().ok_or_else(|| {
            error(format!(
                "{what} must be an object like {{ type: 'exponential', delay: 1000 }}, got {}",
                kind(value)
            ))
        })?;
        if let Some(key) = object
            .keys()
            .find(|k| !["type", "delay", "maxDelay", "jitter"].contains(&k.as_str()))
        {
            return Err(error(format!(
                "{what} has an unknown key {key:?}; known keys are type, delay, maxDelay, jitter"
            )));
        }
        let kind_of = match object.get("type").and_then(Value::as_str) {
            Some("fixed") => BackoffKind::Fixed,
            Some("exponential") => BackoffKind::Exponential,
            _ => {
                return Err(error(format!(
                    "{what}.type must be 'fixed' or 'exponential'"
                )))
            }
        };
        let millis = |key: &str, min: u64| -> Result<Option<Duration>> {
            match object.get(key).filter(|v| !v.is_null()) {
                None => Ok(None),
                Some(value) => match value.as_f64() {
                    Some(n)
                        if n.fract() == 0.0 && n >= min as f64 && n <= MAX_DURATION_MS as f64 =>
                    {
                        Ok(Some(Duration::from_millis(n as u64)))
                    }
                    _ => Err(error(format!(
                        "{what}.{key} must be an integer from {min} to {MAX_DURATION_MS} (ms)"
                    ))),
                },
            }
        };
        let delay =
            millis("delay", 0)?.ok_or_else(|| error(format!("{what}.delay is required (ms)")))?;
        let max_delay = millis("maxDelay", 0)?;
        if let Some(max) = max_delay {
            if max < delay {
                return Err(error(format!(
                    "{what}.maxDelay must not be below {what}.delay"
                )));
            }
        }
        let jitter = jitter_of(what, object, error)?;
        Ok(Backoff {
            kind: kind_of,
            delay,
            max_delay,
            jitter,
        })
    }

    /// The wait before the next attempt after failed attempt `attempt` (from 1), before jitter.
    pub fn base_delay(&self, attempt: u64) -> Duration {
        let longest = self
            .max_delay
            .unwrap_or(Duration::from_millis(MAX_DURATION_MS));
        match self.kind {
            BackoffKind::Fixed => self.delay,
            BackoffKind::Exponential => {
                let doublings = attempt.saturating_sub(1).min(63) as u32;
                let factor = 1u64 << doublings;
                let millis = (self.delay.as_millis() as u64).saturating_mul(factor);
                Duration::from_millis(millis).min(longest)
            }
        }
    }

    /// The wait before the next attempt after failed attempt `attempt` (from 1), with jitter.
    pub fn delay_after(&self, attempt: u64) -> Duration {
        let base = self.base_delay(attempt);
        if self.jitter <= 0.0 {
            return base;
        }
        base.mul_f64(1.0 - self.jitter * random_fraction())
    }
}

impl From<Backoff> for BackoffEnvelope {
    fn from(backoff: Backoff) -> Self {
        BackoffEnvelope {
            r#type: match backoff.kind {
                BackoffKind::Fixed => BackoffType::Fixed,
                BackoffKind::Exponential => BackoffType::Exponential,
            } as i32,
            delay_ms: backoff.delay.as_millis() as u64,
            max_delay_ms: backoff.max_delay.map(|d| d.as_millis() as u64),
            jitter: backoff.jitter,
        }
    }
}

impl Backoff {
    /// A backoff carried in a task envelope, checked like one read from JSON (an envelope from
    /// another producer may hold anything); `None` when it is not valid.
    pub fn from_envelope(envelope: &BackoffEnvelope) -> Option<Self> {
        let kind = match BackoffType::try_from(envelope.r#type).ok()? {
            BackoffType::Fixed => BackoffKind::Fixed,
            BackoffType::Exponential => BackoffKind::Exponential,
            BackoffType::Unspecified => return None,
        };
        let within = |ms: u64| (ms <= MAX_DURATION_MS).then(|| Duration::from_millis(ms));
        let delay = within(envelope.delay_ms)?;
        let max_delay = match envelope.max_delay_ms {
            Some(ms) => Some(within(ms)?.max(delay)),
            None => None,
        };
        let jitter = envelope.jitter;
        (0.0..=1.0).contains(&jitter).then_some(Backoff {
            kind,
            delay,
            max_delay,
            jitter,
        })
    }
}

fn jitter_of(what: &str, object: &Map<String, Value>, error: fn(String) -> Error) -> Result<f64> {
    match object.get("jitter").filter(|v| !v.is_null()) {
        None => Ok(0.0),
        Some(value) => match value.as_f64() {
            Some(j) if (0.0..=1.0).contains(&j) => Ok(j),
            _ => Err(error(format!("{what}.jitter must be a number from 0 to 1"))),
        },
    }
}

/// A number in `[0, 1)`, random enough to spread retries (not for secrets).
fn random_fraction() -> f64 {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let bits = RandomState::new().hash_one(COUNTER.fetch_add(1, Ordering::Relaxed));
    (bits >> 11) as f64 / (1u64 << 53) as f64
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn read(value: Value) -> Result<Backoff> {
        Backoff::from_json("options.backoff", &value, Error::InvalidConfig)
    }

    #[test]
    fn exponential_doubles_up_to_max_delay() {
        let b = read(json!({"type": "exponential", "delay": 100, "maxDelay": 500})).expect("valid");
        let waits: Vec<u128> = (1..=6).map(|n| b.delay_after(n).as_millis()).collect();
        assert_eq!(waits, [100, 200, 400, 500, 500, 500]);
        let unbounded =
            read(json!({"type": "exponential", "delay": MAX_DURATION_MS})).expect("valid");
        assert_eq!(
            unbounded.delay_after(u64::MAX),
            Duration::from_millis(MAX_DURATION_MS)
        );
    }

    #[test]
    fn fixed_ignores_the_attempt() {
        let b = read(json!({"type": "fixed", "delay": 250})).expect("valid");
        assert_eq!(b.delay_after(1), Duration::from_millis(250));
        assert_eq!(b.delay_after(9), Duration::from_millis(250));
    }

    #[test]
    fn jitter_only_shortens_within_its_fraction() {
        let b = read(json!({"type": "fixed", "delay": 1000, "jitter": 0.5})).expect("valid");
        let waits: Vec<Duration> = (0..500).map(|_| b.delay_after(1)).collect();
        assert!(waits
            .iter()
            .all(|w| *w >= Duration::from_millis(500) && *w <= Duration::from_millis(1000)));
        let distinct: std::collections::HashSet<_> = waits.iter().collect();
        assert!(distinct.len() > 100, "jitter spreads the waits");
    }

    #[test]
    fn an_envelope_backoff_is_checked_like_json() {
        let good =
            read(json!({"type": "exponential", "delay": 100, "maxDelay": 400, "jitter": 0.1}))
                .expect("valid");
        assert_eq!(Backoff::from_envelope(&good.into()), Some(good));
        let base = BackoffEnvelope::from(good);
        for bad in [
            BackoffEnvelope { r#type: 0, ..base },
            BackoffEnvelope { r#type: 99, ..base },
            BackoffEnvelope {
                jitter: f64::NAN,
                ..base
            },
            BackoffEnvelope {
                jitter: 2.0,
                ..base
            },
            BackoffEnvelope {
                delay_ms: u64::MAX,
                ..base
            },
            BackoffEnvelope {
                max_delay_ms: Some(u64::MAX),
                ..base
            },
        ] {
            assert_eq!(Backoff::from_envelope(&bad), None, "{bad:?}");
        }
    }

    #[test]
    fn every_mistake_is_refused() {
        for bad in [
            json!(5),
            json!("exponential"),
            json!({"delay": 100}),
            json!({"type": "linear", "delay": 100}),
            json!({"type": "fixed"}),
            json!({"type": "fixed", "delay": -1}),
            json!({"type": "fixed", "delay": 1.5}),
            json!({"type": "fixed", "delay": "100"}),
            json!({"type": "fixed", "delay": MAX_DURATION_MS + 1}),
            json!({"type": "exponential", "delay": 100, "maxDelay": 50}),
            json!({"type": "exponential", "delay": 100, "jitter": 1.5}),
            json!({"type": "exponential", "delay": 100, "jitter": -0.1}),
            json!({"type": "exponential", "delay": 100, "jitter": "0.1"}),
            json!({"type": "exponential", "delay": 100, "factor": 3}),
        ] {
            assert_eq!(
                read(bad.clone()).map_err(|e| e.code()).err(),
                Some("ERR_PQ_INVALID_CONFIG"),
                "{bad}"
            );
        }
    }
}
