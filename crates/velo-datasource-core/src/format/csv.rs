//! CSV: framing of plain lines eight bytes at a time ([`split`]), of quoted
//! ones by `csv-core` (quotes, escapes, embedded line breaks), typed cells by
//! the schema, and writing through the `csv` crate's quoting rules.

mod by_column;
mod core_reader;
mod split;

use std::borrow::Cow;
use std::io::Write as _;
use std::sync::Arc;

use csv_core::ReadRecordResult;

use self::core_reader::CoreReader;
use self::split::{Split, Splitter};
use super::{Decoder, Encoder, FormatOptions, Frame, Inferred, Span};
use crate::columns::{BatchSink, ColumnSink, Columns};
use crate::error::{Error, Result};
use crate::infer::{NullTokens, SchemaInferrer};
use crate::record::StreamRecord;
use crate::rows::Rows;
use crate::schema::{DataType, FieldDefinition, Schema};
use crate::value::{
    DateCache, FieldValue, TimestampText, parse_bool, parse_float, parse_timestamp_with, trim,
};

/// Reads one record's fields from `input`; `None` if the input ends first (and not `eof`).
struct Fields {
    out: Vec<u8>,
    ends: Vec<usize>,
}

impl Fields {
    fn new() -> Self {
        Fields {
            out: vec![0; 4096],
            ends: vec![0; 64],
        }
    }

    /// Parses one record from `input`. Returns `(consumed, field_count)` or
    /// `None` when `input` holds no complete record.
    fn read(
        &mut self,
        rdr: &mut csv_core::Reader,
        input: &[u8],
        eof: bool,
    ) -> Option<(usize, usize)> {
        let (mut nin_total, mut nout, mut nend) = (0, 0, 0);
        loop {
            let rest = &input[nin_total..];
            // An empty slice tells csv-core the input has ended.
            let feed: &[u8] = if rest.is_empty() && !eof {
                return None;
            } else {
                rest
            };
            let (res, nin, o, e) =
                rdr.read_record(feed, &mut self.out[nout..], &mut self.ends[nend..]);
            nin_total += nin;
            nout += o;
            nend += e;
            match res {
                ReadRecordResult::InputEmpty => {
                    if !eof {
                        return None;
                    }
                    // With eof, loop once more with the empty slice to finish the record.
                }
                ReadRecordResult::OutputFull => {
                    let n = self.out.len() * 2;
                    self.out.resize(n, 0);
                }
                ReadRecordResult::OutputEndsFull => {
                    let n = self.ends.len() * 2;
                    self.ends.resize(n, 0);
                }
                ReadRecordResult::Record => return Some((nin_total, nend)),
                ReadRecordResult::End => {
                    return if nin_total > 0 {
                        Some((nin_total, 0))
                    } else {
                        None
                    };
                }
            }
        }
    }

    fn field(&self, i: usize) -> &[u8] {
        let start = if i == 0 { 0 } else { self.ends[i - 1] };
        &self.out[start..self.ends[i]]
    }
}

/// Where the cells of one record are: `record[start..end]` for each end in
/// `ends`, each cell starting `gap` bytes after the previous one's end (1
/// past a delimiter in a plain line, 0 in csv-core's unescaped output).
#[derive(Clone, Copy)]
struct Cells<'a> {
    record: &'a [u8],
    ends: &'a [usize],
    gap: usize,
}

impl Cells<'_> {
    fn range(&self, i: usize) -> std::ops::Range<usize> {
        let start = if i == 0 {
            0
        } else {
            self.ends[i - 1] + self.gap
        };
        start..self.ends[i]
    }
}

/// A record's frame, as [`Frame`]'s fields of the same names.
#[derive(Debug, Clone, Copy)]
struct FrameLen {
    len: usize,
    lines: u64,
    skipped_bytes: usize,
    skipped_lines: u64,
}

/// Decodes CSV data rows (after the header) into typed values.
#[derive(Debug)]
pub struct CsvDecoder {
    rdr: CoreReader,
    /// csv-core's output, for lines the splitter leaves to it.
    fields: FieldsBuf,
    splitter: Splitter,
    /// Cell ends of the plain line being decoded.
    ends: Vec<usize>,
    conv: Converter,
    /// The records of a `decode_columns` call, framed before they are typed.
    framed: by_column::Framed,
}

/// Turns a record's cells into typed values.
#[derive(Debug)]
struct Converter {
    schema: Arc<Schema>,
    types: Vec<DataType>,
    nullable: Vec<bool>,
    /// One per column, for timestamp columns.
    dates: Vec<DateCache>,
    nulls: NullTokens,
}

/// `Fields` with a `Debug` that does not dump buffers.
struct FieldsBuf(Fields);

impl std::fmt::Debug for FieldsBuf {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("FieldsBuf")
    }
}

impl CsvDecoder {
    /// A decoder of rows into `schema`.
    pub fn new(options: &FormatOptions, schema: Arc<Schema>) -> Self {
        CsvDecoder {
            rdr: CoreReader::new(options),
            fields: FieldsBuf(Fields::new()),
            splitter: Splitter::new(options.delimiter, options.quote),
            ends: Vec::with_capacity(schema.len()),
            conv: Converter::new(options, schema),
            framed: by_column::Framed::default(),
        }
    }

    /// Frames up to `max` records and hands each one to `record`: its cells,
    /// where it starts in `input` when its cells are slices of it (`None`:
    /// csv-core's unescaped copy), and its frame.
    ///
    /// A record's cell ends are appended to `ends` (the cells' `ends` are
    /// that tail); they are kept there when `record` returns `true`.
    fn decode_with(
        &mut self,
        input: &[u8],
        eof: bool,
        max: usize,
        ends: &mut Vec<usize>,
        mut record: impl FnMut(&Converter, Cells<'_>, Option<usize>, FrameLen) -> bool,
    ) -> usize {
        let mut consumed = 0;
        let mut produced = 0;
        let mut frame_start = 0;
        // Line breaks since `frame_start`.
        let mut lines = 0;
        while produced < max && consumed < input.len() {
            let rest = &input[consumed..];
            let mark = ends.len();
            // The record's cells, where it starts, whether its cells are
            // slices of `input` (or of csv-core's copy), and the line breaks
            // before it; `record` is called once, below, so that it is
            // inlined here.
            let (cells, at, in_input, lines_before) = match self.splitter.split(rest, eof, ends) {
                Split::Incomplete => {
                    ends.truncate(mark);
                    break;
                }
                Split::Line { len, content } => {
                    let (at, lines_before) = (consumed, lines);
                    consumed += len;
                    lines += u64::from(rest[..len].last() == Some(&b'\n'));
                    let line = &rest[..content];
                    // A blank line is no record; its bytes count with the next one.
                    if is_blank(ends.len() - mark + 1, line) {
                        ends.truncate(mark);
                        continue;
                    }
                    ends.push(content);
                    let cells = Cells {
                        record: line,
                        ends: &ends[mark..],
                        gap: 1,
                    };
                    (cells, at, true, lines_before)
                }
                Split::NeedsCsvCore => {
                    ends.truncate(mark);
                    // Each quoted record is read from a fresh state: the
                    // lines between them never went through csv-core.
                    self.rdr.reset();
                    let Some((mut len, n)) = self.fields.0.read(&mut self.rdr, rest, eof) else {
                        // An incomplete record: wait for more input.
                        break;
                    };
                    // csv-core ends a record at its `\r`: the `\n` after it
                    // belongs to the same line break, so to this record.
                    if rest[..len].last() == Some(&b'\r') && rest.get(len) == Some(&b'\n') {
                        len += 1;
                    }
                    let bytes = &rest[..len];
                    let (at, lines_before) = (consumed, lines);
                    consumed += len;
                    lines += memchr::memchr_iter(b'\n', bytes).count() as u64;
                    if is_blank(n, bytes) {
                        continue;
                    }
                    let f = &self.fields.0;
                    ends.extend_from_slice(&f.ends[..n]);
                    let cells = Cells {
                        record: &f.out[..f.ends[n - 1]],
                        ends: &ends[mark..],
                        gap: 0,
                    };
                    (cells, at, false, lines_before)
                }
            };
            let keep = record(
                &self.conv,
                cells,
                in_input.then_some(at),
                FrameLen {
                    len: consumed - frame_start,
                    lines,
                    skipped_bytes: at - frame_start,
                    skipped_lines: lines_before,
                },
            );
            if !keep {
                ends.truncate(mark);
            }
            frame_start = consumed;
            lines = 0;
            produced += 1;
        }
        consumed
    }
}

impl Converter {
    fn new(options: &FormatOptions, schema: Arc<Schema>) -> Self {
        Converter {
            types: schema
                .fields()
                .iter()
                .map(|f| f.data_type.clone())
                .collect(),
            nullable: schema.fields().iter().map(|f| f.nullable).collect(),
            dates: schema
                .fields()
                .iter()
                .map(|_| DateCache::default())
                .collect(),
            schema,
            nulls: NullTokens::new(&options.null_tokens),
        }
    }

    fn convert(&self, cells: Cells<'_>) -> std::result::Result<Vec<FieldValue>, String> {
        let n = cells.ends.len();
        if n != self.types.len() {
            return Err(format!("expected {} fields, found {n}", self.types.len()));
        }
        // UTF-8 is checked once per record; a cell is then a slice of it,
        // unless the record is not valid text and the failing cell is wanted.
        let record = std::str::from_utf8(cells.record).ok();
        let mut failure = None;
        // Collected from an exact-size iterator, each value is written where
        // it is built. Pushed, a value lived across `push`'s grow call, so it
        // went through the stack and its 16-byte reload waited on the
        // narrower stores that had built it (perf annotate: 30% of the row
        // conversion on that one load).
        let values = (0..n)
            .map(|i| {
                self.value(i, cells, record).unwrap_or_else(|e| {
                    failure.get_or_insert(e);
                    FieldValue::Null
                })
            })
            .collect();
        match failure {
            None => Ok(values),
            Some(e) => Err(e),
        }
    }

    /// Appends the record's values to `columns` as one row; a bad record
    /// adds nothing and gives its first bad cell's reason, as `convert` does.
    fn push_row(
        &self,
        cells: Cells<'_>,
        columns: &mut impl BatchSink,
    ) -> std::result::Result<(), String> {
        let n = cells.ends.len();
        if n != self.types.len() {
            return Err(format!("expected {} fields, found {n}", self.types.len()));
        }
        let record = std::str::from_utf8(cells.record).ok();
        let row = columns.rows();
        columns.begin_rows(1, |i| cells.range(i).len());
        columns.begin_block(1);
        for i in 0..n {
            if let Err(e) = self.push_cell(i, cells, record, columns.column(i)) {
                columns.truncate(row);
                return Err(e);
            }
        }
        columns.end_rows(1);
        Ok(())
    }

    /// Appends cell `i` to its column (`record` as in [`Self::value`]).
    #[inline(always)]
    fn push_cell(
        &self,
        i: usize,
        cells: Cells<'_>,
        record: Option<&str>,
        mut column: impl ColumnSink,
    ) -> std::result::Result<(), String> {
        let Some(cell) = self.text(i, cells, record)? else {
            column.push_null();
            return Ok(());
        };
        let ty = &self.types[i];
        let pushed = match ty {
            DataType::String | DataType::Any => {
                column.push_str(cell);
                return Ok(());
            }
            DataType::Integer => trim(cell).parse().ok().map(|v| column.push_integer(v)),
            DataType::Float => parse_float(trim(cell)).map(|v| column.push_float(v)),
            DataType::Boolean => parse_bool(trim(cell)).map(|v| column.push_boolean(v)),
            DataType::Timestamp => {
                parse_timestamp_with(cell, &self.dates[i]).map(|v| column.push_timestamp(v))
            }
            _ => None,
        };
        if pushed.is_none() {
            column.push(self.parse_other(i, cell)?);
        }
        Ok(())
    }

    /// The value of cell `i` (`record` is the record as text, if it is valid UTF-8).
    #[inline(always)]
    fn value(
        &self,
        i: usize,
        cells: Cells<'_>,
        record: Option<&str>,
    ) -> std::result::Result<FieldValue, String> {
        let Some(cell) = self.text(i, cells, record)? else {
            return Ok(FieldValue::Null);
        };
        // The common cell types are parsed here; a cell that does not parse
        // goes to `parse_other` for its error.
        let parsed = match &self.types[i] {
            DataType::String | DataType::Any => return Ok(FieldValue::String(cell.into())),
            DataType::Integer => trim(cell).parse().ok().map(FieldValue::Integer),
            DataType::Float => parse_float(trim(cell)).map(FieldValue::Float),
            DataType::Boolean => parse_bool(trim(cell)).map(FieldValue::Boolean),
            DataType::Timestamp => {
                parse_timestamp_with(cell, &self.dates[i]).map(FieldValue::Timestamp)
            }
            _ => None,
        };
        match parsed {
            Some(v) => Ok(v),
            None => self.parse_other(i, cell),
        }
    }

    /// Cell `i` as text, or `None` for an accepted null token.
    #[inline(always)]
    fn text<'a>(
        &self,
        i: usize,
        cells: Cells<'a>,
        record: Option<&'a str>,
    ) -> std::result::Result<Option<&'a str>, String> {
        let range = cells.range(i);
        let cell = match record.and_then(|r| r.get(range.clone())) {
            Some(cell) => cell,
            None => std::str::from_utf8(&cells.record[range])
                .map_err(|e| format!("column `{}`: invalid UTF-8 ({e})", self.name(i)))?,
        };
        if !self.nulls.matches(cell) {
            Ok(Some(cell))
        } else if self.nullable[i] {
            Ok(None)
        } else {
            Err(format!(
                "column `{}`: null in a non-nullable column",
                self.name(i)
            ))
        }
    }

    /// A cell of the less common types, or why a cell is not of its column's type.
    #[cold]
    fn parse_other(&self, i: usize, cell: &str) -> std::result::Result<FieldValue, String> {
        FieldValue::parse_text(cell, &self.types[i])
            .map_err(|e| format!("column `{}`: {e}", self.name(i)))
    }

    fn name(&self, i: usize) -> &str {
        &self.schema.fields()[i].name
    }
}

impl Decoder for CsvDecoder {
    fn decode(&mut self, input: &[u8], eof: bool, max: usize, out: &mut Vec<Frame>) -> usize {
        let mut ends = std::mem::take(&mut self.ends);
        ends.clear();
        let consumed = self.decode_with(input, eof, max, &mut ends, |conv, cells, _, f| {
            out.push(Frame {
                len: f.len,
                lines: f.lines,
                skipped_bytes: f.skipped_bytes,
                skipped_lines: f.skipped_lines,
                result: conv.convert(cells),
                schema: conv.schema.clone(),
            });
            false
        });
        self.ends = ends;
        consumed
    }

    fn decode_columns(
        &mut self,
        input: &[u8],
        eof: bool,
        max: usize,
        out: &mut Vec<Span>,
        columns: &mut Columns,
    ) -> Option<usize> {
        self.decode_into(input, eof, max, out, columns)
    }

    fn decode_rows(
        &mut self,
        input: &[u8],
        eof: bool,
        max: usize,
        out: &mut Vec<Span>,
        rows: &mut Rows,
    ) -> Option<usize> {
        self.decode_into(input, eof, max, out, rows)
    }

    fn schema(&self) -> Arc<Schema> {
        self.conv.schema.clone()
    }
}

/// Whether a record of `fields` cells read from `bytes` is a blank line
/// (or only line breaks), which is no record.
fn is_blank(fields: usize, bytes: &[u8]) -> bool {
    fields <= 1 && bytes.iter().all(u8::is_ascii_whitespace)
}

/// Reads the header (or counts columns) and samples rows for types.
pub(super) fn infer(options: &FormatOptions, sample: &[u8], eof: bool) -> Result<Inferred> {
    let mut rdr = CoreReader::new(options);
    let mut fields = Fields::new();
    let mut pos = 0;
    // Skip blank lines before the header.
    let mut header: Option<Vec<String>> = None;
    let mut header_len = 0;
    // Rows are observed as they are read, their cells borrowed from csv-core's output.
    let mut inferrer: Option<SchemaInferrer> = None;
    let mut sampled = 0;
    // A given schema needs only the header (or that there is a first row).
    let mut have_enough = false;
    while pos < sample.len() && sampled < options.sample_rows {
        let Some((mut len, n)) = fields.read(&mut rdr, &sample[pos..], eof) else {
            break;
        };
        // A `\r\n` belongs to the record it ends (csv-core stops at the `\r`).
        if len > 0 && sample[pos + len - 1] == b'\r' && sample.get(pos + len) == Some(&b'\n') {
            len += 1;
        }
        let bytes = &sample[pos..pos + len];
        pos += len;
        if is_blank(n, bytes) {
            if header.is_none() {
                header_len = pos;
            }
            continue;
        }
        // `from_utf8` checks ASCII a word at a time; `from_utf8_lossy`
        // (for the rare invalid cell) goes by chunks and cost more than the
        // inference of the sampled cells.
        let cells = (0..n).map(|i| {
            let cell = fields.field(i);
            std::str::from_utf8(cell).map_or_else(|_| String::from_utf8_lossy(cell), Cow::Borrowed)
        });
        if header.is_none() && options.has_header {
            header = Some(dedup_names(cells.map(|c| c.into_owned()).collect()));
            header_len = pos;
            if options.schema.is_some() {
                have_enough = true;
                break;
            }
            continue;
        }
        let names = header.get_or_insert_with(|| (0..n).map(|i| format!("col_{i}")).collect());
        if options.schema.is_some() {
            have_enough = true;
            break;
        }
        inferrer
            .get_or_insert_with(|| SchemaInferrer::new(names.iter().cloned(), options.inference()))
            .observe_text_row(cells);
        sampled += 1;
    }
    let needs_more = !eof && !have_enough && sampled < options.sample_rows;
    let names = header.unwrap_or_default();
    if let Some(given) = &options.schema {
        if options.has_header && !names.is_empty() && names.len() != given.len() {
            return Err(Error::Schema(format!(
                "the header has {} columns but the given schema has {}",
                names.len(),
                given.len()
            )));
        }
        return Ok(Inferred {
            schema: given.clone(),
            header_len,
            needs_more,
        });
    }
    if names.is_empty() {
        return Err(Error::Schema(
            "no header and no rows to infer a schema from".into(),
        ));
    }
    let schema = match inferrer {
        Some(inferrer) => inferrer.finish(),
        // Only a header: every column is a nullable string until data says otherwise.
        None => Schema::new(
            names
                .into_iter()
                .map(|n| FieldDefinition::optional(n, DataType::String))
                .collect(),
        ),
    };
    Ok(Inferred {
        schema: Arc::new(schema),
        header_len,
        needs_more,
    })
}

/// Header names made unique (`a, a` → `a, a_1`) and never empty (`col_3`).
fn dedup_names(cells: Vec<String>) -> Vec<String> {
    let mut seen = std::collections::HashSet::new();
    cells
        .into_iter()
        .enumerate()
        .map(|(i, c)| {
            let base = if c.trim().is_empty() {
                format!("col_{i}")
            } else {
                c.trim().to_owned()
            };
            let mut name = base.clone();
            let mut n = 1;
            while !seen.insert(name.clone()) {
                name = format!("{base}_{n}");
                n += 1;
            }
            name
        })
        .collect()
}

/// Writes records as CSV with `csv-core`'s quoting, straight into the output buffer.
pub struct CsvEncoder {
    writer: csv_core::Writer,
    has_header: bool,
    /// The text of a record's non-string cells, end to end, reused.
    cell: Vec<u8>,
    /// Where each cell's text is in `cell`.
    texts: Vec<(usize, usize)>,
}

impl std::fmt::Debug for CsvEncoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CsvEncoder")
            .field("has_header", &self.has_header)
            .finish()
    }
}

impl CsvEncoder {
    /// An encoder with `options`' delimiter, quote, escape and header setting.
    pub fn new(options: &FormatOptions) -> Self {
        let mut b = csv_core::WriterBuilder::new();
        b.delimiter(options.delimiter).quote(options.quote);
        if let Some(e) = options.escape {
            b.escape(e).double_quote(false);
        }
        CsvEncoder {
            writer: b.build(),
            has_header: options.has_header,
            cell: Vec::new(),
            texts: Vec::new(),
        }
    }

    /// Writes one record of `cells`. csv-core writes a record of one empty
    /// cell as `""`, so that it is not read back as a blank line (this
    /// encoder once wrote those quotes too, and the record read back as `"`).
    fn record<'a>(&mut self, cells: impl ExactSizeIterator<Item = &'a [u8]>, out: &mut Vec<u8>) {
        let single = cells.len() == 1;
        // Delimiters and terminators (with a closing quote, or a lone cell's
        // `""`) are at most four bytes; csv-core writes them here first.
        let mut small = [0u8; 4];
        for (i, cell) in cells.enumerate() {
            if i > 0 {
                let (_, n) = self.writer.delimiter(&mut small);
                put_short(&small[..n], out);
            }
            // A cell without anything to quote is copied as it is, as
            // csv-core would. Its writer keeps no state for such a cell but
            // the record's byte count, which decides the lone empty cell's
            // quotes: in a record of more than one cell the delimiters
            // already make it nonzero.
            if !single && !self.writer.should_quote(cell) {
                out.extend_from_slice(cell);
                continue;
            }
            // Quoting at most doubles a field and adds two quotes.
            let start = out.len();
            out.resize(start + cell.len() * 2 + 2, 0);
            let (_, nin, nout) = self.writer.field(cell, &mut out[start..]);
            debug_assert_eq!(nin, cell.len());
            out.truncate(start + nout);
        }
        let (_, n) = self.writer.terminator(&mut small);
        put_short(&small[..n], out);
    }
}

/// Appends a delimiter or terminator: one byte, nearly always, pushed
/// rather than copied through a `memcpy` call.
#[inline]
fn put_short(bytes: &[u8], out: &mut Vec<u8>) {
    match bytes {
        [b] => out.push(*b),
        more => out.extend_from_slice(more),
    }
}

impl Encoder for CsvEncoder {
    fn begin(&mut self, schema: &Schema, out: &mut Vec<u8>) -> Result<()> {
        if self.has_header {
            let names: Vec<&[u8]> = schema.names().map(str::as_bytes).collect();
            self.record(names.into_iter(), out);
        }
        Ok(())
    }

    fn encode(&mut self, record: &StreamRecord, out: &mut Vec<u8>) -> Result<()> {
        // Non-string cells are rendered into one reused buffer, then
        // written; the common types without `core::fmt`, as `Display`
        // writes them.
        let mut texts = std::mem::take(&mut self.texts);
        texts.clear();
        self.cell.clear();
        for value in record.values() {
            let start = self.cell.len();
            match value {
                FieldValue::String(_) | FieldValue::Null => {}
                FieldValue::Integer(i) => self
                    .cell
                    .extend_from_slice(itoa::Buffer::new().format(*i).as_bytes()),
                FieldValue::Timestamp(t) => self
                    .cell
                    .extend_from_slice(TimestampText::new(t).as_bytes()),
                other => {
                    let _ = write!(self.cell, "{other}");
                }
            }
            texts.push((start, self.cell.len()));
        }
        let cell = std::mem::take(&mut self.cell);
        let cells = record
            .values()
            .iter()
            .zip(&texts)
            .map(|(v, (a, b))| match v {
                FieldValue::String(s) => s.as_bytes(),
                _ => &cell[*a..*b],
            });
        self.record(cells, out);
        self.cell = cell;
        self.texts = texts;
        Ok(())
    }

    fn finish(&mut self, _out: &mut Vec<u8>) -> Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::FileFormat;

    fn opts() -> FormatOptions {
        FormatOptions::new(FileFormat::Csv)
    }

    /// Decodes `data` fed `chunk` bytes at a time; checks that every byte
    /// after the header was consumed exactly once.
    fn decode_all(data: &[u8], chunk: usize) -> (Inferred, Vec<Frame>) {
        decode_all_with(&opts(), data, chunk)
    }

    /// [`decode_all`] with `options`. Blank lines a call consumes after its
    /// last frame count with the next frame (bytes and line breaks), as the
    /// file reader counts them; those after the last frame with none.
    fn decode_all_with(
        options: &FormatOptions,
        data: &[u8],
        chunk: usize,
    ) -> (Inferred, Vec<Frame>) {
        let inferred = infer(options, data, true).unwrap();
        let mut dec = CsvDecoder::new(options, inferred.schema.clone());
        let mut frames = Vec::new();
        let mut buf: Vec<u8> = Vec::new();
        let mut fed = inferred.header_len;
        let mut consumed = 0;
        let (mut carried, mut carried_lines) = (0, 0);
        // Feed in small chunks, as a tailing reader would.
        loop {
            let end = (fed + chunk).min(data.len());
            buf.extend_from_slice(&data[fed..end]);
            fed = end;
            let eof = fed == data.len();
            let before = frames.len();
            let used = dec.decode(&buf, eof, usize::MAX, &mut frames);
            // What a call consumes after its last frame is blank lines.
            let framed: usize = frames[before..].iter().map(|f| f.len).sum();
            let blank = &buf[framed..used];
            assert!(blank.iter().all(u8::is_ascii_whitespace));
            if let Some(next) = frames.get_mut(before) {
                next.len += std::mem::take(&mut carried);
                next.lines += std::mem::take(&mut carried_lines);
            }
            carried += blank.len();
            carried_lines += blank.iter().filter(|&&b| b == b'\n').count() as u64;
            consumed += used;
            buf.drain(..used);
            if eof && buf.is_empty() {
                break;
            }
            if eof && used == 0 {
                panic!("stuck with {} bytes", buf.len());
            }
        }
        assert_eq!(consumed + inferred.header_len, data.len());
        assert_eq!(
            frames.iter().map(|f| f.len).sum::<usize>() + carried,
            consumed
        );
        (inferred, frames)
    }

    const DATA: &[u8] = b"id,name,price,at\n1,\"Smith, J\",9.5,2024-01-15T10:30:00Z\n2,\"line\nbreak \"\"quoted\"\"\",,2024-01-15T10:31:00Z\n\n3,\xc3\xa9t\xc3\xa9,NA,2024-01-15T10:32:00Z";

    #[test]
    fn typed_rows_any_chunking() {
        for chunk in [1, 3, 7, 64, 4096] {
            let (inf, frames) = decode_all(DATA, chunk);
            let s = &inf.schema;
            assert_eq!(s.fields()[0].data_type, DataType::Integer, "chunk {chunk}");
            assert_eq!(s.fields()[2].data_type, DataType::Float);
            assert_eq!(s.fields()[3].data_type, DataType::Timestamp);
            assert_eq!(frames.len(), 3, "chunk {chunk}");
            let rows: Vec<_> = frames.iter().map(|f| f.result.clone().unwrap()).collect();
            assert_eq!(rows[0][1], FieldValue::from("Smith, J"));
            assert_eq!(rows[1][1], FieldValue::from("line\nbreak \"quoted\""));
            assert!(rows[1][2].is_null());
            assert_eq!(rows[2][1], FieldValue::from("été"));
            assert!(
                frames[1].lines >= 2,
                "the quoted line break and the terminator"
            );
        }
    }

    /// The cells csv-core alone reads from `data`, blank records left out:
    /// what the splitter's fast path must agree with.
    fn csv_core_rows(data: &[u8]) -> Vec<Vec<String>> {
        let mut rdr = CoreReader::new(&opts());
        let mut fields = Fields::new();
        let mut rows = Vec::new();
        let mut pos = 0;
        while let Some((len, n)) = fields.read(&mut rdr, &data[pos..], true) {
            let bytes = &data[pos..pos + len];
            pos += len;
            if n == 0 || (n == 1 && bytes.iter().all(u8::is_ascii_whitespace)) {
                continue;
            }
            rows.push(
                (0..n)
                    .map(|i| String::from_utf8(fields.field(i).to_vec()).unwrap())
                    .collect(),
            );
        }
        rows
    }

    /// `columns` as a batch, each row at offset 0.
    fn meta() -> crate::columns::RowMeta {
        crate::columns::RowMeta {
            offset: 0,
            partition: 0,
            timestamp: chrono::DateTime::UNIX_EPOCH,
            event_time: None,
        }
    }

    fn batch_of(columns: Columns) -> crate::columns::ColumnBatch {
        let rows = vec![meta(); columns.rows()];
        crate::columns::ColumnBatch::new(columns, rows).unwrap()
    }

    /// Every record of `data` (no header) decoded by `decode`, by
    /// `decode_columns` and by `decode_rows`, `max` records per call: the
    /// frames must be the same, and the columns and the rows must hold the
    /// good records' values in order.
    fn assert_columns_agree_with_rows(options: &FormatOptions, data: &[u8], max: usize) {
        let schema = options.schema.clone().unwrap();
        let mut rows_dec = CsvDecoder::new(options, schema.clone());
        let mut cols_dec = CsvDecoder::new(options, schema.clone());
        let mut in_place_dec = CsvDecoder::new(options, schema.clone());
        let (mut rows, mut framed, mut framed_in_place) = (Vec::new(), Vec::new(), Vec::new());
        let mut columns = Columns::new(schema.clone());
        let mut in_place = Rows::new(schema.clone());
        let (mut at_rows, mut at_cols, mut at_in_place) = (0, 0, 0);
        while at_rows < data.len() {
            at_rows += rows_dec.decode(&data[at_rows..], true, max, &mut rows);
            let used = cols_dec
                .decode_columns(&data[at_cols..], true, max, &mut framed, &mut columns)
                .unwrap();
            at_cols += used;
            assert_eq!(at_rows, at_cols);
            let used = in_place_dec
                .decode_rows(
                    &data[at_in_place..],
                    true,
                    max,
                    &mut framed_in_place,
                    &mut in_place,
                )
                .unwrap();
            at_in_place += used;
            assert_eq!(at_rows, at_in_place);
        }
        assert_eq!(framed, framed_in_place);
        let in_place_rows = in_place.rows();
        let records = in_place.into_records(&vec![meta(); in_place_rows]).unwrap();
        let span = |f: &Frame| Span {
            len: f.len,
            lines: f.lines,
            skipped_bytes: f.skipped_bytes,
            skipped_lines: f.skipped_lines,
            error: f.result.as_ref().err().cloned(),
        };
        assert_eq!(rows.iter().map(span).collect::<Vec<_>>(), framed);
        let good: Vec<Vec<FieldValue>> = rows.into_iter().filter_map(|f| f.result.ok()).collect();
        assert_eq!(columns.rows(), good.len());
        let batch = batch_of(columns);
        for (i, values) in good.iter().enumerate() {
            assert_eq!(batch.record(i).values(), &values[..], "row {i}");
            assert_eq!(records[i].values(), &values[..], "row {i} in place");
        }
    }

    #[test]
    fn columns_hold_what_rows_hold() {
        let mut o = opts();
        o.schema = Some(Arc::new(
            crate::format::parse_schema_spec(
                "i:int?,f:float?,b:bool?,t:timestamp?,s:string?,d:date?,n:decimal?,a:any?,r:int",
            )
            .unwrap(),
        ));
        let data: &[u8] = b"1,1.5,true,2024-01-15T10:30:00Z,plain,2024-01-15,1.25,x,9\n\
                    NA, 2.5 ,false,,\"quoted, \"\"text\"\"\",,,,8\n\
                    \n\
                    x,1,true,2024-01-15T10:30:00Z,bad int,2024-01-15,1,y,7\n\
                    3,1,maybe,2024-01-15T10:30:00Z,bad bool,2024-01-15,1,y,6\n\
                    4,1,true,2024-01-15T10:30:00Z,no r,2024-01-15,1,y,\n\
                    5,1,true,2024-01-15T10:30:00Z,short row\n\
                    6,\xff,true,2024-01-15T10:30:00Z,bad utf8,2024-01-15,1,y,5\n\
                    8,2,true,2024-01-15T12:30:00.5+02:00,an offset,2024-01-15,1,y,3\n\
                    7,3,false,2024-01-16 00:00:01,\xc3\xa9t\xc3\xa9,2024-02-01,-0.5,\"z\",4";
        for max in [1, 2, 3, 1000] {
            assert_columns_agree_with_rows(&o, data, max);
        }
    }

    /// Integer cells read a word at a time: negative, zero-padded, nine
    /// digits (the slow path), spaces, and a null token that is a number,
    /// which must stay null.
    #[test]
    fn integer_cells_short_long_and_null_tokens() {
        let data: &[u8] = b"12345678,-7\n00000042,-12345678\n123456789,0\n 5 ,-1\n+3,-0\n";
        let mut o = opts();
        o.schema = Some(Arc::new(
            crate::format::parse_schema_spec("a:int?,b:int?").unwrap(),
        ));
        for max in [1, 1000] {
            assert_columns_agree_with_rows(&o, data, max);
        }
        let mut dec = CsvDecoder::new(&o, o.schema.clone().unwrap());
        let mut columns = Columns::new(o.schema.clone().unwrap());
        dec.decode_columns(data, true, 1000, &mut Vec::new(), &mut columns);
        let b = |c: &Columns, i: usize| {
            let batch = batch_of(c.clone());
            (0..batch.len())
                .map(|r| batch.column(i).get(r))
                .collect::<Vec<_>>()
        };
        use FieldValue::{Integer as I, Null};
        assert_eq!(
            b(&columns, 0),
            [I(12_345_678), I(42), I(123_456_789), I(5), I(3)]
        );
        assert_eq!(b(&columns, 1), [I(-7), I(-12_345_678), I(0), I(-1), I(0)]);
        o.null_tokens = vec!["-1".into(), "0".into()];
        let mut dec = CsvDecoder::new(&o, o.schema.clone().unwrap());
        let mut columns = Columns::new(o.schema.clone().unwrap());
        dec.decode_columns(data, true, 1000, &mut Vec::new(), &mut columns);
        assert_eq!(b(&columns, 1), [I(-7), I(-12_345_678), Null, Null, I(0)]);
        assert_columns_agree_with_rows(&o, data, 1000);
        // A bad cell sends the call through the record-at-a-time path.
        assert_columns_agree_with_rows(&o, b"1,2\n-,3\n", 1000);
    }

    /// Float cells read a word at a time, those that are not, and null
    /// tokens that read as decimals; text cells before and after a null.
    #[test]
    fn float_and_text_cells_short_long_and_null_tokens() {
        let data: &[u8] = b"100.23,x
-0.5,
+7,y
.5,NA
1234.5678,z
 2.5 ,w
1e3,v
0.0,NA
-1,u
";
        let mut o = opts();
        o.schema = Some(Arc::new(
            crate::format::parse_schema_spec("a:float?,b:string?").unwrap(),
        ));
        o.null_tokens = vec![String::new(), "NA".into()];
        let decoded = |o: &FormatOptions| {
            let mut dec = CsvDecoder::new(o, o.schema.clone().unwrap());
            let mut columns = Columns::new(o.schema.clone().unwrap());
            dec.decode_columns(data, true, 1000, &mut Vec::new(), &mut columns);
            let batch = batch_of(columns);
            (0..2)
                .map(|i| (0..batch.len()).map(|r| batch.column(i).get(r)).collect())
                .collect::<Vec<Vec<_>>>()
        };
        use FieldValue::{Float as F, Null, String as S};
        let got = decoded(&o);
        assert_eq!(
            got[0],
            [
                F(100.23),
                F(-0.5),
                F(7.0),
                F(0.5),
                F(1234.5678),
                F(2.5),
                F(1000.0),
                F(0.0),
                F(-1.0)
            ]
        );
        let text = |t: &str| S(t.into());
        assert_eq!(
            got[1],
            [
                text("x"),
                Null,
                text("y"),
                Null,
                text("z"),
                text("w"),
                text("v"),
                Null,
                text("u")
            ]
        );
        assert_columns_agree_with_rows(&o, data, 1000);
        // Null tokens that read as decimals are nulls, not numbers.
        o.null_tokens = vec!["0.0".into(), "-1".into()];
        assert_eq!(decoded(&o)[0][6..], [F(1000.0), Null, Null]);
        assert_columns_agree_with_rows(&o, data, 1000);
    }

    /// Calls of many typing blocks: clean, with a quoted row in a later
    /// block, and with a bad cell in a later block (the whole call is then
    /// typed record by record).
    #[test]
    fn columns_over_many_blocks() {
        let mut o = opts();
        o.schema = Some(Arc::new(
            crate::format::parse_schema_spec("i:int,s:string?,t:timestamp").unwrap(),
        ));
        let row = |i: usize| format!("{i},s{i},2024-01-15T10:30:{:02}Z\n", i % 60);
        let clean: String = (0..300).map(row).collect();
        let quoted: String = (0..300)
            .map(|i| {
                if i == 200 {
                    "200,\"a,\"\"b\"\"\",2024-01-15T10:30:00Z\n".to_owned()
                } else {
                    row(i)
                }
            })
            .collect();
        let bad: String = (0..300)
            .map(|i| {
                if i == 250 {
                    "x,s,2024-01-15T10:30:00Z\n".to_owned()
                } else {
                    row(i)
                }
            })
            .collect();
        for data in [clean, quoted, bad] {
            for max in [1000, 100, 7] {
                assert_columns_agree_with_rows(&o, data.as_bytes(), max);
            }
        }
    }

    proptest::proptest! {
        #[test]
        fn fast_path_agrees_with_csv_core(
            records in proptest::collection::vec(
                (
                    proptest::collection::vec(
                        proptest::sample::select(vec![
                            "", "a", "hello world", "\u{e9}t\u{e9}", "12345678901", " sp ",
                            "x\"y", "\"a,b\"", "\"line\nbreak\"", "\"q\"\"q\"", "\"\"",
                        ]),
                        2..=3,
                    ),
                    proptest::sample::select(vec!["\n", "\r\n", "\r", "\n\n", "\r\n\r\n", "\n  \n"]),
                ),
                1..40,
            ),
            last_terminated in proptest::bool::ANY,
            chunk in 1usize..80,
        ) {
            let mut text = String::from("c0,c1,c2\n");
            for (i, (cells, term)) in records.iter().enumerate() {
                text.push_str(&cells.join(","));
                if i + 1 < records.len() || last_terminated {
                    text.push_str(term);
                }
            }
            let data = text.as_bytes();
            let mut o = opts();
            o.null_tokens = Vec::new();
            o.schema = Some(Arc::new(crate::format::parse_schema_spec("c0:string?,c1:string?,c2:string?").unwrap()));
            let (inferred, frames) = decode_all_with(&o, data, chunk);
            assert_columns_agree_with_rows(&o, &data[inferred.header_len..], chunk);
            let expected = csv_core_rows(&data[inferred.header_len..]);
            proptest::prop_assert_eq!(frames.len(), expected.len());
            for (frame, cells) in frames.iter().zip(&expected) {
                match &frame.result {
                    Ok(values) => {
                        let got: Vec<String> = values.iter().map(|v| v.as_str().unwrap().to_owned()).collect();
                        proptest::prop_assert_eq!(&got, cells);
                    }
                    Err(e) => proptest::prop_assert!(cells.len() != 3, "{}: {:?}", e, cells),
                }
            }
            // Every line break is some frame's, but those of blank lines after the last record.
            let after_last = inferred.header_len + frames.iter().map(|f| f.len).sum::<usize>();
            let newlines = |b: &[u8]| b.iter().filter(|&&b| b == b'\n').count() as u64;
            let counted: u64 = frames.iter().map(|f| f.lines).sum();
            proptest::prop_assert_eq!(
                counted + newlines(&data[after_last..]),
                newlines(&data[inferred.header_len..])
            );
        }
    }

    #[test]
    fn crlf_records_end_on_their_own_line() {
        let data = b"id,name\r\n1,a\r\n2,\"b\r\nc\"\r\n3,d\r\n";
        let (inf, frames) = decode_all(data, 4096);
        assert_eq!(inf.header_len, 9, "the header's \\r\\n is the header's");
        let lens: Vec<_> = frames.iter().map(|f| (f.len, f.lines)).collect();
        assert_eq!(lens, vec![(5, 1), (10, 2), (5, 1)]);
    }

    #[test]
    fn a_short_sample_asks_for_more_until_it_has_its_rows() {
        let mut o = opts();
        o.sample_rows = 2;
        // The third line is cut: only one row.
        let cut = infer(&o, b"a,b\n1,2\n3,", false).unwrap();
        assert!(cut.needs_more);
        assert!(!infer(&o, b"a,b\n1,2\n3,", true).unwrap().needs_more);
        assert!(!infer(&o, b"a,b\n1,2\n3,4\n", false).unwrap().needs_more);
        // No whole row yet: an error now, but more input may fix it.
        assert!(infer(&o, b"a,b", false).is_err());
        // A given schema needs the header only.
        o.schema = Some(Arc::new(Schema::new(vec![
            FieldDefinition::new("a", DataType::Integer, false),
            FieldDefinition::new("b", DataType::Integer, false),
        ])));
        assert!(!infer(&o, b"a,b\n1,", false).unwrap().needs_more);
        assert!(infer(&o, b"a,", false).unwrap().needs_more);
    }

    #[test]
    fn incomplete_tail_waits_for_more() {
        let inferred = infer(&opts(), b"a,b\n1,2\n", true).unwrap();
        let mut dec = CsvDecoder::new(&opts(), inferred.schema.clone());
        let mut frames = Vec::new();
        assert_eq!(dec.decode(b"3,4\n5,", false, 10, &mut frames), 4);
        assert_eq!(frames.len(), 1);
        assert_eq!(dec.decode(b"5,", false, 10, &mut frames), 0);
        assert_eq!(dec.decode(b"5,6", true, 10, &mut frames), 3);
        assert_eq!(frames[1].result, Ok(vec![5.into(), 6.into()]));
    }

    #[test]
    fn bad_rows_are_frames_with_reasons() {
        let inferred = infer(&opts(), b"a,b\n1,2\n", true).unwrap();
        let mut dec = CsvDecoder::new(&opts(), inferred.schema.clone());
        let mut frames = Vec::new();
        dec.decode(b"x,2\n1\n1,2,3\n7,8\n", true, 10, &mut frames);
        let errs: Vec<_> = frames.iter().map(|f| f.result.clone().err()).collect();
        assert_eq!(
            errs[0].as_deref(),
            Some("column `a`: cannot read `x` as INTEGER")
        );
        assert_eq!(errs[1].as_deref(), Some("expected 2 fields, found 1"));
        assert_eq!(errs[2].as_deref(), Some("expected 2 fields, found 3"));
        assert_eq!(errs[3], None);
    }

    #[test]
    fn invalid_utf8_names_its_column_and_split_characters_are_caught() {
        let inferred = infer(&opts(), b"a,b,c\nx,y,z\n", true).unwrap();
        let mut dec = CsvDecoder::new(&opts(), inferred.schema.clone());
        let mut frames = Vec::new();
        // The second cell is not UTF-8; then two cells whose bytes, end to
        // end, would make one valid character (each alone is invalid).
        dec.decode(
            b"ok,\xff,ok\n\xc3,\xa9,x\n\xc3\xa9,\xc3\xbc,x\n",
            true,
            10,
            &mut frames,
        );
        let results: Vec<_> = frames.iter().map(|f| f.result.clone()).collect();
        assert!(
            results[0]
                .as_ref()
                .unwrap_err()
                .starts_with("column `b`: invalid UTF-8"),
            "{results:?}"
        );
        assert!(
            results[1]
                .as_ref()
                .unwrap_err()
                .starts_with("column `a`: invalid UTF-8"),
            "{results:?}"
        );
        assert_eq!(results[2], Ok(vec!["é".into(), "ü".into(), "x".into()]));
    }

    #[test]
    fn no_header_and_duplicate_names() {
        let mut o = opts();
        o.has_header = false;
        let inf = infer(&o, b"1,x\n2,y\n", true).unwrap();
        assert_eq!(inf.schema.names().collect::<Vec<_>>(), ["col_0", "col_1"]);
        assert_eq!(inf.header_len, 0);
        let inf = infer(&opts(), b"a,a,\n1,2,3\n", true).unwrap();
        assert_eq!(
            inf.schema.names().collect::<Vec<_>>(),
            ["a", "a_1", "col_2"]
        );
    }

    /// What csv-core writes for `records`, every cell through its `field`
    /// and non-string values through `Display`: the encoder's reference.
    fn csv_core_writes(options: &FormatOptions, records: &[Vec<FieldValue>]) -> Vec<u8> {
        let mut b = csv_core::WriterBuilder::new();
        b.delimiter(options.delimiter).quote(options.quote);
        if let Some(e) = options.escape {
            b.escape(e).double_quote(false);
        }
        let mut w = b.build();
        let mut out = vec![0; 1 << 16];
        let mut n = 0;
        for values in records {
            for (i, v) in values.iter().enumerate() {
                if i > 0 {
                    n += w.delimiter(&mut out[n..]).1;
                }
                n += w.field(v.to_string().as_bytes(), &mut out[n..]).2;
            }
            n += w.terminator(&mut out[n..]).1;
        }
        out.truncate(n);
        out
    }

    /// A cell of any type the encoder renders itself or through `Display`,
    /// text with every byte csv-core may quote or escape.
    fn any_cell() -> impl proptest::strategy::Strategy<Value = FieldValue> {
        use proptest::prelude::*;
        prop_oneof![
            "[a-c,;\"'\\\\\r\n ]{0,5}".prop_map(|s| FieldValue::String(s.into())),
            any::<i64>().prop_map(FieldValue::Integer),
            any::<bool>().prop_map(FieldValue::Boolean),
            any::<f64>().prop_map(FieldValue::Float),
            Just(FieldValue::Null),
            (-50_000_000_000i64..300_000_000_000, 0usize..4).prop_map(|(s, n)| {
                let nanos = [0, 123_000_000, 450_000, 7][n];
                FieldValue::Timestamp(chrono::DateTime::from_timestamp(s, nanos).unwrap())
            }),
        ]
    }

    proptest::proptest! {
        #[test]
        fn encoder_writes_what_csv_core_writes(
            records in proptest::collection::vec(proptest::collection::vec(any_cell(), 1..4), 1..5),
            delimiter in proptest::sample::select(vec![b',', b';']),
            escape in proptest::sample::select(vec![None, Some(b'\\')]),
        ) {
            let mut o = opts();
            o.delimiter = delimiter;
            o.escape = escape;
            let mut enc = CsvEncoder::new(&o);
            let mut ours = Vec::new();
            for values in &records {
                let names = (0..values.len()).map(|i| FieldDefinition::optional(format!("c{i}"), DataType::Any));
                let schema = Arc::new(Schema::new(names.collect()));
                enc.encode(&StreamRecord::new(schema, values.clone()).unwrap(), &mut ours).unwrap();
            }
            let expected = csv_core_writes(&o, &records);
            proptest::prop_assert_eq!(String::from_utf8_lossy(&ours), String::from_utf8_lossy(&expected));
        }
    }

    #[test]
    fn a_lone_empty_cell_reads_back_empty() {
        let schema = Arc::new(Schema::new(vec![FieldDefinition::optional(
            "a",
            DataType::String,
        )]));
        let mut enc = CsvEncoder::new(&opts());
        let mut out = Vec::new();
        enc.begin(&schema, &mut out).unwrap();
        for v in [
            FieldValue::from("x"),
            FieldValue::Null,
            FieldValue::from(""),
        ] {
            enc.encode(
                &StreamRecord::new(schema.clone(), vec![v]).unwrap(),
                &mut out,
            )
            .unwrap();
        }
        assert_eq!(out, b"a\nx\n\"\"\n\"\"\n");
        let (_, frames) = decode_all(&out, 4096);
        let values: Vec<_> = frames.into_iter().map(|f| f.result.unwrap()).collect();
        assert_eq!(
            values,
            [
                vec![FieldValue::from("x")],
                vec![FieldValue::Null],
                vec![FieldValue::Null]
            ]
        );
    }

    #[test]
    fn encode_then_decode_is_identity() {
        let (inf, frames) = decode_all(DATA, 4096);
        let mut enc = CsvEncoder::new(&opts());
        let mut out = Vec::new();
        enc.begin(&inf.schema, &mut out).unwrap();
        for f in &frames {
            let r = StreamRecord::new(f.schema.clone(), f.result.clone().unwrap()).unwrap();
            enc.encode(&r, &mut out).unwrap();
        }
        enc.finish(&mut out).unwrap();
        let (inf2, frames2) = decode_all(&out, 4096);
        assert_eq!(inf2.schema, inf.schema);
        let a: Vec<_> = frames.iter().map(|f| f.result.clone()).collect();
        let b: Vec<_> = frames2.iter().map(|f| f.result.clone()).collect();
        assert_eq!(a, b);
    }

    #[test]
    fn given_schema_is_strict() {
        let mut o = opts();
        o.schema = Some(Arc::new(
            crate::format::parse_schema_spec("a:integer,b:string").unwrap(),
        ));
        let inf = infer(&o, b"a,b\n1,\n", true).unwrap();
        let mut dec = CsvDecoder::new(&o, inf.schema.clone());
        let mut frames = Vec::new();
        dec.decode(b"1,\n", true, 10, &mut frames);
        assert!(
            frames[0]
                .result
                .as_ref()
                .unwrap_err()
                .contains("non-nullable")
        );
        assert!(infer(&o, b"a,b,c\n", true).is_err());
    }
}
