//! Counters, histograms and lag through the `metrics` facade.
//!
//! Nothing is recorded unless the application installs a recorder (the
//! `velo` binary installs a Prometheus one). Handles are created once per
//! source or sink, so the hot path does no label lookups.

use std::time::Duration;

use metrics::{Counter, Gauge, Histogram, counter, gauge, histogram};
use serde::{Deserialize, Serialize};

/// How far a reader is behind its source.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "unit", content = "value", rename_all = "snake_case")]
#[non_exhaustive]
pub enum Lag {
    /// Records not yet read (Kafka: high watermark minus position).
    Records(u64),
    /// Bytes not yet read (files).
    Bytes(u64),
    /// Objects not yet read (object stores).
    Objects(u64),
    /// Age of the newest record read (CDC).
    Time(Duration),
}

impl Lag {
    /// The lag as one number for a gauge (durations in seconds).
    pub fn as_f64(&self) -> f64 {
        match self {
            Lag::Records(n) | Lag::Bytes(n) | Lag::Objects(n) => *n as f64,
            Lag::Time(d) => d.as_secs_f64(),
        }
    }

    /// The unit name used as a metric label.
    pub fn unit(&self) -> &'static str {
        match self {
            Lag::Records(_) => "records",
            Lag::Bytes(_) => "bytes",
            Lag::Objects(_) => "objects",
            Lag::Time(_) => "seconds",
        }
    }
}

/// Metrics of one source: `velo_source_*` with a `source` label.
#[derive(Debug, Clone)]
pub struct SourceMetrics {
    source: String,
    records: Counter,
    bytes: Counter,
    batches: Counter,
    errors: Counter,
    batch_latency: Histogram,
    records_per_read: Histogram,
}

impl SourceMetrics {
    /// Handles labelled `source = name`.
    pub fn new(name: &str) -> Self {
        let l = name.to_owned();
        SourceMetrics {
            records: counter!("velo_source_records_total", "source" => l.clone()),
            bytes: counter!("velo_source_bytes_total", "source" => l.clone()),
            batches: counter!("velo_source_batches_total", "source" => l.clone()),
            errors: counter!("velo_source_errors_total", "source" => l.clone()),
            batch_latency: histogram!("velo_source_batch_seconds", "source" => l.clone()),
            records_per_read: histogram!("velo_source_records_per_batch", "source" => l.clone()),
            source: l,
        }
    }

    /// One batch of `records` records and `bytes` bytes read in `elapsed`.
    pub fn record_batch(&self, records: usize, bytes: u64, elapsed: Duration) {
        self.records.increment(records as u64);
        self.bytes.increment(bytes);
        self.batches.increment(1);
        self.batch_latency.record(elapsed.as_secs_f64());
        self.records_per_read.record(records as f64);
    }

    /// One error (a bad record, a failed read).
    pub fn record_error(&self) {
        self.errors.increment(1);
    }

    /// The lag of `partition` (`"0"` for single-stream sources).
    pub fn set_lag(&self, partition: &str, lag: Lag) {
        let g: Gauge = gauge!(
            "velo_source_lag",
            "source" => self.source.clone(),
            "partition" => partition.to_owned(),
            "unit" => lag.unit()
        );
        g.set(lag.as_f64());
    }
}

/// Metrics of one sink: `velo_sink_*` with a `sink` label.
#[derive(Debug, Clone)]
pub struct SinkMetrics {
    records: Counter,
    bytes: Counter,
    commits: Counter,
    errors: Counter,
    write_latency: Histogram,
    commit_latency: Histogram,
}

impl SinkMetrics {
    /// Handles labelled `sink = name`.
    pub fn new(name: &str) -> Self {
        let l = name.to_owned();
        SinkMetrics {
            records: counter!("velo_sink_records_total", "sink" => l.clone()),
            bytes: counter!("velo_sink_bytes_total", "sink" => l.clone()),
            commits: counter!("velo_sink_commits_total", "sink" => l.clone()),
            errors: counter!("velo_sink_errors_total", "sink" => l.clone()),
            write_latency: histogram!("velo_sink_write_seconds", "sink" => l.clone()),
            commit_latency: histogram!("velo_sink_commit_seconds", "sink" => l),
        }
    }

    /// One batch written.
    pub fn record_write(&self, records: usize, bytes: u64, elapsed: Duration) {
        self.records.increment(records as u64);
        self.bytes.increment(bytes);
        self.write_latency.record(elapsed.as_secs_f64());
    }

    /// One commit.
    pub fn record_commit(&self, elapsed: Duration) {
        self.commits.increment(1);
        self.commit_latency.record(elapsed.as_secs_f64());
    }

    /// One failed write or commit.
    pub fn record_error(&self) {
        self.errors.increment(1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lag_units() {
        assert_eq!(Lag::Time(Duration::from_millis(1500)).as_f64(), 1.5);
        assert_eq!(Lag::Records(3).unit(), "records");
        // Without a recorder installed these are no-ops, and must not panic.
        let m = SourceMetrics::new("t");
        m.record_batch(10, 100, Duration::from_millis(1));
        m.set_lag("0", Lag::Bytes(5));
        SinkMetrics::new("t").record_commit(Duration::from_millis(1));
    }
}
