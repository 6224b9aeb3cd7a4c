//! [`Rows`]: the values of a batch of records, row after row, as a decoder
//! writes them for records rather than columns.
//!
//! [`ColumnBatch::into_records`](crate::columns::ColumnBatch::into_records)
//! copies each column's cells into one block of values that its records
//! share. A decoder that writes each cell straight into that block skips
//! the columns and the copy: [`Decoder::decode_rows`](crate::format::Decoder::decode_rows)
//! fills a `Rows`, and [`Rows::into_records`] makes its records.
//!
//! ```
//! use std::sync::Arc;
//! use velo_datasource_core::columns::RowMeta;
//! use velo_datasource_core::rows::Rows;
//! use velo_datasource_core::{DataType, FieldDefinition, FieldValue, Schema};
//!
//! let schema = Arc::new(Schema::new(vec![
//!     FieldDefinition::new("id", DataType::Integer, false),
//!     FieldDefinition::new("name", DataType::String, true),
//! ]));
//! let mut rows = Rows::new(schema);
//! rows.push_row(vec![1.into(), "a".into()]).unwrap();
//! rows.push_row(vec![2.into(), FieldValue::Null]).unwrap();
//! let meta = |offset| RowMeta {
//!     offset,
//!     partition: 0,
//!     timestamp: chrono::Utc::now(),
//!     event_time: None,
//! };
//! let records = rows.into_records(&[meta(1), meta(2)]).unwrap();
//! assert_eq!(records[1].get("id"), Some(&FieldValue::Integer(2)));
//! assert!(records[1].get("name").unwrap().is_null());
//! ```

use std::sync::Arc;

use chrono::{DateTime, Utc};
use compact_str::CompactString;

use crate::columns::{BatchSink, ColumnSink, RowMeta};
use crate::error::{Error, Result};
use crate::record::{Block, Headers, StreamRecord};
use crate::schema::Schema;
use crate::value::FieldValue;

/// The values of a batch being built, row after row. See the module docs.
#[derive(Debug, Clone, PartialEq)]
pub struct Rows {
    schema: Arc<Schema>,
    width: usize,
    /// Complete rows, then the cells of rows a decoder has begun (`Null`
    /// until written).
    values: Vec<FieldValue>,
    rows: usize,
    /// Whether any value written owns heap memory (see [`Block`]); it may
    /// stay `true` after the value is taken back, which only costs a drop
    /// call per value when the block is freed.
    owns_heap: bool,
}

impl Rows {
    /// Empty rows of `schema`.
    pub fn new(schema: Arc<Schema>) -> Self {
        Rows {
            width: schema.len(),
            schema,
            values: Vec::new(),
            rows: 0,
            owns_heap: false,
        }
    }

    /// The schema the rows follow.
    pub fn schema(&self) -> &Arc<Schema> {
        &self.schema
    }

    /// The number of complete rows.
    pub fn rows(&self) -> usize {
        self.rows
    }

    /// Appends one row of values in schema order.
    pub fn push_row(&mut self, values: Vec<FieldValue>) -> Result<()> {
        if values.len() != self.width {
            return Err(Error::Schema(format!(
                "row has {} values but the schema has {} fields",
                values.len(),
                self.width
            )));
        }
        self.truncate(self.rows);
        self.owns_heap |= values.iter().any(FieldValue::owns_heap);
        self.values.extend(values);
        self.rows += 1;
        Ok(())
    }

    /// Keeps the first `rows` complete rows, dropping any begun after them.
    pub fn truncate(&mut self, rows: usize) {
        self.rows = self.rows.min(rows);
        self.values.truncate(self.rows * self.width);
    }

    /// The records of the rows, one per `meta` in order, sharing one block
    /// of values as [`ColumnBatch::into_records`](crate::columns::ColumnBatch::into_records)'s do.
    /// Fails unless there is one `meta` per complete row.
    pub fn into_records(self, meta: &[RowMeta]) -> Result<Vec<StreamRecord>> {
        self.into_records_with(meta.iter().cloned())
    }

    /// [`into_records`](Self::into_records) with each row's metadata made
    /// as its record is: a reader whose rows differ only in their offsets
    /// keeps just those, not a metadata row per record.
    pub fn into_records_with(
        mut self,
        meta: impl ExactSizeIterator<Item = RowMeta>,
    ) -> Result<Vec<StreamRecord>> {
        if meta.len() != self.rows {
            return Err(Error::Schema(format!(
                "{} rows of values but {} rows of metadata",
                self.rows,
                meta.len()
            )));
        }
        self.truncate(self.rows);
        let block = Block::new(self.schema, self.values, self.owns_heap);
        Ok(meta
            .enumerate()
            .map(|(row, meta)| {
                StreamRecord::from_block(block.clone(), row, &meta, None, Headers::new())
            })
            .collect())
    }
}

impl BatchSink for Rows {
    type Column<'a> = RowsColumn<'a>;

    fn schema(&self) -> &Arc<Schema> {
        &self.schema
    }

    fn rows(&self) -> usize {
        self.rows
    }

    /// Room for `n` more rows; their cells are set to `Null` a block at a
    /// time, by [`begin_block`](BatchSink::begin_block).
    fn begin_rows(&mut self, n: usize, _text: impl Fn(usize) -> usize) {
        self.truncate(self.rows);
        self.values.reserve(n * self.width);
    }

    /// The block's cells, `Null` until a column writes them. Set just
    /// before the block is typed, they are still in the L1 cache when it
    /// is; set for the whole call at once, they were not.
    #[inline(always)]
    fn begin_block(&mut self, n: usize) {
        // Not `resize(.., Null)`: that clones through `FieldValue::clone`,
        // a call per cell.
        self.values
            .extend(std::iter::repeat_with(|| FieldValue::Null).take(n * self.width));
    }

    #[inline(always)]
    fn column(&mut self, i: usize) -> RowsColumn<'_> {
        let start = (self.rows * self.width + i).min(self.values.len());
        RowsColumn {
            cells: self.values[start..].iter_mut().step_by(self.width.max(1)),
            owns_heap: false,
            rows_own_heap: &mut self.owns_heap,
        }
    }

    fn end_rows(&mut self, n: usize) {
        self.rows += n;
        debug_assert!(self.rows * self.width <= self.values.len());
    }

    fn truncate(&mut self, rows: usize) {
        Rows::truncate(self, rows);
    }
}

/// One column of begun [`Rows`]: each cell written goes to the next row.
pub(crate) struct RowsColumn<'a> {
    cells: std::iter::StepBy<std::slice::IterMut<'a, FieldValue>>,
    /// Whether a value written owns heap memory, told to the rows when the
    /// column is done: a flag of its own stays in a register, where the
    /// rows' flag was read and written back for each text cell.
    owns_heap: bool,
    rows_own_heap: &'a mut bool,
}

impl Drop for RowsColumn<'_> {
    fn drop(&mut self) {
        *self.rows_own_heap |= self.owns_heap;
    }
}

impl RowsColumn<'_> {
    /// The next row's cell, which holds `Null`.
    #[inline(always)]
    fn next_cell(&mut self) -> &mut FieldValue {
        self.cells
            .next()
            .expect("a cell is written only in a begun row")
    }
}

/// Writes `value` over a `Null` `cell`.
///
/// The cell is taken before the value is built, and nothing that could
/// panic comes between, so the value is built in place: built first, it
/// went through the stack (to be dropped if taking the cell panicked), and
/// its 16-byte reload waited on the narrow stores that built it (`perf
/// annotate`: half of the decoder's own time). A `Null` owns nothing, so
/// the one replaced is forgotten rather than dropped.
#[inline(always)]
fn put(cell: &mut FieldValue, value: FieldValue) {
    std::mem::forget(std::mem::replace(cell, value));
}

impl ColumnSink for RowsColumn<'_> {
    #[inline(always)]
    fn push_integer(&mut self, v: i64) {
        put(self.next_cell(), FieldValue::Integer(v));
    }

    #[inline(always)]
    fn push_float(&mut self, v: f64) {
        put(self.next_cell(), FieldValue::Float(v));
    }

    #[inline(always)]
    fn push_boolean(&mut self, v: bool) {
        put(self.next_cell(), FieldValue::Boolean(v));
    }

    #[inline(always)]
    fn push_timestamp(&mut self, v: DateTime<Utc>) {
        put(self.next_cell(), FieldValue::Timestamp(v));
    }

    #[inline(always)]
    fn push_str(&mut self, v: &str) {
        self.owns_heap |= v.len() > MAX_INLINE;
        put(self.next_cell(), FieldValue::String(v.into()));
    }

    #[inline(always)]
    fn push_null(&mut self) {
        // The cell already holds `Null`.
        self.next_cell();
    }

    fn push(&mut self, v: FieldValue) {
        self.owns_heap |= v.owns_heap();
        put(self.next_cell(), v);
    }
}

/// The longest text a `CompactString` keeps inline.
const MAX_INLINE: usize = std::mem::size_of::<CompactString>();

#[cfg(test)]
mod tests {
    use super::*;
    use crate::schema::{DataType, FieldDefinition};

    fn schema() -> Arc<Schema> {
        Arc::new(Schema::new(vec![
            FieldDefinition::new("i", DataType::Integer, true),
            FieldDefinition::new("s", DataType::String, true),
        ]))
    }

    fn meta(offset: i64) -> RowMeta {
        RowMeta {
            offset,
            partition: 0,
            timestamp: DateTime::UNIX_EPOCH,
            event_time: None,
        }
    }

    #[test]
    fn cells_written_by_column_make_the_rows_records() {
        let mut rows = Rows::new(schema());
        rows.push_row(vec![0.into(), "zero".into()]).unwrap();
        rows.begin_rows(2, |_| 0);
        rows.begin_block(2);
        let mut ints = rows.column(0);
        ints.push_integer(1);
        ints.push_null();
        drop(ints);
        assert!(!rows.owns_heap);
        let long = "a text longer than twenty-four bytes";
        let mut texts = rows.column(1);
        texts.push_str("one");
        texts.push_str(long);
        // The column tells the rows that a value owns heap memory.
        drop(texts);
        rows.end_rows(2);
        assert!(rows.owns_heap);
        // A row begun and taken back leaves nothing.
        rows.begin_rows(1, |_| 0);
        rows.begin_block(1);
        rows.column(0).push_integer(9);
        rows.truncate(3);
        let records = rows.into_records(&[meta(0), meta(1), meta(2)]).unwrap();
        let values: Vec<_> = records.iter().map(|r| r.values().to_vec()).collect();
        assert_eq!(
            values,
            vec![
                vec![0.into(), "zero".into()],
                vec![1.into(), "one".into()],
                vec![FieldValue::Null, long.into()],
            ]
        );
        assert_eq!(records[2].offset, 2);
    }

    #[test]
    fn rows_and_metadata_must_match() {
        let mut rows = Rows::new(schema());
        assert!(rows.push_row(vec![1.into()]).is_err());
        rows.push_row(vec![1.into(), "a".into()]).unwrap();
        let err = rows.clone().into_records(&[]).unwrap_err();
        assert!(err.to_string().contains("1 rows of values but 0"), "{err}");
        rows.truncate(0);
        assert_eq!(rows.into_records(&[]).unwrap(), vec![]);
    }
}
