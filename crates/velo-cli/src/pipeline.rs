//! The delivery protocol, in one place.
//!
//! Each batch: read → write → flush → sink commit → save the source position
//! → reader commit. Sinks that can store the position in their own
//! transaction (`commit_with_position`) get it there, and a restart resumes
//! from what they stored: exactly-once. A position is saved only for records the sink has
//! durably accepted, so a crash at any point loses nothing and repeats at
//! most the batch in flight (at-least-once). A clean stop (end of a bounded
//! source, SIGINT, SIGTERM) commits, checkpoints and closes both ends, so the
//! next run repeats nothing.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use velo_datasource_core::{
    Checkpoint, CheckpointStore, DataSink, DataSource, Error, FileCheckpointStore, Result,
};

use crate::progress::Progress;

/// How a pipeline runs.
pub(crate) struct PipelineOptions {
    /// Records per batch.
    pub(crate) batch_size: usize,
    /// Stop after this many records (over all runs of the same checkpoint).
    pub(crate) limit: Option<u64>,
    /// Checkpoint store and the key of this pipeline.
    pub(crate) checkpoint: Option<(FileCheckpointStore, String)>,
    /// The source as it is named in checkpoints (secrets redacted).
    pub(crate) source_name: String,
    /// Set by SIGINT/SIGTERM: finish the batch in flight, then stop cleanly.
    pub(crate) stop: Arc<AtomicBool>,
    pub(crate) progress: Progress,
}

/// What a run did.
#[derive(Debug, Default)]
pub(crate) struct Summary {
    pub(crate) records: u64,
    pub(crate) total_records: u64,
    pub(crate) elapsed: Duration,
    pub(crate) stopped_by_signal: bool,
    pub(crate) resumed_from: Option<u64>,
}

/// The pipeline's saved checkpoint, checked to belong to this source.
pub(crate) async fn load_checkpoint(opts: &PipelineOptions) -> Result<Option<Checkpoint>> {
    let Some((store, key)) = &opts.checkpoint else {
        return Ok(None);
    };
    let Some(cp) = store.load(key).await? else {
        return Ok(None);
    };
    if cp.source != opts.source_name {
        return Err(Error::Checkpoint {
            path: store.path_of(key)?,
            message: format!(
                "belongs to source `{}`, not `{}`; use another --checkpoint-dir, or move this file away to start over",
                cp.source, opts.source_name
            ),
        });
    }
    Ok(Some(cp))
}

/// Runs `source` into `sink`, resuming from `checkpoint` (see [`load_checkpoint`]).
pub(crate) async fn run(
    source: &dyn DataSource,
    sink: &dyn DataSink,
    checkpoint: Option<Checkpoint>,
    mut opts: PipelineOptions,
) -> Result<Summary> {
    let started = Instant::now();
    let mut summary = Summary::default();
    let mut reader = source.create_reader().await?;
    let mut writer = sink.create_writer().await?;
    if let Some(link) = reader.source_link()
        && writer.link_source(&link)
    {
        tracing::info!("the sink commits the source's position in its own transactions");
    }
    let mut total = 0;
    // A sink that stores positions with its data knows best where it is.
    let stored = writer.committed_position().await?;
    let mut positions_in_sink = true;
    match (checkpoint, stored) {
        (checkpoint, Some(position)) => {
            tracing::info!("resuming from the position stored in the sink");
            reader.restore(position).await?;
            total = checkpoint.map_or(0, |cp| cp.records);
            summary.resumed_from = Some(total);
        }
        (Some(cp), None) => {
            tracing::info!(records = cp.records, "resuming from checkpoint");
            reader.restore(cp.position).await?;
            total = cp.records;
            summary.resumed_from = Some(cp.records);
        }
        (None, None) => {}
    }
    let records_in = metrics::counter!("velo_pipeline_records_in_total");
    let records_out = metrics::counter!("velo_pipeline_records_out_total");
    let batches = metrics::histogram!("velo_pipeline_batch_seconds");
    opts.progress.start(reader.lag());
    let mut last_saved: Option<velo_datasource_core::SourcePosition> = None;

    loop {
        if opts.stop.load(Ordering::SeqCst) {
            summary.stopped_by_signal = true;
            break;
        }
        let want = match opts.limit {
            Some(limit) if total >= limit => break,
            // Never read more than is written: the position must not pass unwritten records.
            Some(limit) => opts.batch_size.min((limit - total) as usize),
            None => opts.batch_size,
        };
        let batch_started = Instant::now();
        let batch = reader.read_batch(want).await?;
        if batch.is_empty() {
            if !reader.has_more().await? {
                break;
            }
            // A position that moved without records (a CDC heartbeat past
            // idle WAL) is saved and committed like any other.
            let position = reader.position()?;
            if !position.is_empty() && last_saved.as_ref() != Some(&position) {
                save_checkpoint(&opts, position.clone(), total).await?;
                reader.commit().await?;
                last_saved = Some(position);
            }
            opts.progress.update(0, reader.lag());
            continue;
        }
        records_in.increment(batch.len() as u64);
        writer.write_batch(&batch).await?;
        writer.flush().await?;
        commit_sink(writer.as_mut(), reader.position()?, &mut positions_in_sink).await?;
        total += batch.len() as u64;
        summary.records += batch.len() as u64;
        let position = reader.position()?;
        save_checkpoint(&opts, position.clone(), total).await?;
        last_saved = Some(position);
        reader.commit().await?;
        records_out.increment(batch.len() as u64);
        batches.record(batch_started.elapsed().as_secs_f64());
        if let Some(lag) = reader.lag() {
            metrics::gauge!("velo_pipeline_lag", "unit" => lag.unit()).set(lag.as_f64());
        }
        opts.progress.update(batch.len() as u64, reader.lag());
    }

    // A clean stop: everything written is committed, positioned and closed.
    commit_sink(writer.as_mut(), reader.position()?, &mut positions_in_sink).await?;
    save_checkpoint(&opts, reader.position()?, total).await?;
    reader.commit().await?;
    writer.close().await?;
    reader.close().await?;
    opts.progress.finish();
    summary.total_records = total;
    summary.elapsed = started.elapsed();
    Ok(summary)
}

/// Commits the sink, with the source position in the same transaction where
/// the sink can store it (exactly-once); plain `commit` otherwise.
async fn commit_sink(
    writer: &mut dyn velo_datasource_core::DataWriter,
    position: velo_datasource_core::SourcePosition,
    positions_in_sink: &mut bool,
) -> Result<()> {
    if *positions_in_sink {
        match writer.commit_with_position(&position).await {
            Err(Error::Unsupported { .. }) => *positions_in_sink = false,
            other => return other,
        }
    }
    writer.commit().await
}

async fn save_checkpoint(
    opts: &PipelineOptions,
    position: velo_datasource_core::SourcePosition,
    total: u64,
) -> Result<()> {
    if let Some((store, key)) = &opts.checkpoint {
        store
            .save(
                key,
                &Checkpoint::new(opts.source_name.clone(), position, total),
            )
            .await?;
    }
    Ok(())
}

/// The checkpoint key of a pipeline: the same source and sink give the same key.
pub(crate) fn checkpoint_key(source: &str, sink: &str) -> String {
    format!(
        "pipe-{:08x}",
        crc32fast::hash(format!("{source}\n{sink}").as_bytes())
    )
}
