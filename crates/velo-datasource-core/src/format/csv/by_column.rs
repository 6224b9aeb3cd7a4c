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
use crate::columns::{Column, Columns};
use crate::schema::DataType;
use crate::value::{FieldValue, parse_bool, parse_float, parse_timestamp_with, trim};

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
    /// `decode_columns`: see the module docs.
    pub(super) fn decode_into_columns(
        &mut self,
        input: &[u8],
        eof: bool,
        max: usize,
        out: &mut Vec<Span>,
        columns: &mut Columns,
    ) -> usize {
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
        consumed
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
        columns: &mut Columns,
    ) -> Option<()> {
        let width = self.types.len();
        let blocks = framed
            .rows
            .chunks(BLOCK)
            .zip(framed.ends.chunks(BLOCK * width));
        for (rows, ends) in blocks {
            self.type_block(rows, ends, text, copied, columns)?;
            columns.end_rows(rows.len());
        }
        Some(())
    }

    /// [`type_columns`](Self::type_columns) for one block of rows.
    fn type_block(
        &self,
        rows: &[Row],
        ends: &[usize],
        text: &str,
        copied: &str,
        columns: &mut Columns,
    ) -> Option<()> {
        let width = self.types.len();
        for i in 0..width {
            // Each cell as its source text and its byte range there.
            let ranges = rows
                .iter()
                .zip(ends.chunks_exact(width))
                .map(|(row, ends)| {
                    let from = if i == 0 { 0 } else { ends[i - 1] + row.gap };
                    let source = if row.quoted { copied } else { text };
                    (source, row.base + from, row.base + ends[i])
                });
            let cells = ranges.clone().map(|(source, a, b)| source.get(a..b));
            let column = columns.column_mut(i);
            match &self.types[i] {
                DataType::String | DataType::Any => self.fill(i, cells, column, |c, col| {
                    col.push_str(c);
                    Some(())
                }),
                DataType::Integer => self.fill_integers(i, ranges, column),
                DataType::Float => self.fill(i, cells, column, |c, col| {
                    parse_float(trim(c)).map(|v| col.push_float(v))
                }),
                DataType::Boolean => self.fill(i, cells, column, |c, col| {
                    parse_bool(trim(c)).map(|v| col.push_boolean(v))
                }),
                DataType::Timestamp => self.fill(i, cells, column, |c, col| {
                    parse_timestamp_with(c, &self.dates[i]).map(|v| col.push_timestamp(v))
                }),
                other => self.fill(i, cells, column, |c, col| {
                    FieldValue::parse_text(c, other).ok().map(|v| col.push(v))
                }),
            }?;
        }
        Some(())
    }

    /// [`fill`](Self::fill) for an integer column: a cell of one to eight
    /// digits (and an optional `-`) is read from one word of its source
    /// ([`eight_digits`]), unless a null token is such a number; any other
    /// goes through `str::parse` after the null test, as in `fill`.
    #[inline(always)]
    fn fill_integers<'a>(
        &self,
        i: usize,
        cells: impl Iterator<Item = (&'a str, usize, usize)>,
        column: &mut Column,
    ) -> Option<()> {
        let fast = !self.nulls.integer;
        for (source, a, b) in cells {
            let bytes = source.as_bytes();
            let value = match bytes.get(a) {
                _ if !fast => None,
                Some(b'-') => eight_digits(bytes, a + 1, b).map(|v| -v),
                _ => eight_digits(bytes, a, b),
            };
            if let Some(v) = value {
                column.push_integer(v);
                continue;
            }
            let c = source.get(a..b)?;
            if self.nulls.matches(c) {
                if !self.nullable[i] {
                    return None;
                }
                column.push_null();
            } else {
                column.push_integer(trim(c).parse().ok()?);
            }
        }
        Some(())
    }

    /// Appends column `i`'s `cells` by `push`, nulls by the null rule;
    /// `None` at the first cell that is not valid.
    #[inline(always)]
    fn fill<'a>(
        &self,
        i: usize,
        cells: impl Iterator<Item = Option<&'a str>>,
        column: &mut Column,
        mut push: impl FnMut(&'a str, &mut Column) -> Option<()>,
    ) -> Option<()> {
        for c in cells {
            let c = c?;
            if self.nulls.matches(c) {
                if !self.nullable[i] {
                    return None;
                }
                column.push_null();
            } else {
                push(c, column)?;
            }
        }
        Some(())
    }
}

/// `text[start..end]` as a number when it is one to eight ASCII digits,
/// read as one little-endian word (the eight bytes ending at `end`) and
/// combined in three multiplications; `None` for anything else, or when
/// fewer than eight bytes end at `end`. Against `str::parse` on the two
/// integer columns of the benchmark's trades, cachegrind counted 73 fewer
/// instructions per record (about 140 down to 65).
#[inline(always)]
fn eight_digits(text: &[u8], start: usize, end: usize) -> Option<i64> {
    let len = end.checked_sub(start).filter(|n| (1..=8).contains(n))?;
    let word = u64::from_le_bytes(text.get(end.checked_sub(8)?..end)?.try_into().ok()?);
    // The cell is the word's last `len` bytes; the bytes before it become `0`s.
    let cell = u64::MAX << (8 * (8 - len));
    let digits = (word & cell) | (0x3030_3030_3030_3030 & !cell);
    // Each byte in `0x30..=0x39`: high nibble 3, and still 3 after adding 6.
    let nibbles = (digits & 0xF0F0_F0F0_F0F0_F0F0)
        | ((digits.wrapping_add(0x0606_0606_0606_0606) & 0xF0F0_F0F0_F0F0_F0F0) >> 4);
    if nibbles != 0x3333_3333_3333_3333 {
        return None;
    }
    // Pairs, then fours, then all eight (the first digit is the lowest byte).
    let v = digits - 0x3030_3030_3030_3030;
    let v = v.wrapping_mul(10).wrapping_add(v >> 8);
    let mask = 0x0000_00FF_0000_00FF;
    let v = (v & mask)
        .wrapping_mul(100 + (1_000_000 << 32))
        .wrapping_add(((v >> 16) & mask).wrapping_mul(1 + (10_000 << 32)))
        >> 32;
    i64::try_from(v).ok()
}

#[cfg(test)]
mod tests {
    use super::eight_digits;
    use proptest::prelude::*;

    /// `eight_digits` of `cell` placed after `before`, or `None`.
    fn read(before: &str, cell: &str) -> Option<i64> {
        let text = format!("{before}{cell}");
        eight_digits(text.as_bytes(), before.len(), text.len())
    }

    #[test]
    fn digits_read_from_the_word_that_ends_the_cell() {
        assert_eq!(read("12345678,", "0"), Some(0));
        assert_eq!(read("xxxxxxxx", "42"), Some(42));
        assert_eq!(read("", "12345678"), Some(12_345_678));
        assert_eq!(read("99999999", "00000007"), Some(7));
        assert_eq!(read("1,", "99999999"), Some(99_999_999));
        // Not digits, too long, empty, or fewer than eight bytes to read.
        for (before, cell) in [
            ("xxxxxxxx", "4a"),
            ("xxxxxxxx", "-4"),
            ("xxxxxxxx", " 4"),
            ("xxxxxxxx", "4:"),
            ("xxxxxxxx", "4/"),
            ("x", "123456789"),
            ("xxxxxxxx", ""),
            ("", "42"),
        ] {
            assert_eq!(read(before, cell), None, "{before:?} {cell:?}");
        }
    }

    proptest! {
        #[test]
        fn agrees_with_str_parse(before in "[ -~]{8}", cell in "[ -~]{1,8}") {
            let parsed = cell.parse::<i64>().ok().filter(|_| cell.bytes().all(|b| b.is_ascii_digit()));
            prop_assert_eq!(read(&before, &cell), parsed);
        }

        #[test]
        fn every_number_of_up_to_eight_digits(n in 0u32..100_000_000, width in 1usize..=8) {
            let cell = format!("{n:0width$}");
            prop_assert_eq!(read("abcdefgh", &cell), cell.parse::<i64>().ok().filter(|_| cell.len() <= 8));
        }
    }
}
