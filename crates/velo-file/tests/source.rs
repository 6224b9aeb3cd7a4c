//! The file source against real files.

mod common;

use std::io::Write;
use std::time::Duration;

use common::*;
use velo_datasource_core::{DataType, Error};
use velo_file as _;

#[tokio::test]
async fn csv_typed_records_and_schema() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("trades.csv");
    std::fs::write(
        &path,
        "symbol,price,qty,at\nAAPL,189.5,10,2024-01-15T10:30:00Z\nMSFT,,5,2024-01-15T10:31:00Z\n",
    )
    .unwrap();
    let src = source(&uri(&path, "event.time.field=at")).await.unwrap();
    let schema = src.fetch_schema().await.unwrap();
    let types: Vec<_> = schema
        .fields()
        .iter()
        .map(|f| f.data_type.clone())
        .collect();
    assert_eq!(
        types,
        [
            DataType::String,
            DataType::Float,
            DataType::Integer,
            DataType::Timestamp
        ]
    );
    assert!(schema.field("price").unwrap().nullable);
    let mut reader = src.create_reader().await.unwrap();
    let records = read_all(reader.as_mut()).await.unwrap();
    assert_eq!(records.len(), 2);
    assert!(records[1].get("price").unwrap().is_null());
    assert_eq!(
        records[0].event_time.unwrap().to_rfc3339(),
        "2024-01-15T10:30:00+00:00"
    );
    assert_eq!(records[1].offset, 3, "line number of the record");
    assert!(!reader.has_more().await.unwrap());
}

/// The sample starts short and grows while inference wants rows: a row
/// past the first 64 KiB but within the sampled rows still decides a type,
/// for plain and compressed files and both CSV and JSON Lines.
#[tokio::test]
async fn inference_samples_its_rows_beyond_the_first_read() {
    let dir = tempfile::tempdir().unwrap();
    let pad = "x".repeat(200);
    // Rows of about 210 bytes: row 600 starts near byte 126,000. Integers
    // until then, a decimal there, text in a header-less column after it.
    let csv: String = std::iter::once("n,pad\n".to_string())
        .chain((0..900).map(|i| match i {
            600 => format!("1.5,{pad}\n"),
            _ => format!("{i},{pad}\n"),
        }))
        .collect();
    let jsonl: String = (0..900)
        .map(|i| match i {
            600 => format!("{{\"n\":1.5,\"pad\":\"{pad}\"}}\n"),
            _ => format!("{{\"n\":{i},\"pad\":\"{pad}\"}}\n"),
        })
        .collect();
    let plain_csv = dir.path().join("wide.csv");
    std::fs::write(&plain_csv, &csv).unwrap();
    let gz_csv = dir.path().join("wide.csv.gz");
    let mut gz = velo_datasource_core::format::compression::Compression::Gzip
        .writer(Vec::new())
        .unwrap();
    gz.write_all(csv.as_bytes()).unwrap();
    std::fs::write(&gz_csv, gz.finish().unwrap()).unwrap();
    let plain_jsonl = dir.path().join("wide.jsonl");
    std::fs::write(&plain_jsonl, &jsonl).unwrap();
    for path in [&plain_csv, &gz_csv, &plain_jsonl] {
        let src = source(&uri(path, "")).await.unwrap();
        let schema = src.fetch_schema().await.unwrap();
        assert_eq!(
            schema.field("n").unwrap().data_type,
            DataType::Float,
            "{}",
            path.display()
        );
        let mut reader = src.create_reader().await.unwrap();
        let records = read_all(reader.as_mut()).await.unwrap();
        assert_eq!(records.len(), 900, "{}", path.display());
    }
    // Rows past `sample_rows` do not count, however short the file.
    let src = source(&uri(&plain_csv, "sample_rows=500")).await.unwrap();
    let schema = src.fetch_schema().await.unwrap();
    assert_eq!(schema.field("n").unwrap().data_type, DataType::Integer);
}

#[tokio::test]
async fn jsonl_and_json_array_and_compressed() {
    let dir = tempfile::tempdir().unwrap();
    let lines = dir.path().join("a.jsonl");
    std::fs::write(&lines, "{\"id\":1,\"s\":\"x\"}\n\n{\"id\":2,\"s\":null}\n").unwrap();
    let array = dir.path().join("a.json");
    std::fs::write(
        &array,
        "[{\"id\":1,\"s\":\"x\"},\n {\"id\":2,\"s\":null}]\n",
    )
    .unwrap();
    let gz = dir.path().join("b.jsonl.gz");
    let mut enc = velo_datasource_core::format::compression::Compression::Gzip
        .writer(Vec::new())
        .unwrap();
    enc.write_all(&std::fs::read(&lines).unwrap()).unwrap();
    std::fs::write(&gz, enc.finish().unwrap()).unwrap();
    for (p, params) in [(&lines, ""), (&array, "format=json_array"), (&gz, "")] {
        let mut r = source(&uri(p, params))
            .await
            .unwrap()
            .create_reader()
            .await
            .unwrap();
        let recs = read_all(r.as_mut()).await.unwrap();
        assert_eq!(ints(&recs, "id"), [1, 2], "{}", p.display());
        assert!(recs[1].get("s").unwrap().is_null());
    }
}

#[tokio::test]
async fn restart_from_own_checkpoint_delivers_the_rest_once() {
    let dir = tempfile::tempdir().unwrap();
    let u = numbered_csv_checkpointed(dir.path(), 5000);
    let mut first = source(&u).await.unwrap().create_reader().await.unwrap();
    let mut got = first.read_batch(1200).await.unwrap();
    got.extend(first.read_batch(1300).await.unwrap());
    first.commit().await.unwrap();
    // Read more but never commit it: it must come again.
    let _lost = first.read_batch(100).await.unwrap();
    drop(first);
    let mut second = source(&u).await.unwrap().create_reader().await.unwrap();
    got.extend(read_all(second.as_mut()).await.unwrap());
    second.commit().await.unwrap();
    assert_eq!(ints(&got, "n"), (0..5000).collect::<Vec<_>>());
}

#[tokio::test]
async fn commit_up_to_acknowledges_only_the_batches_before_it() {
    let dir = tempfile::tempdir().unwrap();
    let u = numbered_csv_checkpointed(dir.path(), 1000);
    let mut first = source(&u).await.unwrap().create_reader().await.unwrap();
    assert!(first.supports_commit_up_to());
    let mut got = first.read_batch(300).await.unwrap();
    let after_first = first.position().unwrap();
    got.extend(first.read_batch(300).await.unwrap());
    let after_second = first.position().unwrap();
    // Read ahead, then acknowledge the first batch only: the second comes again.
    let _ahead = first.read_batch(300).await.unwrap();
    first.commit_up_to(&after_first).await.unwrap();
    // A position this reader did not return after a batch, or one already acknowledged.
    let err = first.commit_up_to(&after_first).await.unwrap_err();
    assert!(err.to_string().contains("not the position after"), "{err}");
    drop(first);
    let mut second = source(&u).await.unwrap().create_reader().await.unwrap();
    let rest = read_all(second.as_mut()).await.unwrap();
    assert_eq!(ints(&rest, "n"), (300..1000).collect::<Vec<_>>());
    got.truncate(300);
    assert_eq!(ints(&got, "n"), (0..300).collect::<Vec<_>>());
    // Acknowledging a later batch covers the ones before it.
    let mut third = source(&u).await.unwrap().create_reader().await.unwrap();
    third.restore(after_first.clone()).await.unwrap();
    third.read_batch(300).await.unwrap();
    assert_eq!(third.position().unwrap(), after_second);
    third.read_batch(100).await.unwrap();
    let after_fourth = third.position().unwrap();
    third.read_batch(100).await.unwrap();
    third.commit_up_to(&after_fourth).await.unwrap();
    drop(third);
    let mut fourth = source(&u).await.unwrap().create_reader().await.unwrap();
    let rest = read_all(fourth.as_mut()).await.unwrap();
    assert_eq!(ints(&rest, "n"), (700..1000).collect::<Vec<_>>());
}

/// The line number of a file position (one file).
fn line_of(position: &velo_datasource_core::SourcePosition) -> u64 {
    match &position.offsets[0] {
        velo_datasource_core::SourceOffset::File { line_number, .. } => *line_number,
        other => panic!("not a file offset: {other:?}"),
    }
}

/// After each batch, the position, and what `commit` and `close` save,
/// cover exactly the records handed out: none read past them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn position_commit_and_close_cover_the_batches_handed_out() {
    let dir = tempfile::tempdir().unwrap();
    let u = numbered_csv_checkpointed(dir.path(), 10_000);
    let mut r = source(&u).await.unwrap().create_reader().await.unwrap();
    for k in 1..=3u64 {
        let batch = r.read_batch(1000).await.unwrap();
        assert_eq!(batch.len(), 1000);
        // The header is line 0; the position is after `k` batches, not `k + 1`.
        assert_eq!(line_of(&r.position().unwrap()), 1 + 1000 * k);
        assert!(r.has_more().await.unwrap());
    }
    // `commit` saves the caller's position.
    r.commit().await.unwrap();
    r.read_batch(1000).await.unwrap();
    drop(r);
    let mut again = source(&u).await.unwrap().create_reader().await.unwrap();
    let first = again.read_batch(1000).await.unwrap();
    assert_eq!(ints(&first, "n"), (3000..4000).collect::<Vec<_>>());
    // So does `close`.
    again.close().await.unwrap();
    drop(again);
    let mut last = source(&u).await.unwrap().create_reader().await.unwrap();
    let rest = read_all(last.as_mut()).await.unwrap();
    assert_eq!(ints(&rest, "n"), (4000..10_000).collect::<Vec<_>>());
}

/// A caller that changes its batch size gets no more than it asks for,
/// and every record once, in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn changing_batch_sizes_lose_and_repeat_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let u = numbered_csv_checkpointed(dir.path(), 20_000);
    let mut r = source(&u).await.unwrap().create_reader().await.unwrap();
    let mut got = Vec::new();
    for size in [1000, 10, 1000, 1000, 1, 500, 3000, 3000, 7] {
        let batch = r.read_batch(size).await.unwrap();
        assert!(
            batch.len() <= size,
            "{} records for a batch of {size}",
            batch.len()
        );
        got.extend(batch);
        assert_eq!(line_of(&r.position().unwrap()), 1 + got.len() as u64);
    }
    got.extend(read_all(r.as_mut()).await.unwrap());
    assert_eq!(ints(&got, "n"), (0..20_000).collect::<Vec<_>>());
}

/// One read of `max` records as `read_batch`, or (`columns`) through
/// `read_columns`, polled once and dropped at its first wait (a timeout
/// that has passed): for a read that needs the disk, the middle of its
/// blocking pass. `None` when it was dropped.
async fn read_or_drop(
    r: &mut dyn velo_datasource_core::DataReader,
    max: usize,
    columns: bool,
) -> Option<Vec<velo_datasource_core::StreamRecord>> {
    let read = async {
        if columns {
            let batches = r.read_columns(max).await?;
            Ok(batches
                .into_iter()
                .flat_map(velo_datasource_core::columns::ColumnBatch::into_records)
                .collect())
        } else {
            r.read_batch(max).await
        }
    };
    tokio::select! {
        biased;
        batch = read => Some(batch.unwrap()),
        () = std::future::ready(()) => {
            tokio::task::yield_now().await;
            None
        }
    }
}

/// Keeps the runtime's only blocking thread busy until the returned sender
/// sends: a pass spawned meanwhile waits in the pool's queue, so a read
/// polled once is sure to be dropped before its pass ends, however the
/// machine schedules threads.
fn hold_blocking_pool() -> std::sync::mpsc::Sender<()> {
    let (release, held) = std::sync::mpsc::channel::<()>();
    drop(tokio::task::spawn_blocking(move || held.recv()));
    release
}

/// [`read_or_drop`], with the pool held while it is polled when `hold`:
/// then the read must start a pass, and is checked to be dropped mid-pass.
async fn read_or_drop_held(
    r: &mut dyn velo_datasource_core::DataReader,
    max: usize,
    columns: bool,
    hold: bool,
) -> Option<Vec<velo_datasource_core::StreamRecord>> {
    let held = hold.then(hold_blocking_pool);
    let read = read_or_drop(r, max, columns).await;
    if let Some(release) = held {
        assert!(read.is_none(), "a read whose pass waits was not dropped");
        release.send(()).unwrap();
    }
    read
}

/// Reads dropped in the middle of their blocking pass (a timeout, a
/// `select!`) lose and repeat nothing: the next call, of either kind,
/// hands out what the pass read, and a commit or close in between saves
/// only what was handed out.
#[test]
fn reads_dropped_mid_pass_lose_and_repeat_nothing() {
    on_one_blocking_thread(dropped_reads_lose_and_repeat_nothing());
}

/// Runs `test` where [`hold_blocking_pool`] can hold every blocking thread.
fn on_one_blocking_thread(test: impl std::future::Future<Output = ()>) {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .max_blocking_threads(1)
        .enable_all()
        .build()
        .unwrap()
        .block_on(test);
}

async fn dropped_reads_lose_and_repeat_nothing() {
    for every_read_blocks in [false, true] {
        let dir = tempfile::tempdir().unwrap();
        let mut u = numbered_csv_checkpointed(dir.path(), 20_000);
        if every_read_blocks {
            // A dead-letter file is written on the blocking pool: every read is a pass.
            let dead = dir.path().join("dead.jsonl");
            u = format!(
                "{u}&errors=dead_letter&errors.dead_letter={}",
                dead.display()
            );
        }
        let mut r = source(&u).await.unwrap().create_reader().await.unwrap();
        let (mut got, mut dropped, mut calls) = (Vec::new(), 0, 0);
        let (mut committed, mut dropped_last) = (None, false);
        while got.len() < 10_000 {
            calls += 1;
            // A read that starts a pass (none is waiting to be handed out)
            // finds the pool held: it is dropped mid-pass.
            let hold = every_read_blocks && !dropped_last;
            let read = read_or_drop_held(r.as_mut(), 700, calls % 3 == 0, hold).await;
            if !got.is_empty() || read.is_some() {
                // The position is after the records handed out, none more.
                let handed_out = got.len() + read.as_ref().map_or(0, Vec::len);
                assert_eq!(line_of(&r.position().unwrap()), 1 + handed_out as u64);
            }
            dropped_last = read.is_none();
            if let Some(batch) = read {
                got.extend(batch);
                continue;
            }
            dropped += 1;
            // Commit while the pass holds records the caller has not got:
            // they must come again after a restart.
            if committed.is_none() && !got.is_empty() {
                r.commit().await.unwrap();
                assert_eq!(line_of(&r.position().unwrap()), 1 + got.len() as u64);
                committed = Some(got.len());
            }
        }
        // With every read a pass, every other call was dropped in the middle
        // of one, some after records were handed out. Reading ahead, whether
        // a read waits at all (for its first pass, for a read ahead) depends
        // on how soon the background read ends: what was dropped, if
        // anything, is covered by the checks above.
        if every_read_blocks {
            assert!(dropped > 1, "{dropped} of {calls} reads were dropped");
            assert!(committed.is_some(), "no read was dropped mid-pass");
        }
        if committed.is_none() {
            r.commit().await.unwrap();
            committed = Some(got.len());
        }
        drop(r);
        got.truncate(committed.unwrap());
        let mut again = source(&u).await.unwrap().create_reader().await.unwrap();
        while again.has_more().await.unwrap() {
            calls += 1;
            if let Some(batch) = read_or_drop(again.as_mut(), 1000, calls % 2 == 0).await {
                got.extend(batch);
            }
            assert_eq!(line_of(&again.position().unwrap()), 1 + got.len() as u64);
        }
        let got = ints(&got, "n");
        let first_wrong = got.iter().zip(0..).position(|(n, i)| *n != i);
        assert!(
            got.len() == 20_000 && first_wrong.is_none(),
            "{} records, first out of place at {first_wrong:?}; every read blocks: {every_read_blocks}",
            got.len()
        );
    }
}

/// A bad record in a later batch is reported when the caller gets there:
/// the good records before it first, then the error, with the position
/// left on the bad record.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_record_in_a_later_batch_is_reported_in_its_place() {
    let dir = tempfile::tempdir().unwrap();
    let u = csv_with_a_bad_row(dir.path());
    let mut r = source(&u).await.unwrap().create_reader().await.unwrap();
    assert_eq!(r.read_batch(1000).await.unwrap().len(), 1000);
    assert_eq!(
        ints(&r.read_batch(1000).await.unwrap(), "n"),
        (1000..1500).collect::<Vec<_>>()
    );
    let e = r.read_batch(1000).await.unwrap_err().to_string();
    assert!(e.contains("b.csv") && e.contains("(line 1502)"), "{e}");
    assert_eq!(line_of(&r.position().unwrap()), 1501);
}

/// A file of many read-ahead chunks (256 KB each), read in batches of
/// changing sizes, as records and as columns, with bad rows here and there
/// past chunk boundaries: every good row arrives once, in order, at its own
/// line, and each bad row is a dead letter with its own raw line and line.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_long_file_read_ahead_loses_and_repeats_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("long.csv");
    let dead = dir.path().join("dead.jsonl");
    let rows = 60_000;
    let is_bad = |i: usize| i % 7919 == 7918;
    let mut body = String::from("n,s\n");
    for i in 0..rows {
        if is_bad(i) {
            body.push_str(&format!("x{i},bad\n"));
        } else {
            body.push_str(&format!("{i},{}\n", "p".repeat(1 + i % 97)));
        }
    }
    assert!(body.len() > 10 * 256 * 1024, "{} bytes", body.len());
    std::fs::write(&path, body).unwrap();
    let u = dead_letter_uri(&path, "n:integer,s:string", &dead);
    let mut r = source(&u).await.unwrap().create_reader().await.unwrap();
    let mut got = Vec::new();
    let sizes = [1000, 1, 4000, 333, 10_000];
    for call in 0.. {
        let size = sizes[call % sizes.len()];
        let records = if call % 2 == 0 {
            r.read_batch(size).await.unwrap()
        } else {
            let batches = r.read_columns(size).await.unwrap();
            batches.into_iter().flat_map(|b| b.into_records()).collect()
        };
        assert!(records.len() <= size);
        got.extend(records);
        if !r.has_more().await.unwrap() {
            break;
        }
    }
    r.commit().await.unwrap();
    let want = (0..rows).filter(|&i| !is_bad(i));
    assert_eq!(got.len(), want.clone().count());
    for (record, n) in got.iter().zip(want) {
        assert_eq!(record.get("n").and_then(|v| v.as_i64()), Some(n as i64));
        assert_eq!(record.offset, n as i64 + 2, "row {n}");
        let s = record.get("s").and_then(|v| v.as_str().map(str::len));
        assert_eq!(s, Some(1 + n % 97), "row {n}");
    }
    let letters = dead_letters(&dead);
    let bad: Vec<usize> = (0..rows).filter(|&i| is_bad(i)).collect();
    assert_eq!(letters.len(), bad.len());
    for (letter, i) in letters.iter().zip(bad) {
        assert_eq!(letter["raw"], format!("x{i},bad"));
        assert_eq!(letter["line"], i + 2);
    }
}

#[tokio::test]
async fn position_restore_and_seek() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("n.jsonl");
    let body: String = (0..100).map(|i| format!("{{\"n\":{i}}}\n")).collect();
    std::fs::write(&path, body).unwrap();
    let src = source(&uri(&path, "")).await.unwrap();
    let mut r = src.create_reader().await.unwrap();
    let first = r.read_batch(30).await.unwrap();
    let pos = r.position().unwrap();
    let mut r2 = src.create_reader().await.unwrap();
    r2.restore(pos.clone()).await.unwrap();
    let rest = read_all(r2.as_mut()).await.unwrap();
    assert_eq!(ints(&first, "n"), (0..30).collect::<Vec<_>>());
    assert_eq!(ints(&rest, "n"), (30..100).collect::<Vec<_>>());
    // Seek back to the saved offset on the same reader.
    r2.seek(pos.offsets[0].clone()).await.unwrap();
    assert_eq!(
        ints(&r2.read_batch(5).await.unwrap(), "n"),
        [30, 31, 32, 33, 34]
    );
    let bad = r2
        .seek(velo_datasource_core::SourceOffset::Kafka {
            topic: "t".into(),
            partition: 0,
            offset: 1,
        })
        .await;
    assert!(matches!(bad, Err(Error::Offset(_))));
}

#[tokio::test]
async fn clear_errors_for_bad_input() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("nope.csv");
    let e = source(&uri(&missing, "")).await.err().unwrap().to_string();
    assert!(e.contains("nope.csv") && e.contains("No such file"), "{e}");
    // A directory where one file is needed.
    std::fs::create_dir(dir.path().join("d.csv")).unwrap();
    let e = source(&uri(&dir.path().join("d.csv"), "mode=tail"))
        .await
        .err()
        .unwrap()
        .to_string();
    assert!(
        e.contains("is a directory") && e.contains("directory_watch"),
        "{e}"
    );
    // A directory is a bounded source of its files, so an empty one has nothing to read.
    let mut r = source(&uri(&dir.path().join("d.csv"), ""))
        .await
        .unwrap()
        .create_reader()
        .await
        .unwrap();
    let e = r.read_batch(10).await.unwrap_err().to_string();
    assert!(e.contains("d.csv") && e.contains("no file matches"), "{e}");
    let ok = dir.path().join("ok.csv");
    std::fs::write(&ok, "a\n1\n").unwrap();
    let e = source(&uri(&ok, "delimiter=ab"))
        .await
        .err()
        .unwrap()
        .to_string();
    assert!(
        e.contains("`delimiter`") && e.contains("one ASCII character"),
        "{e}"
    );
    // Unreadable file: root reads anything, so this only means something for other
    // users; velo-cli's `an_unreadable_file_is_a_clear_error` runs it as `nobody` under root.
    let locked = dir.path().join("locked.csv");
    std::fs::write(&locked, "a\n1\n").unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&locked, std::fs::Permissions::from_mode(0o000)).unwrap();
    if std::fs::File::open(&locked).is_err() {
        let e = source(&uri(&locked, "")).await.err().unwrap().to_string();
        assert!(e.contains("locked.csv") && e.contains("ermission"), "{e}");
    }
}

#[tokio::test]
async fn corrupt_checkpoint_names_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("a.csv");
    std::fs::write(&path, "a\n1\n").unwrap();
    let cp = dir.path().join("cp");
    let u = uri(&path, &format!("checkpoint_dir={}", cp.display()));
    let mut r = source(&u).await.unwrap().create_reader().await.unwrap();
    read_all(r.as_mut()).await.unwrap();
    r.commit().await.unwrap();
    let file = std::fs::read_dir(&cp)
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    std::fs::write(&file, b"{\"version\":\"1\",\"posi").unwrap();
    let e = source(&u)
        .await
        .unwrap()
        .create_reader()
        .await
        .err()
        .unwrap()
        .to_string();
    assert!(
        e.contains(&file.display().to_string()) && e.contains("corrupt"),
        "{e}"
    );
}

/// Blank lines before a record, and a JSON array's separators, belong to
/// its frame but not to it: the record's offset, a bad record's error and
/// its dead letter name the record's own line and byte, in records and in
/// columns.
#[tokio::test]
async fn records_after_blank_lines_and_separators_name_their_own_line() {
    let dir = tempfile::tempdir().unwrap();
    let csv = dir.path().join("gaps.csv");
    // Lines: 1 header, 2 `1,a`, 3-4 blank, 5 `2,b`, 6 blank (with spaces), 7 `x,c`.
    std::fs::write(&csv, "n,s\n1,a\n\n\n2,b\n  \nx,c\n").unwrap();
    let bad_at = "n,s\n1,a\n\n\n2,b\n  \n".len();
    for columns in [false, true] {
        let u = uri(&csv, "schema=n:integer,s:string");
        let mut r = source(&u).await.unwrap().create_reader().await.unwrap();
        let good = if columns {
            let batches = r.read_columns(10).await.unwrap();
            batches
                .into_iter()
                .flat_map(velo_datasource_core::columns::ColumnBatch::into_records)
                .collect()
        } else {
            r.read_batch(10).await.unwrap()
        };
        let offsets: Vec<i64> = good.iter().map(|r| r.offset).collect();
        assert_eq!(offsets, [2, 5], "columns: {columns}");
        let e = r.read_batch(10).await.unwrap_err().to_string();
        assert!(
            e.contains(&format!("gaps.csv, byte {bad_at} (line 7)")),
            "columns: {columns}: {e}"
        );
    }
    let dlq = dir.path().join("dlq.jsonl");
    let u = dead_letter_uri(&csv, "n:integer,s:string", &dlq);
    let mut r = source(&u).await.unwrap().create_reader().await.unwrap();
    read_all(r.as_mut()).await.unwrap();
    r.commit().await.unwrap();
    let letter: serde_json::Value =
        serde_json::from_str(std::fs::read_to_string(&dlq).unwrap().trim()).unwrap();
    assert_eq!(letter["line"], 7, "{letter}");
    assert_eq!(letter["byte_offset"], bad_at, "{letter}");
    assert_eq!(letter["raw"], "x,c", "{letter}");

    // A pretty-printed JSON array: each object on the line it starts on.
    let json = dir.path().join("pretty.json");
    std::fs::write(
        &json,
        "[\n  {\"n\": 1},\n\n  {\"n\": 2},\n  {\"n\": 3,}\n]\n",
    )
    .unwrap();
    let mut r = source(&uri(&json, "format=json_array"))
        .await
        .unwrap()
        .create_reader()
        .await
        .unwrap();
    let good = r.read_batch(10).await.unwrap();
    let offsets: Vec<i64> = good.iter().map(|r| r.offset).collect();
    assert_eq!(offsets, [2, 4]);
    let e = r.read_batch(10).await.unwrap_err().to_string();
    let bad_at = "[\n  {\"n\": 1},\n\n  {\"n\": 2},\n  ".len();
    assert!(
        e.contains(&format!("pretty.json, byte {bad_at} (line 5)")),
        "{e}"
    );
}

const MALFORMED: &str = "id,v\n1,a\nx,b\n3,c\n4,d,extra\n5,e\n";

#[tokio::test]
async fn bad_records_fail_skip_dead_letter() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("m.csv");
    std::fs::write(&path, MALFORMED).unwrap();
    // The schema comes from a clean sample, so the bad rows are bad.
    let schema = "schema=id:integer,v:string";

    // fail: the good record before the bad one is delivered, then the error names the place.
    let mut r = source(&uri(&path, schema))
        .await
        .unwrap()
        .create_reader()
        .await
        .unwrap();
    let first = r.read_batch(10).await.unwrap();
    assert_eq!(ints(&first, "id"), [1]);
    let e = r.read_batch(10).await.unwrap_err();
    let msg = e.to_string();
    assert!(
        msg.contains("m.csv, byte 9 (line 3)") && msg.contains("cannot read `x` as INTEGER"),
        "{msg}"
    );
    // The position still points at the bad record: nothing accepted is lost.
    assert!(matches!(
        &r.position().unwrap().offsets[0],
        velo_datasource_core::SourceOffset::File { byte_offset: 9, .. }
    ));

    // skip
    let mut r = source(&uri(&path, &format!("{schema}&errors=skip")))
        .await
        .unwrap()
        .create_reader()
        .await
        .unwrap();
    assert_eq!(ints(&read_all(r.as_mut()).await.unwrap(), "id"), [1, 3, 5]);

    // dead_letter
    let dlq = dir.path().join("dlq.jsonl");
    let mut r = source(&uri(
        &path,
        &format!(
            "{schema}&errors=dead_letter&errors.dead_letter={}",
            dlq.display()
        ),
    ))
    .await
    .unwrap()
    .create_reader()
    .await
    .unwrap();
    assert_eq!(ints(&read_all(r.as_mut()).await.unwrap(), "id"), [1, 3, 5]);
    r.commit().await.unwrap();
    let letters = dead_letters(&dlq);
    assert_eq!(letters.len(), 2);
    assert_eq!(letters[0]["raw"], "x,b");
    assert_eq!(letters[0]["line"], 3);
    assert_eq!(letters[0]["byte_offset"], 9);
    assert_eq!(letters[1]["raw"], "4,d,extra");
    assert!(
        letters[1]["error"]
            .as_str()
            .unwrap()
            .contains("expected 2 fields, found 3")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tail_sees_appends_from_another_writer() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("app.jsonl");
    std::fs::write(&path, "{\"n\":0}\n").unwrap();
    let mut r = source(&uri(&path, "mode=tail&read_timeout=200ms"))
        .await
        .unwrap()
        .create_reader()
        .await
        .unwrap();
    let writer_path = path.clone();
    let writer = std::thread::spawn(move || {
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(&writer_path)
            .unwrap();
        for n in 1..50 {
            // Half lines too: the reader must wait for the rest.
            write!(f, "{{\"n\":").unwrap();
            f.flush().unwrap();
            writeln!(f, "{n}}}").unwrap();
            std::thread::sleep(Duration::from_millis(5));
        }
    });
    let mut got = Vec::new();
    let done = read_until(r.as_mut(), &mut got, Duration::from_secs(20), |g| {
        g.len() >= 50
    })
    .await
    .unwrap();
    writer.join().unwrap();
    assert!(done, "got {} records", got.len());
    assert_eq!(ints(&got, "n"), (0..50).collect::<Vec<_>>());
    assert!(r.has_more().await.unwrap());
    // Nothing new: an empty batch within the read timeout, not a hang.
    let started = std::time::Instant::now();
    assert!(r.read_batch(10).await.unwrap().is_empty());
    assert!(started.elapsed() < Duration::from_secs(2));
}

/// Files of `dir` the process has open now (Linux: `/proc/self/fd`).
fn open_files_under(dir: &std::path::Path) -> usize {
    std::fs::read_dir("/proc/self/fd")
        .unwrap()
        .filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
        .filter(|target| target.starts_with(dir))
        .count()
}

/// A bounded read of a directory lets go of each file once it is read to
/// its end: thousands of files must not mean thousands of descriptors (the
/// usual limit is 1,024) or a read buffer each.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bounded_directory_read_closes_each_file_it_finished() {
    let dir = tempfile::tempdir().unwrap();
    for i in 0..300 {
        std::fs::write(dir.path().join(format!("{i:03}.csv")), format!("n\n{i}\n")).unwrap();
    }
    let src = source(&uri(&dir.path().join("*.csv"), "")).await.unwrap();
    let mut r = src.create_reader().await.unwrap();
    let mut got = Vec::new();
    let mut most_open = 0;
    while got.len() < 150 {
        got.extend(r.read_batch(10).await.unwrap());
        most_open = most_open.max(open_files_under(dir.path()));
    }
    // Restored halfway, a new reader goes on with the files not read yet.
    let position = r.position().unwrap();
    assert_eq!(position.offsets.len(), 300, "every file's position is kept");
    drop(r);
    let mut r = src.create_reader().await.unwrap();
    r.restore(position).await.unwrap();
    loop {
        let batch = r.read_batch(10).await.unwrap();
        most_open = most_open.max(open_files_under(dir.path()));
        if batch.is_empty() && !r.has_more().await.unwrap() {
            break;
        }
        got.extend(batch);
    }
    assert_eq!(ints(&got, "n"), (0..300).collect::<Vec<_>>());
    assert!(most_open <= 2, "{most_open} files open at once");
    assert_eq!(open_files_under(dir.path()), 0);
}

/// A glob of more files than the reader freezes in one chunk of its
/// positions (256): positions handed out while finished files are frozen
/// are the positions `commit_up_to` and the checkpoint take, a read
/// dropped mid-pass reports the position before it, and a restart goes on
/// after the last committed file.
#[test]
fn positions_of_a_glob_of_many_finished_files() {
    on_one_blocking_thread(positions_of_many_finished_files());
}

async fn positions_of_many_finished_files() {
    let dir = tempfile::tempdir().unwrap();
    let files = dir.path().join("in");
    std::fs::create_dir(&files).unwrap();
    for i in 0..700 {
        std::fs::write(files.join(format!("{i:03}.csv")), format!("n\n{i}\n")).unwrap();
    }
    let cp = dir.path().join("cp");
    let u = uri(
        &files.join("*.csv"),
        &format!("checkpoint_dir={}&checkpoint_interval=1", cp.display()),
    );
    let mut r = source(&u).await.unwrap().create_reader().await.unwrap();
    let (mut got, mut committed_at, mut dropped) = (Vec::new(), None, 0);
    let (mut calls, mut dropped_last) = (0, false);
    while got.len() < 600 {
        calls += 1;
        let before = r.position().unwrap();
        // Every third read that starts a pass (each opens files) finds the
        // pool held: it is dropped mid-pass.
        let hold = calls % 3 == 0 && !dropped_last;
        let read = read_or_drop_held(r.as_mut(), 40, false, hold).await;
        dropped_last = read.is_none();
        match read {
            Some(batch) => got.extend(batch),
            None => {
                dropped += 1;
                assert_eq!(
                    r.position().unwrap(),
                    before,
                    "a dropped read moved the position"
                );
            }
        }
        if !got.is_empty() {
            assert_eq!(r.position().unwrap().offsets.len(), 700);
        }
        if committed_at.is_none() && got.len() >= 520 {
            committed_at = Some((got.len(), r.position().unwrap()));
        }
    }
    let (committed, position) = committed_at.unwrap();
    // Read ahead past it: acknowledging it leaves the later batches out.
    r.commit_up_to(&position).await.unwrap();
    drop(r);
    let mut again = source(&u).await.unwrap().create_reader().await.unwrap();
    got.truncate(committed);
    got.extend(read_all(again.as_mut()).await.unwrap());
    assert!(dropped > 0, "no read was dropped mid-pass");
    assert_eq!(
        ints(&got, "n"),
        (0..700).collect::<Vec<_>>(),
        "{dropped} of {calls} reads dropped"
    );
}

/// A file of a bounded read that is replaced before the read reaches it
/// is read as it is then, from its start; one removed is skipped.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bounded_read_takes_a_file_replaced_before_its_turn_as_it_is_and_skips_a_removed_one() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("a.csv"), "n\n1\n2\n").unwrap();
    std::fs::write(dir.path().join("b.csv"), "n\n3\n").unwrap();
    let csvs = dir.path().join("*.csv");
    let replaced = n_read_with_a_change_after_the_first(&csvs, || {
        let new = dir.path().join("b.tmp");
        std::fs::write(&new, "n\n4\n5\n").unwrap();
        std::fs::rename(&new, dir.path().join("b.csv")).unwrap();
    });
    assert_eq!(replaced.await, [1, 2, 4, 5]);
    // One removed before its turn is skipped, with a warning.
    std::fs::write(dir.path().join("c.csv"), "n\n6\n").unwrap();
    let removed = n_read_with_a_change_after_the_first(&csvs, || {
        std::fs::remove_file(dir.path().join("b.csv")).unwrap();
    });
    assert_eq!(removed.await, [1, 2, 6]);
}

/// Column `n` of a bounded read of `glob`, with `change` made to the
/// files once the first record was read.
async fn n_read_with_a_change_after_the_first(
    glob: &std::path::Path,
    change: impl FnOnce(),
) -> Vec<i64> {
    let mut r = source(&uri(glob, ""))
        .await
        .unwrap()
        .create_reader()
        .await
        .unwrap();
    let mut got = r.read_batch(1).await.unwrap();
    change();
    got.extend(read_all(r.as_mut()).await.unwrap());
    ints(&got, "n")
}

/// A `directory_watch` reader of `dir/*.jsonl` (with `params`, if any)
/// once it has read `a.jsonl`, which holds `{"n":1}`, and that record.
async fn watching_after_a_first_file(
    dir: &std::path::Path,
    params: &str,
) -> (
    Box<dyn velo_datasource_core::DataReader>,
    Vec<velo_datasource_core::StreamRecord>,
) {
    std::fs::write(dir.join("a.jsonl"), "{\"n\":1}\n").unwrap();
    let glob = dir.join("*.jsonl");
    let extra = if params.is_empty() {
        String::new()
    } else {
        format!("&{params}")
    };
    let mut r = source(&format!(
        "file://{}?mode=directory_watch&read_timeout=200ms{extra}",
        glob.display()
    ))
    .await
    .unwrap()
    .create_reader()
    .await
    .unwrap();
    let mut got = Vec::new();
    assert!(
        read_until(r.as_mut(), &mut got, Duration::from_secs(10), |g| g.len()
            == 1)
        .await
        .unwrap()
    );
    (r, got)
}

/// A watched file renamed to another matching name keeps its position,
/// and the position names it by its new name.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_renamed_watched_file_is_saved_under_its_new_name() {
    let dir = tempfile::tempdir().unwrap();
    let (mut r, mut got) = watching_after_a_first_file(dir.path(), "poll_interval=50ms").await;
    std::fs::rename(dir.path().join("a.jsonl"), dir.path().join("b.jsonl")).unwrap();
    let renamed = |r: &dyn velo_datasource_core::DataReader| {
        r.position().unwrap().offsets.iter().any(|o| {
            matches!(o, velo_datasource_core::SourceOffset::File { path, byte_offset: 8, .. } if path.ends_with("b.jsonl"))
        })
    };
    let started = std::time::Instant::now();
    while !renamed(r.as_ref()) && started.elapsed() < Duration::from_secs(10) {
        got.extend(r.read_batch(10).await.unwrap());
    }
    assert!(renamed(r.as_ref()), "{:?}", r.position().unwrap());
    assert_eq!(got.len(), 1, "nothing read twice");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn directory_watch_picks_up_new_files() {
    let dir = tempfile::tempdir().unwrap();
    let (mut r, mut got) = watching_after_a_first_file(dir.path(), "").await;
    std::fs::write(dir.path().join("b.jsonl"), "{\"n\":2}\n{\"n\":3}\n").unwrap();
    std::fs::write(dir.path().join("ignored.txt"), "x\n").unwrap();
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .open(dir.path().join("a.jsonl"))
        .unwrap();
    writeln!(f, "{{\"n\":4}}").unwrap();
    assert!(
        read_until(r.as_mut(), &mut got, Duration::from_secs(10), |g| g.len()
            == 4)
        .await
        .unwrap()
    );
    let mut ns = ints(&got, "n");
    ns.sort();
    assert_eq!(ns, [1, 2, 3, 4]);
    // The position covers both files.
    assert_eq!(r.position().unwrap().offsets.len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replaced_file_starts_over_renamed_file_keeps_position() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("app.log");
    std::fs::write(&path, "{\"n\":1}\n{\"n\":2}\n").unwrap();
    let u = uri(
        &path,
        "format=jsonl&mode=tail&read_timeout=100ms&rotation_pattern=app.log.*",
    );
    let src = source(&u).await.unwrap();
    let mut r = src.create_reader().await.unwrap();
    let mut got = Vec::new();
    read_until(r.as_mut(), &mut got, Duration::from_secs(5), |g| {
        g.len() == 2
    })
    .await
    .unwrap();
    let pos = r.position().unwrap();
    drop(r);
    // Rotated while we were down: the checkpointed file is now app.log.1 with more lines.
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .open(&path)
        .unwrap();
    writeln!(f, "{{\"n\":3}}").unwrap();
    std::fs::rename(&path, dir.path().join("app.log.1")).unwrap();
    std::fs::write(&path, "{\"n\":4}\n").unwrap();
    let mut r = src.create_reader().await.unwrap();
    r.restore(pos).await.unwrap();
    read_until(r.as_mut(), &mut got, Duration::from_secs(5), |g| {
        g.len() == 4
    })
    .await
    .unwrap();
    assert_eq!(ints(&got, "n"), [1, 2, 3, 4]);
    // Replaced while we were down, without a rotated copy: the new file from its start.
    let pos = r.position().unwrap();
    drop(r);
    std::fs::remove_file(&path).unwrap();
    std::fs::write(&path, "{\"n\":10}\n{\"n\":11}\n").unwrap();
    let mut r = src.create_reader().await.unwrap();
    r.restore(pos).await.unwrap();
    let mut again = Vec::new();
    read_until(r.as_mut(), &mut again, Duration::from_secs(5), |g| {
        g.len() == 2
    })
    .await
    .unwrap();
    assert_eq!(ints(&again, "n"), [10, 11]);
}

#[tokio::test]
async fn lag_follows_reading_of_a_bounded_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("n.jsonl");
    let body: String = (0..1000)
        .map(|i| format!("{{\"n\":\"{i:04}\"}}\n"))
        .collect();
    std::fs::write(&path, &body).unwrap();
    let mut r = source(&uri(&path, ""))
        .await
        .unwrap()
        .create_reader()
        .await
        .unwrap();
    r.read_batch(250).await.unwrap();
    // Every line is 13 bytes: 750 lines are left.
    assert_eq!(r.lag(), Some(velo_datasource_core::Lag::Bytes(750 * 13)));
    read_all(r.as_mut()).await.unwrap();
    assert_eq!(r.lag(), Some(velo_datasource_core::Lag::Bytes(0)));
}
