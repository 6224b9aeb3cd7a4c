//! Parquet and Avro files, written by each format's own library, read back
//! through the file source, with positions counted in records.
#![cfg(all(feature = "parquet", feature = "avro"))]

mod common;

use std::path::Path;
use std::sync::Arc;

use apache_avro::types::{Record, Value};
use common::*;
use parquet::data_type::{ByteArray, ByteArrayType, DoubleType, Int64Type};
use parquet::file::properties::WriterProperties;
use parquet::file::writer::SerializedFileWriter;
use parquet::schema::parser::parse_message_type;
use velo_datasource_core::{DataType, FieldValue, SourceOffset};
use velo_file as _;

const ROWS: i64 = 250;
const BASE_MS: i64 = 1_705_318_200_000;

fn name(i: i64) -> Option<String> {
    (i % 7 != 0).then(|| format!("n{i}"))
}

fn write_parquet(path: &Path) {
    let schema = Arc::new(
        parse_message_type(
            "message trade { required int64 id; optional binary name (UTF8); required double price; required int64 at (TIMESTAMP(MILLIS,true)); }",
        )
        .unwrap(),
    );
    // Row groups of 100 rows, so that resuming skips whole groups and part of one.
    let props = Arc::new(
        WriterProperties::builder()
            .set_max_row_group_row_count(Some(100))
            .build(),
    );
    let mut w =
        SerializedFileWriter::new(std::fs::File::create(path).unwrap(), schema, props).unwrap();
    for start in (0..ROWS).step_by(100) {
        let ids: Vec<i64> = (start..(start + 100).min(ROWS)).collect();
        let mut rg = w.next_row_group().unwrap();
        let mut col = rg.next_column().unwrap().unwrap();
        col.typed::<Int64Type>()
            .write_batch(&ids, None, None)
            .unwrap();
        col.close().unwrap();
        let defs: Vec<i16> = ids.iter().map(|i| i16::from(name(*i).is_some())).collect();
        let names: Vec<ByteArray> = ids
            .iter()
            .filter_map(|i| name(*i))
            .map(|n| ByteArray::from(n.as_str()))
            .collect();
        let mut col = rg.next_column().unwrap().unwrap();
        col.typed::<ByteArrayType>()
            .write_batch(&names, Some(&defs), None)
            .unwrap();
        col.close().unwrap();
        let prices: Vec<f64> = ids.iter().map(|i| *i as f64 * 0.5).collect();
        let mut col = rg.next_column().unwrap().unwrap();
        col.typed::<DoubleType>()
            .write_batch(&prices, None, None)
            .unwrap();
        col.close().unwrap();
        let ats: Vec<i64> = ids.iter().map(|i| BASE_MS + i * 1000).collect();
        let mut col = rg.next_column().unwrap().unwrap();
        col.typed::<Int64Type>()
            .write_batch(&ats, None, None)
            .unwrap();
        col.close().unwrap();
        rg.close().unwrap();
    }
    w.close().unwrap();
}

fn write_avro(path: &Path) {
    let schema = apache_avro::Schema::parse_str(
        r#"{"type":"record","name":"trade","fields":[
            {"name":"id","type":"long"},
            {"name":"name","type":["null","string"]},
            {"name":"price","type":"double"},
            {"name":"at","type":{"type":"long","logicalType":"timestamp-millis"}}]}"#,
    )
    .unwrap();
    let mut w = apache_avro::Writer::new(&schema, Vec::new());
    for i in 0..ROWS {
        let mut r = Record::new(w.schema()).unwrap();
        r.put("id", i);
        r.put(
            "name",
            match name(i) {
                Some(n) => Value::Union(1, Box::new(Value::String(n))),
                None => Value::Union(0, Box::new(Value::Null)),
            },
        );
        r.put("price", i as f64 * 0.5);
        r.put("at", Value::TimestampMillis(BASE_MS + i * 1000));
        w.append(r).unwrap();
    }
    std::fs::write(path, w.into_inner().unwrap()).unwrap();
}

#[tokio::test]
async fn parquet_and_avro_read_typed_and_resume_by_record() {
    let dir = tempfile::tempdir().unwrap();
    let pq = dir.path().join("trades.parquet");
    let avro = dir.path().join("trades.avro");
    write_parquet(&pq);
    write_avro(&avro);
    for path in [&pq, &avro] {
        let src = source(&uri(path, "event.time.field=at")).await.unwrap();
        let schema = src.fetch_schema().await.unwrap();
        let types: Vec<_> = schema
            .fields()
            .iter()
            .map(|f| (f.name.as_str(), f.data_type.clone(), f.nullable))
            .collect();
        assert_eq!(
            types,
            [
                ("id", DataType::Integer, false),
                ("name", DataType::String, true),
                ("price", DataType::Float, false),
                ("at", DataType::Timestamp, false)
            ],
            "{}",
            path.display()
        );
        let mut r = src.create_reader().await.unwrap();
        let first = r.read_batch(150).await.unwrap();
        assert_eq!(ints(&first, "id"), (0..150).collect::<Vec<_>>());
        assert!(first[7].get("name").unwrap().is_null());
        assert_eq!(first[8].get("name"), Some(&FieldValue::from("n8")));
        assert_eq!(first[3].get("price"), Some(&FieldValue::Float(1.5)));
        assert_eq!(
            first[2].event_time.unwrap().timestamp_millis(),
            BASE_MS + 2000
        );
        let pos = r.position().unwrap();
        assert!(
            matches!(
                &pos.offsets[0],
                SourceOffset::File {
                    byte_offset: 0,
                    line_number: 150,
                    ..
                }
            ),
            "{pos:?}"
        );
        // A new reader resumes after record 150: whole row groups skipped, then rows.
        let mut resumed = src.create_reader().await.unwrap();
        resumed.restore(pos).await.unwrap();
        let rest = read_all(resumed.as_mut()).await.unwrap();
        assert_eq!(
            ints(&rest, "id"),
            (150..ROWS).collect::<Vec<_>>(),
            "{}",
            path.display()
        );
        assert!(!resumed.has_more().await.unwrap());
    }
}

#[tokio::test]
async fn a_truncated_container_file_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let pq = dir.path().join("bad.parquet");
    write_parquet(&pq);
    let bytes = std::fs::read(&pq).unwrap();
    std::fs::write(&pq, &bytes[..bytes.len() / 2]).unwrap();
    let e = source(&uri(&pq, ""))
        .await
        .unwrap()
        .create_reader()
        .await
        .unwrap()
        .read_batch(10)
        .await
        .unwrap_err()
        .to_string();
    assert!(e.contains("bad.parquet") && e.contains("Parquet"), "{e}");
}

/// A bounded read of several container files opens each at its turn and
/// resumes in the middle of one from its record count.
#[tokio::test]
async fn a_glob_of_parquet_files_reads_each_in_turn_and_resumes_mid_file() {
    let dir = tempfile::tempdir().unwrap();
    for name in ["a", "b", "c"] {
        write_parquet(&dir.path().join(format!("{name}.parquet")));
    }
    let src = source(&uri(&dir.path().join("*.parquet"), ""))
        .await
        .unwrap();
    let mut r = src.create_reader().await.unwrap();
    let mut got = Vec::new();
    while got.len() < (ROWS + ROWS / 2) as usize {
        got.extend(r.read_batch(50).await.unwrap());
    }
    let pos = r.position().unwrap();
    drop(r);
    let mut resumed = src.create_reader().await.unwrap();
    resumed.restore(pos).await.unwrap();
    got.extend(read_all(resumed.as_mut()).await.unwrap());
    let once: Vec<i64> = (0..ROWS).collect();
    assert_eq!(ints(&got, "id"), once.repeat(3));
}
