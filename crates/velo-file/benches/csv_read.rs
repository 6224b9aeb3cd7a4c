//! `cargo bench -p velo-file --bench csv_read`
//!
//! Typed records from the file source next to the baselines of the same file
//! in the same run: raw `csv::ByteRecord` parsing (the floor: no values, no
//! types) and a `HashMap<String, String>` per record (the guide's design).
//! JSON Lines next to `serde_json::Value` per line. `velo_typed_columns` is
//! the same CSV records through `read_columns`. Throughput is in records;
//! the ratios are what `cargo xtask bench` reports. Reads use the default
//! batch size of `velo` (1,000 records).

use std::collections::HashMap;
use std::hint::black_box;
use std::io::{BufRead, Write};
use std::path::Path;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use velo_datasource_core::DataSourceRegistry;
use velo_file as _;

const ROWS: usize = 100_000;

fn write_csv(path: &Path) {
    let mut w = std::io::BufWriter::new(std::fs::File::create(path).unwrap());
    writeln!(w, "trade_id,symbol,price,quantity,side,venue,timestamp").unwrap();
    for i in 0..ROWS {
        writeln!(
            w,
            "{i},AAPL,{:.2},{},buy,XNAS,2024-01-15T10:30:{:02}.{:03}Z",
            100.0 + (i % 1000) as f64 * 0.01,
            i % 500,
            (i / 1000) % 60,
            i % 1000
        )
        .unwrap();
    }
}

fn write_jsonl(path: &Path) {
    let mut w = std::io::BufWriter::new(std::fs::File::create(path).unwrap());
    for i in 0..ROWS {
        writeln!(w, r#"{{"trade_id":{i},"symbol":"AAPL","price":{:.2},"quantity":{},"side":"buy","timestamp":"2024-01-15T10:30:00.{:03}Z"}}"#, 100.0 + (i % 1000) as f64 * 0.01, i % 500, i % 1000).unwrap();
    }
}

/// Reads the whole file, 1,000 records per call, as records or (with
/// `columns`) through `read_columns`; returns the number of records.
fn read_all(rt: &tokio::runtime::Runtime, uri: &str, columns: bool) -> usize {
    rt.block_on(async {
        let source = DataSourceRegistry::with_plugins()
            .create_source(uri)
            .await
            .unwrap();
        let mut reader = source.create_reader().await.unwrap();
        let mut n = 0;
        loop {
            let got = if columns {
                let batches = reader.read_columns(1000).await.unwrap();
                black_box(&batches);
                batches.iter().map(|b| b.len()).sum::<usize>()
            } else {
                let batch = reader.read_batch(1000).await.unwrap();
                black_box(&batch);
                batch.len()
            };
            n += got;
            if got == 0 && !reader.has_more().await.unwrap() {
                return n;
            }
        }
    })
}

/// The codec alone on `bytes` in memory, 1,000 records per call: what the
/// file reader adds is the rest.
fn decode_in_memory(
    b: &mut criterion::Bencher<'_>,
    bytes: &[u8],
    format: velo_datasource_core::FileFormat,
) {
    use velo_datasource_core::format::{self, FormatOptions};
    let opts = FormatOptions::new(format);
    let inferred = format::infer(&opts, &bytes[..1 << 20], false).unwrap();
    b.iter(|| {
        let mut dec = format::decoder(&opts, &inferred, 0).unwrap();
        let mut frames = Vec::with_capacity(1000);
        let mut pos = inferred.header_len;
        let mut n = 0;
        while pos < bytes.len() {
            frames.clear();
            pos += dec.decode(&bytes[pos..], true, 1000, &mut frames);
            n += frames.len();
            black_box(&frames);
        }
        assert_eq!(n, ROWS);
    })
}

/// [`decode_in_memory`] into columns, 1,000 records per call.
fn decode_columns_in_memory(b: &mut criterion::Bencher<'_>, bytes: &[u8]) {
    use velo_datasource_core::columns::Columns;
    use velo_datasource_core::format::{self, FormatOptions};
    let opts = FormatOptions::new(velo_datasource_core::FileFormat::Csv);
    let inferred = format::infer(&opts, &bytes[..1 << 20], false).unwrap();
    b.iter(|| {
        let mut dec = format::decoder(&opts, &inferred, 0).unwrap();
        let mut spans = Vec::with_capacity(1000);
        let mut pos = inferred.header_len;
        let mut n = 0;
        while pos < bytes.len() {
            spans.clear();
            let mut columns = Columns::new(inferred.schema.clone());
            pos += dec
                .decode_columns(&bytes[pos..], true, 1000, &mut spans, &mut columns)
                .unwrap();
            n += columns.rows();
            black_box(&columns);
        }
        assert_eq!(n, ROWS);
    })
}

fn benches(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let csv_path = dir.path().join("trades.csv");
    write_csv(&csv_path);
    let csv_uri = format!("file://{}", csv_path.display());

    let mut g = c.benchmark_group("csv_read");
    g.throughput(Throughput::Elements(ROWS as u64))
        .sample_size(10);
    g.bench_function("velo_typed_records", |b| {
        b.iter(|| assert_eq!(read_all(&rt, &csv_uri, false), ROWS))
    });
    g.bench_function("velo_typed_columns", |b| {
        b.iter(|| assert_eq!(read_all(&rt, &csv_uri, true), ROWS))
    });
    let bytes = std::fs::read(&csv_path).unwrap();
    g.bench_function("core_csv_decoder_only", |b| {
        decode_in_memory(b, &bytes, velo_datasource_core::FileFormat::Csv)
    });
    g.bench_function("core_csv_columns_only", |b| {
        decode_columns_in_memory(b, &bytes)
    });
    g.bench_function("csv_byte_record", |b| {
        b.iter(|| {
            let mut r = csv::Reader::from_path(&csv_path).unwrap();
            let mut rec = csv::ByteRecord::new();
            let mut n = 0;
            while r.read_byte_record(&mut rec).unwrap() {
                black_box(&rec);
                n += 1;
            }
            assert_eq!(n, ROWS);
        })
    });
    g.bench_function("hashmap_string_per_record", |b| {
        b.iter(|| {
            let mut r = csv::Reader::from_path(&csv_path).unwrap();
            let headers: Vec<String> = r.headers().unwrap().iter().map(str::to_owned).collect();
            let mut n = 0;
            for rec in r.records() {
                let rec = rec.unwrap();
                let map: HashMap<String, String> = headers
                    .iter()
                    .cloned()
                    .zip(rec.iter().map(str::to_owned))
                    .collect();
                black_box(&map);
                n += 1;
            }
            assert_eq!(n, ROWS);
        })
    });
    g.finish();

    let jsonl_path = dir.path().join("trades.jsonl");
    write_jsonl(&jsonl_path);
    let jsonl_uri = format!("file://{}", jsonl_path.display());
    let mut g = c.benchmark_group("jsonl_read");
    g.throughput(Throughput::Elements(ROWS as u64))
        .sample_size(10);
    g.bench_function("velo_typed_records", |b| {
        b.iter(|| assert_eq!(read_all(&rt, &jsonl_uri, false), ROWS))
    });
    let bytes = std::fs::read(&jsonl_path).unwrap();
    g.bench_function("core_jsonl_decoder_only", |b| {
        decode_in_memory(b, &bytes, velo_datasource_core::FileFormat::JsonLines)
    });
    g.bench_function("serde_json_value", |b| {
        b.iter(|| {
            let f = std::io::BufReader::with_capacity(
                256 * 1024,
                std::fs::File::open(&jsonl_path).unwrap(),
            );
            let mut n = 0;
            for line in f.lines() {
                let v: serde_json::Value = serde_json::from_str(&line.unwrap()).unwrap();
                black_box(&v);
                n += 1;
            }
            assert_eq!(n, ROWS);
        })
    });
    g.finish();
}

criterion_group!(csv_read, benches);
criterion_main!(csv_read);
