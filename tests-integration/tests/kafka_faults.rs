//! Fault injection through the mock broker's control port. A binary of its
//! own: cargo runs test binaries one after another, so taking the shared
//! broker down here cannot disturb the tests of `kafka.rs`.

use std::collections::HashSet;
use std::io::{BufRead, BufReader, Write};
use std::time::{Duration, Instant};

use tests_integration::{endpoint, kafka_brokers, unique};
use velo_datasource_core::{
    DataReader, DataSourceRegistry, DataType, DataWriter, FieldDefinition, FieldValue, Schema,
    StreamRecord,
};
use velo_kafka as _;

/// Sends one command to the mock broker's control port.
fn control(cmd: &str) {
    let addr = endpoint("VELO_TEST_KAFKA_CONTROL");
    let mut s = std::net::TcpStream::connect(&addr).unwrap();
    writeln!(s, "{cmd}").unwrap();
    let mut reply = String::new();
    BufReader::new(s).read_line(&mut reply).unwrap();
    assert_eq!(reply.trim(), "ok", "{cmd}");
}

fn records(from: i64, to: i64) -> Vec<StreamRecord> {
    let schema = std::sync::Arc::new(Schema::new(vec![FieldDefinition::required(
        "n",
        DataType::Integer,
    )]));
    (from..to)
        .map(|n| StreamRecord::new(schema.clone(), vec![FieldValue::Integer(n)]).unwrap())
        .collect()
}

fn n_of(r: &StreamRecord) -> i64 {
    r.get("n").and_then(FieldValue::as_i64).unwrap()
}

async fn read_back(topic: &str) -> Vec<i64> {
    let uri = format!(
        "kafka://{}/{topic}?group_id={}&bounded=true&kafka.isolation.level=read_committed",
        kafka_brokers(),
        unique("g")
    );
    let mut r = reader(&uri).await;
    let mut ns = Vec::new();
    while r.has_more().await.unwrap() {
        ns.extend(r.read_batch(1000).await.unwrap().iter().map(n_of));
    }
    ns.sort();
    ns
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

async fn writer(topic: &str, params: &str) -> Box<dyn DataWriter> {
    let uri = format!("kafka://{}/{topic}?{params}", kafka_brokers());
    DataSourceRegistry::with_plugins()
        .create_sink(&uri)
        .await
        .unwrap()
        .create_writer()
        .await
        .unwrap()
}

// The fault steps run one after another inside one test: they share the broker.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outages_transient_and_permanent_errors_and_transactions() {
    if endpoint("VELO_TEST_KAFKA_KIND") == "apache" {
        // Real Kafka (the docker path) has no control port to inject faults.
        eprintln!(
            "fault injection needs the mock broker's control port: not run against real Kafka"
        );
        return;
    }
    // A failed earlier run may have left the shared broker down or faulty.
    control("broker_up 1");
    control("rtt 1 0");
    control("clear_errors");

    // 1. A broker outage while writing: the messages wait, then arrive once.
    let topic = unique("outage");
    let mut w = writer(&topic, "").await;
    w.write_batch(&records(0, 100)).await.unwrap();
    w.commit().await.unwrap();
    control("broker_down 1");
    w.write_batch(&records(100, 200)).await.unwrap();
    let up = std::thread::spawn(|| {
        std::thread::sleep(Duration::from_secs(2));
        control("broker_up 1");
    });
    let started = Instant::now();
    w.commit().await.unwrap();
    up.join().unwrap();
    assert!(
        started.elapsed() >= Duration::from_millis(1500),
        "commit waited for the broker"
    );
    assert_eq!(read_back(&topic).await, (0..200).collect::<Vec<_>>());

    // 2. A source reading through an outage and a slow broker: nothing lost.
    let uri = format!(
        "kafka://{}/{topic}?group_id={}&poll_timeout=300ms&commit_interval=0s&kafka.session.timeout.ms=6000",
        kafka_brokers(),
        unique("g")
    );
    let mut r = reader(&uri).await;
    let mut got = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    while got.len() < 50 && Instant::now() < deadline {
        got.extend(r.read_batch(50 - got.len()).await.unwrap());
        r.commit().await.unwrap();
    }
    control("rtt 1 100");
    control("broker_down 1");
    for _ in 0..3 {
        // Reads during the outage hand out what was already fetched, and no error;
        // commits are deferred, not failed.
        got.extend(r.read_batch(100).await.unwrap());
        r.commit().await.unwrap();
    }
    control("broker_up 1");
    let distinct = |got: &[StreamRecord]| got.iter().map(n_of).collect::<HashSet<_>>().len();
    while distinct(&got) < 200 && Instant::now() < deadline {
        got.extend(r.read_batch(100).await.unwrap());
        r.commit().await.unwrap();
    }
    control("rtt 1 0");
    let mut ns: Vec<i64> = got.iter().map(n_of).collect();
    ns.sort();
    let repeated = ns.len() - 200;
    ns.dedup();
    assert_eq!(ns, (0..200).collect::<Vec<_>>(), "nothing lost");
    // With the coordinator down, commits wait; if the group rebalances
    // meanwhile, what was read since the last commit comes again.
    assert!(
        repeated <= 150,
        "{repeated} repeated: at most what was read since the last commit"
    );
    eprintln!("broker outage: {repeated} records repeated, none lost");

    // 3. Transient produce errors (NOT_LEADER_FOR_PARTITION) are retried by the
    //    idempotent producer: delivered once.
    let topic = unique("transient");
    let mut w = writer(&topic, "").await;
    w.write_batch(&records(0, 1)).await.unwrap();
    w.commit().await.unwrap();
    control("produce_errors 3 6");
    w.write_batch(&records(1, 50)).await.unwrap();
    w.commit().await.unwrap();
    control("clear_errors");
    assert_eq!(read_back(&topic).await, (0..50).collect::<Vec<_>>());

    // 4. A permanent error (MESSAGE_TOO_LARGE) surfaces, and says retrying will not help.
    control("produce_errors 20 10");
    w.write_batch(&records(50, 60)).await.unwrap();
    let e = w.commit().await.unwrap_err();
    control("clear_errors");
    assert!(!e.is_retryable(), "{e}");
    assert!(e.to_string().contains("not delivered"), "{e}");

    // 5. Transactions: init, begin, commit; abort; commit again.
    let topic = unique("txn");
    let mut t = writer(&topic, &format!("transactional.id={}", unique("txn-id"))).await;
    t.write_batch(&records(0, 10)).await.unwrap();
    t.commit().await.unwrap();
    t.write_batch(&records(10, 15)).await.unwrap();
    t.rollback().await.unwrap();
    t.write_batch(&records(15, 18)).await.unwrap();
    t.commit().await.unwrap();
    let back = read_back(&topic).await;
    for n in (0..10).chain(15..18) {
        assert!(back.contains(&n), "committed record {n} is there");
    }
    // The mock keeps aborted messages visible to read_committed readers and does
    // not fence a second producer with the same transactional.id (its known
    // limits): both are for the docker-compose path against real Kafka.

    // 6. Kafka → Kafka: the source's group offsets go into the transaction.
    //    Errors injected into the transactional offset requests prove they are
    //    sent, and show each class of failure handled: retried, aborted, fenced.
    let input = unique("eos-in");
    let mut w = writer(&input, "").await;
    w.write_batch(&records(0, 400)).await.unwrap();
    w.commit().await.unwrap();
    let group = unique("eos-g");
    let uri = format!(
        "kafka://{}/{input}?group_id={group}&poll_timeout=300ms&kafka.session.timeout.ms=6000",
        kafka_brokers(),
    );
    let mut r = reader(&uri).await;
    let output = unique("eos-out");
    let mut plain = writer(&output, "").await;
    let link = r.source_link().expect("a Kafka reader offers its consumer");
    assert!(
        !plain.link_source(&link),
        "without transactions offsets cannot go with the data"
    );
    let mut t = writer(&output, &format!("transactional.id={}", unique("eos-id"))).await;
    assert!(t.link_source(&link));
    assert_eq!(
        t.committed_position().await.unwrap(),
        Some(velo_datasource_core::SourcePosition::default()),
        "a new group has no offsets"
    );
    let mut got = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    let read = async |r: &mut Box<dyn DataReader>, got: &mut Vec<i64>, want: usize| {
        let mut batch = Vec::new();
        while batch.len() < want && Instant::now() < deadline {
            batch.extend(r.read_batch(want - batch.len()).await.unwrap());
        }
        got.extend(batch.iter().map(n_of));
        batch
    };
    // a. Plain success, and a retriable coordinator error retried.
    let batch = read(&mut r, &mut got, 100).await;
    t.write_batch(&batch).await.unwrap();
    t.commit_with_position(&r.position().unwrap())
        .await
        .unwrap();
    control("txn_offset_errors 2 15"); // COORDINATOR_NOT_AVAILABLE
    let batch = read(&mut r, &mut got, 100).await;
    t.write_batch(&batch).await.unwrap();
    t.commit_with_position(&r.position().unwrap())
        .await
        .unwrap();
    control("clear_errors");
    // b. A rebalance-style rejection of the offsets (ILLEGAL_GENERATION): the
    //    transaction is aborted and the error says so and that a retry helps.
    control("txn_offset_errors 1 22");
    let batch = read(&mut r, &mut got, 100).await;
    t.write_batch(&batch).await.unwrap();
    let e = t
        .commit_with_position(&r.position().unwrap())
        .await
        .unwrap_err();
    control("clear_errors");
    assert!(e.is_retryable(), "{e}");
    assert!(e.to_string().contains("aborted"), "{e}");
    //    The same records again, in a new transaction: committed.
    t.write_batch(&batch).await.unwrap();
    t.commit_with_position(&r.position().unwrap())
        .await
        .unwrap();
    // c. Fenced (PRODUCER_FENCED on EndTxn): fatal, reported as such.
    control("end_txn_errors 1 90");
    let batch = read(&mut r, &mut got, 100).await;
    t.write_batch(&batch).await.unwrap();
    let e = t
        .commit_with_position(&r.position().unwrap())
        .await
        .unwrap_err();
    control("clear_errors");
    assert!(!e.is_retryable(), "{e}");
    assert!(e.to_string().contains("fenced"), "{e}");
    // d. A position that is not Kafka's cannot be carried: unsupported.
    let file_position =
        velo_datasource_core::SourcePosition::new(vec![velo_datasource_core::SourceOffset::File {
            path: "/x".into(),
            byte_offset: 0,
            line_number: 0,
            fingerprint: None,
        }]);
    let mut t2 = writer(&output, &format!("transactional.id={}", unique("eos-id"))).await;
    assert!(matches!(
        t2.commit_with_position(&file_position).await,
        Err(velo_datasource_core::Error::Unsupported { .. })
    ));
    got.sort();
    assert_eq!(
        got,
        (0..400).collect::<Vec<_>>(),
        "the source read each record once"
    );

    // e. A rebalance while a transaction is open: another consumer joins the
    //    group and takes partitions. The records of those partitions are in
    //    the open transaction, but their offsets are no longer this
    //    consumer's: the commit aborts rather than deliver them twice.
    // Enough records that neither consumer runs dry while the group
    // rebalances (slow on the mock, slower on a loaded machine): the
    // newcomer shows it got partitions by handing out a record of them.
    w.write_batch(&records(400, 5400)).await.unwrap();
    w.commit().await.unwrap();
    let mut t3 = writer(&output, &format!("transactional.id={}", unique("eos-id"))).await;
    assert!(t3.link_source(&link));
    let batch = read(&mut r, &mut got, 100).await;
    t3.write_batch(&batch).await.unwrap();
    let mut r2 = reader(&uri).await;
    let until = Instant::now() + Duration::from_secs(60);
    // Both poll so that the group rebalances; the newcomer gets partitions.
    while r2.position().unwrap().is_empty() && Instant::now() < until {
        let _ = r2.read_batch(1).await.unwrap();
        let _ = r.read_batch(1).await.unwrap();
    }
    assert!(
        !r2.position().unwrap().is_empty(),
        "the second consumer got partitions"
    );
    let e = t3
        .commit_with_position(&r.position().unwrap())
        .await
        .unwrap_err();
    assert!(e.is_retryable(), "{e}");
    assert!(e.to_string().contains("reassigned"), "{e}");
    r2.close().await.unwrap();
    let back = read_back(&output).await;
    for n in 0..300 {
        assert!(back.contains(&n), "committed record {n} is in the output");
    }
}
