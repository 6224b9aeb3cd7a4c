//! `velo-kafka-mock [--brokers N] [--topic NAME:PARTITIONS ...]`
//!
//! Hosts librdkafka's mock cluster (a Kafka-protocol server over TCP on
//! loopback) in a process of its own, prints `bootstrap=HOST:PORT,...` on
//! stdout and serves until it is terminated. The cluster is not `Send`, so it
//! stays on the main thread. Topics are created up front with `--topic`;
//! others are created on first use with the cluster's default partition count.
//!
//! Limits of the mock (see docs/testing.md): no CreateTopics API, at most
//! 100,000 messages or 5 MiB kept per partition, slow group rebalances,
//! `offsets_for_times` unimplemented, aborted transactional data visible to
//! `read_committed` readers.

use std::io::Write;
use std::process::ExitCode;

use rdkafka::mocking::MockCluster;

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
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "bootstrap={}", cluster.bootstrap_servers());
    let _ = out.flush();
    drop(out);
    // Serve until terminated; dropping the cluster would stop it.
    loop {
        std::thread::park();
    }
}
