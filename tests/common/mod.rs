//! Shared test support: a real `nats-server` per test (free loopback port, temporary store,
//! SIGKILL and restart on the same port and store), unique queue names, and handlers that record
//! what they were given so tests can await events with bounded timeouts instead of sleeping.

#![allow(dead_code)] // each test binary uses a different part of this module

use std::{
    collections::HashSet,
    fs::OpenOptions,
    future::Future,
    net::{Ipv4Addr, TcpListener},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc,
    },
    time::Duration,
};

use protoqueue::{
    dead_letters::stored as dead_letters, envelope, worker::executor::BoxFuture, Attempt, Config,
    Connection, Handler, NewTask, Outcome, Worker,
};
use tokio::{
    sync::watch,
    time::{timeout, Instant},
};

/// How long a started or restarted server may take to accept connections with JetStream up.
const READY_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a restart keeps trying to bind the old port.
const REBIND_TIMEOUT: Duration = Duration::from_secs(10);

/// The `nats-server` binary: `$NATS_SERVER_BIN`, else the copy `scripts/setup.mjs` installs.
pub fn nats_server_bin() -> PathBuf {
    let path = std::env::var_os("NATS_SERVER_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            Path::new(env!("CARGO_MANIFEST_DIR")).join(".tools/nats-server/bin/nats-server")
        });
    assert!(
        path.is_file(),
        "nats-server not found at {}: run `node scripts/setup.mjs` to install nats-server \
         (or set NATS_SERVER_BIN)",
        path.display()
    );
    path
}

/// A `nats-server` with JetStream on a loopback port and a temporary store, killed on drop.
pub struct NatsServer {
    port: u16,
    name: String,
    dir: tempfile::TempDir,
    config_file: Option<PathBuf>,
    /// How readiness is told: a JetStream request, or (for servers that require credentials or
    /// TLS, which that request lacks) the server's "ready" log line.
    readiness: Readiness,
    /// How many "ready" lines the log held before the last spawn.
    ready_lines_before: usize,
    child: Option<Child>,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Readiness {
    JetStreamAnswers,
    LogSaysReady,
}

/// The line nats-server logs once it accepts clients, JetStream included.
const READY_LINE: &str = "Server is ready";

impl NatsServer {
    /// Starts a server with JetStream and waits until it is ready.
    pub async fn start() -> Self {
        Self::start_with_config("").await
    }

    /// Starts a server with extra configuration-file lines (e.g. `max_payload: 4096`).
    pub async fn start_with_config(config: &str) -> Self {
        Self::start_with(config, Readiness::JetStreamAnswers).await
    }

    /// Starts a server whose configuration requires credentials or TLS (e.g. an
    /// `authorization { ... }` or `tls { ... }` block); it is ready once it says so in its log.
    pub async fn start_secured(config: &str) -> Self {
        Self::start_with(config, Readiness::LogSaysReady).await
    }

    /// Replaces the configuration file; it applies from the next [`NatsServer::restart`].
    pub fn set_config(&mut self, config: &str) {
        let path = self.dir.path().join("nats.conf");
        std::fs::write(&path, config).expect("write the nats-server config file");
        self.config_file = Some(path);
    }

    async fn start_with(config: &str, readiness: Readiness) -> Self {
        let mut server = Self::unstarted(free_port(), config, readiness);
        // A port picked free can be taken before the server binds it: pick again a few times.
        for _ in 0..5 {
            if server.spawn_and_wait(READY_TIMEOUT).await {
                return server;
            }
            server.port = free_port();
        }
        panic!("nats-server did not start; log:\n{}", server.log());
    }

    /// A server on `port` with extra configuration-file lines, not yet running.
    fn unstarted(port: u16, config: &str, readiness: Readiness) -> Self {
        init_logging();
        let dir = tempfile::Builder::new()
            .prefix("protoqueue-nats-")
            .tempdir()
            .expect("create a temporary directory for nats-server");
        let config_file = (!config.is_empty()).then(|| {
            let path = dir.path().join("nats.conf");
            std::fs::write(&path, config).expect("write the nats-server config file");
            path
        });
        NatsServer {
            port,
            name: unique("pq_test_server"),
            dir,
            config_file,
            readiness,
            ready_lines_before: 0,
            child: None,
        }
    }

    /// The server's name (`server_name`), as JetStream reports stream leaders and replicas.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The client URL.
    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    /// The port the server listens on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Kills the server with SIGKILL (no clean shutdown) and waits for it to exit.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the server again on the same port and store (after [`NatsServer::kill`]) and waits
    /// until it is ready. Retries while the port is still busy.
    pub async fn restart(&mut self) {
        self.kill();
        let deadline = Instant::now() + REBIND_TIMEOUT;
        while Instant::now() < deadline {
            if self.spawn_and_wait(READY_TIMEOUT).await {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!(
            "nats-server did not restart on port {}; log:\n{}",
            self.port,
            self.log()
        );
    }

    /// The server's log so far.
    pub fn log(&self) -> String {
        read_log(self.dir.path())
    }

    /// Spawns the server; true once it answers JetStream requests as itself, false if it exited
    /// (e.g. the port was taken).
    async fn spawn_and_wait(&mut self, ready_timeout: Duration) -> bool {
        self.spawn();
        self.wait_ready(ready_timeout).await
    }

    fn spawn(&mut self) {
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join("server.log"))
            .expect("open the nats-server log file");
        self.ready_lines_before = self.log().matches(READY_LINE).count();
        let mut command = Command::new(nats_server_bin());
        if let Some(config_file) = &self.config_file {
            command.arg("-c").arg(config_file);
        }
        command
            .arg("-js")
            .args([
                "-a",
                "127.0.0.1",
                "-p",
                &self.port.to_string(),
                "-n",
                &self.name,
            ])
            .arg("-sd")
            .arg(self.dir.path().join("store"))
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("clone the log file handle"))
            .stderr(log);
        self.child = Some(command.spawn().expect("spawn nats-server"));
    }

    /// True once the spawned server is ready (see [`Readiness`]); false if it exited or
    /// `ready_timeout` passed (then it is killed).
    async fn wait_ready(&mut self, ready_timeout: Duration) -> bool {
        let deadline = Instant::now() + ready_timeout;
        loop {
            if self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
                .is_some()
            {
                self.child = None;
                return false;
            }
            let ready = match self.readiness {
                Readiness::JetStreamAnswers => self.is_ready().await,
                Readiness::LogSaysReady => {
                    self.log().matches(READY_LINE).count() > self.ready_lines_before
                }
            };
            if ready {
                return true;
            }
            if Instant::now() >= deadline {
                self.kill();
                return false;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Whether this server (not another process on the port) answers a JetStream request.
    async fn is_ready(&self) -> bool {
        let attempt = async {
            let client = async_nats::ConnectOptions::new()
                .connection_timeout(Duration::from_millis(500))
                .connect(self.url())
                .await
                .ok()?;
            if client.server_info().server_name != self.name {
                return None;
            }
            let js = async_nats::jetstream::new(client.clone());
            let ready = js.query_account().await.is_ok();
            let _ = client.drain().await;
            ready.then_some(())
        };
        matches!(timeout(Duration::from_secs(2), attempt).await, Ok(Some(())))
    }
}

/// A JetStream cluster of nats-server processes on loopback, routed to each other.
pub struct NatsCluster {
    pub nodes: Vec<NatsServer>,
}

impl NatsCluster {
    /// Starts `size` servers at once (JetStream needs a quorum before any of them is ready) and
    /// waits until each answers JetStream requests.
    pub async fn start(size: usize) -> Self {
        let route_ports: Vec<u16> = (0..size).map(|_| free_port()).collect();
        let routes = route_ports
            .iter()
            .map(|port| format!("nats://127.0.0.1:{port}"))
            .collect::<Vec<_>>()
            .join(", ");
        let mut nodes: Vec<NatsServer> = route_ports
            .iter()
            .map(|route_port| {
                let config = format!(
                    "cluster {{\n  name: pq_test_cluster\n  listen: 127.0.0.1:{route_port}\n  \
                     routes: [{routes}]\n}}\n"
                );
                NatsServer::unstarted(free_port(), &config, Readiness::JetStreamAnswers)
            })
            .collect();
        nodes.iter_mut().for_each(NatsServer::spawn);
        for node in &mut nodes {
            // Electing the meta leader takes a few seconds on a busy machine.
            assert!(
                node.wait_ready(READY_TIMEOUT * 3).await,
                "cluster node {} did not become ready; log:\n{}",
                node.name,
                node.log()
            );
        }
        NatsCluster { nodes }
    }

    /// Every node's client URL, comma-separated, as a user lists a cluster.
    pub fn urls(&self) -> String {
        self.nodes
            .iter()
            .map(NatsServer::url)
            .collect::<Vec<_>>()
            .join(",")
    }

    /// The node called `name`.
    pub fn node_mut(&mut self, name: &str) -> &mut NatsServer {
        self.nodes
            .iter_mut()
            .find(|node| node.name == name)
            .unwrap_or_else(|| panic!("no cluster node is called {name}"))
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        self.kill();
    }
}

fn read_log(dir: &Path) -> String {
    std::fs::read_to_string(dir.join("server.log")).unwrap_or_default()
}

/// A loopback port nothing listens on right now, and never handed out before in this process:
/// ports asked for one after the other (a cluster's route and client ports) may otherwise be the
/// same one, released and given again by the kernel.
pub fn free_port() -> u16 {
    static GIVEN: std::sync::Mutex<Vec<u16>> = std::sync::Mutex::new(Vec::new());
    let mut given = GIVEN
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    loop {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind a free port");
        let port = listener.local_addr().expect("local address").port();
        if !given.contains(&port) {
            given.push(port);
            return port;
        }
    }
}

/// Turns on the crate's logs when `PROTOQUEUE_LOG` is set (they bypass test output capture).
fn init_logging() {
    if std::env::var_os(protoqueue::logging::LOG_ENV).is_some() {
        protoqueue::logging::init();
    }
}

/// A name unique within this machine's test runs: `prefix_PID_N`.
pub fn unique(prefix: &str) -> String {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    format!(
        "{prefix}_{}_{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

/// A unique stream name and subject for one test.
pub fn unique_names() -> (String, String) {
    let stream = unique("PQ_TEST");
    let subject = format!("pqtest.{}", stream.to_lowercase());
    (stream, subject)
}

/// A config with unique names and every option at its default.
pub fn test_config() -> Config {
    let (stream, subject) = unique_names();
    Config::new(stream, subject).expect("valid test config")
}

/// Opens a connection to `server` for `config`.
pub async fn connect(config: &Config, server: &NatsServer) -> Connection {
    Connection::open(Arc::new(config.clone()), &server.url())
        .await
        .expect("connect to nats-server")
}

/// A task with the given data and no metadata.
pub fn task(data: impl Into<Vec<u8>>) -> NewTask {
    NewTask {
        data: data.into().into(),
        metadata: Default::default(),
        ..Default::default()
    }
}

/// `n` tasks whose data is `{"n":I}`.
pub fn numbered_tasks(n: usize) -> Vec<NewTask> {
    (0..n).map(|i| task(format!("{{\"n\":{i}}}"))).collect()
}

/// A [`Handler`] built from a closure.
pub struct FnHandler<F>(F);

impl<F, Fut> Handler for FnHandler<F>
where
    F: Fn(Attempt) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Outcome> + Send + 'static,
{
    fn handle(&self, attempt: Attempt) -> BoxFuture<Outcome> {
        Box::pin((self.0)(attempt))
    }
}

/// A handler from a closure returning a future.
pub fn handler<F, Fut>(f: F) -> Arc<dyn Handler>
where
    F: Fn(Attempt) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Outcome> + Send + 'static,
{
    Arc::new(FnHandler(f))
}

/// One call of a handler.
#[derive(Debug, Clone)]
pub struct Handled {
    /// What the handler was given.
    pub attempt: Attempt,
    /// When it was called.
    pub at: Instant,
    /// Which worker's handler it was (a label chosen by the test).
    pub worker: usize,
}

impl Handled {
    /// The task id.
    pub fn id(&self) -> &str {
        &self.attempt.task.id
    }
}

/// Everything recorded so far, and the distinct task ids among it.
#[derive(Debug, Default)]
pub struct Log {
    pub events: Vec<Handled>,
    pub ids: HashSet<String>,
}

/// Records handler calls; tests await conditions on the record with bounded timeouts.
#[derive(Clone)]
pub struct Recorder {
    log: Arc<watch::Sender<Log>>,
}

impl Default for Recorder {
    fn default() -> Self {
        Recorder {
            log: Arc::new(watch::Sender::new(Log::default())),
        }
    }
}

impl Recorder {
    pub fn new() -> Self {
        Self::default()
    }

    /// Records one call.
    pub fn record(&self, attempt: &Attempt, worker: usize) {
        let handled = Handled {
            attempt: attempt.clone(),
            at: Instant::now(),
            worker,
        };
        self.log.send_modify(|log| {
            log.ids.insert(handled.attempt.task.id.clone());
            log.events.push(handled);
        });
    }

    /// A copy of the calls so far.
    pub fn events(&self) -> Vec<Handled> {
        self.log.borrow().events.clone()
    }

    /// How many calls so far.
    pub fn count(&self) -> usize {
        self.log.borrow().events.len()
    }

    /// How many distinct task ids so far.
    pub fn distinct(&self) -> usize {
        self.log.borrow().ids.len()
    }

    /// Waits until `done` holds for the record; panics with `what` after `limit`.
    pub async fn wait_for(&self, what: &str, limit: Duration, mut done: impl FnMut(&Log) -> bool) {
        let mut rx = self.log.subscribe();
        let waited = timeout(limit, rx.wait_for(|log| done(log))).await;
        match waited {
            Ok(Ok(_)) => {}
            Ok(Err(_)) => unreachable!("the recorder owns its sender"),
            Err(_) => {
                let log = self.log.borrow();
                panic!(
                    "timed out after {limit:?} waiting for {what}: {} calls, {} distinct tasks",
                    log.events.len(),
                    log.ids.len()
                );
            }
        }
    }

    /// Waits until at least `n` calls were recorded.
    pub async fn wait_calls(&self, n: usize, limit: Duration) {
        self.wait_for(&format!("{n} handler calls"), limit, |log| {
            log.events.len() >= n
        })
        .await;
    }

    /// Waits until at least `n` distinct tasks were seen.
    pub async fn wait_distinct(&self, n: usize, limit: Duration) {
        self.wait_for(&format!("{n} distinct tasks"), limit, |log| {
            log.ids.len() >= n
        })
        .await;
    }

    /// Asserts that no call beyond the first `n` arrives within `quiet`.
    pub async fn assert_no_more_calls(&self, n: usize, quiet: Duration) {
        let mut rx = self.log.subscribe();
        if timeout(quiet, rx.wait_for(|log| log.events.len() > n))
            .await
            .is_ok()
        {
            let events = self.events();
            panic!(
                "expected no handler calls beyond {n} within {quiet:?}, got {}: {:?}",
                events.len(),
                events
                    .iter()
                    .map(|e| (e.id().to_owned(), e.attempt.number))
                    .collect::<Vec<_>>()
            );
        }
    }
}

/// A handler that records each call as `worker` and then runs `behaviour`.
pub fn recording<F, Fut>(recorder: &Recorder, worker: usize, behaviour: F) -> Arc<dyn Handler>
where
    F: Fn(Attempt) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Outcome> + Send + 'static,
{
    let recorder = recorder.clone();
    handler(move |attempt| {
        recorder.record(&attempt, worker);
        behaviour(attempt)
    })
}

/// A handler that records each call as `worker` and succeeds at once.
pub fn recording_success(recorder: &Recorder, worker: usize) -> Arc<dyn Handler> {
    recording(recorder, worker, |_| async { Outcome::Success })
}

/// A handler that records each call in `started`, works for `work`, then records it in
/// `finished` and succeeds: for tests about tasks still running.
pub fn recording_slow_success(
    started: &Recorder,
    finished: &Recorder,
    work: Duration,
) -> Arc<dyn Handler> {
    let finished = finished.clone();
    recording(started, 0, move |attempt| {
        let finished = finished.clone();
        async move {
            tokio::time::sleep(work).await;
            finished.record(&attempt, 0);
            Outcome::Success
        }
    })
}

/// Starts a worker, panicking on failure.
pub async fn start_worker(connection: &Connection, handler: Arc<dyn Handler>) -> Worker {
    Worker::start(connection.clone(), handler)
        .await
        .expect("start a worker")
}

/// Polls `check` every 25 ms until it yields `Some`, panicking with `what` after `limit`. For
/// server-side state that has no event to await (stream counters).
pub async fn eventually<T, F, Fut>(what: &str, limit: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + limit;
    loop {
        if let Some(value) = check().await {
            return value;
        }
        if Instant::now() >= deadline {
            panic!("timed out after {limit:?} waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// Waits until the task stream holds `messages` and the dead-letter stream `dead_lettered`.
pub async fn wait_stats(
    connection: &Connection,
    messages: u64,
    dead_lettered: u64,
    limit: Duration,
) {
    let what = format!("{messages} stored tasks and {dead_lettered} dead letters");
    eventually(&what, limit, || async {
        let stats = protoqueue::admin::stats::snapshot(connection).await.ok()?;
        (stats.messages == messages && stats.dead_lettered == dead_lettered).then_some(())
    })
    .await;
}

/// Reads up to 100 dead letters of the queue, oldest first.
pub async fn dead_letters(connection: &Connection) -> Vec<envelope::DeadLetter> {
    dead_letters::list(connection, 100)
        .await
        .expect("list dead letters")
        .into_iter()
        .map(|stored| stored.letter)
        .collect()
}

/// Waits (up to 10 s) until no task is stored and `dead` dead letters are, then returns the dead
/// letters.
pub async fn settled_with_dead_letters(
    connection: &Connection,
    dead: u64,
) -> Vec<envelope::DeadLetter> {
    wait_stats(connection, 0, dead, Duration::from_secs(10)).await;
    let letters = dead_letters(connection).await;
    assert_eq!(
        letters.len() as u64,
        dead,
        "every stored dead letter decodes as a DeadLetter"
    );
    letters
}

/// What a call asked of JetStream, seen by a second client of the same server: every API
/// request (`$JS.API.>`: stream and consumer requests, message and direct gets, consumer pulls)
/// and the bytes of every reply sent to an inbox (`_INBOX.>`).
pub struct ApiTraffic {
    client: async_nats::Client,
    requests: async_nats::Subscriber,
    replies: async_nats::Subscriber,
    echo: async_nats::Subscriber,
    echo_subject: String,
}

/// [`ApiTraffic`] of one call.
#[derive(Debug, Default)]
pub struct Traffic {
    /// The subjects of the API requests, in order.
    pub requests: Vec<String>,
    /// Their payloads, in the same order.
    pub payloads: Vec<bytes::Bytes>,
    /// Bytes (headers and payload) of the replies.
    pub reply_bytes: usize,
}

impl Traffic {
    /// The requests up to the removal of a reading consumer: pulls a consumer's client task
    /// still had under way once the call removed its consumer fetch nothing, and how many there
    /// are depends on the machine's load.
    pub fn until_consumer_deleted(&self) -> &[String] {
        let end = self
            .requests
            .iter()
            .position(|subject| subject.starts_with("$JS.API.CONSUMER.DELETE."))
            .map_or(self.requests.len(), |at| at + 1);
        &self.requests[..end]
    }
}

impl ApiTraffic {
    /// Starts watching `server`'s JetStream API.
    pub async fn watch(server: &NatsServer) -> Self {
        let client = async_nats::connect(server.url())
            .await
            .expect("connect the watching client");
        let requests = client.subscribe("$JS.API.>").await.expect("watch the API");
        let replies = client.subscribe("_INBOX.>").await.expect("watch replies");
        let echo_subject = unique("pqtest.echo");
        let echo = client.subscribe(echo_subject.clone()).await.expect("echo");
        let mut traffic = ApiTraffic {
            client,
            requests,
            replies,
            echo,
            echo_subject,
        };
        traffic.round_trip().await;
        traffic
    }

    /// A message to itself and back: the server handled everything this client sent before
    /// (its subscriptions), and sent it everything it routed to it before.
    async fn round_trip(&mut self) {
        self.client
            .publish(self.echo_subject.clone(), "".into())
            .await
            .expect("echo");
        tokio::time::timeout(
            Duration::from_secs(10),
            futures::StreamExt::next(&mut self.echo),
        )
        .await
        .expect("the echo comes back")
        .expect("echo subscription");
    }

    /// What was seen since the last call (or since [`ApiTraffic::watch`]). The server routes a
    /// request to this client as it takes it in: once the watched call returned, a round trip
    /// sees all of it.
    pub async fn take(&mut self) -> Traffic {
        use futures::FutureExt as _;
        self.round_trip().await;
        let mut traffic = Traffic::default();
        // Unconstrained: tokio's cooperative budget would answer "pending" after 128 messages.
        let ready = |subscriber: &mut async_nats::Subscriber| {
            tokio::task::unconstrained(futures::StreamExt::next(subscriber))
                .now_or_never()
                .flatten()
        };
        while let Some(request) = ready(&mut self.requests) {
            traffic.requests.push(request.subject.to_string());
            traffic.payloads.push(request.payload);
        }
        while let Some(reply) = ready(&mut self.replies) {
            traffic.reply_bytes += reply.length;
        }
        traffic
    }
}
