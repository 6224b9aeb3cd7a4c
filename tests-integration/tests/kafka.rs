//! Smoke test of the Kafka-protocol broker with a real Kafka client (librdkafka).

use std::time::Duration;

use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};
use rdkafka::{ClientConfig, Message, Offset, TopicPartitionList};
use tests_integration::{kafka_brokers, unique};

#[test]
fn produce_consume_with_group_and_committed_offsets() {
    let brokers = kafka_brokers();
    let topic = unique("smoke");
    let producer: ThreadedProducer<DefaultProducerContext> = ClientConfig::new()
        .set("bootstrap.servers", &brokers)
        .set("enable.idempotence", "true")
        .create()
        .expect("producer");
    for i in 0..20 {
        let payload = format!("message {i}");
        producer
            // One partition, so that order and the committed offset are exact.
            .send(
                BaseRecord::to(&topic)
                    .partition(0)
                    .key(&i.to_string())
                    .payload(&payload),
            )
            .map_err(|(e, _)| e)
            .expect("send");
    }
    producer.flush(Duration::from_secs(10)).expect("flush");

    let group = unique("group");
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", &brokers)
        .set("group.id", &group)
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("auto.offset.reset", "earliest")
        .set("session.timeout.ms", "6000")
        .create()
        .expect("consumer");
    consumer.subscribe(&[&topic]).expect("subscribe");
    let mut got = Vec::new();
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while got.len() < 20 && std::time::Instant::now() < deadline {
        if let Some(msg) = consumer.poll(Duration::from_millis(500)) {
            let msg = msg.expect("message");
            got.push(String::from_utf8_lossy(msg.payload().unwrap_or_default()).into_owned());
            consumer
                .store_offset_from_message(&msg)
                .expect("store offset");
        }
    }
    assert_eq!(got.len(), 20, "all messages consumed: {got:?}");
    assert_eq!(got[0], "message 0");
    consumer
        .commit_consumer_state(CommitMode::Sync)
        .expect("commit");

    let mut tpl = TopicPartitionList::new();
    tpl.add_partition(&topic, 0);
    let committed = consumer
        .committed_offsets(tpl, Duration::from_secs(10))
        .expect("committed offsets");
    let offset = committed
        .find_partition(&topic, 0)
        .expect("partition 0")
        .offset();
    assert_eq!(
        offset,
        Offset::Offset(20),
        "the group's committed offset is after the last message"
    );
    let (low, high) = consumer
        .fetch_watermarks(&topic, 0, Duration::from_secs(10))
        .expect("watermarks");
    assert_eq!((low, high), (0, 20));
}
