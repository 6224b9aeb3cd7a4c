//! `velo-bench`: each workload measured next to its baseline in the same run.
//!
//! `cargo xtask bench` builds this in release and renders its report. Every
//! number comes from this run on this machine; ratios compare medians of the
//! same number of repetitions.

use std::collections::HashMap;
use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use serde::Serialize;
use velo_datasource_core::DataSourceRegistry;
use velo_file as _;
use velo_kafka as _;

mod clickhouse;
mod kafka;
mod pg;
mod s3;

#[derive(Debug, Clone, Serialize)]
pub(crate) struct Measure {
    name: String,
    /// Seconds of each repetition.
    runs: Vec<f64>,
    /// Units processed per repetition (records, bytes).
    units: f64,
    unit: String,
    /// Peak resident memory in MiB, where measured.
    peak_rss_mib: Option<f64>,
    /// Whether that peak is what a run added to the harness's own process
    /// (in-process workloads) rather than the peak of a process of its own.
    rss_in_process: bool,
}

impl Measure {
    fn median(&self) -> f64 {
        let mut r = self.runs.clone();
        r.sort_by(f64::total_cmp);
        r[r.len() / 2]
    }
    fn min(&self) -> f64 {
        self.runs.iter().copied().fold(f64::INFINITY, f64::min)
    }
    fn rate(&self) -> f64 {
        self.units / self.median()
    }
}

#[derive(Debug, Serialize)]
struct Comparison {
    workload: String,
    ours: Measure,
    baseline: Option<Measure>,
    /// ours rate / baseline rate (medians).
    ratio: Option<f64>,
    target: String,
    met: Option<bool>,
    note: String,
}

#[derive(Debug, Serialize)]
struct Report {
    date: String,
    machine: String,
    quick: bool,
    repetitions: usize,
    comparisons: Vec<Comparison>,
}

struct Args {
    json: PathBuf,
    markdown: PathBuf,
    velo: PathBuf,
    quick: bool,
    /// Only this group of workloads (`file`, `kafka`, `postgres`), for working on them.
    only: Option<String>,
}

fn parse_args() -> Args {
    // Defaults beside the harness's own binary: `target/release/velo` and
    // `target/bench/report.*`, as `cargo xtask bench` uses them.
    let exe_dir = std::env::current_exe()
        .ok()
        .and_then(|e| e.parent().map(PathBuf::from))
        .unwrap_or_default();
    let reports = exe_dir.join("..").join("bench");
    let mut a = Args {
        json: reports.join("report.json"),
        markdown: reports.join("report.md"),
        velo: exe_dir.join("velo"),
        quick: false,
        only: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        match arg.as_str() {
            "--json" => a.json = it.next().unwrap_or_default().into(),
            "--markdown" => a.markdown = it.next().unwrap_or_default().into(),
            "--velo" => a.velo = it.next().unwrap_or_default().into(),
            "--quick" => a.quick = true,
            "--only-kafka" => a.only = Some("kafka".into()),
            "--only" => a.only = it.next(),
            other => {
                eprintln!("velo-bench: unknown argument {other}");
                std::process::exit(2);
            }
        }
    }
    a
}

/// Times `reps` runs of `f` (which returns the units it processed), and
/// the most resident memory any run added ([`added_peak_rss`]).
fn time<F: FnMut() -> f64>(reps: usize, mut f: F) -> ((Vec<f64>, f64), f64) {
    let mut runs = Vec::with_capacity(reps);
    let mut units = 0.0;
    let mut peak = 0f64;
    for _ in 0..reps {
        let t = Instant::now();
        let (u, rss) = added_peak_rss(&mut f);
        units = u;
        runs.push(t.elapsed().as_secs_f64());
        peak = peak.max(rss);
    }
    ((runs, units), peak)
}

/// [`time`] for workloads measured against each other: each repetition
/// runs every one of `fs` in turn, so that a phase of the shared machine
/// (which moves every time here by 30–50% for seconds to minutes) falls on
/// all of them and not on one, and their ratios are the code's.
fn time_interleaved(
    reps: usize,
    fs: &mut [&mut dyn FnMut() -> f64],
) -> Vec<((Vec<f64>, f64), f64)> {
    let mut out = vec![((Vec::with_capacity(reps), 0.0), 0f64); fs.len()];
    for _ in 0..reps {
        for (f, ((runs, units), peak)) in fs.iter_mut().zip(&mut out) {
            let t = Instant::now();
            let (u, rss) = added_peak_rss(&mut **f);
            *units = u;
            runs.push(t.elapsed().as_secs_f64());
            *peak = peak.max(rss);
        }
    }
    out
}

/// A field of /proc/PID/status in KiB (`VmRSS`, `VmHWM`).
fn status_kib(pid: &str, field: &str) -> Option<f64> {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()?
        .lines()
        .find(|l| l.starts_with(field))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

/// Runs `f` in this process and returns the resident memory it added at
/// its peak, in MiB: the kernel's high-water mark (reset first through
/// `/proc/self/clear_refs`) minus what was resident before, so the inputs
/// the harness prepared beforehand do not count.
pub(crate) fn added_peak_rss<T>(f: impl FnOnce() -> T) -> (T, f64) {
    let before = status_kib("self", "VmRSS:").unwrap_or(0.0);
    let _ = std::fs::write("/proc/self/clear_refs", "5");
    let out = f();
    let peak = status_kib("self", "VmHWM:").unwrap_or(0.0);
    (out, (peak - before).max(0.0) / 1024.0)
}

/// Runs `cmd` to its end, sampling its peak RSS (VmHWM) every 5 ms;
/// returns its output status, the seconds it took and the peak in MiB.
pub(crate) fn run_sampled(cmd: &mut Command) -> (std::process::ExitStatus, f64, f64) {
    let t = Instant::now();
    let mut child = cmd.spawn().expect("spawn");
    let pid = child.id().to_string();
    let mut peak_kib = 0f64;
    let status = loop {
        if let Some(kib) = status_kib(&pid, "VmHWM:") {
            peak_kib = peak_kib.max(kib);
        }
        if let Some(status) = child.try_wait().expect("wait") {
            break status;
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    (status, t.elapsed().as_secs_f64(), peak_kib / 1024.0)
}

fn write_trades_csv(path: &Path, rows: usize) {
    let mut w = std::io::BufWriter::new(std::fs::File::create(path).unwrap());
    writeln!(w, "trade_id,symbol,price,quantity,side,venue,timestamp").unwrap();
    let syms = [
        "AAPL", "MSFT", "NVDA", "AMZN", "GOOGL", "TSLA", "META", "JPM",
    ];
    let venues = ["XNAS", "XNYS", "BATS", "IEXG"];
    for i in 0..rows {
        let s = syms[i % syms.len()];
        let price = 100.0 + (i % 10_000) as f64 * 0.01;
        let ms = 1_705_329_000_000u64 + i as u64 * 37;
        let secs = ms / 1000;
        let (h, m, sec) = ((secs / 3600) % 24, (secs / 60) % 60, secs % 60);
        writeln!(
            w,
            "{i},{s},{price:.2},{},{},{},2024-01-15T{h:02}:{m:02}:{sec:02}.{:03}Z",
            (i % 50 + 1) * 10,
            if i % 2 == 0 { "buy" } else { "sell" },
            venues[i % venues.len()],
            ms % 1000
        )
        .unwrap();
    }
}

fn write_trades_jsonl(path: &Path, rows: usize) {
    let mut w = std::io::BufWriter::new(std::fs::File::create(path).unwrap());
    for i in 0..rows {
        writeln!(
            w,
            r#"{{"trade_id":{i},"symbol":"AAPL","price":{:.2},"quantity":{},"side":"{}","venue":"XNAS","timestamp":"2024-01-15T10:30:00.{:03}Z"}}"#,
            100.0 + (i % 10_000) as f64 * 0.01,
            (i % 50 + 1) * 10,
            if i % 2 == 0 { "buy" } else { "sell" },
            i % 1000
        )
        .unwrap();
    }
}

/// Reads the whole source, 1,000 records per call, as records or (with
/// `columns`) through `read_columns`; returns the number of records.
/// The records of CSV file `path` (after its header), parsed into `rec`
/// one after another: the floor of parsing, no values and no types.
fn count_byte_records(path: &Path, rec: &mut csv::ByteRecord) -> usize {
    let mut r = csv::ReaderBuilder::new().from_path(path).unwrap();
    let mut n = 0;
    while r.read_byte_record(rec).unwrap() {
        n += 1;
    }
    n
}

fn velo_read_all(rt: &tokio::runtime::Runtime, uri: &str, columns: bool) -> f64 {
    rt.block_on(async {
        let registry = DataSourceRegistry::with_plugins();
        let source = registry.create_source(uri).await.expect("source");
        let mut reader = source.create_reader().await.expect("reader");
        let mut n = 0usize;
        loop {
            let got = if columns {
                let batches = reader.read_columns(1000).await.expect("read");
                batches.iter().map(|b| b.len()).sum::<usize>()
            } else {
                reader.read_batch(1000).await.expect("read").len()
            };
            n += got;
            if got == 0 && !reader.has_more().await.expect("has_more") {
                break;
            }
        }
        n as f64
    })
}

fn compare(
    workload: &str,
    ours: Measure,
    baseline: Option<Measure>,
    target: &str,
    min_ratio: Option<f64>,
    note: &str,
) -> Comparison {
    let ratio = baseline.as_ref().map(|b| ours.rate() / b.rate());
    let met = match (ratio, min_ratio) {
        (Some(r), Some(t)) => Some(r >= t),
        _ => None,
    };
    Comparison {
        workload: workload.into(),
        ours,
        baseline,
        ratio,
        target: target.into(),
        met,
        note: note.into(),
    }
}

pub(crate) fn measure(name: &str, unit: &str, (runs, units): (Vec<f64>, f64)) -> Measure {
    Measure {
        name: name.into(),
        runs,
        units,
        unit: unit.into(),
        peak_rss_mib: None,
        rss_in_process: false,
    }
}

/// [`measure`] with the peak RSS of the runs, as [`time`] returns them.
pub(crate) fn measure_rss(name: &str, unit: &str, (timed, rss): ((Vec<f64>, f64), f64)) -> Measure {
    let mut m = measure(name, unit, timed);
    m.peak_rss_mib = Some(rss);
    m.rss_in_process = true;
    m
}

/// [`measure`] with the peak RSS of a process of its own.
pub(crate) fn measure_proc(name: &str, unit: &str, timed: (Vec<f64>, f64), rss: f64) -> Measure {
    let mut m = measure(name, unit, timed);
    m.peak_rss_mib = Some(rss);
    m
}

impl Measure {
    /// Rate, then peak memory where measured.
    fn describe(&self) -> String {
        let mut o = format!("{}: {}", self.name, fmt_rate(self));
        match (self.peak_rss_mib, self.rss_in_process) {
            (Some(rss), true) => o.push_str(&format!(", peak RSS +{rss:.1} MiB")),
            (Some(rss), false) => o.push_str(&format!(", peak RSS {rss:.1} MiB")),
            (None, _) => {}
        }
        o
    }
}

/// Runs `velo pipe` and samples its peak RSS (VmHWM) from /proc while it runs.
fn run_pipe(velo: &Path, input: &Path, output: &Path) -> (f64, f64) {
    let _ = std::fs::remove_file(output);
    let (status, secs, peak) = run_sampled(
        Command::new(velo)
            .args([
                "pipe",
                &format!("file://{}", input.display()),
                &format!("file://{}", output.display()),
                "--no-progress",
                "--batch-size",
                "10000",
            ])
            .stderr(std::process::Stdio::null()),
    );
    assert!(status.success(), "velo pipe failed");
    (secs, peak)
}

fn tail_latency(rt: &tokio::runtime::Runtime, dir: &Path, lines: usize) -> Vec<f64> {
    let path = dir.join("tail.jsonl");
    std::fs::write(&path, "").unwrap();
    let uri = format!(
        "file://{}?mode=tail&format=jsonl&read_timeout=200ms",
        path.display()
    );
    let epoch = Instant::now();
    rt.block_on(async {
        let registry = DataSourceRegistry::with_plugins();
        let mut reader = registry
            .create_source(&uri)
            .await
            .unwrap()
            .create_reader()
            .await
            .unwrap();
        reader.read_batch(1).await.unwrap();
        let writer_path = path.clone();
        let writer = std::thread::spawn(move || {
            let mut f = std::fs::OpenOptions::new()
                .append(true)
                .open(&writer_path)
                .unwrap();
            for i in 0..lines {
                let at = epoch.elapsed().as_nanos();
                writeln!(f, "{{\"i\":{i},\"at\":{at}}}").unwrap();
                std::thread::sleep(Duration::from_millis(2));
            }
        });
        let mut latencies = Vec::with_capacity(lines);
        let deadline = Instant::now() + Duration::from_secs(60);
        while latencies.len() < lines && Instant::now() < deadline {
            for r in reader.read_batch(1000).await.unwrap() {
                let now = epoch.elapsed().as_nanos() as f64;
                let at = r.get("at").and_then(|v| v.as_i64()).unwrap() as f64;
                latencies.push((now - at) / 1e6);
            }
        }
        writer.join().unwrap();
        latencies
    })
}

fn percentile(v: &mut [f64], p: f64) -> f64 {
    v.sort_by(f64::total_cmp);
    v[((v.len() as f64 - 1.0) * p).round() as usize]
}

fn main() {
    let args = parse_args();
    let reps = if args.quick { 3 } else { 5 };
    let rows = if args.quick { 200_000 } else { 1_000_000 };
    let dir = std::env::temp_dir().join(format!("velo-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let mut comparisons = Vec::new();

    let wanted = |group: &str| args.only.as_deref().is_none_or(|only| only == group);
    if wanted("file") {
        file_workloads(&args, &rt, &dir, reps, rows, &mut comparisons);
    }
    // Kafka: our source and sink next to bare rdkafka loops, same broker, same messages.
    if wanted("kafka") {
        kafka_workloads(&args, &rt, &mut comparisons);
    }
    if wanted("postgres") {
        postgres_workloads(&args, &rt, &mut comparisons);
    }
    if wanted("s3") {
        s3_workloads(&args, &rt, &mut comparisons);
    }
    if wanted("clickhouse") {
        clickhouse_workloads(&args, &dir, &mut comparisons);
    }
    let _ = std::fs::remove_dir_all(&dir);
    let report = Report {
        date: chrono_like_now(),
        machine: machine(),
        quick: args.quick,
        repetitions: reps,
        comparisons,
    };
    for path in [&args.json, &args.markdown] {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).unwrap();
        }
    }
    std::fs::write(&args.json, serde_json::to_vec_pretty(&report).unwrap()).unwrap();
    std::fs::write(&args.markdown, markdown(&report)).unwrap();
}

fn file_workloads(
    args: &Args,
    rt: &tokio::runtime::Runtime,
    dir: &Path,
    reps: usize,
    rows: usize,
    comparisons: &mut Vec<Comparison>,
) {
    // CSV: typed records vs raw ByteRecord parsing vs a HashMap<String,String> per record.
    let csv_path = dir.join("trades.csv");
    write_trades_csv(&csv_path, rows);
    let uri = format!("file://{}", csv_path.display());
    eprintln!("velo-bench: csv_read ({rows} rows)");
    let mut hashmap_reader = || {
        let mut r = csv::ReaderBuilder::new().from_path(&csv_path).unwrap();
        let headers: Vec<String> = r.headers().unwrap().iter().map(str::to_owned).collect();
        let mut n = 0;
        for rec in r.records() {
            let rec = rec.unwrap();
            let map: HashMap<String, String> = headers
                .iter()
                .cloned()
                .zip(rec.iter().map(str::to_owned))
                .collect();
            std::hint::black_box(&map);
            n += 1;
        }
        n as f64
    };
    // Records, columns and the two baselines in turn (see `time_interleaved`).
    let mut timed = time_interleaved(
        reps,
        &mut [
            &mut || velo_read_all(rt, &uri, false),
            &mut || velo_read_all(rt, &uri, true),
            &mut || count_byte_records(&csv_path, &mut csv::ByteRecord::new()) as f64,
            &mut hashmap_reader,
        ],
    )
    .into_iter();
    let mut next = |name: &str| measure_rss(name, "records", timed.next().expect("four workloads"));
    let ours = next("velo file source (typed)");
    let columns = next("velo file source (typed columns)");
    let raw = next("csv::ByteRecord");
    let hashmap = next("HashMap<String,String> per record");
    let interleaved = "the four CSV workloads run in turn in each repetition";
    comparisons.push(compare(
        "CSV → typed records",
        ours.clone(),
        Some(raw.clone()),
        "≥ 0.5× raw ByteRecord",
        Some(0.5),
        interleaved,
    ));
    comparisons.push(compare(
        "CSV → typed records vs guide's HashMap reader",
        ours,
        Some(hashmap.clone()),
        "≥ 5× HashMap reader",
        Some(5.0),
        interleaved,
    ));
    comparisons.push(compare(
        "CSV → typed columns (`read_columns`)",
        columns.clone(),
        Some(raw),
        "≥ 0.5× raw ByteRecord",
        Some(0.5),
        interleaved,
    ));
    comparisons.push(compare(
        "CSV → typed columns vs guide's HashMap reader",
        columns,
        Some(hashmap),
        "≥ 5× HashMap reader",
        Some(5.0),
        interleaved,
    ));

    // JSON Lines: records vs serde_json::Value per line.
    let jsonl_path = dir.join("trades.jsonl");
    write_trades_jsonl(&jsonl_path, rows);
    let uri = format!("file://{}", jsonl_path.display());
    eprintln!("velo-bench: jsonl_read ({rows} rows)");
    let mut timed = time_interleaved(
        reps,
        &mut [&mut || velo_read_all(rt, &uri, false), &mut || {
            let f = std::io::BufReader::with_capacity(
                256 * 1024,
                std::fs::File::open(&jsonl_path).unwrap(),
            );
            let mut n = 0;
            for line in f.lines() {
                let v: serde_json::Value = serde_json::from_str(&line.unwrap()).unwrap();
                std::hint::black_box(&v);
                n += 1;
            }
            n as f64
        }],
    )
    .into_iter();
    let ours = measure_rss(
        "velo file source (typed)",
        "records",
        timed.next().expect("ours"),
    );
    let base = measure_rss(
        "serde_json::Value per line",
        "records",
        timed.next().expect("baseline"),
    );
    comparisons.push(compare(
        "JSON Lines → typed records",
        ours,
        Some(base),
        "≥ 0.5× raw serde_json::Value",
        Some(0.5),
        "the two run in turn in each repetition",
    ));

    // A directory of small files: what opening a file costs (fingerprint,
    // schema inference, decoder) next to a csv::Reader per file.
    let files = if args.quick { 2_000 } else { 10_000 };
    let small = dir.join("small");
    std::fs::create_dir_all(&small).unwrap();
    for i in 0..files {
        write_trades_csv(&small.join(format!("{i:05}.csv")), 10);
    }
    let uri = format!("file://{}/*.csv", small.display());
    eprintln!("velo-bench: small_files ({files} files of 10 rows)");
    let ours = measure_rss(
        "velo file source (typed), a glob",
        "records",
        time(reps, || velo_read_all(rt, &uri, false)),
    );
    let base = measure_rss(
        "csv::ByteRecord, a reader per file",
        "records",
        time(reps, || {
            let mut paths: Vec<_> = std::fs::read_dir(&small)
                .unwrap()
                .map(|e| e.unwrap().path())
                .collect();
            paths.sort();
            let mut rec = csv::ByteRecord::new();
            let n: usize = paths.iter().map(|p| count_byte_records(p, &mut rec)).sum();
            n as f64
        }),
    );
    comparisons.push(compare(
        "CSV directory of small files → typed records",
        ours,
        Some(base),
        "-",
        None,
        &format!("{files} files of 10 rows; one file open at a time"),
    ));
    let _ = std::fs::remove_dir_all(&small);

    // velo pipe end to end, CSV → JSON Lines, with peak memory.
    eprintln!("velo-bench: pipe_e2e");
    let out = dir.join("out.jsonl");
    let bytes = std::fs::metadata(&csv_path).unwrap().len() as f64;
    let mut peak = 0f64;
    let ((runs, _), _) = time(reps, || {
        let (_, rss) = run_pipe(&args.velo, &csv_path, &out);
        peak = peak.max(rss);
        rows as f64
    });
    let mut pipe = measure("velo pipe CSV → JSONL", "records", (runs, rows as f64));
    pipe.peak_rss_mib = Some(peak);
    let mb_s = bytes / 1e6 / pipe.median();
    comparisons.push(compare(
        "velo pipe file → file",
        pipe,
        None,
        "-",
        None,
        &format!("{mb_s:.1} MB/s of CSV input"),
    ));

    // Streaming a large file (over 1 GB) stays small in memory.
    let big_rows = if args.quick { 1_800_000 } else { 18_000_000 };
    eprintln!("velo-bench: stream_rss ({big_rows} rows)");
    let big = dir.join("big.csv");
    write_trades_csv(&big, big_rows);
    let big_bytes = std::fs::metadata(&big).unwrap().len() as f64;
    let (secs, rss) = run_pipe(&args.velo, &big, &out);
    let _ = std::fs::remove_file(&big);
    let mut stream = measure(
        &format!("velo pipe of {:.0} MB", big_bytes / 1e6),
        "bytes",
        (vec![secs], big_bytes),
    );
    stream.peak_rss_mib = Some(rss);
    let met = rss < 100.0;
    let mut c = compare(
        "streaming memory",
        stream,
        None,
        "peak RSS < 100 MB",
        None,
        &format!("{rss:.1} MiB peak"),
    );
    c.met = Some(met);
    comparisons.push(c);

    // Tail latency, append → record.
    eprintln!("velo-bench: tail_latency");
    let lines = if args.quick { 500 } else { 2000 };
    let mut lat = tail_latency(rt, dir, lines);
    let (p50, p99) = (percentile(&mut lat, 0.5), percentile(&mut lat, 0.99));
    let tail = Measure {
        name: "append → record latency".into(),
        runs: vec![p50 / 1000.0, p99 / 1000.0],
        units: lat.len() as f64,
        unit: "records".into(),
        peak_rss_mib: None,
        rss_in_process: false,
    };
    let mut c = compare(
        "file tail latency",
        tail,
        None,
        "p99 < 50 ms",
        None,
        &format!("p50 {p50:.2} ms, p99 {p99:.2} ms over {} lines", lat.len()),
    );
    c.met = Some(p99 < 50.0);
    comparisons.push(c);
}

fn postgres_workloads(
    args: &Args,
    rt: &tokio::runtime::Runtime,
    comparisons: &mut Vec<Comparison>,
) {
    match std::env::var("VELO_TEST_PG_URL") {
        Ok(url) => {
            let rows = if args.quick { 100_000 } else { 300_000 };
            let reps = if args.quick { 2 } else { 3 };
            eprintln!("velo-bench: PostgreSQL CDC ({rows} inserts)");
            let (ours, bare) = pg::run(rt, &url, rows, reps);
            let rate = ours.rate();
            let mut c = compare(
                "PostgreSQL CDC",
                ours,
                Some(bare),
                "≥ 0.8× pg_recvlogical and > 100k changes/s",
                Some(0.8),
                "pgoutput decoded to records vs pg_recvlogical to /dev/null; same WAL, slot per run",
            );
            c.met = c.met.map(|m| m && rate > 100_000.0);
            comparisons.push(c);
        }
        Err(_) => eprintln!(
            "velo-bench: VELO_TEST_PG_URL is not set; run through `cargo xtask bench` to include PostgreSQL"
        ),
    }
}

fn clickhouse_workloads(args: &Args, dir: &Path, comparisons: &mut Vec<Comparison>) {
    let (Ok(url), Ok(port)) = (
        std::env::var("VELO_TEST_CLICKHOUSE_URL"),
        std::env::var("VELO_TEST_CLICKHOUSE_TCP_PORT"),
    ) else {
        eprintln!(
            "velo-bench: VELO_TEST_CLICKHOUSE_URL is not set; run through `cargo xtask bench` to include ClickHouse"
        );
        return;
    };
    let rows = if args.quick { 300_000 } else { 1_000_000 };
    let reps = if args.quick { 2 } else { 3 };
    eprintln!("velo-bench: ClickHouse ({rows} rows)");
    let (ours, bare, floor) = clickhouse::run(&args.velo, dir, &url, &port, rows, reps);
    let note = format!(
        "JSON Lines file → table, velo pipe (decode, Native blocks, HTTP; loopback, so no gzip) vs clickhouse-client (native protocol); \
         velo pipe of the same file into a file: {:.0} krows/s (median {:.3}s)",
        floor.rate() / 1e3,
        floor.median()
    );
    comparisons.push(compare(
        "ClickHouse sink",
        ours,
        Some(bare),
        "≥ 0.8× clickhouse-client",
        Some(0.8),
        &note,
    ));
}

fn s3_workloads(args: &Args, rt: &tokio::runtime::Runtime, comparisons: &mut Vec<Comparison>) {
    if std::env::var("VELO_TEST_S3_ENDPOINT").is_err() {
        eprintln!(
            "velo-bench: VELO_TEST_S3_ENDPOINT is not set; run through `cargo xtask bench` to include S3"
        );
        return;
    }
    let objects = if args.quick { 60 } else { 200 };
    let reps = if args.quick { 2 } else { 3 };
    eprintln!("velo-bench: S3 ({objects} objects of ~190 KB)");
    let (ours, bare) = s3::run(rt, objects, reps);
    comparisons.push(compare(
        "S3 source",
        ours,
        Some(bare),
        "≥ 1.0× sequential boto3",
        Some(1.0),
        "JSONL decoded to records, 8 downloads ahead, vs boto3 bytes only; moto server",
    ));
}

fn kafka_workloads(args: &Args, rt: &tokio::runtime::Runtime, comparisons: &mut Vec<Comparison>) {
    match std::env::var("VELO_TEST_KAFKA_BROKERS") {
        Ok(brokers) => {
            let messages = if args.quick { 200_000 } else { 1_000_000 };
            let kreps = if args.quick { 1 } else { 3 };
            eprintln!("velo-bench: kafka ({messages} messages of 100 bytes)");
            let (sink, bare_producer, source, bare_consumer) =
                kafka::run(rt, &brokers, messages, kreps);
            comparisons.push(compare(
                "Kafka sink",
                sink,
                Some(bare_producer),
                "≥ 0.9× bare rdkafka producer",
                Some(0.9),
                "idempotent, acks=all, linger 5 ms",
            ));
            comparisons.push(compare(
                "Kafka source",
                source,
                Some(bare_consumer),
                "≥ 0.9× bare rdkafka consumer",
                Some(0.9),
                "format=raw, bounded",
            ));
        }
        Err(_) => eprintln!(
            "velo-bench: VELO_TEST_KAFKA_BROKERS is not set; run through `cargo xtask bench` to include Kafka"
        ),
    }
}

fn machine() -> String {
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let mem = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            m.lines()
                .next()
                .and_then(|l| l.split_whitespace().nth(1)?.parse::<f64>().ok())
        })
        .map_or(0.0, |kib| kib / 1024.0 / 1024.0);
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| {
            c.lines()
                .find(|l| l.starts_with("model name"))
                .map(|l| l.split(':').nth(1).unwrap_or("").trim().to_owned())
        })
        .unwrap_or_default();
    format!("{cores} cores ({cpu}), {mem:.0} GiB")
}

fn chrono_like_now() -> String {
    let out = Command::new("date")
        .args(["-u", "+%Y-%m-%d %H:%M UTC"])
        .output();
    out.map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_default()
}

fn fmt_rate(m: &Measure) -> String {
    let r = m.rate();
    let s = if r >= 1e6 {
        format!("{:.2} M", r / 1e6)
    } else {
        format!("{:.0} k", r / 1e3)
    };
    format!(
        "{s}{}/s (median {:.3}s, min {:.3}s)",
        m.unit,
        m.median(),
        m.min()
    )
}

fn markdown(r: &Report) -> String {
    let mut s = format!(
        "Benchmarks of {} on {}{}, {} repetitions each.\n\n| workload | ours | baseline | ratio | target | met | notes |\n|---|---|---|---|---|---|---|\n",
        r.date,
        r.machine,
        if r.quick { " (--quick)" } else { "" },
        r.repetitions
    );
    for c in &r.comparisons {
        let ours = if c.workload == "file tail latency" {
            format!(
                "p50 {:.2} ms, p99 {:.2} ms",
                c.ours.runs[0] * 1000.0,
                c.ours.runs[1] * 1000.0
            )
        } else {
            c.ours.describe()
        };
        let base = c.baseline.as_ref().map_or("-".into(), Measure::describe);
        let ratio = c.ratio.map_or("-".into(), |x| format!("{x:.2}"));
        let met = match c.met {
            Some(true) => "yes",
            Some(false) => "**missed**",
            None => "-",
        };
        s.push_str(&format!(
            "| {} | {ours} | {base} | {ratio} | {} | {met} | {} |\n",
            c.workload, c.target, c.note
        ));
    }
    s
}
