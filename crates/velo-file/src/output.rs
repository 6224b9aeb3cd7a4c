//! Where a batch of good records goes: one [`StreamRecord`] each
//! (`read_batch`), columns (`read_columns`), or, for a decoder that writes
//! values in place, rows that become records (`read_batch` of CSV). The
//! reader's loop over files, positions and bad records is the same for all.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use velo_datasource_core::columns::{ColumnBatch, Columns, RowMeta};
use velo_datasource_core::format::{Decoder, Span};
use velo_datasource_core::rows::Rows;
use velo_datasource_core::{EventTimeExtractor, FieldValue, Schema, StreamRecord};

/// A batch being filled.
pub(crate) trait Output {
    /// Good records so far.
    fn len(&self) -> usize;

    /// Where the decoder is to write the values of `schema`'s records, if
    /// this output takes them from the decoder.
    fn sink_for(&mut self, schema: &Arc<Schema>) -> Option<Sink<'_>>;

    /// The next good record, at line `offset`: its values, or `None` when
    /// the decoder already wrote them to the sink.
    fn accept(
        &mut self,
        values: Option<(Arc<Schema>, Vec<FieldValue>)>,
        offset: i64,
        event_time: &mut Option<EventTimeExtractor>,
    );

    /// The batch ends before the rows decoded past the last accepted record.
    fn stop(&mut self);

    /// This batch, kept for a later call of either kind: its caller went
    /// away while a blocking pass filled it.
    fn into_unclaimed(self) -> Unclaimed;

    /// A kept batch as this kind of output, event times set.
    fn from_unclaimed(kept: Unclaimed, event_time: &mut Option<EventTimeExtractor>) -> Self;
}

/// A batch read by a blocking pass whose caller's future was dropped (a
/// timeout, a `select!`): the next read hands it out, so nothing is lost.
pub(crate) enum Unclaimed {
    Records(Records),
    Columns(ColumnsOut),
    Rows(RowsOut),
}

impl std::fmt::Debug for Unclaimed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let kind = match self {
            Unclaimed::Records(_) => "records",
            Unclaimed::Columns(_) => "columns",
            Unclaimed::Rows(_) => "rows",
        };
        write!(f, "Unclaimed({} {kind})", self.len())
    }
}

impl Unclaimed {
    /// Good records in the batch.
    pub(crate) fn len(&self) -> usize {
        match self {
            Unclaimed::Records(r) => r.len(),
            Unclaimed::Columns(c) => c.len(),
            Unclaimed::Rows(r) => r.len(),
        }
    }
}

/// Records, one per row.
pub(crate) struct Records {
    pub(crate) records: Vec<StreamRecord>,
    now: DateTime<Utc>,
}

impl Records {
    pub(crate) fn new(max: usize) -> Self {
        // The whole batch at once: growing a vector of records by doubling
        // copies them and touches fresh pages at each step (perf showed it at
        // a tenth of decoding with 100,000-record batches), while capacity
        // that is never filled is never touched, so never resident.
        Records {
            records: Vec::with_capacity(max.min(1 << 20)),
            now: Utc::now(),
        }
    }
}

impl Output for Records {
    fn len(&self) -> usize {
        self.records.len()
    }

    fn sink_for(&mut self, _: &Arc<Schema>) -> Option<Sink<'_>> {
        None
    }

    fn accept(
        &mut self,
        values: Option<(Arc<Schema>, Vec<FieldValue>)>,
        offset: i64,
        event_time: &mut Option<EventTimeExtractor>,
    ) {
        let Some((schema, values)) = values else {
            unreachable!("records output never hands out columns");
        };
        let mut record = StreamRecord::from_parts_at(schema, values, self.now);
        record.offset = offset;
        if let Some(et) = event_time {
            et.apply(&mut record);
        }
        self.records.push(record);
    }

    fn stop(&mut self) {}

    fn into_unclaimed(self) -> Unclaimed {
        Unclaimed::Records(self)
    }

    fn from_unclaimed(kept: Unclaimed, event_time: &mut Option<EventTimeExtractor>) -> Self {
        match kept {
            Unclaimed::Records(r) => r,
            Unclaimed::Columns(c) => Records {
                now: c.now,
                records: c
                    .finish(event_time)
                    .into_iter()
                    .flat_map(ColumnBatch::into_records)
                    .collect(),
            },
            Unclaimed::Rows(r) => Records {
                now: r.now,
                records: r.records(event_time),
            },
        }
    }
}

/// Where a decoder writes the values of a batch's good records.
pub(crate) enum Sink<'a> {
    Columns(&'a mut Columns),
    Rows(&'a mut Rows),
}

impl Sink<'_> {
    /// [`Decoder::decode_columns`] or [`Decoder::decode_rows`].
    pub(crate) fn decode(
        &mut self,
        decoder: &mut dyn Decoder,
        input: &[u8],
        eof: bool,
        max: usize,
        spans: &mut Vec<Span>,
    ) -> Option<usize> {
        match self {
            Sink::Columns(c) => decoder.decode_columns(input, eof, max, spans, c),
            Sink::Rows(r) => decoder.decode_rows(input, eof, max, spans, r),
        }
    }
}

/// The values of a batch being filled, of one schema: columns or rows.
pub(crate) trait Filling: Sized {
    /// What the values and their rows' metadata become.
    type Batch;

    fn new(schema: Arc<Schema>) -> Self;

    fn schema(&self) -> &Arc<Schema>;

    fn push_row(&mut self, values: Vec<FieldValue>);

    fn truncate(&mut self, rows: usize);

    fn sink(&mut self) -> Sink<'_>;

    /// The batch of the values, with one of `offsets` per row, all read
    /// at `now` (the rows of a file differ only in their offsets, so only
    /// those are kept while the batch fills).
    fn close(self, offsets: Vec<i64>, now: DateTime<Utc>) -> Self::Batch;

    fn len(batch: &Self::Batch) -> usize;

    fn set_event_times(batch: &mut Self::Batch, event_time: &mut EventTimeExtractor);

    /// `batches` kept for a later call.
    fn keep(batches: Batches<Self>) -> Unclaimed;

    /// A kept batch of any kind as batches of this kind, event times set.
    fn from_kept(kept: Unclaimed, event_time: &mut Option<EventTimeExtractor>) -> Batches<Self>;
}

impl Filling for Columns {
    type Batch = ColumnBatch;

    fn new(schema: Arc<Schema>) -> Self {
        Columns::new(schema)
    }

    fn schema(&self) -> &Arc<Schema> {
        Columns::schema(self)
    }

    fn push_row(&mut self, values: Vec<FieldValue>) {
        Columns::push_row(self, values).expect("a decoder's values follow its schema");
    }

    fn truncate(&mut self, rows: usize) {
        Columns::truncate(self, rows);
    }

    fn sink(&mut self) -> Sink<'_> {
        Sink::Columns(self)
    }

    fn close(self, offsets: Vec<i64>, now: DateTime<Utc>) -> ColumnBatch {
        let rows = offsets.into_iter().map(|o| row_meta(o, now)).collect();
        ColumnBatch::new(self, rows).expect("one metadata row per row of values")
    }

    fn len(batch: &ColumnBatch) -> usize {
        batch.len()
    }

    fn set_event_times(batch: &mut ColumnBatch, event_time: &mut EventTimeExtractor) {
        event_time.apply_to_batch(batch);
    }

    fn keep(batches: ColumnsOut) -> Unclaimed {
        Unclaimed::Columns(batches)
    }

    fn from_kept(kept: Unclaimed, event_time: &mut Option<EventTimeExtractor>) -> ColumnsOut {
        match kept {
            Unclaimed::Columns(c) => c,
            // Event times were set as the records were accepted.
            Unclaimed::Records(r) => Batches::of_timed(ColumnBatch::from_records(r.records), r.now),
            Unclaimed::Rows(r) => {
                let now = r.now;
                Batches::of_timed(ColumnBatch::from_records(r.records(event_time)), now)
            }
        }
    }
}

impl Filling for Rows {
    type Batch = Vec<StreamRecord>;

    fn new(schema: Arc<Schema>) -> Self {
        Rows::new(schema)
    }

    fn schema(&self) -> &Arc<Schema> {
        Rows::schema(self)
    }

    fn push_row(&mut self, values: Vec<FieldValue>) {
        Rows::push_row(self, values).expect("a decoder's values follow its schema");
    }

    fn truncate(&mut self, rows: usize) {
        Rows::truncate(self, rows);
    }

    fn sink(&mut self) -> Sink<'_> {
        Sink::Rows(self)
    }

    fn close(self, offsets: Vec<i64>, now: DateTime<Utc>) -> Vec<StreamRecord> {
        self.into_records_with(offsets.into_iter().map(|o| row_meta(o, now)))
            .expect("one metadata row per row of values")
    }

    fn len(batch: &Vec<StreamRecord>) -> usize {
        batch.len()
    }

    fn set_event_times(batch: &mut Vec<StreamRecord>, event_time: &mut EventTimeExtractor) {
        for record in batch {
            event_time.apply(record);
        }
    }

    fn keep(batches: RowsOut) -> Unclaimed {
        Unclaimed::Rows(batches)
    }

    fn from_kept(kept: Unclaimed, event_time: &mut Option<EventTimeExtractor>) -> RowsOut {
        match kept {
            Unclaimed::Rows(r) => r,
            Unclaimed::Records(r) => Batches::of_timed(vec![r.records], r.now),
            Unclaimed::Columns(c) => {
                let now = c.now;
                let done = c
                    .finish(event_time)
                    .into_iter()
                    .map(ColumnBatch::into_records)
                    .collect();
                Batches::of_timed(done, now)
            }
        }
    }
}

/// The metadata of a file's record at line `offset`, read at `now`.
fn row_meta(offset: i64, now: DateTime<Utc>) -> RowMeta {
    RowMeta {
        offset,
        partition: 0,
        timestamp: now,
        event_time: None,
    }
}

/// Batches whose values the decoder writes (columns, or rows for
/// records), a new one wherever the schema changes (a directory of files
/// with different headers; files with the same columns share one).
pub(crate) struct Batches<F: Filling> {
    done: Vec<F::Batch>,
    /// The batch being filled and its rows' offsets.
    current: Option<(F, Vec<i64>)>,
    rows: usize,
    /// The most rows the batch may hold.
    max: usize,
    now: DateTime<Utc>,
    /// The first batches of `done`, whose event times are already set (a
    /// kept batch of another kind).
    timed: usize,
}

/// Column batches, for `read_columns`.
pub(crate) type ColumnsOut = Batches<Columns>;

/// Records written in place by the decoder, for `read_batch`.
pub(crate) type RowsOut = Batches<Rows>;

impl<F: Filling> Batches<F> {
    pub(crate) fn new(max: usize) -> Self {
        Batches {
            done: Vec::new(),
            current: None,
            rows: 0,
            max,
            now: Utc::now(),
            timed: 0,
        }
    }

    /// Finished batches of another kind of output, their event times set.
    fn of_timed(done: Vec<F::Batch>, now: DateTime<Utc>) -> Self {
        let rows = done.iter().map(F::len).sum();
        Batches {
            rows,
            max: rows,
            timed: done.len(),
            done,
            current: None,
            now,
        }
    }

    /// The current batch, a new one if it does not follow `schema`.
    fn batch_for(&mut self, schema: &Arc<Schema>) -> &mut (F, Vec<i64>) {
        let same = self
            .current
            .as_ref()
            .is_some_and(|(c, _)| Arc::ptr_eq(c.schema(), schema) || **c.schema() == **schema);
        if !same {
            self.close();
            // Offsets for the rest of the batch at once, as in `Records::new`.
            let rows = Vec::with_capacity(self.max.saturating_sub(self.rows).min(1 << 20));
            self.current = Some((F::new(schema.clone()), rows));
        }
        self.current.as_mut().expect("set above")
    }

    /// Appends a record's `values` to the batch of their schema.
    #[inline(never)]
    fn push_values(&mut self, schema: &Arc<Schema>, values: Vec<FieldValue>) -> &mut (F, Vec<i64>) {
        let batch = self.batch_for(schema);
        batch.0.push_row(values);
        batch
    }

    fn close(&mut self) {
        if let Some((values, rows)) = self.current.take()
            && !rows.is_empty()
        {
            self.done.push(values.close(rows, self.now));
        }
    }

    /// The batches, with event times set.
    pub(crate) fn finish(mut self, event_time: &mut Option<EventTimeExtractor>) -> Vec<F::Batch> {
        self.close();
        if let Some(et) = event_time {
            for batch in &mut self.done[self.timed..] {
                F::set_event_times(batch, et);
            }
        }
        self.done
    }
}

impl RowsOut {
    /// The records, with event times set.
    pub(crate) fn records(self, event_time: &mut Option<EventTimeExtractor>) -> Vec<StreamRecord> {
        let mut batches = self.finish(event_time);
        if batches.len() == 1 {
            return batches.pop().unwrap_or_default();
        }
        batches.into_iter().flatten().collect()
    }
}

impl<F: Filling> Output for Batches<F> {
    fn len(&self) -> usize {
        self.rows
    }

    fn sink_for(&mut self, schema: &Arc<Schema>) -> Option<Sink<'_>> {
        Some(self.batch_for(schema).0.sink())
    }

    /// Inlined for the records a decoder wrote to the sink.
    #[inline(always)]
    fn accept(
        &mut self,
        values: Option<(Arc<Schema>, Vec<FieldValue>)>,
        offset: i64,
        _: &mut Option<EventTimeExtractor>,
    ) {
        let (_, rows) = match values {
            Some((schema, values)) => self.push_values(&schema, values),
            None => self
                .current
                .as_mut()
                .expect("the decoder wrote to the current batch"),
        };
        rows.push(offset);
        self.rows += 1;
    }

    fn stop(&mut self) {
        if let Some((values, rows)) = &mut self.current {
            values.truncate(rows.len());
        }
    }

    fn into_unclaimed(self) -> Unclaimed {
        F::keep(self)
    }

    fn from_unclaimed(kept: Unclaimed, event_time: &mut Option<EventTimeExtractor>) -> Self {
        F::from_kept(kept, event_time)
    }
}
