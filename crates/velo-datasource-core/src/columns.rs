//! [`ColumnBatch`]: records of one schema stored column by column.
//!
//! A [`StreamRecord`] holds a 32-byte tagged [`FieldValue`] per cell, and a
//! record made on its own owns a vector of them. Readers that know their
//! schema up front (CSV) can instead append each cell to its column:
//! integers to a `Vec<i64>`, text to one string buffer per column. That is a
//! handful of allocations per batch, and a record costs little more than its
//! parsing; [`ColumnBatch::into_records`] then makes records that share one
//! block of values per batch. [`DataReader::read_columns`](crate::DataReader::read_columns)
//! returns batches of this kind; every reader has it, natively or by
//! converting its records.
//!
//! ```
//! use std::sync::Arc;
//! use velo_datasource_core::columns::{ColumnBatch, ColumnData};
//! use velo_datasource_core::{DataType, FieldDefinition, FieldValue, Schema, StreamRecord};
//!
//! let schema = Arc::new(Schema::new(vec![
//!     FieldDefinition::new("id", DataType::Integer, false),
//!     FieldDefinition::new("name", DataType::String, true),
//! ]));
//! let records = vec![
//!     StreamRecord::new(schema.clone(), vec![1.into(), "a".into()]).unwrap(),
//!     StreamRecord::new(schema.clone(), vec![2.into(), FieldValue::Null]).unwrap(),
//! ];
//! let batches = ColumnBatch::from_records(records.clone());
//! let batch = &batches[0];
//! assert_eq!(batch.len(), 2);
//! match batch.column(0).data() {
//!     ColumnData::Integer(ids) => assert_eq!(ids, &[1, 2]),
//!     other => panic!("{other:?}"),
//! }
//! assert!(batch.column(1).is_null(1));
//! assert_eq!(batch.clone().into_records(), records);
//! ```

use std::sync::Arc;

use chrono::{DateTime, Utc};

use crate::error::{Error, Result};
use crate::record::{Block, Headers, StreamRecord};
use crate::schema::{DataType, Schema};
use crate::value::FieldValue;

/// The values of one column, stored by type.
///
/// A null row of a typed column holds a placeholder (`0`, `false`, the Unix
/// epoch, empty text); [`Column::is_null`] tells it apart.
#[derive(Debug, Clone, PartialEq)]
pub enum ColumnData {
    /// A `BOOLEAN` column.
    Boolean(Vec<bool>),
    /// An `INTEGER` column.
    Integer(Vec<i64>),
    /// A `FLOAT` column.
    Float(Vec<f64>),
    /// A `TIMESTAMP` column.
    Timestamp(Vec<DateTime<Utc>>),
    /// A `STRING` column.
    Text(TextColumn),
    /// Any other type, or a column whose values did not all have its type:
    /// the values themselves (nulls as [`FieldValue::Null`]).
    Values(Vec<FieldValue>),
}

/// Text values end to end in one buffer.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TextColumn {
    text: String,
    ends: Vec<usize>,
}

impl TextColumn {
    /// Row `i`'s text.
    pub fn get(&self, i: usize) -> &str {
        let start = if i == 0 { 0 } else { self.ends[i - 1] };
        &self.text[start..self.ends[i]]
    }

    /// The number of rows.
    pub fn len(&self) -> usize {
        self.ends.len()
    }

    /// Whether there are no rows.
    pub fn is_empty(&self) -> bool {
        self.ends.is_empty()
    }

    /// Every row's text, in order.
    pub fn iter(&self) -> impl Iterator<Item = &str> {
        self.ends.iter().scan(0, |start, &end| {
            let text = &self.text[*start..end];
            *start = end;
            Some(text)
        })
    }

    #[inline]
    pub(crate) fn push(&mut self, s: &str) {
        self.text.push_str(s);
        self.ends.push(self.text.len());
    }

    fn truncate(&mut self, rows: usize) {
        if rows < self.ends.len() {
            self.text
                .truncate(if rows == 0 { 0 } else { self.ends[rows - 1] });
            self.ends.truncate(rows);
        }
    }
}

/// One column: its values and which rows are null.
#[derive(Debug, Clone, PartialEq)]
pub struct Column {
    data: ColumnData,
    /// `None` until the first null of a typed column.
    nulls: Option<Vec<bool>>,
}

impl Column {
    /// An empty column for values of `data_type`.
    pub fn new(data_type: &DataType) -> Self {
        let data = match data_type {
            DataType::Boolean => ColumnData::Boolean(Vec::new()),
            DataType::Integer => ColumnData::Integer(Vec::new()),
            DataType::Float => ColumnData::Float(Vec::new()),
            DataType::Timestamp => ColumnData::Timestamp(Vec::new()),
            DataType::String => ColumnData::Text(TextColumn::default()),
            _ => ColumnData::Values(Vec::new()),
        };
        Column { data, nulls: None }
    }

    /// The values.
    pub fn data(&self) -> &ColumnData {
        &self.data
    }

    /// The number of rows.
    pub fn len(&self) -> usize {
        match &self.data {
            ColumnData::Boolean(v) => v.len(),
            ColumnData::Integer(v) => v.len(),
            ColumnData::Float(v) => v.len(),
            ColumnData::Timestamp(v) => v.len(),
            ColumnData::Text(t) => t.len(),
            ColumnData::Values(v) => v.len(),
        }
    }

    /// Whether there are no rows.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Whether row `i` is null.
    pub fn is_null(&self, i: usize) -> bool {
        match &self.data {
            ColumnData::Values(v) => v[i].is_null(),
            _ => self.nulls.as_ref().is_some_and(|n| n[i]),
        }
    }

    /// Row `i`'s value.
    pub fn get(&self, i: usize) -> FieldValue {
        if self.is_null(i) {
            return FieldValue::Null;
        }
        match &self.data {
            ColumnData::Boolean(v) => FieldValue::Boolean(v[i]),
            ColumnData::Integer(v) => FieldValue::Integer(v[i]),
            ColumnData::Float(v) => FieldValue::Float(v[i]),
            ColumnData::Timestamp(v) => FieldValue::Timestamp(v[i]),
            ColumnData::Text(t) => FieldValue::String(t.get(i).into()),
            ColumnData::Values(v) => v[i].clone(),
        }
    }

    #[inline]
    pub(crate) fn push_integer(&mut self, v: i64) {
        match &mut self.data {
            ColumnData::Integer(values) => {
                values.push(v);
                self.not_null();
            }
            _ => self.push(FieldValue::Integer(v)),
        }
    }

    #[inline]
    pub(crate) fn push_float(&mut self, v: f64) {
        match &mut self.data {
            ColumnData::Float(values) => {
                values.push(v);
                self.not_null();
            }
            _ => self.push(FieldValue::Float(v)),
        }
    }

    #[inline]
    pub(crate) fn push_boolean(&mut self, v: bool) {
        match &mut self.data {
            ColumnData::Boolean(values) => {
                values.push(v);
                self.not_null();
            }
            _ => self.push(FieldValue::Boolean(v)),
        }
    }

    #[inline]
    pub(crate) fn push_timestamp(&mut self, v: DateTime<Utc>) {
        match &mut self.data {
            ColumnData::Timestamp(values) => {
                values.push(v);
                self.not_null();
            }
            _ => self.push(FieldValue::Timestamp(v)),
        }
    }

    #[inline]
    pub(crate) fn push_str(&mut self, v: &str) {
        match &mut self.data {
            ColumnData::Text(t) => {
                t.push(v);
                self.not_null();
            }
            _ => self.push(FieldValue::String(v.into())),
        }
    }

    /// Marks the row just pushed as not null (only once a null was seen).
    #[inline]
    fn not_null(&mut self) {
        if let Some(n) = &mut self.nulls {
            n.push(false);
        }
    }

    /// Appends a null.
    pub fn push_null(&mut self) {
        let len = self.len();
        match &mut self.data {
            ColumnData::Values(v) => {
                v.push(FieldValue::Null);
                return;
            }
            ColumnData::Boolean(v) => v.push(false),
            ColumnData::Integer(v) => v.push(0),
            ColumnData::Float(v) => v.push(0.0),
            ColumnData::Timestamp(v) => v.push(DateTime::UNIX_EPOCH),
            ColumnData::Text(t) => t.push(""),
        }
        self.nulls
            .get_or_insert_with(|| vec![false; len])
            .push(true);
    }

    /// Appends `value`. A value that is not of the column's type turns the
    /// column into [`ColumnData::Values`], so nothing is lost or coerced.
    pub fn push(&mut self, value: FieldValue) {
        match (&mut self.data, value) {
            (_, FieldValue::Null) => self.push_null(),
            (ColumnData::Boolean(v), FieldValue::Boolean(b)) => {
                v.push(b);
                self.not_null();
            }
            (ColumnData::Integer(v), FieldValue::Integer(i)) => {
                v.push(i);
                self.not_null();
            }
            (ColumnData::Float(v), FieldValue::Float(f)) => {
                v.push(f);
                self.not_null();
            }
            (ColumnData::Timestamp(v), FieldValue::Timestamp(t)) => {
                v.push(t);
                self.not_null();
            }
            (ColumnData::Text(t), FieldValue::String(s)) => {
                t.push(&s);
                self.not_null();
            }
            (ColumnData::Values(v), value) => v.push(value),
            (_, value) => {
                let mut values: Vec<FieldValue> = (0..self.len()).map(|i| self.get(i)).collect();
                values.push(value);
                self.data = ColumnData::Values(values);
                self.nulls = None;
            }
        }
    }

    /// The text of a text column that has no null so far: a decoder
    /// appends non-null cells there without a null test per cell.
    #[inline]
    pub(crate) fn text_mut(&mut self) -> Option<&mut TextColumn> {
        match (&mut self.data, &self.nulls) {
            (ColumnData::Text(t), None) => Some(t),
            _ => None,
        }
    }

    /// Writes row `i`'s value into the `i`th of `cells`, for every row;
    /// `true` if any value written owns heap memory (see [`Block`]).
    ///
    /// The cells hold [`FieldValue::Null`]: null rows are left as they are.
    fn fill_cells<'a>(self, cells: impl Iterator<Item = &'a mut FieldValue>) -> bool {
        fn each<'a, T>(
            cells: impl Iterator<Item = &'a mut FieldValue>,
            values: impl Iterator<Item = T>,
            nulls: Option<Vec<bool>>,
            value: impl Fn(T) -> FieldValue,
        ) -> bool {
            let mut owns_heap = false;
            // A `Null` owns nothing: forgetting the one replaced saves a
            // call to drop it per cell.
            let write = |(cell, v): (&mut FieldValue, T)| {
                let v = value(v);
                owns_heap |= v.owns_heap();
                std::mem::forget(std::mem::replace(cell, v));
            };
            match nulls {
                None => cells.zip(values).for_each(write),
                Some(nulls) => cells
                    .zip(values)
                    .zip(nulls)
                    .filter_map(|(cell, null)| (!null).then_some(cell))
                    .for_each(write),
            }
            owns_heap
        }
        let nulls = self.nulls;
        match self.data {
            ColumnData::Boolean(v) => each(cells, v.into_iter(), nulls, FieldValue::Boolean),
            ColumnData::Integer(v) => each(cells, v.into_iter(), nulls, FieldValue::Integer),
            ColumnData::Float(v) => each(cells, v.into_iter(), nulls, FieldValue::Float),
            ColumnData::Timestamp(v) => each(cells, v.into_iter(), nulls, FieldValue::Timestamp),
            ColumnData::Text(t) => each(cells, t.iter(), nulls, |s| FieldValue::String(s.into())),
            ColumnData::Values(v) => each(cells, v.into_iter(), None, |v| v),
        }
    }

    /// Room for `rows` more rows and, in a text column, `text` more bytes,
    /// so that a decoder filling a batch grows each buffer once.
    pub(crate) fn reserve(&mut self, rows: usize, text: usize) {
        match &mut self.data {
            ColumnData::Boolean(v) => v.reserve(rows),
            ColumnData::Integer(v) => v.reserve(rows),
            ColumnData::Float(v) => v.reserve(rows),
            ColumnData::Timestamp(v) => v.reserve(rows),
            ColumnData::Text(t) => {
                t.ends.reserve(rows);
                t.text.reserve(text);
            }
            ColumnData::Values(v) => v.reserve(rows),
        }
    }

    /// Keeps the first `rows` rows.
    pub fn truncate(&mut self, rows: usize) {
        match &mut self.data {
            ColumnData::Boolean(v) => v.truncate(rows),
            ColumnData::Integer(v) => v.truncate(rows),
            ColumnData::Float(v) => v.truncate(rows),
            ColumnData::Timestamp(v) => v.truncate(rows),
            ColumnData::Text(t) => t.truncate(rows),
            ColumnData::Values(v) => v.truncate(rows),
        }
        if let Some(n) = &mut self.nulls {
            n.truncate(rows);
        }
    }
}

/// Where a decoder appends one column's cells, a row at a time: a
/// [`Column`], or a column of [`Rows`](crate::rows::Rows) written in place.
pub(crate) trait ColumnSink {
    fn push_integer(&mut self, v: i64);
    fn push_float(&mut self, v: f64);
    fn push_boolean(&mut self, v: bool);
    fn push_timestamp(&mut self, v: DateTime<Utc>);
    fn push_str(&mut self, v: &str);
    fn push_null(&mut self);
    /// A value of any type.
    fn push(&mut self, v: FieldValue);
    /// A text column's buffer while it has no null ([`Column::text_mut`]).
    fn text_mut(&mut self) -> Option<&mut TextColumn> {
        None
    }
}

impl ColumnSink for &mut Column {
    #[inline(always)]
    fn push_integer(&mut self, v: i64) {
        Column::push_integer(self, v);
    }

    #[inline(always)]
    fn push_float(&mut self, v: f64) {
        Column::push_float(self, v);
    }

    #[inline(always)]
    fn push_boolean(&mut self, v: bool) {
        Column::push_boolean(self, v);
    }

    #[inline(always)]
    fn push_timestamp(&mut self, v: DateTime<Utc>) {
        Column::push_timestamp(self, v);
    }

    #[inline(always)]
    fn push_str(&mut self, v: &str) {
        Column::push_str(self, v);
    }

    fn push_null(&mut self) {
        Column::push_null(self);
    }

    fn push(&mut self, v: FieldValue) {
        Column::push(self, v);
    }

    #[inline(always)]
    fn text_mut(&mut self) -> Option<&mut TextColumn> {
        Column::text_mut(self)
    }
}

/// A batch a decoder writes a column at a time: [`Columns`], or
/// [`Rows`](crate::rows::Rows) for records.
pub(crate) trait BatchSink {
    /// One column of the rows begun.
    type Column<'a>: ColumnSink
    where
        Self: 'a;

    /// The schema the batch follows.
    fn schema(&self) -> &Arc<Schema>;

    /// The number of complete rows.
    fn rows(&self) -> usize;

    /// Makes room for `n` rows after the complete ones; `text(i)` is how
    /// many bytes text column `i`'s cells take, asked only of text columns.
    fn begin_rows(&mut self, n: usize, text: impl Fn(usize) -> usize);

    /// The next `n` of the rows begun are about to be written, a column at
    /// a time, before any row after them.
    #[inline(always)]
    fn begin_block(&mut self, _n: usize) {}

    /// Column `i`, to append one cell to each row begun, from the first
    /// not yet counted by [`end_rows`](Self::end_rows).
    fn column(&mut self, i: usize) -> Self::Column<'_>;

    /// Counts `n` rows whose cells were appended to every column.
    fn end_rows(&mut self, n: usize);

    /// Keeps the first `rows` complete rows, dropping any partial one.
    fn truncate(&mut self, rows: usize);
}

impl BatchSink for Columns {
    type Column<'a> = &'a mut Column;

    fn schema(&self) -> &Arc<Schema> {
        &self.schema
    }

    fn rows(&self) -> usize {
        self.rows
    }

    fn begin_rows(&mut self, n: usize, text: impl Fn(usize) -> usize) {
        for (i, column) in self.columns.iter_mut().enumerate() {
            let bytes = match column.data {
                ColumnData::Text(_) => text(i),
                _ => 0,
            };
            column.reserve(n, bytes);
        }
    }

    #[inline(always)]
    fn column(&mut self, i: usize) -> &mut Column {
        &mut self.columns[i]
    }

    fn end_rows(&mut self, n: usize) {
        Columns::end_rows(self, n);
    }

    fn truncate(&mut self, rows: usize) {
        Columns::truncate(self, rows);
    }
}

/// The columns of a batch being built, one per field of its schema.
///
/// Decoders append a record's values with [`Columns::push_row`] (or cell by
/// cell); a record that turns out bad is taken back with
/// [`Columns::truncate`].
#[derive(Debug, Clone, PartialEq)]
pub struct Columns {
    schema: Arc<Schema>,
    columns: Vec<Column>,
    rows: usize,
}

impl Columns {
    /// Empty columns for `schema`.
    pub fn new(schema: Arc<Schema>) -> Self {
        let columns = schema
            .fields()
            .iter()
            .map(|f| Column::new(&f.data_type))
            .collect();
        Columns {
            schema,
            columns,
            rows: 0,
        }
    }

    /// The schema the columns follow.
    pub fn schema(&self) -> &Arc<Schema> {
        &self.schema
    }

    /// The number of complete rows.
    pub fn rows(&self) -> usize {
        self.rows
    }

    /// Appends one row of values in schema order.
    pub fn push_row(&mut self, values: Vec<FieldValue>) -> Result<()> {
        if values.len() != self.columns.len() {
            return Err(Error::Schema(format!(
                "row has {} values but the schema has {} fields",
                values.len(),
                self.columns.len()
            )));
        }
        for (column, value) in self.columns.iter_mut().zip(values) {
            column.push(value);
        }
        self.rows += 1;
        Ok(())
    }

    /// Counts `n` rows whose cells were just appended to every column.
    fn end_rows(&mut self, n: usize) {
        self.rows += n;
        debug_assert!(self.columns.iter().all(|c| c.len() == self.rows));
    }

    /// Keeps the first `rows` complete rows, dropping any partial one.
    pub fn truncate(&mut self, rows: usize) {
        for c in &mut self.columns {
            c.truncate(rows);
        }
        self.rows = self.rows.min(rows);
    }
}

/// What a record carries besides its values.
#[derive(Debug, Clone, PartialEq)]
pub struct RowMeta {
    /// Position within its partition: Kafka offset, file line number, row number.
    pub offset: i64,
    /// Partition (Kafka) or `0` for single-stream sources.
    pub partition: i32,
    /// When the record was read (processing time).
    pub timestamp: DateTime<Utc>,
    /// When the event happened, from the source's `event.time.*` config.
    pub event_time: Option<DateTime<Utc>>,
}

/// Records of one schema, column by column. See the module docs.
#[derive(Debug, Clone, PartialEq)]
pub struct ColumnBatch {
    columns: Columns,
    rows: Vec<RowMeta>,
    /// Empty when no record of the batch has a key; otherwise one per row.
    keys: Vec<Option<Vec<u8>>>,
    /// Empty when no record of the batch has headers; otherwise one per row.
    headers: Vec<Headers>,
}

impl ColumnBatch {
    /// A batch of `columns` with one `rows` entry per row.
    pub fn new(columns: Columns, rows: Vec<RowMeta>) -> Result<Self> {
        if columns.rows() != rows.len() {
            return Err(Error::Schema(format!(
                "{} rows of values but {} rows of metadata",
                columns.rows(),
                rows.len()
            )));
        }
        Ok(ColumnBatch {
            columns,
            rows,
            keys: Vec::new(),
            headers: Vec::new(),
        })
    }

    /// `records` as batches, one per run of records with the same schema
    /// (usually one). Keys, headers and times are kept.
    pub fn from_records(records: impl IntoIterator<Item = StreamRecord>) -> Vec<ColumnBatch> {
        let mut batches: Vec<ColumnBatch> = Vec::new();
        for record in records {
            let same = batches.last().is_some_and(|b| {
                Arc::ptr_eq(b.schema(), record.schema()) || **b.schema() == **record.schema()
            });
            if !same {
                batches.push(ColumnBatch {
                    columns: Columns::new(record.schema().clone()),
                    rows: Vec::new(),
                    keys: Vec::new(),
                    headers: Vec::new(),
                });
            }
            let batch = batches.last_mut().expect("pushed above");
            batch.push_record(record);
        }
        batches
    }

    fn push_record(&mut self, mut record: StreamRecord) {
        let row = self.rows.len();
        if record.key.is_some() || !self.keys.is_empty() {
            self.keys.resize(row, None);
            self.keys.push(record.key.take());
        }
        if !record.headers.is_empty() || !self.headers.is_empty() {
            self.headers.resize(row, Headers::new());
            self.headers.push(std::mem::take(&mut record.headers));
        }
        self.rows.push(RowMeta {
            offset: record.offset,
            partition: record.partition,
            timestamp: record.timestamp,
            event_time: record.event_time,
        });
        let mut columns = self.columns.columns.iter_mut();
        record.for_each_value(|value| {
            if let Some(column) = columns.next() {
                column.push(value);
            }
        });
        self.columns.rows += 1;
    }

    /// The schema of every row.
    pub fn schema(&self) -> &Arc<Schema> {
        &self.columns.schema
    }

    /// The number of rows.
    pub fn len(&self) -> usize {
        self.rows.len()
    }

    /// Whether there are no rows.
    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    /// Column `i`, in schema order.
    pub fn column(&self, i: usize) -> &Column {
        &self.columns.columns[i]
    }

    /// The column of the field called `name`.
    pub fn column_by_name(&self, name: &str) -> Option<&Column> {
        self.schema().index_of(name).map(|i| self.column(i))
    }

    /// Every row's offset, partition and times.
    pub fn rows(&self) -> &[RowMeta] {
        &self.rows
    }

    /// Every row's metadata, mutable (to set event times).
    pub fn rows_mut(&mut self) -> &mut [RowMeta] {
        &mut self.rows
    }

    /// Row `i`'s key.
    pub fn key(&self, i: usize) -> Option<&[u8]> {
        self.keys.get(i).and_then(|k| k.as_deref())
    }

    /// Row `i`'s headers.
    pub fn headers(&self, i: usize) -> &[(String, Vec<u8>)] {
        self.headers.get(i).map_or(&[], Vec::as_slice)
    }

    /// Row `i` as a record.
    pub fn record(&self, i: usize) -> StreamRecord {
        let values = self.columns.columns.iter().map(|c| c.get(i)).collect();
        StreamRecord::from_row(
            self.schema().clone(),
            values,
            &self.rows[i],
            self.key(i).map(<[u8]>::to_vec),
            self.headers(i).to_vec(),
        )
    }

    /// Every row as a record, in order.
    ///
    /// The values are laid out row after row in one block that the records
    /// share (one allocation for the batch, not one per record), filled a
    /// column at a time so that each column's type is decided once rather
    /// than once per cell. The block is freed with the last of them: a
    /// caller that keeps a few records of many batches for long should
    /// rebuild them from [`StreamRecord::into_parts`], which copies a row
    /// out.
    pub fn into_records(self) -> Vec<StreamRecord> {
        let width = self.columns.columns.len();
        // Not `vec![Null; n]`: that clones through `FieldValue::clone`, a
        // call per cell.
        let mut block: Vec<FieldValue> = std::iter::repeat_with(|| FieldValue::Null)
            .take(self.len() * width)
            .collect();
        let mut owns_heap = false;
        for (i, column) in self.columns.columns.into_iter().enumerate() {
            owns_heap |= column.fill_cells(block[i..].iter_mut().step_by(width));
        }
        let block = Block::new(self.columns.schema, block, owns_heap);
        let mut keys = self.keys.into_iter();
        let mut headers = self.headers.into_iter();
        self.rows
            .iter()
            .enumerate()
            .map(|(row, meta)| {
                StreamRecord::from_block(
                    block.clone(),
                    row,
                    meta,
                    keys.next().flatten(),
                    headers.next().unwrap_or_default(),
                )
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::schema::FieldDefinition;

    fn schema() -> Arc<Schema> {
        Arc::new(Schema::new(vec![
            FieldDefinition::new("i", DataType::Integer, true),
            FieldDefinition::new("f", DataType::Float, true),
            FieldDefinition::new("b", DataType::Boolean, true),
            FieldDefinition::new("t", DataType::Timestamp, true),
            FieldDefinition::new("s", DataType::String, true),
            FieldDefinition::new("d", DataType::Date, true),
        ]))
    }

    fn row(n: i64) -> Vec<FieldValue> {
        vec![
            n.into(),
            (n as f64 / 2.0).into(),
            (n % 2 == 0).into(),
            FieldValue::Timestamp(DateTime::from_timestamp(n * 1000, 0).unwrap()),
            format!("row {n}").into(),
            FieldValue::Date(chrono::NaiveDate::from_ymd_opt(2024, 1, 1 + n as u32).unwrap()),
        ]
    }

    #[test]
    fn records_round_trip_with_nulls_keys_headers_and_a_type_change() {
        let s = schema();
        let mut records = Vec::new();
        for n in 0..5 {
            let mut values = row(n);
            if n == 2 {
                values = vec![FieldValue::Null; 6];
            }
            if n == 4 {
                // Not the column's type: the column keeps it as it is.
                values[0] = "four".into();
            }
            let mut r = StreamRecord::new(s.clone(), values).unwrap();
            r.offset = 10 + n;
            r.partition = 3;
            r.event_time = DateTime::from_timestamp(n, 0);
            if n == 3 {
                r.key = Some(b"k".to_vec());
                r.headers = vec![("h".into(), b"v".to_vec())];
            }
            records.push(r);
        }
        let batches = ColumnBatch::from_records(records.clone());
        assert_eq!(batches.len(), 1);
        let b = &batches[0];
        assert!(matches!(b.column(0).data(), ColumnData::Values(_)));
        assert!(matches!(b.column(1).data(), ColumnData::Float(_)));
        assert!(matches!(b.column(4).data(), ColumnData::Text(_)));
        assert!(b.column(1).is_null(2) && !b.column(1).is_null(3));
        assert_eq!(b.key(3), Some(&b"k"[..]));
        assert_eq!(b.key(4), None);
        assert_eq!(b.headers(3).len(), 1);
        assert_eq!(b.clone().into_records(), records);
    }

    #[test]
    fn records_of_a_batch_share_values_until_one_is_changed() {
        let s = schema();
        let owned: Vec<_> = (0..3)
            .map(|n| StreamRecord::new(s.clone(), row(n)).unwrap())
            .collect();
        let mut shared = ColumnBatch::from_records(owned.clone())
            .pop()
            .unwrap()
            .into_records();
        assert_eq!(shared, owned);
        assert_eq!(format!("{shared:?}"), format!("{owned:?}"));
        // Back to columns from shared rows as from owned ones.
        assert_eq!(
            ColumnBatch::from_records(shared.clone()),
            ColumnBatch::from_records(owned.clone())
        );
        shared[1].set("s", "changed".into()).unwrap();
        shared[2].values_mut()[0] = FieldValue::Integer(-1);
        assert_eq!(shared[0], owned[0]);
        assert_eq!(shared[1].get("s"), Some(&FieldValue::from("changed")));
        assert_eq!(shared[1].get("i"), owned[1].get("i"));
        assert_eq!(shared[2].value(0), Some(&FieldValue::Integer(-1)));
        assert_eq!(shared[2].value(4), owned[2].value(4));
        let (schema, values) = shared.swap_remove(0).into_parts();
        assert!(Arc::ptr_eq(&schema, &s));
        assert_eq!(values, row(0));
        // One record outlives the batch and the other records of it.
        let mut again = ColumnBatch::from_records(owned.clone())
            .pop()
            .unwrap()
            .into_records();
        let last = again.pop().unwrap();
        drop(again);
        assert_eq!(last, owned[2]);
        assert_eq!(last.clone(), owned[2]);
    }

    #[test]
    fn records_of_a_schema_without_fields() {
        let empty = Arc::new(Schema::new(Vec::new()));
        let records: Vec<_> = (0..2)
            .map(|n| {
                let mut r = StreamRecord::new(empty.clone(), Vec::new()).unwrap();
                r.offset = n;
                r
            })
            .collect();
        let back = ColumnBatch::from_records(records.clone())
            .pop()
            .unwrap()
            .into_records();
        assert_eq!(back, records);
        assert!(back[1].values().is_empty());
    }

    #[test]
    fn a_schema_change_starts_a_new_batch() {
        let other = Arc::new(Schema::new(vec![FieldDefinition::new(
            "x",
            DataType::String,
            false,
        )]));
        let records = vec![
            StreamRecord::new(schema(), row(1)).unwrap(),
            StreamRecord::new(other.clone(), vec!["x".into()]).unwrap(),
            StreamRecord::new(other, vec!["y".into()]).unwrap(),
        ];
        let batches = ColumnBatch::from_records(records.clone());
        assert_eq!(
            batches.iter().map(ColumnBatch::len).collect::<Vec<_>>(),
            [1, 2]
        );
        let back: Vec<_> = batches
            .into_iter()
            .flat_map(ColumnBatch::into_records)
            .collect();
        assert_eq!(back, records);
    }

    #[test]
    fn truncate_takes_back_a_partial_row() {
        let mut c = Columns::new(schema());
        c.push_row(row(1)).unwrap();
        c.columns[0].push_integer(7);
        c.columns[1].push_null();
        c.columns[4].push_str("partial");
        c.truncate(1);
        assert_eq!(c.rows(), 1);
        assert!(c.columns.iter().all(|col| col.len() == 1));
        c.push_row(row(2)).unwrap();
        let b = ColumnBatch::new(
            c,
            vec![
                RowMeta {
                    offset: 1,
                    partition: 0,
                    timestamp: DateTime::UNIX_EPOCH,
                    event_time: None,
                };
                2
            ],
        )
        .unwrap();
        assert_eq!(b.record(1).values(), &row(2)[..]);
        assert!(!b.column(1).is_null(1));
        assert_eq!(b.column(4).get(1), FieldValue::from("row 2"));
    }

    #[test]
    fn rows_and_metadata_must_agree() {
        let mut c = Columns::new(schema());
        c.push_row(row(1)).unwrap();
        let err = ColumnBatch::new(c, Vec::new()).unwrap_err().to_string();
        assert!(
            err.contains("1 rows of values but 0 rows of metadata"),
            "{err}"
        );
        let mut c = Columns::new(schema());
        assert!(c.push_row(vec![FieldValue::Null]).is_err());
    }
}
