//! The broker's HTTP port as a scraper and an orchestrator see it: `/metrics` parsed by
//! a Prometheus text-format parser, its counters moving by exactly the records produced
//! and fetched, its gauges matching the log; `/health/ready` once the broker serves.

use std::collections::BTreeMap;
use std::time::Duration;

use rafka_client::{
    Admin, Consumer, ConsumerConfig, Producer, ProducerConfig, ProducerRecord, TopicPartition,
};
use rafka_proto::v1::{self, broker_client::BrokerClient};
use rafka_tests::cluster::{produce_acked, TestCluster, WAIT};
use rafka_tests::{eventually, TestBroker};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// `GET path` over HTTP/1.1; the status code and the body.
async fn get(addr: &str, path: &str) -> (u16, String) {
    let mut s = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let req = format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    s.write_all(req.as_bytes()).await.expect("write");
    let mut out = String::new();
    s.read_to_string(&mut out).await.expect("read");
    let status = out
        .get(9..12)
        .and_then(|c| c.parse().ok())
        .unwrap_or_default();
    let body = out.split_once("\r\n\r\n").map_or("", |(_, b)| b);
    (status, body.to_string())
}

type Samples = BTreeMap<(String, BTreeMap<String, String>), f64>;

/// The scraped samples, by metric name and label set.
async fn scrape(addr: &str) -> Samples {
    let (status, body) = get(addr, "/metrics").await;
    assert_eq!(status, 200, "{body}");
    parse(&body)
}

/// Samples of a Prometheus text page.
fn parse(body: &str) -> Samples {
    let lines = body.lines().map(|l| Ok(l.to_string()));
    let parsed = prometheus_parse::Scrape::parse(lines).expect("Prometheus text format");
    parsed
        .samples
        .into_iter()
        .filter_map(|s| {
            let v = match s.value {
                prometheus_parse::Value::Counter(v)
                | prometheus_parse::Value::Gauge(v)
                | prometheus_parse::Value::Untyped(v) => v,
                _ => return None,
            };
            let labels: BTreeMap<String, String> = s
                .labels
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect();
            Some(((s.metric, labels), v))
        })
        .collect()
}

fn sample(samples: &Samples, name: &str, labels: &[(&str, &str)]) -> f64 {
    let labels: BTreeMap<String, String> = labels
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    *samples
        .get(&(name.to_string(), labels.clone()))
        .unwrap_or_else(|| panic!("no sample {name} {labels:?}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_count_exactly_what_was_produced_and_fetched() {
    let broker = TestBroker::start().await;
    eventually("ready", Duration::from_secs(30), || async {
        get(&broker.http, "/health/ready").await.0 == 200
    })
    .await;
    assert_eq!(get(&broker.http, "/health/live").await.0, 200);
    let admin = Admin::connect(&broker.addr).await.expect("admin");
    admin
        .create_topic("m", 2, 1, BTreeMap::new())
        .await
        .expect("create");
    let producer = Producer::connect(&broker.addr, ProducerConfig::default())
        .await
        .expect("producer");
    let mut deliveries = Vec::new();
    for (partition, n) in [(0u32, 1_000u32), (1, 500)] {
        for i in 0..n {
            let record =
                ProducerRecord::new("m", format!("v{i}").into_bytes()).partition(partition);
            deliveries.push(producer.send(record).await.expect("send"));
        }
    }
    for d in deliveries {
        d.await.expect("delivered");
    }

    // Partition 0 read whole by raw fetches from offset 0, batch after batch.
    let mut client = BrokerClient::connect(format!("http://{}", broker.addr))
        .await
        .expect("connect");
    let mut offset = 0;
    let mut bytes = 0;
    while offset < 1_000 {
        let data = client
            .fetch(v1::FetchRequest {
                partitions: vec![v1::FetchPartition {
                    topic: "m".into(),
                    partition: 0,
                    offset,
                    max_bytes: 4096,
                    min_offset: 0,
                }],
                min_bytes: 0,
                max_wait_ms: 0,
                max_bytes: 0,
            })
            .await
            .expect("fetch")
            .into_inner();
        let records = &data.partitions[0].records;
        bytes += records.len();
        let mut rest = &records[..];
        while !rest.is_empty() {
            let h = rafka_proto::batch::BatchHeader::parse(rest).expect("batch");
            offset = h.next_offset() as u64;
            rest = &rest[h.total_len()..];
        }
    }

    let s = scrape(&broker.http).await;
    let p0 = [("topic", "m"), ("partition", "0")];
    let p1 = [("topic", "m"), ("partition", "1")];
    assert_eq!(
        sample(&s, "rafka_partition_produced_records_total", &p0),
        1_000.0
    );
    assert_eq!(
        sample(&s, "rafka_partition_produced_records_total", &p1),
        500.0
    );
    assert_eq!(
        sample(&s, "rafka_partition_fetched_records_total", &p0),
        1_000.0
    );
    assert_eq!(
        sample(&s, "rafka_partition_fetched_records_total", &p1),
        0.0
    );
    assert_eq!(
        sample(&s, "rafka_partition_fetched_bytes_total", &p0),
        bytes as f64
    );
    assert_eq!(sample(&s, "rafka_partition_log_end_offset", &p0), 1_000.0);
    assert_eq!(sample(&s, "rafka_partition_high_watermark", &p1), 500.0);
    assert_eq!(sample(&s, "rafka_partition_is_leader", &p0), 1.0);
    assert!(sample(&s, "rafka_partition_size_bytes", &p0) >= bytes as f64);
    assert_eq!(
        sample(&s, "rafka_broker_partitions", &[("state", "offline")]),
        0.0
    );
    assert!(sample(&s, "rafka_process_resident_memory_bytes", &[]) > 0.0);
    let free = sample(&s, "rafka_data_dir_free_bytes", &[]);
    assert!(free > 0.0 && free <= sample(&s, "rafka_data_dir_capacity_bytes", &[]));
    // Requests by method and code: the fetches above, and one refused.
    let fetch_ok = [
        ("service", "rafka.v1.Broker"),
        ("method", "Fetch"),
        ("code", "OK"),
    ];
    let fetches = sample(&s, "rafka_requests_total", &fetch_ok);
    assert!(fetches >= 1.0, "{fetches}");
    let timed = [("service", "rafka.v1.Broker"), ("method", "Fetch")];
    assert!(sample(&s, "rafka_request_seconds_count", &timed) >= fetches);
    let refused = client
        .fetch(v1::FetchRequest {
            partitions: vec![],
            min_bytes: 0,
            max_wait_ms: 0,
            max_bytes: 0,
        })
        .await;
    assert_eq!(refused.unwrap_err().code(), tonic::Code::InvalidArgument);
    let s = scrape(&broker.http).await;
    let fetch_bad = [
        ("service", "rafka.v1.Broker"),
        ("method", "Fetch"),
        ("code", "INVALID_ARGUMENT"),
    ];
    // Counters are per process: the other test here sends no empty fetch.
    assert_eq!(sample(&s, "rafka_requests_total", &fetch_bad), 1.0);
    assert!(sample(&s, "rafka_requests_total", &fetch_ok) >= fetches);
    assert!(sample(&s, "rafka_produce_request_seconds_count", &[]) > 0.0);

    assert!(sample(&s, "rafka_partition_leader_elections_total", &p0) >= 1.0);
    assert_eq!(
        sample(&s, "rafka_partition_snapshot_installs_total", &p0),
        0.0
    );

    // A group's committed offsets and lag (end - committed), then a member.
    let offsets = BTreeMap::from([
        (TopicPartition::new("m", 0), 400),
        (TopicPartition::new("m", 1), 500),
    ]);
    admin
        .set_group_offsets("g", &offsets)
        .await
        .expect("commit");
    let s = scrape(&broker.http).await;
    let g0 = [("group", "g"), ("topic", "m"), ("partition", "0")];
    let g1 = [("group", "g"), ("topic", "m"), ("partition", "1")];
    assert_eq!(sample(&s, "rafka_group_committed_offset", &g0), 400.0);
    assert_eq!(sample(&s, "rafka_group_lag", &g0), 600.0);
    assert_eq!(sample(&s, "rafka_group_lag", &g1), 0.0);
    assert_eq!(sample(&s, "rafka_group_members", &[("group", "g")]), 0.0);
    let config = ConsumerConfig {
        group_id: Some("g".into()),
        ..Default::default()
    };
    let mut consumer = Consumer::connect(&broker.addr, config)
        .await
        .expect("consumer");
    consumer.subscribe(&["m"]).expect("subscribe");
    let mut read = 0;
    while read < 600 {
        read += consumer
            .poll(Duration::from_secs(1))
            .await
            .expect("poll")
            .len();
    }
    consumer.commit().await.expect("commit");
    let s = scrape(&broker.http).await;
    assert_eq!(sample(&s, "rafka_group_members", &[("group", "g")]), 1.0);
    assert!(sample(&s, "rafka_group_rebalances_total", &[("group", "g")]) >= 1.0);
    assert_eq!(sample(&s, "rafka_group_lag", &g0), 0.0);
    assert_eq!(sample(&s, "rafka_group_committed_offset", &g0), 1_000.0);
    consumer.close().await.expect("leave");
    dashboard_queries_only_served_metrics(&get(&broker.http, "/metrics").await.1);

    // Bad requests to the HTTP port: unknown paths, a huge query string.
    assert_eq!(get(&broker.http, "/nothing/../metrics").await.0, 404);
    let long = format!("/metrics?{}", "x".repeat(100_000));
    let (status, _) = get(&broker.http, &long).await;
    assert_eq!(status, 414);
    broker.stop().await;
}

/// Dashboard metrics that have samples only where a partition has followers.
const WITH_FOLLOWERS: &[&str] = &["rafka_partition_follower_lag_entries"];

/// The metric families the Grafana dashboard in docs/ queries.
fn dashboard_families() -> std::collections::BTreeSet<String> {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/grafana/rafka.json");
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(path).expect("dashboard")).expect("JSON");
    let mut queried = std::collections::BTreeSet::new();
    for panel in json["panels"].as_array().expect("panels") {
        for target in panel["targets"].as_array().expect("targets") {
            let expr = target["expr"].as_str().expect("expr");
            let mut rest = expr;
            while let Some(at) = rest.find("rafka_") {
                let name: String = rest[at..]
                    .chars()
                    .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                    .collect();
                rest = &rest[at + name.len()..];
                queried.insert(name);
            }
        }
    }
    assert!(queried.len() >= 15, "{queried:?}");
    queried
        .iter()
        .map(|name| {
            ["_total", "_bucket", "_count", "_sum"]
                .iter()
                .find_map(|s| name.strip_suffix(s))
                .unwrap_or(name)
                .to_string()
        })
        .collect()
}

/// Every metric the dashboard queries is one the broker serves (its family has a
/// `# TYPE` line in `text`), those of followers aside.
fn dashboard_queries_only_served_metrics(text: &str) {
    for family in dashboard_families() {
        if WITH_FOLLOWERS.contains(&family.as_str()) {
            continue;
        }
        assert!(
            text.contains(&format!("# TYPE {family} ")),
            "the dashboard queries {family}, which /metrics does not serve"
        );
    }
}

/// Partitions led by broker `id` with a voter down, as its metrics say.
fn under_replicated(cluster: &TestCluster, id: u32) -> f64 {
    let text = cluster.node(id).metrics_text();
    sample(
        &parse(&text),
        "rafka_broker_partitions",
        &[("state", "under_replicated")],
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partition_is_under_replicated_while_a_follower_is_down() {
    let mut cluster = TestCluster::start(3).await;
    let admin = Admin::connect(&cluster.bootstrap()).await.expect("admin");
    admin
        .create_topic("u", 1, 3, BTreeMap::new())
        .await
        .expect("create");
    let producer = Producer::connect(&cluster.bootstrap(), ProducerConfig::default())
        .await
        .expect("producer");
    let (_, failed) = produce_acked(&producer, "u", "a", 100, 50).await;
    assert_eq!(failed, 0);
    let leader = cluster.leader_of("u", 0).await;
    let follower = (1..=3).find(|&b| b != leader).unwrap();
    assert_eq!(under_replicated(&cluster, leader), 0.0);
    let text = cluster.node(leader).metrics_text();
    for family in WITH_FOLLOWERS {
        assert!(dashboard_families().contains(*family));
        assert!(
            text.contains(&format!("# TYPE {family} ")),
            "{family}: {text}"
        );
    }
    cluster.stop(follower).await;
    eventually("the partition shows as under-replicated", WAIT, || async {
        under_replicated(&cluster, leader) >= 1.0
    })
    .await;
    cluster.restart(follower).await;
    eventually("the partition no longer under-replicated", WAIT, || async {
        under_replicated(&cluster, leader) == 0.0
    })
    .await;
}
