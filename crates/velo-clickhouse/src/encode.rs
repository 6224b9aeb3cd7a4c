//! Velostream values to ClickHouse: column types for created tables, checks
//! of a record against the table's columns, and `JSONEachRow` lines
//! (`RowBinary` rows are in `row_binary.rs`).

use std::borrow::Cow;
use std::io::Write as _;

use base64::Engine as _;
use velo_datasource_core::{DataType, Error, FieldValue, Result, StreamRecord};

use crate::row_binary::Binary;

/// What a ClickHouse column type accepts, with `Nullable`/`LowCardinality` peeled off.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Kind {
    /// `Int*`, `UInt*`.
    Integer,
    /// `Float32/64`.
    Float,
    /// `Decimal*`.
    Decimal,
    /// `Bool` (recent servers).
    Bool,
    /// `Date`, `Date32`.
    Date,
    /// `DateTime` (seconds).
    DateTime,
    /// `DateTime64(p)`.
    DateTime64(u32),
    /// `Array(T)`.
    Array(Box<Column>),
    /// `String`, `FixedString`, `UUID`, `Enum*`, and anything else: text.
    Text,
}

/// A column as `system.columns` describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Column {
    /// Accepts NULL.
    pub nullable: bool,
    /// What it accepts.
    pub kind: Kind,
    /// The type as the server wrote it.
    pub type_name: String,
}

impl Column {
    /// Parses a type name such as `Nullable(Decimal(18, 4))` or `Array(String)`.
    pub fn parse(type_name: &str) -> Column {
        let mut t = type_name.trim();
        let mut nullable = false;
        loop {
            if let Some(inner) = t
                .strip_prefix("Nullable(")
                .and_then(|r| r.strip_suffix(')'))
            {
                nullable = true;
                t = inner;
            } else if let Some(inner) = t
                .strip_prefix("LowCardinality(")
                .and_then(|r| r.strip_suffix(')'))
            {
                t = inner;
            } else {
                break;
            }
        }
        let kind = if let Some(inner) = t.strip_prefix("Array(").and_then(|r| r.strip_suffix(')')) {
            Kind::Array(Box::new(Column::parse(inner)))
        } else if t.starts_with("Int") || t.starts_with("UInt") {
            Kind::Integer
        } else if t.starts_with("Float") {
            Kind::Float
        } else if t.starts_with("Decimal") {
            Kind::Decimal
        } else if t == "Bool" || t == "Boolean" {
            Kind::Bool
        } else if t == "Date" || t == "Date32" {
            Kind::Date
        } else if let Some(args) = t.strip_prefix("DateTime64(") {
            let precision = args
                .split([',', ')'])
                .next()
                .and_then(|p| p.trim().parse().ok())
                .unwrap_or(3);
            Kind::DateTime64(precision)
        } else if t.starts_with("DateTime") {
            Kind::DateTime
        } else {
            Kind::Text
        };
        Column {
            nullable,
            kind,
            type_name: type_name.to_owned(),
        }
    }
}

/// The ClickHouse type for a Velostream type when creating a table.
/// `datetime64` says whether the server knows `DateTime64` (20.1 and later).
pub fn clickhouse_type(data_type: &DataType, nullable: bool, datetime64: bool) -> String {
    let base = match data_type {
        DataType::Boolean => "UInt8".to_owned(),
        DataType::Integer => "Int64".to_owned(),
        DataType::Float => "Float64".to_owned(),
        DataType::Decimal => "Decimal(38, 10)".to_owned(),
        DataType::Date => "Date".to_owned(),
        DataType::Timestamp if datetime64 => "DateTime64(6, 'UTC')".to_owned(),
        DataType::Timestamp => "DateTime".to_owned(),
        // Arrays cannot be Nullable themselves; their elements can.
        DataType::Array(inner) => {
            return format!("Array({})", clickhouse_type(inner, true, datetime64));
        }
        _ => "String".to_owned(),
    };
    if nullable {
        format!("Nullable({base})")
    } else {
        base
    }
}

/// Appends `value` as the JSON `column` accepts, or says why it cannot.
pub(crate) fn write_value(
    out: &mut Vec<u8>,
    value: &FieldValue,
    column: &Column,
) -> std::result::Result<(), String> {
    use FieldValue as V;
    match (value, &column.kind) {
        (V::Null, _) if column.nullable || matches!(column.kind, Kind::Array(_)) => out
            .extend_from_slice(if matches!(column.kind, Kind::Array(_)) {
                b"[]"
            } else {
                b"null"
            }),
        (V::Null, _) => return Err(null_not_allowed(&column.type_name)),
        (V::Integer(i), Kind::Integer | Kind::Float | Kind::Decimal) => {
            out.extend_from_slice(itoa::Buffer::new().format(*i).as_bytes());
        }
        (V::Boolean(b), Kind::Integer) => out.push(if *b { b'1' } else { b'0' }),
        (V::Boolean(b), Kind::Bool) => out.extend_from_slice(if *b { b"true" } else { b"false" }),
        (V::Float(f), Kind::Float) if f.is_finite() => {
            // The shortest text that reads back as the same f64 (`1e20`, `0.1`).
            out.extend_from_slice(ryu::Buffer::new().format_finite(*f).as_bytes());
        }
        (V::Float(f), Kind::Decimal) if f.is_finite() => {
            // Plain digits, no exponent: what a Decimal column parses.
            let _ = write!(out, "{f}");
        }
        (V::Float(f), Kind::Float) => out.extend_from_slice(if f.is_nan() {
            b"nan"
        } else if *f > 0.0 {
            b"inf"
        } else {
            b"-inf"
        }),
        (V::Decimal(d), Kind::Decimal | Kind::Float) => {
            let _ = write!(out, "{d}");
        }
        (V::Date(d), Kind::Date) => {
            let _ = write!(out, "\"{}\"", d.format("%Y-%m-%d"));
        }
        (V::Timestamp(t), Kind::Date) => {
            let _ = write!(out, "\"{}\"", t.format("%Y-%m-%d"));
        }
        (V::Timestamp(t), Kind::DateTime) => {
            let _ = write!(out, "\"{}\"", t.format("%Y-%m-%d %H:%M:%S"));
        }
        (V::Timestamp(t), Kind::DateTime64(_)) => {
            let _ = write!(out, "\"{}\"", t.format("%Y-%m-%d %H:%M:%S%.6f"));
        }
        (V::Array(items), Kind::Array(inner)) => {
            out.push(b'[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write_value(out, item, inner)?;
            }
            out.push(b']');
        }
        (v, Kind::Text) => push_json_string(out, &text_of(v)),
        (v, _) => return Err(cannot_take(v, &column.type_name)),
    }
    Ok(())
}

/// The text a text column (`String`, `FixedString`, ...) gets for `value`,
/// whatever the insert format: bytes as base64, maps and arrays as JSON.
pub(crate) fn text_of(value: &FieldValue) -> Cow<'_, str> {
    match value {
        FieldValue::String(s) => Cow::Borrowed(s),
        FieldValue::Bytes(b) => Cow::Owned(base64::engine::general_purpose::STANDARD.encode(b)),
        FieldValue::Map(_) | FieldValue::Array(_) => Cow::Owned(value.to_json().to_string()),
        v => Cow::Owned(v.to_string()),
    }
}

/// Why a null cannot go into a column of `type_name`.
pub(crate) fn null_not_allowed(type_name: &str) -> String {
    format!("null, which column type {type_name} does not allow")
}

/// Why `value` cannot go into a column of `type_name`.
pub(crate) fn cannot_take(value: &FieldValue, type_name: &str) -> String {
    format!(
        "{} `{value}`, which column type {type_name} cannot take",
        value
            .data_type()
            .map_or("a value".to_owned(), |t| t.to_string()),
    )
}

/// `s` as a JSON string, escaped as JSON requires, straight into `out`.
fn push_json_string(out: &mut Vec<u8>, s: &str) {
    // Writing into a Vec cannot fail.
    let _ = serde_json::to_writer(&mut *out, s);
}

/// A record field and the table column it goes to.
#[derive(Debug, Clone)]
pub(crate) struct MappedColumn {
    /// Position of the field in the record.
    pub(crate) index: usize,
    /// The field's (and column's) name.
    pub(crate) name: String,
    /// The column's type.
    pub(crate) column: Column,
    /// Its `RowBinary` encoding, if it has one.
    pub(crate) binary: Option<Binary>,
    /// `"name":`, escaped once rather than on every row.
    key: Vec<u8>,
}

impl MappedColumn {
    /// Field `index` named `name` into `column`.
    pub(crate) fn new(index: usize, name: String, column: Column) -> Self {
        let mut key = Vec::with_capacity(name.len() + 3);
        push_json_string(&mut key, &name);
        key.push(b':');
        MappedColumn {
            index,
            name,
            binary: Binary::parse(&column.type_name),
            column,
            key,
        }
    }
}

impl MappedColumn {
    /// This column's value in `record` (null if the record is short of it).
    pub(crate) fn value_of<'r>(&self, record: &'r StreamRecord) -> &'r FieldValue {
        record.value(self.index).unwrap_or(&FieldValue::Null)
    }

    /// The error for a value of `record` this column cannot take, and `why`.
    pub(crate) fn mismatch(&self, record: &StreamRecord, target: &str, why: &str) -> Error {
        Error::Schema(format!(
            "record at offset {}: field `{}` of {target} holds {why}",
            record.offset, self.name
        ))
    }
}

/// One `JSONEachRow` line of `record`, for the mapped columns.
pub(crate) fn write_row(
    out: &mut Vec<u8>,
    record: &StreamRecord,
    columns: &[MappedColumn],
    target: &str,
) -> Result<()> {
    out.push(b'{');
    for (n, c) in columns.iter().enumerate() {
        if n > 0 {
            out.push(b',');
        }
        out.extend_from_slice(&c.key);
        write_value(out, c.value_of(record), &c.column)
            .map_err(|why| c.mismatch(record, target, &why))?;
    }
    out.extend_from_slice(b"}\n");
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use velo_datasource_core::{FieldDefinition, Schema};

    use super::*;

    #[test]
    fn parses_column_types() {
        assert_eq!(Column::parse("Nullable(Int64)").kind, Kind::Integer);
        assert!(Column::parse("Nullable(Int64)").nullable);
        assert_eq!(Column::parse("LowCardinality(String)").kind, Kind::Text);
        assert_eq!(
            Column::parse("DateTime64(6, 'UTC')").kind,
            Kind::DateTime64(6)
        );
        assert_eq!(Column::parse("DateTime('UTC')").kind, Kind::DateTime);
        assert!(matches!(
            Column::parse("Array(Nullable(Float64))").kind,
            Kind::Array(_)
        ));
        assert_eq!(Column::parse("Decimal(18, 4)").kind, Kind::Decimal);
        assert_eq!(
            clickhouse_type(&DataType::Timestamp, true, false),
            "Nullable(DateTime)"
        );
        assert_eq!(
            clickhouse_type(&DataType::Array(Box::new(DataType::Integer)), true, true),
            "Array(Nullable(Int64))"
        );
    }

    #[test]
    fn encodes_rows_and_names_mismatches() {
        let schema = Arc::new(Schema::new(vec![
            FieldDefinition::required("id", DataType::Integer),
            FieldDefinition::optional("name", DataType::String),
            FieldDefinition::optional("at", DataType::Timestamp),
            FieldDefinition::optional("tags", DataType::Array(Box::new(DataType::String))),
        ]));
        let at = chrono::DateTime::parse_from_rfc3339("2024-01-02T03:04:05.25Z")
            .unwrap()
            .to_utc();
        let record = StreamRecord::new(
            schema,
            vec![
                FieldValue::Integer(7),
                "q\"uote".into(),
                FieldValue::Timestamp(at),
                FieldValue::Array(vec!["a".into()]),
            ],
        )
        .unwrap();
        let cols = [
            Column::parse("Int64"),
            Column::parse("String"),
            Column::parse("DateTime64(6)"),
            Column::parse("Array(String)"),
        ];
        let mapping: Vec<MappedColumn> = ["id", "name", "at", "tags"]
            .into_iter()
            .zip(cols)
            .enumerate()
            .map(|(i, (n, c))| MappedColumn::new(i, n.to_owned(), c))
            .collect();
        let mut out = Vec::new();
        write_row(&mut out, &record, &mapping, "db.t").unwrap();
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "{\"id\":7,\"name\":\"q\\\"uote\",\"at\":\"2024-01-02 03:04:05.250000\",\"tags\":[\"a\"]}\n"
        );
        let wrong = Column::parse("Int32");
        let err = write_row(
            &mut Vec::new(),
            &record,
            &[MappedColumn::new(1, "name".into(), wrong)],
            "db.t",
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("field `name`") && err.contains("Int32"),
            "{err}"
        );
        let not_null = Column::parse("String");
        let null_record = StreamRecord::new(
            Arc::new(Schema::new(vec![FieldDefinition::optional(
                "x",
                DataType::String,
            )])),
            vec![FieldValue::Null],
        )
        .unwrap();
        let err = write_row(
            &mut Vec::new(),
            &null_record,
            &[MappedColumn::new(0, "x".into(), not_null)],
            "db.t",
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("does not allow"), "{err}");
    }
}
