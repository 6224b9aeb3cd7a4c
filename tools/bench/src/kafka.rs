//! Kafka workloads: velo's sink and source next to bare rdkafka loops with
//! the same settings, on the same broker, over the same messages.

use std::sync::Arc;
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use rdkafka::{ClientConfig, Message, Offset, TopicPartitionList};
use velo_datasource_core::{
    DataSourceRegistry, DataType, FieldDefinition, FieldValue, Schema, StreamRecord,
};

use crate::{Measure, added_peak_rss, measure_rss};

/// 1,000,000 messages of ~100 bytes in 64 partitions: about 1.8 MB and
/// 16,000 messages each, well under the mock's 5 MiB / 100,000 per partition.
const PARTITIONS: i32 = 64;

fn control(cmd: &str) {
    use std::io::{BufRead, BufReader, Write};
    let addr = std::env::var("VELO_TEST_KAFKA_CONTROL")
        .expect("VELO_TEST_KAFKA_CONTROL (set by cargo xtask bench)");
    let mut s = std::net::TcpStream::connect(addr).expect("the mock broker's control port");
    writeln!(s, "{cmd}").unwrap();
    let mut reply = String::new();
    BufReader::new(s).read_line(&mut reply).unwrap();
    assert_eq!(reply.trim(), "ok", "{cmd}");
}

fn producer_config(brokers: &str) -> ClientConfig {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", brokers)
        .set("enable.idempotence", "true")
        .set("acks", "all")
        .set("linger.ms", "5")
        // Unkeyed messages spread evenly, one partition per message, so that
        // no partition passes the mock's size limit.
        .set("sticky.partitioning.linger.ms", "0");
    c
}

/// Records whose JSON form (`{"p":"..."}`) is 100 bytes.
fn records(n: usize) -> Vec<StreamRecord> {
    let schema = Arc::new(Schema::new(vec![FieldDefinition::required(
        "p",
        DataType::String,
    )]));
    (0..n)
        .map(|i| {
            StreamRecord::from_parts(
                schema.clone(),
                vec![FieldValue::String(format!("{i:092}").into())],
            )
        })
        .collect()
}

fn bare_produce(brokers: &str, topic: &str, n: usize) -> f64 {
    let producer: BaseProducer = producer_config(brokers).create().unwrap();
    let payload = format!("{{\"p\":\"{:092}\"}}", 0);
    for i in 0..n {
        let mut rec: BaseRecord<'_, (), [u8]> = BaseRecord::to(topic).payload(payload.as_bytes());
        loop {
            match producer.send(rec) {
                Ok(()) => break,
                Err((_, back)) => {
                    producer.poll(Duration::from_millis(10));
                    rec = back;
                }
            }
        }
        if i % 1000 == 0 {
            producer.poll(Duration::ZERO);
        }
    }
    // Wait for the delivery reports in short polls, as the velo sink does:
    // rdkafka's `flush` polls in 100 ms steps that last their whole 100 ms,
    // and neither side should carry that in the comparison.
    let _ = producer.flush(Duration::ZERO);
    let started = std::time::Instant::now();
    while producer.in_flight_count() > 0 {
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "deliveries stalled"
        );
        producer.poll(Duration::from_millis(1));
    }
    n as f64
}

/// Low and high watermarks of `topic`, summed over its partitions.
fn watermarks(brokers: &str, topic: &str) -> (i64, i64) {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .create()
        .unwrap();
    (0..PARTITIONS).fold((0, 0), |(l, h), p| {
        let (low, high) = consumer
            .fetch_watermarks(topic, p, Duration::from_secs(10))
            .unwrap();
        (l + low, h + high)
    })
}

fn bare_consume(brokers: &str, topic: &str, n: usize) -> f64 {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", format!("bare-{}", std::process::id()))
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        // The same fetch pacing as the velo source (its one non-default setting).
        .set("fetch.queue.backoff.ms", "100")
        .create()
        .unwrap();
    let mut tpl = TopicPartitionList::new();
    for p in 0..PARTITIONS {
        tpl.add_partition_offset(topic, p, Offset::Beginning)
            .unwrap();
    }
    consumer.assign(&tpl).unwrap();
    let mut count = 0;
    let mut bytes = 0usize;
    while count < n {
        if let Some(Ok(m)) = consumer.poll(Duration::from_secs(1)) {
            bytes += m.payload().map_or(0, <[u8]>::len);
            count += 1;
        }
    }
    std::hint::black_box(bytes);
    count as f64
}

/// (velo sink, bare producer, velo source, bare consumer), each `reps` times.
pub(crate) fn run(
    rt: &tokio::runtime::Runtime,
    brokers: &str,
    n: usize,
    reps: usize,
) -> (Measure, Measure, Measure, Measure) {
    let batch = records(n);
    let mut topics = Vec::new();
    let mut sink_runs = Vec::new();
    let mut bare_p_runs = Vec::new();
    // The most memory any run added to this process, per side.
    let [mut sink_rss, mut bare_p_rss, mut source_rss, mut bare_c_rss] = [0f64; 4];
    for rep in 0..reps {
        let ours = format!("bench-velo-{}-{rep}", std::process::id());
        let bare = format!("bench-bare-{}-{rep}", std::process::id());
        control(&format!("create_topic {ours} {PARTITIONS}"));
        control(&format!("create_topic {bare} {PARTITIONS}"));
        let t = Instant::now();
        let ((), rss) = added_peak_rss(|| {
            rt.block_on(async {
                let uri = format!("kafka://{brokers}/{ours}?kafka.sticky.partitioning.linger.ms=0");
                let sink = DataSourceRegistry::with_plugins()
                    .create_sink(&uri)
                    .await
                    .unwrap();
                let mut w = sink.create_writer().await.unwrap();
                for chunk in batch.chunks(10_000) {
                    w.write_batch(chunk).await.unwrap();
                }
                w.commit().await.unwrap();
            })
        });
        sink_runs.push(t.elapsed().as_secs_f64());
        sink_rss = sink_rss.max(rss);
        let t = Instant::now();
        let (_, rss) = added_peak_rss(|| bare_produce(brokers, &bare, n));
        bare_p_runs.push(t.elapsed().as_secs_f64());
        bare_p_rss = bare_p_rss.max(rss);
        for topic in [&ours, &bare] {
            let (low, high) = watermarks(brokers, topic);
            assert!(
                low == 0 && high == n as i64,
                "{topic}: watermarks sum to low {low}, high {high}, for {n} messages produced"
            );
        }
        topics.push(ours);
    }
    let mut source_runs = Vec::new();
    let mut bare_c_runs = Vec::new();
    for (rep, topic) in topics.iter().enumerate() {
        let t = Instant::now();
        let (read, rss) = added_peak_rss(|| {
            rt.block_on(async {
            let uri = format!(
                "kafka://{brokers}/{topic}?bounded=true&format=raw&group_id=velo-bench-{rep}-{}",
                std::process::id()
            );
            let mut r = DataSourceRegistry::with_plugins()
                .create_source(&uri)
                .await
                .unwrap()
                .create_reader()
                .await
                .unwrap();
            let mut count = 0;
            while r.has_more().await.unwrap() {
                count += r.read_batch(10_000).await.unwrap().len();
            }
            count
        })
        });
        assert_eq!(read, n, "the velo source read every message");
        source_runs.push(t.elapsed().as_secs_f64());
        source_rss = source_rss.max(rss);
        let t = Instant::now();
        let (_, rss) = added_peak_rss(|| bare_consume(brokers, topic, n));
        bare_c_runs.push(t.elapsed().as_secs_f64());
        bare_c_rss = bare_c_rss.max(rss);
    }
    let nf = n as f64;
    (
        measure_rss(
            "velo Kafka sink (JSON records)",
            "records",
            ((sink_runs, nf), sink_rss),
        ),
        measure_rss(
            "bare BaseProducer loop",
            "records",
            ((bare_p_runs, nf), bare_p_rss),
        ),
        measure_rss(
            "velo Kafka source (bounded, raw)",
            "records",
            ((source_runs, nf), source_rss),
        ),
        measure_rss(
            "bare BaseConsumer loop",
            "records",
            ((bare_c_runs, nf), bare_c_rss),
        ),
    )
}
