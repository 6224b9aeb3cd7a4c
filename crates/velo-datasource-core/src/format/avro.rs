//! Avro object container files (feature `avro`).

use std::io::Read;
use std::sync::Arc;

use apache_avro::Schema as AvroSchema;
use apache_avro::schema::RecordSchema;
use apache_avro::types::Value;
use chrono::{DateTime, NaiveDate};

use super::records::{RecordFileReader, Row, decimal};
use crate::error::{Error, Result};
use crate::schema::{DataType, FieldDefinition, Schema};
use crate::value::FieldValue;

/// Reads the records of an Avro object container file.
pub struct AvroReader<R: Read + Send> {
    reader: apache_avro::Reader<'static, R>,
    schema: Arc<Schema>,
    scales: Vec<Option<u32>>,
    what: String,
}

impl<R: Read + Send> std::fmt::Debug for AvroReader<R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AvroReader")
            .field("file", &self.what)
            .field("schema", &self.schema)
            .finish()
    }
}

impl<R: Read + Send> AvroReader<R> {
    /// Opens `input` (`what` names it in errors); the top-level schema must be a record.
    pub fn new(input: R, what: &str) -> Result<Self> {
        let reader = apache_avro::Reader::new(input).map_err(|e| {
            Error::decode(
                format!("{what}, byte 0"),
                format!("not an Avro container file: {e}"),
            )
        })?;
        let AvroSchema::Record(RecordSchema { fields, .. }) = reader.writer_schema() else {
            return Err(Error::decode(
                format!("{what}, byte 0"),
                "the Avro schema is not a record",
            ));
        };
        let mut defs = Vec::with_capacity(fields.len());
        let mut scales = Vec::with_capacity(fields.len());
        for f in fields {
            let (data_type, nullable, scale) = avro_type(&f.schema);
            defs.push(FieldDefinition::new(f.name.clone(), data_type, nullable));
            scales.push(scale);
        }
        Ok(AvroReader {
            schema: Arc::new(Schema::new(defs)),
            scales,
            reader,
            what: what.to_owned(),
        })
    }
}

/// Our type, nullability and (for decimals) scale of an Avro schema.
fn avro_type(schema: &AvroSchema) -> (DataType, bool, Option<u32>) {
    match schema {
        AvroSchema::Union(u) => {
            let variants: Vec<&AvroSchema> = u
                .variants()
                .iter()
                .filter(|v| !matches!(v, AvroSchema::Null))
                .collect();
            let nullable = variants.len() < u.variants().len();
            match variants.as_slice() {
                [one] => {
                    let (t, n, s) = avro_type(one);
                    (t, n || nullable, s)
                }
                _ => (DataType::Any, nullable, None),
            }
        }
        AvroSchema::Null => (DataType::Any, true, None),
        AvroSchema::Boolean => (DataType::Boolean, false, None),
        AvroSchema::Int | AvroSchema::Long | AvroSchema::TimeMillis | AvroSchema::TimeMicros => {
            (DataType::Integer, false, None)
        }
        AvroSchema::Float | AvroSchema::Double => (DataType::Float, false, None),
        AvroSchema::Bytes | AvroSchema::Fixed(_) => (DataType::Bytes, false, None),
        AvroSchema::String | AvroSchema::Enum(_) | AvroSchema::Uuid => {
            (DataType::String, false, None)
        }
        AvroSchema::Decimal(d) => (DataType::Decimal, false, Some(d.scale as u32)),
        AvroSchema::Date => (DataType::Date, false, None),
        AvroSchema::TimestampMillis
        | AvroSchema::TimestampMicros
        | AvroSchema::TimestampNanos
        | AvroSchema::LocalTimestampMillis
        | AvroSchema::LocalTimestampMicros
        | AvroSchema::LocalTimestampNanos => (DataType::Timestamp, false, None),
        AvroSchema::Array(a) => (
            DataType::Array(Box::new(avro_type(&a.items).0)),
            false,
            None,
        ),
        AvroSchema::Map(m) => (DataType::Map(Box::new(avro_type(&m.types).0)), false, None),
        _ => (DataType::Any, false, None),
    }
}

fn convert(value: Value, scale: Option<u32>) -> std::result::Result<FieldValue, String> {
    Ok(match value {
        Value::Null => FieldValue::Null,
        Value::Boolean(b) => FieldValue::Boolean(b),
        Value::Int(i) | Value::TimeMillis(i) => FieldValue::Integer(i64::from(i)),
        Value::Long(i) | Value::TimeMicros(i) => FieldValue::Integer(i),
        Value::Float(f) => FieldValue::Float(f64::from(f)),
        Value::Double(f) => FieldValue::Float(f),
        Value::Bytes(b) | Value::Fixed(_, b) => FieldValue::Bytes(b),
        Value::String(s) | Value::Enum(_, s) => FieldValue::String(s.into()),
        Value::Uuid(u) => FieldValue::String(u.to_string().into()),
        Value::Union(_, v) => convert(*v, scale)?,
        Value::Date(days) => NaiveDate::from_num_days_from_ce_opt(days + 719_163)
            .map(FieldValue::Date)
            .ok_or_else(|| format!("date {days} out of range"))?,
        Value::TimestampMillis(ms) | Value::LocalTimestampMillis(ms) => {
            DateTime::from_timestamp_millis(ms)
                .map(FieldValue::Timestamp)
                .ok_or_else(|| format!("timestamp {ms} out of range"))?
        }
        Value::TimestampMicros(us) | Value::LocalTimestampMicros(us) => {
            DateTime::from_timestamp_micros(us)
                .map(FieldValue::Timestamp)
                .ok_or_else(|| format!("timestamp {us} out of range"))?
        }
        Value::TimestampNanos(ns) | Value::LocalTimestampNanos(ns) => {
            FieldValue::Timestamp(DateTime::from_timestamp_nanos(ns))
        }
        Value::Decimal(d) => {
            let bytes: Vec<u8> = d.try_into().map_err(|e| format!("decimal: {e}"))?;
            decimal(&bytes, scale.unwrap_or(0))?
        }
        Value::Array(items) => FieldValue::Array(
            items
                .into_iter()
                .map(|v| convert(v, None))
                .collect::<std::result::Result<_, _>>()?,
        ),
        Value::Map(m) => FieldValue::Map(
            m.into_iter()
                .map(|(k, v)| Ok((k, convert(v, None)?)))
                .collect::<std::result::Result<_, String>>()?,
        ),
        Value::Record(fields) => FieldValue::Map(
            fields
                .into_iter()
                .map(|(k, v)| Ok((k, convert(v, None)?)))
                .collect::<std::result::Result<_, String>>()?,
        ),
        other => FieldValue::String(format!("{other:?}").into()),
    })
}

impl<R: Read + Send> RecordFileReader for AvroReader<R> {
    fn schema(&self) -> Arc<Schema> {
        self.schema.clone()
    }

    fn next_rows(&mut self, max: usize, out: &mut Vec<Row>) -> Result<()> {
        for _ in 0..max {
            let Some(next) = self.reader.next() else {
                break;
            };
            let row = match next {
                Ok(Value::Record(fields)) => fields
                    .into_iter()
                    .zip(&self.scales)
                    .map(|((_, v), scale)| convert(v, *scale))
                    .collect::<std::result::Result<Vec<_>, _>>(),
                Ok(other) => Err(format!("expected a record, found {other:?}")),
                // A damaged block cannot be skipped: the container has no resync point we trust.
                Err(e) => {
                    return Err(Error::decode(
                        self.what.clone(),
                        format!("invalid Avro data: {e}"),
                    ));
                }
            };
            out.push(row);
        }
        Ok(())
    }

    fn skip(&mut self, n: u64) -> Result<()> {
        for i in 0..n {
            match self.reader.next() {
                Some(Ok(_)) => {}
                Some(Err(e)) => {
                    return Err(Error::decode(
                        self.what.clone(),
                        format!("invalid Avro data: {e}"),
                    ));
                }
                None => {
                    return Err(Error::Offset(format!(
                        "{} has {i} records, fewer than the {n} to skip",
                        self.what
                    )));
                }
            }
        }
        Ok(())
    }
}
