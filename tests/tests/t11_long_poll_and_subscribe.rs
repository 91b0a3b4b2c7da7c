//! Fetch long polls and Subscribe streams wake up when data arrives.

use std::collections::BTreeMap;
use std::time::Duration;

use futures::StreamExt;
use rafka_client::{Admin, Producer, ProducerConfig, ProducerRecord};
use rafka_proto::v1::broker_client::BrokerClient;
use rafka_proto::v1::{FetchPartition, FetchRequest, SubscribeRequest};
use rafka_tests::TestBroker;

async fn setup() -> (
    TestBroker,
    Producer,
    BrokerClient<tonic::transport::Channel>,
) {
    let broker = TestBroker::start().await;
    Admin::connect(&broker.addr)
        .await
        .unwrap()
        .create_topic("p", 1, 1, BTreeMap::new())
        .await
        .unwrap();
    let producer = Producer::connect(
        &broker.addr,
        ProducerConfig {
            linger: Duration::ZERO,
            ..ProducerConfig::default()
        },
    )
    .await
    .unwrap();
    let client = BrokerClient::connect(format!("http://{}", broker.addr))
        .await
        .unwrap();
    (broker, producer, client)
}

fn fetch(offset: u64, max_wait_ms: u32) -> FetchRequest {
    FetchRequest {
        partitions: vec![FetchPartition {
            topic: "p".into(),
            partition: 0,
            offset,
            max_bytes: 0,
            min_offset: 0,
        }],
        min_bytes: 1,
        max_wait_ms,
        max_bytes: 0,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn long_poll_returns_when_data_arrives() {
    let (_broker, producer, client) = setup().await;
    let mut c = client.clone();
    let started = tokio::time::Instant::now();
    let mut waiting = tokio::spawn(async move { c.fetch(fetch(0, 20_000)).await });
    // Nothing to read: the fetch is parked on the broker.
    assert!(
        tokio::time::timeout(Duration::from_millis(300), &mut waiting)
            .await
            .is_err(),
        "an empty fetch with min_bytes=1 must wait"
    );
    producer
        .send(ProducerRecord::new("p", "wake up"))
        .await
        .unwrap()
        .await
        .unwrap();
    let resp = tokio::time::timeout(Duration::from_secs(10), waiting)
        .await
        .expect("the fetch answers once data arrives")
        .unwrap()
        .unwrap()
        .into_inner();
    assert!(started.elapsed() < Duration::from_secs(15));
    assert!(!resp.partitions[0].records.is_empty());
    assert_eq!(resp.partitions[0].high_watermark, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn long_poll_times_out_empty() {
    let (_broker, _producer, mut client) = setup().await;
    let started = tokio::time::Instant::now();
    let resp = client.fetch(fetch(0, 300)).await.unwrap().into_inner();
    assert!(started.elapsed() >= Duration::from_millis(300));
    assert!(resp.partitions[0].records.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscribe_streams_appends_in_order() {
    let (_broker, producer, mut client) = setup().await;
    let mut stream = client
        .subscribe(SubscribeRequest {
            topic: "p".into(),
            partition: 0,
            offset: 0,
            max_bytes: 0,
        })
        .await
        .unwrap()
        .into_inner();
    let mut next = 0u64;
    for round in 0..5 {
        for i in 0..10 {
            producer
                .send(ProducerRecord::new("p", format!("{round}-{i}")))
                .await
                .unwrap();
        }
        producer.flush().await;
        // Every record of the round arrives on the stream, in order, with nothing skipped.
        while next < (round + 1) * 10 {
            let msg = tokio::time::timeout(Duration::from_secs(10), stream.next())
                .await
                .expect("the stream delivers appended data")
                .expect("stream open")
                .expect("no error");
            let mut rest = &msg.records[..];
            while !rest.is_empty() {
                let (h, len) = rafka_proto::batch::verify_stored(rest).unwrap();
                assert_eq!(h.base_offset as u64, next);
                next = h.next_offset() as u64;
                rest = &rest[len..];
            }
        }
    }
    assert_eq!(next, 50);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_ends_open_subscribe_streams() {
    let (broker, producer, mut client) = setup().await;
    producer
        .send(ProducerRecord::new("p", "before"))
        .await
        .unwrap()
        .await
        .unwrap();
    let mut stream = client
        .subscribe(SubscribeRequest {
            topic: "p".into(),
            partition: 0,
            offset: 0,
            max_bytes: 0,
        })
        .await
        .unwrap()
        .into_inner();
    assert!(stream.next().await.unwrap().is_ok(), "the first batch");
    // The stream is open and idle; a graceful shutdown must not wait for its client.
    tokio::time::timeout(Duration::from_secs(30), broker.stop())
        .await
        .expect("the broker shut down with a stream open");
    let end = tokio::time::timeout(Duration::from_secs(30), stream.next())
        .await
        .expect("the stream ended");
    assert!(!matches!(end, Some(Ok(_))), "{end:?}");
}
