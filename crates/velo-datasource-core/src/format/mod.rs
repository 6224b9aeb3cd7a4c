//! Record formats, decoded and encoded in one place for every connector.
//!
//! Decoders are push-style: a caller hands them bytes as they arrive and gets
//! back only *complete* records, each with its exact byte length, so a file
//! being appended to, or an object fetched in ranges, is never read half a
//! record at a time, and every bad record has a precise location. Partial
//! input at the end is left for the next call (or, with `eof`, taken as the
//! last record).
//!
//! | format | feature | decoder | encoder |
//! |---|---|---|---|
//! | CSV | `csv` (default) | [`csv::CsvDecoder`] | [`csv::CsvEncoder`] |
//! | JSON Lines | `json` (default) | [`json::JsonLinesDecoder`] | [`json::JsonEncoder`] |
//! | JSON array | `json` (default) | [`json::JsonArrayDecoder`] | [`json::JsonEncoder`] |
//!
//! Compressed input and output (gzip, zstd) are in [`compression`].
//!
//! Parquet (feature `parquet`) and Avro (feature `avro`) files are read
//! record by record through [`records::RecordFileReader`]: see [`open_records`].

#[cfg(feature = "avro")]
pub mod avro;
pub mod compression;
#[cfg(feature = "csv")]
pub mod csv;
#[cfg(feature = "json")]
pub mod json;
#[cfg(feature = "parquet")]
pub mod parquet;
pub mod records;

use std::sync::Arc;

use crate::config::{FileFormat, Properties};
use crate::error::{Error, Result};
use crate::infer::{DEFAULT_NULL_TOKENS, InferenceOptions};
use crate::record::StreamRecord;
use crate::schema::{DataType, FieldDefinition, Schema};
use crate::value::FieldValue;

/// One complete record found by a decoder.
#[derive(Debug, Clone, PartialEq)]
pub struct Frame {
    /// Bytes from the end of the previous frame (or the start of the input)
    /// to the end of this record, terminator included: blank lines and
    /// separators before a record count with it, so frame ends are exact
    /// resume points.
    pub len: usize,
    /// Line breaks inside those bytes.
    pub lines: u64,
    /// Of `len`, the bytes before the record itself (blank lines, an array's
    /// separators): the record starts this far into its frame.
    pub skipped_bytes: usize,
    /// Line breaks in those skipped bytes: the record's line is this many
    /// after its frame's first.
    pub skipped_lines: u64,
    /// The values in `schema` order, or why the record is bad.
    pub result: std::result::Result<Vec<FieldValue>, String>,
    /// The schema the values follow (JSON decoders widen it as data demands).
    pub schema: Arc<Schema>,
}

/// Where one record found by [`Decoder::decode_columns`] is, and whether it
/// is good: a [`Frame`] whose values went to columns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Span {
    /// As [`Frame::len`].
    pub len: usize,
    /// As [`Frame::lines`].
    pub lines: u64,
    /// As [`Frame::skipped_bytes`].
    pub skipped_bytes: usize,
    /// As [`Frame::skipped_lines`].
    pub skipped_lines: u64,
    /// Why the record is bad; `None` when its values were appended.
    pub error: Option<String>,
}

/// A push-style record decoder. See the module docs.
pub trait Decoder: Send + std::fmt::Debug {
    /// Decodes up to `max` complete records from the start of `input` into
    /// `out` and returns the bytes consumed: the sum of the frames' `len`s
    /// plus any blank lines or closing bytes after the last one. With `eof`,
    /// input that ends without a terminator is a complete last record.
    fn decode(&mut self, input: &[u8], eof: bool, max: usize, out: &mut Vec<Frame>) -> usize;

    /// Like [`decode`](Self::decode), but each good record's values are
    /// appended to `columns` as one row, and each record is reported by a
    /// [`Span`] instead of a frame; a bad record adds nothing to `columns`.
    ///
    /// `None`, with nothing read, when `columns` does not follow
    /// [`schema`](Self::schema) or the decoder cannot decode into columns
    /// (JSON, whose schema can widen from one record to the next).
    fn decode_columns(
        &mut self,
        input: &[u8],
        eof: bool,
        max: usize,
        out: &mut Vec<Span>,
        columns: &mut crate::columns::Columns,
    ) -> Option<usize> {
        let _ = (input, eof, max, out, columns);
        None
    }

    /// Like [`decode_columns`](Self::decode_columns), but each good
    /// record's values are written to `rows`, in place, for records.
    fn decode_rows(
        &mut self,
        input: &[u8],
        eof: bool,
        max: usize,
        out: &mut Vec<Span>,
        rows: &mut crate::rows::Rows,
    ) -> Option<usize> {
        let _ = (input, eof, max, out, rows);
        None
    }

    /// The current schema.
    fn schema(&self) -> Arc<Schema>;
}

/// Writes records in a format.
pub trait Encoder: Send + std::fmt::Debug {
    /// Bytes that start a file: a CSV header, `[` for a JSON array.
    fn begin(&mut self, schema: &Schema, out: &mut Vec<u8>) -> Result<()>;

    /// Appends one record.
    fn encode(&mut self, record: &StreamRecord, out: &mut Vec<u8>) -> Result<()>;

    /// Bytes that end a file: `]` for a JSON array.
    fn finish(&mut self, out: &mut Vec<u8>) -> Result<()>;

    /// Continues output that already holds `records` records (after a
    /// restart or a rollback), without writing `begin`'s bytes again.
    fn continue_after(&mut self, records: u64) {
        let _ = records;
    }
}

/// Format settings read from a connector's properties.
#[derive(Debug, Clone)]
pub struct FormatOptions {
    /// The format.
    pub format: FileFormat,
    /// CSV field separator.
    pub delimiter: u8,
    /// CSV quote character.
    pub quote: u8,
    /// CSV escape character (`None`: quotes are escaped by doubling).
    pub escape: Option<u8>,
    /// Whether CSV input starts with (and CSV output writes) a header.
    pub has_header: bool,
    /// Cells read as null.
    pub null_tokens: Vec<String>,
    /// Rows sampled for schema inference.
    pub sample_rows: usize,
    /// A schema given by the user; decoding is then strict.
    pub schema: Option<Arc<Schema>>,
}

impl FormatOptions {
    /// Defaults for `format`.
    pub fn new(format: FileFormat) -> Self {
        FormatOptions {
            format,
            delimiter: b',',
            quote: b'"',
            escape: None,
            has_header: true,
            null_tokens: DEFAULT_NULL_TOKENS
                .iter()
                .map(|s| (*s).to_owned())
                .collect(),
            sample_rows: 1000,
            schema: None,
        }
    }

    /// Reads `delimiter`, `quote`, `escape`, `header`, `null_values`,
    /// `sample_rows` and `schema`; errors name the key.
    pub fn from_properties(format: FileFormat, props: &Properties) -> Result<Self> {
        let mut o = Self::new(format);
        if let Some(d) = props.get("delimiter") {
            o.delimiter = single_byte("delimiter", d)?;
        }
        if let Some(q) = props.get("quote") {
            o.quote = single_byte("quote", q)?;
        }
        if let Some(e) = props.get("escape") {
            o.escape = Some(single_byte("escape", e)?);
        }
        if o.delimiter == o.quote || Some(o.delimiter) == o.escape {
            return Err(Error::invalid_value(
                "delimiter",
                (o.delimiter as char).to_string(),
                "must differ from the quote and escape characters",
            ));
        }
        if let Some(h) = props.get_bool("header")? {
            o.has_header = h;
        }
        if let Some(n) = props.get("null_values") {
            o.null_tokens = n.split(',').map(str::to_owned).collect();
        }
        if let Some(n) = props.get_parsed::<usize>("sample_rows")? {
            o.sample_rows = n.max(1);
        }
        if let Some(s) = props.get("schema") {
            o.schema = Some(Arc::new(parse_schema_spec(s)?));
        }
        Ok(o)
    }

    /// The inference options these format options imply.
    pub fn inference(&self) -> InferenceOptions {
        InferenceOptions {
            null_tokens: self.null_tokens.clone(),
            sample_rows: self.sample_rows,
        }
    }
}

fn single_byte(key: &str, value: &str) -> Result<u8> {
    let v = match value {
        "\\t" | "tab" | "TAB" => "\t",
        other => other,
    };
    match v.as_bytes() {
        [b] if b.is_ascii() && *b != b'\n' && *b != b'\r' => Ok(*b),
        _ => Err(Error::invalid_value(
            key,
            value,
            "must be one ASCII character other than a line break (use \\t for tab)",
        )),
    }
}

/// Parses `name:type,name:type?` (a `?` suffix makes a field nullable; types
/// are `boolean, integer, float, decimal, string, bytes, date, timestamp, any`).
///
/// ```
/// use velo_datasource_core::{format::parse_schema_spec, DataType};
/// let s = parse_schema_spec("id:integer,price:float?,at:timestamp").unwrap();
/// assert_eq!(s.fields()[1].data_type, DataType::Float);
/// assert!(s.fields()[1].nullable && !s.fields()[0].nullable);
/// ```
pub fn parse_schema_spec(spec: &str) -> Result<Schema> {
    let mut fields = Vec::new();
    for part in spec.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (name, ty) = part.split_once(':').ok_or_else(|| {
            Error::invalid_value("schema", spec, format!("`{part}` should be name:type"))
        })?;
        let (ty, nullable) = match ty.trim().strip_suffix('?') {
            Some(t) => (t, true),
            None => (ty.trim(), false),
        };
        let data_type = match ty.to_ascii_lowercase().as_str() {
            "boolean" | "bool" => DataType::Boolean,
            "integer" | "int" | "bigint" | "long" => DataType::Integer,
            "float" | "double" => DataType::Float,
            "decimal" | "numeric" => DataType::Decimal,
            "string" | "text" | "varchar" => DataType::String,
            "bytes" | "binary" => DataType::Bytes,
            "date" => DataType::Date,
            "timestamp" | "datetime" => DataType::Timestamp,
            "any" | "json" => DataType::Any,
            other => {
                return Err(Error::invalid_value(
                    "schema",
                    spec,
                    format!("unknown type `{other}` for `{name}`"),
                ));
            }
        };
        fields.push(FieldDefinition::new(name.trim(), data_type, nullable));
    }
    Schema::try_new(fields).map_err(|e| Error::invalid_value("schema", spec, e.to_string()))
}

/// What [`infer`] learned from the start of a file or object.
#[derive(Debug, Clone)]
pub struct Inferred {
    /// The schema (the given one, if any).
    pub schema: Arc<Schema>,
    /// Bytes of header before the first record (CSV).
    pub header_len: usize,
    /// The sample ended before inference saw what it looks at (the
    /// `sample_rows` rows, or the header of a given schema) while the input
    /// goes on: a longer sample could give another schema. A reader can
    /// start with a short sample and read more only when this is set.
    pub needs_more: bool,
}

/// Infers the schema from `sample`, the first bytes of the input (`eof` when
/// the sample is the whole input).
pub fn infer(options: &FormatOptions, sample: &[u8], eof: bool) -> Result<Inferred> {
    match options.format {
        #[cfg(feature = "csv")]
        FileFormat::Csv => csv::infer(options, sample, eof),
        #[cfg(feature = "json")]
        FileFormat::JsonLines => json::infer_lines(options, sample, eof),
        #[cfg(feature = "json")]
        FileFormat::JsonArray => json::infer_array(options, sample, eof),
        other => Err(Error::unsupported(
            format!("reading {other} records"),
            "this build (enable the format's cargo feature)",
        )),
    }
}

/// A decoder for input that starts at byte `offset` (0 = the very start,
/// before any header), given what [`infer`] found.
pub fn decoder(
    options: &FormatOptions,
    inferred: &Inferred,
    offset: u64,
) -> Result<Box<dyn Decoder>> {
    let fixed = options.schema.is_some();
    match options.format {
        #[cfg(feature = "csv")]
        FileFormat::Csv => Ok(Box::new(csv::CsvDecoder::new(
            options,
            inferred.schema.clone(),
        ))),
        #[cfg(feature = "json")]
        FileFormat::JsonLines => Ok(Box::new(json::JsonLinesDecoder::new(
            inferred.schema.clone(),
            fixed,
        ))),
        #[cfg(feature = "json")]
        FileFormat::JsonArray => Ok(Box::new(json::JsonArrayDecoder::new(
            inferred.schema.clone(),
            fixed,
            offset > 0,
        ))),
        other => {
            let _ = (fixed, offset);
            Err(Error::unsupported(
                format!("reading {other} records"),
                "this build (enable the format's cargo feature)",
            ))
        }
    }
}

/// Whether `format` is read record by record from a whole file ([`open_records`])
/// rather than by a byte [`Decoder`].
pub fn is_record_file(format: FileFormat) -> bool {
    matches!(format, FileFormat::Parquet | FileFormat::Avro)
}

/// A record reader of a Parquet or Avro file (`what` names it in errors).
pub fn open_records(
    format: FileFormat,
    file: std::fs::File,
    what: &str,
) -> Result<Box<dyn records::RecordFileReader>> {
    match format {
        #[cfg(feature = "parquet")]
        FileFormat::Parquet => Ok(Box::new(parquet::ParquetReader::new(file, what)?)),
        #[cfg(feature = "avro")]
        FileFormat::Avro => Ok(Box::new(avro::AvroReader::new(
            std::io::BufReader::new(file),
            what,
        )?)),
        other => {
            let _ = (file, what);
            Err(Error::unsupported(
                format!("reading {other} files"),
                format!(
                    "this build (enable the `{other}` feature of velo-datasource-core or velo-file)"
                ),
            ))
        }
    }
}

/// An encoder for `options.format`.
pub fn encoder(options: &FormatOptions) -> Result<Box<dyn Encoder>> {
    match options.format {
        #[cfg(feature = "csv")]
        FileFormat::Csv => Ok(Box::new(csv::CsvEncoder::new(options))),
        #[cfg(feature = "json")]
        FileFormat::JsonLines => Ok(Box::new(json::JsonEncoder::lines())),
        #[cfg(feature = "json")]
        FileFormat::JsonArray => Ok(Box::new(json::JsonEncoder::array())),
        other => Err(Error::unsupported(
            format!("writing {other} records"),
            "this build (enable the format's cargo feature)",
        )),
    }
}

/// Counts line breaks in `bytes`.
pub(crate) fn count_lines(bytes: &[u8]) -> u64 {
    memchr::memchr_iter(b'\n', bytes).count() as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn options_from_properties() {
        let p: Properties = [
            ("delimiter", "\\t"),
            ("header", "false"),
            ("null_values", "-,?"),
        ]
        .into_iter()
        .collect();
        let o = FormatOptions::from_properties(FileFormat::Csv, &p).unwrap();
        assert_eq!(o.delimiter, b'\t');
        assert!(!o.has_header);
        assert_eq!(o.null_tokens, ["-", "?"]);
        for bad in ["ab", "é", "\n"] {
            let p: Properties = [("delimiter", bad)].into_iter().collect();
            let e = FormatOptions::from_properties(FileFormat::Csv, &p)
                .unwrap_err()
                .to_string();
            assert!(e.contains("`delimiter`"), "{e}");
        }
        let p: Properties = [("delimiter", "\"")].into_iter().collect();
        assert!(FormatOptions::from_properties(FileFormat::Csv, &p).is_err());
    }

    #[test]
    fn schema_specs() {
        assert!(parse_schema_spec("a:integer,a:string").is_err());
        assert!(
            parse_schema_spec("a:wat")
                .unwrap_err()
                .to_string()
                .contains("`wat`")
        );
        assert!(parse_schema_spec("a").is_err());
    }
}
