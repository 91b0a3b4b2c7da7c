//! Python's Kafka clients against the Kafka listener (issue 18): confluent-kafka
//! (librdkafka) consumer groups of three over twelve partitions with a member joining
//! and leaving — the classic protocol with cooperative-sticky, then KIP-848's
//! `group.protocol=consumer` — every record consumed once, offsets committed and seen by
//! the gRPC API; its AdminClient; and kafka-python's producer, group consumer and admin.

use std::collections::BTreeMap;

use rafka_client::Admin;
use rafka_tests::kafka::python_script;
use rafka_tests::TestBroker;

/// Produces N records (idempotent, acks=all), then drives consumers a and b, adds c a
/// third of the way, closes a two thirds of the way, until every record was seen.
/// Each member commits what it processed when partitions are revoked and every 500
/// records. Prints `distinct duplicates`.
const GROUP_OF_THREE: &str = r#"
import sys, time
from confluent_kafka import Producer, Consumer, KafkaException
b, topic, group, proto, n = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4], int(sys.argv[5])
p = Producer({"bootstrap.servers": b, "enable.idempotence": True, "acks": "all", "linger.ms": 5})
for i in range(n):
    p.produce(topic, key=str(i % 97), value=str(i))
    if i % 1000 == 0:
        p.poll(0)
assert p.flush(60) == 0, "undelivered records"

def commit(c, racing_rebalance_ok=False):
    try:
        c.commit(asynchronous=False)
    except KafkaException as e:
        code = e.args[0].code()
        if code == -168:  # _NO_OFFSET: nothing processed since the last commit
            return
        # A commit sent as a rebalance completes carries the old generation: Kafka says
        # ILLEGAL_GENERATION or REBALANCE_IN_PROGRESS, and the application commits again
        # later (the revocation commit below is the one that must not fail).
        if racing_rebalance_ok and code in (22, 27):
            return
        raise

def member(name):
    conf = {"bootstrap.servers": b, "group.id": group, "client.id": name,
            "auto.offset.reset": "earliest", "enable.auto.commit": False}
    if proto == "consumer":
        conf["group.protocol"] = "consumer"
    else:
        conf.update({"partition.assignment.strategy": "cooperative-sticky",
                     "session.timeout.ms": 10000, "heartbeat.interval.ms": 500})
    c = Consumer(conf)
    c.subscribe([topic], on_revoke=lambda cons, parts: commit(cons))
    return c

seen = {}
where = {}
members = {"a": member("a"), "b": member("b")}
joined = left = False
deadline = time.time() + 120
since_commit = 0
while len(seen) < n:
    assert time.time() < deadline, f"{len(seen)} of {n} records consumed"
    for name, c in list(members.items()):
        for m in c.consume(num_messages=200, timeout=0.05):
            if m.error():
                raise KafkaException(m.error())
            v = m.value().decode()
            seen[v] = seen.get(v, 0) + 1
            where.setdefault(v, []).append((name, m.partition(), m.offset()))
            since_commit += 1
        if since_commit >= 500:
            commit(c, racing_rebalance_ok=True)
            since_commit = 0
    if not joined and len(seen) >= n // 3:
        members["c"] = member("c")
        joined = True
    if not left and len(seen) >= 2 * n // 3:
        members.pop("a").close()
        left = True
for c in members.values():
    commit(c)
    c.close()
dupes = [(v, w) for v, w in where.items() if len(w) > 1]
for v, w in dupes[:5]:
    print("duplicate:", v, w)
print(len(seen), sum(v - 1 for v in seen.values()))
"#;

async fn group_of_three(protocol: &str) {
    let broker = TestBroker::start().await;
    let admin = Admin::connect(&broker.addr).await.unwrap();
    let topic = format!("g3-{protocol}");
    let group = format!("three-{protocol}");
    admin
        .create_topic(&topic, 12, 1, BTreeMap::new())
        .await
        .unwrap();
    let n = 6000;
    let out = python_script(
        GROUP_OF_THREE,
        &[&broker.kafka, &topic, &group, protocol, &n.to_string()],
    );
    let counts: Vec<u64> = out.split_whitespace().map(|w| w.parse().unwrap()).collect();
    assert_eq!(counts, vec![n, 0], "distinct records and duplicates: {out}");
    // The commits are the group's offsets for the gRPC API too: every partition's
    // committed offset is its end.
    let lag = admin.group_lag(&group).await.unwrap();
    assert_eq!(lag.len(), 12, "{lag:?}");
    let mut total = 0;
    for p in &lag {
        assert_eq!(p.committed, p.end, "{p:?}");
        total += p.end;
    }
    assert_eq!(total, n);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_classic_cooperative_sticky_group_of_three_consumes_every_record_once() {
    group_of_three("classic").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kip_848_consumer_group_of_three_consumes_every_record_once() {
    group_of_three("consumer").await;
}

const ADMIN: &str = r#"
import sys
from confluent_kafka.admin import (AdminClient, NewTopic, NewPartitions, ConfigResource,
                                   ConfigEntry, AlterConfigOpType, ResourceType)
b = sys.argv[1]
a = AdminClient({"bootstrap.servers": b})
for f in a.create_topics([NewTopic("adm", 2, 1, config={"retention.ms": "3600000"})]).values():
    f.result(30)
# Already there: TOPIC_ALREADY_EXISTS.
try:
    a.create_topics([NewTopic("adm", 2, 1)])["adm"].result(30)
    raise SystemExit("a second create succeeded")
except Exception as e:
    assert "TOPIC_ALREADY_EXISTS" in str(e) or "already exists" in str(e), e
md = a.list_topics(timeout=30)
assert len(md.topics["adm"].partitions) == 2, md.topics["adm"].partitions
res = ConfigResource(ResourceType.TOPIC, "adm")
configs = a.describe_configs([res])[res].result(30)
assert configs["retention.ms"].value == "3600000", configs["retention.ms"]
change = ConfigResource(ResourceType.TOPIC, "adm", incremental_configs=[
    ConfigEntry("retention.ms", "7200000", incremental_operation=AlterConfigOpType.SET)])
a.incremental_alter_configs([change])[change].result(30)
assert a.describe_configs([res])[res].result(30)["retention.ms"].value == "7200000"
a.create_partitions([NewPartitions("adm", 4)])["adm"].result(30)
assert len(a.list_topics(timeout=30).topics["adm"].partitions) == 4
cluster = a.describe_cluster().result(30)
assert len(cluster.nodes) == 1, cluster.nodes
# Bad input gets Kafka's errors.
try:
    a.create_topics([NewTopic("bad", 1, 1, config={"no.such.config": "1"})])["bad"].result(30)
    raise SystemExit("an unknown config was accepted")
except Exception as e:
    assert "INVALID_CONFIG" in str(e) or "config" in str(e), e
for f in a.delete_topics(["adm"]).values():
    f.result(30)
print("ok")
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn confluent_kafka_admin_creates_describes_alters_and_deletes_topics() {
    let broker = TestBroker::start().await;
    let admin = Admin::connect(&broker.addr).await.unwrap();
    // The topic the Python admin makes and changes, as the gRPC API sees it midway is
    // checked by the script; at the end it is gone for both.
    let out = python_script(ADMIN, &[&broker.kafka]);
    assert_eq!(out.trim(), "ok");
    let err = admin.describe_topics(&["adm"]).await.unwrap_err();
    assert!(err.to_string().contains("unknown topic"), "{err}");
}

const KAFKA_PYTHON: &str = r#"
import sys, time
from kafka import KafkaProducer, KafkaConsumer, TopicPartition
from kafka.admin import KafkaAdminClient, NewTopic
b = sys.argv[1]
admin = KafkaAdminClient(bootstrap_servers=b, client_id="kp-admin")
admin.create_topics([NewTopic("kp", num_partitions=3, replication_factor=1)])
assert "kp" in admin.list_topics()
p = KafkaProducer(bootstrap_servers=b, acks="all")
for i in range(300):
    p.send("kp", key=f"k{i}".encode(), value=f"v{i}".encode(), headers=[("n", str(i).encode())])
p.flush(30)
c = KafkaConsumer("kp", bootstrap_servers=b, group_id="kp-group", auto_offset_reset="earliest",
                  enable_auto_commit=False, consumer_timeout_ms=20000)
got = {}
for m in c:
    got[m.value.decode()] = (m.key.decode(), dict(m.headers)["n"].decode())
    if len(got) == 300:
        break
c.commit()
committed = sum(c.committed(TopicPartition("kp", p)) or 0 for p in range(3))
c.close()
assert len(got) == 300, len(got)
assert all(got[f"v{i}"] == (f"k{i}", str(i)) for i in range(300))
assert committed == 300, committed
groups = [g["group_id"] if isinstance(g, dict) else g[0] for g in admin.list_groups()]
assert "kp-group" in groups, groups
offsets = admin.list_group_offsets("kp-group")
assert sum(o.offset for o in offsets["kp-group"].values()) == 300, offsets
admin.delete_topics(["kp"])
print("ok")
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kafka_python_produces_consumes_commits_and_administers() {
    let broker = TestBroker::start().await;
    let out = python_script(KAFKA_PYTHON, &[&broker.kafka]);
    assert_eq!(out.trim(), "ok");
}
