//! Fuzzed frames against a running broker's Kafka listener (issue 18): random bytes,
//! truncated and oversized frames, array counts far past the frame, and every served
//! API at every version with valid requests mutated at random. The broker answers or
//! closes the connection, never crashes, and its memory stays bounded; afterwards it
//! serves a produce and a fetch as before.

use std::collections::BTreeMap;
use std::time::Duration;

use bytes::{BufMut, Bytes, BytesMut};
use kafka_protocol::messages::*;
use kafka_protocol::protocol::{Encodable, Request, StrBytes};
use rafka_client::Admin;
use rafka_tests::kafka::{kafka_batch, KafkaConn};
use rafka_tests::TestBroker;

/// A small deterministic generator (xorshift64*), so a failure can be replayed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
    fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next() as u8).collect()
    }
}

fn rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

fn framed(body: &[u8]) -> Vec<u8> {
    let mut f = (body.len() as i32).to_be_bytes().to_vec();
    f.extend_from_slice(body);
    f
}

/// A request header for `key` at `version`, encoded.
fn header(key: i16, version: i16, header_version: i16) -> BytesMut {
    let mut b = BytesMut::new();
    RequestHeader::default()
        .with_request_api_key(key)
        .with_request_api_version(version)
        .with_correlation_id(1)
        .with_client_id(Some(StrBytes::from_static_str("fuzz")))
        .encode(&mut b, header_version)
        .unwrap();
    b
}

/// The encodings of `R::default()` at every version it encodes at.
fn encodings<R: Request + Default>() -> Vec<(i16, i16, Bytes)> {
    let mut out = Vec::new();
    for v in R::VERSIONS.min..=R::VERSIONS.max {
        let mut body = header(R::KEY, v, R::header_version(v));
        if R::default().encode(&mut body, v).is_ok() {
            out.push((R::KEY, v, body.freeze()));
        }
    }
    out
}

/// Sends `frame` on a fresh connection; the broker must serve on after it (answered or,
/// for acks 0, not) or close the connection. Returns whether it served on.
async fn probe(kafka: &str, frame: &[u8]) -> bool {
    KafkaConn::connect(kafka).await.survives(frame).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fuzzed_frames_neither_crash_the_broker_nor_grow_its_memory() {
    // Mutated CreateTopics and CreatePartitions requests ask for random counts: kept
    // small, so the fuzzing measures robustness, not how fast 10,000 Raft groups start.
    let dir = std::sync::Arc::new(tempfile::tempdir().unwrap());
    let broker = TestBroker::start_with(dir, |c| {
        c.max_partitions_per_topic = 4;
        c.max_partitions = 64;
    })
    .await;
    let admin = Admin::connect(&broker.addr).await.unwrap();
    admin
        .create_topic("fuzz-target", 2, 1, BTreeMap::new())
        .await
        .unwrap();
    let k = broker.kafka.clone();
    let seed = 0x5eed_0018_u64;
    let mut rng = Rng(seed);
    let before = rss_kib();

    // Random bytes, correctly framed and not.
    for _ in 0..200 {
        let n = rng.below(2000) as usize;
        let body = rng.bytes(n);
        probe(&k, &framed(&body)).await;
    }
    // A size far past what a request may be, and negative sizes: closed unread.
    for size in [i32::MAX, 1 << 30, -1, -(1 << 20), 3] {
        let mut c = KafkaConn::connect(&k).await;
        let _ = c.send_raw(&size.to_be_bytes()).await;
        assert!(
            c.closed_by_broker(Duration::from_secs(30)).await,
            "size {size}"
        );
    }
    // Truncated: a frame that promises more than comes, then the client leaves.
    for _ in 0..20 {
        let mut c = KafkaConn::connect(&k).await;
        let mut f = 1000i32.to_be_bytes().to_vec();
        let n = rng.below(900) as usize;
        f.extend(rng.bytes(n));
        drop(tokio::time::timeout(Duration::from_millis(100), c.send_raw(&f)).await);
    }

    // Every served API at every version: its default request mutated at random, and
    // followed by array counts far past the frame.
    let mut valid = Vec::new();
    valid.extend(encodings::<ProduceRequest>());
    valid.extend(encodings::<FetchRequest>());
    valid.extend(encodings::<ListOffsetsRequest>());
    valid.extend(encodings::<MetadataRequest>());
    valid.extend(encodings::<ApiVersionsRequest>());
    valid.extend(encodings::<CreateTopicsRequest>());
    valid.extend(encodings::<DeleteTopicsRequest>());
    valid.extend(encodings::<InitProducerIdRequest>());
    valid.extend(encodings::<DescribeConfigsRequest>());
    valid.extend(encodings::<CreatePartitionsRequest>());
    valid.extend(encodings::<IncrementalAlterConfigsRequest>());
    valid.extend(encodings::<DescribeClusterRequest>());
    assert!(valid.len() > 80, "{} encodings", valid.len());
    for (key, version, body) in &valid {
        let header_len = header(*key, *version, 2).len().min(body.len());
        // As is: served (a topic named "" and the like get their error codes).
        assert!(probe(&k, &framed(body)).await, "API {key} v{version} as is");
        for _ in 0..8 {
            let mut b = body.to_vec();
            let flips = 1 + rng.below(4);
            for _ in 0..flips {
                if b.len() > 8 {
                    let i = 8 + rng.below((b.len() - 8) as u64) as usize;
                    b[i] = rng.next() as u8;
                }
            }
            let extra = rng.below(64) as usize;
            b.extend(rng.bytes(extra));
            probe(&k, &framed(&b)).await;
        }
        // The body replaced by huge counts: int32 and unsigned-varint forms.
        let mut huge = body[..header_len].to_vec();
        huge.put_slice(&[0x7f, 0xff, 0xff, 0xff, 0x7f, 0xff, 0xff, 0xff]);
        probe(&k, &framed(&huge)).await;
        let mut huge_varint = body[..header_len].to_vec();
        huge_varint.put_slice(&[0xff, 0xff, 0xff, 0xff, 0x07, 0xff, 0xff, 0xff, 0xff, 0x07]);
        probe(&k, &framed(&huge_varint)).await;
    }

    let grown = rss_kib().saturating_sub(before);
    assert!(
        grown < 256 * 1024,
        "memory grew by {grown} KiB (seed {seed:#x})"
    );

    // The broker still serves.
    let mut c = KafkaConn::connect(&k).await;
    let produce = ProduceRequest::default()
        .with_transactional_id(None)
        .with_acks(-1)
        .with_timeout_ms(10_000)
        .with_topic_data(vec![produce_request::TopicProduceData::default()
            .with_name(TopicName(StrBytes::from_static_str("fuzz-target")))
            .with_partition_data(vec![
                produce_request::PartitionProduceData::default()
                    .with_index(1)
                    .with_records(Some(Bytes::from(kafka_batch(b"k", &[b"after"], None)))),
            ])]);
    let answer = c.call(9, &produce).await;
    let part = &answer.responses[0].partition_responses[0];
    assert_eq!(part.error_code, 0, "{part:?}");
}
