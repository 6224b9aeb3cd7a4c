//! PostgreSQL types to Velostream types, and their text form to values.
//!
//! `pgoutput`, snapshots and the polling source all receive values in
//! PostgreSQL's text output format (sessions pin `DateStyle=ISO`,
//! `TimeZone=UTC`, `bytea_output=hex`, `extra_float_digits=3`), so one
//! decoder serves all three and a value reads the same whichever way it came.

use std::fmt::Write as _;

use chrono::{DateTime, NaiveDate, NaiveDateTime, Utc};
use rust_decimal::Decimal;
use velo_datasource_core::{DataType, FieldValue};

/// Session settings every connection of this crate uses, in the
/// `options` startup parameter form.
pub const SESSION_OPTIONS: &str = "-c DateStyle=ISO -c TimeZone=UTC -c bytea_output=hex -c extra_float_digits=3 -c IntervalStyle=iso_8601";

/// Built-in type OIDs this crate maps (from `pg_type.dat`).
#[allow(missing_docs)]
pub mod oid {
    pub const BOOL: u32 = 16;
    pub const BYTEA: u32 = 17;
    pub const CHAR: u32 = 18;
    pub const NAME: u32 = 19;
    pub const INT8: u32 = 20;
    pub const INT2: u32 = 21;
    pub const INT4: u32 = 23;
    pub const TEXT: u32 = 25;
    pub const OID: u32 = 26;
    pub const JSON: u32 = 114;
    pub const FLOAT4: u32 = 700;
    pub const FLOAT8: u32 = 701;
    pub const BPCHAR: u32 = 1042;
    pub const VARCHAR: u32 = 1043;
    pub const DATE: u32 = 1082;
    pub const TIMESTAMP: u32 = 1114;
    pub const TIMESTAMPTZ: u32 = 1184;
    pub const NUMERIC: u32 = 1700;
    pub const UUID: u32 = 2950;
    pub const JSONB: u32 = 3802;

    pub const JSON_ARRAY: u32 = 199;
    pub const BOOL_ARRAY: u32 = 1000;
    pub const BYTEA_ARRAY: u32 = 1001;
    pub const INT2_ARRAY: u32 = 1005;
    pub const INT4_ARRAY: u32 = 1007;
    pub const TEXT_ARRAY: u32 = 1009;
    pub const BPCHAR_ARRAY: u32 = 1014;
    pub const VARCHAR_ARRAY: u32 = 1015;
    pub const INT8_ARRAY: u32 = 1016;
    pub const FLOAT4_ARRAY: u32 = 1021;
    pub const FLOAT8_ARRAY: u32 = 1022;
    pub const TIMESTAMP_ARRAY: u32 = 1115;
    pub const DATE_ARRAY: u32 = 1182;
    pub const TIMESTAMPTZ_ARRAY: u32 = 1185;
    pub const NUMERIC_ARRAY: u32 = 1231;
    pub const UUID_ARRAY: u32 = 2951;
    pub const JSONB_ARRAY: u32 = 3807;
}

/// The element type of an array type this crate maps.
fn element_of(type_oid: u32) -> Option<u32> {
    use oid::*;
    Some(match type_oid {
        BOOL_ARRAY => BOOL,
        BYTEA_ARRAY => BYTEA,
        INT2_ARRAY => INT2,
        INT4_ARRAY => INT4,
        INT8_ARRAY => INT8,
        TEXT_ARRAY => TEXT,
        BPCHAR_ARRAY => BPCHAR,
        VARCHAR_ARRAY => VARCHAR,
        FLOAT4_ARRAY => FLOAT4,
        FLOAT8_ARRAY => FLOAT8,
        TIMESTAMP_ARRAY => TIMESTAMP,
        TIMESTAMPTZ_ARRAY => TIMESTAMPTZ,
        DATE_ARRAY => DATE,
        NUMERIC_ARRAY => NUMERIC,
        UUID_ARRAY => UUID,
        JSON_ARRAY => JSON,
        JSONB_ARRAY => JSONB,
        _ => return None,
    })
}

/// The Velostream type of a PostgreSQL type. Types without a closer match
/// (time, interval, enums, ranges, domains, ...) are read as their text.
pub fn data_type(type_oid: u32) -> DataType {
    use oid::*;
    if let Some(element) = element_of(type_oid) {
        return DataType::Array(Box::new(data_type(element)));
    }
    match type_oid {
        BOOL => DataType::Boolean,
        INT2 | INT4 | INT8 | OID => DataType::Integer,
        FLOAT4 | FLOAT8 => DataType::Float,
        NUMERIC => DataType::Decimal,
        BYTEA => DataType::Bytes,
        DATE => DataType::Date,
        TIMESTAMP | TIMESTAMPTZ => DataType::Timestamp,
        JSON | JSONB => DataType::Any,
        _ => DataType::String,
    }
}

/// Decodes the text form of a value of type `type_oid`.
pub fn decode_text(type_oid: u32, text: &[u8]) -> Result<FieldValue, String> {
    let text = std::str::from_utf8(text).map_err(|e| format!("value is not UTF-8: {e}"))?;
    decode_str(type_oid, text)
}

fn decode_str(type_oid: u32, text: &str) -> Result<FieldValue, String> {
    use oid::*;
    if let Some(element) = element_of(type_oid) {
        return parse_array(text, element);
    }
    let bad = |what: &str| format!("`{}` is not a valid {what}", truncate(text));
    Ok(match type_oid {
        BOOL => match text {
            "t" | "true" => FieldValue::Boolean(true),
            "f" | "false" => FieldValue::Boolean(false),
            _ => return Err(bad("boolean")),
        },
        INT2 | INT4 | INT8 | OID => FieldValue::Integer(text.parse().map_err(|_| bad("integer"))?),
        FLOAT4 | FLOAT8 => FieldValue::Float(text.parse().map_err(|_| bad("float"))?),
        NUMERIC => match text {
            "NaN" => FieldValue::Float(f64::NAN),
            "Infinity" => FieldValue::Float(f64::INFINITY),
            "-Infinity" => FieldValue::Float(f64::NEG_INFINITY),
            _ => FieldValue::Decimal(Decimal::from_str_exact(text).map_err(|e| {
                format!(
                    "numeric `{}` does not fit a 96-bit decimal: {e}",
                    truncate(text)
                )
            })?),
        },
        BYTEA => FieldValue::Bytes(parse_bytea(text).ok_or_else(|| bad("hex bytea"))?),
        DATE => FieldValue::Date(parse_date(text).ok_or_else(|| bad("date"))?),
        TIMESTAMP => FieldValue::Timestamp(parse_timestamp(text).ok_or_else(|| bad("timestamp"))?),
        TIMESTAMPTZ => {
            FieldValue::Timestamp(parse_timestamptz(text).ok_or_else(|| bad("timestamptz"))?)
        }
        JSON | JSONB => {
            let json: serde_json::Value =
                serde_json::from_str(text).map_err(|e| format!("invalid JSON: {e}"))?;
            FieldValue::from_json(&json)
        }
        _ => FieldValue::String(text.into()),
    })
}

fn truncate(text: &str) -> &str {
    match text.char_indices().nth(64) {
        Some((i, _)) => &text[..i],
        None => text,
    }
}

fn parse_bytea(text: &str) -> Option<Vec<u8>> {
    let hex = text.strip_prefix("\\x")?.as_bytes();
    if hex.len() % 2 != 0 {
        return None;
    }
    let nibble = |c: u8| match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    };
    hex.chunks_exact(2)
        .map(|pair| Some(nibble(pair[0])? << 4 | nibble(pair[1])?))
        .collect()
}

fn parse_date(text: &str) -> Option<NaiveDate> {
    match text {
        "infinity" => Some(NaiveDate::MAX),
        "-infinity" => Some(NaiveDate::MIN),
        _ => NaiveDate::parse_from_str(text, "%Y-%m-%d").ok(),
    }
}

fn parse_timestamp(text: &str) -> Option<DateTime<Utc>> {
    match text {
        "infinity" => Some(DateTime::<Utc>::MAX_UTC),
        "-infinity" => Some(DateTime::<Utc>::MIN_UTC),
        _ => NaiveDateTime::parse_from_str(text, "%Y-%m-%d %H:%M:%S%.f")
            .ok()
            .map(|t| t.and_utc()),
    }
}

fn parse_timestamptz(text: &str) -> Option<DateTime<Utc>> {
    match text {
        "infinity" => Some(DateTime::<Utc>::MAX_UTC),
        "-infinity" => Some(DateTime::<Utc>::MIN_UTC),
        _ => DateTime::parse_from_str(text, "%Y-%m-%d %H:%M:%S%.f%#z")
            .ok()
            .map(|t| t.with_timezone(&Utc)),
    }
}

/// Parses an array literal such as `{1,NULL,"a \"b\""}` or `{{1,2},{3,4}}`.
fn parse_array(text: &str, element: u32) -> Result<FieldValue, String> {
    // Arrays with non-default bounds start with `[1:2]=`.
    let body = match text.find('=') {
        Some(eq) if text.starts_with('[') => &text[eq + 1..],
        _ => text,
    };
    let mut chars = body.char_indices().peekable();
    let value = parse_array_level(body, &mut chars, element)?;
    match chars.next() {
        None => Ok(value),
        Some((i, _)) => Err(format!(
            "array `{}`: unexpected text at character {i}",
            truncate(text)
        )),
    }
}

fn parse_array_level(
    text: &str,
    chars: &mut std::iter::Peekable<std::str::CharIndices<'_>>,
    element: u32,
) -> Result<FieldValue, String> {
    let bad =
        |at: usize, what: &str| format!("array `{}`: {what} at character {at}", truncate(text));
    match chars.next() {
        Some((_, '{')) => {}
        Some((i, _)) => return Err(bad(i, "expected `{`")),
        None => return Err(bad(text.len(), "unexpected end")),
    }
    let mut items = Vec::new();
    if let Some((_, '}')) = chars.peek() {
        chars.next();
        return Ok(FieldValue::Array(items));
    }
    loop {
        match chars.peek().copied() {
            Some((_, '{')) => items.push(parse_array_level(text, chars, element)?),
            Some((_, '"')) => {
                chars.next();
                let mut item = String::new();
                loop {
                    match chars.next() {
                        Some((_, '\\')) => match chars.next() {
                            Some((_, c)) => item.push(c),
                            None => return Err(bad(text.len(), "unexpected end")),
                        },
                        Some((_, '"')) => break,
                        Some((_, c)) => item.push(c),
                        None => return Err(bad(text.len(), "unterminated quote")),
                    }
                }
                items.push(decode_str(element, &item)?);
            }
            Some((start, _)) => {
                let mut end = start;
                while let Some(&(i, c)) = chars.peek() {
                    if c == ',' || c == '}' {
                        break;
                    }
                    end = i + c.len_utf8();
                    chars.next();
                }
                let raw = text[start..end].trim();
                if raw.eq_ignore_ascii_case("NULL") {
                    items.push(FieldValue::Null);
                } else {
                    items.push(decode_str(element, raw)?);
                }
            }
            None => return Err(bad(text.len(), "unexpected end")),
        }
        match chars.next() {
            Some((_, ',')) => continue,
            Some((_, '}')) => return Ok(FieldValue::Array(items)),
            Some((i, _)) => return Err(bad(i, "expected `,` or `}`")),
            None => return Err(bad(text.len(), "unexpected end")),
        }
    }
}

/// The type OID named by `information_schema.columns.udt_name` or
/// `pg_type.typname`, for schemas read from the catalog.
pub fn oid_of_type_name(name: &str) -> Option<u32> {
    use oid::*;
    Some(match name {
        "bool" | "boolean" => BOOL,
        "bytea" => BYTEA,
        "char" => CHAR,
        "name" => NAME,
        "int8" | "bigint" => INT8,
        "int2" | "smallint" => INT2,
        "int4" | "integer" => INT4,
        "text" => TEXT,
        "oid" => OID,
        "json" => JSON,
        "float4" | "real" => FLOAT4,
        "float8" | "double precision" => FLOAT8,
        "bpchar" | "character" => BPCHAR,
        "varchar" | "character varying" => VARCHAR,
        "date" => DATE,
        "timestamp" | "timestamp without time zone" => TIMESTAMP,
        "timestamptz" | "timestamp with time zone" => TIMESTAMPTZ,
        "numeric" | "decimal" => NUMERIC,
        "uuid" => UUID,
        "jsonb" => JSONB,
        "_bool" => BOOL_ARRAY,
        "_bytea" => BYTEA_ARRAY,
        "_int2" => INT2_ARRAY,
        "_int4" => INT4_ARRAY,
        "_int8" => INT8_ARRAY,
        "_text" => TEXT_ARRAY,
        "_bpchar" => BPCHAR_ARRAY,
        "_varchar" => VARCHAR_ARRAY,
        "_float4" => FLOAT4_ARRAY,
        "_float8" => FLOAT8_ARRAY,
        "_timestamp" => TIMESTAMP_ARRAY,
        "_timestamptz" => TIMESTAMPTZ_ARRAY,
        "_date" => DATE_ARRAY,
        "_numeric" => NUMERIC_ARRAY,
        "_uuid" => UUID_ARRAY,
        "_json" => JSON_ARRAY,
        "_jsonb" => JSONB_ARRAY,
        _ => return None,
    })
}

/// The text form PostgreSQL's input functions accept for `value`, used by
/// the sink (which sends rows as JSON): bytes as `\x..` hex, timestamps in
/// RFC 3339, everything else as its JSON form.
pub fn to_input_json(value: &FieldValue) -> serde_json::Value {
    match value {
        FieldValue::Bytes(bytes) => {
            let mut text = String::with_capacity(2 + bytes.len() * 2);
            text.push_str("\\x");
            for b in bytes {
                let _ = write!(text, "{b:02x}");
            }
            serde_json::Value::String(text)
        }
        FieldValue::Timestamp(t) => serde_json::Value::String(t.to_rfc3339()),
        FieldValue::Decimal(d) => serde_json::Value::String(d.to_string()),
        FieldValue::Float(f) if !f.is_finite() => serde_json::Value::String(
            if f.is_nan() {
                "NaN"
            } else if *f > 0.0 {
                "Infinity"
            } else {
                "-Infinity"
            }
            .to_owned(),
        ),
        FieldValue::Array(items) => items.iter().map(to_input_json).collect(),
        other => other.to_json(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(oid: u32, text: &str) -> FieldValue {
        decode_text(oid, text.as_bytes()).unwrap()
    }

    #[test]
    fn scalars() {
        use oid::*;
        assert_eq!(d(BOOL, "t"), FieldValue::Boolean(true));
        assert_eq!(d(INT2, "-7"), FieldValue::Integer(-7));
        assert_eq!(
            d(INT8, "9223372036854775807"),
            FieldValue::Integer(i64::MAX)
        );
        assert_eq!(d(FLOAT8, "1.5e-3"), FieldValue::Float(0.0015));
        assert_eq!(d(FLOAT4, "NaN"), FieldValue::Float(f64::NAN));
        assert_eq!(d(FLOAT8, "-Infinity"), FieldValue::Float(f64::NEG_INFINITY));
        assert_eq!(
            d(NUMERIC, "12.340"),
            FieldValue::Decimal(Decimal::from_str_exact("12.340").unwrap())
        );
        assert_eq!(d(NUMERIC, "NaN"), FieldValue::Float(f64::NAN));
        assert_eq!(d(TEXT, "a,b"), FieldValue::String("a,b".into()));
        assert_eq!(
            d(UUID, "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11")
                .as_str()
                .unwrap()
                .len(),
            36
        );
        assert_eq!(d(BYTEA, "\\x00ff10"), FieldValue::Bytes(vec![0, 255, 16]));
        assert_eq!(
            d(DATE, "2024-02-29"),
            FieldValue::Date(NaiveDate::from_ymd_opt(2024, 2, 29).unwrap())
        );
        let ts = DateTime::parse_from_rfc3339("2024-01-02T03:04:05.123456Z").unwrap();
        assert_eq!(
            d(TIMESTAMP, "2024-01-02 03:04:05.123456"),
            FieldValue::Timestamp(ts.into())
        );
        assert_eq!(
            d(TIMESTAMPTZ, "2024-01-02 03:04:05.123456+00"),
            FieldValue::Timestamp(ts.into())
        );
        assert_eq!(
            d(TIMESTAMPTZ, "2024-01-02 08:34:05.123456+05:30"),
            FieldValue::Timestamp(ts.into())
        );
        assert_eq!(
            d(TIMESTAMP, "2024-01-02 03:04:05"),
            FieldValue::Timestamp(
                DateTime::parse_from_rfc3339("2024-01-02T03:04:05Z")
                    .unwrap()
                    .into()
            )
        );
        let json = d(JSONB, r#"{"a": [1, "x"], "b": null}"#);
        assert_eq!(
            json.to_json(),
            serde_json::json!({"a": [1, "x"], "b": null})
        );
        assert_eq!(d(1083, "12:00:00"), FieldValue::String("12:00:00".into()));
    }

    #[test]
    fn bad_values_say_what_they_are() {
        let err = decode_text(oid::INT4, b"12x").unwrap_err();
        assert_eq!(err, "`12x` is not a valid integer");
        let err = decode_text(oid::NUMERIC, b"1e40").unwrap_err();
        assert!(err.contains("does not fit"), "{err}");
        assert!(decode_text(oid::BYTEA, b"\\x0").is_err());
        assert!(
            decode_text(oid::TEXT, &[0xff])
                .unwrap_err()
                .contains("UTF-8")
        );
    }

    #[test]
    fn arrays() {
        use oid::*;
        assert_eq!(
            d(INT4_ARRAY, "{1,NULL,3}"),
            FieldValue::Array(vec![1i64.into(), FieldValue::Null, 3i64.into()])
        );
        assert_eq!(d(TEXT_ARRAY, "{}"), FieldValue::Array(vec![]));
        assert_eq!(
            d(
                TEXT_ARRAY,
                r#"{plain,"with space","q\"uote","back\\slash","NULL",""}"#
            ),
            FieldValue::Array(
                ["plain", "with space", "q\"uote", "back\\slash", "NULL", ""]
                    .into_iter()
                    .map(FieldValue::from)
                    .collect()
            )
        );
        assert_eq!(
            d(INT8_ARRAY, "{{1,2},{3,4}}"),
            FieldValue::Array(vec![
                FieldValue::Array(vec![1i64.into(), 2i64.into()]),
                FieldValue::Array(vec![3i64.into(), 4i64.into()]),
            ])
        );
        assert_eq!(
            d(INT4_ARRAY, "[0:1]={5,6}"),
            FieldValue::Array(vec![5i64.into(), 6i64.into()])
        );
        assert!(decode_text(INT4_ARRAY, b"{1,2").is_err());
        assert!(decode_text(INT4_ARRAY, b"{1,x}").is_err());
        assert_eq!(
            data_type(INT4_ARRAY),
            DataType::Array(Box::new(DataType::Integer))
        );
    }

    #[test]
    fn type_names_and_input_json() {
        assert_eq!(oid_of_type_name("int4"), Some(oid::INT4));
        assert_eq!(oid_of_type_name("_text"), Some(oid::TEXT_ARRAY));
        assert_eq!(oid_of_type_name("mood"), None);
        assert_eq!(
            to_input_json(&FieldValue::Bytes(vec![1, 171])),
            serde_json::json!("\\x01ab")
        );
        assert_eq!(
            to_input_json(&FieldValue::Float(f64::NAN)),
            serde_json::json!("NaN")
        );
    }
}
