//! The idempotent producer against a real broker whose answer to a produce is lost on
//! the network (a proxy holds the broker's bytes, then cuts the connection after the
//! batch is committed): the producer's retry is stored once and answered with the
//! original's offset. With idempotence off, the same loss stores the record twice (so
//! the test can tell).

use std::collections::BTreeMap;
use std::time::Duration;

use rafka_client::{
    Admin, Consumer, ConsumerConfig, Producer, ProducerConfig, ProducerRecord, SeekTo,
    TopicPartition,
};
use rafka_proto::v1::{self, broker_client::BrokerClient};
use rafka_tests::proxy::LossyProxy;
use rafka_tests::{eventually, TestBroker};

const DEADLINE: Duration = Duration::from_secs(60);

/// The partition's high watermark, asked of the broker directly (not through the proxy).
async fn high_watermark(addr: &str, topic: &str) -> u64 {
    let mut client = BrokerClient::connect(format!("http://{addr}"))
        .await
        .unwrap();
    client
        .list_offsets(v1::ListOffsetsRequest {
            topic: topic.into(),
            partition: 0,
            spec: Some(v1::list_offsets_request::Spec::Latest(true)),
        })
        .await
        .unwrap()
        .into_inner()
        .high_watermark
}

/// Every value of partition 0, in offset order.
async fn values(addr: &str, topic: &str, n: usize) -> Vec<String> {
    let mut consumer = Consumer::connect(addr, ConsumerConfig::default())
        .await
        .unwrap();
    let tp = TopicPartition::new(topic, 0);
    consumer.assign(vec![tp.clone()]);
    consumer.seek(&tp, SeekTo::Earliest).await.unwrap();
    let mut out = Vec::new();
    let start = tokio::time::Instant::now();
    while out.len() < n {
        assert!(
            start.elapsed() < DEADLINE,
            "only {} of {n} records",
            out.len()
        );
        for r in consumer.poll(Duration::from_millis(200)).await.unwrap() {
            assert_eq!(r.offset as usize, out.len(), "offsets are dense");
            out.push(String::from_utf8(r.value.unwrap().to_vec()).unwrap());
        }
    }
    out
}

/// Sends records 0..100, then record 100 whose answer is lost after it was committed,
/// then 101..200; returns the offset the producer was told for record 100 and the
/// partition's values.
async fn lose_one_answer(idempotent: bool) -> (u64, Vec<String>) {
    let mut proxy = LossyProxy::bind().await;
    let advertised = proxy.addr.to_string();
    let broker = TestBroker::start_with(
        std::sync::Arc::new(tempfile::tempdir().unwrap()),
        move |c| c.advertised_address = Some(advertised),
    )
    .await;
    proxy.start(broker.addr.clone());
    let topic = "idem";
    Admin::connect(&broker.addr)
        .await
        .unwrap()
        .create_topic(topic, 1, 1, BTreeMap::new())
        .await
        .unwrap();
    let producer = Producer::connect(
        &proxy.addr.to_string(),
        ProducerConfig {
            enable_idempotence: Some(idempotent),
            linger: Duration::from_millis(1),
            retry_backoff: Duration::from_millis(20),
            ..ProducerConfig::default()
        },
    )
    .await
    .unwrap();
    let send = |i: usize| producer.send(ProducerRecord::new(topic, i.to_string()).partition(0));
    for i in 0..100 {
        send(i).await.unwrap();
    }
    producer.flush().await;

    proxy.hold();
    let lost = tokio::spawn(send(100).await.unwrap());
    eventually("record 100 committed", DEADLINE, || async {
        high_watermark(&broker.addr, topic).await == 101
    })
    .await;
    assert!(!lost.is_finished(), "the answer was held back");
    proxy.cut();
    let offset = lost
        .await
        .unwrap()
        .expect("record 100 acknowledged after a retry")
        .offset;

    for i in 101..200 {
        send(i).await.unwrap();
    }
    producer.flush().await;
    let n = high_watermark(&broker.addr, topic).await as usize;
    (offset, values(&broker.addr, topic, n).await)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retry_after_a_lost_answer_is_stored_once() {
    let (offset, values) = lose_one_answer(true).await;
    let expected: Vec<String> = (0..200).map(|i| i.to_string()).collect();
    assert_eq!(values, expected, "every record once, in order");
    assert_eq!(
        offset, 100,
        "the retry is answered with the original's offset"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_idempotence_the_same_loss_stores_a_duplicate() {
    let (offset, values) = lose_one_answer(false).await;
    assert_eq!(values.len(), 201);
    assert_eq!(values[100], "100");
    assert_eq!(values[101], "100", "the retry wrote the record again");
    assert_eq!(offset, 101);
}
