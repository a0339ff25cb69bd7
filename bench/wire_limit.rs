//! The wire limit: the benchmark's workloads written directly on async-nats (no napi, no envelope,
//! no JavaScript), so the numbers show what this machine, this server and this client library can
//! do at best. `bench/run.mjs` starts it like the JavaScript runners, with the run's spec as JSON
//! in the first argument, and speaks the same line protocol on stdin/stdout (see
//! `bench/lib/runner.mjs`): it prints `{"event":"ready"}`, waits for `go`, runs the timed part,
//! prints `{"event":"done",...}`, waits for `finish`, then exits.
//!
//! Build: `cargo build --release --example wire_limit` (run.mjs does it).

use std::{
    future::IntoFuture,
    sync::{
        atomic::{AtomicBool, AtomicUsize, Ordering},
        Mutex, OnceLock,
    },
    time::{Duration, Instant},
};

use async_nats::jetstream::{
    self,
    consumer::{pull, AckPolicy, PullConsumer},
    stream::{self, RetentionPolicy, StorageType},
};
use bytes::Bytes;
use futures::{stream::FuturesOrdered, StreamExt, TryStreamExt};
use serde::Deserialize;
use serde_json::{json, Value};

type Error = Box<dyn std::error::Error + Send + Sync>;

/// One run, as bench/run.mjs describes it (camelCase JSON).
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Spec {
    workload: String,
    n: usize,
    batch_size: usize,
    window: usize,
    rate: f64,
    url: String,
    stream: String,
    subject: String,
    #[serde(default)]
    producers: usize,
}

/// The durable consumer's name; any fixed name does, the stream is new for every run.
const CONSUMER: &str = "bench-workers";

#[tokio::main]
async fn main() -> Result<(), Error> {
    let spec: Spec = serde_json::from_str(
        &std::env::args()
            .nth(1)
            .ok_or("usage: wire_limit '<run spec as JSON>'")?,
    )?;
    let client = async_nats::connect(&spec.url).await?;
    let js = jetstream::new(client.clone());
    let stream = js
        .create_stream(stream::Config {
            name: spec.stream.clone(),
            subjects: vec![spec.subject.clone()],
            retention: RetentionPolicy::WorkQueue,
            storage: StorageType::File,
            ..Default::default()
        })
        .await?;
    let result = match spec.workload.as_str() {
        "w1" => sequential_publish(&js, &spec).await?,
        "w2" => pipelined_publish(&js, &spec).await?,
        "w5" => concurrent_publish(&js, &spec).await?,
        "w3" => {
            publish_window(&js, &spec.subject, payloads(spec.n), spec.window).await?;
            let consumer = create_consumer(&stream).await?;
            process(&consumer, &spec).await?
        }
        "w4" => {
            let consumer = create_consumer(&stream).await?;
            latency(&js, &consumer, &spec).await?
        }
        other => return Err(format!("unknown workload {other:?}").into()),
    };
    // Fire-and-forget acks sit in the client's buffer until flushed.
    client.flush().await?;
    let mut done = json!({ "event": "done" });
    merge(&mut done, result);
    emit(&done);
    expect("finish").await?;
    client.drain().await?;
    Ok(())
}

/// W1: publish, await the ack, next.
async fn sequential_publish(js: &jetstream::Context, spec: &Spec) -> Result<Value, Error> {
    let tasks = payloads(spec.n);
    ready_and_go().await?;
    let start = Instant::now();
    for payload in tasks {
        js.publish(spec.subject.clone(), payload).await?.await?;
    }
    Ok(throughput(spec.n, spec.n, 0, start.elapsed()))
}

/// W5: `producers` concurrent tasks, each publishing and awaiting one message at a time.
async fn concurrent_publish(js: &jetstream::Context, spec: &Spec) -> Result<Value, Error> {
    let tasks = std::sync::Arc::new(std::sync::Mutex::new(payloads(spec.n)));
    ready_and_go().await?;
    let start = Instant::now();
    let producers = (0..spec.producers.max(1)).map(|_| {
        let (js, tasks, subject) = (js.clone(), tasks.clone(), spec.subject.clone());
        tokio::spawn(async move {
            loop {
                let Some(payload) = tasks.lock().map_err(|e| e.to_string())?.pop() else {
                    return Ok::<_, Error>(());
                };
                js.publish(subject.clone(), payload).await?.await?;
            }
        })
    });
    for producer in futures::future::join_all(producers).await {
        producer??;
    }
    Ok(throughput(spec.n, spec.n, 0, start.elapsed()))
}

/// W2: publishes pipelined, up to `window` acks outstanding.
async fn pipelined_publish(js: &jetstream::Context, spec: &Spec) -> Result<Value, Error> {
    let tasks = payloads(spec.n);
    ready_and_go().await?;
    let start = Instant::now();
    publish_window(js, &spec.subject, tasks, spec.window).await?;
    Ok(throughput(spec.n, spec.n, 0, start.elapsed()))
}

async fn publish_window(
    js: &jetstream::Context,
    subject: &str,
    payloads: Vec<Bytes>,
    window: usize,
) -> Result<(), Error> {
    let mut acks = FuturesOrdered::new();
    for payload in payloads {
        if acks.len() >= window {
            if let Some(ack) = acks.next().await {
                ack?;
            }
        }
        acks.push_back(js.publish(subject.to_owned(), payload).await?.into_future());
    }
    while let Some(ack) = acks.next().await {
        ack?;
    }
    Ok(())
}

async fn create_consumer(stream: &stream::Stream) -> Result<PullConsumer, Error> {
    Ok(stream
        .create_consumer(pull::Config {
            durable_name: Some(CONSUMER.into()),
            ack_policy: AckPolicy::Explicit,
            ..Default::default()
        })
        .await?)
}

/// Which task indexes were handled, to count every task exactly once.
struct Tally {
    seen: Vec<AtomicBool>,
    distinct: AtomicUsize,
    duplicates: AtomicUsize,
}

impl Tally {
    fn new(n: usize) -> Self {
        Tally {
            seen: (0..n).map(|_| AtomicBool::new(false)).collect(),
            distinct: AtomicUsize::new(0),
            duplicates: AtomicUsize::new(0),
        }
    }

    fn record(&self, index: usize) {
        match self.seen.get(index) {
            Some(seen) if !seen.swap(true, Ordering::Relaxed) => {
                self.distinct.fetch_add(1, Ordering::Relaxed);
            }
            _ => {
                self.duplicates.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

/// W3: N pre-enqueued tasks, `batchSize` handled at once, each acked; timed from the first
/// handler start to the last handler end.
async fn process(consumer: &PullConsumer, spec: &Spec) -> Result<Value, Error> {
    ready_and_go().await?;
    let tally = Tally::new(spec.n);
    let first = OnceLock::new();
    consume(consumer, spec, |message| {
        first.get_or_init(Instant::now);
        tally.record(task_index(&message.payload)?);
        Ok(())
    })
    .await?;
    let elapsed = first.get().map_or(Duration::ZERO, |t| t.elapsed());
    Ok(throughput(
        spec.n,
        tally.distinct.into_inner(),
        tally.duplicates.into_inner(),
        elapsed,
    ))
}

/// Pulls `spec.n` messages, `batch_size` per pull request, runs `handle` on up to `batch_size` of
/// them at once and acks each (fire and forget, as `ack()` is in every official client).
async fn consume(
    consumer: &PullConsumer,
    spec: &Spec,
    handle: impl Fn(&jetstream::Message) -> Result<(), Error>,
) -> Result<(), Error> {
    let messages = consumer
        .stream()
        .max_messages_per_batch(spec.batch_size)
        .messages()
        .await?;
    messages
        .take(spec.n)
        .map_err(Error::from)
        .try_for_each_concurrent(spec.batch_size, |message| {
            let handled = handle(&message);
            async move {
                handled?;
                message.ack().await
            }
        })
        .await
}

/// W4: a producer publishes at `rate` tasks/s with the send time in the payload; the worker
/// records handler start minus send time.
async fn latency(
    js: &jetstream::Context,
    consumer: &PullConsumer,
    spec: &Spec,
) -> Result<Value, Error> {
    ready_and_go().await?;
    let origin = Instant::now();
    let since_origin_ms = || origin.elapsed().as_secs_f64() * 1e3;
    let tally = Tally::new(spec.n);
    let latencies = Mutex::new(Vec::with_capacity(spec.n));
    let worker = consume(consumer, spec, |message| {
        let task: Value = serde_json::from_slice(&message.payload)?;
        let sent = task["sentAt"].as_f64().ok_or("task without sentAt")?;
        latencies
            .lock()
            .map_err(|_| "poisoned")?
            .push(since_origin_ms() - sent);
        tally.record(task["i"].as_u64().ok_or("task without i")? as usize);
        Ok(())
    });
    let producer = async {
        let mut ticks = tokio::time::interval(Duration::from_secs_f64(1.0 / spec.rate));
        let mut acks = Vec::with_capacity(spec.n);
        for i in 0..spec.n {
            ticks.tick().await;
            let payload = task_json(i, Some(since_origin_ms()));
            let ack = js.publish(spec.subject.clone(), payload).await?;
            acks.push(tokio::spawn(ack.into_future()));
        }
        for ack in acks {
            ack.await??;
        }
        Ok::<_, Error>(())
    };
    tokio::try_join!(worker, producer)?;
    let elapsed = origin.elapsed();
    let mut latencies = latencies.into_inner().map_err(|_| "poisoned")?;
    latencies.sort_by(f64::total_cmp);
    let mut result = throughput(
        spec.n,
        tally.distinct.into_inner(),
        tally.duplicates.into_inner(),
        elapsed,
    );
    merge(
        &mut result,
        json!({ "latency": {
            "p50": percentile(&latencies, 0.50),
            "p99": percentile(&latencies, 0.99),
            "max": latencies.last().copied().unwrap_or(0.0),
        }}),
    );
    Ok(result)
}

/// Nearest-rank percentile of sorted values (the same rule as bench/lib/runner.mjs).
fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = (p * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// The task JSON every runner sends (bench/lib/runner.mjs `taskData` builds the same object).
fn task_json(i: usize, sent_at: Option<f64>) -> Bytes {
    let mut task =
        json!({ "i": i, "to": format!("user{i}@example.com"), "template": "welcome-email" });
    if let Some(sent_at) = sent_at {
        task["sentAt"] = json!(sent_at);
    }
    Bytes::from(task.to_string())
}

fn payloads(n: usize) -> Vec<Bytes> {
    (0..n).map(|i| task_json(i, None)).collect()
}

/// The handler's work: parse the task, as the JavaScript handlers receive parsed data.
fn task_index(payload: &[u8]) -> Result<usize, Error> {
    let task: Value = serde_json::from_slice(payload)?;
    Ok(task["i"].as_u64().ok_or("task without i")? as usize)
}

fn throughput(n: usize, distinct: usize, duplicates: usize, elapsed: Duration) -> Value {
    json!({
        "count": n,
        "distinct": distinct,
        "duplicates": duplicates,
        "elapsedMs": elapsed.as_secs_f64() * 1e3,
    })
}

fn merge(into: &mut Value, from: Value) {
    if let (Value::Object(into), Value::Object(from)) = (into, from) {
        into.extend(from);
    }
}

fn emit(line: &Value) {
    // stdout is line-buffered: println! reaches the driver at once.
    println!("{line}");
}

/// Says "ready" and waits for the driver's "go" (it samples CPU counters in between).
async fn ready_and_go() -> Result<(), Error> {
    emit(&json!({ "event": "ready" }));
    expect("go").await
}

async fn expect(word: &'static str) -> Result<(), Error> {
    let line = tokio::task::spawn_blocking(|| {
        let mut line = String::new();
        std::io::stdin().read_line(&mut line).map(|_| line)
    })
    .await??;
    if line.trim() != word {
        return Err(format!("expected {word:?} from the driver, got {line:?}").into());
    }
    Ok(())
}
