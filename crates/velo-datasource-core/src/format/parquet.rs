//! Parquet files (feature `parquet`), read row by row with the `parquet`
//! crate's record API (no Arrow).

use std::sync::Arc;

use chrono::{DateTime, NaiveDate};
use parquet::basic::{ConvertedType, LogicalType, Repetition, Type as Physical};
use parquet::file::reader::{ChunkReader, FileReader, SerializedFileReader};
use parquet::record::{Field, Row as PqRow};
use parquet::schema::types::Type;

use super::records::{RecordFileReader, Row, decimal};
use crate::error::{Error, Result};
use crate::schema::{DataType, FieldDefinition, Schema};
use crate::value::FieldValue;

/// Reads the rows of a Parquet file (from a `File`, or bytes already fetched).
pub struct ParquetReader {
    rows: parquet::record::reader::RowIter<'static>,
    schema: Arc<Schema>,
    what: String,
    row_groups: Vec<i64>,
    reader: Arc<dyn FileReader>,
}

impl std::fmt::Debug for ParquetReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ParquetReader")
            .field("file", &self.what)
            .field("row_groups", &self.row_groups)
            .finish()
    }
}

impl ParquetReader {
    /// Opens `input` (`what` names it in errors).
    pub fn new<R: ChunkReader + 'static>(input: R, what: &str) -> Result<Self> {
        let reader = SerializedFileReader::new(input).map_err(|e| {
            Error::decode(
                format!("{what}, byte 0"),
                format!("not a Parquet file: {e}"),
            )
        })?;
        let meta = reader.metadata();
        let root = meta.file_metadata().schema_descr().root_schema();
        let fields = root
            .get_fields()
            .iter()
            .map(|f| field_definition(f))
            .collect();
        let row_groups = meta.row_groups().iter().map(|g| g.num_rows()).collect();
        let reader: Arc<dyn FileReader> = Arc::new(reader);
        let rows = Self::rows_from(&reader, 0, what)?;
        Ok(ParquetReader {
            rows,
            schema: Arc::new(Schema::new(fields)),
            what: what.to_owned(),
            row_groups,
            reader,
        })
    }

    /// Rows from row group `first` on.
    fn rows_from(
        reader: &Arc<dyn FileReader>,
        first: usize,
        what: &str,
    ) -> Result<parquet::record::reader::RowIter<'static>> {
        let owned = ArcFileReader(reader.clone(), first);
        parquet::record::reader::RowIter::from_file_into(Box::new(owned))
            .project(None)
            .map_err(|e| Error::decode(what.to_owned(), e.to_string()))
    }
}

/// A `FileReader` that shares one open file and starts at a row group.
struct ArcFileReader(Arc<dyn FileReader>, usize);

impl FileReader for ArcFileReader {
    fn metadata(&self) -> &parquet::file::metadata::ParquetMetaData {
        self.0.metadata()
    }
    fn num_row_groups(&self) -> usize {
        self.0.num_row_groups().saturating_sub(self.1)
    }
    fn get_row_group(
        &self,
        i: usize,
    ) -> parquet::errors::Result<Box<dyn parquet::file::reader::RowGroupReader + '_>> {
        self.0.get_row_group(i + self.1)
    }
    fn get_row_iter(
        &self,
        projection: Option<Type>,
    ) -> parquet::errors::Result<parquet::record::reader::RowIter<'_>> {
        parquet::record::reader::RowIter::from_file(projection, self)
    }
}

fn field_definition(t: &Type) -> FieldDefinition {
    let info = t.get_basic_info();
    let nullable = !info.has_repetition() || info.repetition() != Repetition::REQUIRED;
    let data_type = if t.is_primitive() {
        let logical = info.logical_type_ref().cloned();
        let converted = info.converted_type();
        match (t.get_physical_type(), logical, converted) {
            (_, Some(LogicalType::Decimal { .. }), _) | (_, _, ConvertedType::DECIMAL) => {
                DataType::Decimal
            }
            (_, Some(LogicalType::Date), _) | (_, _, ConvertedType::DATE) => DataType::Date,
            (_, Some(LogicalType::Timestamp { .. }), _)
            | (_, _, ConvertedType::TIMESTAMP_MILLIS | ConvertedType::TIMESTAMP_MICROS)
            | (Physical::INT96, _, _) => DataType::Timestamp,
            (Physical::BOOLEAN, ..) => DataType::Boolean,
            (Physical::INT32 | Physical::INT64, ..) => DataType::Integer,
            (Physical::FLOAT | Physical::DOUBLE, ..) => DataType::Float,
            (
                Physical::BYTE_ARRAY,
                Some(LogicalType::String | LogicalType::Enum | LogicalType::Json),
                _,
            )
            | (
                Physical::BYTE_ARRAY,
                _,
                ConvertedType::UTF8 | ConvertedType::ENUM | ConvertedType::JSON,
            ) => DataType::String,
            (Physical::BYTE_ARRAY | Physical::FIXED_LEN_BYTE_ARRAY, ..) => DataType::Bytes,
        }
    } else {
        match info
            .logical_type_ref()
            .cloned()
            .or(match info.converted_type() {
                ConvertedType::LIST => Some(LogicalType::List),
                ConvertedType::MAP | ConvertedType::MAP_KEY_VALUE => Some(LogicalType::Map),
                _ => None,
            }) {
            Some(LogicalType::List) => DataType::Array(Box::new(DataType::Any)),
            Some(LogicalType::Map) => DataType::Map(Box::new(DataType::Any)),
            _ => DataType::Struct(t.get_fields().iter().map(|f| field_definition(f)).collect()),
        }
    };
    FieldDefinition::new(info.name(), data_type, nullable)
}

fn convert(field: &Field) -> std::result::Result<FieldValue, String> {
    Ok(match field {
        Field::Null => FieldValue::Null,
        Field::Bool(b) => FieldValue::Boolean(*b),
        Field::Byte(i) => FieldValue::Integer(i64::from(*i)),
        Field::Short(i) => FieldValue::Integer(i64::from(*i)),
        Field::Int(i) => FieldValue::Integer(i64::from(*i)),
        Field::Long(i) => FieldValue::Integer(*i),
        Field::UByte(i) => FieldValue::Integer(i64::from(*i)),
        Field::UShort(i) => FieldValue::Integer(i64::from(*i)),
        Field::UInt(i) => FieldValue::Integer(i64::from(*i)),
        Field::ULong(i) => i64::try_from(*i)
            .map(FieldValue::Integer)
            .unwrap_or_else(|_| FieldValue::Decimal((*i).into())),
        Field::Float16(f) => FieldValue::Float(f64::from(f32::from(*f))),
        Field::Float(f) => FieldValue::Float(f64::from(*f)),
        Field::Double(f) => FieldValue::Float(*f),
        Field::Decimal(d) => decimal(d.data(), d.scale() as u32)?,
        Field::Str(s) => FieldValue::String(s.as_str().into()),
        Field::Bytes(b) => FieldValue::Bytes(b.data().to_vec()),
        Field::Date(days) => NaiveDate::from_num_days_from_ce_opt(days + 719_163)
            .map(FieldValue::Date)
            .ok_or_else(|| format!("date {days} out of range"))?,
        Field::TimeMillis(ms) => FieldValue::Integer(i64::from(*ms)),
        Field::TimeMicros(us) => FieldValue::Integer(*us),
        Field::TimestampMillis(ms) => DateTime::from_timestamp_millis(*ms)
            .map(FieldValue::Timestamp)
            .ok_or_else(|| format!("timestamp {ms} out of range"))?,
        Field::TimestampMicros(us) => DateTime::from_timestamp_micros(*us)
            .map(FieldValue::Timestamp)
            .ok_or_else(|| format!("timestamp {us} out of range"))?,
        Field::Group(row) => FieldValue::Map(
            row.get_column_iter()
                .map(|(k, v)| Ok((k.clone(), convert(v)?)))
                .collect::<std::result::Result<_, String>>()?,
        ),
        Field::ListInternal(list) => FieldValue::Array(
            list.elements()
                .iter()
                .map(convert)
                .collect::<std::result::Result<_, _>>()?,
        ),
        Field::MapInternal(map) => FieldValue::Map(
            map.entries()
                .iter()
                .map(|(k, v)| Ok((convert(k)?.to_string(), convert(v)?)))
                .collect::<std::result::Result<_, String>>()?,
        ),
    })
}

fn row_values(row: &PqRow) -> Row {
    row.get_column_iter().map(|(_, f)| convert(f)).collect()
}

impl RecordFileReader for ParquetReader {
    fn schema(&self) -> Arc<Schema> {
        self.schema.clone()
    }

    fn next_rows(&mut self, max: usize, out: &mut Vec<Row>) -> Result<()> {
        for _ in 0..max {
            match self.rows.next() {
                Some(Ok(row)) => out.push(row_values(&row)),
                Some(Err(e)) => {
                    return Err(Error::decode(
                        self.what.clone(),
                        format!("invalid Parquet data: {e}"),
                    ));
                }
                None => break,
            }
        }
        Ok(())
    }

    fn skip(&mut self, n: u64) -> Result<()> {
        // Whole row groups are skipped from the metadata, the rest row by row.
        let mut left = n;
        let mut group = 0;
        while group < self.row_groups.len() && left >= self.row_groups[group] as u64 {
            left -= self.row_groups[group] as u64;
            group += 1;
        }
        self.rows = Self::rows_from(&self.reader, group, &self.what)?;
        for i in 0..left {
            match self.rows.next() {
                Some(Ok(_)) => {}
                Some(Err(e)) => {
                    return Err(Error::decode(
                        self.what.clone(),
                        format!("invalid Parquet data: {e}"),
                    ));
                }
                None => {
                    return Err(Error::Offset(format!(
                        "{} ends {} records before the {n} to skip",
                        self.what,
                        left - i
                    )));
                }
            }
        }
        if group == self.row_groups.len() && left > 0 {
            return Err(Error::Offset(format!(
                "{} has fewer than {n} records",
                self.what
            )));
        }
        Ok(())
    }
}
