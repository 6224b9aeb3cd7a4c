//! The CSV decoder alone, into columns or records, on trades built in
//! memory: no threads, no I/O. Made to be counted by cachegrind, whose
//! instruction and cache-miss counts do not move with the machine's load:
//!
//! ```sh
//! cargo build --release -p velo-datasource-core --example csv_columns
//! valgrind --tool=cachegrind --cache-sim=yes target/release/examples/csv_columns 100000
//! valgrind --tool=cachegrind target/release/examples/csv_columns 100000 records
//! valgrind --tool=cachegrind target/release/examples/csv_columns 100000 rows
//! valgrind --tool=cachegrind target/release/examples/csv_columns 100000 none
//! ```
//!
//! `records` decodes a record at a time (frames), `rows` writes the values
//! in place and makes the records (what the file source's `read_batch`
//! does), `none` builds the input only: subtract it to get the decoder's
//! share.

use std::io::Write;

use velo_datasource_core::FileFormat;
use velo_datasource_core::columns::{Columns, RowMeta};
use velo_datasource_core::format::{self, FormatOptions};
use velo_datasource_core::rows::Rows;

/// The benchmark's trades: an integer id, text, a float, an integer, text,
/// text and an ISO timestamp with milliseconds.
fn trades(rows: usize) -> Vec<u8> {
    let mut w = Vec::new();
    writeln!(w, "trade_id,symbol,price,quantity,side,venue,timestamp").unwrap();
    for i in 0..rows {
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
    w
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let rows: usize = args.next().map_or(Ok(100_000), |s| s.parse())?;
    let mode = args.next().unwrap_or_else(|| "columns".into());
    let bytes = trades(rows);
    if mode == "none" {
        return Ok(());
    }
    let opts = FormatOptions::new(FileFormat::Csv);
    let inferred = format::infer(&opts, &bytes[..bytes.len().min(1 << 20)], false)?;
    let mut decoder = format::decoder(&opts, &inferred, 0)?;
    let mut pos = inferred.header_len;
    let mut decoded = 0;
    let (mut spans, mut frames) = (Vec::with_capacity(1000), Vec::with_capacity(1000));
    while pos < bytes.len() {
        if mode == "records" {
            frames.clear();
            pos += decoder.decode(&bytes[pos..], true, 1000, &mut frames);
            decoded += frames.len();
            std::hint::black_box(&frames);
        } else if mode == "rows" {
            spans.clear();
            let mut rows = Rows::new(inferred.schema.clone());
            pos += decoder
                .decode_rows(&bytes[pos..], true, 1000, &mut spans, &mut rows)
                .ok_or("this decoder does not write rows in place")?;
            let meta = RowMeta {
                offset: 0,
                partition: 0,
                timestamp: chrono::Utc::now(),
                event_time: None,
            };
            let n = rows.rows();
            let records = rows.into_records(&vec![meta; n])?;
            decoded += records.len();
            std::hint::black_box(&records);
        } else {
            spans.clear();
            let mut columns = Columns::new(inferred.schema.clone());
            pos += decoder
                .decode_columns(&bytes[pos..], true, 1000, &mut spans, &mut columns)
                .ok_or("this decoder does not decode into columns")?;
            decoded += columns.rows();
            std::hint::black_box(&columns);
        }
    }
    if decoded != rows {
        return Err(format!("decoded {decoded} of {rows} rows").into());
    }
    writeln!(std::io::stdout(), "decoded {decoded} rows into {mode}")?;
    Ok(())
}
