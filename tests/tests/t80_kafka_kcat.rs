//! kcat (librdkafka) against the Kafka listener (issue 18): metadata, produce from a
//! file, consume from the beginning, keys and headers, every compression codec; and the
//! same records through the Rust client both ways, byte for byte.

use std::collections::BTreeMap;
use std::time::Duration;

use rafka_client::{
    Admin, Compression, Consumer, ConsumerConfig, ConsumerRecord, Producer, ProducerConfig,
    ProducerRecord, SeekTo, TopicPartition,
};
use rafka_tests::kafka::kcat;
use rafka_tests::TestBroker;

const DEADLINE: Duration = Duration::from_secs(60);
const CODECS: [&str; 5] = ["none", "gzip", "snappy", "lz4", "zstd"];

async fn read_partition(addr: &str, topic: &str, partition: u32, n: usize) -> Vec<ConsumerRecord> {
    let mut consumer = Consumer::connect(addr, ConsumerConfig::default())
        .await
        .unwrap();
    let tp = TopicPartition::new(topic, partition);
    consumer.assign(vec![tp.clone()]);
    consumer.seek(&tp, SeekTo::Earliest).await.unwrap();
    let mut out = Vec::new();
    let start = tokio::time::Instant::now();
    while out.len() < n {
        assert!(start.elapsed() < DEADLINE, "{} of {n} records", out.len());
        out.extend(consumer.poll(Duration::from_millis(200)).await.unwrap());
    }
    out
}

fn lines(bytes: &[u8]) -> Vec<String> {
    String::from_utf8(bytes.to_vec())
        .unwrap()
        .lines()
        .map(String::from)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kcat_lists_produces_and_consumes_keys_headers_and_every_codec() {
    let broker = TestBroker::start().await;
    let admin = Admin::connect(&broker.addr).await.unwrap();
    admin
        .create_topic("kc", 3, 1, BTreeMap::new())
        .await
        .unwrap();
    let k = broker.kafka.clone();

    // Metadata: the broker at its Kafka address, the topic with a leader per partition.
    let meta: serde_json::Value =
        serde_json::from_slice(&kcat(&["-b", &k, "-L", "-J"], b"")).unwrap();
    assert_eq!(meta["brokers"][0]["id"], 1, "{meta}");
    assert_eq!(meta["brokers"][0]["name"], format!("{k}"), "{meta}");
    let topic = meta["topics"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["topic"] == "kc")
        .unwrap_or_else(|| panic!("kc in {meta}"));
    let partitions = topic["partitions"].as_array().unwrap();
    assert_eq!(partitions.len(), 3);
    for p in partitions {
        assert_eq!(p["leader"], 1, "{p}");
    }

    // Produce from a file, one record per line, `key:value`, a header per codec.
    let dir = tempfile::tempdir().unwrap();
    let per_codec = 300;
    for (c, codec) in CODECS.iter().enumerate() {
        let file = dir.path().join(format!("{codec}.txt"));
        let text: String = (0..per_codec)
            .map(|i| format!("key-{c}-{i}:value {codec} {i} ünïcode\n"))
            .collect();
        std::fs::write(&file, text).unwrap();
        kcat(
            &[
                "-b",
                &k,
                "-P",
                "-t",
                "kc",
                "-p",
                "0",
                "-z",
                codec,
                "-K",
                ":",
                "-H",
                &format!("codec={codec}"),
                "-H",
                "empty=",
                "-l",
                file.to_str().unwrap(),
            ],
            b"",
        );
    }
    let total = per_codec * CODECS.len();

    // kcat reads them back from the beginning, in order, offsets dense from 0.
    let out = kcat(
        &[
            "-b",
            &k,
            "-C",
            "-t",
            "kc",
            "-p",
            "0",
            "-o",
            "beginning",
            "-e",
            "-q",
            "-f",
            "%o|%k|%s|%h\\n",
        ],
        b"",
    );
    let got = lines(&out);
    assert_eq!(got.len(), total);
    for (n, line) in got.iter().enumerate() {
        let (c, i) = (n / per_codec, n % per_codec);
        let codec = CODECS[c];
        assert_eq!(
            line,
            &format!("{n}|key-{c}-{i}|value {codec} {i} ünïcode|codec={codec},empty="),
        );
    }

    // The Rust client reads the same records: keys, values, headers; and timestamps
    // as kcat shows them.
    let records = read_partition(&broker.addr, "kc", 0, total).await;
    let stamps = lines(&kcat(
        &[
            "-b",
            &k,
            "-C",
            "-t",
            "kc",
            "-p",
            "0",
            "-o",
            "beginning",
            "-e",
            "-q",
            "-f",
            "%T\\n",
        ],
        b"",
    ));
    for (n, r) in records.iter().enumerate() {
        let (c, i) = (n / per_codec, n % per_codec);
        let codec = CODECS[c];
        assert_eq!(r.offset, n as u64);
        assert_eq!(r.key.as_deref(), Some(format!("key-{c}-{i}").as_bytes()));
        assert_eq!(
            r.value.as_deref(),
            Some(format!("value {codec} {i} ünïcode").as_bytes())
        );
        assert_eq!(r.headers.len(), 2);
        assert_eq!(r.headers[0].key, "codec");
        assert_eq!(r.headers[0].value.as_deref(), Some(codec.as_bytes()));
        assert_eq!(r.headers[1].key, "empty");
        assert_eq!(r.headers[1].value.as_deref(), Some(&b""[..]));
        assert_eq!(stamps[n], r.timestamp.to_string());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_from_the_rust_client_read_by_kcat_byte_for_byte() {
    let broker = TestBroker::start().await;
    let admin = Admin::connect(&broker.addr).await.unwrap();
    admin
        .create_topic("rk", 1, 1, BTreeMap::new())
        .await
        .unwrap();
    let k = broker.kafka.clone();
    let per_codec = 200;
    let codecs = [
        Compression::None,
        Compression::Gzip,
        Compression::Snappy,
        Compression::Lz4,
        Compression::Zstd,
    ];
    let base_ts = 1_700_000_000_000i64;
    for (c, codec) in codecs.iter().enumerate() {
        let producer = Producer::connect(
            &broker.addr,
            ProducerConfig {
                compression: *codec,
                ..ProducerConfig::default()
            },
        )
        .await
        .unwrap();
        let mut acks = Vec::new();
        for i in 0..per_codec {
            let n = c * per_codec + i;
            let record = ProducerRecord::new("rk", format!("v{n} ✓"))
                .key(format!("k{n}"))
                .partition(0)
                .header("n", n.to_string())
                .header("codec", format!("{codec:?}"))
                .timestamp(base_ts + n as i64);
            acks.push(producer.send(record).await.unwrap());
        }
        producer.flush().await;
        for a in acks {
            a.await.unwrap();
        }
    }
    let total = per_codec * codecs.len();
    let out = kcat(
        &[
            "-b",
            &k,
            "-C",
            "-t",
            "rk",
            "-p",
            "0",
            "-o",
            "beginning",
            "-e",
            "-q",
            "-f",
            "%o|%k|%s|%h|%T\\n",
        ],
        b"",
    );
    let got = lines(&out);
    assert_eq!(got.len(), total);
    for (n, line) in got.iter().enumerate() {
        let codec = codecs[n / per_codec];
        assert_eq!(
            line,
            &format!(
                "{n}|k{n}|v{n} ✓|n={n},codec={codec:?}|{}",
                base_ts + n as i64
            )
        );
    }
}
