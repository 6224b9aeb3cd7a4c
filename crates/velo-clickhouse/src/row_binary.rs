//! `RowBinary` rows: ClickHouse's own row format, values in little-endian
//! binary in column order, no text to print or for the server to parse.
//!
//! Used when every column of an insert has a type encoded here; the values
//! each column accepts are the same as for `JSONEachRow` (see `encode.rs`),
//! and a value that does not fit its column (300 into `UInt8`, a date before
//! 1970 into `Date`) is an error naming the column rather than a wrapped
//! number.

use chrono::{DateTime, NaiveDate, Utc};
use velo_datasource_core::{Error, FieldValue, Result, StreamRecord};

use crate::encode::{MappedColumn, cannot_take, null_not_allowed, text_of};

/// A column type with a `RowBinary` encoding.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Binary {
    /// `Int8`..`Int64` (`signed`), `UInt8`..`UInt64`: `bytes` little-endian bytes.
    Int { bytes: u8, signed: bool },
    /// `Float32`.
    Float32,
    /// `Float64`.
    Float64,
    /// `Bool`: one byte, 0 or 1.
    Bool,
    /// `String`: a LEB128 length, then the bytes.
    String,
    /// `FixedString(n)`: exactly `n` bytes, zero-padded.
    FixedString(usize),
    /// `Date`: days since 1970-01-01 as `UInt16`.
    Date,
    /// `Date32`: days since 1970-01-01 as `Int32`.
    Date32,
    /// `DateTime`: seconds since the epoch as `UInt32` (the time zone only affects display).
    DateTime,
    /// `DateTime64(p)`: ticks of 10^-p seconds since the epoch as `Int64`.
    DateTime64(u32),
    /// `Nullable(T)`: a byte (1 = null), then `T` unless null.
    Nullable(Box<Binary>),
    /// `Array(T)`: a LEB128 count, then the elements.
    Array(Box<Binary>),
}

impl Binary {
    /// The encoding of a type as `system.columns` writes it, or `None` for
    /// types not encoded here (`Decimal`, `Enum8`, `UUID`, `Map`, ...).
    pub(crate) fn parse(type_name: &str) -> Option<Binary> {
        let t = type_name.trim();
        let inner = |prefix: &str| t.strip_prefix(prefix).and_then(|r| r.strip_suffix(')'));
        // `LowCardinality(T)` travels as `T` in `RowBinary`.
        if let Some(t) = inner("LowCardinality(") {
            return Binary::parse(t);
        }
        if let Some(t) = inner("Nullable(") {
            return Some(Binary::Nullable(Box::new(Binary::parse(t)?)));
        }
        if let Some(t) = inner("Array(") {
            return Some(Binary::Array(Box::new(Binary::parse(t)?)));
        }
        if let Some(n) = inner("FixedString(") {
            return n.trim().parse().ok().map(Binary::FixedString);
        }
        if let Some(args) = inner("DateTime64(") {
            let precision: u32 = args.split(',').next()?.trim().parse().ok()?;
            return (precision <= 9).then_some(Binary::DateTime64(precision));
        }
        if t == "DateTime" || t.starts_with("DateTime(") {
            return Some(Binary::DateTime);
        }
        let int = |bytes, signed| Some(Binary::Int { bytes, signed });
        match t {
            "Int8" => int(1, true),
            "Int16" => int(2, true),
            "Int32" => int(4, true),
            "Int64" => int(8, true),
            "UInt8" => int(1, false),
            "UInt16" => int(2, false),
            "UInt32" => int(4, false),
            "UInt64" => int(8, false),
            "Float32" => Some(Binary::Float32),
            "Float64" => Some(Binary::Float64),
            "Bool" | "Boolean" => Some(Binary::Bool),
            "String" => Some(Binary::String),
            "Date" => Some(Binary::Date),
            "Date32" => Some(Binary::Date32),
            _ => None,
        }
    }
}

/// Appends `value` as a column of type `ty` (named `type_name` in errors) takes it.
pub(crate) fn write_value(
    out: &mut Vec<u8>,
    value: &FieldValue,
    ty: &Binary,
    type_name: &str,
) -> std::result::Result<(), String> {
    use FieldValue as V;
    match (value, ty) {
        (V::Null, Binary::Nullable(_)) => out.push(1),
        (v, Binary::Nullable(inner)) => {
            out.push(0);
            write_value(out, v, inner, type_name)?;
        }
        // Arrays cannot be Nullable in ClickHouse: a null list is an empty one.
        (V::Null, Binary::Array(_)) => push_len(out, 0),
        (V::Null, _) => return Err(null_not_allowed(type_name)),
        (V::Integer(i), Binary::Int { bytes, signed }) => push_int(out, *i, *bytes, *signed)
            .ok_or_else(|| format!("{i}, out of the range of column type {type_name}"))?,
        (V::Boolean(b), Binary::Int { bytes, signed }) => {
            push_int(out, i64::from(*b), *bytes, *signed).expect("0 and 1 fit every integer type")
        }
        (V::Boolean(b), Binary::Bool) => out.push(u8::from(*b)),
        (V::Integer(i), Binary::Float64) => out.extend_from_slice(&(*i as f64).to_le_bytes()),
        (V::Integer(i), Binary::Float32) => out.extend_from_slice(&(*i as f32).to_le_bytes()),
        (V::Float(f), Binary::Float64) => out.extend_from_slice(&f.to_le_bytes()),
        (V::Float(f), Binary::Float32) => out.extend_from_slice(&(*f as f32).to_le_bytes()),
        (V::Decimal(d), Binary::Float64 | Binary::Float32) => {
            let f: f64 = d
                .to_string()
                .parse()
                .map_err(|_| cannot_take(value, type_name))?;
            if *ty == Binary::Float32 {
                out.extend_from_slice(&(f as f32).to_le_bytes());
            } else {
                out.extend_from_slice(&f.to_le_bytes());
            }
        }
        (V::Date(d), Binary::Date | Binary::Date32) => push_date(out, *d, ty, type_name)?,
        (V::Timestamp(t), Binary::Date | Binary::Date32) => {
            push_date(out, t.date_naive(), ty, type_name)?
        }
        (V::Timestamp(t), Binary::DateTime) => {
            let secs = u32::try_from(t.timestamp())
                .map_err(|_| format!("{t}, outside the range of column type {type_name}"))?;
            out.extend_from_slice(&secs.to_le_bytes());
        }
        (V::Timestamp(t), Binary::DateTime64(precision)) => {
            let ticks = ticks(t, *precision)
                .ok_or_else(|| format!("{t}, outside the range of column type {type_name}"))?;
            out.extend_from_slice(&ticks.to_le_bytes());
        }
        (V::Array(items), Binary::Array(inner)) => {
            push_len(out, items.len());
            for item in items {
                write_value(out, item, inner, type_name)?;
            }
        }
        (v, Binary::String) => {
            let text = text_of(v);
            push_len(out, text.len());
            out.extend_from_slice(text.as_bytes());
        }
        (v, Binary::FixedString(n)) => {
            let text = text_of(v);
            if text.len() > *n {
                return Err(format!(
                    "{} bytes of text, longer than column type {type_name}",
                    text.len()
                ));
            }
            out.extend_from_slice(text.as_bytes());
            out.resize(out.len() + n - text.len(), 0);
        }
        (v, _) => return Err(cannot_take(v, type_name)),
    }
    Ok(())
}

/// The low `bytes` bytes of `i`, if `i` fits the type.
fn push_int(out: &mut Vec<u8>, i: i64, bytes: u8, signed: bool) -> Option<()> {
    let bits = u32::from(bytes) * 8;
    let fits = match (signed, bits) {
        (true, 64) => true,
        (true, _) => (-(1i64 << (bits - 1))..(1i64 << (bits - 1))).contains(&i),
        (false, 64) => i >= 0,
        (false, _) => (0..(1i64 << bits)).contains(&i),
    };
    fits.then(|| out.extend_from_slice(&i.to_le_bytes()[..usize::from(bytes)]))
}

fn push_date(
    out: &mut Vec<u8>,
    date: NaiveDate,
    ty: &Binary,
    type_name: &str,
) -> std::result::Result<(), String> {
    let days = date
        .signed_duration_since(NaiveDate::from_ymd_opt(1970, 1, 1).expect("the epoch is a date"))
        .num_days();
    let out_of_range = || format!("{date}, outside the range of column type {type_name}");
    if *ty == Binary::Date {
        let days = u16::try_from(days).map_err(|_| out_of_range())?;
        out.extend_from_slice(&days.to_le_bytes());
    } else {
        let days = i32::try_from(days).map_err(|_| out_of_range())?;
        out.extend_from_slice(&days.to_le_bytes());
    }
    Ok(())
}

/// `t` in ticks of 10^-`precision` seconds, truncated like ClickHouse's own parser.
fn ticks(t: &DateTime<Utc>, precision: u32) -> Option<i64> {
    let scale = 10i64.pow(precision);
    let sub = i64::from(t.timestamp_subsec_nanos()) / 10i64.pow(9 - precision);
    t.timestamp().checked_mul(scale)?.checked_add(sub)
}

/// An unsigned LEB128 length, as `RowBinary` prefixes strings and arrays.
pub(crate) fn push_len(out: &mut Vec<u8>, mut n: usize) {
    loop {
        let byte = (n & 0x7f) as u8;
        n >>= 7;
        if n == 0 {
            out.push(byte);
            return;
        }
        out.push(byte | 0x80);
    }
}

/// One `RowBinary` row of `record`, in the order of `columns`, each of
/// which has a [`Binary`] encoding.
pub(crate) fn write_row(
    out: &mut Vec<u8>,
    record: &StreamRecord,
    columns: &[MappedColumn],
    target: &str,
) -> Result<()> {
    for c in columns {
        let ty = c.binary.as_ref().ok_or_else(|| {
            Error::State(format!("column `{}` has no RowBinary encoding", c.name))
        })?;
        write_value(out, c.value_of(record), ty, &c.column.type_name)
            .map_err(|why| c.mismatch(record, target, &why))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn encode(value: FieldValue, type_name: &str) -> std::result::Result<Vec<u8>, String> {
        let ty = Binary::parse(type_name).expect(type_name);
        let mut out = Vec::new();
        write_value(&mut out, &value, &ty, type_name).map(|()| out)
    }

    #[test]
    fn parses_types() {
        assert_eq!(
            Binary::parse("LowCardinality(Nullable(String))"),
            Some(Binary::Nullable(Box::new(Binary::String)))
        );
        assert_eq!(
            Binary::parse("DateTime64(3, 'UTC')"),
            Some(Binary::DateTime64(3))
        );
        assert_eq!(
            Binary::parse("DateTime('Europe/Paris')"),
            Some(Binary::DateTime)
        );
        assert_eq!(
            Binary::parse("Array(UInt16)"),
            Some(Binary::Array(Box::new(Binary::Int {
                bytes: 2,
                signed: false
            })))
        );
        assert_eq!(
            Binary::parse("FixedString(3)"),
            Some(Binary::FixedString(3))
        );
        for none in [
            "Decimal(18, 4)",
            "Enum8('a' = 1)",
            "UUID",
            "Array(Decimal(9, 2))",
        ] {
            assert_eq!(Binary::parse(none), None, "{none}");
        }
    }

    #[test]
    fn encodes_values() {
        assert_eq!(
            encode(FieldValue::Integer(-2), "Int16").unwrap(),
            [0xfe, 0xff]
        );
        assert_eq!(encode(FieldValue::Integer(255), "UInt8").unwrap(), [255]);
        assert!(
            encode(FieldValue::Integer(256), "UInt8")
                .unwrap_err()
                .contains("out of the range of column type UInt8")
        );
        assert!(encode(FieldValue::Integer(-1), "UInt64").is_err());
        assert_eq!(
            encode(FieldValue::Float(1.5), "Float64").unwrap(),
            1.5f64.to_le_bytes()
        );
        assert_eq!(
            encode("héllo".into(), "String").unwrap(),
            b"\x06h\xc3\xa9llo"
        );
        assert_eq!(encode("ab".into(), "FixedString(3)").unwrap(), b"ab\0");
        assert!(encode("abcd".into(), "FixedString(3)").is_err());
        assert_eq!(encode(FieldValue::Null, "Nullable(Int32)").unwrap(), [1u8]);
        assert_eq!(
            encode(FieldValue::Integer(1), "Nullable(Int32)").unwrap(),
            [0u8, 1, 0, 0, 0]
        );
        assert!(
            encode(FieldValue::Null, "Int32")
                .unwrap_err()
                .contains("does not allow")
        );
        let long = "x".repeat(300);
        let bytes = encode(long.as_str().into(), "String").unwrap();
        assert_eq!(&bytes[..2], [0xac, 0x02], "300 as LEB128");
        assert_eq!(
            encode(
                FieldValue::Array(vec![FieldValue::Integer(1), FieldValue::Integer(2)]),
                "Array(UInt8)"
            )
            .unwrap(),
            [2, 1, 2]
        );
        assert_eq!(encode(FieldValue::Null, "Array(UInt8)").unwrap(), [0]);
        assert!(
            encode("x".into(), "Int64")
                .unwrap_err()
                .contains("cannot take")
        );
    }

    #[test]
    fn encodes_times() {
        let t = DateTime::parse_from_rfc3339("2024-01-15T10:30:00.123456789Z")
            .unwrap()
            .to_utc();
        let secs = t.timestamp();
        assert_eq!(
            encode(FieldValue::Timestamp(t), "DateTime").unwrap(),
            (secs as u32).to_le_bytes()
        );
        assert_eq!(
            encode(FieldValue::Timestamp(t), "DateTime64(3, 'UTC')").unwrap(),
            (secs * 1000 + 123).to_le_bytes()
        );
        assert_eq!(
            encode(FieldValue::Timestamp(t), "Date").unwrap(),
            19737u16.to_le_bytes()
        );
        let before_epoch = NaiveDate::from_ymd_opt(1969, 12, 31).unwrap();
        assert!(encode(FieldValue::Date(before_epoch), "Date").is_err());
        assert_eq!(
            encode(FieldValue::Date(before_epoch), "Date32").unwrap(),
            (-1i32).to_le_bytes()
        );
    }
}
