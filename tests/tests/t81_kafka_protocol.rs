//! The Kafka listener's answers, request by request (issue 18): ApiVersions (and its v0
//! answer to a version it does not know), Kafka's error codes for what goes wrong, the
//! new leader named on NOT_LEADER_OR_FOLLOWER, produce without a principal refused when
//! auth is on, and produce requests in flight together answered in order.

use std::collections::BTreeMap;

use bytes::Bytes;
use kafka_protocol::error::ResponseError as E;
use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::produce_response::PartitionProduceResponse;
use kafka_protocol::messages::*;
use kafka_protocol::protocol::{Decodable, StrBytes};
use rafka_client::Admin;
use rafka_tests::cluster::TestCluster;
use rafka_tests::kafka::{kafka_batch, sealed_for_kafka, KafkaConn};
use rafka_tests::TestBroker;

fn name(s: &str) -> TopicName {
    TopicName(StrBytes::from_string(s.to_string()))
}

/// ListOffsets for `topic`'s partition 0 at `timestamp` (or -1 latest, -3 largest).
fn list_offsets(topic: &str, timestamp: i64) -> ListOffsetsRequest {
    ListOffsetsRequest::default()
        .with_replica_id(BrokerId(-1))
        .with_topics(vec![list_offsets_request::ListOffsetsTopic::default()
            .with_name(name(topic))
            .with_partitions(vec![
                list_offsets_request::ListOffsetsPartition::default()
                    .with_partition_index(0)
                    .with_timestamp(timestamp),
            ])])
}

fn produce_request(topic: &str, partition: i32, records: Vec<u8>) -> ProduceRequest {
    ProduceRequest::default()
        .with_acks(-1)
        .with_timeout_ms(10_000)
        .with_topic_data(vec![TopicProduceData::default()
            .with_name(name(topic))
            .with_partition_data(vec![PartitionProduceData::default()
                .with_index(partition)
                .with_records(Some(Bytes::from(records)))])])
}

async fn produce(
    c: &mut KafkaConn,
    version: i16,
    topic: &str,
    partition: i32,
    records: Vec<u8>,
) -> PartitionProduceResponse {
    let request = produce_request(topic, partition, records);
    let mut answer = c.call(version, &request).await;
    answer.responses.remove(0).partition_responses.remove(0)
}

async fn fetch(c: &mut KafkaConn, topic: &str, offset: i64) -> fetch_response::PartitionData {
    let request = FetchRequest::default()
        .with_max_wait_ms(0)
        .with_max_bytes(1 << 20)
        .with_topics(vec![FetchTopic::default()
            .with_topic(name(topic))
            .with_partitions(vec![FetchPartition::default()
                .with_partition(0)
                .with_fetch_offset(offset)
                .with_partition_max_bytes(1 << 20)])]);
    let mut answer = c.call(12, &request).await;
    answer.responses.remove(0).partitions.remove(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_versions_lists_what_is_served_and_answers_a_newer_version_in_v0() {
    let broker = TestBroker::start().await;
    let mut c = KafkaConn::connect(&broker.kafka).await;
    let answer = c
        .call(
            3,
            &ApiVersionsRequest::default()
                .with_client_software_name(StrBytes::from_static_str("tests"))
                .with_client_software_version(StrBytes::from_static_str("1")),
        )
        .await;
    assert_eq!(answer.error_code, 0);
    let range = |key: ApiKey| {
        let v = answer
            .api_keys
            .iter()
            .find(|v| v.api_key == key as i16)
            .unwrap_or_else(|| panic!("{key:?} listed"));
        (v.min_version, v.max_version)
    };
    assert_eq!(range(ApiKey::Produce), (3, 13));
    assert_eq!(range(ApiKey::Fetch), (4, 18));
    assert_eq!(range(ApiKey::Metadata).1, 13);
    assert_eq!(range(ApiKey::ApiVersions), (0, 4));

    // ApiVersions v99: header v1, then nothing; the answer is in the v0 layout.
    let mut raw = Vec::new();
    raw.extend_from_slice(&10i32.to_be_bytes());
    raw.extend_from_slice(&18i16.to_be_bytes());
    raw.extend_from_slice(&99i16.to_be_bytes());
    raw.extend_from_slice(&77i32.to_be_bytes());
    raw.extend_from_slice(&(-1i16).to_be_bytes());
    let mut body = c.send_raw(&raw).await.expect("an answer");
    let correlation = ResponseHeader::decode(&mut body, 0).unwrap().correlation_id;
    assert_eq!(correlation, 77);
    let v0 = ApiVersionsResponse::decode(&mut body, 0).unwrap();
    assert_eq!(v0.error_code, E::UnsupportedVersion.code());
    assert!(v0
        .api_keys
        .iter()
        .any(|v| v.api_key == ApiKey::Produce as i16));
    // The connection serves on.
    let again = c.call(0, &ApiVersionsRequest::default()).await;
    assert_eq!(again.error_code, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failures_are_answered_in_kafkas_error_codes_and_append_nothing() {
    let broker = TestBroker::start().await;
    let admin = Admin::connect(&broker.addr).await.unwrap();
    admin
        .create_topic("e", 1, 1, BTreeMap::new())
        .await
        .unwrap();
    admin
        .create_topic(
            "small",
            1,
            1,
            BTreeMap::from([
                ("segment.bytes".to_string(), "1024".to_string()),
                ("index.interval.bytes".to_string(), "512".to_string()),
            ]),
        )
        .await
        .unwrap();
    let mut c = KafkaConn::connect(&broker.kafka).await;

    let ok = produce(
        &mut c,
        9,
        "e",
        0,
        kafka_batch(b"k", &[b"one", b"two"], None),
    )
    .await;
    assert_eq!((ok.error_code, ok.base_offset), (0, 0));

    let unknown = produce(&mut c, 9, "nope", 0, kafka_batch(b"k", &[b"x"], None)).await;
    assert_eq!(unknown.error_code, E::UnknownTopicOrPartition.code());
    let no_partition = produce(&mut c, 9, "e", 7, kafka_batch(b"k", &[b"x"], None)).await;
    assert_eq!(no_partition.error_code, E::UnknownTopicOrPartition.code());

    let mut damaged = kafka_batch(b"k", &[b"three"], None);
    let last = damaged.len() - 2;
    damaged[last] ^= 0x40;
    let corrupt = produce(&mut c, 9, "e", 0, damaged).await;
    assert_eq!(corrupt.error_code, E::CorruptMessage.code());
    assert!(
        corrupt
            .error_message
            .as_deref()
            .unwrap_or("")
            .contains("crc"),
        "{:?}",
        corrupt.error_message
    );

    let big = vec![b'x'; 4096];
    let too_large = produce(&mut c, 9, "small", 0, kafka_batch(b"k", &[&big], None)).await;
    assert_eq!(too_large.error_code, E::MessageTooLarge.code());

    let out_of_range = fetch(&mut c, "e", 1000).await;
    assert_eq!(out_of_range.error_code, E::OffsetOutOfRange.code());
    // Nothing refused was appended: the two records, then the end.
    let data = fetch(&mut c, "e", 0).await;
    assert_eq!((data.error_code, data.high_watermark), (0, 2));
    let records = data.records.expect("records");
    let crc = u32::from_be_bytes(records[17..21].try_into().unwrap());
    assert_eq!(
        crc,
        crc32c::crc32c(&records[21..]),
        "fetched batches carry CRC-32C"
    );

    // Idempotence: a gap is OUT_OF_ORDER_SEQUENCE_NUMBER; a retry gets its first offset.
    let id = c
        .call(
            4,
            &InitProducerIdRequest::default().with_transaction_timeout_ms(60_000),
        )
        .await;
    assert_eq!(id.error_code, 0);
    let pid = (id.producer_id.0, id.producer_epoch);
    let first = produce(
        &mut c,
        9,
        "e",
        0,
        kafka_batch(b"k", &[b"a"], Some((pid.0, pid.1, 0))),
    )
    .await;
    assert_eq!((first.error_code, first.base_offset), (0, 2));
    let gap = produce(
        &mut c,
        9,
        "e",
        0,
        kafka_batch(b"k", &[b"b"], Some((pid.0, pid.1, 5))),
    )
    .await;
    assert_eq!(gap.error_code, E::OutOfOrderSequenceNumber.code());
    let retry = produce(
        &mut c,
        9,
        "e",
        0,
        kafka_batch(b"k", &[b"a"], Some((pid.0, pid.1, 0))),
    )
    .await;
    assert_eq!((retry.error_code, retry.base_offset), (0, 2));
    assert_eq!(
        fetch(&mut c, "e", 0).await.high_watermark,
        3,
        "the retry wrote nothing"
    );

    // Transactions are refused, not half-done.
    let txn = c
        .call(
            4,
            &InitProducerIdRequest::default()
                .with_transactional_id(Some(TransactionalId(StrBytes::from_static_str("t"))))
                .with_transaction_timeout_ms(60_000),
        )
        .await;
    assert_ne!(txn.error_code, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_follower_answers_not_leader_with_the_leader_and_its_address() {
    let cluster = TestCluster::start(3).await;
    let admin = Admin::connect(&cluster.bootstrap()).await.unwrap();
    admin
        .create_topic("l", 1, 3, BTreeMap::new())
        .await
        .unwrap();
    let leader = cluster.leader_of("l", 0).await;
    let follower = (1..=3).find(|&b| b != leader).unwrap();
    let mut c = KafkaConn::connect(&cluster.kafka_addr(follower)).await;

    // Every broker's Kafka address is in the follower's Metadata, once each recorded it.
    let meta = rafka_tests::eventually_some(
        "every broker's Kafka address and a leader",
        rafka_tests::cluster::WAIT,
        || {
            // A connection per attempt: a closure called again cannot lend out `c`.
            let addr = cluster.kafka_addr(follower);
            async move {
                let meta = KafkaConn::connect(&addr)
                    .await
                    .call(12, &MetadataRequest::default().with_topics(None))
                    .await;
                let led = meta
                    .topics
                    .iter()
                    .any(|t| t.name == Some(name("l")) && t.partitions[0].leader_id.0 > 0);
                if meta.brokers.len() == 3 && led {
                    Ok(meta)
                } else {
                    Err(format!("{} brokers", meta.brokers.len()))
                }
            }
        },
    )
    .await;
    for b in &meta.brokers {
        let want = cluster.kafka_addr(b.node_id.0 as u32);
        assert_eq!(format!("{}:{}", b.host.as_str(), b.port), want);
    }
    let topic = meta
        .topics
        .iter()
        .find(|t| t.name == Some(name("l")))
        .unwrap();
    assert_eq!(topic.partitions[0].leader_id.0, leader as i32, "{meta:?}");
    assert_eq!(topic.partitions[0].replica_nodes.len(), 3);

    let request = ProduceRequest::default()
        .with_acks(-1)
        .with_timeout_ms(10_000)
        .with_topic_data(vec![TopicProduceData::default()
            .with_name(name("l"))
            .with_partition_data(vec![PartitionProduceData::default()
                .with_index(0)
                .with_records(Some(Bytes::from(kafka_batch(b"k", &[b"v"], None))))])]);
    let answer = c.call(11, &request).await;
    let part = &answer.responses[0].partition_responses[0];
    assert_eq!(part.error_code, E::NotLeaderOrFollower.code());
    assert_eq!(part.current_leader.leader_id.0, leader as i32);
    let endpoint = answer
        .node_endpoints
        .iter()
        .find(|e| e.node_id.0 == leader as i32)
        .expect("the leader's endpoint");
    assert_eq!(
        format!("{}:{}", endpoint.host.as_str(), endpoint.port),
        cluster.kafka_addr(leader)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_auth_on_a_connection_without_a_principal_may_do_nothing() {
    let dir = std::sync::Arc::new(tempfile::tempdir().unwrap());
    let broker = TestBroker::start_with(dir, |c| {
        c.auth.enabled = true;
        c.auth.builtin_issuer = true;
    })
    .await;
    let mut c = KafkaConn::connect(&broker.kafka).await;
    let refused = produce(&mut c, 9, "any", 0, kafka_batch(b"k", &[b"v"], None)).await;
    assert_eq!(refused.error_code, E::TopicAuthorizationFailed.code());
    let meta = c
        .call(
            12,
            &MetadataRequest::default().with_topics(Some(vec![
                metadata_request::MetadataRequestTopic::default().with_name(Some(name("any"))),
            ])),
        )
        .await;
    assert_eq!(
        meta.topics[0].error_code,
        E::TopicAuthorizationFailed.code()
    );
    let id = c
        .call(
            4,
            &InitProducerIdRequest::default().with_transactional_id(None),
        )
        .await;
    assert_eq!(id.error_code, E::ClusterAuthorizationFailed.code());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kip_848_member_joins_by_heartbeat_and_is_described() {
    let broker = TestBroker::start().await;
    let admin = Admin::connect(&broker.addr).await.unwrap();
    admin
        .create_topic("hb", 3, 1, BTreeMap::new())
        .await
        .unwrap();
    let mut c = KafkaConn::connect(&broker.kafka).await;
    let join = ConsumerGroupHeartbeatRequest::default()
        .with_group_id(GroupId(StrBytes::from_static_str("kip848")))
        .with_member_id(StrBytes::from_static_str("member-one"))
        .with_member_epoch(0)
        .with_rebalance_timeout_ms(30_000)
        .with_subscribed_topic_names(Some(vec![name("hb")]))
        .with_topic_partitions(Some(vec![]));
    // The coordinator may still be starting the offsets topic: NOT_COORDINATOR until then.
    let joined =
        rafka_tests::eventually_some("a joined member", rafka_tests::cluster::WAIT, || {
            // A connection per attempt: a closure called again cannot lend out `c`.
            let (addr, join) = (broker.kafka.clone(), &join);
            async move {
                let answer = KafkaConn::connect(&addr).await.call(1, join).await;
                if answer.error_code == 0 {
                    Ok(answer)
                } else {
                    Err(format!("{answer:?}"))
                }
            }
        })
        .await;
    assert_eq!(joined.member_id.as_deref(), Some("member-one"));
    assert!(joined.member_epoch > 0);
    let assigned: usize = joined.assignment.as_ref().map_or(0, |a| {
        a.topic_partitions.iter().map(|t| t.partitions.len()).sum()
    });
    assert_eq!(assigned, 3, "{joined:?}");

    let described = c
        .call(
            0,
            &ConsumerGroupDescribeRequest::default()
                .with_group_ids(vec![GroupId(StrBytes::from_static_str("kip848"))]),
        )
        .await;
    let g = &described.groups[0];
    assert_eq!(
        (g.error_code, g.group_state.as_str()),
        (0, "Stable"),
        "{g:?}"
    );
    assert_eq!(g.members.len(), 1);
    assert_eq!(g.members[0].member_id.as_str(), "member-one");
    let parts: usize = g.members[0]
        .assignment
        .topic_partitions
        .iter()
        .map(|t| t.partitions.len())
        .sum();
    assert_eq!(parts, 3);

    // Leaving (epoch -1) empties the group.
    let leave = join.clone().with_member_epoch(-1);
    assert_eq!(c.call(1, &leave).await.error_code, 0);
}

/// A client keeps several produce requests in flight on one connection (librdkafka up to
/// 5): an idempotent producer's run side by side, anyone else's one at a time, and every
/// answer comes in request order, in the order the records landed. A request after them
/// sees them all.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn produce_requests_in_flight_are_answered_in_order() {
    let broker = TestBroker::start().await;
    let admin = Admin::connect(&broker.addr).await.unwrap();
    for topic in ["plain", "idempotent"] {
        admin
            .create_topic(topic, 1, 1, BTreeMap::new())
            .await
            .unwrap();
    }
    let mut c = KafkaConn::connect(&broker.kafka).await;
    let id = c
        .call(
            4,
            &InitProducerIdRequest::default().with_transaction_timeout_ms(60_000),
        )
        .await;
    assert_eq!(id.error_code, 0);
    let (pid, epoch) = (id.producer_id.0, id.producer_epoch);

    for (topic, idempotent) in [("plain", false), ("idempotent", true)] {
        let mut sent = Vec::new();
        for i in 0..8i32 {
            let producer = idempotent.then_some((pid, epoch, 2 * i));
            let batch = kafka_batch(b"k", &[b"first", b"second"], producer);
            sent.push(c.send(9, &produce_request(topic, 0, batch)).await);
        }
        let after = c.send(5, &list_offsets(topic, -1)).await;
        for (i, correlation) in sent.iter().enumerate() {
            let (answered, mut r) = c.receive::<ProduceRequest>(9).await;
            assert_eq!(answered, *correlation, "{topic}: answers in request order");
            let p = r.responses.remove(0).partition_responses.remove(0);
            assert_eq!(
                (p.error_code, p.base_offset),
                (0, 2 * i as i64),
                "{topic}: request {i} landed in order"
            );
        }
        let (answered, mut r) = c.receive::<ListOffsetsRequest>(5).await;
        assert_eq!(answered, after);
        let p = r.topics.remove(0).partitions.remove(0);
        assert_eq!(
            (p.error_code, p.offset),
            (0, 16),
            "{topic}: sees every record"
        );
    }
}

/// A batch whose records carry `timestamps` (values "0", "1", ...), CRC-32C.
fn timed_batch(timestamps: &[i64]) -> Vec<u8> {
    let mut b = rafka_proto::batch::BatchBuilder::new();
    let values: Vec<Vec<u8>> = (0..timestamps.len())
        .map(|i| i.to_string().into_bytes())
        .collect();
    for (t, v) in timestamps.iter().zip(&values) {
        b.append(&rafka_proto::batch::Record {
            timestamp: *t,
            key: None,
            value: Some(v),
            headers: &[],
        });
    }
    sealed_for_kafka(b)
}

/// ListOffsets by largest timestamp (-3) of `topic`'s partition 0: error code, offset,
/// timestamp.
async fn largest_timestamp(c: &mut KafkaConn, topic: &str) -> (i16, i64, i64) {
    let mut r = c.call(7, &list_offsets(topic, -3)).await;
    let p = r.topics.remove(0).partitions.remove(0);
    (p.error_code, p.offset, p.timestamp)
}

/// ListOffsets by largest timestamp (-3, KIP-734): the first record with the largest
/// timestamp, wherever it lies in the log; nothing for an empty partition.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn list_offsets_finds_the_record_with_the_largest_timestamp() {
    let broker = TestBroker::start().await;
    let admin = Admin::connect(&broker.addr).await.unwrap();
    admin
        .create_topic("times", 1, 1, BTreeMap::new())
        .await
        .unwrap();
    let mut c = KafkaConn::connect(&broker.kafka).await;
    assert_eq!(
        largest_timestamp(&mut c, "times").await,
        (0, -1, -1),
        "an empty partition"
    );
    let t = 1_700_000_000_000;
    for batch in [
        timed_batch(&[t + 100, t + 300, t + 200]),
        timed_batch(&[t + 250, t + 300]),
    ] {
        let p = produce(&mut c, 9, "times", 0, batch).await;
        assert_eq!(p.error_code, 0);
    }
    assert_eq!(
        largest_timestamp(&mut c, "times").await,
        (0, 1, t + 300),
        "the first record with the largest timestamp"
    );
}
