//! Defects a client written only from the published .proto and docs/format.md found, each
//! checked through gRPC: overlong varints and undecompressable sections refused on
//! append, internal topics protected, invented group members and commits for missing
//! partitions refused, echoed input bounded, undecodable requests INVALID_ARGUMENT,
//! partition limits.

use std::collections::BTreeMap;
use std::time::Duration;

use bytes::{BufMut, Bytes};
use rafka_client::{Admin, Consumer, ConsumerConfig, SeekTo, TopicPartition};
use rafka_proto::batch::{BatchBuilder, Compression, Record, HEADER_LEN};
use rafka_proto::v1::broker_client::BrokerClient;
use rafka_proto::v1::group_client::GroupClient;
use rafka_proto::v1::{self, list_offsets_request::Spec};
use rafka_tests::cluster::{TestCluster, WAIT};
use rafka_tests::{eventually, TestBroker};
use tonic::transport::Channel;
use tonic::Code;

fn fix_crc(b: &mut [u8]) {
    let crc = crc32fast::hash(&b[21..]);
    b[17..21].copy_from_slice(&crc.to_be_bytes());
}

fn set_len(b: &mut [u8]) {
    let len = (b.len() - 12) as i32;
    b[8..12].copy_from_slice(&len.to_be_bytes());
}

fn produce(topic: &str, partition: u32, records: Vec<u8>) -> v1::ProduceRequest {
    v1::ProduceRequest {
        topic: topic.into(),
        acks: v1::Acks::All as i32,
        partitions: vec![v1::PartitionRecords {
            partition,
            records: Bytes::from(records),
        }],
    }
}

/// A one-record batch whose offset delta is written as `varint` (its bytes as given).
fn batch_with_offset_delta(varint: &[u8]) -> Vec<u8> {
    let mut body = vec![0u8, 0]; // attributes, timestamp delta 0
    body.extend_from_slice(varint);
    body.extend_from_slice(&[0x01, 0x02, b'v', 0x00]); // null key, value "v", no headers
    let mut b = BatchBuilder::new();
    b.append(&Record {
        timestamp: 1_000,
        value: Some(b"v"),
        ..Default::default()
    });
    let mut buf = b.seal().to_vec();
    buf.truncate(HEADER_LEN);
    buf.push((body.len() as u8) << 1); // record length (zig-zag)
    buf.extend_from_slice(&body);
    set_len(&mut buf);
    fix_crc(&mut buf);
    buf
}

/// A one-record batch flagged with `codec` whose records section is `section`.
fn one_record_with_section(codec: Compression, section: Vec<u8>) -> Bytes {
    let mut b = BatchBuilder::new();
    b.append(&Record {
        timestamp: 1_000,
        value: Some(b"v"),
        ..Default::default()
    });
    b.seal_compressed(codec, |_| Some(section))
}

async fn broker_client(addr: &str) -> BrokerClient<Channel> {
    BrokerClient::connect(format!("http://{addr}"))
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn what_the_broker_accepts_every_reader_decodes() {
    let broker = TestBroker::start().await;
    let admin = Admin::connect(&broker.addr).await.unwrap();
    admin
        .create_topic("t", 1, 1, BTreeMap::new())
        .await
        .unwrap();
    let mut c = broker_client(&broker.addr).await;

    // Offset delta 0 in 5 bytes (the widest a varint field takes) is accepted; in 6
    // bytes it is refused, with the field named.
    c.produce(produce(
        "t",
        0,
        batch_with_offset_delta(&[0x80, 0x80, 0x80, 0x80, 0x00]),
    ))
    .await
    .expect("a 5-byte varint");
    let err = c
        .produce(produce(
            "t",
            0,
            batch_with_offset_delta(&[0x80, 0x80, 0x80, 0x80, 0x80, 0x00]),
        ))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument, "{}", err.message());
    assert!(
        err.message().contains("offset delta is too long"),
        "{}",
        err.message()
    );

    // An lz4 batch whose section is not lz4, and a zstd one whose records do not frame.
    let sealed = one_record_with_section(Compression::Lz4, b"not lz4 at all".to_vec());
    let err = c
        .produce(produce("t", 0, sealed.to_vec()))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(
        err.message().contains("does not decompress"),
        "{}",
        err.message()
    );
    let junk = rafka_proto::batch::compression::compress(Compression::Zstd, &[0xff; 32]).unwrap();
    let sealed = one_record_with_section(Compression::Zstd, junk);
    let err = c
        .produce(produce("t", 0, sealed.to_vec()))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument, "{}", err.message());

    // The partition holds the accepted record only, and stays readable.
    let mut consumer = Consumer::connect(&broker.addr, ConsumerConfig::default())
        .await
        .unwrap();
    let tp = TopicPartition::new("t", 0);
    consumer.assign([tp.clone()]);
    consumer.seek(&tp, SeekTo::Earliest).await.unwrap();
    let records = consumer.poll(Duration::from_secs(5)).await.unwrap();
    assert_eq!(records.len(), 1);
    assert_eq!(records[0].value.as_deref(), Some(&b"v"[..]));
    let by_time = c
        .list_offsets(v1::ListOffsetsRequest {
            topic: "t".into(),
            partition: 0,
            spec: Some(Spec::Timestamp(0)),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(by_time.offset, Some(0));
}

/// A gRPC call whose request body is `payload` as is (not necessarily protobuf).
async fn raw_call(addr: &str, path: &'static str, payload: Vec<u8>) -> tonic::Status {
    #[derive(Default)]
    struct Raw;
    impl tonic::codec::Codec for Raw {
        type Encode = Vec<u8>;
        type Decode = Vec<u8>;
        type Encoder = Raw;
        type Decoder = Raw;
        fn encoder(&mut self) -> Raw {
            Raw
        }
        fn decoder(&mut self) -> Raw {
            Raw
        }
    }
    impl tonic::codec::Encoder for Raw {
        type Item = Vec<u8>;
        type Error = tonic::Status;
        fn encode(
            &mut self,
            item: Vec<u8>,
            dst: &mut tonic::codec::EncodeBuf<'_>,
        ) -> Result<(), tonic::Status> {
            dst.put_slice(&item);
            Ok(())
        }
    }
    impl tonic::codec::Decoder for Raw {
        type Item = Vec<u8>;
        type Error = tonic::Status;
        fn decode(
            &mut self,
            src: &mut tonic::codec::DecodeBuf<'_>,
        ) -> Result<Option<Vec<u8>>, tonic::Status> {
            use bytes::Buf;
            Ok(Some(src.copy_to_bytes(src.remaining()).to_vec()))
        }
    }
    let channel = Channel::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut grpc = tonic::client::Grpc::new(channel);
    grpc.ready().await.unwrap();
    grpc.unary(
        tonic::Request::new(payload),
        tonic::codegen::http::uri::PathAndQuery::from_static(path),
        Raw,
    )
    .await
    .expect_err("garbage is refused")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_requests_get_the_real_answer_in_a_bounded_message() {
    let broker = TestBroker::start_with(std::sync::Arc::new(tempfile::tempdir().unwrap()), |c| {
        c.max_partitions_per_topic = 8;
        c.max_partitions = 10;
    })
    .await;
    let admin = Admin::connect(&broker.addr).await.unwrap();
    let mut c = broker_client(&broker.addr).await;

    // Not protobuf at all: the sender's fault.
    for path in ["/rafka.v1.Broker/Produce", "/rafka.v1.Group/CommitOffsets"] {
        let status = raw_call(&broker.addr, path, vec![0xff, 0xff, 0xff, 0xff]).await;
        assert_eq!(status.code(), Code::InvalidArgument, "{path}: {status:?}");
        assert!(
            status.message().contains("not valid protobuf"),
            "{status:?}"
        );
    }

    // A megabyte of name: the real answer, with the name cut short.
    let huge = "x".repeat(1 << 20);
    let err = c
        .list_offsets(v1::ListOffsetsRequest {
            topic: huge.clone(),
            partition: 0,
            spec: Some(Spec::Latest(true)),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound);
    assert!(err.message().len() < 1024, "{} bytes", err.message().len());
    assert!(
        err.message().contains("(1048576 bytes)"),
        "{}",
        err.message()
    );
    let err = c.produce(produce(&huge, 0, vec![1])).await.unwrap_err();
    assert_eq!(err.code(), Code::NotFound);
    assert!(err.message().len() < 1024);
    let mut g = GroupClient::connect(format!("http://{}", broker.addr))
        .await
        .unwrap();
    let err = g
        .find_coordinator(v1::FindCoordinatorRequest {
            group: huge.clone(),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(err.message().len() < 1024);
    let err = admin
        .create_topic(&huge, 1, 1, BTreeMap::new())
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some(Code::InvalidArgument));
    assert!(err.to_string().len() < 1024);

    // Partition limits, per topic and in all.
    let err = admin
        .create_topic("wide", 9, 1, BTreeMap::new())
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some(Code::InvalidArgument));
    assert!(
        err.to_string().contains("max_partitions_per_topic"),
        "{err}"
    );
    admin
        .create_topic("a", 8, 1, BTreeMap::new())
        .await
        .unwrap();
    let err = admin
        .create_topic("b", 3, 1, BTreeMap::new())
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some(Code::InvalidArgument));
    assert!(err.to_string().contains("max_partitions"), "{err}");
    admin
        .create_topic("b", 2, 1, BTreeMap::new())
        .await
        .unwrap();
}

fn error_header(s: &tonic::Status) -> Option<&str> {
    s.metadata()
        .get("rafka-error")
        .and_then(|v| v.to_str().ok())
}

async fn commit(
    g: &mut GroupClient<Channel>,
    group: &str,
    topic: &str,
    partition: u32,
    offset: u64,
) -> Result<(), tonic::Status> {
    g.commit_offsets(v1::CommitOffsetsRequest {
        group: group.into(),
        offsets: vec![v1::CommittedOffset {
            topic: topic.into(),
            partition,
            offset,
            metadata: String::new(),
        }],
        member_id: String::new(),
        member_epoch: 0,
    })
    .await
    .map(|_| ())
}

async fn committed(g: &mut GroupClient<Channel>, group: &str) -> Vec<(String, u32, u64)> {
    g.fetch_offsets(v1::FetchOffsetsRequest {
        group: group.into(),
        partitions: vec![],
    })
    .await
    .unwrap()
    .into_inner()
    .offsets
    .into_iter()
    .map(|o| (o.topic, o.partition, o.offset))
    .collect()
}

/// A Group client on `group`'s coordinator.
async fn coordinator(bootstrap: &str, group: &str) -> GroupClient<Channel> {
    let first = bootstrap.split(',').next().unwrap();
    let g = GroupClient::connect(format!("http://{first}"))
        .await
        .unwrap();
    let found = std::sync::Mutex::new(String::new());
    let found_ref = &found;
    eventually("a coordinator", WAIT, || {
        let mut g = g.clone();
        async move {
            match g
                .find_coordinator(v1::FindCoordinatorRequest {
                    group: group.into(),
                })
                .await
            {
                Ok(r) => {
                    *found_ref.lock().unwrap() = r.into_inner().address;
                    true
                }
                Err(_) => false,
            }
        }
    })
    .await;
    let addr = found.into_inner().unwrap();
    GroupClient::connect(format!("http://{addr}"))
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn internal_topics_and_groups_refuse_what_would_corrupt_them() {
    let cluster = TestCluster::start(3).await;
    let bootstrap = cluster.bootstrap();
    let admin = Admin::connect(&bootstrap).await.unwrap();
    admin
        .create_topic("orders", 2, 3, BTreeMap::new())
        .await
        .unwrap();
    // The first group request reaches a broker that does not lead the metadata: it
    // creates `__consumer_offsets` through the leader (over the peer service).
    let metadata_leader = cluster.node(1).metadata_leader().unwrap();
    let other = (1..=3).find(|&id| id != metadata_leader).unwrap();
    let other_addr = cluster.brokers[other as usize - 1].addr.clone();
    let first = GroupClient::connect(format!("http://{other_addr}"))
        .await
        .unwrap();
    eventually("the offsets topic", WAIT, || {
        let mut first = first.clone();
        async move {
            first
                .find_coordinator(v1::FindCoordinatorRequest {
                    group: "billing".into(),
                })
                .await
                .is_ok()
        }
    })
    .await;
    let mut g = coordinator(&bootstrap, "billing").await;
    commit(&mut g, "billing", "orders", 0, 5).await.unwrap();

    // Clients cannot delete, alter, create or write internal topics.
    let refused = |e: rafka_client::ClientError, what: &str| {
        assert_eq!(e.code(), Some(Code::PermissionDenied), "{what}: {e}");
        assert!(e.to_string().contains("internal"), "{what}: {e}");
    };
    refused(
        admin.delete_topic("__consumer_offsets").await.unwrap_err(),
        "delete",
    );
    refused(
        admin
            .alter_topic_config(
                "__consumer_offsets",
                BTreeMap::from([("retention.ms".to_string(), "1".to_string())]),
            )
            .await
            .unwrap_err(),
        "alter",
    );
    refused(
        admin
            .create_topic("__mine", 1, 1, BTreeMap::new())
            .await
            .unwrap_err(),
        "create",
    );
    let mut forged = BatchBuilder::new();
    forged.append(&Record {
        timestamp: 1,
        key: Some(b"billing"),
        value: Some(br#"{"group":"billing","topic":"orders","partition":0,"offset":0}"#),
        headers: &[],
    });
    for addr in cluster.bootstrap().split(',') {
        let err = broker_client(addr)
            .await
            .produce(produce(
                "__consumer_offsets",
                0,
                forged.clone().seal().to_vec(),
            ))
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::PermissionDenied, "{}", err.message());
    }
    // The commit is still there, and a new one is seen at once.
    assert_eq!(
        committed(&mut g, "billing").await,
        [("orders".into(), 0, 5)]
    );
    commit(&mut g, "billing", "orders", 0, 7).await.unwrap();
    assert_eq!(
        committed(&mut g, "billing").await,
        [("orders".into(), 0, 7)]
    );

    // Commits name partitions that exist; an offset past the end is kept (as Kafka).
    let err = commit(&mut g, "billing", "nope", 0, 1).await.unwrap_err();
    assert_eq!(err.code(), Code::NotFound, "{}", err.message());
    let err = commit(&mut g, "billing", "orders", 9, 1).await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument, "{}", err.message());
    assert!(
        err.message().contains("no partition 9"),
        "{}",
        err.message()
    );
    commit(&mut g, "billing", "orders", 1, 1_000_000)
        .await
        .unwrap();
    assert_eq!(
        committed(&mut g, "billing").await,
        [("orders".into(), 0, 7), ("orders".into(), 1, 1_000_000)]
    );

    // Invented members and epochs get nothing.
    let mut g = coordinator(&bootstrap, "shipping").await;
    let heartbeat = |member_id: &str, member_epoch: i32| v1::GroupHeartbeatRequest {
        group: "shipping".into(),
        member_id: member_id.into(),
        member_epoch,
        topics: vec!["orders".into()],
        ..Default::default()
    };
    let err = g.heartbeat(heartbeat("intruder", 99)).await.unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition, "{}", err.message());
    assert_eq!(error_header(&err), Some("UNKNOWN_MEMBER_ID"));
    let joined = g.heartbeat(heartbeat("", 0)).await.unwrap().into_inner();
    assert_eq!(joined.assignment.len(), 2);
    let err = g
        .heartbeat(heartbeat(&joined.member_id, 99))
        .await
        .unwrap_err();
    assert_eq!(error_header(&err), Some("FENCED_MEMBER_EPOCH"));
    let again = g
        .heartbeat(heartbeat(&joined.member_id, joined.member_epoch))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        again.assignment.len(),
        2,
        "the real member keeps its partitions"
    );
}
