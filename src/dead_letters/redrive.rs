//! Acting on dead letters: requeueing their tasks and removing them.
//!
//! Both walk the dead-letter stream as it was when they started (oldest first, with an ordered
//! consumer: one pass, no request per letter), pick the letters a [`Filter`] matches, and act on
//! up to [`WINDOW`] at once.
//!
//! A requeued task is published again with the same id (so the user can follow it) and a fresh
//! attempt budget (it is a new message for the server), under a message id of its own:
//! `<task id>:requeue:<letter sequence>`. That id is new to the task stream, so its duplicate
//! window cannot swallow a task requeued seconds after it was first enqueued, and it is the same
//! for every operator requeueing the same letter, so two of them at once store one copy. The
//! letter is removed only after the server confirmed the requeued task. It goes back to the
//! subject it was delivered from (its priority level, [`crate::layout`]) when that subject is
//! still one of the queue's, else to the queue's subject.

use std::{collections::HashSet, future::Future};

use async_nats::jetstream::stream::Stream;
use futures::{stream::FuturesUnordered, StreamExt};

pub use crate::dead_letters::stored::Filter;
use crate::{
    dead_letters::{
        stored::{self as dead_letters, Walk, READ_BATCH},
        write as dead_letter,
    },
    envelope::DeadLetter,
    error::{Error, Result},
    nats::connection::Connection,
    producer::{Outgoing, Publisher},
};

/// Letters acted on at once.
pub const WINDOW: usize = 256;

/// How far a long operation is: letters looked at so far, of how many were stored when it began.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Progress {
    /// Letters looked at.
    pub seen: u64,
    /// Letters stored when the operation began.
    pub total: u64,
    /// Letters acted on.
    pub done: u64,
}

/// Puts the tasks of the matching dead letters back on the queue, each removed from the
/// dead-letter stream once its task is stored; returns how many this call requeued. Letters of
/// messages that were not tasks (`invalidEnvelope`), and letters whose task data was dropped to
/// fit the server's `max_payload`, have nothing to run and are left alone.
pub async fn requeue(
    connection: &Connection,
    filter: &Filter,
    progress: impl Fn(Progress),
) -> Result<u64> {
    let letters = dead_letters::stream(connection).await?;
    refuse_if_deletes_denied(&letters, "requeue")?;
    let history = crate::history::stream_of(connection).await?;
    let max_payload = connection.max_payload();
    let config = connection.config();
    let requeueable =
        |letter: &DeadLetter| letter.task.is_some() && !dead_letter::data_was_dropped(letter);
    let narrowed = |sequence: u64, letter: &DeadLetter| {
        filter.matches(sequence, letter) && requeueable(letter)
    };
    for_each(
        connection,
        &letters,
        filter.sequences.as_ref(),
        &narrowed,
        filter.limit,
        progress,
        |sequence, letter| {
            // Back where its task was delivered from (its priority level), if that is still a
            // subject of the queue's tasks.
            let subject = if crate::layout::holds_tasks(config, &letter.subject) {
                letter.subject.clone()
            } else {
                config.subject.clone()
            };
            let history = history.clone();
            async move {
                let Some(mut task) = letter.task else {
                    return Ok(false);
                };
                // Its record said dead-lettered; its outcome is to come again.
                if let Some(history) = &history {
                    crate::history::forget(connection, history, &task.id).await?;
                }
                // A fresh attempt budget, at once, and a new life: a cancel made before it no
                // longer reaches the task.
                task.attempts_made = 0;
                task.not_before_ms = 0;
                task.requeued_at_ms = crate::envelope::now_ms();
                let message_id = format!("{}:requeue:{sequence}", task.id);
                let mut message = Outgoing::checked(task.id.clone(), task.to_bytes(), max_payload)?;
                message.stored_again_as(message_id, max_payload);
                Publisher::to(connection, subject).publish(message).await?;
                dead_letters::remove(connection, sequence).await
            }
        },
    )
    .await
}

/// Removes the matching dead letters; returns how many this call removed.
pub async fn purge(
    connection: &Connection,
    filter: &Filter,
    progress: impl Fn(Progress),
) -> Result<u64> {
    let letters = dead_letters::stream(connection).await?;
    if filter.is_everything() {
        let purged = letters
            .purge()
            .await
            .map_err(|err| Error::nats("purging the dead-letter stream", err))?;
        progress(Progress {
            seen: purged.purged,
            total: purged.purged,
            done: purged.purged,
        });
        return Ok(purged.purged);
    }
    refuse_if_deletes_denied(&letters, "remove single")?;
    let matches = |sequence: u64, letter: &DeadLetter| filter.matches(sequence, letter);
    for_each(
        connection,
        &letters,
        filter.sequences.as_ref(),
        &matches,
        filter.limit,
        progress,
        |sequence, _| dead_letters::remove(connection, sequence),
    )
    .await
}

/// A dead-letter stream set by another tool to deny deletes cannot have a letter removed once
/// its task is requeued: requeueing would run the task *and* keep the letter (and a later requeue
/// would run it again). Refused before anything is published.
fn refuse_if_deletes_denied(letters: &Stream, what: &str) -> Result<()> {
    let info = letters.cached_info();
    if info.config.deny_delete {
        return Err(Error::StreamConflict(format!(
            "the dead-letter stream {:?} denies deletes (deny_delete), so Protoqueue cannot {what} \
             dead letters without leaving them behind; allow deletes on it (nats stream edit)",
            info.config.name
        )));
    }
    Ok(())
}

/// Walks the letters stored when it starts, oldest first, running `act` on each one `wanted`
/// accepts (at most `limit` of them), [`WINDOW`] at once; returns how many `act` reported done.
async fn for_each<'a, Fut>(
    connection: &Connection,
    letters: &Stream,
    direct: Option<&HashSet<u64>>,
    wanted: &(dyn Fn(u64, &DeadLetter) -> bool + Sync),
    limit: Option<u64>,
    progress: impl Fn(Progress),
    act: impl Fn(u64, DeadLetter) -> Fut,
) -> Result<u64>
where
    Fut: Future<Output = Result<bool>> + 'a,
{
    if let Some(sequences) = direct {
        return for_each_named(connection, sequences, wanted, limit, progress, act).await;
    }
    let mut walk = Walk::start(connection, letters, READ_BATCH).await?;
    let mut status = Progress {
        seen: 0,
        total: walk.total,
        done: 0,
    };
    let mut acting = FuturesUnordered::new();
    let mut taken = 0;
    let mut reading = true;
    while reading || !acting.is_empty() {
        tokio::select! {
            read = walk.next(connection, letters), if reading && acting.len() < WINDOW => {
                let Some((sequence, letter)) = read? else {
                    reading = false;
                    continue;
                };
                status.seen += 1;
                match letter {
                    Some(letter) if wanted(sequence, &letter) && limit.is_none_or(|limit| taken < limit) => {
                        taken += 1;
                        acting.push(act(sequence, letter));
                    }
                    _ => {}
                }
                if limit.is_some_and(|limit| taken >= limit) {
                    reading = false;
                }
            }
            Some(done) = acting.next(), if !acting.is_empty() => {
                if done? {
                    status.done += 1;
                }
                progress(status);
            }
        }
    }
    walk.finish(letters).await;
    progress(status);
    Ok(status.done)
}

/// [`for_each`] over letters named by their sequences: each read directly, oldest first.
async fn for_each_named<'a, Fut>(
    connection: &Connection,
    sequences: &HashSet<u64>,
    wanted: &(dyn Fn(u64, &DeadLetter) -> bool + Sync),
    limit: Option<u64>,
    progress: impl Fn(Progress),
    act: impl Fn(u64, DeadLetter) -> Fut,
) -> Result<u64>
where
    Fut: Future<Output = Result<bool>> + 'a,
{
    let mut sorted: Vec<u64> = sequences.iter().copied().collect();
    sorted.sort_unstable();
    let mut status = Progress {
        seen: 0,
        total: sorted.len() as u64,
        done: 0,
    };
    let mut taken = 0;
    for sequence in sorted {
        status.seen += 1;
        if let Some(stored) = dead_letters::get(connection, sequence).await? {
            if wanted(sequence, &stored.letter) && limit.is_none_or(|limit| taken < limit) {
                taken += 1;
                if act(sequence, stored.letter).await? {
                    status.done += 1;
                }
            }
        }
        progress(status);
    }
    Ok(status.done)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::envelope::{DeadLetterReason, Task};

    fn letter(id: &str, reason: DeadLetterReason) -> DeadLetter {
        DeadLetter {
            task: Some(Task {
                id: id.into(),
                ..Task::default()
            }),
            reason: reason as i32,
            ..DeadLetter::default()
        }
    }

    #[test]
    fn a_filter_matches_by_id_and_reason() {
        let failed = letter("a", DeadLetterReason::RetriesExhausted);
        let rejected = letter("b", DeadLetterReason::Rejected);
        let raw = DeadLetter {
            reason: DeadLetterReason::InvalidEnvelope as i32,
            ..DeadLetter::default()
        };
        assert!(Filter::default().matches(1, &failed) && Filter::default().matches(2, &raw));
        let by_reason = Filter {
            reason: Some(DeadLetterReason::Rejected),
            ..Filter::default()
        };
        assert!(!by_reason.matches(1, &failed) && by_reason.matches(2, &rejected));
        let by_id = Filter {
            ids: Some(HashSet::from(["a".to_owned()])),
            ..Filter::default()
        };
        assert!(
            by_id.matches(1, &failed) && !by_id.matches(2, &rejected) && !by_id.matches(3, &raw)
        );
        let by_sequence = Filter {
            sequences: Some(HashSet::from([2])),
            ..Filter::default()
        };
        assert!(!by_sequence.matches(1, &failed) && by_sequence.matches(2, &failed));
    }
}
