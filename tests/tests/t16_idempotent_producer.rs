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

/// A broker whose clients reach it through a [`LossyProxy`] (the address it
/// advertises), with a one-partition topic `topic`.
async fn broker_behind_proxy(topic: &str) -> (TestBroker, LossyProxy) {
    let mut proxy = LossyProxy::bind().await;
    let advertised = proxy.addr.to_string();
    let broker = TestBroker::start_with(
        std::sync::Arc::new(tempfile::tempdir().unwrap()),
        move |c| c.advertised_address = Some(advertised),
    )
    .await;
    proxy.start(broker.addr.clone());
    Admin::connect(&broker.addr)
        .await
        .unwrap()
        .create_topic(topic, 1, 1, BTreeMap::new())
        .await
        .unwrap();
    (broker, proxy)
}

/// Sends records 0..100, then record 100 whose answer is lost after it was committed,
/// then 101..200; returns the offset the producer was told for record 100 and the
/// partition's values.
async fn lose_one_answer(idempotent: bool) -> (u64, Vec<String>) {
    let (broker, proxy) = broker_behind_proxy("idem").await;
    let topic = "idem";
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

/// A batch that fails for good (its requests never reach the broker before its delivery
/// timeout) leaves a gap in the producer's sequences. The partition's later batches
/// move to a new producer id and are stored, instead of being refused as out of order
/// behind the missing batch until they fail too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_batch_does_not_block_the_later_batches_of_its_partition() {
    let (broker, proxy) = broker_behind_proxy("gap").await;
    let topic = "gap";
    let producer = Producer::connect(
        &proxy.addr.to_string(),
        ProducerConfig {
            linger: Duration::from_millis(1),
            retry_backoff: Duration::from_millis(20),
            delivery_timeout: Duration::from_secs(1),
            request_timeout: Duration::from_millis(300),
            max_in_flight_per_partition: 5,
            ..ProducerConfig::default()
        },
    )
    .await
    .unwrap();
    let send = |i: usize| producer.send(ProducerRecord::new(topic, i.to_string()).partition(0));
    for i in 0..10 {
        send(i).await.unwrap();
    }
    producer.flush().await;

    proxy.hold_requests();
    let lost = send(10).await.unwrap();
    let outcome = tokio::time::timeout(DEADLINE, lost)
        .await
        .expect("the held record resolves");
    assert!(
        outcome.is_err(),
        "record 10 never reached the broker: {outcome:?}"
    );
    proxy.cut();

    let mut later = Vec::new();
    for i in 11..30 {
        later.push(send(i).await.unwrap());
    }
    for (i, d) in (11..).zip(later) {
        let m = tokio::time::timeout(DEADLINE, d)
            .await
            .expect("resolves")
            .unwrap_or_else(|e| panic!("record {i} after the failed batch: {e}"));
        assert_eq!(
            m.offset,
            i as u64 - 1,
            "record {i} follows the gap directly"
        );
    }
    let expected: Vec<String> = (0..10).chain(11..30).map(|i| i.to_string()).collect();
    assert_eq!(values(&broker.addr, topic, 29).await, expected);
}

/// One batch of `n` records of producer `pid`/`epoch` starting at sequence `seq`.
fn batch(pid: i64, epoch: i16, seq: i32, n: usize) -> bytes::Bytes {
    let mut b = rafka_client::batch::BatchBuilder::new().producer(pid, epoch, seq);
    for i in 0..n {
        let value = format!("{pid}-{}", seq as usize + i);
        b.append(&rafka_client::batch::Record {
            timestamp: 1,
            key: None,
            value: Some(value.as_bytes()),
            headers: &[],
        });
    }
    b.seal()
}

async fn produce(
    client: &mut BrokerClient<tonic::transport::Channel>,
    topic: &str,
    records: bytes::Bytes,
) -> Result<v1::ProducePartitionResult, v1::PartitionError> {
    let r = client
        .produce(v1::ProduceRequest {
            topic: topic.into(),
            acks: v1::Acks::All as i32,
            partitions: vec![v1::PartitionRecords {
                partition: 0,
                records,
            }],
        })
        .await
        .map_err(|s| v1::PartitionError {
            code: s.code() as i32,
            message: s.message().into(),
            ..Default::default()
        })?
        .into_inner();
    let p = r.partitions.into_iter().next().expect("one partition");
    match p.error.clone() {
        Some(e) => Err(e),
        None => Ok(p),
    }
}

/// Raw batches of a producer id against the broker: a batch sent ahead of the one
/// before it waits for it; duplicates of the last five batches get the original
/// offsets, also after a restart (the state is rebuilt from the log and snapshot); an
/// older epoch is fenced; a sequence older than the window is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_leader_orders_dedupes_and_fences_by_sequence() {
    let dir = std::sync::Arc::new(tempfile::tempdir().unwrap());
    let broker = TestBroker::start_with(dir.clone(), |_| {}).await;
    let topic = "seq";
    Admin::connect(&broker.addr)
        .await
        .unwrap()
        .create_topic(topic, 1, 1, BTreeMap::new())
        .await
        .unwrap();
    let mut client = BrokerClient::connect(format!("http://{}", broker.addr))
        .await
        .unwrap();
    let pid = client
        .init_producer_id(v1::InitProducerIdRequest {})
        .await
        .unwrap()
        .into_inner()
        .producer_id;
    let other = client
        .init_producer_id(v1::InitProducerIdRequest {})
        .await
        .unwrap()
        .into_inner()
        .producer_id;
    assert_ne!(pid, other, "producer ids are unique");

    // Sequence 10.. first: it waits until 0..9 is in.
    let mut early = client.clone();
    let ahead =
        tokio::spawn(async move { produce(&mut early, topic, batch(pid, 0, 10, 10)).await });
    let first = produce(&mut client, topic, batch(pid, 0, 0, 10))
        .await
        .unwrap();
    let second = ahead.await.unwrap().unwrap();
    assert_eq!(first.base_offsets, [0]);
    assert_eq!(second.base_offsets, [10]);

    // A duplicate is answered with the original's offsets and stored nothing.
    let again = produce(&mut client, topic, batch(pid, 0, 0, 10))
        .await
        .unwrap();
    assert_eq!(again.base_offsets, [0]);
    assert_eq!(high_watermark(&broker.addr, topic).await, 20);

    // A gap nobody fills: a retriable out-of-order answer after the wait.
    let gap = produce(&mut client, topic, batch(pid, 0, 30, 1))
        .await
        .unwrap_err();
    // (Alone in its request, the partition's error is the request's status.)
    assert_eq!(gap.code, tonic::Code::Aborted as i32, "{gap:?}");
    assert!(gap.message.contains("out of order sequence"), "{gap:?}");

    // The state survives a restart.
    broker.stop().await;
    let broker = TestBroker::start_with(dir, |_| {}).await;
    let mut client = BrokerClient::connect(format!("http://{}", broker.addr))
        .await
        .unwrap();
    let start = tokio::time::Instant::now();
    let retry = loop {
        match produce(&mut client, topic, batch(pid, 0, 10, 10)).await {
            Ok(r) => break r,
            // The partition elects itself again first.
            Err(e) if e.not_leader || e.code == tonic::Code::Unavailable as i32 => {
                assert!(start.elapsed() < DEADLINE, "no leader again: {e:?}");
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            Err(e) => panic!("{e:?}"),
        }
    };
    assert_eq!(retry.base_offsets, [10], "a duplicate after the restart");
    assert_eq!(high_watermark(&broker.addr, topic).await, 20);

    // Five more batches push the first out of the window: its retry is answered as
    // written before, its offset no longer known, and nothing is stored.
    for i in 0..5 {
        let r = produce(&mut client, topic, batch(pid, 0, 20 + i, 1))
            .await
            .unwrap();
        assert_eq!(r.base_offsets, [20 + i as u64]);
    }
    let old = produce(&mut client, topic, batch(pid, 0, 0, 10))
        .await
        .unwrap();
    assert_eq!(old.base_offsets, [u64::MAX]);
    assert_eq!(high_watermark(&broker.addr, topic).await, 25);

    // A newer epoch starts at 0 and fences the older one.
    produce(&mut client, topic, batch(pid, 1, 0, 1))
        .await
        .unwrap();
    let fenced = produce(&mut client, topic, batch(pid, 0, 25, 1))
        .await
        .unwrap_err();
    assert_eq!(fenced.code, tonic::Code::FailedPrecondition as i32);
    assert!(fenced.message.contains("newer epoch"), "{fenced:?}");

    // Idempotent batches need acks=all.
    let leader_acks = client
        .produce(v1::ProduceRequest {
            topic: topic.into(),
            acks: v1::Acks::Leader as i32,
            partitions: vec![v1::PartitionRecords {
                partition: 0,
                records: batch(other, 0, 0, 1),
            }],
        })
        .await
        .unwrap_err();
    assert_eq!(leader_acks.code(), tonic::Code::InvalidArgument);
}
