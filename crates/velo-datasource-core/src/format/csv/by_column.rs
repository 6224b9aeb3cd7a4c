//! CSV straight into columns, in two passes over a call's records: frame
//! them all (cell boundaries only), then type one column at a time.
//!
//! Typing a column in one loop keeps its parser, its null rule and its
//! column's buffer hot, and decides the cell's type once per column instead
//! of once per cell (a record at a time, that indirect jump was the row
//! converter's single most expensive instruction). Any record that the
//! second pass cannot type (a bad cell, invalid UTF-8) sends the whole call
//! back through the record-at-a-time converter, which finds and reports the
//! bad records exactly as `decode` does; bad input is rare and gets the slow
//! path.

use super::{Cells, Converter, CsvDecoder, FrameLen, Span};
use std::sync::Arc;

use crate::columns::{BatchSink, ColumnSink};
use crate::digits::{short_decimal, short_integer};
use crate::schema::DataType;
use crate::value::{
    FieldValue, local_to_utc, parse_bool, parse_float, parse_timestamp_local, parse_timestamp_with,
    trim,
};

/// Rows typed a column at a time before the next rows, so that their
/// input and cell ends stay in the L1 cache for all their columns. Typing
/// 100,000 rows of 65 bytes in calls of 1,000, cachegrind counted 19.2
/// L1 read misses per row a whole call at a time, 6.2 in blocks of 64
/// (7.5 in blocks of 128; 19.0 in blocks of 256, which already overflow
/// the 32 KB cache), for the same instruction count.
const BLOCK: usize = 64;

/// Records framed by the first pass.
#[derive(Debug, Default)]
pub(super) struct Framed {
    rows: Vec<Row>,
    /// Each row's cell ends, one per column, relative to the row's `base`.
    ends: Vec<usize>,
    /// csv-core's unescaped copies of quoted records.
    copied: Vec<u8>,
}

impl Framed {
    /// The bytes of column `i`'s cells in all rows of `width` cells.
    fn text_bytes(&self, i: usize, width: usize) -> usize {
        self.rows
            .iter()
            .zip(self.ends.chunks_exact(width))
            .map(|(row, ends)| ends[i] - if i == 0 { 0 } else { ends[i - 1] + row.gap })
            .sum()
    }
}

/// Where one well-formed record's cells are.
#[derive(Debug, Clone, Copy)]
struct Row {
    /// Start of the record in the input, or in `copied` when `quoted`.
    base: usize,
    quoted: bool,
    /// Bytes between one cell's end and the next one's start.
    gap: usize,
    /// The record's span in the call's output.
    frame: usize,
}

impl CsvDecoder {
    /// `decode_columns` and `decode_rows`: see the module docs. `None`,
    /// with nothing read, when `columns` does not follow the decoder's schema.
    pub(super) fn decode_into(
        &mut self,
        input: &[u8],
        eof: bool,
        max: usize,
        out: &mut Vec<Span>,
        columns: &mut impl BatchSink,
    ) -> Option<usize> {
        if !Arc::ptr_eq(columns.schema(), &self.conv.schema)
            && **columns.schema() != *self.conv.schema
        {
            return None;
        }
        let width = self.conv.types.len();
        let mut framed = std::mem::take(&mut self.framed);
        framed.rows.clear();
        framed.ends.clear();
        framed.copied.clear();
        let mut ends = std::mem::take(&mut framed.ends);
        let consumed = self.decode_with(input, eof, max, &mut ends, |_, cells, at, f: FrameLen| {
            let n = cells.ends.len();
            let this = out.len();
            out.push(Span {
                len: f.len,
                lines: f.lines,
                skipped_bytes: f.skipped_bytes,
                skipped_lines: f.skipped_lines,
                error: None,
            });
            if n != width {
                out[this].error = Some(format!("expected {width} fields, found {n}"));
                return false;
            }
            let base = at.unwrap_or_else(|| {
                framed.copied.extend_from_slice(cells.record);
                framed.copied.len() - cells.record.len()
            });
            framed.rows.push(Row {
                base,
                quoted: at.is_none(),
                gap: cells.gap,
                frame: this,
            });
            true
        });
        framed.ends = ends;
        let start = columns.rows();
        let typed = match (
            std::str::from_utf8(&input[..consumed]),
            std::str::from_utf8(&framed.copied),
        ) {
            (Ok(text), Ok(copied)) => self.conv.type_columns(&framed, text, copied, columns),
            _ => None,
        };
        if typed.is_none() {
            columns.truncate(start);
            for (r, row) in framed.rows.iter().enumerate() {
                let ends = &framed.ends[r * width..(r + 1) * width];
                let bytes = if row.quoted {
                    &framed.copied[row.base..]
                } else {
                    &input[row.base..]
                };
                let cells = Cells {
                    record: &bytes[..ends[width - 1]],
                    ends,
                    gap: row.gap,
                };
                if let Err(e) = self.conv.push_row(cells, columns) {
                    out[row.frame].error = Some(e);
                }
            }
        }
        self.framed = framed;
        Some(consumed)
    }
}

impl Converter {
    /// Appends every framed row to `columns`, a column at a time in blocks
    /// of [`BLOCK`] rows; `None` (with columns partly filled) if any cell is
    /// bad. `text` is the call's input and `copied` the quoted records'
    /// cells, both as text.
    fn type_columns(
        &self,
        framed: &Framed,
        text: &str,
        copied: &str,
        columns: &mut impl BatchSink,
    ) -> Option<()> {
        let width = self.types.len();
        // Each buffer grows once per call: a text column by its cells' bytes.
        columns.begin_rows(framed.rows.len(), |i| framed.text_bytes(i, width));
        let blocks = framed
            .rows
            .chunks(BLOCK)
            .zip(framed.ends.chunks(BLOCK * width));
        for (rows, ends) in blocks {
            columns.begin_block(rows.len());
            if rows.iter().any(|row| row.quoted) {
                self.type_block(rows, ends, columns, |row: &Row, ends: &[usize], i| {
                    let from = if i == 0 { 0 } else { ends[i - 1] + row.gap };
                    let source = if row.quoted { copied } else { text };
                    (source, row.base + from, row.base + ends[i])
                })
            } else {
                // A block of lines without quotes (most blocks): each cell is
                // in the input, one delimiter after the one before it; knowing
                // that saves a choice of source and a load per cell.
                self.type_block(rows, ends, columns, |row: &Row, ends: &[usize], i| {
                    let from = if i == 0 { 0 } else { ends[i - 1] + 1 };
                    (text, row.base + from, row.base + ends[i])
                })
            }?;
            columns.end_rows(rows.len());
        }
        Some(())
    }

    /// [`type_columns`](Self::type_columns) for one block of rows; `range`
    /// gives a row's cell `i` (from the row's cell ends) as its source text
    /// and its byte range there.
    #[inline(always)]
    fn type_block<'a>(
        &self,
        rows: &[Row],
        ends: &[usize],
        columns: &mut impl BatchSink,
        range: impl Fn(&Row, &[usize], usize) -> (&'a str, usize, usize) + Copy,
    ) -> Option<()> {
        let width = self.types.len();
        for i in 0..width {
            let ranges = rows
                .iter()
                .zip(ends.chunks_exact(width))
                .map(move |(row, ends)| range(row, ends, i));
            let cells = ranges.clone().map(|(source, a, b)| source.get(a..b));
            let column = columns.column(i);
            match &self.types[i] {
                DataType::String | DataType::Any => self.fill_text(i, cells, column),
                // Unless a null token could be read as such a number.
                DataType::Integer => self.fill_numbers(
                    i,
                    ranges,
                    column,
                    |t, a, b| short_integer(t, a, b).filter(|_| !self.nulls.integer),
                    |c| c.parse().ok(),
                    ColumnSink::push_integer,
                ),
                DataType::Float => self.fill_numbers(
                    i,
                    ranges,
                    column,
                    |t, a, b| short_decimal(t, a, b).filter(|_| !self.nulls.decimal),
                    parse_float,
                    ColumnSink::push_float,
                ),
                DataType::Boolean => self.fill(i, cells, column, |c, col| {
                    parse_bool(trim(c)).map(|v| col.push_boolean(v))
                }),
                // The common shapes apart, a UTC value in registers (see
                // `parse_timestamp_local`); each case writes its own value.
                DataType::Timestamp => self.fill(i, cells, column, |c, col| {
                    match parse_timestamp_local(c, &self.dates[i]) {
                        Some((naive, 0)) => col.push_timestamp(naive.and_utc()),
                        Some((naive, offset)) => col.push_timestamp(local_to_utc(naive, offset)?),
                        None => col.push_timestamp(parse_timestamp_with(c, &self.dates[i])?),
                    }
                    Some(())
                }),
                other => self.fill(i, cells, column, |c, col| {
                    FieldValue::parse_text(c, other).ok().map(|v| col.push(v))
                }),
            }?;
        }
        Some(())
    }

    /// [`fill`](Self::fill) for a number column: a short number is read
    /// from one word of its source by `word` ([`short_integer`],
    /// [`short_decimal`]); any other cell (or any cell, when `word` gives
    /// way to a null token that could be such a number) goes through
    /// `parse` after the null test, as in `fill`.
    #[inline(always)]
    fn fill_numbers<'a, T, C: ColumnSink>(
        &self,
        i: usize,
        cells: impl Iterator<Item = (&'a str, usize, usize)>,
        mut column: C,
        word: impl Fn(&[u8], usize, usize) -> Option<T>,
        parse: impl Fn(&str) -> Option<T>,
        push: impl Fn(&mut C, T),
    ) -> Option<()> {
        for (source, a, b) in cells {
            if let Some(v) = word(source.as_bytes(), a, b) {
                push(&mut column, v);
                continue;
            }
            let c = source.get(a..b)?;
            if self.nulls.matches(c) {
                if !self.nullable[i] {
                    return None;
                }
                column.push_null();
            } else {
                push(&mut column, parse(trim(c))?);
            }
        }
        Some(())
    }

    /// [`fill`](Self::fill) for a text column: straight into its text
    /// until its first null, if any.
    #[inline(always)]
    fn fill_text<'a>(
        &self,
        i: usize,
        mut cells: impl Iterator<Item = Option<&'a str>>,
        mut column: impl ColumnSink,
    ) -> Option<()> {
        if let Some(text) = column.text_mut() {
            loop {
                let Some(c) = cells.next() else {
                    return Some(());
                };
                let c = c?;
                if self.nulls.matches(c) {
                    break;
                }
                text.push(c);
            }
            if !self.nullable[i] {
                return None;
            }
            column.push_null();
        }
        self.fill(i, cells, column, |c, col| {
            col.push_str(c);
            Some(())
        })
    }

    /// Appends column `i`'s `cells` by `push`, nulls by the null rule;
    /// `None` at the first cell that is not valid.
    #[inline(always)]
    fn fill<'a, C: ColumnSink>(
        &self,
        i: usize,
        cells: impl Iterator<Item = Option<&'a str>>,
        mut column: C,
        mut push: impl FnMut(&'a str, &mut C) -> Option<()>,
    ) -> Option<()> {
        for c in cells {
            let c = c?;
            if self.nulls.matches(c) {
                if !self.nullable[i] {
                    return None;
                }
                column.push_null();
            } else {
                push(c, &mut column)?;
            }
        }
        Some(())
    }
}
