//! `velo pipe` from the S3 server `cargo xtask itest` starts: killed in the
//! middle of an object, the next run resumes at the saved byte offset.

use std::process::{Command, Stdio};
use std::time::Duration;

use assert_cmd::cargo::CommandCargoExt;

mod common;
use common::env;

fn boto3(script: &str) {
    let prelude = format!(
        "import boto3\ns3 = boto3.client('s3', endpoint_url='{}', region_name='{}', aws_access_key_id='{}', \
         aws_secret_access_key='{}')\nbucket = '{}'\n",
        env("VELO_TEST_S3_ENDPOINT"),
        env("VELO_TEST_S3_REGION"),
        env("VELO_TEST_S3_ACCESS_KEY_ID"),
        env("VELO_TEST_S3_SECRET_ACCESS_KEY"),
        env("VELO_TEST_S3_BUCKET")
    );
    let out = Command::new(env("VELO_TEST_S3_PYTHON"))
        .args(["-c", &format!("{prelude}{script}")])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn killed_mid_object_resumes_from_the_byte_offset() {
    let prefix = format!("cli-kill-{}", std::process::id());
    let n = 300_000;
    // One object of about 20 MB, larger than what is downloaded ahead whole.
    boto3(&format!(
        "body = ''.join('{{\"id\": %d, \"pad\": \"%s\"}}\\n' % (i, 'x' * 48) for i in range({n}))\n\
         s3.put_object(Bucket=bucket, Key='{prefix}/big.jsonl', Body=body.encode())\n"
    ));
    let source = format!(
        "s3://{}/{prefix}?endpoint={}&region={}&access_key_id={}&secret_access_key={}&format=jsonl&until=end",
        env("VELO_TEST_S3_BUCKET"),
        env("VELO_TEST_S3_ENDPOINT"),
        env("VELO_TEST_S3_REGION"),
        env("VELO_TEST_S3_ACCESS_KEY_ID"),
        env("VELO_TEST_S3_SECRET_ACCESS_KEY"),
    );
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out.jsonl");
    let cp = dir.path().join("cp");
    let run = || {
        Command::cargo_bin("velo")
            .unwrap()
            .args(["pipe", &source, &format!("file://{}", out.display())])
            .args([
                "--checkpoint-dir",
                cp.to_str().unwrap(),
                "--batch-size",
                "2000",
                "--no-progress",
            ])
            .env_remove("RUST_LOG")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    };
    // The byte offset in the object of the saved checkpoint, if any.
    let saved_offset = || -> Option<u64> {
        let entry = std::fs::read_dir(&cp).ok()?.flatten().find(|e| {
            e.file_name()
                .to_string_lossy()
                .ends_with(".checkpoint.json")
        })?;
        let saved = std::fs::read_to_string(entry.path()).ok()?;
        let at = saved.find("\"byte_offset\": ")?;
        saved[at + 15..]
            .chars()
            .take_while(char::is_ascii_digit)
            .collect::<String>()
            .parse()
            .ok()
    };
    let size: u64 = (0..n)
        .map(|i| format!("{{\"id\": {i}, \"pad\": \"{}\"}}\n", "x".repeat(48)).len() as u64)
        .sum();
    // Each run is killed as soon as it has saved a position further into
    // the object than the last run's: watched for, not guessed with a
    // delay, which a faster pipe outran.
    let mut kills = 0;
    let mut resumed_inside = false;
    let mut last_offset = 0;
    for _ in 0..3 {
        let mut child = run();
        let started = std::time::Instant::now();
        let offset = loop {
            if child.try_wait().unwrap().is_some() {
                break None;
            }
            if let Some(o) = saved_offset().filter(|o| *o > last_offset) {
                break Some(o);
            }
            assert!(
                started.elapsed() < Duration::from_secs(60),
                "no new checkpoint in 60 s"
            );
            std::thread::sleep(Duration::from_millis(1));
        };
        let Some(offset) = offset else { break };
        child.kill().unwrap();
        child.wait().unwrap();
        kills += 1;
        // The kill came after this save; a later save could have followed it.
        last_offset = saved_offset().unwrap_or(offset);
        resumed_inside |= offset < size;
    }
    let last = run().wait_with_output().unwrap();
    assert!(
        last.status.success(),
        "{}",
        String::from_utf8_lossy(&last.stderr)
    );
    let mut counts = vec![0u32; n];
    for line in std::fs::read_to_string(&out).unwrap().lines() {
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        counts[v["id"].as_u64().unwrap() as usize] += 1;
    }
    let missing = counts.iter().filter(|c| **c == 0).count();
    let duplicates: u32 = counts.iter().map(|c| c.saturating_sub(1)).sum();
    eprintln!("{kills} kills: {missing} missing, {duplicates} duplicates");
    assert!(
        kills >= 1 && resumed_inside,
        "a kill must land inside the object ({kills} kills)"
    );
    assert_eq!(missing, 0);
    assert!(duplicates <= kills * 2000, "at most one batch per kill");
}
