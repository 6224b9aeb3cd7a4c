//! End-to-end tests of the `velo` binary on real files and real processes.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use assert_cmd::cargo::CommandCargoExt;

mod common;

fn velo() -> Command {
    let mut cmd = Command::cargo_bin("velo").expect("the velo binary is built");
    cmd.env_remove("RUST_LOG")
        .env_remove("RUST_BACKTRACE")
        .stdin(Stdio::null());
    cmd
}

fn run_ok(cmd: &mut Command) -> (String, String) {
    let out = cmd.output().unwrap();
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    );
    assert!(out.status.success(), "failed: {stderr}\n{stdout}");
    (stdout, stderr)
}

fn repo_file(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .join(rel)
}

fn numbers_csv(dir: &Path, n: u64) -> PathBuf {
    let path = dir.join("numbers.csv");
    let mut body = String::with_capacity(n as usize * 8);
    body.push_str("n,label\n");
    for i in 0..n {
        body.push_str(&format!("{i},row-{i}\n"));
    }
    std::fs::write(&path, body).unwrap();
    path
}

/// How often each of `0..n` appears in a JSON Lines output.
fn counts(output: &Path, n: u64) -> Vec<u32> {
    let mut counts = vec![0u32; n as usize];
    for line in std::fs::read_to_string(output).unwrap().lines() {
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        counts[v["n"].as_u64().unwrap() as usize] += 1;
    }
    counts
}

#[test]
fn pipe_csv_to_jsonl_and_again_without_doubling() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("trades.jsonl");
    let src = format!(
        "file://{}?event.time.field=timestamp&event.time.format=iso8601",
        repo_file("examples/data/trades.csv").display()
    );
    for _ in 0..2 {
        let (_, stderr) = run_ok(velo().args(["pipe", &src, &format!("file://{}", out.display())]));
        assert!(stderr.contains("1000 records"), "{stderr}");
    }
    let text = std::fs::read_to_string(&out).unwrap();
    assert_eq!(text.lines().count(), 1000);
    let first: serde_json::Value = serde_json::from_str(text.lines().next().unwrap()).unwrap();
    assert_eq!(first["trade_id"], 1);
    assert!(first["price"].is_f64());
}

#[test]
fn run_yaml_pipeline_with_dead_letters() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in.csv");
    std::fs::write(&input, "id,amount\n1,10.5\n2,oops\n3,7\n").unwrap();
    let yaml = dir.path().join("pipeline.yaml");
    std::fs::write(
        &yaml,
        format!(
            "source:\n  type: file\n  path: {}\n  format: csv\n  schema: id:integer,amount:float\nsink:\n  type: file\n  path: {}\ncheckpoint:\n  dir: {}\nerrors:\n  policy: dead_letter\n  dead_letter: {}\n",
            input.display(),
            dir.path().join("out.jsonl").display(),
            dir.path().join("cp").display(),
            dir.path().join("bad.jsonl").display()
        ),
    )
    .unwrap();
    run_ok(velo().args(["run", yaml.to_str().unwrap()]));
    assert_eq!(
        std::fs::read_to_string(dir.path().join("out.jsonl"))
            .unwrap()
            .lines()
            .count(),
        2
    );
    let bad = std::fs::read_to_string(dir.path().join("bad.jsonl")).unwrap();
    assert!(bad.contains("\"raw\":\"2,oops\""), "{bad}");
    // A second run has nothing left to do.
    let (_, stderr) = run_ok(velo().args(["run", yaml.to_str().unwrap()]));
    assert!(
        stderr.contains("0 records") && stderr.contains("resumed after 2"),
        "{stderr}"
    );
    // An unknown key in the file is named.
    std::fs::write(&yaml, "source:\n  type: file\n  path: x.csv\n  delimter: ';'\nsink:\n  type: file\n  path: y.csv\n").unwrap();
    let out = velo()
        .args(["run", yaml.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("`delimter`"));
}

#[test]
fn schema_connectors_offsets() {
    let trades = format!("file://{}", repo_file("examples/data/trades.csv").display());
    let (table, _) = run_ok(velo().args(["schema", &trades]));
    assert!(
        table.contains("timestamp")
            && table.contains("TIMESTAMP")
            && table.contains("price")
            && table.contains("FLOAT"),
        "{table}"
    );
    let (json, _) = run_ok(velo().args(["schema", &trades, "--json"]));
    let v: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(v["fields"][0]["name"], "trade_id");
    assert_eq!(v["fields"][0]["data_type"], "integer");

    let (list, _) = run_ok(velo().arg("connectors"));
    assert!(
        list.contains("file://") && list.contains("source+sink"),
        "{list}"
    );
    let (json, _) = run_ok(velo().args(["connectors", "--json"]));
    assert!(
        serde_json::from_str::<serde_json::Value>(&json)
            .unwrap()
            .as_array()
            .unwrap()
            .iter()
            .any(|c| c["name"] == "file")
    );

    let dir = tempfile::tempdir().unwrap();
    let cp = dir.path().join("cp");
    run_ok(velo().args([
        "pipe",
        &trades,
        &format!("file://{}", dir.path().join("o.csv").display()),
        "--checkpoint-dir",
        cp.to_str().unwrap(),
        "--limit",
        "10",
    ]));
    let (text, _) = run_ok(velo().args(["offsets", cp.to_str().unwrap()]));
    assert!(
        text.contains("10 records") && text.contains("trades.csv@") && text.contains("(line 12)"),
        "{text}"
    );
    let (json, _) = run_ok(velo().args(["offsets", cp.to_str().unwrap(), "--json"]));
    assert!(json.contains("\"byte_offset\""), "{json}");
}

#[test]
fn help_shows_examples() {
    let (top, _) = run_ok(velo().arg("--help"));
    assert!(top.contains("Examples:"));
    for sub in ["pipe", "run", "schema", "connectors", "offsets"] {
        let (help, _) = run_ok(velo().args([sub, "--help"]));
        assert!(help.contains("Example"), "{sub}: {help}");
    }
}

#[test]
fn errors_are_one_paragraph_with_a_fix_and_no_panic() {
    let dir = tempfile::tempdir().unwrap();
    let cases: Vec<(Vec<String>, &str)> = vec![
        (
            vec![
                "pipe".into(),
                "trades.csv".into(),
                "file:///tmp/x.jsonl".into(),
            ],
            "scheme://",
        ),
        (
            vec![
                "pipe".into(),
                "nope://x".into(),
                "file:///tmp/x.jsonl".into(),
            ],
            "velo connectors",
        ),
        (
            vec![
                "pipe".into(),
                "file:///does/not/exist.csv".into(),
                "file:///tmp/x.jsonl".into(),
            ],
            "Check the path",
        ),
        (
            vec!["schema".into(), "file:///tmp/x.csv?delimter=;".into()],
            "did you mean `delimiter`",
        ),
    ];
    for (args, expect) in cases {
        let out = velo().args(&args).output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {stderr}");
        assert!(
            stderr.starts_with("error: ") && stderr.contains(expect),
            "{args:?}: {stderr}"
        );
        assert!(
            !stderr.contains("panicked") && !stderr.contains("backtrace"),
            "{stderr}"
        );
    }
    // A corrupt checkpoint names the file and what to do.
    let input = numbers_csv(dir.path(), 10);
    let cp = dir.path().join("cp");
    let args = [
        "pipe".to_owned(),
        format!("file://{}", input.display()),
        format!("file://{}", dir.path().join("o.jsonl").display()),
        "--checkpoint-dir".into(),
        cp.display().to_string(),
    ];
    run_ok(velo().args(&args));
    let file = std::fs::read_dir(&cp)
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    std::fs::write(&file, "{not json").unwrap();
    let out = velo().args(&args).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr.contains(&file.display().to_string()) && stderr.contains("move it away"),
        "{stderr}"
    );
}

#[test]
fn limit_then_resume_delivers_each_record_once() {
    let dir = tempfile::tempdir().unwrap();
    let input = numbers_csv(dir.path(), 5000);
    let out = dir.path().join("o.jsonl");
    let cp = dir.path().join("cp");
    let base = |extra: &[&str]| {
        let mut c = velo();
        c.args([
            "pipe",
            &format!("file://{}", input.display()),
            &format!("file://{}", out.display()),
            "--checkpoint-dir",
            cp.to_str().unwrap(),
            "--batch-size",
            "700",
        ]);
        c.args(extra);
        c
    };
    run_ok(&mut base(&["--limit", "1234"]));
    assert_eq!(counts(&out, 5000).iter().filter(|c| **c == 1).count(), 1234);
    run_ok(&mut base(&[]));
    assert!(counts(&out, 5000).iter().all(|c| *c == 1));
}

fn spawn_pipe(input: &Path, out: &Path, cp: &Path, batch: &str) -> Child {
    velo()
        .args([
            "pipe",
            &format!("file://{}", input.display()),
            &format!("file://{}", out.display()),
            "--checkpoint-dir",
            cp.to_str().unwrap(),
            "--batch-size",
            batch,
            "--no-progress",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

#[test]
fn sigterm_stops_cleanly_and_the_next_run_repeats_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let n = 300_000;
    let input = numbers_csv(dir.path(), n);
    let (out, cp) = (dir.path().join("o.jsonl"), dir.path().join("cp"));
    let child = spawn_pipe(&input, &out, &cp, "500");
    std::thread::sleep(Duration::from_millis(400));
    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let result = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&result.stderr);
    assert_eq!(result.status.code(), Some(0), "{stderr}");
    assert!(
        stderr.contains("stopped by signal"),
        "the run must have been interrupted, not finished: {stderr}"
    );
    let after_stop = counts(&out, n);
    assert!(after_stop.iter().all(|c| *c <= 1));
    let done = after_stop.iter().filter(|c| **c == 1).count();
    assert!(done > 0 && (done as u64) < n, "stopped part-way: {done}");
    run_ok(Command::new(velo().get_program()).args([
        "pipe",
        &format!("file://{}", input.display()),
        &format!("file://{}", out.display()),
        "--checkpoint-dir",
        cp.to_str().unwrap(),
        "--batch-size",
        "500",
    ]));
    assert!(
        counts(&out, n).iter().all(|c| *c == 1),
        "every record exactly once"
    );
}

/// A small deterministic generator for kill delays (the seed is printed).
fn next(seed: &mut u64) -> u64 {
    *seed = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    *seed >> 33
}

#[test]
fn sigkill_at_ten_random_points_loses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let n = 1_000_000;
    let batch = 1000;
    let input = numbers_csv(dir.path(), n);
    let (out, cp) = (dir.path().join("o.jsonl"), dir.path().join("cp"));
    let mut seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64;
    eprintln!("kill seed: {seed}");
    let started = Instant::now();
    let mut kills = 0;
    while kills < 10 {
        let mut child = spawn_pipe(&input, &out, &cp, &batch.to_string());
        // Short enough that ten kills land before the pipe is through
        // (80–480 ms left only 7 once the pipe got faster).
        std::thread::sleep(Duration::from_millis(40 + next(&mut seed) % 240));
        if child.try_wait().unwrap().is_some() {
            break; // It finished before this kill point: nothing left to interrupt.
        }
        child.kill().unwrap(); // SIGKILL: no clean stop of any kind.
        child.wait().unwrap();
        kills += 1;
    }
    let mut last = spawn_pipe(&input, &out, &cp, &batch.to_string());
    assert!(last.wait().unwrap().success());
    let counts = counts(&out, n);
    let missing = counts.iter().filter(|c| **c == 0).count();
    let duplicates: u64 = counts.iter().map(|c| u64::from(c.saturating_sub(1))).sum();
    eprintln!(
        "{kills} kills in {:.1}s: {missing} missing, {duplicates} duplicates (at most {} allowed)",
        started.elapsed().as_secs_f64(),
        kills * batch
    );
    assert!(kills >= 5, "the kills must land mid-run ({kills})");
    assert_eq!(missing, 0, "no record may be lost");
    assert!(
        duplicates <= (kills * batch) as u64,
        "at most one checkpoint interval repeated per kill"
    );
}

fn http_get(port: u16, path: &str) -> Option<String> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut body = String::new();
    s.read_to_string(&mut body).ok()?;
    Some(body)
}

fn metric(body: &str, name: &str) -> Option<f64> {
    body.lines()
        .filter(|l| l.starts_with(name))
        .filter_map(|l| l.rsplit(' ').next()?.parse().ok())
        .reduce(f64::max)
}

#[test]
fn metrics_endpoint_serves_prometheus_text_while_running() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in.jsonl");
    std::fs::write(
        &input,
        (0..500)
            .map(|i| format!("{{\"n\":{i}}}\n"))
            .collect::<String>(),
    )
    .unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let child = velo()
        .args([
            "pipe",
            &format!("file://{}?mode=tail&read_timeout=100ms", input.display()),
            &format!("file://{}", dir.path().join("out.jsonl").display()),
            "--metrics-addr",
            &format!("127.0.0.1:{port}"),
            "--no-progress",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut body = String::new();
    while Instant::now() < deadline {
        if let Some(b) = http_get(port, "/metrics")
            && metric(&b, "velo_pipeline_records_out_total") == Some(500.0)
        {
            body = b;
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        !body.is_empty(),
        "the endpoint never reported 500 records out"
    );
    assert_eq!(
        metric(&body, "velo_pipeline_records_in_total"),
        Some(500.0),
        "{body}"
    );
    assert!(
        metric(&body, "velo_source_bytes_total").unwrap_or(0.0) >= 500.0 * 8.0,
        "{body}"
    );
    assert!(
        body.contains("velo_pipeline_batch_seconds"),
        "a batch latency histogram: {body}"
    );
    assert!(
        body.contains("velo_source_lag{") && body.contains("partition=\"0\""),
        "lag per partition: {body}"
    );
}

/// An unreadable file is a clear error naming it. Root reads anything, so
/// under root (as in CI) `velo` runs as `nobody` through `runuser`; the
/// directory is open to everyone, so only the file's own mode stands in
/// the way.
#[test]
fn an_unreadable_file_is_a_clear_error() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
    let locked = dir.path().join("locked.csv");
    std::fs::write(&locked, "a\n1\n").unwrap();
    std::fs::set_permissions(&locked, std::fs::Permissions::from_mode(0o000)).unwrap();
    let args = [
        "pipe".to_owned(),
        format!("file://{}", locked.display()),
        format!("file://{}", dir.path().join("out.jsonl").display()),
    ];
    let out = if common::is_root() {
        let velo = velo();
        Command::new("runuser")
            .args(["-u", "nobody", "--"])
            .arg(velo.get_program())
            .args(&args)
            .env_remove("RUST_LOG")
            .stdin(Stdio::null())
            .output()
            .unwrap()
    } else {
        velo().args(&args).output().unwrap()
    };
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.starts_with("error: ")
            && stderr.contains("locked.csv")
            && stderr.contains("ermission"),
        "{stderr}"
    );
}
