//! Typed field values, their JSON form, and parsing them from text.
//!
//! JSON has no decimal, date, timestamp or bytes type, so those are written as
//! strings (exact decimal digits, `YYYY-MM-DD`, RFC 3339, base64) and
//! non-finite floats as `"NaN"`, `"Infinity"`, `"-Infinity"`. Reading JSON
//! back *with the field's [`DataType`]* ([`FieldValue::from_json_typed`])
//! restores every value exactly; without a type ([`FieldValue::from_json`])
//! JSON's own kinds are kept.

use std::collections::BTreeMap;
use std::fmt;

use base64::Engine as _;
use chrono::{DateTime, NaiveDate, NaiveDateTime, NaiveTime, SecondsFormat, Utc};
use compact_str::CompactString;
use rust_decimal::Decimal;
use serde_json::Value as Json;

use crate::schema::DataType;

/// One value of a record.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum FieldValue {
    /// Absent value.
    Null,
    /// Boolean.
    Boolean(bool),
    /// 64-bit signed integer.
    Integer(i64),
    /// 64-bit float.
    Float(f64),
    /// Exact decimal.
    Decimal(Decimal),
    /// UTF-8 text. Up to 24 bytes are kept inline, without an allocation:
    /// most text cells of a stream (symbols, codes, short ids) are that
    /// short, and a `String` per cell was the largest cost of decoding them.
    String(CompactString),
    /// Raw bytes.
    Bytes(Vec<u8>),
    /// Calendar date.
    Date(NaiveDate),
    /// Instant in UTC.
    Timestamp(DateTime<Utc>),
    /// List of values.
    Array(Vec<FieldValue>),
    /// String-keyed map or nested struct.
    Map(BTreeMap<String, FieldValue>),
}

impl PartialEq for FieldValue {
    /// Structural equality in which `NaN` equals `NaN`, so that a value always
    /// equals its own round trip.
    fn eq(&self, other: &Self) -> bool {
        use FieldValue::*;
        match (self, other) {
            (Null, Null) => true,
            (Boolean(a), Boolean(b)) => a == b,
            (Integer(a), Integer(b)) => a == b,
            (Float(a), Float(b)) => a == b || (a.is_nan() && b.is_nan()),
            (Decimal(a), Decimal(b)) => a == b && a.scale() == b.scale(),
            (String(a), String(b)) => a == b,
            (Bytes(a), Bytes(b)) => a == b,
            (Date(a), Date(b)) => a == b,
            (Timestamp(a), Timestamp(b)) => a == b,
            (Array(a), Array(b)) => a == b,
            (Map(a), Map(b)) => a == b,
            _ => false,
        }
    }
}

/// Why a value could not be read as the wanted type.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("cannot read {found} as {expected}")]
pub struct ValueError {
    /// What was found, shortened for messages.
    pub found: String,
    /// The wanted type.
    pub expected: String,
}

impl ValueError {
    fn new(found: impl fmt::Display, expected: &DataType) -> Self {
        let mut found = found.to_string();
        if found.len() > 64 {
            let mut cut = 61;
            while !found.is_char_boundary(cut) {
                cut -= 1;
            }
            found.truncate(cut);
            found.push_str("...");
        }
        ValueError {
            found,
            expected: expected.to_string(),
        }
    }
}

impl FieldValue {
    /// Whether this is [`FieldValue::Null`].
    pub fn is_null(&self) -> bool {
        matches!(self, FieldValue::Null)
    }

    /// Whether dropping this value frees memory: a text too long to be kept
    /// inline, or any bytes, list or map (which may). Everything else is
    /// plain data, whose drop does nothing.
    pub(crate) fn owns_heap(&self) -> bool {
        match self {
            FieldValue::String(s) => s.is_heap_allocated(),
            FieldValue::Bytes(_) | FieldValue::Array(_) | FieldValue::Map(_) => true,
            FieldValue::Null
            | FieldValue::Boolean(_)
            | FieldValue::Integer(_)
            | FieldValue::Float(_)
            | FieldValue::Decimal(_)
            | FieldValue::Date(_)
            | FieldValue::Timestamp(_) => false,
        }
    }

    /// The text, if this is a string.
    pub fn as_str(&self) -> Option<&str> {
        match self {
            FieldValue::String(s) => Some(s),
            _ => None,
        }
    }

    /// The integer, if this is one.
    pub fn as_i64(&self) -> Option<i64> {
        match self {
            FieldValue::Integer(i) => Some(*i),
            _ => None,
        }
    }

    /// A number as `f64` (integers, floats and decimals).
    pub fn as_f64(&self) -> Option<f64> {
        match self {
            FieldValue::Integer(i) => Some(*i as f64),
            FieldValue::Float(f) => Some(*f),
            FieldValue::Decimal(d) => d.to_string().parse().ok(),
            _ => None,
        }
    }

    /// The natural type of this value; `None` for `Null`.
    pub fn data_type(&self) -> Option<DataType> {
        Some(match self {
            FieldValue::Null => return None,
            FieldValue::Boolean(_) => DataType::Boolean,
            FieldValue::Integer(_) => DataType::Integer,
            FieldValue::Float(_) => DataType::Float,
            FieldValue::Decimal(_) => DataType::Decimal,
            FieldValue::String(_) => DataType::String,
            FieldValue::Bytes(_) => DataType::Bytes,
            FieldValue::Date(_) => DataType::Date,
            FieldValue::Timestamp(_) => DataType::Timestamp,
            FieldValue::Array(_) => DataType::Array(Box::new(DataType::Any)),
            FieldValue::Map(_) => DataType::Map(Box::new(DataType::Any)),
        })
    }

    /// Whether this value may stand in a field of type `data_type` (nulls aside).
    pub fn conforms_to(&self, data_type: &DataType) -> bool {
        match (self, data_type) {
            (FieldValue::Null, _) | (_, DataType::Any) => true,
            (FieldValue::Boolean(_), DataType::Boolean)
            | (FieldValue::Integer(_), DataType::Integer)
            | (FieldValue::Float(_), DataType::Float)
            | (FieldValue::Decimal(_), DataType::Decimal)
            | (FieldValue::String(_), DataType::String)
            | (FieldValue::Bytes(_), DataType::Bytes)
            | (FieldValue::Date(_), DataType::Date)
            | (FieldValue::Timestamp(_), DataType::Timestamp) => true,
            (FieldValue::Array(items), DataType::Array(inner)) => {
                items.iter().all(|v| v.conforms_to(inner))
            }
            (FieldValue::Map(map), DataType::Map(inner)) => {
                map.values().all(|v| v.conforms_to(inner))
            }
            (FieldValue::Map(map), DataType::Struct(fields)) => fields.iter().all(|f| {
                map.get(&f.name)
                    .map_or(f.nullable, |v| v.conforms_to(&f.data_type))
            }),
            _ => false,
        }
    }

    /// The JSON form of this value (see the module docs for non-JSON types).
    pub fn to_json(&self) -> Json {
        match self {
            FieldValue::Null => Json::Null,
            FieldValue::Boolean(b) => Json::Bool(*b),
            FieldValue::Integer(i) => Json::from(*i),
            FieldValue::Float(f) => match serde_json::Number::from_f64(*f) {
                Some(n) => Json::Number(n),
                None => Json::String(non_finite_name(*f).to_owned()),
            },
            FieldValue::Decimal(d) => Json::String(d.to_string()),
            FieldValue::String(s) => Json::String(s.to_string()),
            FieldValue::Bytes(b) => {
                Json::String(base64::engine::general_purpose::STANDARD.encode(b))
            }
            FieldValue::Date(d) => Json::String(d.format("%Y-%m-%d").to_string()),
            FieldValue::Timestamp(t) => Json::String(format_timestamp(t)),
            FieldValue::Array(items) => Json::Array(items.iter().map(Self::to_json).collect()),
            FieldValue::Map(map) => {
                Json::Object(map.iter().map(|(k, v)| (k.clone(), v.to_json())).collect())
            }
        }
    }

    /// A value from JSON without a schema: JSON's own kinds are kept
    /// (integers that fit `i64` as `Integer`, larger ones as `Decimal`).
    pub fn from_json(json: &Json) -> FieldValue {
        match json {
            Json::Null => FieldValue::Null,
            Json::Bool(b) => FieldValue::Boolean(*b),
            Json::Number(n) => number_value(n),
            Json::String(s) => FieldValue::String(s.as_str().into()),
            Json::Array(items) => FieldValue::Array(items.iter().map(Self::from_json).collect()),
            Json::Object(map) => FieldValue::Map(
                map.iter()
                    .map(|(k, v)| (k.clone(), Self::from_json(v)))
                    .collect(),
            ),
        }
    }

    /// A value of type `data_type` from JSON; the inverse of [`FieldValue::to_json`].
    ///
    /// Numbers may also come as strings and timestamps as epoch milliseconds,
    /// as other producers write them.
    pub fn from_json_typed(json: &Json, data_type: &DataType) -> Result<FieldValue, ValueError> {
        let fail = || ValueError::new(json, data_type);
        Ok(match (data_type, json) {
            (_, Json::Null) => FieldValue::Null,
            (DataType::Any, v) => Self::from_json(v),
            (DataType::Boolean, Json::Bool(b)) => FieldValue::Boolean(*b),
            (DataType::Integer, Json::Number(n)) => {
                FieldValue::Integer(n.as_i64().ok_or_else(fail)?)
            }
            (DataType::Float, Json::Number(n)) => FieldValue::Float(n.as_f64().ok_or_else(fail)?),
            (DataType::Decimal, Json::Number(n)) => FieldValue::Decimal(
                n.to_string()
                    .parse::<Decimal>()
                    .or_else(|_| Decimal::from_scientific(&n.to_string()))
                    .map_err(|_| fail())?,
            ),
            (DataType::String, Json::String(s)) => FieldValue::String(s.as_str().into()),
            (DataType::Timestamp, Json::Number(n)) => {
                let ms = n.as_i64().ok_or_else(fail)?;
                FieldValue::Timestamp(DateTime::from_timestamp_millis(ms).ok_or_else(fail)?)
            }
            (DataType::Bytes, Json::String(s)) => FieldValue::Bytes(
                base64::engine::general_purpose::STANDARD
                    .decode(s)
                    .map_err(|_| fail())?,
            ),
            (
                DataType::Boolean
                | DataType::Integer
                | DataType::Float
                | DataType::Decimal
                | DataType::Date
                | DataType::Timestamp,
                Json::String(s),
            ) => Self::parse_text(s, data_type)?,
            (DataType::Array(inner), Json::Array(items)) => FieldValue::Array(
                items
                    .iter()
                    .map(|v| Self::from_json_typed(v, inner))
                    .collect::<Result<_, _>>()?,
            ),
            (DataType::Map(inner), Json::Object(map)) => FieldValue::Map(
                map.iter()
                    .map(|(k, v)| Ok((k.clone(), Self::from_json_typed(v, inner)?)))
                    .collect::<Result<_, ValueError>>()?,
            ),
            (DataType::Struct(fields), Json::Object(map)) => {
                let mut out = BTreeMap::new();
                for (k, v) in map {
                    let value = match fields.iter().find(|f| &f.name == k) {
                        Some(f) => Self::from_json_typed(v, &f.data_type)?,
                        None => Self::from_json(v),
                    };
                    out.insert(k.clone(), value);
                }
                FieldValue::Map(out)
            }
            _ => return Err(fail()),
        })
    }

    /// Parses text (a CSV cell, a URI parameter) as `data_type`.
    ///
    /// Booleans accept `true/false/t/f/yes/no/1/0` in any case; timestamps
    /// accept RFC 3339 and `YYYY-MM-DD[T ]HH:MM:SS[.fff]` (taken as UTC);
    /// floats accept `NaN`, `Infinity`, `-Infinity`.
    pub fn parse_text(text: &str, data_type: &DataType) -> Result<FieldValue, ValueError> {
        let fail = || ValueError::new(format_args!("`{text}`"), data_type);
        Ok(match data_type {
            DataType::String | DataType::Any => FieldValue::String(text.into()),
            DataType::Integer => FieldValue::Integer(text.trim().parse().map_err(|_| fail())?),
            DataType::Float => FieldValue::Float(parse_float(text.trim()).ok_or_else(fail)?),
            DataType::Boolean => FieldValue::Boolean(parse_bool(text.trim()).ok_or_else(fail)?),
            DataType::Decimal => {
                let t = text.trim();
                FieldValue::Decimal(
                    t.parse::<Decimal>()
                        .or_else(|_| Decimal::from_scientific(t))
                        .map_err(|_| fail())?,
                )
            }
            DataType::Date => FieldValue::Date(
                NaiveDate::parse_from_str(text.trim(), "%Y-%m-%d").map_err(|_| fail())?,
            ),
            DataType::Timestamp => FieldValue::Timestamp(parse_timestamp(text).ok_or_else(fail)?),
            DataType::Bytes => FieldValue::Bytes(
                base64::engine::general_purpose::STANDARD
                    .decode(text.trim())
                    .map_err(|_| fail())?,
            ),
            DataType::Array(_) | DataType::Map(_) | DataType::Struct(_) => {
                let json: Json = serde_json::from_str(text).map_err(|_| fail())?;
                Self::from_json_typed(&json, data_type)?
            }
        })
    }
}

impl fmt::Display for FieldValue {
    /// The text form written to CSV cells: `Null` is empty, strings are bare,
    /// nested values are JSON.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FieldValue::Null => Ok(()),
            FieldValue::Boolean(b) => write!(f, "{b}"),
            FieldValue::Integer(i) => write!(f, "{i}"),
            FieldValue::Float(x) if x.is_finite() => write!(f, "{x:?}"),
            FieldValue::Float(x) => f.write_str(non_finite_name(*x)),
            FieldValue::Decimal(d) => write!(f, "{d}"),
            FieldValue::String(s) => f.write_str(s),
            FieldValue::Bytes(b) => {
                f.write_str(&base64::engine::general_purpose::STANDARD.encode(b))
            }
            FieldValue::Date(d) => write!(f, "{}", d.format("%Y-%m-%d")),
            FieldValue::Timestamp(t) => f.write_str(TimestampText::new(t).as_str()),
            FieldValue::Array(_) | FieldValue::Map(_) => write!(f, "{}", self.to_json()),
        }
    }
}

/// Serialized in its JSON form (see the module docs), without building a
/// `serde_json::Value` first.
impl serde::Serialize for FieldValue {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::{SerializeMap, SerializeSeq};
        match self {
            FieldValue::Null => serializer.serialize_unit(),
            FieldValue::Boolean(b) => serializer.serialize_bool(*b),
            FieldValue::Integer(i) => serializer.serialize_i64(*i),
            FieldValue::Float(f) if f.is_finite() => serializer.serialize_f64(*f),
            FieldValue::Float(f) => serializer.serialize_str(non_finite_name(*f)),
            FieldValue::Decimal(d) => serializer.collect_str(d),
            FieldValue::String(s) => serializer.serialize_str(s),
            FieldValue::Bytes(b) => {
                serializer.serialize_str(&base64::engine::general_purpose::STANDARD.encode(b))
            }
            FieldValue::Date(d) => serializer.collect_str(&d.format("%Y-%m-%d")),
            FieldValue::Timestamp(t) => serializer.serialize_str(TimestampText::new(t).as_str()),
            FieldValue::Array(items) => {
                let mut seq = serializer.serialize_seq(Some(items.len()))?;
                for item in items {
                    seq.serialize_element(item)?;
                }
                seq.end()
            }
            FieldValue::Map(map) => {
                let mut m = serializer.serialize_map(Some(map.len()))?;
                for (k, v) in map {
                    m.serialize_entry(k, v)?;
                }
                m.end()
            }
        }
    }
}

/// Deserialized without a schema, like [`FieldValue::from_json`], straight
/// from the input: no intermediate `serde_json::Value`.
impl<'de> serde::Deserialize<'de> for FieldValue {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let mut value = FieldValue::Null;
        serde::de::DeserializeSeed::deserialize(Slot(&mut value), deserializer)?;
        Ok(value)
    }
}

/// Deserializes a value (as [`FieldValue`]'s `Deserialize` does, which is
/// built on it) straight into a record's slot: a returned value was written
/// to the stack and read back to be moved into place, and that read stalled
/// (perf annotate: a fifth of decoding a JSON object on one instruction).
pub(crate) struct Slot<'a>(pub(crate) &'a mut FieldValue);

impl<'de> serde::de::DeserializeSeed<'de> for Slot<'_> {
    type Value = ();

    fn deserialize<D: serde::Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> serde::de::Visitor<'de> for Slot<'_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON value")
    }
    fn visit_unit<E>(self) -> Result<(), E> {
        *self.0 = FieldValue::Null;
        Ok(())
    }
    fn visit_none<E>(self) -> Result<(), E> {
        *self.0 = FieldValue::Null;
        Ok(())
    }
    fn visit_some<D: serde::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        serde::de::DeserializeSeed::deserialize(self, d)
    }
    fn visit_bool<E>(self, v: bool) -> Result<(), E> {
        *self.0 = FieldValue::Boolean(v);
        Ok(())
    }
    fn visit_i64<E>(self, v: i64) -> Result<(), E> {
        *self.0 = FieldValue::Integer(v);
        Ok(())
    }
    fn visit_u64<E>(self, v: u64) -> Result<(), E> {
        *self.0 = match i64::try_from(v) {
            Ok(i) => FieldValue::Integer(i),
            Err(_) => FieldValue::Decimal(Decimal::from(v)),
        };
        Ok(())
    }
    fn visit_f64<E>(self, v: f64) -> Result<(), E> {
        *self.0 = FieldValue::Float(v);
        Ok(())
    }
    fn visit_str<E>(self, v: &str) -> Result<(), E> {
        *self.0 = FieldValue::String(v.into());
        Ok(())
    }
    fn visit_string<E>(self, v: String) -> Result<(), E> {
        *self.0 = FieldValue::String(v.into());
        Ok(())
    }
    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        let mut items = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(1024));
        while let Some(item) = seq.next_element()? {
            items.push(item);
        }
        *self.0 = FieldValue::Array(items);
        Ok(())
    }
    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let mut out = BTreeMap::new();
        while let Some((k, v)) = map.next_entry::<String, FieldValue>()? {
            out.insert(k, v);
        }
        *self.0 = FieldValue::Map(out);
        Ok(())
    }
}

impl FieldValue {
    /// This (untyped) value as `data_type`: integers widen to floats and
    /// decimals, strings are parsed as timestamps, dates, decimals and bytes.
    /// Gives the value back unchanged when it does not fit.
    pub fn coerce(self, data_type: &DataType) -> Result<FieldValue, FieldValue> {
        match (self, data_type) {
            (v, DataType::Any) => Ok(v),
            (FieldValue::Null, _) => Ok(FieldValue::Null),
            (FieldValue::Integer(i), DataType::Float) => Ok(FieldValue::Float(i as f64)),
            (FieldValue::Integer(i), DataType::Decimal) => {
                Ok(FieldValue::Decimal(Decimal::from(i)))
            }
            (FieldValue::Integer(ms), DataType::Timestamp) => DateTime::from_timestamp_millis(ms)
                .map(FieldValue::Timestamp)
                .ok_or(FieldValue::Integer(ms)),
            (FieldValue::Float(f), DataType::Decimal) => Decimal::try_from(f)
                .map(FieldValue::Decimal)
                .map_err(|_| FieldValue::Float(f)),
            (
                FieldValue::String(s),
                t @ (DataType::Timestamp
                | DataType::Date
                | DataType::Decimal
                | DataType::Bytes
                | DataType::Float
                | DataType::Integer),
            ) => match FieldValue::parse_text(&s, t) {
                Ok(v) => Ok(v),
                Err(_) => Err(FieldValue::String(s)),
            },
            (FieldValue::Array(items), DataType::Array(inner)) => {
                let mut out = Vec::with_capacity(items.len());
                let mut iter = items.into_iter();
                while let Some(item) = iter.next() {
                    match item.coerce(inner) {
                        Ok(v) => out.push(v),
                        Err(v) => {
                            out.push(v);
                            out.extend(iter);
                            return Err(FieldValue::Array(out));
                        }
                    }
                }
                Ok(FieldValue::Array(out))
            }
            (FieldValue::Map(map), DataType::Map(inner)) => coerce_map(map, |_| Some(inner)),
            (FieldValue::Map(map), DataType::Struct(fields)) => coerce_map(map, |k| {
                fields.iter().find(|f| f.name == k).map(|f| &f.data_type)
            }),
            (v, t) if v.conforms_to(t) => Ok(v),
            (v, _) => Err(v),
        }
    }
}

impl From<Json> for FieldValue {
    fn from(json: Json) -> Self {
        FieldValue::from_json(&json)
    }
}

impl From<&FieldValue> for Json {
    fn from(value: &FieldValue) -> Self {
        value.to_json()
    }
}

macro_rules! from_primitive {
    ($($t:ty => $variant:ident),* $(,)?) => {$(
        impl From<$t> for FieldValue {
            fn from(v: $t) -> Self { FieldValue::$variant(v.into()) }
        }
    )*};
}
from_primitive!(
    bool => Boolean, i64 => Integer, i32 => Integer, f64 => Float,
    Decimal => Decimal, String => String, &str => String, Vec<u8> => Bytes,
    NaiveDate => Date, DateTime<Utc> => Timestamp,
);

/// Coerces each entry to the type `type_of(key)` gives (entries without one stay as they are).
fn coerce_map<'a>(
    map: BTreeMap<String, FieldValue>,
    type_of: impl Fn(&str) -> Option<&'a DataType>,
) -> Result<FieldValue, FieldValue> {
    let mut ok = true;
    let out = map
        .into_iter()
        .map(|(k, v)| {
            let v = match type_of(&k) {
                Some(t) => v.coerce(t).unwrap_or_else(|v| {
                    ok = false;
                    v
                }),
                None => v,
            };
            (k, v)
        })
        .collect();
    if ok {
        Ok(FieldValue::Map(out))
    } else {
        Err(FieldValue::Map(out))
    }
}

/// RFC 3339 in UTC with `Z` and only as many fractional digits as needed.
pub(crate) fn format_timestamp(t: &DateTime<Utc>) -> String {
    TimestampText::new(t).as_str().to_owned()
}

/// A timestamp as RFC 3339 text in UTC (`2024-01-15T10:30:00.123Z`, the
/// fraction in 0, 3, 6 or 9 digits as chrono's `SecondsFormat::AutoSi`),
/// written into a buffer on the stack: writing JSON, one `String` per
/// timestamp was allocated, formatted through `core::fmt` and freed.
/// Years outside 0–9999 and leap seconds are left to chrono.
pub(crate) enum TimestampText {
    Inline([u8; 30], usize),
    Chrono(String),
}

impl TimestampText {
    pub(crate) fn new(t: &DateTime<Utc>) -> Self {
        use chrono::{Datelike, Timelike};
        let (date, time) = (t.date_naive(), t.time());
        let nanos = time.nanosecond();
        if !(0..=9999).contains(&date.year()) || nanos >= 1_000_000_000 {
            return TimestampText::Chrono(t.to_rfc3339_opts(SecondsFormat::AutoSi, true));
        }
        let mut buf = *b"0000-00-00T00:00:00.000000000Z";
        let year = date.year() as u32;
        put_pair(&mut buf[0..2], year / 100);
        put_pair(&mut buf[2..4], year % 100);
        put_pair(&mut buf[5..7], date.month());
        put_pair(&mut buf[8..10], date.day());
        let secs = time.num_seconds_from_midnight();
        put_pair(&mut buf[11..13], secs / 3600);
        put_pair(&mut buf[14..16], secs / 60 % 60);
        put_pair(&mut buf[17..19], secs % 60);
        // Only the digits shown: milliseconds are most timestamps' fraction.
        let digits = match nanos {
            0 => 0,
            n if n % 1_000_000 == 0 => put_digits(&mut buf[20..23], n / 1_000_000),
            n if n % 1_000 == 0 => put_digits(&mut buf[20..26], n / 1_000),
            n => put_digits(&mut buf[20..29], n),
        };
        let len = if digits > 0 { 20 + digits } else { 19 };
        buf[len] = b'Z';
        TimestampText::Inline(buf, len + 1)
    }

    /// The text as bytes, for writers that need no `str` (and so no UTF-8
    /// check of what is ASCII by construction).
    pub(crate) fn as_bytes(&self) -> &[u8] {
        match self {
            TimestampText::Inline(buf, len) => &buf[..*len],
            TimestampText::Chrono(s) => s.as_bytes(),
        }
    }

    pub(crate) fn as_str(&self) -> &str {
        match self {
            TimestampText::Inline(buf, len) => {
                std::str::from_utf8(&buf[..*len]).expect("ASCII digits and separators")
            }
            TimestampText::Chrono(s) => s,
        }
    }
}

/// `n` (below 100) as two ASCII digits.
fn put_pair(buf: &mut [u8], n: u32) {
    buf[0] = b'0' + (n / 10) as u8;
    buf[1] = b'0' + (n % 10) as u8;
}

/// `n` as `buf.len()` ASCII digits, zero-padded; returns the count.
fn put_digits(buf: &mut [u8], mut n: u32) -> usize {
    for b in buf.iter_mut().rev() {
        *b = b'0' + (n % 10) as u8;
        n /= 10;
    }
    buf.len()
}

fn non_finite_name(f: f64) -> &'static str {
    if f.is_nan() {
        "NaN"
    } else if f > 0.0 {
        "Infinity"
    } else {
        "-Infinity"
    }
}

fn number_value(n: &serde_json::Number) -> FieldValue {
    if let Some(i) = n.as_i64() {
        FieldValue::Integer(i)
    } else if n.is_u64() {
        n.to_string()
            .parse::<Decimal>()
            .map(FieldValue::Decimal)
            .unwrap_or_else(|_| FieldValue::Float(n.as_f64().unwrap_or(f64::NAN)))
    } else {
        FieldValue::Float(n.as_f64().unwrap_or(f64::NAN))
    }
}

pub(crate) fn parse_float(t: &str) -> Option<f64> {
    if let Some(v) = parse_short_decimal(t.as_bytes()) {
        return Some(v);
    }
    match t {
        "NaN" | "nan" => Some(f64::NAN),
        "Infinity" | "inf" | "+Infinity" => Some(f64::INFINITY),
        "-Infinity" | "-inf" => Some(f64::NEG_INFINITY),
        _ => t.parse().ok(),
    }
}

/// `[-+]digits[.digits]` with at most 15 digits, the usual shape of prices
/// and measurements: its digits as an integer and the power of ten of its
/// fraction are both exact in an `f64`, so one IEEE division gives the
/// correctly rounded value (Clinger's fast path), the value `str::parse`
/// gives, without its general parser. Anything else is `None`.
fn parse_short_decimal(b: &[u8]) -> Option<f64> {
    const POW10: [f64; 16] = [
        1e0, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9, 1e10, 1e11, 1e12, 1e13, 1e14, 1e15,
    ];
    let (negative, text) = match b.first()? {
        b'-' => (true, &b[1..]),
        b'+' => (false, &b[1..]),
        _ => (false, b),
    };
    if text.len() > 16 {
        return None;
    }
    let (mut mantissa, mut digits, mut point) = (0u64, 0, None);
    for (i, &c) in text.iter().enumerate() {
        match c {
            b'0'..=b'9' => {
                mantissa = mantissa * 10 + u64::from(c - b'0');
                digits += 1;
            }
            b'.' if point.is_none() => point = Some(text.len() - i - 1),
            _ => return None,
        }
    }
    if digits == 0 || digits > 15 {
        return None;
    }
    let v = mantissa as f64 / POW10[point.unwrap_or(0)];
    Some(if negative { -v } else { v })
}

/// Where a text cell's padding is: most cells have none, and checking the
/// first and last bytes is cheaper than `str::trim`'s Unicode scan.
pub(crate) fn trim(t: &str) -> &str {
    match t.as_bytes() {
        [first, .., last] | [first @ last]
            if first.is_ascii_graphic() && last.is_ascii_graphic() =>
        {
            t
        }
        _ => t.trim(),
    }
}

/// The boolean spellings accepted in text.
pub(crate) fn parse_bool(t: &str) -> Option<bool> {
    const TRUE: &[&str] = &["true", "t", "yes", "y", "1"];
    const FALSE: &[&str] = &["false", "f", "no", "n", "0"];
    if TRUE.iter().any(|w| t.eq_ignore_ascii_case(w)) {
        Some(true)
    } else if FALSE.iter().any(|w| t.eq_ignore_ascii_case(w)) {
        Some(false)
    } else {
        None
    }
}

/// RFC 3339, or a zone-less ISO 8601 date-time taken as UTC.
pub(crate) fn parse_timestamp(text: &str) -> Option<DateTime<Utc>> {
    parse_timestamp_with(text, &DateCache::default())
}

/// The last calendar date a column's timestamps named: consecutive
/// timestamps of a stream mostly share their date, and checking it
/// (leap years, days per month) was a fifth of parsing one.
///
/// The date's text is kept as two words, compared in registers: kept as
/// bytes, the cache was copied out through the stack and read back with
/// a load that spanned two of the copy's stores (`perf annotate`: 3% of
/// reading CSV records, on that load).
#[derive(Debug, Default, Clone)]
pub(crate) struct DateCache {
    /// The first eight bytes of the date's text and the last two.
    key: std::cell::Cell<(u64, u16)>,
    /// `None` until a date is cached.
    date: std::cell::Cell<Option<NaiveDate>>,
}

impl DateCache {
    #[inline(always)]
    fn date(&self, text: &[u8]) -> Option<NaiveDate> {
        let (head, tail) = text.split_first_chunk::<8>()?;
        let tail: &[u8; 2] = tail.try_into().ok()?;
        let key = (u64::from_le_bytes(*head), u16::from_le_bytes(*tail));
        if let Some(d) = self.date.get()
            && self.key.get() == key
        {
            return Some(d);
        }
        let date = NaiveDate::from_ymd_opt(
            digits(&text[0..4])? as i32,
            digits(&text[5..7])?,
            digits(&text[8..10])?,
        )?;
        self.key.set(key);
        self.date.set(Some(date));
        Some(date)
    }
}

/// Nanoseconds per unit of a fraction of `n` digits (none: not a fraction).
const NANOS_PER_DIGIT: [u32; 10] = [
    0,
    100_000_000,
    10_000_000,
    1_000_000,
    100_000,
    10_000,
    1_000,
    100,
    10,
    1,
];

/// The two ASCII digits at `b[at..at + 2]`; `None` if either is not a digit.
#[inline]
fn two_digits(b: &[u8], at: usize) -> Option<u32> {
    let (tens, units) = (b[at].wrapping_sub(b'0'), b[at + 1].wrapping_sub(b'0'));
    (tens < 10 && units < 10).then(|| u32::from(tens) * 10 + u32::from(units))
}

/// The number the ASCII digits `b` write; `None` if any is not a digit.
fn digits(b: &[u8]) -> Option<u32> {
    b.iter().try_fold(0u32, |acc, &c| {
        c.is_ascii_digit().then(|| acc * 10 + u32::from(c - b'0'))
    })
}

/// [`parse_timestamp`] with the dates it met remembered in `dates`.
pub(crate) fn parse_timestamp_with(text: &str, dates: &DateCache) -> Option<DateTime<Utc>> {
    let t = trim(text);
    if !has_timestamp_shape(t.as_bytes()) {
        return None;
    }
    if let Some(ts) = parse_iso_fast(t.as_bytes(), dates) {
        return Some(ts);
    }
    if let Ok(dt) = DateTime::parse_from_rfc3339(t) {
        return Some(dt.with_timezone(&Utc));
    }
    // RFC 3339 with a space separator ("2024-01-15 10:30:00+00:00").
    if let Ok(dt) = DateTime::parse_from_str(t, "%Y-%m-%d %H:%M:%S%.f%:z") {
        return Some(dt.with_timezone(&Utc));
    }
    for pattern in ["%Y-%m-%dT%H:%M:%S%.f", "%Y-%m-%d %H:%M:%S%.f"] {
        if let Ok(naive) = NaiveDateTime::parse_from_str(t, pattern) {
            return Some(naive.and_utc());
        }
    }
    None
}

/// [`parse_timestamp_with`] for the common shapes only: the date and time
/// as written and the offset from UTC in seconds ([`local_to_utc`] joins
/// them), or `None` for any other shape.
///
/// Inlined, and kept apart from the full parsers and from the arithmetic
/// of other offsets, so that a decoder gets a UTC value in registers:
/// merged with their results, it went through memory, and its copy into a
/// record's value was read back with loads that spanned two of the stores
/// that had just written it (`perf annotate`: about 4% of reading CSV
/// records, on one load).
#[inline(always)]
pub(crate) fn parse_timestamp_local(text: &str, dates: &DateCache) -> Option<(NaiveDateTime, i64)> {
    let b = trim(text).as_bytes();
    if !has_timestamp_shape(b) {
        return None;
    }
    parse_iso_local(b, dates)
}

/// A cheap shape check first: inference tries every sampled cell.
#[inline(always)]
fn has_timestamp_shape(b: &[u8]) -> bool {
    b.len() >= 19 && b[4] == b'-' && b[7] == b'-' && (b[10] == b'T' || b[10] == b' ')
}

/// The common shapes `YYYY-MM-DD[T ]HH:MM:SS[.fraction][Z|±HH:MM|±HHMM]`,
/// parsed without chrono's general parser; `None` sends anything else (and
/// anything invalid) to the full parsers.
fn parse_iso_fast(b: &[u8], dates: &DateCache) -> Option<DateTime<Utc>> {
    let (naive, offset_secs) = parse_iso_local(b, dates)?;
    local_to_utc(naive, offset_secs)
}

/// The instant of a date and time written at `offset_secs` from UTC.
pub(crate) fn local_to_utc(naive: NaiveDateTime, offset_secs: i64) -> Option<DateTime<Utc>> {
    // UTC (the common case) needs no arithmetic: chrono keeps a date and a
    // time, and the Duration subtraction was a tenth of decoding a CSV row
    // with one timestamp (perf).
    if offset_secs == 0 {
        return Some(naive.and_utc());
    }
    naive
        .checked_sub_signed(chrono::Duration::seconds(offset_secs))
        .map(|n| n.and_utc())
}

/// [`parse_iso_fast`]'s date and time as written, and the offset from UTC
/// in seconds.
#[inline(always)]
fn parse_iso_local(b: &[u8], dates: &DateCache) -> Option<(NaiveDateTime, i64)> {
    let secs = crate::digits::hh_mm_ss(&b[11..])?;
    let date = dates.date(&b[0..10])?;
    let mut i = 19;
    let mut nanos = 0u32;
    if b.get(i) == Some(&b'.') {
        // Up to nine digits, read as they are found; a tenth is refused.
        let start = i + 1;
        let mut end = start;
        while let Some(d) = b.get(end).map(|c| c.wrapping_sub(b'0')).filter(|d| *d < 10) {
            if end - start == 9 {
                return None;
            }
            nanos = nanos * 10 + u32::from(d);
            end += 1;
        }
        nanos *= *NANOS_PER_DIGIT
            .get(end - start)
            .filter(|scale| **scale > 0)?;
        i = end;
    }
    let offset_secs: i64 = match &b[i..] {
        [] | [b'Z'] | [b'z'] => 0,
        [sign @ (b'+' | b'-'), hh1, hh2, b':', mm1, mm2]
        | [sign @ (b'+' | b'-'), hh1, hh2, mm1, mm2] => {
            let hours = i64::from(two_digits(&[*hh1, *hh2], 0)?);
            let minutes = i64::from(two_digits(&[*mm1, *mm2], 0)?);
            if hours > 23 || minutes > 59 {
                return None;
            }
            let secs = hours * 3600 + minutes * 60;
            if *sign == b'-' { -secs } else { secs }
        }
        _ => return None,
    };
    // A leap second (60) goes to chrono's parser.
    let time = NaiveTime::from_num_seconds_from_midnight_opt(secs, nanos)?;
    Some((date.and_time(time), offset_secs))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::schema::FieldDefinition;
    use proptest::prelude::*;

    #[test]
    fn text_parsing() {
        assert_eq!(
            FieldValue::parse_text(" 42", &DataType::Integer),
            Ok(FieldValue::Integer(42))
        );
        assert_eq!(
            FieldValue::parse_text("YES", &DataType::Boolean),
            Ok(FieldValue::Boolean(true))
        );
        let ts = FieldValue::parse_text("2024-01-15 10:30:00", &DataType::Timestamp).unwrap();
        assert_eq!(ts.to_string(), "2024-01-15T10:30:00Z");
        let err = FieldValue::parse_text("abc", &DataType::Integer).unwrap_err();
        assert_eq!(err.to_string(), "cannot read `abc` as INTEGER");
        assert!(FieldValue::parse_text("2024-13-01", &DataType::Date).is_err());
    }

    #[test]
    fn fast_timestamp_path_agrees_with_chrono() {
        let shared = DateCache::default();
        for text in [
            "2024-01-15T10:30:00Z",
            "2024-01-15T10:30:00.5Z",
            "2024-01-15T10:30:00.123456789Z",
            "2024-01-15 10:30:00",
            "2024-01-15T10:30:00+02:00",
            "2024-01-15T10:30:00-0530",
            "2024-02-29T23:59:59.999+00:00",
            "1969-12-31T23:59:59.5Z",
            "0001-01-01T00:00:00+01:00",
            "9999-12-31T23:59:59Z",
        ] {
            // Each text parsed with a fresh cache and with one shared by all
            // (which holds the previous text's date): the same instant.
            let fast = parse_iso_fast(text.as_bytes(), &DateCache::default())
                .unwrap_or_else(|| panic!("fast path refused {text}"));
            assert_eq!(parse_iso_fast(text.as_bytes(), &shared), Some(fast));
            let full = DateTime::parse_from_rfc3339(text)
                .map(|d| d.with_timezone(&Utc))
                .or_else(|_| {
                    DateTime::parse_from_str(text, "%Y-%m-%dT%H:%M:%S%z")
                        .map(|d| d.with_timezone(&Utc))
                })
                .or_else(|_| {
                    NaiveDateTime::parse_from_str(text, "%Y-%m-%d %H:%M:%S").map(|n| n.and_utc())
                })
                .unwrap();
            assert_eq!(fast, full, "{text}");
        }
        for bad in [
            "2023-02-29T10:00:00Z",
            "2024-01-15T25:00:00Z",
            "2024-01-15T10:30:00.Z",
            "2024-01-15T10:30:00+2:00",
            "2024-01-15T10:30:00ZZ",
            "2024-01-15T10:60:00Z",
            // A leap second is left to chrono's parser.
            "2016-12-31T23:59:60Z",
        ] {
            assert_eq!(parse_iso_fast(bad.as_bytes(), &shared), None, "{bad}");
        }
    }

    #[test]
    fn json_keeps_kinds_without_schema() {
        let j: Json = serde_json::from_str(r#"{"a":1,"b":1.5,"c":[true,null],"d":"x"}"#).unwrap();
        let v = FieldValue::from_json(&j);
        assert_eq!(v.to_json(), j);
        let big: Json = serde_json::from_str("18446744073709551615").unwrap();
        assert_eq!(
            FieldValue::from_json(&big),
            FieldValue::Decimal("18446744073709551615".parse().unwrap())
        );
    }

    #[test]
    fn typed_json_errors_say_what_was_found() {
        let err = FieldValue::from_json_typed(&Json::Bool(true), &DataType::Integer).unwrap_err();
        assert_eq!(err.to_string(), "cannot read true as INTEGER");
    }

    fn leaf_type() -> impl Strategy<Value = DataType> {
        prop_oneof![
            Just(DataType::Boolean),
            Just(DataType::Integer),
            Just(DataType::Float),
            Just(DataType::Decimal),
            Just(DataType::String),
            Just(DataType::Bytes),
            Just(DataType::Date),
            Just(DataType::Timestamp),
        ]
    }

    fn data_type() -> impl Strategy<Value = DataType> {
        leaf_type().prop_recursive(3, 16, 4, |inner| {
            prop_oneof![
                inner.clone().prop_map(|t| DataType::Array(Box::new(t))),
                inner.clone().prop_map(|t| DataType::Map(Box::new(t))),
                prop::collection::vec(("[a-z]{1,6}", inner), 1..4).prop_map(|fs| {
                    let mut seen = std::collections::HashSet::new();
                    DataType::Struct(
                        fs.into_iter()
                            .filter(|(n, _)| seen.insert(n.clone()))
                            .map(|(n, t)| FieldDefinition::optional(n, t))
                            .collect(),
                    )
                }),
            ]
        })
    }

    fn value_of(dt: &DataType) -> BoxedStrategy<FieldValue> {
        let leaf = match dt {
            DataType::Boolean => any::<bool>().prop_map(FieldValue::Boolean).boxed(),
            DataType::Integer => any::<i64>().prop_map(FieldValue::Integer).boxed(),
            DataType::Float => any::<f64>().prop_map(FieldValue::Float).boxed(),
            DataType::Decimal => (any::<i64>(), 0u32..=12)
                .prop_map(|(m, s)| FieldValue::Decimal(Decimal::new(m, s)))
                .boxed(),
            DataType::String => any::<String>()
                .prop_map(|s| FieldValue::String(s.into()))
                .boxed(),
            DataType::Bytes => prop::collection::vec(any::<u8>(), 0..16)
                .prop_map(FieldValue::Bytes)
                .boxed(),
            DataType::Date => (-100_000i32..100_000)
                .prop_map(|d| {
                    FieldValue::Date(NaiveDate::from_num_days_from_ce_opt(700_000 + d).unwrap())
                })
                .boxed(),
            DataType::Timestamp => (
                -4_000_000_000_000i64..4_000_000_000_000,
                0u32..1_000_000_000,
            )
                .prop_map(|(s, ns)| {
                    FieldValue::Timestamp(DateTime::from_timestamp(s / 1000, ns).unwrap())
                })
                .boxed(),
            DataType::Array(inner) => prop::collection::vec(value_of(inner), 0..4)
                .prop_map(FieldValue::Array)
                .boxed(),
            DataType::Map(inner) => {
                prop::collection::btree_map("[a-z]{0,5}", value_of(inner), 0..4)
                    .prop_map(FieldValue::Map)
                    .boxed()
            }
            DataType::Struct(fields) => {
                let parts: Vec<_> = fields
                    .iter()
                    .map(|f| (Just(f.name.clone()), value_of(&f.data_type)))
                    .collect();
                parts
                    .prop_map(|kv| FieldValue::Map(kv.into_iter().collect()))
                    .boxed()
            }
            DataType::Any => Just(FieldValue::Null).boxed(),
        };
        prop_oneof![1 => Just(FieldValue::Null), 9 => leaf].boxed()
    }

    proptest! {
        #[test]
        fn short_decimals_parse_as_std_does(
            sign in prop::sample::select(vec!["", "-", "+"]),
            int in "[0-9]{0,16}",
            frac in prop::option::of("[0-9]{0,16}"),
        ) {
            let text = format!("{sign}{int}{}", frac.map(|f| format!(".{f}")).unwrap_or_default());
            let ours = parse_short_decimal(text.as_bytes());
            match text.parse::<f64>() {
                // Where the fast path answers, it answers exactly as std
                // (sign of zero included); it only declines long or odd text.
                Ok(std) => if let Some(v) = ours {
                    prop_assert_eq!(v.to_bits(), std.to_bits(), "{}", text);
                } else {
                    let digits = text.bytes().filter(u8::is_ascii_digit).count();
                    prop_assert!(digits > 15 || text.len() > 16, "{} declined", text);
                },
                Err(_) => prop_assert!(ours.is_none(), "{}", text),
            }
        }

        #[test]
        fn timestamps_parse_as_chrono_does_through_a_shared_cache(
            stamps in prop::collection::vec(
                (1990i32..2030, 1u32..=12, 1u32..=31, 0u32..=24, 0u32..=60, 0u32..=60, 0u32..1000,
                 prop::sample::select(vec!["Z", "+02:00", "-0530", ""])),
                1..20,
            ),
        ) {
            // One cache for the whole sequence, as a column's (hits and misses,
            // valid and invalid dates, hours, minutes and seconds): the same
            // result as without it, and chrono's instant whenever one is read.
            let shared = DateCache::default();
            for (y, mo, d, h, mi, sec, ms, zone) in stamps {
                let text = format!("{y:04}-{mo:02}-{d:02}T{h:02}:{mi:02}:{sec:02}.{ms:03}{zone}");
                let expected = DateTime::parse_from_rfc3339(&text)
                    .map(|t| t.with_timezone(&Utc))
                    .or_else(|_| DateTime::parse_from_str(&text, "%Y-%m-%dT%H:%M:%S%.f%z").map(|t| t.with_timezone(&Utc)))
                    .or_else(|_| NaiveDateTime::parse_from_str(&text, "%Y-%m-%dT%H:%M:%S%.f").map(|n| n.and_utc()))
                    .ok();
                let fresh = parse_timestamp_with(&text, &DateCache::default());
                prop_assert_eq!(parse_timestamp_with(&text, &shared), fresh, "{}", text);
                if fresh.is_some() {
                    prop_assert_eq!(fresh, expected, "{}", text);
                }
            }
        }

        #[test]
        fn timestamp_text_is_chronos(
            secs in -400_000_000_000i64..400_000_000_000,
            nanos in prop::sample::select(vec![0u32, 5_000_000, 123_000_000, 450_000, 7, 999_999_999, 1_500_000_000]),
        ) {
            // Years far before 0 and after 9999, every fraction width, and a
            // leap second (nanoseconds past one second) go through both.
            if let Some(t) = DateTime::<Utc>::from_timestamp(secs, nanos) {
                let ours = TimestampText::new(&t);
                prop_assert_eq!(ours.as_str(), t.to_rfc3339_opts(SecondsFormat::AutoSi, true));
            }
        }

        #[test]
        fn trim_is_str_trim(t in "[ \t\u{a0}\u{3000}a-z0-9\u{e9}]{0,6}") {
            prop_assert_eq!(trim(&t), t.trim());
        }
    }

    proptest! {
        #[test]
        fn json_round_trip_with_type((dt, v) in data_type().prop_flat_map(|dt| {
            let values = value_of(&dt);
            (Just(dt), values)
        })) {
            // Through the JSON text, as a JSON Lines file would carry it.
            let text = serde_json::to_string(&v.to_json()).unwrap();
            let json: Json = serde_json::from_str(&text).unwrap();
            let back = FieldValue::from_json_typed(&json, &dt).unwrap();
            prop_assert_eq!(&back, &v);
            prop_assert!(back.conforms_to(&dt));
        }

        #[test]
        fn serde_impls_match_the_json_form((_dt, v) in data_type().prop_flat_map(|dt| {
            let values = value_of(&dt);
            (Just(dt), values)
        })) {
            prop_assert_eq!(serde_json::to_value(&v).unwrap(), v.to_json());
            let text = serde_json::to_string(&v).unwrap();
            let back: FieldValue = serde_json::from_str(&text).unwrap();
            prop_assert_eq!(back, FieldValue::from_json(&v.to_json()));
        }

        #[test]
        fn coerce_restores_typed_values((dt, v) in data_type().prop_flat_map(|dt| {
            let values = value_of(&dt);
            (Just(dt), values)
        })) {
            // Untyped JSON decoding, then coercion, as the JSON Lines reader does.
            let untyped = FieldValue::from_json(&v.to_json());
            prop_assert_eq!(untyped.coerce(&dt), Ok(v));
        }

        #[test]
        fn text_round_trip_of_leaves((dt, v) in leaf_type().prop_flat_map(|dt| {
            let values = value_of(&dt);
            (Just(dt), values)
        })) {
            prop_assume!(!v.is_null());
            let back = FieldValue::parse_text(&v.to_string(), &dt).unwrap();
            prop_assert_eq!(back, v);
        }
    }
}
