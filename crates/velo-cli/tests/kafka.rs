//! `velo pipe` Kafka → Kafka with a transactional sink, SIGKILLed in the
//! middle of transactions and restarted until the bounded source is done.
//!
//! Exactly-once needs the broker to hide aborted transactions from
//! `read_committed` readers and to store the offsets sent into a
//! transaction. librdkafka's mock cluster (the native path of `cargo xtask
//! itest`) does neither, so there the test checks that nothing is lost and
//! reports the repeats; with real Apache Kafka (`cargo xtask itest --docker`,
//! `VELO_TEST_KAFKA_KIND=apache`) it also asserts that every record is there
//! exactly once.

use std::collections::HashMap;
use std::process::{Command, Stdio};
use std::time::Duration;

use assert_cmd::cargo::CommandCargoExt;

mod common;
use common::env;

fn velo(args: &[&str]) -> Command {
    let mut c = Command::cargo_bin("velo").unwrap();
    c.arg("pipe")
        .args(args)
        .arg("--no-progress")
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    c
}

/// Runs `velo pipe` to its end; its log.
fn run_to_end(args: &[&str]) -> String {
    let out = velo(args).output().unwrap();
    let log = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "velo pipe {args:?}: {log}");
    log
}

#[test]
fn kafka_to_kafka_transactions_survive_sigkill() {
    let brokers = env("VELO_TEST_KAFKA_BROKERS");
    let exactly_once = env("VELO_TEST_KAFKA_KIND") == "apache";
    let tag = format!("{}-{}", std::process::id(), run_suffix());
    let (input, output) = (format!("eos-in-{tag}"), format!("eos-out-{tag}"));
    let n = 60_000;
    let dir = tempfile::tempdir().unwrap();

    // The input, produced through a plain (non-transactional) sink.
    let file = dir.path().join("in.jsonl");
    let lines: String = (0..n).map(|i| format!("{{\"n\":{i}}}\n")).collect();
    std::fs::write(&file, lines).unwrap();
    run_to_end(&[
        &format!("file://{}", file.display()),
        &format!("kafka://{brokers}/{input}"),
    ]);

    // The exactly-once pipe, killed mid-transaction and restarted.
    let source = format!(
        "kafka://{brokers}/{input}?group_id=eos-{tag}&bounded=true&kafka.session.timeout.ms=6000"
    );
    let sink = format!("kafka://{brokers}/{output}?transactional.id=eos-{tag}");
    let cp = dir.path().join("cp");
    let args = [
        source.as_str(),
        sink.as_str(),
        "--checkpoint-dir",
        cp.to_str().unwrap(),
        "--batch-size",
        "500",
        // The runner says when the sink carries the source's offsets.
        "--log",
        "velo=info",
    ];
    let mut kills = 0;
    let mut last_log = None;
    for delay in [150u64, 50, 250, 100, 200] {
        let spawned = std::time::SystemTime::now();
        let mut child = velo(&args).spawn().unwrap();
        // Kill once this run has committed at least one transaction (its
        // checkpoint moved), a little later each time.
        while child.try_wait().unwrap().is_none() && !checkpoint_after(&cp, spawned) {
            std::thread::sleep(Duration::from_millis(10));
        }
        std::thread::sleep(Duration::from_millis(delay));
        if child.try_wait().unwrap().is_some() {
            let out = child.wait_with_output().unwrap();
            let log = String::from_utf8_lossy(&out.stderr).into_owned();
            assert!(out.status.success(), "{log}");
            last_log = Some(log);
            break;
        }
        child.kill().unwrap();
        child.wait().unwrap();
        kills += 1;
    }
    let log = last_log.unwrap_or_else(|| run_to_end(&args));
    assert!(kills > 0, "the pipe was never killed mid-run");
    assert!(
        log.contains("commits the source's position in its own transactions"),
        "the sink took the Kafka source's consumer: {log}"
    );

    // What a read_committed consumer sees.
    let back = dir.path().join("back.jsonl");
    run_to_end(&[
        &format!(
            "kafka://{brokers}/{output}?group_id=eos-check-{tag}&bounded=true&kafka.isolation.level=read_committed"
        ),
        &format!("file://{}", back.display()),
    ]);
    let mut seen: HashMap<i64, usize> = HashMap::new();
    for line in std::fs::read_to_string(&back).unwrap().lines() {
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        *seen.entry(v["n"].as_i64().unwrap()).or_default() += 1;
    }
    let missing: Vec<i64> = (0..n).filter(|i| !seen.contains_key(i)).collect();
    assert!(
        missing.is_empty(),
        "{} records lost, first {:?}",
        missing.len(),
        &missing[..missing.len().min(10)]
    );
    let repeated: usize = seen.values().map(|c| c - 1).sum();
    eprintln!(
        "Kafka → Kafka, {kills} SIGKILLs: {n} records, {repeated} repeated (broker: {})",
        env("VELO_TEST_KAFKA_KIND")
    );
    if exactly_once {
        assert_eq!(repeated, 0, "exactly once with real Kafka");
    }
}

/// Whether a checkpoint under `dir` was written after `t`.
fn checkpoint_after(dir: &std::path::Path, t: std::time::SystemTime) -> bool {
    std::fs::read_dir(dir).is_ok_and(|entries| {
        entries
            .flatten()
            .any(|e| e.metadata().and_then(|m| m.modified()).is_ok_and(|m| m > t))
    })
}

/// A per-run suffix, so reruns against a long-lived broker use fresh topics.
fn run_suffix() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos() as u128
}
