//! The README's example: create a topic, produce a keyed record, read it back.
//! Run against a broker: `cargo run --example quickstart -p rafka-client`.

use rafka_client::{Admin, Consumer, Producer, ProducerRecord, SeekTo, TopicPartition};
use std::time::Duration;

#[tokio::main]
async fn main() -> Result<(), rafka_client::ClientError> {
    let bootstrap = "127.0.0.1:9092";
    Admin::connect(bootstrap)
        .await?
        .create_topic("events", 3, 1, Default::default())
        .await?;
    let producer = Producer::connect(bootstrap, Default::default()).await?;
    let delivery = producer
        .send(ProducerRecord::new("events", "signed up").key("user-1"))
        .await?;
    let ack = delivery.await?; // RecordMetadata { partition, offset, .. }

    let mut consumer = Consumer::connect(bootstrap, Default::default()).await?;
    let tp = TopicPartition::new("events", ack.partition);
    consumer.assign([tp.clone()]);
    consumer.seek(&tp, SeekTo::Earliest).await?;
    for r in consumer.poll(Duration::from_secs(1)).await? {
        println!("{}-{}@{} {:?}", r.topic, r.partition, r.offset, r.value);
    }
    Ok(())
}
