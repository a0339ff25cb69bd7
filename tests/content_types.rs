//! Task data of other content types than JSON, in the core: a producer's content type and task
//! name travel in the envelope to the worker's attempt (the JavaScript side decodes the data), and
//! a malformed content type or name is refused before anything is sent.

mod common;

use protoqueue::lifecycle;

use std::time::Duration;

use bytes::Bytes;
use common::*;
use protoqueue::{admin::stats, NewTask};

const SOON: Duration = Duration::from_secs(10);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_content_type_and_a_name_reach_the_worker_with_the_bytes() {
    let server = NatsServer::start().await;
    let config = test_config();
    let connection = connect(&config, &server).await;
    let data = Bytes::from_static(b"\x0a\x03o-1\x10\x02\xff");
    let content_type = "application/x-protobuf; messageType=shop.v1.Order";
    lifecycle::enqueue(
        &connection,
        NewTask {
            data: data.clone(),
            content_type: Some(content_type.into()),
            name: Some("order".into()),
            ..Default::default()
        },
    )
    .await
    .expect("enqueue");
    let recorder = Recorder::new();
    let worker = start_worker(&connection, recording_success(&recorder, 0)).await;
    recorder.wait_calls(1, SOON).await;
    let task = recorder.events()[0].attempt.task.clone();
    assert_eq!(task.data, data);
    assert_eq!(task.content_type, content_type);
    assert_eq!(task.name, "order");
    worker.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_malformed_content_type_or_name_is_refused_and_nothing_is_sent() {
    let server = NatsServer::start().await;
    let config = test_config();
    let connection = connect(&config, &server).await;
    let bad = [
        NewTask {
            content_type: Some("not a content type".into()),
            ..task("{}")
        },
        NewTask {
            content_type: Some(String::new()),
            ..task("{}")
        },
        NewTask {
            name: Some(String::new()),
            ..task("{}")
        },
        NewTask {
            name: Some("a\nb".into()),
            ..task("{}")
        },
    ];
    for task in bad {
        let err = lifecycle::enqueue(&connection, task)
            .await
            .expect_err("refused");
        assert_eq!(err.code(), "ERR_PQ_INVALID_TASK");
    }
    let stats = stats::snapshot(&connection).await.expect("stats");
    assert_eq!(stats.messages, 0);
}
