//! Producing and consuming through a real broker over gRPC.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use rafka_client::batch::verify_stored;
use rafka_client::partitioner::partition_for_key;
use rafka_client::{
    Admin, Compression, Consumer, ConsumerConfig, ConsumerRecord, Producer, ProducerConfig,
    ProducerRecord, SeekTo, TopicPartition,
};
use rafka_proto::v1::{self, broker_client::BrokerClient};
use rafka_tests::TestBroker;

const DEADLINE: Duration = Duration::from_secs(60);

/// Polls until `n` records arrived (or the deadline passes).
async fn consume_n(consumer: &mut Consumer, n: usize) -> Vec<ConsumerRecord> {
    let mut out = Vec::with_capacity(n);
    let start = tokio::time::Instant::now();
    while out.len() < n {
        assert!(
            start.elapsed() < DEADLINE,
            "only {} of {n} records arrived",
            out.len()
        );
        out.extend(consumer.poll(Duration::from_millis(500)).await.unwrap());
    }
    out
}

async fn consume_all(addr: &str, topic: &str, partitions: u32, n: usize) -> Vec<ConsumerRecord> {
    let mut consumer = Consumer::connect(addr, ConsumerConfig::default())
        .await
        .unwrap();
    let tps: Vec<_> = (0..partitions)
        .map(|p| TopicPartition::new(topic, p))
        .collect();
    consumer.assign(tps.clone());
    for tp in &tps {
        consumer.seek(tp, SeekTo::Earliest).await.unwrap();
    }
    consume_n(&mut consumer, n).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keyed_records_round_trip_in_order_and_survive_a_restart() {
    let broker = TestBroker::start().await;
    let admin = Admin::connect(&broker.addr).await.unwrap();
    admin
        .create_topic("keyed", 8, 1, BTreeMap::new())
        .await
        .unwrap();
    let producer = Producer::connect(
        &broker.addr,
        ProducerConfig {
            batch_size: 64 << 10,
            ..ProducerConfig::default()
        },
    )
    .await
    .unwrap();
    let total = 200_000usize;
    let mut acks = Vec::with_capacity(total);
    for i in 0..total {
        let key = format!("key-{}", i % 1000);
        let record = ProducerRecord::new("keyed", i.to_string()).key(key);
        acks.push(producer.send(record).await.unwrap());
    }
    producer.flush().await;
    // Where each record was acknowledged, by value.
    let mut written: HashMap<String, (u32, u64)> = HashMap::with_capacity(total);
    for (i, ack) in acks.into_iter().enumerate() {
        let m = ack.await.unwrap();
        let key = format!("key-{}", i % 1000);
        assert_eq!(m.partition, partition_for_key(key.as_bytes(), 8), "{key}");
        written.insert(i.to_string(), (m.partition, m.offset));
    }

    let check = |records: Vec<ConsumerRecord>| {
        assert_eq!(records.len(), total);
        let mut next: HashMap<u32, u64> = HashMap::new();
        let mut last_value_of_key: HashMap<Vec<u8>, u64> = HashMap::new();
        for r in records {
            let value = String::from_utf8(r.value.clone().unwrap().to_vec()).unwrap();
            assert_eq!(written[&value], (r.partition, r.offset), "record {value}");
            // Offsets per partition are contiguous from 0 and in order.
            let expect = next.entry(r.partition).or_insert(0);
            assert_eq!(r.offset, *expect);
            *expect += 1;
            // Each key's records come back in the order they were sent.
            let v: u64 = value.parse().unwrap();
            let key = r.key.unwrap().to_vec();
            if let Some(prev) = last_value_of_key.insert(key, v) {
                assert!(prev < v);
            }
        }
        assert_eq!(next.values().sum::<u64>(), total as u64);
    };
    check(consume_all(&broker.addr, "keyed", 8, total).await);

    let dir = broker.dir();
    broker.stop().await;
    let broker = TestBroker::start_with(dir, |_| {}).await;
    check(consume_all(&broker.addr, "keyed", 8, total).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compressed_and_keyless_records_round_trip() {
    let broker = TestBroker::start().await;
    let admin = Admin::connect(&broker.addr).await.unwrap();
    admin
        .create_topic("c", 3, 1, BTreeMap::new())
        .await
        .unwrap();
    let codecs = [
        Compression::Gzip,
        Compression::Snappy,
        Compression::Lz4,
        Compression::Zstd,
    ];
    for codec in codecs {
        let producer = Producer::connect(
            &broker.addr,
            ProducerConfig {
                compression: codec,
                ..ProducerConfig::default()
            },
        )
        .await
        .unwrap();
        let mut acks = Vec::new();
        for i in 0..3000 {
            let r = ProducerRecord::new("c", format!("{codec:?}-{i}-{}", "x".repeat(50)))
                .header("n", i.to_string());
            acks.push(producer.send(r).await.unwrap());
        }
        producer.flush().await;
        for a in acks {
            a.await.unwrap();
        }
    }
    let records = consume_all(&broker.addr, "c", 3, 12_000).await;
    let mut seen: Vec<String> = records
        .iter()
        .map(|r| String::from_utf8(r.value.clone().unwrap().to_vec()).unwrap())
        .collect();
    seen.sort();
    seen.dedup();
    assert_eq!(seen.len(), 12_000);
    // The log holds each codec's batches as the producer compressed them.
    let mut client = BrokerClient::connect(format!("http://{}", broker.addr))
        .await
        .unwrap();
    let mut stored = std::collections::BTreeSet::new();
    for partition in 0..3 {
        let mut offset = 0;
        loop {
            let resp = client
                .fetch(v1::FetchRequest {
                    partitions: vec![v1::FetchPartition {
                        topic: "c".into(),
                        partition,
                        offset,
                        max_bytes: 1 << 20,
                        min_offset: 0,
                    }],
                    ..Default::default()
                })
                .await
                .unwrap()
                .into_inner();
            let data = &resp.partitions[0];
            let mut rest = &data.records[..];
            while let Ok((h, n)) = verify_stored(rest) {
                stored.insert(h.compression().unwrap().name());
                offset = h.next_offset() as u64;
                rest = &rest[n..];
            }
            if offset >= data.high_watermark {
                break;
            }
        }
    }
    let names: std::collections::BTreeSet<_> = codecs.iter().map(|c| c.name()).collect();
    assert_eq!(stored, names);
    assert!(records
        .iter()
        .all(|r| r.headers.len() == 1 && r.headers[0].key == "n"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seek_by_timestamp_and_latest() {
    let broker = TestBroker::start().await;
    Admin::connect(&broker.addr)
        .await
        .unwrap()
        .create_topic("ts", 1, 1, BTreeMap::new())
        .await
        .unwrap();
    let producer = Producer::connect(&broker.addr, ProducerConfig::default())
        .await
        .unwrap();
    let mut acks = Vec::new();
    for i in 0..100i64 {
        let r = ProducerRecord::new("ts", i.to_string())
            .partition(0)
            .timestamp(1_000_000 + i * 10);
        acks.push(producer.send(r).await.unwrap());
    }
    producer.flush().await;
    for a in acks {
        a.await.unwrap();
    }
    let mut consumer = Consumer::connect(&broker.addr, ConsumerConfig::default())
        .await
        .unwrap();
    let tp = TopicPartition::new("ts", 0);
    consumer.assign([tp.clone()]);
    consumer
        .seek(&tp, SeekTo::Timestamp(1_000_455))
        .await
        .unwrap();
    assert_eq!(consumer.position(&tp), Some(46));
    let first = consume_n(&mut consumer, 54).await;
    assert_eq!(first[0].offset, 46);
    assert_eq!(first[0].timestamp, 1_000_460);
    consumer.seek(&tp, SeekTo::Latest).await.unwrap();
    assert_eq!(consumer.position(&tp), Some(100));
    consumer
        .seek(&tp, SeekTo::Timestamp(9_000_000))
        .await
        .unwrap();
    assert_eq!(consumer.position(&tp), Some(100));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consumer_stream_yields_records_in_order() {
    use futures::StreamExt;
    let broker = TestBroker::start().await;
    Admin::connect(&broker.addr)
        .await
        .unwrap()
        .create_topic("s", 1, 1, BTreeMap::new())
        .await
        .unwrap();
    let producer = Producer::connect(&broker.addr, ProducerConfig::default())
        .await
        .unwrap();
    for i in 0..500 {
        producer
            .send(ProducerRecord::new("s", i.to_string()))
            .await
            .unwrap();
    }
    producer.flush().await;
    let mut consumer = Consumer::connect(&broker.addr, ConsumerConfig::default())
        .await
        .unwrap();
    let tp = TopicPartition::new("s", 0);
    consumer.assign([tp.clone()]);
    consumer.seek(&tp, SeekTo::Offset(100)).await.unwrap();
    let records: Vec<_> =
        tokio::time::timeout(DEADLINE, consumer.stream().take(400).collect::<Vec<_>>())
            .await
            .expect("400 records within the deadline");
    for (i, r) in records.into_iter().enumerate() {
        let r = r.unwrap();
        assert_eq!(r.offset, 100 + i as u64);
        assert_eq!(r.value.unwrap(), (100 + i).to_string().as_bytes());
    }
}
