//! kill -9 of a partition leader under librdkafka's idempotent producer (acks=all)
//! through the Kafka listener (issue 18): three broker processes, a topic of three
//! partitions replicated three times; the leader of partition 0 is killed mid-stream.
//! Every message delivered (acknowledged) is read back once, at the offset it was
//! acknowledged at, in the order it was sent in its partition; none fails.

use std::collections::BTreeMap;
use std::time::Duration;

use rafka_client::Admin;
use rafka_tests::cluster::WAIT;
use rafka_tests::eventually;
use rafka_tests::kafka::python_script;
use rafka_tests::procs::PeerBrokers;

/// A broker process: `id|address|data dir|peers|kafka address`.
#[test]
fn broker_child() {
    rafka_tests::procs::peers_broker_child()
}

/// Produces N records round-robin over three partitions, paced over a few seconds;
/// then reads every partition from the beginning and checks what was delivered.
const PRODUCE_AND_VERIFY: &str = r#"
import sys, time
from confluent_kafka import Producer, Consumer, TopicPartition, OFFSET_BEGINNING
kafka, topic, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
delivered, failed = [], []
def report(err, msg):
    if err:
        failed.append(str(err))
    else:
        delivered.append((msg.partition(), msg.offset(), int(msg.value())))
p = Producer({"bootstrap.servers": kafka, "enable.idempotence": True, "acks": "all",
              "message.timeout.ms": 120000, "linger.ms": 2})
for i in range(n):
    p.produce(topic, value=str(i).encode(), partition=i % 3, on_delivery=report)
    p.poll(0)
    if i % 50 == 0:
        time.sleep(0.01)
assert p.flush(180) == 0, "messages left undelivered"
assert not failed, failed[:5]
assert len(delivered) == n, len(delivered)
# Sent order per partition is value order; acknowledged offsets must follow it.
by_partition = {}
for part, off, v in delivered:
    by_partition.setdefault(part, []).append((off, v))
c = Consumer({"bootstrap.servers": kafka, "group.id": "verify", "enable.auto.commit": False})
for part, acked in by_partition.items():
    acked.sort()
    values = [v for _, v in acked]
    assert values == sorted(values), f"partition {part}: acknowledged out of sent order"
    c.assign([TopicPartition(topic, part, OFFSET_BEGINNING)])
    read = []
    deadline = time.time() + 60
    while len(read) < len(acked):
        assert time.time() < deadline, f"partition {part}: {len(read)} of {len(acked)} read"
        m = c.poll(0.5)
        if m is None or m.error():
            continue
        read.append((m.offset(), int(m.value())))
    assert read == acked, f"partition {part}: read {read[:3]}... != acknowledged {acked[:3]}..."
c.close()
print("ok", n)
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_a_leader_loses_and_duplicates_nothing_an_idempotent_kafka_producer_sent() {
    let mut brokers = PeerBrokers::start(3);
    let admin = Admin::connect(&brokers.bootstrap()).await.unwrap();
    admin
        .create_topic("kf", 3, 3, BTreeMap::new())
        .await
        .unwrap();
    let n: u64 = 6000;
    let kafka = brokers.kafka_bootstrap();
    let producer = tokio::task::spawn_blocking(move || {
        python_script(PRODUCE_AND_VERIFY, &[&kafka, "kf", &n.to_string()])
    });

    // Mid-stream: once a sixth of partition 0's share is in, kill its leader.
    eventually("records flowing into partition 0", WAIT, || async {
        let latest = rafka_proto::v1::list_offsets_request::Spec::Latest(Default::default());
        admin
            .list_offset("kf", 0, latest)
            .await
            .is_ok_and(|r| r.high_watermark > n / 18)
    })
    .await;
    let leader = admin.metadata(&["kf"]).await.unwrap().topics[0].partitions[0].leader;
    assert!(leader > 0, "partition 0 has a leader");
    brokers.kill(leader);
    let out = tokio::time::timeout(Duration::from_secs(300), producer)
        .await
        .expect("the producer finished")
        .expect("the producer thread");
    assert_eq!(out.trim(), format!("ok {n}"));
}
