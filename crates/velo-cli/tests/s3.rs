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
    let mut kills = 0;
    let mut resumed_inside = false;
    for delay in [700u64, 500, 900, 600] {
        let mut child = run();
        std::thread::sleep(Duration::from_millis(delay));
        if child.try_wait().unwrap().is_some() {
            break;
        }
        child.kill().unwrap();
        child.wait().unwrap();
        kills += 1;
        let saved = std::fs::read_dir(&cp)
            .ok()
            .and_then(|d| {
                d.flatten().find(|e| {
                    e.file_name()
                        .to_string_lossy()
                        .ends_with(".checkpoint.json")
                })
            })
            .map(|e| std::fs::read_to_string(e.path()).unwrap())
            .unwrap_or_default();
        if let Some(at) = saved.find("\"byte_offset\": ") {
            let value: u64 = saved[at + 15..]
                .chars()
                .take_while(char::is_ascii_digit)
                .collect::<String>()
                .parse()
                .unwrap();
            resumed_inside |= value > 0;
        }
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
