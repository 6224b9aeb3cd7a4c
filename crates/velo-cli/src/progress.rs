//! Progress on the terminal: a bar when the source knows its size, a live
//! line of records/s and lag otherwise, nothing when not on a terminal.

use std::io::IsTerminal;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressStyle};
use velo_datasource_core::Lag;

pub(crate) struct Progress {
    bar: Option<ProgressBar>,
    records: u64,
    sized: bool,
    total: u64,
}

impl Progress {
    /// Shown only when stderr is a terminal and `enabled`.
    pub(crate) fn new(enabled: bool) -> Self {
        let bar = (enabled && std::io::stderr().is_terminal()).then(ProgressBar::hidden);
        Progress {
            bar,
            records: 0,
            sized: false,
            total: 0,
        }
    }

    /// Picks a bar or a spinner from the reader's first lag reading.
    pub(crate) fn start(&self, lag: Option<Lag>) {
        let Some(bar) = &self.bar else { return };
        bar.set_draw_target(indicatif::ProgressDrawTarget::stderr());
        bar.enable_steady_tick(Duration::from_millis(200));
        self.restyle(lag);
    }

    fn restyle(&self, lag: Option<Lag>) {
        let Some(bar) = &self.bar else { return };
        match lag {
            Some(Lag::Bytes(_)) => bar.set_style(
                ProgressStyle::with_template(
                    "{bar:40} {bytes}/{total_bytes} {bytes_per_sec} eta {eta} {msg}",
                )
                .unwrap_or_else(|_| ProgressStyle::default_bar()),
            ),
            _ => bar.set_style(
                ProgressStyle::with_template("{spinner} {msg} [{elapsed}]")
                    .unwrap_or_else(|_| ProgressStyle::default_spinner()),
            ),
        }
    }

    pub(crate) fn update(&mut self, records: u64, lag: Option<Lag>) {
        self.records += records;
        let Some(bar) = &self.bar else { return };
        let rate = self.records as f64 / bar.elapsed().as_secs_f64().max(0.001);
        match lag {
            Some(Lag::Bytes(left)) => {
                if !self.sized {
                    self.sized = true;
                    self.restyle(lag);
                }
                // The total grows when files grow; done + left is the best estimate.
                let done = bar.position();
                self.total = self.total.max(done + left);
                bar.set_length(self.total);
                bar.set_position(self.total - left);
                bar.set_message(format!("{} records, {rate:.0}/s", self.records));
            }
            Some(other) => bar.set_message(format!(
                "{} records, {rate:.0}/s, lag {} {}",
                self.records,
                other.as_f64(),
                other.unit()
            )),
            None => bar.set_message(format!("{} records, {rate:.0}/s", self.records)),
        }
    }

    pub(crate) fn finish(&self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }
}
