//! `velo-kafka-mock [--brokers N] [--topic NAME:PARTITIONS ...]`
//!
//! Hosts librdkafka's mock cluster (a Kafka-protocol server over TCP on
//! loopback) in a process of its own, prints `bootstrap=HOST:PORT,...` on
//! stdout and serves until it is terminated. The cluster is not `Send`, so it
//! stays on the main thread. Topics are created up front with `--topic`;
//! others are created on first use with the cluster's default partition count.
//!
//! A second line, `control=HOST:PORT`, names a control port for fault
//! injection: one command per line, answered `ok` or `error: ...`:
//! `broker_down ID`, `broker_up ID`, `rtt ID MS`, `produce_errors N CODE`,
//! `fetch_errors N CODE`, `commit_errors N CODE`, `add_offsets_errors N CODE`,
//! `txn_offset_errors N CODE`, `end_txn_errors N CODE` (N responses of that
//! request failing with the Kafka error code CODE), `clear_errors`,
//! `create_topic NAME PARTITIONS`.
//!
//! Limits of the mock (see docs/testing.md): no CreateTopics API, at most
//! 100,000 messages or 5 MiB kept per partition, slow group rebalances,
//! `offsets_for_times` unimplemented, aborted transactional data visible to
//! `read_committed` readers.

use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::process::ExitCode;
use std::time::Duration;

use rdkafka::mocking::MockCluster;
use rdkafka::types::{RDKafkaApiKey, RDKafkaRespErr};

fn main() -> ExitCode {
    let mut brokers = 1;
    let mut topics: Vec<(String, i32)> = Vec::new();
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--brokers" => brokers = args.next().and_then(|v| v.parse().ok()).unwrap_or(1),
            "--topic" => {
                let spec = args.next().unwrap_or_default();
                let (name, parts) = spec.split_once(':').unwrap_or((&spec, "1"));
                topics.push((name.to_owned(), parts.parse().unwrap_or(1)));
            }
            "--help" | "-h" => {
                eprintln!("usage: velo-kafka-mock [--brokers N] [--topic NAME:PARTITIONS ...]");
                return ExitCode::SUCCESS;
            }
            other => {
                eprintln!("velo-kafka-mock: unknown argument `{other}`");
                return ExitCode::from(2);
            }
        }
    }
    let cluster = match MockCluster::new(brokers) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("velo-kafka-mock: cannot start the mock cluster: {e}");
            return ExitCode::FAILURE;
        }
    };
    for (name, parts) in &topics {
        if let Err(e) = cluster.create_topic(name, *parts, 1) {
            eprintln!("velo-kafka-mock: cannot create topic {name}: {e}");
            return ExitCode::FAILURE;
        }
    }
    let control = match TcpListener::bind("127.0.0.1:0") {
        Ok(l) => l,
        Err(e) => {
            eprintln!("velo-kafka-mock: cannot open the control port: {e}");
            return ExitCode::FAILURE;
        }
    };
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "bootstrap={}", cluster.bootstrap_servers());
    let _ = writeln!(
        out,
        "control={}",
        control
            .local_addr()
            .map(|a| a.to_string())
            .unwrap_or_default()
    );
    let _ = out.flush();
    drop(out);
    // Serve control connections on this thread (the cluster is not Send)
    // until terminated; dropping the cluster would stop it.
    for conn in control.incoming().flatten() {
        let Ok(mut writer) = conn.try_clone() else {
            continue;
        };
        for line in BufReader::new(conn).lines().map_while(Result::ok) {
            let reply = match command(&cluster, line.trim()) {
                Ok(()) => "ok".to_owned(),
                Err(e) => format!("error: {e}"),
            };
            if writeln!(writer, "{reply}").is_err() {
                break;
            }
        }
    }
    ExitCode::SUCCESS
}

/// Runs one control command against the cluster.
fn command<C: rdkafka::ClientContext>(
    cluster: &MockCluster<'_, C>,
    line: &str,
) -> Result<(), String> {
    let words: Vec<&str> = line.split_whitespace().collect();
    let num = |i: usize| -> Result<i64, String> {
        words
            .get(i)
            .and_then(|w| w.parse().ok())
            .ok_or_else(|| format!("`{line}`: argument {i} must be a number"))
    };
    let errors = |api: RDKafkaApiKey| -> Result<(), String> {
        let count = num(1)? as usize;
        let code = num(2)? as i32;
        let err = RDKafkaRespErr::try_from(code)
            .map_err(|_| format!("unknown Kafka error code {code}"))?;
        cluster.request_errors(api, &vec![err; count]);
        Ok(())
    };
    match words.first().copied() {
        Some("broker_down") => cluster
            .broker_down(num(1)? as i32)
            .map_err(|e| e.to_string()),
        Some("broker_up") => cluster.broker_up(num(1)? as i32).map_err(|e| e.to_string()),
        Some("rtt") => cluster
            .broker_round_trip_time(num(1)? as i32, Duration::from_millis(num(2)? as u64))
            .map_err(|e| e.to_string()),
        Some("produce_errors") => errors(RDKafkaApiKey::Produce),
        Some("fetch_errors") => errors(RDKafkaApiKey::Fetch),
        Some("commit_errors") => errors(RDKafkaApiKey::OffsetCommit),
        Some("add_offsets_errors") => errors(RDKafkaApiKey::AddOffsetsToTxn),
        Some("txn_offset_errors") => errors(RDKafkaApiKey::TxnOffsetCommit),
        Some("end_txn_errors") => errors(RDKafkaApiKey::EndTxn),
        Some("clear_errors") => {
            for api in [
                RDKafkaApiKey::Produce,
                RDKafkaApiKey::Fetch,
                RDKafkaApiKey::OffsetCommit,
                RDKafkaApiKey::AddOffsetsToTxn,
                RDKafkaApiKey::TxnOffsetCommit,
                RDKafkaApiKey::EndTxn,
            ] {
                cluster.clear_request_errors(api);
            }
            Ok(())
        }
        Some("create_topic") => {
            let name = words.get(1).ok_or("create_topic NAME PARTITIONS")?;
            cluster
                .create_topic(name, num(2)? as i32, 1)
                .map_err(|e| e.to_string())
        }
        _ => Err(format!("unknown command `{line}`")),
    }
}
