//! Riding through a leader election. On a cluster, a stream or consumer whose leader failed has
//! none for seconds: requests to it time out (no answer), or the server answers at once that
//! JetStream is temporarily unavailable (code 10008, [`Error::Unavailable`]). Calls that may be
//! sent again are, until the new leader answers.

use std::{future::Future, time::Duration};

use tokio::time::Instant;

use crate::error::{Error, Result};

/// How often a call that timed out is sent again: each try waited a request timeout already.
const TIMEOUT_RETRIES: usize = 2;
/// How long calls refused as unavailable are sent again, in all.
const UNAVAILABLE_FOR: Duration = Duration::from_secs(10);
/// The first and longest pause before sending a refused call again.
const PAUSE: (Duration, Duration) = (Duration::from_millis(100), Duration::from_secs(1));

/// Runs `call` — idempotent: it creates what is missing, checks what is there, writes the same
/// value again — again when it times out ([`TIMEOUT_RETRIES`] times) or is refused as unavailable
/// (for [`UNAVAILABLE_FOR`]): a worker or producer starting while a node of its cluster fails
/// waits the election out instead of failing.
pub(crate) async fn through_elections<T, F, Fut>(what: &str, call: F) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T>>,
{
    retried(what, TIMEOUT_RETRIES, call).await
}

/// Runs `call` — any call: a refused request did nothing — again while the server refuses it as
/// unavailable (for [`UNAVAILABLE_FOR`]); a timeout (it may have been done) is returned as it is.
pub(crate) async fn while_unavailable<T, F, Fut>(what: &str, call: F) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T>>,
{
    retried(what, 0, call).await
}

async fn retried<T, F, Fut>(what: &str, mut timeouts: usize, mut call: F) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T>>,
{
    let deadline = Instant::now() + UNAVAILABLE_FOR;
    let mut pause = PAUSE.0;
    loop {
        match call().await {
            Err(err @ Error::Timeout { .. }) if timeouts > 0 => {
                timeouts -= 1;
                tracing::debug!("{what}: {err}; trying again (a cluster may be electing a leader)");
            }
            Err(err @ Error::Unavailable { .. }) if Instant::now() + pause < deadline => {
                tracing::debug!("{what}: {err}; trying again in {}ms", pause.as_millis());
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(PAUSE.1);
            }
            other => return other,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;

    fn unavailable() -> Error {
        Error::Unavailable {
            operation: "reading a delayed task".into(),
        }
    }

    fn timeout() -> Error {
        Error::Timeout {
            operation: "reading".into(),
            after: Duration::from_millis(1),
            hint: "",
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_refused_call_is_sent_again_until_the_leader_answers_and_a_timeout_only_when_idempotent(
    ) {
        let calls = AtomicUsize::new(0);
        let answer = || async {
            match calls.fetch_add(1, Ordering::SeqCst) {
                0 | 1 => Err(unavailable()),
                _ => Ok(7),
            }
        };
        assert_eq!(while_unavailable("cancel", answer).await.ok(), Some(7));
        assert_eq!(calls.load(Ordering::SeqCst), 3);

        let calls = AtomicUsize::new(0);
        let timing_out = || async {
            calls.fetch_add(1, Ordering::SeqCst);
            Err::<(), _>(timeout())
        };
        let err = while_unavailable("cancel", timing_out).await.err();
        assert_eq!(err.map(|e| e.code()), Some("ERR_PQ_TIMEOUT"));
        assert_eq!(
            calls.load(Ordering::SeqCst),
            1,
            "not sent again: it may have been done"
        );

        let calls = AtomicUsize::new(0);
        let timing_out = || async {
            calls.fetch_add(1, Ordering::SeqCst);
            Err::<(), _>(timeout())
        };
        assert!(through_elections("open", timing_out).await.is_err());
        assert_eq!(calls.load(Ordering::SeqCst), 1 + TIMEOUT_RETRIES);
    }

    #[tokio::test(start_paused = true)]
    async fn a_call_refused_for_longer_than_an_election_fails_unavailable() {
        let started = Instant::now();
        let refused = || async { Err::<(), _>(unavailable()) };
        let err = through_elections("open", refused).await.err();
        assert!(matches!(err, Some(Error::Unavailable { .. })));
        assert!(started.elapsed() <= UNAVAILABLE_FOR);
        assert_eq!(err.map(|e| e.code()), Some("ERR_PQ_TIMEOUT"));
    }
}
