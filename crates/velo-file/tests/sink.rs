//! The file sink, and round trips through it, against real files.

mod common;

use std::io::Read;

use common::*;
use velo_datasource_core::format::compression::Compression;
use velo_datasource_core::{FieldValue, StreamRecord};
use velo_file as _;

/// Quotes, embedded line breaks, unicode, empty fields and nulls.
const TRICKY: &str = "id,name,note,price,at\n\
1,\"Smith, Jane\",\"said \"\"hi\"\"\",9.5,2024-01-15T10:30:00Z\n\
2,Zoë 🚀,\"two\nlines\",,2024-01-15T10:31:00.250Z\n\
3,,NA,0.1,2024-01-15T10:32:00Z\n\
4,\"\",\"trailing space \",-3.25,\n";

async fn read_file(uri: &str) -> Vec<StreamRecord> {
    let mut r = source(uri).await.unwrap().create_reader().await.unwrap();
    read_all(r.as_mut()).await.unwrap()
}

async fn write_file(uri: &str, records: &[StreamRecord]) {
    let s = sink(uri).await.unwrap();
    let mut w = s.create_writer().await.unwrap();
    w.write_batch(records).await.unwrap();
    w.commit().await.unwrap();
    w.close().await.unwrap();
}

fn by_name(records: &[StreamRecord]) -> Vec<Vec<(String, FieldValue)>> {
    records
        .iter()
        .map(|r| r.fields().map(|(k, v)| (k.to_owned(), v.clone())).collect())
        .collect()
}

#[tokio::test]
async fn csv_to_jsonl_to_csv_keeps_every_value() {
    let dir = tempfile::tempdir().unwrap();
    let csv_in = dir.path().join("in.csv");
    std::fs::write(&csv_in, TRICKY).unwrap();
    let original = read_file(&uri(&csv_in, "")).await;
    assert_eq!(original.len(), 4);
    assert_eq!(
        original[1].get("note"),
        Some(&FieldValue::from("two\nlines"))
    );
    assert_eq!(original[1].get("name"), Some(&FieldValue::from("Zoë 🚀")));
    assert!(original[1].get("price").unwrap().is_null());
    assert!(
        original[2].get("note").unwrap().is_null(),
        "NA is a null token"
    );

    let jsonl = dir.path().join("mid.jsonl");
    write_file(&uri(&jsonl, ""), &original).await;
    let csv_out = dir.path().join("out.csv");
    let middle = read_file(&uri(&jsonl, "")).await;
    write_file(&uri(&csv_out, ""), &middle).await;
    let back = read_file(&uri(&csv_out, "")).await;
    assert_eq!(by_name(&back), by_name(&original));
    assert_eq!(back[0].schema(), original[0].schema(), "types survive too");
}

#[tokio::test]
async fn rolling_parts_and_compression() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("n.csv");
    let body: String = std::iter::once("n,s\n".to_owned())
        .chain((0..1000).map(|i| format!("{i},row {i}\n")))
        .collect();
    std::fs::write(&input, body).unwrap();
    let records = read_file(&uri(&input, "")).await;
    for (name, codec) in [
        ("out.csv.gz", Compression::Gzip),
        ("out.jsonl.zst", Compression::Zstd),
    ] {
        let out = dir.path().join(name);
        let s = sink(&uri(&out, "roll.records=300")).await.unwrap();
        let mut w = s.create_writer().await.unwrap();
        for chunk in records.chunks(100) {
            w.write_batch(chunk).await.unwrap();
            w.commit().await.unwrap();
        }
        w.close().await.unwrap();
        let mut parts: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.starts_with("out-") && n.ends_with(name.split_once('.').unwrap().1))
            .collect();
        parts.sort();
        assert_eq!(parts.len(), 4, "{parts:?}");
        let mut all = Vec::new();
        for p in &parts {
            let path = dir.path().join(p);
            // Really compressed, readable by the codec alone.
            let mut plain = Vec::new();
            codec
                .reader(std::fs::File::open(&path).unwrap())
                .unwrap()
                .read_to_end(&mut plain)
                .unwrap();
            assert!(!plain.is_empty());
            all.extend(read_file(&uri(&path, "")).await);
        }
        assert_eq!(ints(&all, "n"), (0..1000).collect::<Vec<_>>());
    }
}

#[tokio::test]
async fn nothing_visible_before_close_and_rollback_discards() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("n.jsonl");
    std::fs::write(
        &input,
        (0..10)
            .map(|i| format!("{{\"n\":{i}}}\n"))
            .collect::<String>(),
    )
    .unwrap();
    let records = read_file(&uri(&input, "")).await;
    let out = dir.path().join("out.json");
    let s = sink(&uri(&out, "format=json_array")).await.unwrap();
    let mut w = s.create_writer().await.unwrap();
    w.write_batch(&records[..5]).await.unwrap();
    w.commit().await.unwrap();
    w.write_batch(&records[5..8]).await.unwrap();
    w.rollback().await.unwrap();
    assert!(!out.exists(), "readers never see a half-written file");
    w.write_batch(&records[8..]).await.unwrap();
    w.commit().await.unwrap();
    w.close().await.unwrap();
    let back = read_file(&uri(&out, "format=json_array")).await;
    assert_eq!(ints(&back, "n"), [0, 1, 2, 3, 4, 8, 9]);
    serde_json::from_str::<serde_json::Value>(&std::fs::read_to_string(&out).unwrap())
        .expect("a valid JSON array");
}

#[tokio::test]
async fn crash_keeps_committed_drops_uncommitted_and_resume_appends() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("n.csv");
    std::fs::write(
        &input,
        std::iter::once("n\n".to_owned())
            .chain((0..30).map(|i| format!("{i}\n")))
            .collect::<String>(),
    )
    .unwrap();
    let records = read_file(&uri(&input, "")).await;
    let out = dir.path().join("out.csv");
    {
        let s = sink(&uri(&out, "")).await.unwrap();
        let mut w = s.create_writer().await.unwrap();
        w.write_batch(&records[..10]).await.unwrap();
        w.commit().await.unwrap();
        w.write_batch(&records[10..15]).await.unwrap();
        w.flush().await.unwrap();
        // The process dies here: no commit, no close.
    }
    {
        let s = sink(&uri(&out, "")).await.unwrap();
        let mut w = s.create_writer().await.unwrap();
        w.write_batch(&records[10..20]).await.unwrap();
        w.commit().await.unwrap();
        w.close().await.unwrap();
    }
    assert_eq!(
        ints(&read_file(&uri(&out, "")).await, "n"),
        (0..20).collect::<Vec<_>>()
    );
    // A later, resumed run of the same pipeline continues the file.
    {
        let s = sink(&uri(&out, "append=true")).await.unwrap();
        let mut w = s.create_writer().await.unwrap();
        w.write_batch(&records[20..]).await.unwrap();
        w.commit().await.unwrap();
        w.close().await.unwrap();
    }
    assert_eq!(
        ints(&read_file(&uri(&out, "")).await, "n"),
        (0..30).collect::<Vec<_>>()
    );
    let header_lines = std::fs::read_to_string(&out)
        .unwrap()
        .lines()
        .filter(|l| *l == "n")
        .count();
    assert_eq!(header_lines, 1, "one header");
    // A fresh run replaces it, and throws away an interrupted part of an earlier run.
    {
        let s = sink(&uri(&out, "")).await.unwrap();
        let mut w = s.create_writer().await.unwrap();
        w.write_batch(&records[..3]).await.unwrap();
        w.commit().await.unwrap();
    }
    {
        let s = sink(&uri(&out, "append=false")).await.unwrap();
        let mut w = s.create_writer().await.unwrap();
        w.write_batch(&records[5..7]).await.unwrap();
        w.commit().await.unwrap();
        w.close().await.unwrap();
    }
    assert_eq!(ints(&read_file(&uri(&out, "")).await, "n"), [5, 6]);
}

/// `roll.on_commit=true`: every commit renames its part into place, so what
/// is committed is visible at once under a final name; a rolled-back batch
/// never shows, and nothing uncommitted is ever under a final name.
#[tokio::test]
async fn roll_on_commit_makes_each_commit_visible() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("n.jsonl");
    std::fs::write(
        &input,
        (0..30)
            .map(|i| format!("{{\"n\":{i}}}\n"))
            .collect::<String>(),
    )
    .unwrap();
    let records = read_file(&uri(&input, "")).await;
    let out = dir.path().join("out.jsonl");
    let visible = || {
        let mut parts: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.starts_with("out-"))
            .collect();
        parts.sort();
        parts
    };
    let s = sink(&uri(&out, "roll.on_commit=true")).await.unwrap();
    let mut w = s.create_writer().await.unwrap();
    w.write_batch(&records[..10]).await.unwrap();
    assert!(visible().is_empty(), "nothing before the commit");
    w.commit().await.unwrap();
    assert_eq!(visible().len(), 1, "the commit is visible at once");
    w.write_batch(&records[10..15]).await.unwrap();
    w.rollback().await.unwrap();
    w.commit().await.unwrap();
    assert_eq!(visible().len(), 1, "an empty commit adds no file");
    w.write_batch(&records[15..30]).await.unwrap();
    w.commit().await.unwrap();
    w.close().await.unwrap();
    let parts = visible();
    assert_eq!(parts.len(), 2, "{parts:?}");
    let mut all = Vec::new();
    for p in &parts {
        all.extend(read_file(&uri(&dir.path().join(p), "")).await);
    }
    assert_eq!(
        ints(&all, "n"),
        (0..10).chain(15..30).collect::<Vec<_>>(),
        "committed records once each, the rolled-back ones absent"
    );
}
