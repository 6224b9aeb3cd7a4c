//! Parquet objects, written by the parquet crate, read through the source and
//! resumed by record count (whole row groups are skipped).
#![cfg(feature = "parquet")]

use std::sync::Arc;

use object_store::memory::InMemory;
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload};
use parquet::data_type::Int64Type;
use parquet::file::properties::WriterProperties;
use parquet::file::writer::SerializedFileWriter;
use parquet::schema::parser::parse_message_type;
use velo_datasource_core::{DataSource, DataSourceUri, FieldValue, FileFormat};
use velo_s3::{S3Options, S3Source};

fn parquet_bytes(rows: i64) -> Vec<u8> {
    let schema = Arc::new(parse_message_type("message t { required int64 id; }").unwrap());
    let props = Arc::new(
        WriterProperties::builder()
            .set_max_row_group_row_count(Some(100))
            .build(),
    );
    let mut out = Vec::new();
    let mut w = SerializedFileWriter::new(&mut out, schema, props).unwrap();
    for start in (0..rows).step_by(100) {
        let ids: Vec<i64> = (start..(start + 100).min(rows)).collect();
        let mut rg = w.next_row_group().unwrap();
        let mut col = rg.next_column().unwrap().unwrap();
        col.typed::<Int64Type>()
            .write_batch(&ids, None, None)
            .unwrap();
        col.close().unwrap();
        rg.close().unwrap();
    }
    w.close().unwrap();
    out
}

#[tokio::test]
async fn parquet_objects_resume_by_record() {
    let store = Arc::new(InMemory::new());
    store
        .put(
            &Path::from("pq/a.parquet"),
            PutPayload::from(parquet_bytes(450)),
        )
        .await
        .unwrap();
    store
        .put(
            &Path::from("pq/b.parquet"),
            PutPayload::from(parquet_bytes(50)),
        )
        .await
        .unwrap();
    let config = DataSourceUri::parse("s3://mem/pq?format=parquet&until=end")
        .unwrap()
        .to_source_config()
        .unwrap();
    let opts = S3Options::with_store(
        store as Arc<dyn ObjectStore>,
        "mem://mem",
        "pq",
        FileFormat::Parquet,
        &config,
    )
    .unwrap();
    let source = S3Source::with_options(opts);
    let mut reader = source.create_reader().await.unwrap();
    let first = reader.read_batch(250).await.unwrap();
    assert_eq!(first.len(), 250);
    let position = reader.position().unwrap();
    let mut again = source.create_reader().await.unwrap();
    again.restore(position).await.unwrap();
    let mut ids: Vec<i64> = first
        .iter()
        .map(|r| r.get("id").and_then(FieldValue::as_i64).unwrap())
        .collect();
    while again.has_more().await.unwrap() {
        ids.extend(
            again
                .read_batch(1000)
                .await
                .unwrap()
                .iter()
                .map(|r| r.get("id").and_then(FieldValue::as_i64).unwrap()),
        );
    }
    let expected: Vec<i64> = (0..450).chain(0..50).collect();
    assert_eq!(
        ids, expected,
        "every row once, in order, across the restart"
    );
}
