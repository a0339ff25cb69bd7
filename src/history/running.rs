//! Which tasks run right now, and how far they got: asked of the live task workers, in every
//! process, over core NATS. Nothing is written while a task runs — a running task costs its
//! worker an entry in memory ([`crate::cancelling::watch::Cancels`]) — so a lookup pays instead:
//! one request on `protoqueue.running.<stream>` that every task worker answers, awaited until
//! each worker the queue's presence lists has answered, or [`ANSWER_WAIT`] passed.

use std::{sync::Weak, time::Duration};

use async_nats::Subscriber;
use futures::StreamExt;
use serde::{Deserialize, Serialize};

use crate::{
    cancelling::watch::{Cancels, RunningTask},
    error::{Error, Result},
    nats::connection::Connection,
};

/// How long an asker waits for the workers' answers (a worker killed without a word is still
/// listed for up to 20 s).
pub const ANSWER_WAIT: Duration = Duration::from_secs(1);
/// The most running tasks one worker lists in an answer.
pub const MAX_LISTED: usize = 10_000;

/// A question to the workers.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Ask {
    /// The task asked about; `None`: every task the worker runs, up to `limit`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    id: Option<String>,
    #[serde(default = "max_listed")]
    limit: usize,
}

fn max_listed() -> usize {
    MAX_LISTED
}

/// Answers the questions about the tasks `cancels` runs, from now until its worker stops (the
/// last handle of `cancels` is dropped) or the connection closes. A worker that cannot listen is
/// still a worker: its tasks are then not seen running (logged).
pub async fn serve(connection: Connection, cancels: Weak<Cancels>) {
    let subject = connection.config().running_subject();
    let Some(stopped) = cancels.upgrade().map(|cancels| cancels.stopped()) else {
        return;
    };
    match connection.client.subscribe(subject).await {
        Ok(questions) => {
            tokio::spawn(answer(connection, cancels, questions, stopped));
        }
        Err(err) => tracing::warn!("this worker's running tasks cannot be looked up: {err}"),
    }
}

async fn answer(
    connection: Connection,
    cancels: Weak<Cancels>,
    mut questions: Subscriber,
    mut stopped: tokio::sync::watch::Receiver<()>,
) {
    loop {
        let question = tokio::select! {
            question = questions.next() => question,
            _ = stopped.changed() => return,
            () = connection.closed() => return,
        };
        let Some(question) = question else { return };
        let Some(cancels) = cancels.upgrade() else {
            return;
        };
        let Some(reply) = question.reply else {
            continue;
        };
        let answer = match serde_json::from_slice::<Ask>(&question.payload) {
            Ok(ask) => cancels.running(ask.id.as_deref(), ask.limit.min(MAX_LISTED)),
            Err(err) => {
                tracing::debug!("skipping a question about running tasks that is not one: {err}");
                continue;
            }
        };
        drop(cancels);
        let Ok(payload) = serde_json::to_vec(&answer) else {
            continue;
        };
        if let Err(err) = connection.client.publish(reply, payload.into()).await {
            tracing::debug!("running tasks not told: {err}");
        }
    }
}

/// The attempts running at task `id` in any worker (usually none or one; two when a worker
/// lost its connection and the server redelivered the task to another).
pub async fn of(connection: &Connection, id: &str) -> Result<Vec<RunningTask>> {
    ask(
        connection,
        &Ask {
            id: Some(id.to_owned()),
            limit: MAX_LISTED,
        },
    )
    .await
}

/// The tasks running in every worker, at most `limit` from each.
pub async fn all(connection: &Connection, limit: usize) -> Result<Vec<RunningTask>> {
    ask(connection, &Ask { id: None, limit }).await
}

async fn ask(connection: &Connection, ask: &Ask) -> Result<Vec<RunningTask>> {
    const ASKING: &str = "asking the workers what they run";
    let workers = crate::presence::task_workers(connection).await?;
    if workers == 0 {
        return Ok(Vec::new());
    }
    let inbox = connection.client.new_inbox();
    let mut answers = connection
        .client
        .subscribe(inbox.clone())
        .await
        .map_err(|err| Error::nats(ASKING, err))?;
    let payload = serde_json::to_vec(ask).map_err(|err| Error::Nats(err.to_string()))?;
    connection
        .client
        .publish_with_reply(connection.config().running_subject(), inbox, payload.into())
        .await
        .map_err(|err| Error::nats(ASKING, err))?;
    let deadline = tokio::time::Instant::now() + ANSWER_WAIT;
    let mut running = Vec::new();
    for _ in 0..workers {
        let message = match tokio::time::timeout_at(deadline, answers.next()).await {
            Ok(Some(message)) => message,
            Ok(None) | Err(_) => break,
        };
        match serde_json::from_slice::<Vec<RunningTask>>(&message.payload) {
            Ok(tasks) => running.extend(tasks),
            Err(err) => tracing::debug!("skipping an answer about running tasks: {err}"),
        }
    }
    Ok(running)
}
