//! Where a batch of good records goes: one [`StreamRecord`] each
//! (`read_batch`), or columns (`read_columns`). The reader's loop over files,
//! positions and bad records is the same for both.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use velo_datasource_core::columns::{ColumnBatch, Columns, RowMeta};
use velo_datasource_core::{EventTimeExtractor, FieldValue, Schema, StreamRecord};

/// A batch being filled.
pub(crate) trait Output {
    /// Good records so far.
    fn len(&self) -> usize;

    /// Columns of `schema` for the decoder to append to, if this output
    /// takes columns.
    fn columns_for(&mut self, schema: &Arc<Schema>) -> Option<&mut Columns>;

    /// The next good record, at line `offset`: its values, or `None` when
    /// the decoder already appended them to the columns.
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
}

impl std::fmt::Debug for Unclaimed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let kind = match self {
            Unclaimed::Records(_) => "records",
            Unclaimed::Columns(_) => "columns",
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

    fn columns_for(&mut self, _: &Arc<Schema>) -> Option<&mut Columns> {
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
            Unclaimed::Columns(c) => {
                let now = c.now;
                Records {
                    records: c
                        .finish(event_time)
                        .into_iter()
                        .flat_map(ColumnBatch::into_records)
                        .collect(),
                    now,
                }
            }
        }
    }
}

/// Column batches, a new one wherever the schema changes (a directory of
/// files with different headers; files with the same columns share one).
pub(crate) struct ColumnsOut {
    done: Vec<ColumnBatch>,
    current: Option<(Columns, Vec<RowMeta>)>,
    rows: usize,
    /// The most rows the batch may hold.
    max: usize,
    now: DateTime<Utc>,
    /// The first batches of `done`, whose event times are already set (a
    /// kept batch of records).
    timed: usize,
}

impl ColumnsOut {
    pub(crate) fn new(max: usize) -> Self {
        ColumnsOut {
            done: Vec::new(),
            current: None,
            rows: 0,
            max,
            now: Utc::now(),
            timed: 0,
        }
    }

    /// The current batch, a new one if it does not follow `schema`.
    fn batch_for(&mut self, schema: &Arc<Schema>) -> &mut (Columns, Vec<RowMeta>) {
        let same = self
            .current
            .as_ref()
            .is_some_and(|(c, _)| Arc::ptr_eq(c.schema(), schema) || **c.schema() == **schema);
        if !same {
            self.close();
            // Row metadata for the rest of the batch at once, as in `Records::new`.
            let rows = Vec::with_capacity(self.max.saturating_sub(self.rows).min(1 << 20));
            self.current = Some((Columns::new(schema.clone()), rows));
        }
        self.current.as_mut().expect("set above")
    }

    fn close(&mut self) {
        if let Some((columns, rows)) = self.current.take()
            && !rows.is_empty()
        {
            let batch =
                ColumnBatch::new(columns, rows).expect("one metadata row per row of values");
            self.done.push(batch);
        }
    }

    /// The batches, with event times set.
    pub(crate) fn finish(
        mut self,
        event_time: &mut Option<EventTimeExtractor>,
    ) -> Vec<ColumnBatch> {
        self.close();
        if let Some(et) = event_time {
            for batch in &mut self.done[self.timed..] {
                et.apply_to_batch(batch);
            }
        }
        self.done
    }
}

impl Output for ColumnsOut {
    fn len(&self) -> usize {
        self.rows
    }

    fn columns_for(&mut self, schema: &Arc<Schema>) -> Option<&mut Columns> {
        Some(&mut self.batch_for(schema).0)
    }

    fn accept(
        &mut self,
        values: Option<(Arc<Schema>, Vec<FieldValue>)>,
        offset: i64,
        _: &mut Option<EventTimeExtractor>,
    ) {
        let now = self.now;
        let (columns, rows) = match values {
            Some((schema, values)) => {
                let batch = self.batch_for(&schema);
                batch
                    .0
                    .push_row(values)
                    .expect("a decoder's values follow its schema");
                batch
            }
            None => self
                .current
                .as_mut()
                .expect("the decoder appended to the current batch"),
        };
        rows.push(RowMeta {
            offset,
            partition: 0,
            timestamp: now,
            event_time: None,
        });
        debug_assert!(columns.rows() >= rows.len());
        self.rows += 1;
    }

    fn stop(&mut self) {
        if let Some((columns, rows)) = &mut self.current {
            columns.truncate(rows.len());
        }
    }

    fn into_unclaimed(self) -> Unclaimed {
        Unclaimed::Columns(self)
    }

    fn from_unclaimed(kept: Unclaimed, _: &mut Option<EventTimeExtractor>) -> Self {
        match kept {
            Unclaimed::Columns(c) => c,
            // Event times were set as the records were accepted.
            Unclaimed::Records(r) => {
                let done = ColumnBatch::from_records(r.records);
                let rows = done.iter().map(ColumnBatch::len).sum();
                ColumnsOut {
                    rows,
                    max: rows,
                    timed: done.len(),
                    done,
                    current: None,
                    now: r.now,
                }
            }
        }
    }
}
