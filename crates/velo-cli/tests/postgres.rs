//! `velo pipe` with PostgreSQL CDC against the server `cargo xtask itest`
//! starts (`VELO_TEST_PG_URL`): kills mid-stream, and a mirror built from a
//! snapshot while writes continue. Changes are made with psql.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use assert_cmd::cargo::CommandCargoExt;

fn pg_url() -> String {
    std::env::var("VELO_TEST_PG_URL")
        .ok()
        .filter(|v| !v.is_empty())
        .unwrap_or_else(|| {
            panic!("VELO_TEST_PG_URL is not set: run these tests through `cargo xtask itest`")
        })
}

fn psql(sql: &str) -> String {
    let out = Command::new("psql")
        .args([
            "-X",
            "-q",
            "-A",
            "-t",
            "-v",
            "ON_ERROR_STOP=1",
            "-d",
            &pg_url(),
            "-c",
            sql,
        ])
        .output()
        .expect("psql runs");
    assert!(
        out.status.success(),
        "psql: {}\n{sql}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

fn name(prefix: &str) -> String {
    use std::sync::atomic::{AtomicU32, Ordering};
    static N: AtomicU32 = AtomicU32::new(0);
    format!(
        "{prefix}_{}_{}",
        std::process::id(),
        N.fetch_add(1, Ordering::SeqCst)
    )
}

fn velo(args: &[&str]) -> Command {
    let mut cmd = Command::cargo_bin("velo").expect("the velo binary is built");
    cmd.args(args)
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    cmd
}

fn lsn(text: &str) -> u64 {
    let (hi, lo) = text
        .trim()
        .split_once('/')
        .unwrap_or_else(|| panic!("not an LSN: {text}"));
    (u64::from_str_radix(hi, 16).unwrap() << 32) | u64::from_str_radix(lo, 16).unwrap()
}

fn confirmed(slot: &str) -> u64 {
    lsn(&psql(&format!(
        "SELECT confirmed_flush_lsn FROM pg_replication_slots WHERE slot_name = '{slot}'"
    )))
}

/// The LSN in the pipeline's checkpoint, if one was saved.
fn checkpoint_lsn(dir: &Path) -> Option<u64> {
    let entry = std::fs::read_dir(dir).ok()?.flatten().find(|e| {
        e.file_name()
            .to_string_lossy()
            .ends_with(".checkpoint.json")
    })?;
    let text = std::fs::read_to_string(entry.path()).ok()?;
    let json: serde_json::Value = serde_json::from_str(&text).ok()?;
    let value = json["position"]["offsets"][0]["cursor"]["value"].as_str()?;
    Some(lsn(value.split(';').next()?))
}

fn ids_in(path: &Path) -> Vec<u32> {
    let mut counts = Vec::new();
    let Ok(text) = std::fs::read_to_string(path) else {
        return counts;
    };
    for line in text.lines() {
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        let id = v["id"].as_u64().unwrap() as usize;
        if counts.len() <= id {
            counts.resize(id + 1, 0);
        }
        counts[id] += 1;
    }
    counts
}

#[test]
fn cdc_killed_mid_stream_resumes_without_loss_and_never_acknowledges_ahead() {
    let t = name("cli_cdc_kill");
    psql(&format!("CREATE TABLE {t} (id int PRIMARY KEY, v text)"));
    let dir = tempfile::tempdir().unwrap();
    let (out, cp) = (dir.path().join("changes.jsonl"), dir.path().join("cp"));
    let source = format!(
        "{}?table={t}&until=current&heartbeat_interval=0s&batch.timeout=200ms",
        pg_url()
    );
    let sink = format!("file://{}", out.display());
    let args = |batch: &'static str| {
        vec![
            "pipe".to_owned(),
            source.clone(),
            sink.clone(),
            "--checkpoint-dir".into(),
            cp.display().to_string(),
            "--batch-size".into(),
            batch.into(),
            "--no-progress".into(),
        ]
    };
    let run = |batch: &'static str| -> Child {
        let a = args(batch);
        velo(&a.iter().map(String::as_str).collect::<Vec<_>>())
            .spawn()
            .unwrap()
    };
    // The first run creates slot and publication and finds nothing yet.
    let first = run("500").wait_with_output().unwrap();
    assert!(
        first.status.success(),
        "{}",
        String::from_utf8_lossy(&first.stderr)
    );
    let slot = format!("velo_cdc_{t}");
    let mut floor = confirmed(&slot);

    // 100,000 rows in 20 transactions.
    for k in 0..20 {
        psql(&format!(
            "INSERT INTO {t} SELECT i, md5(i::text) FROM generate_series({}, {}) i",
            k * 5000 + 1,
            (k + 1) * 5000
        ));
    }
    let mut kills = 0;
    let mut delays = [150u64, 400, 250, 600, 350, 500].into_iter().cycle();
    while kills < 6 {
        let mut child = run("500");
        std::thread::sleep(Duration::from_millis(delays.next().unwrap_or(300)));
        if child.try_wait().unwrap().is_some() {
            break;
        }
        child.kill().unwrap();
        child.wait().unwrap();
        kills += 1;
        // The slot never moves past what the checkpoint (saved after the sink committed) holds.
        let slot_at = confirmed(&slot);
        let committed = checkpoint_lsn(&cp).unwrap_or(floor).max(floor);
        assert!(
            slot_at <= committed,
            "after kill {kills}: slot confirmed {slot_at:X} > checkpoint {committed:X}: {:?}",
            std::fs::read_dir(&cp)
                .unwrap()
                .flatten()
                .map(|e| (
                    e.file_name(),
                    std::fs::read_to_string(e.path()).unwrap_or_default()
                ))
                .collect::<Vec<_>>()
        );
        floor = floor.max(slot_at);
    }
    let last = run("500").wait_with_output().unwrap();
    assert!(
        last.status.success(),
        "{}",
        String::from_utf8_lossy(&last.stderr)
    );
    let counts = ids_in(&out);
    let missing = (1..=100_000)
        .filter(|&i| counts.get(i).copied().unwrap_or(0) == 0)
        .count();
    let duplicates: u32 = counts.iter().map(|c| c.saturating_sub(1)).sum();
    eprintln!("{kills} kills: {missing} missing, {duplicates} duplicates");
    assert!(kills >= 2, "the kills must land mid-stream ({kills})");
    assert_eq!(missing, 0, "no change may be lost");
    assert!(
        duplicates <= kills * 500,
        "at most one batch repeated per kill"
    );
    psql(&format!("SELECT pg_drop_replication_slot('{slot}')"));
}

#[test]
fn snapshot_then_stream_mirrors_a_table_while_writes_continue() {
    let src = name("cli_mirror_src");
    let dst = name("cli_mirror_dst");
    let ddl = "(id int PRIMARY KEY, v text, n numeric, tags text[], at timestamptz)";
    psql(&format!(
        "CREATE TABLE {src} {ddl}; CREATE TABLE {dst} {ddl}"
    ));
    psql(&format!(
        "INSERT INTO {src} SELECT i, 'v' || i, i * 0.5, ARRAY['a', i::text], now() FROM generate_series(1, 20000) i"
    ));
    // Writes keep coming while the snapshot is taken and read.
    let writer_src = src.clone();
    let writes = std::thread::spawn(move || {
        for k in 0..40 {
            let base = 20000 + k * 100;
            psql(&format!(
                "BEGIN; INSERT INTO {writer_src} SELECT i, 'w' || i, i, ARRAY['w'], now() FROM generate_series({}, {}) i; \
                 UPDATE {writer_src} SET v = v || '+', n = n + 1 WHERE id % 97 = {}; \
                 DELETE FROM {writer_src} WHERE id % 89 = {}; COMMIT;",
                base + 1,
                base + 100,
                k % 97,
                k % 89
            ));
            std::thread::sleep(Duration::from_millis(25));
        }
    });
    std::thread::sleep(Duration::from_millis(100));
    let dir = tempfile::tempdir().unwrap();
    let slot = format!("mirror_{}", std::process::id());
    let child = velo(&[
        "pipe",
        &format!("{}?table={src}&snapshot=true&slot={slot}&publication={slot}&drop_slot=true&batch.timeout=200ms", pg_url()),
        &format!("{}?table={dst}", pg_url()),
        "--checkpoint-dir",
        dir.path().to_str().unwrap(),
        "--batch-size",
        "2000",
        "--no-progress",
    ])
    .spawn()
    .unwrap();
    writes.join().unwrap();
    let diff = format!(
        "SELECT count(*) FROM ((TABLE {src} EXCEPT TABLE {dst}) UNION ALL (TABLE {dst} EXCEPT TABLE {src})) d"
    );
    let started = Instant::now();
    while psql(&diff) != "0" {
        assert!(
            started.elapsed() < Duration::from_secs(90),
            "the mirror did not converge: {} rows differ",
            psql(&diff)
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    let result = child.wait_with_output().unwrap();
    assert!(
        result.status.success(),
        "{}",
        String::from_utf8_lossy(&result.stderr)
    );
    assert_eq!(psql(&diff), "0");
    assert_eq!(
        psql(&format!("SELECT count(*) FROM {dst}")),
        psql(&format!("SELECT count(*) FROM {src}"))
    );
    // drop_slot=true: nothing left behind.
    assert_eq!(
        psql(&format!(
            "SELECT count(*) FROM pg_replication_slots WHERE slot_name = '{slot}'"
        )),
        "0"
    );
}
