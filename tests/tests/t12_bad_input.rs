//! Every kind of bad request gets a clear status, and nothing is appended.

use std::collections::BTreeMap;

use bytes::Bytes;
use rafka_client::Admin;
use rafka_proto::batch::{BatchBuilder, Record, HEADER_LEN};
use rafka_proto::v1::broker_client::BrokerClient;
use rafka_proto::v1::list_offsets_request::Spec;
use rafka_proto::v1::{
    Acks, FetchPartition, FetchRequest, ListOffsetsRequest, PartitionRecords, ProduceRequest,
};
use rafka_tests::TestBroker;
use tonic::Code;

fn batch(n: usize, size: usize) -> Vec<u8> {
    let value = vec![b'v'; size];
    let mut b = BatchBuilder::new();
    for _ in 0..n {
        b.append(&Record {
            timestamp: 1,
            value: Some(&value),
            ..Default::default()
        });
    }
    b.seal().to_vec()
}

fn fix_crc(b: &mut [u8]) {
    let crc = crc32fast::hash(&b[21..]);
    b[17..21].copy_from_slice(&crc.to_be_bytes());
}

fn produce(topic: &str, parts: Vec<(u32, Vec<u8>)>) -> ProduceRequest {
    ProduceRequest {
        topic: topic.into(),
        acks: Acks::All as i32,
        partitions: parts
            .into_iter()
            .map(|(partition, records)| PartitionRecords {
                partition,
                records: Bytes::from(records),
            })
            .collect(),
    }
}

async fn high_watermark(c: &mut BrokerClient<tonic::transport::Channel>, partition: u32) -> u64 {
    c.list_offsets(ListOffsetsRequest {
        topic: "t".into(),
        partition,
        spec: Some(Spec::Latest(true)),
    })
    .await
    .unwrap()
    .into_inner()
    .high_watermark
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_produce_requests_get_their_status_and_append_nothing() {
    let broker = TestBroker::start_with(std::sync::Arc::new(tempfile::tempdir().unwrap()), |c| {
        c.max_request_bytes = 64 << 10
    })
    .await;
    Admin::connect(&broker.addr)
        .await
        .unwrap()
        .create_topic("t", 2, 1, BTreeMap::new())
        .await
        .unwrap();
    let mut c = BrokerClient::connect(format!("http://{}", broker.addr))
        .await
        .unwrap();
    // One good batch first, so "unchanged" means something.
    c.produce(produce("t", vec![(0, batch(3, 10))]))
        .await
        .unwrap();
    assert_eq!(high_watermark(&mut c, 0).await, 3);

    let good = batch(2, 10);
    let mut bad_crc = good.clone();
    *bad_crc.last_mut().unwrap() ^= 0x10;
    let mut bad_magic = good.clone();
    bad_magic[16] = 7;
    let mut bad_varint = good.clone();
    for b in &mut bad_varint[HEADER_LEN..HEADER_LEN + 6] {
        *b = 0xff;
    }
    fix_crc(&mut bad_varint);
    let short = good[..good.len() - 5].to_vec();
    let cases: Vec<(&str, ProduceRequest, Code, &str)> = vec![
        (
            "unknown topic",
            produce("nope", vec![(0, good.clone())]),
            Code::NotFound,
            "unknown topic `nope`",
        ),
        (
            "bad partition",
            produce("t", vec![(9, good.clone())]),
            Code::InvalidArgument,
            "no partition 9",
        ),
        (
            "crc",
            produce("t", vec![(0, bad_crc)]),
            Code::InvalidArgument,
            "crc mismatch",
        ),
        (
            "magic",
            produce("t", vec![(0, bad_magic)]),
            Code::InvalidArgument,
            "bad magic",
        ),
        (
            "varint",
            produce("t", vec![(0, bad_varint)]),
            Code::InvalidArgument,
            "bad varint",
        ),
        (
            "length",
            produce("t", vec![(0, short)]),
            Code::InvalidArgument,
            "bad batch length",
        ),
        (
            "empty",
            produce("t", vec![(0, vec![])]),
            Code::InvalidArgument,
            "no records",
        ),
        (
            "too large",
            produce("t", vec![(0, batch(1, 70 << 10))]),
            Code::ResourceExhausted,
            "max.request.bytes",
        ),
        (
            "one bad partition spoils the request",
            produce(
                "t",
                vec![
                    (1, good.clone()),
                    (0, {
                        let mut b = good.clone();
                        b[30] ^= 1;
                        b
                    }),
                ],
            ),
            Code::InvalidArgument,
            "t-0: batch 0",
        ),
        (
            "second batch bad",
            produce("t", vec![(0, [good.clone(), good[..40].to_vec()].concat())]),
            Code::InvalidArgument,
            "batch 1",
        ),
    ];
    for (name, req, code, says) in cases {
        let err = c.produce(req).await.expect_err(name);
        assert_eq!(err.code(), code, "{name}: {}", err.message());
        assert!(
            err.message().contains(says),
            "{name}: `{}` should mention `{says}`",
            err.message()
        );
        assert_eq!(
            high_watermark(&mut c, 0).await,
            3,
            "{name} appended to partition 0"
        );
        assert_eq!(
            high_watermark(&mut c, 1).await,
            0,
            "{name} appended to partition 1"
        );
    }
    let mut bad_acks = produce("t", vec![(0, good.clone())]);
    bad_acks.acks = 42;
    assert_eq!(
        c.produce(bad_acks).await.unwrap_err().code(),
        Code::InvalidArgument
    );

    // Fetching outside the log is out of range, naming the range.
    let err = c
        .fetch(FetchRequest {
            partitions: vec![FetchPartition {
                topic: "t".into(),
                partition: 0,
                offset: 10,
                max_bytes: 0,
                min_offset: 0,
            }],
            min_bytes: 0,
            max_wait_ms: 0,
            max_bytes: 0,
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::OutOfRange);
    assert!(err.message().contains("[0, 3)"), "{}", err.message());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_admin_requests_are_refused() {
    let broker = TestBroker::start().await;
    let admin = Admin::connect(&broker.addr).await.unwrap();
    admin
        .create_topic("ok", 1, 1, BTreeMap::new())
        .await
        .unwrap();
    let cfg = |k: &str, v: &str| BTreeMap::from([(k.to_string(), v.to_string())]);
    let cases = [
        (
            "bad/name",
            1,
            1,
            BTreeMap::new(),
            Code::InvalidArgument,
            "invalid topic name",
        ),
        ("zero", 0, 1, BTreeMap::new(), Code::InvalidArgument, ""),
        (
            "rf",
            1,
            3,
            BTreeMap::new(),
            Code::InvalidArgument,
            "replication factor 3",
        ),
        (
            "cfg",
            1,
            1,
            cfg("cleanup.policy", "compact"),
            Code::InvalidArgument,
            "unknown topic config",
        ),
        (
            "seg",
            1,
            1,
            cfg("segment.bytes", "12"),
            Code::InvalidArgument,
            "segment.bytes",
        ),
        (
            "ok",
            1,
            1,
            BTreeMap::new(),
            Code::AlreadyExists,
            "already exists",
        ),
    ];
    for (name, partitions, rf, configs, code, says) in cases {
        match admin.create_topic(name, partitions, rf, configs).await {
            // A topic with 0 partitions gets the broker's default count.
            Ok(_) if name == "zero" => continue,
            Ok(_) => panic!("{name} was accepted"),
            Err(e) => {
                assert_eq!(e.code(), Some(code), "{name}: {e}");
                assert!(e.to_string().contains(says), "{name}: {e}");
            }
        }
    }
    assert_eq!(
        admin.delete_topic("missing").await.unwrap_err().code(),
        Some(Code::NotFound)
    );
    let names: Vec<String> = admin
        .describe_topics(&[])
        .await
        .unwrap()
        .into_iter()
        .map(|t| t.name)
        .collect();
    assert_eq!(names, ["ok", "zero"]);
}
