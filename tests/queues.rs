//! `admin::queues::list`: every Protoqueue queue on a real server, found by the stream metadata
//! new streams carry, or (streams of older versions) by their dead-letter stream; foreign
//! streams never listed.

mod common;

use std::sync::Arc;

use async_nats::jetstream::{self, stream::RetentionPolicy};
use common::*;
use protoqueue::{
    admin::queues::{self, FoundBy},
    nats::topology,
    Config, Connection,
};

#[tokio::test]
async fn lists_marked_queues_old_pairs_and_nothing_else() {
    let server = NatsServer::start().await;
    // A queue made by this version: marked.
    let config = test_config();
    let connection = connect(&config, &server).await;

    let client = async_nats::connect(server.url())
        .await
        .expect("plain client");
    let js = jetstream::new(client);
    // A queue as an older version made it: the same pair of streams, no metadata.
    let old = test_config();
    for mut stream in [
        topology::task_stream_config(&old),
        topology::dead_letter_stream_config(&old),
    ] {
        stream.metadata.clear();
        js.create_stream(stream).await.expect("old stream");
    }
    // Foreign streams: a WorkQueue stream alone, and a Limits stream with a `_DLQ` twin.
    let foreign = unique("FOREIGN");
    js.create_stream(jetstream::stream::Config {
        name: foreign.clone(),
        subjects: vec![format!("{}.x", foreign.to_lowercase())],
        retention: RetentionPolicy::WorkQueue,
        ..Default::default()
    })
    .await
    .expect("foreign stream");
    js.create_stream(jetstream::stream::Config {
        name: format!("{foreign}_DLQ"),
        subjects: vec![format!("{}.dead", foreign.to_lowercase())],
        ..Default::default()
    })
    .await
    .expect("foreign dlq");

    let listed = queues::list(&connection).await.expect("list");
    let names: Vec<&str> = listed.iter().map(|q| q.stream_name.as_str()).collect();
    let mut expected = vec![config.stream_name.as_str(), old.stream_name.as_str()];
    expected.sort();
    assert_eq!(names, expected);
    let new = listed
        .iter()
        .find(|q| q.stream_name == config.stream_name)
        .expect("new queue");
    assert_eq!(new.found_by, FoundBy::Marker);
    assert_eq!(new.subject, config.subject);
    assert_eq!(new.dead_letter_stream, Some(config.dead_letter_stream()));
    let older = listed
        .iter()
        .find(|q| q.stream_name == old.stream_name)
        .expect("old queue");
    assert_eq!(older.found_by, FoundBy::DeadLetterStream);
    assert_eq!(older.subject, old.subject);

    assert!(queues::find(&connection, &foreign)
        .await
        .expect("find")
        .is_none());
    assert!(queues::find(&connection, &config.stream_name)
        .await
        .expect("find")
        .is_some());
    connection.close().await;
}

#[tokio::test]
async fn a_bare_connection_lists_without_a_queue_of_its_own() {
    let server = NatsServer::start().await;
    let config = test_config();
    connect(&config, &server).await.close().await;
    // The listing's own configuration names a stream that does not exist: never created.
    let lister = test_config();
    let (shown, listed) = queues::list_at(lister.clone(), Some(&server.url()))
        .await
        .expect("list");
    assert_eq!(shown, server.url());
    assert_eq!(listed.len(), 1);
    let bare = Connection::open_bare(Arc::new(lister.clone()), &server.url())
        .await
        .expect("bare");
    let js = jetstream::new(async_nats::connect(server.url()).await.expect("client"));
    assert!(js.get_stream(&lister.stream_name).await.is_err());
    bare.close().await;
}

#[tokio::test]
async fn listing_masks_credentials_and_fails_with_a_code_when_no_server() {
    let port = free_port();
    let config = Config {
        connect_timeout: std::time::Duration::from_millis(300),
        ..test_config()
    };
    let url = format!("nats://user:s3cret@127.0.0.1:{port}");
    let err = queues::list_at(config, Some(&url))
        .await
        .expect_err("no server");
    assert_eq!(err.code(), "ERR_PQ_CONNECT");
    assert!(!err.to_string().contains("s3cret"));
}
