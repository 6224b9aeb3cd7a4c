//! `read_columns` against real files: the same records, positions and
//! errors as `read_batch`, column by column.

mod common;

use chrono::DateTime;
use common::*;
use velo_datasource_core::columns::{ColumnBatch, ColumnData};
use velo_datasource_core::{DataReader, SourceOffset, StreamRecord};
use velo_file as _;

/// Reads a bounded source to its end, `sizes` records per call in turn.
async fn read_all_columns(reader: &mut dyn DataReader, sizes: &[usize]) -> Vec<ColumnBatch> {
    let mut out = Vec::new();
    for k in 0.. {
        let size = sizes[k % sizes.len()];
        let batches = reader.read_columns(size).await.unwrap();
        let n: usize = batches.iter().map(ColumnBatch::len).sum();
        assert!(n <= size, "{n} records for a batch of {size}");
        out.extend(batches);
        if !reader.has_more().await.unwrap() {
            return out;
        }
    }
    unreachable!()
}

/// Records with their processing time cleared: it is when they were read.
fn comparable(records: impl IntoIterator<Item = StreamRecord>) -> Vec<StreamRecord> {
    records
        .into_iter()
        .map(|mut r| {
            r.timestamp = DateTime::UNIX_EPOCH;
            r
        })
        .collect()
}

async fn both_ways(u: &str, sizes: &[usize]) -> (Vec<StreamRecord>, Vec<ColumnBatch>) {
    let mut rows = source(u).await.unwrap().create_reader().await.unwrap();
    let records = comparable(read_all(rows.as_mut()).await.unwrap());
    let mut cols = source(u).await.unwrap().create_reader().await.unwrap();
    let batches = read_all_columns(cols.as_mut(), sizes).await;
    (records, batches)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn csv_columns_equal_records_across_files_schemas_event_times_and_skipped_rows() {
    let dir = tempfile::tempdir().unwrap();
    let mut a = String::from("id,symbol,price,at\n");
    for i in 0..2500 {
        if i % 700 == 13 {
            a.push_str("oops,X,1,2024-01-15T10:30:00Z\n");
        } else {
            let price = if i % 10 == 0 {
                "NA".into()
            } else {
                format!("{}.25", i)
            };
            a.push_str(&format!(
                "{i},\"S,{i}\",{price},2024-01-15T10:{:02}:{:02}Z\n",
                i / 60 % 60,
                i % 60
            ));
        }
    }
    std::fs::write(dir.path().join("a.csv"), &a).unwrap();
    // Same columns: may share batches with a.csv.
    std::fs::write(
        dir.path().join("b.csv"),
        "id,symbol,price,at\n9001,B,1.5,2024-02-01T00:00:00Z\n",
    )
    .unwrap();
    // Other columns: a batch of its own.
    std::fs::write(
        dir.path().join("c.csv"),
        "id,name,at\n1,é,2024-03-01T00:00:00Z\n2,,2024-03-01T00:00:01Z\n",
    )
    .unwrap();
    let u = uri(
        &dir.path().join("*.csv"),
        "sample_rows=5&errors=skip&event.time.field=at",
    );
    let (records, batches) = both_ways(&u, &[1000, 7, 333]).await;
    assert_eq!(records.len(), 2500 - 4 + 1 + 2);
    // Typed columns, not values, for the common types.
    let first = &batches[0];
    assert!(matches!(first.column(0).data(), ColumnData::Integer(_)));
    assert!(matches!(first.column(1).data(), ColumnData::Text(_)));
    assert!(matches!(first.column(2).data(), ColumnData::Float(_)));
    assert!(matches!(first.column(3).data(), ColumnData::Timestamp(_)));
    assert!(first.column(2).is_null(0));
    let schemas: Vec<usize> = batches.iter().map(|b| b.schema().len()).collect();
    assert!(schemas.contains(&3) && schemas.contains(&4), "{schemas:?}");
    let from_columns = comparable(batches.into_iter().flat_map(ColumnBatch::into_records));
    assert_eq!(from_columns, records);
    assert!(records.iter().all(|r| r.event_time.is_some()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jsonl_and_compressed_csv_come_as_columns_too() {
    let dir = tempfile::tempdir().unwrap();
    let jsonl = dir.path().join("e.jsonl");
    std::fs::write(
        &jsonl,
        "{\"a\":1,\"b\":\"x\"}\n{\"a\":2,\"b\":null}\n{\"a\":3,\"c\":true}\n",
    )
    .unwrap();
    let (records, batches) = both_ways(&uri(&jsonl, ""), &[2]).await;
    assert_eq!(records.len(), 3);
    let from_columns = comparable(batches.into_iter().flat_map(ColumnBatch::into_records));
    assert_eq!(from_columns, records);

    let gz = dir.path().join("n.csv.gz");
    let mut enc = velo_datasource_core::format::compression::Compression::Gzip
        .writer(Vec::new())
        .unwrap();
    std::io::Write::write_all(&mut enc, b"n,s\n1,a\n2,b\n3,c\n").unwrap();
    std::fs::write(&gz, enc.finish().unwrap()).unwrap();
    let (records, batches) = both_ways(&uri(&gz, ""), &[2]).await;
    assert_eq!(records.len(), 3);
    let from_columns = comparable(batches.into_iter().flat_map(ColumnBatch::into_records));
    assert_eq!(from_columns, records);
}

/// Under `errors=fail`, the rows decoded after a bad record are not handed
/// out: the batch ends at it, the error names it, and the position stays on it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_record_ends_the_column_batch_in_its_place() {
    let dir = tempfile::tempdir().unwrap();
    let u = csv_with_a_bad_row(dir.path());
    let mut r = source(&u).await.unwrap().create_reader().await.unwrap();
    let ns = |batches: &[ColumnBatch]| -> Vec<i64> {
        batches
            .iter()
            .flat_map(|b| match b.column(0).data() {
                ColumnData::Integer(v) => v.clone(),
                other => panic!("{other:?}"),
            })
            .collect()
    };
    assert_eq!(
        ns(&r.read_columns(1000).await.unwrap()),
        (0..1000).collect::<Vec<_>>()
    );
    let second = r.read_columns(1000).await.unwrap();
    assert_eq!(ns(&second), (1000..1500).collect::<Vec<_>>());
    assert_eq!(second[0].column(1).get(499), "s1499".into());
    let e = r.read_columns(1000).await.unwrap_err().to_string();
    assert!(e.contains("b.csv") && e.contains("(line 1502)"), "{e}");
    match &r.position().unwrap().offsets[0] {
        SourceOffset::File { line_number, .. } => assert_eq!(*line_number, 1501),
        other => panic!("{other:?}"),
    }
}

/// Columns read and committed count in the source's own checkpoint like
/// records: a restart delivers the rest once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_after_column_batches_delivers_the_rest_once() {
    let dir = tempfile::tempdir().unwrap();
    let u = numbered_csv_checkpointed(dir.path(), 5000);
    let mut first = source(&u).await.unwrap().create_reader().await.unwrap();
    let mut got: Vec<StreamRecord> = Vec::new();
    for size in [1200, 1300] {
        for b in first.read_columns(size).await.unwrap() {
            got.extend(b.into_records());
        }
    }
    first.commit().await.unwrap();
    let _lost = first.read_columns(100).await.unwrap();
    drop(first);
    let mut second = source(&u).await.unwrap().create_reader().await.unwrap();
    got.extend(read_all(second.as_mut()).await.unwrap());
    assert_eq!(ints(&got, "n"), (0..5000).collect::<Vec<_>>());
}

/// A file many read chunks long (the reader decodes on the caller's task
/// and reads the next chunk ahead): every record once, in order, by
/// records and by columns, across batch sizes and a restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_long_file_is_read_whole_across_read_ahead_chunks() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("long.csv");
    let rows = 150_000;
    let body: String = std::iter::once("n,s\n".to_owned())
        .chain((0..rows).map(|i| format!("{i},some text {i}\n")))
        .collect();
    assert!(body.len() > 8 * 256 * 1024, "{} bytes", body.len());
    std::fs::write(&path, body).unwrap();

    let (records, batches) = both_ways(&uri(&path, ""), &[1000, 4096, 77]).await;
    assert_eq!(ints(&records, "n"), (0..rows as i64).collect::<Vec<_>>());
    let from_columns = comparable(batches.into_iter().flat_map(ColumnBatch::into_records));
    assert_eq!(from_columns, records);

    let cp = dir.path().join("cp");
    let u = uri(
        &path,
        &format!("checkpoint_dir={}&checkpoint_interval=1", cp.display()),
    );
    let mut first = source(&u).await.unwrap().create_reader().await.unwrap();
    let mut got: Vec<StreamRecord> = Vec::new();
    while got.len() < 70_000 {
        got.extend(first.read_batch(3000).await.unwrap());
    }
    first.commit().await.unwrap();
    drop(first);
    let mut second = source(&u).await.unwrap().create_reader().await.unwrap();
    got.extend(read_all(second.as_mut()).await.unwrap());
    assert_eq!(ints(&got, "n"), (0..rows as i64).collect::<Vec<_>>());
}

/// Dead letters under `read_columns`: the bad rows go to the letter file
/// with their place, the good ones to the columns.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dead_letters_with_columns() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("m.csv");
    std::fs::write(&path, "id,v\n1,a\nx,b\n3,c\n4,d,extra\n5,e\n").unwrap();
    let dlq = dir.path().join("dlq.jsonl");
    let u = dead_letter_uri(&path, "id:integer,v:string", &dlq);
    let mut r = source(&u).await.unwrap().create_reader().await.unwrap();
    let batches = read_all_columns(r.as_mut(), &[2]).await;
    r.commit().await.unwrap();
    let records: Vec<StreamRecord> = batches
        .into_iter()
        .flat_map(ColumnBatch::into_records)
        .collect();
    assert_eq!(ints(&records, "id"), [1, 3, 5]);
    assert_eq!(records[1].offset, 4, "line number of the record");
    let letters = dead_letters(&dlq);
    assert_eq!(letters.len(), 2);
    assert_eq!(letters[0]["raw"], "x,b");
    assert_eq!(letters[0]["line"], 3);
    assert_eq!(letters[0]["byte_offset"], 9);
    assert_eq!(letters[1]["raw"], "4,d,extra");
}
