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

// ---- The velo-kafka connector against the broker ----

mod connector {
    use std::collections::HashSet;
    use std::time::{Duration, Instant};

    use rdkafka::ClientConfig;
    use rdkafka::message::{Header, OwnedHeaders};
    use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};
    use tests_integration::{kafka_brokers, unique};
    use velo_datasource_core::{
        DataReader, DataSourceRegistry, FieldValue, Lag, SourceOffset, SourcePosition,
    };
    use velo_file as _;
    use velo_kafka as _;

    /// Produces `n` JSON messages `{"n": i}` with an independent client (no velo code).
    pub(super) fn produce(topic: &str, n: usize, partition: Option<i32>) {
        let producer: ThreadedProducer<DefaultProducerContext> = ClientConfig::new()
            .set("bootstrap.servers", kafka_brokers())
            .set("enable.idempotence", "true")
            .set("linger.ms", "5")
            .create()
            .unwrap();
        for i in 0..n {
            let payload = format!("{{\"n\":{i},\"label\":\"m{i}\"}}");
            let key = format!("k{i}");
            let headers = OwnedHeaders::new().insert(Header {
                key: "source",
                value: Some("test".as_bytes()),
            });
            let mut rec = BaseRecord::to(topic)
                .payload(&payload)
                .key(&key)
                .headers(headers);
            if let Some(p) = partition {
                rec = rec.partition(p);
            }
            let mut rec = Some(rec);
            while let Some(r) = rec.take() {
                if let Err((e, back)) = producer.send(r) {
                    assert!(format!("{e}").contains("Queue full"), "{e}");
                    std::thread::sleep(Duration::from_millis(20));
                    rec = Some(back);
                }
            }
        }
        producer.flush(Duration::from_secs(60)).unwrap();
    }

    fn uri(topic: &str, params: &str) -> String {
        format!(
            "kafka://{}/{topic}?kafka.session.timeout.ms=6000&poll_timeout=500ms&{params}",
            kafka_brokers()
        )
    }

    async fn reader(uri: &str) -> Box<dyn DataReader> {
        DataSourceRegistry::with_plugins()
            .create_source(uri)
            .await
            .unwrap()
            .create_reader()
            .await
            .unwrap()
    }

    fn ns(records: &[velo_datasource_core::StreamRecord]) -> Vec<i64> {
        records
            .iter()
            .map(|r| r.get("n").and_then(FieldValue::as_i64).unwrap())
            .collect()
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn hundred_thousand_messages_once_across_a_restart() {
        let topic = unique("restart");
        let total = 100_000;
        produce(&topic, total, None);
        let group = unique("g");
        let u = uri(&topic, &format!("group_id={group}&commit_interval=0s"));
        let mut committed: Vec<i64> = Vec::new();
        let mut first = reader(&u).await;
        let deadline = Instant::now() + Duration::from_secs(90);
        while committed.len() < total / 2 && Instant::now() < deadline {
            let batch = first.read_batch(1000).await.unwrap();
            // The sink commits the batch, then the source is told.
            committed.extend(ns(&batch));
            first.commit().await.unwrap();
        }
        // A batch the sink never committed: it must come again after the restart.
        let lost_in_flight = first.read_batch(1000).await.unwrap();
        assert!(!lost_in_flight.is_empty());
        drop(first);
        let mut second = reader(&u).await;
        let deadline = Instant::now() + Duration::from_secs(120);
        while committed.len() < total && Instant::now() < deadline {
            let batch = second.read_batch(1000).await.unwrap();
            committed.extend(ns(&batch));
            second.commit().await.unwrap();
        }
        second.close().await.unwrap();
        let unique_ns: HashSet<i64> = committed.iter().copied().collect();
        assert_eq!(unique_ns.len(), total, "every message arrives");
        assert_eq!(
            committed.len(),
            total,
            "and none twice: {} extra",
            committed.len() - total
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn bounded_keys_headers_seek_reset_and_lag() {
        let topic = unique("bounded");
        produce(&topic, 50, Some(0));
        // Bounded: exactly what was there at start, then the end.
        let mut r = reader(&uri(
            &topic,
            &format!("group_id={}&bounded=true", unique("g")),
        ))
        .await;
        let mut all = Vec::new();
        while r.has_more().await.unwrap() {
            all.extend(r.read_batch(20).await.unwrap());
        }
        assert_eq!(ns(&all), (0..50).collect::<Vec<_>>());
        assert_eq!(all[7].key.as_deref(), Some(&b"k7"[..]));
        assert_eq!(all[7].header("source"), Some(&b"test"[..]));
        assert_eq!((all[7].partition, all[7].offset), (0, 7));
        assert!(
            all[7].event_time.is_some(),
            "the broker timestamp is the event time"
        );
        assert_eq!(all[7].get("label"), Some(&FieldValue::from("m7")));

        // Seek: a new reader restored to offset 40 reads the last ten.
        let mut r = reader(&uri(
            &topic,
            &format!("group_id={}&bounded=true", unique("g")),
        ))
        .await;
        r.restore(SourcePosition::new(vec![SourceOffset::Kafka {
            topic: topic.clone(),
            partition: 0,
            offset: 40,
        }]))
        .await
        .unwrap();
        let mut tail = Vec::new();
        while r.has_more().await.unwrap() {
            tail.extend(r.read_batch(100).await.unwrap());
        }
        assert_eq!(ns(&tail), (40..50).collect::<Vec<_>>());

        // reset_policy=latest in a new group: nothing of what is already there.
        let mut r = reader(&uri(
            &topic,
            &format!("group_id={}&bounded=true&reset_policy=latest", unique("g")),
        ))
        .await;
        assert!(r.read_batch(100).await.unwrap().is_empty());
        assert!(!r.has_more().await.unwrap());

        // reset_policy=none without a committed offset is an error that says so.
        let mut r = reader(&uri(
            &topic,
            &format!("group_id={}&bounded=true&reset_policy=none", unique("g")),
        ))
        .await;
        let e = r.read_batch(10).await.unwrap_err().to_string();
        assert!(e.contains("no committed offset"), "{e}");

        // Lag: what the watermarks say is left.
        let mut r = reader(&uri(&topic, &format!("group_id={}", unique("g")))).await;
        let mut read = Vec::new();
        let deadline = Instant::now() + Duration::from_secs(30);
        while read.len() < 20 && Instant::now() < deadline {
            read.extend(r.read_batch(20 - read.len()).await.unwrap());
        }
        assert_eq!(read.len(), 20);
        assert_eq!(r.lag(), Some(Lag::Records(30)));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn dropping_a_reader_commits_nothing_it_handed_out() {
        let topic = unique("drop");
        produce(&topic, 30, Some(0));
        let u = uri(&topic, &format!("group_id={}&bounded=true", unique("g")));
        let mut r = reader(&u).await;
        let mut got = Vec::new();
        while got.len() < 10 {
            got.extend(r.read_batch(10 - got.len()).await.unwrap());
        }
        r.commit().await.unwrap(); // the sink has the first ten
        let _unacknowledged = r.read_batch(10).await.unwrap();
        drop(r); // no commit, no close
        let mut r = reader(&u).await;
        let mut rest = Vec::new();
        while r.has_more().await.unwrap() {
            rest.extend(r.read_batch(100).await.unwrap());
        }
        assert_eq!(ns(&rest), (10..30).collect::<Vec<_>>());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_bad_payload_fails_after_the_good_ones_or_is_skipped() {
        let topic = unique("bad");
        produce(&topic, 3, Some(0));
        let producer: ThreadedProducer<DefaultProducerContext> = ClientConfig::new()
            .set("bootstrap.servers", kafka_brokers())
            .create()
            .unwrap();
        producer
            .send(
                BaseRecord::<(), str>::to(&topic)
                    .partition(0)
                    .payload("not json"),
            )
            .map_err(|(e, _)| e)
            .unwrap();
        producer.flush(Duration::from_secs(10)).unwrap();
        drop(producer);
        produce(&topic, 2, Some(0)); // offsets 4 and 5, n = 0 and 1 again

        // fail: the three good records first, then an error that names the place,
        // every time; the position stays on the bad record.
        let mut r = reader(&uri(
            &topic,
            &format!("group_id={}&bounded=true", unique("g")),
        ))
        .await;
        let mut good = Vec::new();
        let err = loop {
            match r.read_batch(100).await {
                Ok(batch) => good.extend(batch),
                Err(e) => break e,
            }
        };
        assert_eq!(ns(&good), [0, 1, 2]);
        assert!(
            err.to_string().contains(&format!("{topic}/0@3"))
                && err.to_string().contains("invalid JSON"),
            "{err}"
        );
        assert!(r.read_batch(100).await.is_err(), "the reader stays failed");
        let pos = r.position().unwrap();
        assert_eq!(
            pos.offsets,
            vec![SourceOffset::Kafka {
                topic: topic.clone(),
                partition: 0,
                offset: 3
            }]
        );

        // skip: everything else arrives.
        let mut r = reader(&uri(
            &topic,
            &format!("group_id={}&bounded=true&errors=skip", unique("g")),
        ))
        .await;
        let mut all = Vec::new();
        while r.has_more().await.unwrap() {
            all.extend(r.read_batch(100).await.unwrap());
        }
        assert_eq!(ns(&all), [0, 1, 2, 0, 1]);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn sink_writes_keys_headers_and_json_that_the_source_reads_back() {
        let dir = std::env::temp_dir().join(unique("sink-in"));
        std::fs::create_dir_all(&dir).unwrap();
        let input = dir.join("in.csv");
        std::fs::write(
            &input,
            "id,tenant,amount\n1,acme,9.5\n2,globex,3\n3,acme,\n",
        )
        .unwrap();
        let registry = DataSourceRegistry::with_plugins();
        let mut file_reader = registry
            .create_source(&format!("file://{}", input.display()))
            .await
            .unwrap()
            .create_reader()
            .await
            .unwrap();
        let records = file_reader.read_batch(10).await.unwrap();
        let topic = unique("sink");
        let sink = registry
            .create_sink(&format!(
                "kafka://{}/{topic}?key.field=id&headers=tenant",
                kafka_brokers()
            ))
            .await
            .unwrap();
        let mut w = sink.create_writer().await.unwrap();
        w.write_batch(&records).await.unwrap();
        w.commit().await.unwrap();
        w.close().await.unwrap();
        let mut r = reader(&uri(
            &topic,
            &format!("group_id={}&bounded=true", unique("g")),
        ))
        .await;
        let mut back = Vec::new();
        while r.has_more().await.unwrap() {
            back.extend(r.read_batch(10).await.unwrap());
        }
        back.sort_by_key(|r| r.get("id").and_then(FieldValue::as_i64));
        assert_eq!(back.len(), 3);
        assert_eq!(back[0].key.as_deref(), Some(&b"1"[..]));
        assert_eq!(back[1].header("tenant"), Some(&b"globex"[..]));
        assert_eq!(back[0].get("amount"), Some(&FieldValue::Float(9.5)));
        assert!(back[2].get("amount").unwrap().is_null());
        let _ = std::fs::remove_dir_all(dir);
    }
}

mod group {
    use std::collections::HashMap;
    use std::time::{Duration, Instant};

    use tests_integration::{kafka_brokers, unique};
    use velo_datasource_core::{DataReader, DataSourceRegistry, FieldValue};
    use velo_kafka as _;

    async fn reader(uri: &str) -> Box<dyn DataReader> {
        DataSourceRegistry::with_plugins()
            .create_source(uri)
            .await
            .unwrap()
            .create_reader()
            .await
            .unwrap()
    }

    /// Reads one batch, "commits it to the sink" (counts it), then commits the source.
    async fn step(r: &mut Box<dyn DataReader>, seen: &mut HashMap<i64, u32>, n: usize) -> usize {
        let batch = r.read_batch(n).await.unwrap();
        for rec in &batch {
            *seen
                .entry(rec.get("n").and_then(FieldValue::as_i64).unwrap())
                .or_default() += 1;
        }
        r.commit().await.unwrap();
        batch.len()
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn two_readers_split_a_group_and_one_takes_over() {
        let topic = unique("group");
        let total = 4000;
        super::connector::produce(&topic, total as usize, None);
        let u = format!(
            "kafka://{}/{topic}?group_id={}&kafka.session.timeout.ms=6000&poll_timeout=300ms&commit_interval=0s",
            kafka_brokers(),
            unique("g")
        );
        let mut seen: HashMap<i64, u32> = HashMap::new();
        let mut a = reader(&u).await;
        let mut b = reader(&u).await;
        let (mut from_a, mut from_b) = (0, 0);
        let deadline = Instant::now() + Duration::from_secs(90);
        // Both read until each has had a share: the group split the partitions.
        while (from_a == 0 || from_b == 0 || seen.len() < (total as usize) / 2)
            && Instant::now() < deadline
        {
            from_a += step(&mut a, &mut seen, 50).await;
            from_b += step(&mut b, &mut seen, 50).await;
        }
        assert!(
            from_a > 0 && from_b > 0,
            "both readers got partitions ({from_a}, {from_b})"
        );
        // B stops mid-stream; A takes over its partitions.
        b.close().await.unwrap();
        drop(b);
        while seen.len() < total as usize && Instant::now() < deadline {
            step(&mut a, &mut seen, 500).await;
        }
        let twice: Vec<_> = seen
            .iter()
            .filter(|(_, c)| **c > 1)
            .map(|(n, _)| *n)
            .collect();
        assert_eq!(seen.len(), total as usize, "nothing lost");
        assert!(
            twice.is_empty(),
            "nothing delivered twice: {} records, e.g. {:?}",
            twice.len(),
            &twice[..twice.len().min(5)]
        );
    }
}
