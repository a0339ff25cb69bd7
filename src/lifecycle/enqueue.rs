//! Enqueueing: the entry points for one task, a batch, and the single enqueues of one
//! event-loop turn.
//!
//! A task without an id of its own is one publish ([`crate::producer`]). A task with the
//! producer's own id takes three steps ([`crate::ids`] holds the marker store):
//!
//! 1. **claim** the id: a pending marker with a fresh nonce, create-only. A marker of a task
//!    still stored means the id is taken: nothing is published and the call resolves with the
//!    id. Another producer's fresh pending marker is waited on until it is settled.
//! 2. **publish** the task under `Nats-Msg-Id` `<id>:<nonce>`, re-sent (same id) until it is
//!    confirmed or `enqueueTimeout` runs out.
//! 3. **record** the stored sequence in the marker.
//!
//! Failure windows:
//! - Between 1 and 2 (nothing sent): the marker is removed; if the process dies, it is a pending
//!   marker that goes stale after `enqueueTimeout` (+ a margin), and the next enqueue of the id
//!   replaces it.
//! - During 2 (sent, not confirmed): the marker says "unconfirmed" with the nonce; the next
//!   enqueue of the id publishes under the same nonce, so within the stream's duplicate window a
//!   task that was stored after all is stored once. If the process dies instead, the pending
//!   marker keeps the nonce and serves the same way once stale.
//! - Between 2 and 3: the marker stays pending with the nonce: an enqueue of the id meanwhile
//!   waits, then (once stale) re-publishes under the nonce — a duplicate within the window.
//!
//! A batch with own ids claims all of them first, then publishes every task in call order (so
//! they are stored in that order), then records the markers. Ids repeated within one call are
//! claimed once; the later ones resolve like the first. If a batch fails part-way, its tasks
//! acknowledged before the failure stay enqueued, and the markers of the others are settled as
//! above, so retrying the same batch stores each task once.

use std::collections::HashMap;

use futures::{
    stream::{self, FuturesOrdered, FuturesUnordered},
    StreamExt,
};

use crate::{
    error::{Error, Result},
    ids::{self, Claim},
    nats::connection::Connection,
    producer::{self, NewTask, Outgoing, Publisher, PUBLISH_WINDOW},
};

/// Enqueues one task; resolves to its id once JetStream has stored it.
pub async fn enqueue(connection: &Connection, task: NewTask) -> Result<String> {
    let mut ids = enqueue_batch(connection, vec![task]).await?;
    ids.pop()
        .ok_or_else(|| Error::Nats("enqueue produced no id".into()))
}

/// Enqueues many tasks, pipelined and stored in input order; resolves to their ids in that
/// order once every one is stored.
///
/// Nothing is sent unless every task encodes within the server's `max_payload`. If the batch
/// fails part-way (the server stays unreachable past `enqueueTimeout`), the tasks acknowledged
/// before the failure stay enqueued.
pub async fn enqueue_batch(connection: &Connection, tasks: Vec<NewTask>) -> Result<Vec<String>> {
    let outgoing = producer::encode_all(connection, tasks)?;
    let publisher = Publisher::new(connection);
    if !outgoing.iter().any(|message| message.custom_id) {
        return producer::publish_all(&publisher, outgoing).await;
    }
    let encoded = outgoing.into_iter().map(Ok).collect();
    with_own_ids(&publisher, encoded, Together::Batch)
        .await
        .into_iter()
        .collect()
}

/// Enqueues tasks that were given together but stand alone (single `enqueue` calls of one
/// event-loop turn): each is encoded, published (pipelined with the others, in input order) and
/// confirmed on its own, so one bad or unconfirmed task fails only itself. Results are in input
/// order.
pub async fn enqueue_each(connection: &Connection, tasks: Vec<NewTask>) -> Vec<Result<String>> {
    let encoded: Vec<_> = producer::encode_each(connection, tasks).collect();
    let publisher = Publisher::new(connection);
    let own_ids = encoded
        .iter()
        .any(|message| message.as_ref().is_ok_and(|message| message.custom_id));
    if !own_ids {
        return producer::publish_each(&publisher, encoded).await;
    }
    with_own_ids(&publisher, encoded, Together::Each).await
}

/// How the tasks of one call belong together.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Together {
    /// One `enqueueBatch`: the first failure stops what is not sent yet.
    Batch,
    /// Single enqueues: each stands alone.
    Each,
}

/// What step 1 decided for one task.
enum Step {
    /// Not a task (it did not encode): its error is its result.
    Refused(Error),
    /// No id of its own: published as it is.
    Plain(Outgoing),
    /// Its id is claimed: published under the claim's nonce.
    Claimed(Outgoing, u64, u64),
    /// Its id is taken by a stored task: resolves with the id.
    Taken(String),
    /// The same id as the task at this index of the call: resolves as that one does.
    SameAs(usize, String),
}

/// The three steps for tasks of which some have their own ids (module documentation).
async fn with_own_ids(
    publisher: &Publisher<'_>,
    encoded: Vec<Result<Outgoing>>,
    together: Together,
) -> Vec<Result<String>> {
    let connection = publisher.connection();
    let steps = claim_all(publisher, encoded).await;
    let mut results: Vec<Option<Result<String>>> = (0..steps.len()).map(|_| None).collect();
    let batch_refused =
        together == Together::Batch && steps.iter().any(|step| matches!(step, Step::Refused(_)));
    let mut settling = FuturesUnordered::new();
    let mut in_flight = FuturesOrdered::new();
    let mut failed = batch_refused;
    let mut same_as = Vec::new();
    // Step 2: publish in call order.
    for (index, step) in steps.into_iter().enumerate() {
        let (mut message, claim) = match step {
            Step::Refused(err) => {
                results[index] = Some(Err(err));
                continue;
            }
            Step::Taken(id) => {
                results[index] = Some(Ok(id));
                continue;
            }
            Step::SameAs(first, id) => {
                same_as.push((index, first, id));
                continue;
            }
            Step::Plain(message) => (message, None),
            Step::Claimed(message, marker, nonce) => (message, Some((marker, nonce))),
        };
        if failed {
            if let Some((marker, nonce)) = claim {
                settling.push(settle(connection, message.id, marker, nonce, None));
            }
            continue;
        }
        if let Some((_, nonce)) = claim {
            message.message_id = Some(ids::message_id(&message.id, nonce));
        }
        while in_flight.len() >= PUBLISH_WINDOW {
            if let Some((at, id, claim, result)) = in_flight.next().await {
                failed |= confirmed(
                    &mut results,
                    &mut settling,
                    connection,
                    at,
                    id,
                    claim,
                    result,
                ) && together == Together::Batch;
            }
        }
        match publisher.send(&message).await {
            Ok(sent) => in_flight.push_back(Box::pin(async move {
                let result = publisher.confirm_ack(&message, sent).await;
                let stored = result.map(|ack| (ack.sequence, message.is_delayed()));
                (index, message.id, claim, stored)
            })),
            Err(err) => {
                // It may sit in the client's buffer and still go out.
                let result = Err(err);
                failed |= confirmed(
                    &mut results,
                    &mut settling,
                    connection,
                    index,
                    message.id,
                    claim,
                    result,
                ) && together == Together::Batch;
            }
        }
    }
    while let Some((at, id, claim, result)) = in_flight.next().await {
        confirmed(
            &mut results,
            &mut settling,
            connection,
            at,
            id,
            claim,
            result,
        );
    }
    // Step 3: record the markers.
    while settling.next().await.is_some() {}
    resolve_repeats(&mut results, same_as);
    if together == Together::Batch {
        // The batch fails with its first failure (not with a task it then left unsent).
        if let Some(err) = results
            .iter()
            .flatten()
            .find_map(|result| result.as_ref().err())
        {
            return vec![Err(err.clone())];
        }
    }
    let unsent = || {
        Err(Error::Nats(
            "not enqueued: an earlier task of the batch failed".into(),
        ))
    };
    results
        .into_iter()
        .map(|result| result.unwrap_or_else(unsent))
        .collect()
}

/// A task repeating an id of the call (`(index, first, id)`) resolves as the task at `first`
/// did; when that one was left unsent (the batch failed before it), so is the repeat — the batch
/// then fails with its first real error, not with one made up for the repeat (found by the
/// lifecycle model: a claim that timed out after a kill -9 was reported as "enqueue lost its
/// result").
fn resolve_repeats(results: &mut [Option<Result<String>>], same_as: Vec<(usize, usize, String)>) {
    for (index, first, id) in same_as {
        results[index] = match &results[first] {
            Some(Ok(_)) => Some(Ok(id)),
            Some(Err(err)) => Some(Err(err.clone())),
            None => None,
        };
    }
}

/// Step 1: claims the id of every task that has one, [`PUBLISH_WINDOW`] at once.
async fn claim_all(publisher: &Publisher<'_>, encoded: Vec<Result<Outgoing>>) -> Vec<Step> {
    let connection = publisher.connection();
    let deadline = publisher.deadline();
    let mut first_of: HashMap<String, usize> = HashMap::new();
    let claims = encoded.into_iter().enumerate().map(|(index, message)| {
        let repeated = match &message {
            Ok(message) if message.custom_id => first_of.get(&message.id).copied().or_else(|| {
                first_of.insert(message.id.clone(), index);
                None
            }),
            _ => None,
        };
        async move {
            match (message, repeated) {
                (Err(err), _) => Step::Refused(err),
                (Ok(message), Some(first)) => Step::SameAs(first, message.id),
                (Ok(message), None) if !message.custom_id => Step::Plain(message),
                (Ok(message), None) => match ids::claim(connection, &message.id, deadline).await {
                    Ok(Claim::Ours { marker, nonce }) => Step::Claimed(message, marker, nonce),
                    Ok(Claim::Taken) => Step::Taken(message.id),
                    Err(err) => Step::Refused(err),
                },
            }
        }
    });
    let claims: Vec<_> = claims.collect();
    stream::iter(claims)
        .buffered(PUBLISH_WINDOW)
        .collect()
        .await
}

/// Takes the result of one publish; whether it failed.
fn confirmed<'a>(
    results: &mut [Option<Result<String>>],
    settling: &mut FuturesUnordered<futures::future::BoxFuture<'a, ()>>,
    connection: &'a Connection,
    index: usize,
    id: String,
    claim: Option<(u64, u64)>,
    result: Result<(u64, bool)>,
) -> bool {
    let failed = result.is_err();
    if let Some((marker, nonce)) = claim {
        let stored = result.as_ref().ok().copied();
        settling.push(settle(connection, id.clone(), marker, nonce, Some(stored)));
    }
    results[index] = Some(result.map(|_| id));
    failed
}

/// Step 3 for one claim: `sent` is `None` when the task was never sent, `Some(None)` when it
/// was sent but not confirmed, `Some(Some((sequence, delayed)))` when it was stored there (as a
/// delayed task's schedule).
fn settle(
    connection: &Connection,
    id: String,
    marker: u64,
    nonce: u64,
    sent: Option<Option<(u64, bool)>>,
) -> futures::future::BoxFuture<'_, ()> {
    Box::pin(async move {
        match sent {
            Some(Some((sequence, delayed))) => {
                ids::stored(connection, &id, marker, sequence, delayed).await
            }
            Some(None) => ids::abandon(connection, &id, marker, nonce, true).await,
            None => ids::abandon(connection, &id, marker, nonce, false).await,
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_repeated_id_resolves_as_its_first_task_and_stays_unsent_with_it() {
        let timeout = Error::Nats("claiming the id timed out".into());
        // [a, a again, b (its claim failed), c, c again]: a was left unsent when b failed.
        let mut results = vec![
            None,
            None,
            Some(Err(timeout.clone())),
            Some(Ok("c".to_owned())),
            None,
        ];
        resolve_repeats(
            &mut results,
            vec![(1, 0, "a".to_owned()), (4, 3, "c".to_owned())],
        );
        assert!(results[1].is_none(), "unsent like its first");
        assert!(matches!(&results[4], Some(Ok(id)) if id == "c"));
        let first_error = results
            .iter()
            .flatten()
            .find_map(|result| result.as_ref().err());
        assert_eq!(
            first_error.map(ToString::to_string),
            Some(timeout.to_string()),
            "the batch fails with the real error"
        );
    }
}
