//! The source and sink over `object_store`'s in-memory store: listing,
//! cursors, filters, resume, rewrites, rolling and rollback. The same code
//! runs against the S3 server in `tests-integration/tests/s3_connector.rs`.

use std::sync::Arc;

use object_store::memory::InMemory;
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload};
use velo_datasource_core::{
    DataReader, DataSink, DataSource, DataSourceUri, DataType, FieldDefinition, FieldValue,
    FileFormat, Schema, StreamRecord,
};
use velo_s3::{S3Options, S3Sink, S3Source};

fn options(store: &Arc<InMemory>, prefix: &str, params: &str, format: FileFormat) -> S3Options {
    let config = DataSourceUri::parse(&format!("s3://mem/{prefix}?{params}"))
        .unwrap()
        .to_source_config()
        .unwrap();
    S3Options::with_store(
        store.clone() as Arc<dyn ObjectStore>,
        "mem://mem",
        prefix,
        format,
        &config,
    )
    .unwrap()
}

async fn put(store: &InMemory, key: &str, body: String) {
    store
        .put(&Path::from(key), PutPayload::from(body))
        .await
        .unwrap();
}

fn jsonl(object: usize, lines: usize) -> String {
    (0..lines)
        .map(|i| format!("{{\"o\":{object},\"i\":{i}}}\n"))
        .collect()
}

async fn read_all(reader: &mut Box<dyn DataReader>) -> Vec<(i64, i64)> {
    let mut out = Vec::new();
    while reader.has_more().await.unwrap() {
        for r in reader.read_batch(1000).await.unwrap() {
            out.push((
                r.get("o").and_then(FieldValue::as_i64).unwrap(),
                r.get("i").and_then(FieldValue::as_i64).unwrap(),
            ));
        }
    }
    out
}

#[tokio::test]
async fn reads_objects_in_key_order_and_resumes_inside_one() {
    let store = Arc::new(InMemory::new());
    for o in 0..5 {
        put(&store, &format!("in/obj-{o:03}.jsonl"), jsonl(o, 100)).await;
    }
    let source = S3Source::with_options(options(
        &store,
        "in",
        "until=end&format=jsonl",
        FileFormat::JsonLines,
    ));
    let mut reader = source.create_reader().await.unwrap();
    let first = reader.read_batch(250).await.unwrap();
    assert_eq!(first.len(), 250);
    let position = reader.position().unwrap();
    let text = format!("{position:?}");
    assert!(
        text.contains("obj-002") && text.contains("byte_offset"),
        "{text}"
    );
    drop(reader);

    let mut again = source.create_reader().await.unwrap();
    again.restore(position).await.unwrap();
    let rest = read_all(&mut again).await;
    let mut all: Vec<(i64, i64)> = first
        .iter()
        .map(|r| {
            (
                r.get("o").and_then(FieldValue::as_i64).unwrap(),
                r.get("i").and_then(FieldValue::as_i64).unwrap(),
            )
        })
        .collect();
    all.extend(rest);
    let expected: Vec<(i64, i64)> = (0..5).flat_map(|o| (0..100).map(move |i| (o, i))).collect();
    assert_eq!(all, expected, "every record once, in key and file order");
}

#[tokio::test]
async fn new_and_rewritten_objects_are_picked_up_by_the_next_poll() {
    let store = Arc::new(InMemory::new());
    for (params, rewrite_reads) in [("", true), ("&on_rewrite=skip", false)] {
        put(&store, "p/a.jsonl", jsonl(1, 3)).await;
        let source = S3Source::with_options(options(
            &store,
            "p",
            &format!("format=jsonl&poll_interval=50ms&batch.timeout=100ms{params}"),
            FileFormat::JsonLines,
        ));
        let mut reader = source.create_reader().await.unwrap();
        assert_eq!(reader.read_batch(100).await.unwrap().len(), 3);
        let key = format!("p/b{}.jsonl", params.len());
        put(&store, &key, jsonl(2, 4)).await;
        let mut got = 0;
        for _ in 0..20 {
            got += reader.read_batch(100).await.unwrap().len();
        }
        assert_eq!(got, 4, "the new object, once");
        // Rewriting a.jsonl changes its ETag.
        put(&store, "p/a.jsonl", jsonl(3, 2)).await;
        let mut again = 0;
        for _ in 0..20 {
            again += reader.read_batch(100).await.unwrap().len();
        }
        assert_eq!(
            again,
            if rewrite_reads { 2 } else { 0 },
            "rewrite with {params:?}"
        );
        store.delete(&Path::from(key.as_str())).await.unwrap();
    }
}

#[tokio::test]
async fn filters_and_scan_limits() {
    let store = Arc::new(InMemory::new());
    for o in 0..10 {
        put(&store, &format!("f/{o}.jsonl"), jsonl(o, 1)).await;
    }
    put(&store, "f/skip-me.tmp", "{\"o\":99,\"i\":0}\n".into()).await;
    let source = S3Source::with_options(options(
        &store,
        "f",
        "until=end&format=jsonl&exclude_pattern=%5C.tmp%24",
        FileFormat::JsonLines,
    ));
    let mut reader = source.create_reader().await.unwrap();
    assert_eq!(
        read_all(&mut reader).await.len(),
        10,
        "the .tmp object is excluded"
    );

    let future = (chrono::Utc::now() + chrono::Duration::hours(1))
        .to_rfc3339()
        .replace('+', "%2B");
    let source = S3Source::with_options(options(
        &store,
        "f",
        &format!("until=end&format=jsonl&modified_since={future}"),
        FileFormat::JsonLines,
    ));
    let mut reader = source.create_reader().await.unwrap();
    assert!(
        read_all(&mut reader).await.is_empty(),
        "nothing was modified after an hour from now"
    );

    // Three keys per scan: one bounded run reads three objects; polling reads them all.
    let source = S3Source::with_options(options(
        &store,
        "f",
        "until=end&format=jsonl&max_keys_per_scan=3",
        FileFormat::JsonLines,
    ));
    let mut reader = source.create_reader().await.unwrap();
    assert_eq!(read_all(&mut reader).await.len(), 3);
    let source = S3Source::with_options(options(
        &store,
        "f",
        "format=jsonl&max_keys_per_scan=3&poll_interval=1ms&batch.timeout=50ms&exclude_pattern=tmp",
        FileFormat::JsonLines,
    ));
    let mut reader = source.create_reader().await.unwrap();
    let mut n = 0;
    for _ in 0..20 {
        n += reader.read_batch(100).await.unwrap().len();
    }
    assert_eq!(n, 10);
}

#[tokio::test]
async fn the_cursor_stays_small_as_objects_accumulate() {
    let store = Arc::new(InMemory::new());
    for o in 0..10_000 {
        put(&store, &format!("many/{o:06}.jsonl"), jsonl(o, 1)).await;
    }
    let source = S3Source::with_options(options(
        &store,
        "many",
        "until=end&format=jsonl&max_keys_per_scan=20000",
        FileFormat::JsonLines,
    ));
    let mut reader = source.create_reader().await.unwrap();
    assert_eq!(read_all(&mut reader).await.len(), 10_000);
    let size = serde_json::to_string(&reader.position().unwrap())
        .unwrap()
        .len();
    assert!(
        size < 8_000,
        "the position is {size} bytes for 10,000 objects"
    );
}

/// An offset past the end of a compressed object (the object is shorter
/// than the position says): the object is read from its start, whole.
#[tokio::test]
async fn an_offset_past_a_compressed_object_reads_it_from_the_start() {
    let store = Arc::new(InMemory::new());
    let mut gz = velo_datasource_core::format::compression::Compression::Gzip
        .writer(Vec::new())
        .unwrap();
    std::io::Write::write_all(&mut gz, jsonl(0, 50).as_bytes()).unwrap();
    store
        .put(
            &Path::from("z/data.jsonl.gz"),
            PutPayload::from(gz.finish().unwrap()),
        )
        .await
        .unwrap();
    let source = S3Source::with_options(options(
        &store,
        "z",
        "until=end&format=jsonl",
        FileFormat::JsonLines,
    ));
    let mut reader = source.create_reader().await.unwrap();
    reader
        .seek(velo_datasource_core::SourceOffset::S3 {
            bucket: "mem".into(),
            key: "z/data.jsonl.gz".into(),
            byte_offset: 1 << 20,
        })
        .await
        .unwrap();
    let back = read_all(&mut reader).await;
    assert_eq!(back, (0..50).map(|i| (0, i)).collect::<Vec<_>>());
}

#[tokio::test]
async fn csv_gzip_objects_and_resume_inside_a_compressed_one() {
    let store = Arc::new(InMemory::new());
    let mut csv = String::from("id,name\n");
    for i in 0..1000 {
        csv.push_str(&format!("{i},\"n, {i}\"\n"));
    }
    let mut gz = velo_datasource_core::format::compression::Compression::Gzip
        .writer(Vec::new())
        .unwrap();
    std::io::Write::write_all(&mut gz, csv.as_bytes()).unwrap();
    store
        .put(
            &Path::from("c/data.csv.gz"),
            PutPayload::from(gz.finish().unwrap()),
        )
        .await
        .unwrap();
    let source = S3Source::with_options(options(
        &store,
        "c",
        "until=end&format=csv",
        FileFormat::Csv,
    ));
    let mut reader = source.create_reader().await.unwrap();
    let first = reader.read_batch(300).await.unwrap();
    assert_eq!(
        first[0].get("name"),
        Some(&FieldValue::String("n, 0".into()))
    );
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
    assert_eq!(ids, (0..1000).collect::<Vec<i64>>());
}

#[tokio::test]
async fn sink_rolls_objects_visible_only_after_commit() {
    let store = Arc::new(InMemory::new());
    let config = DataSourceUri::parse("s3://mem/out?format=jsonl&roll.records=10000")
        .unwrap()
        .to_sink_config()
        .unwrap();
    let opts = S3Options::with_store(
        store.clone() as Arc<dyn ObjectStore>,
        "mem://mem",
        "out",
        FileFormat::JsonLines,
        &config,
    )
    .unwrap();
    let sink = S3Sink::with_options(opts);
    let mut writer = sink.create_writer().await.unwrap();
    let schema = Arc::new(Schema::new(vec![
        FieldDefinition::required("o", DataType::Integer),
        FieldDefinition::required("i", DataType::Integer),
    ]));
    let records: Vec<StreamRecord> = (0..100_000)
        .map(|i| {
            StreamRecord::new(
                schema.clone(),
                vec![FieldValue::Integer(i / 1000), FieldValue::Integer(i)],
            )
            .unwrap()
        })
        .collect();
    for chunk in records.chunks(7_000) {
        writer.write_batch(chunk).await.unwrap();
    }
    let listed = |store: Arc<InMemory>| async move {
        use futures::StreamExt;
        store
            .list(Some(&Path::from("out")))
            .collect::<Vec<_>>()
            .await
            .len()
    };
    assert_eq!(
        listed(store.clone()).await,
        0,
        "nothing visible before commit"
    );
    writer.commit().await.unwrap();
    assert_eq!(listed(store.clone()).await, 10);
    // A rolled-back batch leaves nothing.
    writer.write_batch(&records[..5]).await.unwrap();
    writer.rollback().await.unwrap();
    writer.commit().await.unwrap();
    assert_eq!(listed(store.clone()).await, 10);
    writer.close().await.unwrap();

    let source = S3Source::with_options(options(
        &store,
        "out",
        "until=end&format=jsonl",
        FileFormat::JsonLines,
    ));
    let mut reader = source.create_reader().await.unwrap();
    let back = read_all(&mut reader).await;
    assert_eq!(back.len(), 100_000);
    assert!(
        back.iter().enumerate().all(|(n, (_, i))| *i == n as i64),
        "in order, once each"
    );
}
