//! Retention runs in the background and deletes old segments of a live topic.

use std::collections::BTreeMap;
use std::time::Duration;

use rafka_client::{Admin, Producer, ProducerConfig, ProducerRecord};
use rafka_proto::v1::broker_client::BrokerClient;
use rafka_proto::v1::list_offsets_request::Spec;
use rafka_proto::v1::ListOffsetsRequest;
use rafka_tests::{eventually, TestBroker};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn background_retention_deletes_old_segments() {
    let broker = TestBroker::start_with(std::sync::Arc::new(tempfile::tempdir().unwrap()), |c| {
        c.retention_check_interval_ms = 50;
    })
    .await;
    let configs = BTreeMap::from([
        ("segment.bytes".to_string(), "4096".to_string()),
        ("retention.bytes".to_string(), "8192".to_string()),
    ]);
    Admin::connect(&broker.addr)
        .await
        .unwrap()
        .create_topic("r", 1, 1, configs)
        .await
        .unwrap();
    let producer = Producer::connect(
        &broker.addr,
        ProducerConfig {
            batch_size: 1024,
            linger: Duration::ZERO,
            ..ProducerConfig::default()
        },
    )
    .await
    .unwrap();
    for i in 0..400 {
        producer
            .send(ProducerRecord::new("r", format!("{i:0>90}")))
            .await
            .unwrap();
    }
    producer.flush().await;

    let client = BrokerClient::connect(format!("http://{}", broker.addr))
        .await
        .unwrap();
    let offsets = || {
        let mut client = client.clone();
        async move {
            let r = client
                .list_offsets(ListOffsetsRequest {
                    topic: "r".into(),
                    partition: 0,
                    spec: Some(Spec::Earliest(true)),
                })
                .await
                .unwrap()
                .into_inner();
            (r.log_start_offset, r.high_watermark)
        }
    };
    eventually(
        "retention to delete old segments",
        Duration::from_secs(30),
        || async { offsets().await.0 > 0 },
    )
    .await;
    let (start, end) = offsets().await;
    assert_eq!(end, 400);
    assert!(start > 0 && start < 400, "log start {start}");
}
